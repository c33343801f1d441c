package pythonenv

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prims-mcp/prims/internal/testenv"
)

func TestDiscover(t *testing.T) {
	start := time.Now()
	interps, skipped := Discover(context.Background(), DiscoverOptions{Explicit: []string{"/nonexistent/python3"}})
	t.Logf("Discover took %v", time.Since(start))
	for _, in := range interps {
		t.Logf("found %+v", in)
	}
	for _, s := range skipped {
		t.Logf("skipped %+v", s)
	}
	if len(interps) == 0 {
		testenv.Skip(t, testenv.Python, "no Python interpreter on this host")
	}
	seen := map[string]bool{}
	for _, in := range interps {
		if seen[in.Path] {
			t.Errorf("%s listed twice", in.Path)
		}
		seen[in.Path] = true
		if real, err := filepath.EvalSymlinks(in.Path); err != nil || real != in.Path {
			t.Errorf("Path %s is not a resolved executable (%s, %v)", in.Path, real, err)
		}
		if strings.Contains(in.Path, "/shims/") {
			t.Errorf("Path %s is a pyenv shim", in.Path)
		}
		if in.Pip == "" && in.NoPip == "" {
			t.Errorf("%s: no pip and no reason why", in.Path)
		}
		if in.Pip != "" && versionLess(in.PipVersion, "22.3") {
			t.Errorf("%s: pip %q %q cannot install with --python", in.Path, in.Pip, in.PipVersion)
		}
		if versionLess(in.Version, "3.7") {
			t.Errorf("%s: Python %s should have been skipped", in.Path, in.Version)
		}
	}
	if len(skipped) == 0 || skipped[0].Path != "/nonexistent/python3" || skipped[0].Reason != "not found" {
		t.Errorf("skipped[0] = %+v, want the missing explicit path", skipped)
	}
	// On the project machines pyenv has 2.7 and 3.6 (too old) and 3.7
	// (whose own pip 22.0 lacks --python, so it borrows one).
	for _, v := range []string{"2.7.18", "3.6.15"} {
		p := filepath.Join(pyenvRoot(), "versions", v)
		if _, err := os.Stat(p); err != nil {
			continue
		}
		found := false
		for _, s := range skipped {
			found = found || strings.HasPrefix(s.Path, p)
		}
		if !found {
			t.Errorf("Python %s at %s not reported as skipped", v, p)
		}
	}
	for _, in := range interps {
		if strings.HasPrefix(in.Version, "3.7.") && in.Pip == in.Path {
			t.Errorf("Python 3.7 uses its own pip %s, which has no --python", in.PipVersion)
		}
	}
}

func pyenvRoot() string {
	if r := os.Getenv("PYENV_ROOT"); r != "" {
		return r
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".pyenv")
}

func TestDiscoverExplicitFirst(t *testing.T) {
	py := testInterp(t).Path
	interps, _ := Discover(context.Background(), DiscoverOptions{Explicit: []string{py}})
	if len(interps) == 0 || interps[0].Path != py || interps[0].Source != "flag" {
		t.Fatalf("interps[0] = %+v, want %s from flag", interps, py)
	}
	got, err := Select(interps, "")
	if err != nil || got.Path != py {
		t.Errorf("Select default = %+v, %v; want %s", got, err, py)
	}
}

func TestSelect(t *testing.T) {
	interps := []Interpreter{
		{Path: "/a/python3.11", Version: "3.11.7", Source: "pyenv"},
		{Path: "/b/python3.12", Version: "3.12.1", Source: "pyenv"},
		{Path: "/c/python3.11", Version: "3.11.2", Source: "system"},
		{Path: "/d/python3.9", Version: "3.9.18", Source: "PATH"},
	}
	tests := []struct {
		version string
		want    string
		wantErr string
	}{
		{"", "/d/python3.9", ""},
		{"3.11", "/a/python3.11", ""},
		{"3.11.2", "/c/python3.11", ""},
		{"3", "/a/python3.11", ""},
		{"3.1", "", "no Python 3.1 on this server; available: 3.12.1, 3.11.7, 3.11.2, 3.9.18"},
		{"latest", "", `python "latest" is not a version`},
	}
	for _, tt := range tests {
		got, err := Select(interps, tt.version)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Select(%q) error = %v, want %q", tt.version, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got.Path != tt.want {
			t.Errorf("Select(%q) = %s, %v; want %s", tt.version, got.Path, err, tt.want)
		}
	}
	// Without flag or PATH entries, the newest wins.
	got, _ := Select(interps[:3], "")
	if diff := cmp.Diff("/b/python3.12", got.Path); diff != "" {
		t.Errorf("Select default (-want +got):\n%s", diff)
	}
}

