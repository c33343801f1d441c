package pythonenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"regexp"
	"strings"
	"time"
)

// InstallError is returned when pip fails. Its Error text and fields are
// written for a model to act on and carry no host paths.
type InstallError struct {
	// Kind is one of "not_found", "no_matching_version", "build_failed",
	// "index_unreachable", "timeout", "disk_full" or "other".
	Kind     string
	Summary  string   // what went wrong, one sentence
	Hint     string   // what the caller can do next
	PipLines []string // pip's relevant lines, not its whole log
}

func (e *InstallError) Error() string {
	return fmt.Sprintf("installing requirements failed (%s): %s. %s", e.Kind, e.Summary, e.Hint)
}

// pipEnv is the whole environment of the pip child: enough to run and to
// reach the index, and nothing of the server's (no tokens, no PYTHONPATH).
// The index settings travel as command-line flags so that they are exactly
// what the cache key covers; PIP_CONFIG_FILE=/dev/null skips the user's pip
// config (a global /etc/pip.conf still applies, as for any pip).
func (c *Cache) pipEnv(tmp string) []string {
	env := []string{
		"HOME=" + c.opts.Dir,
		"TMPDIR=" + tmp,
		"LANG=C.UTF-8",
		"PYTHONIOENCODING=utf-8",
		"PYTHONUNBUFFERED=1", // progress lines arrive as pip prints them
		"PYTHONNOUSERSITE=1",
		"PIP_CACHE_DIR=" + c.pipCache,
		"PIP_CONFIG_FILE=" + os.DevNull,
		"PIP_DISABLE_PIP_VERSION_CHECK=1",
		"PIP_NO_INPUT=1",
		"PIP_NO_COLOR=1",
		"PIP_PROGRESS_BAR=off",
	}
	path := os.Getenv("PATH") // compilers for sdists are found on it
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin"
	}
	env = append(env, "PATH="+path)
	for _, k := range passThroughEnv {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// passThroughEnv are the variables pip needs to reach an index through a
// proxy or a private CA.
var passThroughEnv = []string{
	"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
	"http_proxy", "https_proxy", "no_proxy", "all_proxy",
	"SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
	"PIP_CERT", "PIP_CLIENT_CERT", "PIP_TRUSTED_HOST",
}

func (c *Cache) indexArgs() []string {
	var args []string
	if c.opts.Offline {
		args = append(args, "--no-index")
	} else {
		if c.opts.IndexURL != "" {
			args = append(args, "--index-url", c.opts.IndexURL)
		}
		for _, u := range c.opts.ExtraIndexURLs {
			args = append(args, "--extra-index-url", u)
		}
	}
	for _, l := range c.opts.FindLinks {
		args = append(args, "--find-links", l)
	}
	if c.opts.OnlyBinary {
		args = append(args, "--only-binary", ":all:")
	}
	return args
}

const keepLines = 400

// runPip installs reqs into the environment whose interpreter is envPython,
// streaming progress. It returns nil, an *InstallError, or the context's
// error when ctx (not the install timeout) ended it.
func (c *Cache) runPip(ctx context.Context, interp Interpreter, envPython, tmp string, reqs []string, progress func(string)) error {
	args := []string{"-m", "pip", "--python", envPython, "install",
		"--no-input", "--disable-pip-version-check", "--progress-bar", "off",
		"--no-warn-script-location", "--cache-dir", c.pipCache}
	args = append(args, c.indexArgs()...)
	args = append(args, "--")
	args = append(args, reqs...)

	pctx, cancel := context.WithTimeout(ctx, c.opts.InstallTimeout)
	defer cancel()
	lw := &lineWriter{fn: func(line string) {
		if p := progressLine(line); p != "" && progress != nil {
			progress(p)
		}
	}}
	newCmd := func() *exec.Cmd {
		cmd := exec.CommandContext(pctx, interp.Pip, args...)
		cmd.Env = c.pipEnv(tmp)
		cmd.Dir = tmp
		killTree(cmd)
		// A build backend that double-forks could hold the pipe open after
		// the group is killed; stop waiting for it.
		cmd.WaitDelay = 2 * time.Second
		cmd.Stdout, cmd.Stderr = lw, lw // one pipe keeps pip's stdout and stderr in order
		return cmd
	}
	start := time.Now()
	var err error
	if c.opts.Confine != nil {
		err = c.runConfined(pctx, interp, envPython, tmp, args, lw)
	} else {
		var cmd *exec.Cmd
		cmd, err = startContained(newCmd)
		if err == nil {
			err = cmd.Wait()
		}
	}
	lw.flush()
	c.log.Debug("pip install", "reqs", reqs, "elapsed", time.Since(start), "err", err)
	c.stats.pip.Add(int64(time.Since(start)))
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case pctx.Err() != nil:
		return &InstallError{
			Kind:     "timeout",
			Summary:  fmt.Sprintf("pip did not finish within %s", c.opts.InstallTimeout),
			Hint:     "The package index may be slow or hanging; retry once, then ask for fewer or smaller packages",
			PipLines: sanitize(lw.tail(5), c.pathsToHide(interp, tmp)),
		}
	}
	if ie := (*InstallError)(nil); errors.As(err, &ie) {
		return ie // the confined build's own verdict (checkBuilt)
	}
	ie := classify(lw.lines, interp.Version)
	ie.PipLines = sanitize(ie.PipLines, c.pathsToHide(interp, tmp))
	var ee *exec.ExitError
	var ce confinedExit
	if ie.Kind == "other" && errors.As(err, &ee) {
		ie.Summary = fmt.Sprintf("pip failed with exit status %d", ee.ExitCode())
	} else if ie.Kind == "other" && errors.As(err, &ce) {
		ie.Summary = fmt.Sprintf("pip failed with exit status %d", int(ce))
	} else if ie.Kind == "other" {
		c.log.Error("run pip", "pip", interp.Pip, "err", err)
		ie.Summary = "pip could not be run on the server"
	}
	return ie
}

