// Package pythonenvtest serves a real PEP 503 "simple" package index from
// httptest, with wheels and sdists built in Go, so tests can drive real pip
// without network access.
//
//	idx := pythonenvtest.NewIndex(t,
//		pythonenvtest.Package{Name: "base", Version: "1.0"},
//		pythonenvtest.Package{Name: "app", Version: "2.0", Requires: []string{"base>=1"}},
//	)
//	// pip install --index-url idx.URL app
//
// Each package installs one top-level module named like the distribution
// ("my-pkg" imports as my_pkg) whose __version__ is the package version.
package pythonenvtest

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Package describes one distribution served by an Index.
type Package struct {
	Name     string
	Version  string
	Requires []string // Requires-Dist lines, PEP 508

	// Files adds files to the wheel, keyed by path relative to site-packages
	// ("mypkg/data.txt"). A "<module>/__init__.py" here replaces the default.
	Files map[string]string

	// Broken serves an sdist instead of a wheel whose in-tree build backend
	// raises, so pip fails with a real build error and needs nothing else
	// from the index.
	Broken bool

	// Build, when set, serves an sdist whose in-tree build backend runs
	// this Python code and then builds a working wheel: the code appends
	// lines to the list named report, which the wheel installs as
	// <module>/build_report.txt. It is how tests watch what a package's
	// build code can do.
	Build string

	// ImportDelay makes the module sleep this long when imported, for
	// benchmarks that need a slow import.
	ImportDelay time.Duration
}

// Module is the import name of p's top-level module.
func (p Package) Module() string {
	return strings.ToLower(nonAlnum.ReplaceAllString(p.Name, "_"))
}

var nonAlnum = regexp.MustCompile(`[-_.]+`)

// Normalize is the PEP 503 normalized form of a project name.
func Normalize(name string) string {
	return strings.ToLower(nonAlnum.ReplaceAllString(name, "-"))
}

// Index is a running simple index.
type Index struct {
	// URL is the index root to pass as pip's --index-url ("http://127.0.0.1:N/simple/").
	URL string

	mu        sync.Mutex
	downloads map[string]int
	pages     map[string]int // project page requests, by normalized name
	hang      chan struct{}  // non-nil while downloads hang
	done      chan struct{}  // closed when the test ends
}

// HangDownloads makes file downloads stall after their headers (until turned
// off, the client goes away or the test ends) while index pages keep
// answering, so pip can be caught mid-install.
func (ix *Index) HangDownloads(on bool) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	switch {
	case on && ix.hang == nil:
		ix.hang = make(chan struct{})
	case !on && ix.hang != nil:
		close(ix.hang)
		ix.hang = nil
	}
}

// Pages reports how many times the project page of name was requested:
// one pip run resolving name asks once, so this counts the installs that
// went to the index for it.
func (ix *Index) Pages(name string) int {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	return ix.pages[Normalize(name)]
}

// Downloads reports how many times the file with this name was fetched.
func (ix *Index) Downloads(filename string) int {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	return ix.downloads[filename]
}

type file struct {
	name string
	data []byte
}

