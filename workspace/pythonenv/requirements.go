package pythonenv

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// MaxRequirements caps how many requirements one environment may list: a
// model asking for more is almost certainly looping, and every extra name
// makes a resolver failure harder to read.
const MaxRequirements = 64

// RequirementError explains why one requirement string was refused, in words
// a model can act on.
type RequirementError struct {
	Requirement string
	Reason      string
}

func (e *RequirementError) Error() string {
	r := e.Requirement
	if len(r) > 80 {
		r = r[:80] + "..."
	}
	return fmt.Sprintf("requirement %q: %s", r, e.Reason)
}

// ValidateRequirements checks PEP 508 requirement strings ("pandas",
// "requests[socks]>=2.31,<3", "tomli; python_version < '3.11'") and returns
// them normalized (PEP 503 names, sorted extras and specifiers, canonical
// markers), sorted and de-duplicated, so that equal sets give equal cache
// keys. It refuses pip options, local paths and direct URLs (unless
// allowDirect), and more than MaxRequirements entries. The error joins one
// *RequirementError per refused string.
func ValidateRequirements(reqs []string, allowDirect bool) ([]string, error) {
	if len(reqs) > MaxRequirements {
		return nil, &RequirementError{
			Requirement: strings.Join(reqs[:3], ", ") + ", ...",
			Reason:      fmt.Sprintf("too many requirements (%d); list at most %d packages, only the ones the code imports", len(reqs), MaxRequirements),
		}
	}
	var errs []error
	seen := map[string]bool{}
	out := make([]string, 0, len(reqs))
	for _, r := range reqs {
		n, err := normalizeRequirement(r, allowDirect)
		if err != nil {
			errs = append(errs, &RequirementError{Requirement: r, Reason: err.Error()})
			continue
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	sort.Strings(out)
	return out, nil
}

var (
	nameRe     = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?`)
	nameSepRe  = regexp.MustCompile(`[-_.]+`)
	versionRe  = regexp.MustCompile(`^[A-Za-z0-9_.*+!-]+`)
	archiveExt = []string{".whl", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tar", ".zip"}
	versionOps = []string{"===", "~=", "==", "!=", "<=", ">=", "<", ">"} // longest first
)

// NormalizeName is the PEP 503 normalized form of a distribution name.
func NormalizeName(name string) string {
	return strings.ToLower(nameSepRe.ReplaceAllString(name, "-"))
}

const hintNames = `list package names with optional version specifiers, such as "pandas" or "requests>=2.31"`

func normalizeRequirement(raw string, allowDirect bool) (string, error) {
	s := strings.TrimSpace(raw)
	switch {
	case s == "":
		return "", errors.New("empty requirement; " + hintNames)
	case strings.ContainsAny(s, "\x00\r\n"):
		return "", errors.New("a requirement is a single line; " + hintNames)
	case strings.HasPrefix(s, "-"):
		return "", errors.New("pip options (-r, -e, --index-url, ...) are not allowed; " + hintNames)
	}
	if looksDirect(s) {
		if !allowDirect {
			return "", errors.New("local paths and direct URLs are not allowed on this server; " + hintNames + " from the package index")
		}
		if !strings.Contains(s, "://") && !strings.HasPrefix(s, "/") {
			return "", errors.New("a local path must be absolute")
		}
		return s, nil
	}

	p := &reqParser{s: s}
	name := nameRe.FindString(s)
	if name == "" {
		return "", errors.New("does not start with a package name; " + hintNames)
	}
	p.pos = len(name)
	var b strings.Builder
	b.WriteString(NormalizeName(name))

	p.skipSpace()
	if p.peek() == '[' {
		extras, err := p.extras()
		if err != nil {
			return "", err
		}
		if len(extras) > 0 {
			b.WriteString("[" + strings.Join(extras, ",") + "]")
		}
	}
	p.skipSpace()
	switch c := p.peek(); {
	case c == '@':
		p.pos++
		p.skipSpace()
		url := p.until(';')
		if i := strings.IndexAny(url, " \t"); i >= 0 {
			url = url[:i]
		}
		if !allowDirect {
			return "", errors.New("direct URLs (name @ url) are not allowed on this server; " + hintNames + " from the package index")
		}
		if !strings.Contains(url, "://") {
			return "", errors.New("expected a URL after @")
		}
		b.WriteString(" @ " + strings.TrimSpace(url))
		// PEP 508 requires a space before ';' after a URL.
		p.pos = strings.IndexByte(s, ';')
		if p.pos < 0 {
			p.pos = len(s)
		}
	case c == '(' || strings.ContainsRune("<>=!~", rune(c)):
		specs, err := p.specifiers()
		if err != nil {
			return "", err
		}
		b.WriteString(strings.Join(specs, ","))
	}
	p.skipSpace()
	if p.peek() == ';' {
		p.pos++
		m, err := parseMarker(s[p.pos:])
		if err != nil {
			return "", err
		}
		b.WriteString("; " + m)
		p.pos = len(s)
	}
	p.skipSpace()
	if p.pos < len(s) {
		return "", fmt.Errorf("unexpected %q after the package name; %s", s[p.pos:], hintNames)
	}
	return b.String(), nil
}

// looksDirect reports whether pip would treat s as a path, archive or URL
// rather than a name from the index.
func looksDirect(s string) bool {
	if strings.HasPrefix(s, "git+") || strings.HasPrefix(s, "file:") ||
		strings.HasPrefix(s, ".") || strings.HasPrefix(s, "~") || strings.ContainsAny(s, `\`) {
		return true
	}
	// "name @ url" is parsed as a requirement; only what precedes the
	// first "@" or ";" can make the whole string a path or URL.
	head := s
	if i := strings.IndexAny(head, ";@"); i >= 0 {
		head = head[:i]
	}
	if strings.Contains(head, "/") || strings.Contains(head, ":") {
		return true
	}
	head = strings.ToLower(strings.TrimSpace(head))
	for _, ext := range archiveExt {
		if strings.HasSuffix(head, ext) {
			return true
		}
	}
	return false
}

// reqParser is a hand-written PEP 508 parser. Kept: Go has no maintained
// PEP 508 library (the maintained ones are Python's packaging and Rust's
// pep508_rs), and asking the interpreter's packaging would start Python for
// every validation and tie the cache key to its version; pip parses the
// strings again before it installs anything.
type reqParser struct {
	s   string
	pos int
}

func (p *reqParser) peek() byte {
	if p.pos < len(p.s) {
		return p.s[p.pos]
	}
	return 0
}

func (p *reqParser) skipSpace() {
	for p.pos < len(p.s) && (p.s[p.pos] == ' ' || p.s[p.pos] == '\t') {
		p.pos++
	}
}

func (p *reqParser) until(c byte) string {
	i := strings.IndexByte(p.s[p.pos:], c)
	if i < 0 {
		i = len(p.s) - p.pos
	}
	out := p.s[p.pos : p.pos+i]
	p.pos += i
	return out
}

func (p *reqParser) extras() ([]string, error) {
	end := strings.IndexByte(p.s[p.pos:], ']')
	if end < 0 {
		return nil, errors.New(`unclosed "[" in extras; write extras as "name[extra1,extra2]"`)
	}
	body := p.s[p.pos+1 : p.pos+end]
	p.pos += end + 1
	var extras []string
	for _, e := range strings.Split(body, ",") {
		e = strings.TrimSpace(e)
		if e == "" && strings.TrimSpace(body) == "" {
			continue
		}
		if nameRe.FindString(e) != e || e == "" {
			return nil, fmt.Errorf("invalid extra %q; write extras as \"name[extra1,extra2]\"", e)
		}
		extras = append(extras, NormalizeName(e))
	}
	sort.Strings(extras)
	return extras, nil
}

func (p *reqParser) specifiers() ([]string, error) {
	paren := p.peek() == '('
	if paren {
		p.pos++
	}
	var specs []string
	for {
		p.skipSpace()
		op := ""
		for _, o := range versionOps {
			if strings.HasPrefix(p.s[p.pos:], o) {
				op = o
				break
			}
		}
		if op == "" {
			return nil, fmt.Errorf("expected a version operator (==, >=, <, ~=, ...) at %q", p.s[p.pos:])
		}
		p.pos += len(op)
		p.skipSpace()
		v := versionRe.FindString(p.s[p.pos:])
		if v == "" {
			return nil, fmt.Errorf("expected a version after %q", op)
		}
		if strings.Contains(v, "*") && op != "==" && op != "!=" {
			return nil, fmt.Errorf("a wildcard version (%s) is only allowed with == or !=", v)
		}
		p.pos += len(v)
		specs = append(specs, op+v)
		p.skipSpace()
		if p.peek() != ',' {
			break
		}
		p.pos++
	}
	if paren {
		if p.peek() != ')' {
			return nil, errors.New(`unclosed "(" in version specifier`)
		}
		p.pos++
	}
	sort.Strings(specs)
	return specs, nil
}

var markerVars = map[string]bool{
	"python_version": true, "python_full_version": true, "os_name": true,
	"sys_platform": true, "platform_release": true, "platform_system": true,
	"platform_version": true, "platform_machine": true,
	"platform_python_implementation": true, "implementation_name": true,
	"implementation_version": true, "extra": true,
	// Legacy spellings pip still accepts.
	"os.name": true, "sys.platform": true, "platform.version": true,
	"platform.machine": true, "platform.python_implementation": true,
	"python_implementation": true,
}

// parseMarker checks a PEP 508 environment marker and renders it with single
// spaces between tokens and double-quoted strings.
func parseMarker(s string) (string, error) {
	toks, err := markerTokens(s)
	if err != nil {
		return "", err
	}
	m := &markerParser{toks: toks}
	if err := m.or(); err != nil {
		return "", err
	}
	if m.i != len(toks) {
		return "", fmt.Errorf("unexpected %q in environment marker", toks[m.i])
	}
	var b strings.Builder
	for i, t := range toks {
		if i > 0 && t != ")" && toks[i-1] != "(" {
			b.WriteByte(' ')
		}
		b.WriteString(t)
	}
	return b.String(), nil
}

var markerOps = []string{"===", "==", "!=", "<=", ">=", "~=", "<", ">"}

func markerTokens(s string) ([]string, error) {
	var toks []string
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			i++
		case c == '(' || c == ')':
			toks = append(toks, string(c))
			i++
		case c == '"' || c == '\'':
			j := strings.IndexByte(s[i+1:], c)
			if j < 0 {
				return nil, errors.New("unterminated string in environment marker")
			}
			v := s[i+1 : i+1+j]
			q := `"`
			if strings.Contains(v, `"`) {
				q = `'`
			}
			toks = append(toks, q+v+q)
			i += j + 2
		case strings.ContainsRune("<>=!~", rune(c)):
			op := ""
			for _, o := range markerOps {
				if strings.HasPrefix(s[i:], o) {
					op = o
					break
				}
			}
			if op == "" {
				return nil, fmt.Errorf("bad operator at %q in environment marker", s[i:])
			}
			toks = append(toks, op)
			i += len(op)
		default:
			j := i
			for j < len(s) && (s[j] == '_' || s[j] == '.' || s[j] >= 'a' && s[j] <= 'z' || s[j] >= 'A' && s[j] <= 'Z' || s[j] >= '0' && s[j] <= '9') {
				j++
			}
			if j == i {
				return nil, fmt.Errorf("unexpected %q in environment marker", s[i:])
			}
			toks = append(toks, s[i:j])
			i = j
		}
	}
	if len(toks) == 0 {
		return nil, errors.New(`empty environment marker after ";"`)
	}
	return toks, nil
}