// TestDiscoverKeepsPiplessInterpreters: an interpreter without a usable pip
// still runs code, so it is found, with the reason requirements cannot be
// installed for it and the command that fixes it. The "interpreter" is a
// script that answers the probe for an installation with no pip in it.
func TestDiscoverKeepsPiplessInterpreters(t *testing.T) {
	dir := t.TempDir()
	py := filepath.Join(dir, "bin", "python3")
	os.MkdirAll(filepath.Dir(py), 0o755)
	script := "#!/bin/sh\necho '{\"executable\": \"" + py + "\", \"version\": \"3.12.4\", \"base_prefix\": \"" + dir + "\"}'\n"
	if err := os.WriteFile(py, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	found, skipped := Discover(context.Background(), DiscoverOptions{Explicit: []string{py}, OnlyExplicit: true})
	if len(found) != 1 || len(skipped) != 0 {
		t.Fatalf("found %+v, skipped %+v; want the interpreter found", found, skipped)
	}
	in := found[0]
	if in.Path != py || in.Version != "3.12.4" || in.Pip != "" || !strings.Contains(in.NoPip, py+" -m ensurepip") {
		t.Errorf("found %+v; want no pip, and NoPip saying how to install one", in)
	}
	// The cache refuses requirements for it in words an agent can act on.
	c, err := New(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Acquire(context.Background(), in, []string{"six"}, nil)
	var ie *InstallError
	if !errors.As(err, &ie) || !strings.Contains(ie.Error(), "no pip") || !strings.Contains(ie.Error(), "Ask for another Python version") {
		t.Errorf("Acquire: %v; want an InstallError about the missing pip", err)
	}
}

// TestPyenvShimsAreSeenThrough: a pyenv shim whose version is plain to see
// (PYENV_VERSION, .python-version, $PYENV_ROOT/version) is resolved
// without running it; "system", several versions or an unknown one are
// left to the shim, which still works, only slower.
func TestPyenvShimsAreSeenThrough(t *testing.T) {
	real := testInterp(t).Path
	root := t.TempDir()
	marker := filepath.Join(t.TempDir(), "shim-ran")
	shim := filepath.Join(root, "shims", "python3")
	target := filepath.Join(root, "versions", "3.99.0", "bin", "python3")
	for _, d := range []string{filepath.Dir(shim), filepath.Dir(target)} {
		os.MkdirAll(d, 0o755)
	}
	os.WriteFile(shim, []byte("#!/bin/sh\ntouch "+marker+"\nexec "+real+" \"$@\"\n"), 0o755)
	os.Symlink(real, target)
	work := t.TempDir()
	t.Chdir(work)

	tests := []struct {
		name, env, localFile, rootFile string
		viaShim                        bool
	}{
		{name: "root version file", rootFile: "3.99.0\n"},
		{name: "PYENV_VERSION", env: "3.99.0", rootFile: "system\n"},
		{name: "local .python-version with a comment", localFile: "# pinned\n3.99.0\n", rootFile: "system\n"},
		{name: "system", rootFile: "system\n", viaShim: true},
		{name: "several versions", rootFile: "3.99.0 3.98.0\n", viaShim: true},
		{name: "a version not installed", env: "3.12", rootFile: "3.99.0\n", viaShim: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.Remove(marker)
			t.Setenv("PYENV_VERSION", tt.env)
			os.WriteFile(filepath.Join(root, "version"), []byte(tt.rootFile), 0o644)
			os.Remove(filepath.Join(work, ".python-version"))
			if tt.localFile != "" {
				os.WriteFile(filepath.Join(work, ".python-version"), []byte(tt.localFile), 0o644)
			}
			found, skipped := Discover(context.Background(), DiscoverOptions{Explicit: []string{shim}, OnlyExplicit: true})
			if len(found) != 1 {
				t.Fatalf("found %+v, skipped %+v", found, skipped)
			}
			_, err := os.Stat(marker)
			if ran := err == nil; ran != tt.viaShim {
				t.Errorf("shim ran: %v, want %v", ran, tt.viaShim)
			}
			if want, _ := filepath.EvalSymlinks(real); found[0].Path != want {
				t.Errorf("Path %s, want the real interpreter %s", found[0].Path, want)
			}
		})
	}
}