// NewIndex serves pkgs from a fresh httptest server closed when t ends.
func NewIndex(t testing.TB, pkgs ...Package) *Index {
	t.Helper()
	projects := map[string][]file{}
	byName := map[string][]byte{}
	for _, p := range pkgs {
		var name string
		var data []byte
		var err error
		switch {
		case p.Broken:
			name, data, err = Sdist(p)
		case p.Build != "":
			name, data, err = BuildingSdist(p)
		default:
			name, data, err = Wheel(p)
		}
		if err != nil {
			t.Fatalf("pythonenvtest: build %s %s: %v", p.Name, p.Version, err)
		}
		n := Normalize(p.Name)
		projects[n] = append(projects[n], file{name, data})
		byName[name] = data
	}
	ix := &Index{downloads: map[string]int{}, pages: map[string]int{}, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /simple/{$}", func(w http.ResponseWriter, r *http.Request) {
		names := make([]string, 0, len(projects))
		for n := range projects {
			names = append(names, n)
		}
		sort.Strings(names)
		var b strings.Builder
		b.WriteString("<!DOCTYPE html><html><body>\n")
		for _, n := range names {
			fmt.Fprintf(&b, "<a href=\"%s/\">%s</a>\n", n, n)
		}
		b.WriteString("</body></html>\n")
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte(b.String()))
	})
	mux.HandleFunc("GET /simple/{project}/{$}", func(w http.ResponseWriter, r *http.Request) {
		ix.mu.Lock()
		ix.pages[r.PathValue("project")]++
		ix.mu.Unlock()
		files, ok := projects[r.PathValue("project")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		var b strings.Builder
		b.WriteString("<!DOCTYPE html><html><body>\n")
		for _, f := range files {
			sum := sha256.Sum256(f.data)
			fmt.Fprintf(&b, "<a href=\"../../files/%s#sha256=%s\">%s</a>\n",
				html.EscapeString(f.name), hex.EncodeToString(sum[:]), html.EscapeString(f.name))
		}
		b.WriteString("</body></html>\n")
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte(b.String()))
	})
	mux.HandleFunc("GET /files/{name}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		data, ok := byName[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		ix.mu.Lock()
		ix.downloads[name]++
		hang := ix.hang
		ix.mu.Unlock()
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		if hang != nil {
			// Send the headers first: pip reports "Downloading" once it has
			// them, then waits for a body that does not come.
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			select {
			case <-hang:
			case <-r.Context().Done():
				return
			case <-ix.done:
				return
			}
		}
		w.Write(data)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(ix.done) }) // runs first: unblock handlers for Close
	ix.URL = srv.URL + "/simple/"
	return ix
}

// NotFoundIndex returns the URL of an index that answers 404 to everything.
func NotFoundIndex(t testing.TB) string {
	t.Helper()
	srv := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(srv.Close)
	return srv.URL + "/simple/"
}

// HangingIndex returns the URL of an index that accepts connections and never
// answers: each request blocks until its client goes away or t ends.
func HangingIndex(t testing.TB) string {
	t.Helper()
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-done:
		}
	}))
	// Cleanups run last-in first-out: release the blocked handlers before
	// Close waits for them.
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(done) })
	return srv.URL + "/simple/"
}

// Wheel builds p as a pure-Python py3-none-any wheel with a correct RECORD.
func Wheel(p Package) (filename string, data []byte, err error) {
	dist := strings.ReplaceAll(p.Module(), "-", "_")
	distInfo := fmt.Sprintf("%s-%s.dist-info", dist, p.Version)
	files := map[string]string{}
	for k, v := range p.Files {
		files[k] = v
	}
	initPy := p.Module() + "/__init__.py"
	if _, ok := files[initPy]; !ok {
		files[initPy] = initSource(p)
	}
	files[distInfo+"/METADATA"] = metadata(p, "2.1")
	files[distInfo+"/WHEEL"] = "Wheel-Version: 1.0\nGenerator: pythonenvtest\nRoot-Is-Purelib: true\nTag: py3-none-any\n"

	paths := make([]string, 0, len(files))
	for k := range files {
		paths = append(paths, k)
	}
	sort.Strings(paths)

	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	var record strings.Builder
	for _, path := range paths {
		content := []byte(files[path])
		w, err := zw.Create(path)
		if err != nil {
			return "", nil, err
		}
		if _, err := w.Write(content); err != nil {
			return "", nil, err
		}
		sum := sha256.Sum256(content)
		fmt.Fprintf(&record, "%s,sha256=%s,%d\n", path, base64.RawURLEncoding.EncodeToString(sum[:]), len(content))
	}
	fmt.Fprintf(&record, "%s/RECORD,,\n", distInfo)
	w, err := zw.Create(distInfo + "/RECORD")
	if err != nil {
		return "", nil, err
	}
	if _, err := w.Write([]byte(record.String())); err != nil {
		return "", nil, err
	}
	if err := zw.Close(); err != nil {
		return "", nil, err
	}
	return fmt.Sprintf("%s-%s-py3-none-any.whl", dist, p.Version), buf.Bytes(), nil
}