type markerParser struct {
	toks []string
	i    int
}

func (m *markerParser) next() string {
	if m.i < len(m.toks) {
		return m.toks[m.i]
	}
	return ""
}

func (m *markerParser) or() error {
	if err := m.and(); err != nil {
		return err
	}
	for m.next() == "or" {
		m.i++
		if err := m.and(); err != nil {
			return err
		}
	}
	return nil
}

func (m *markerParser) and() error {
	if err := m.expr(); err != nil {
		return err
	}
	for m.next() == "and" {
		m.i++
		if err := m.expr(); err != nil {
			return err
		}
	}
	return nil
}

func (m *markerParser) expr() error {
	if m.next() == "(" {
		m.i++
		if err := m.or(); err != nil {
			return err
		}
		if m.next() != ")" {
			return errors.New(`unclosed "(" in environment marker`)
		}
		m.i++
		return nil
	}
	if err := m.value(); err != nil {
		return err
	}
	switch op := m.next(); {
	case op == "in":
		m.i++
	case op == "not" && m.i+1 < len(m.toks) && m.toks[m.i+1] == "in":
		m.i += 2
	case len(op) > 0 && strings.ContainsRune("<>=!~", rune(op[0])):
		m.i++
	default:
		return fmt.Errorf("expected a comparison in environment marker, got %q", op)
	}
	return m.value()
}