// lineWriter splits pip's output into lines, keeping the last keepLines.
type lineWriter struct {
	fn    func(string)
	buf   []byte
	lines []string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexAny(w.buf, "\r\n")
		if i < 0 {
			break
		}
		w.line(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

func (w *lineWriter) flush() {
	if len(w.buf) > 0 {
		w.line(string(w.buf))
		w.buf = nil
	}
}

func (w *lineWriter) line(s string) {
	w.fn(s)
	w.lines = append(w.lines, s)
	if len(w.lines) > 2*keepLines {
		w.lines = append(w.lines[:0], w.lines[len(w.lines)-keepLines:]...)
	}
}

func (w *lineWriter) tail(n int) []string {
	if len(w.lines) > n {
		return w.lines[len(w.lines)-n:]
	}
	return w.lines
}

var (
	collectingRe  = regexp.MustCompile(`^Collecting (\S+)`)
	downloadingRe = regexp.MustCompile(`^\s*Downloading (\S+)(?: \(([^)]*)\))?`)
	cachedRe      = regexp.MustCompile(`^\s*Using cached (\S+)`)
	buildingRe    = regexp.MustCompile(`^\s*Building wheel for (\S+)`)
	installingRe  = regexp.MustCompile(`^Installing collected packages: (.*)`)
	installedRe   = regexp.MustCompile(`^Successfully installed (.*)`)
)

// progressLine turns one pip output line into a short human line, or "".
func progressLine(line string) string {
	if m := collectingRe.FindStringSubmatch(line); m != nil {
		return "resolving " + m[1]
	}
	if m := downloadingRe.FindStringSubmatch(line); m != nil {
		s := "downloading " + distFromFile(m[1])
		if m[2] != "" {
			s += " (" + m[2] + ")"
		}
		return s
	}
	if m := cachedRe.FindStringSubmatch(line); m != nil {
		return "cached " + distFromFile(m[1])
	}
	if m := buildingRe.FindStringSubmatch(line); m != nil {
		return "building " + m[1]
	}
	if m := installingRe.FindStringSubmatch(line); m != nil {
		return "installing " + m[1]
	}
	if m := installedRe.FindStringSubmatch(line); m != nil {
		return "installed " + m[1]
	}
	return ""
}

// distFromFile reduces a download URL or file name to "name-version".
func distFromFile(s string) string {
	base := path.Base(s)
	if i := strings.IndexAny(base, "#?"); i >= 0 {
		base = base[:i]
	}
	if strings.HasSuffix(base, ".whl") {
		parts := strings.SplitN(base, "-", 3)
		if len(parts) == 3 {
			return parts[0] + "-" + parts[1]
		}
	}
	for _, ext := range archiveExt {
		if strings.HasSuffix(base, ext) {
			return strings.TrimSuffix(base, ext)
		}
	}
	return base
}

var (
	egressRefusedRe = regexp.MustCompile(`prims egress refused (\S+?):? (?:not an allowed host|it resolves)`)
	noMatchRe       = regexp.MustCompile(`No matching distribution found for (\S+)`)
	fromVersionRe   = regexp.MustCompile(`Could not find a version that satisfies the requirement (\S+) \(from versions: ([^)]*)\)`)
	unreachable     = []string{"Retrying (Retry(", "NewConnectionError", "Failed to establish a new connection",
		"Max retries exceeded", "ConnectTimeoutError", "ReadTimeoutError", "Could not fetch URL", "Name or service not known"}
	buildFailed = []string{"subprocess-exited-with-error", "Failed building wheel", "Failed to build ",
		"metadata-generation-failed", "did not run successfully"}
)

// classify reads pip's failing output and names the failure for a model.
func classify(lines []string, pyVersion string) *InstallError {
	has := func(needles []string) bool {
		for _, l := range lines {
			for _, n := range needles {
				if strings.Contains(l, n) {
					return true
				}
			}
		}
		return false
	}
	errorLines := func() []string {
		var out []string
		for _, l := range lines {
			if t := strings.TrimSpace(l); strings.HasPrefix(t, "ERROR:") {
				out = append(out, t)
			}
		}
		return out
	}

	if has(buildFailed) {
		name := "a package"
		for _, l := range lines {
			if m := collectingRe.FindStringSubmatch(l); m != nil {
				name = m[1]
			}
			if m := buildingRe.FindStringSubmatch(l); m != nil {
				name = m[1]
			}
			if has := strings.Contains(l, "subprocess-exited-with-error"); has {
				break
			}
		}
		return &InstallError{
			Kind:     "build_failed",
			Summary:  fmt.Sprintf("building %s from source failed", name),
			Hint:     fmt.Sprintf("Pick a version of %s that publishes a prebuilt wheel for Python %s, or use another package", name, majorMinor(pyVersion)),
			PipLines: buildBlock(lines),
		}
	}

	var missing, versions string
	for _, l := range lines {
		if m := fromVersionRe.FindStringSubmatch(l); m != nil {
			missing, versions = m[1], m[2]
		} else if m := noMatchRe.FindStringSubmatch(l); m != nil && missing == "" {
			missing, versions = m[1], "none"
		}
	}
	for _, l := range lines {
		if m := egressRefusedRe.FindStringSubmatch(l); m != nil {
			return &InstallError{
				Kind:    "index_unreachable",
				Summary: fmt.Sprintf("pip needed %s, which is not one of the package index hosts this server's installs may reach", m[1]),
				Hint: "The package's files are on a host the server's operator has not configured; run the code without that package, " +
					"or ask the operator to add the host (--extra-index-url or --find-links)",
				PipLines: errorLines(),
			}
		}
	}
	if has(unreachable) {
		var pl []string
		for _, l := range lines {
			if t := strings.TrimSpace(l); strings.HasPrefix(t, "WARNING: Retrying") && len(pl) == 0 {
				pl = append(pl, t)
			}
		}
		return &InstallError{
			Kind:     "index_unreachable",
			Summary:  "the package index could not be reached",
			Hint:     "This server cannot download packages right now; run the code without new requirements, using only the standard library and packages already installed",
			PipLines: append(pl, errorLines()...),
		}
	}
	if has([]string{"ResolutionImpossible", "conflicting dependencies"}) {
		return &InstallError{
			Kind:     "no_matching_version",
			Summary:  "the requirements conflict: no set of versions satisfies all of them",
			Hint:     "Loosen or drop version specifiers so one version of each package satisfies every requirement",
			PipLines: conflictLines(lines),
		}
	}
	if missing != "" {
		name := missing
		if i := strings.IndexAny(name, "<>=!~[;"); i > 0 {
			name = name[:i]
		}
		if versions == "none" {
			return &InstallError{
				Kind:    "not_found",
				Summary: fmt.Sprintf("no package named %q was found on the package index", name),
				Hint: "Check the spelling; the install name can differ from the import name " +
					"(sklearn is scikit-learn, cv2 is opencv-python, PIL is pillow). Drop it if the code does not need it",
				PipLines: errorLines(),
			}
		}
		return &InstallError{
			Kind:     "no_matching_version",
			Summary:  fmt.Sprintf("no version of %s matches %q (available for Python %s: %s)", name, missing, majorMinor(pyVersion), versions),
			Hint:     "Relax or drop the version specifier, or pick one of the available versions",
			PipLines: errorLines(),
		}
	}
	pl := errorLines()
	if len(pl) == 0 {
		pl = tail(lines, 10)
	}
	return &InstallError{
		Kind:     "other",
		Hint:     "Read pip's lines, correct the requirements and retry",
		PipLines: pl,
	}
}

// buildBlock keeps pip's summary of a failed build step and the end of the
// backend's output, where the actual error is.
func buildBlock(lines []string) []string {
	var out, block []string
	in := false
	for _, l := range lines {
		t := strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(t, "× ") && len(out) == 0:
			out = append(out, t)
		case strings.HasPrefix(t, "╰─>"):
			in = true
		case in && t == "[end of output]":
			in = false
		case in:
			block = append(block, t)
		case strings.HasPrefix(t, "ERROR:") || strings.HasPrefix(t, "error:"):
			out = append(out, t)
		}
	}
	return append(out, tail(block, 8)...)
}

func conflictLines(lines []string) []string {
	var out []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "ERROR:") || strings.HasPrefix(t, "The conflict is caused by") ||
			strings.Contains(t, " depends on ") || strings.HasPrefix(t, "The user requested") {
			out = append(out, t)
		}
	}
	return tail(out, 12)
}

func tail(s []string, n int) []string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (c *Cache) pathsToHide(interp Interpreter, tmp string) []string {
	ps := []string{tmp, c.opts.Dir, interp.BasePrefix}
	if home, err := os.UserHomeDir(); err == nil {
		ps = append(ps, home)
	}
	return ps
}

// absPathRe finds absolute paths that start a token (not the path of a URL).
var absPathRe = regexp.MustCompile(`(^|[\s"'(=])(/[^\s"'():,]+)`)

// sanitize removes host paths from pip lines before a model sees them:
// known prefixes become placeholders, any other absolute path is cut to its
// last element. Lines are also bounded in number and length.
func sanitize(lines []string, hide []string) []string {
	out := make([]string, 0, len(lines))
	for _, l := range tail(lines, 20) {
		for _, h := range hide {
			if len(h) > 1 {
				l = strings.ReplaceAll(l, h, "…")
			}
		}
		l = absPathRe.ReplaceAllStringFunc(l, func(m string) string {
			i := strings.IndexByte(m, '/')
			return m[:i] + "…/" + path.Base(m[i:])
		})
		if len(l) > 300 {
			l = l[:300] + "…"
		}
		out = append(out, l)
	}
	return out
}