// Sdist builds p as a source distribution whose build always fails: its
// in-tree PEP 517 backend raises, so no build dependency is fetched.
func Sdist(p Package) (filename string, data []byte, err error) {
	return sdist(p, `def _fail(*args, **kwargs):
    raise RuntimeError("pythonenvtest: deliberate build failure")

get_requires_for_build_wheel = lambda config_settings=None: []
prepare_metadata_for_build_wheel = _fail
build_wheel = _fail
build_sdist = _fail
`)
}

// BuildingSdist builds p as a source distribution whose in-tree backend
// runs p.Build, then writes a pure-Python wheel holding the module and the
// build's report (see Package.Build). It needs nothing from the index.
func BuildingSdist(p Package) (filename string, data []byte, err error) {
	dist := strings.ReplaceAll(p.Module(), "-", "_")
	backend := fmt.Sprintf(`import base64, hashlib, os, zipfile

MODULE, DIST, VERSION = %q, %q, %q
METADATA = base64.b64decode(%q).decode()
BUILD = base64.b64decode(%q).decode()


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    report = []
    exec(compile(BUILD, "pythonenvtest-build", "exec"), {"report": report})
    info = "%%s-%%s.dist-info" %% (DIST, VERSION)
    files = {
        MODULE + "/__init__.py": "__version__ = %%r\n" %% VERSION,
        MODULE + "/build_report.txt": "\n".join(report) + "\n",
        info + "/METADATA": METADATA,
        info + "/WHEEL": "Wheel-Version: 1.0\nGenerator: pythonenvtest\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    name = "%%s-%%s-py3-none-any.whl" %% (DIST, VERSION)
    record = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        for path, text in sorted(files.items()):
            data = text.encode()
            z.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append("%%s,sha256=%%s,%%d" %% (path, digest, len(data)))
        record.append(info + "/RECORD,,")
        z.writestr(info + "/RECORD", "\n".join(record) + "\n")
    return name
`, p.Module(), dist, p.Version,
		base64.StdEncoding.EncodeToString([]byte(metadata(p, "2.1"))),
		base64.StdEncoding.EncodeToString([]byte(p.Build)))
	return sdist(p, backend)
}

func sdist(p Package, backend string) (filename string, data []byte, err error) {
	base := fmt.Sprintf("%s-%s", p.Module(), p.Version)
	files := map[string]string{
		base + "/PKG-INFO":             metadata(p, "2.1"),
		base + "/pyproject.toml":       "[build-system]\nrequires = []\nbuild-backend = \"pyenvtest_backend\"\nbackend-path = [\".\"]\n",
		base + "/pyenvtest_backend.py": backend,
	}
	paths := make([]string, 0, len(files))
	for k := range files {
		paths = append(paths, k)
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, path := range paths {
		content := []byte(files[path])
		hdr := &tar.Header{Name: path, Mode: 0o644, Size: int64(len(content)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			return "", nil, err
		}
		if _, err := tw.Write(content); err != nil {
			return "", nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return "", nil, err
	}
	if err := gz.Close(); err != nil {
		return "", nil, err
	}
	return base + ".tar.gz", buf.Bytes(), nil
}

func metadata(p Package, version string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Metadata-Version: %s\nName: %s\nVersion: %s\n", version, p.Name, p.Version)
	for _, r := range p.Requires {
		fmt.Fprintf(&b, "Requires-Dist: %s\n", r)
	}
	return b.String()
}

func initSource(p Package) string {
	var b strings.Builder
	if p.ImportDelay > 0 {
		fmt.Fprintf(&b, "import time\ntime.sleep(%g)\n", p.ImportDelay.Seconds())
	}
	fmt.Fprintf(&b, "__version__ = %q\n", p.Version)
	return b.String()
}