func (m *markerParser) value() error {
	t := m.next()
	switch {
	case t == "":
		return errors.New("environment marker ends early")
	case t[0] == '"' || t[0] == '\'':
	case markerVars[t]:
	default:
		return fmt.Errorf("unknown environment marker variable %q (use python_version, sys_platform, ...)", t)
	}
	m.i++
	return nil
}

// distributions maps import names to the distribution that provides them,
// for the common packages where the two differ.
var distributions = map[string]string{
	"attr":                  "attrs",
	"Bio":                   "biopython",
	"bs4":                   "beautifulsoup4",
	"cairo":                 "pycairo",
	"Crypto":                "pycryptodome",
	"cv2":                   "opencv-python",
	"dateutil":              "python-dateutil",
	"discord":               "discord.py",
	"dns":                   "dnspython",
	"docx":                  "python-docx",
	"dotenv":                "python-dotenv",
	"faiss":                 "faiss-cpu",
	"fitz":                  "pymupdf",
	"gi":                    "pygobject",
	"git":                   "gitpython",
	"github":                "pygithub",
	"google.protobuf":       "protobuf",
	"IPython":               "ipython",
	"jose":                  "python-jose",
	"jwt":                   "pyjwt",
	"kafka":                 "kafka-python",
	"ldap":                  "python-ldap",
	"Levenshtein":           "levenshtein",
	"magic":                 "python-magic",
	"mpl_toolkits":          "matplotlib",
	"multipart":             "python-multipart",
	"MySQLdb":               "mysqlclient",
	"nacl":                  "pynacl",
	"OpenSSL":               "pyopenssl",
	"osgeo":                 "gdal",
	"PIL":                   "pillow",
	"pkg_resources":         "setuptools",
	"pptx":                  "python-pptx",
	"psycopg2":              "psycopg2-binary",
	"serial":                "pyserial",
	"sklearn":               "scikit-learn",
	"skimage":               "scikit-image",
	"slugify":               "python-slugify",
	"socketio":              "python-socketio",
	"telegram":              "python-telegram-bot",
	"umap":                  "umap-learn",
	"usb":                   "pyusb",
	"websocket":             "websocket-client",
	"win32api":              "pywin32",
	"wx":                    "wxpython",
	"yaml":                  "pyyaml",
	"zmq":                   "pyzmq",
	"sentence_transformers": "sentence-transformers",
}

// DistributionFor names the distribution to add to requirements for an import
// that failed ("cv2" -> "opencv-python", "sklearn.linear_model" ->
// "scikit-learn"). Without a known mapping it returns the top-level module
// name, which is the distribution name for most packages.
func DistributionFor(module string) string {
	if d, ok := distributions[module]; ok {
		return d
	}
	top, _, _ := strings.Cut(module, ".")
	if d, ok := distributions[top]; ok {
		return d
	}
	for prefix, d := range distributions {
		if strings.Contains(prefix, ".") && strings.HasPrefix(module, prefix+".") {
			return d
		}
	}
	return top
}
