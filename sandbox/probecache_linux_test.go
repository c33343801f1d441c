package sandbox

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/prims-mcp/prims/internal/testenv"
)

// TestProbeCache: a success is recorded and then taken without starting the
// init; an entry for another key, one owned by another user and one reached
// through a symlink are ignored (the probes run again), and a failure is
// never recorded.
func TestProbeCache(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	file := filepath.Join(dir, probeCacheFile)
	starts := probeStarts.Load()
	probed := func() bool {
		n := probeStarts.Load()
		defer func() { starts = n }()
		return n != starts
	}
	first := probe(dir)
	if !probed() {
		t.Fatal("the first probe took an answer from an empty cache")
	}
	if first.Init != nil || first.UserNS != nil {
		// A host without the full sandbox: nothing may be recorded.
		if _, err := os.Lstat(file); err == nil {
			t.Fatalf("a failed probe was recorded (init: %v, user namespaces: %v)", first.Init, first.UserNS)
		}
		probe(dir)
		if !probed() {
			t.Fatal("a failed probe was not repeated")
		}
		return
	}
	second := probe(dir)
	if probed() {
		t.Fatal("the second probe started the init despite a recorded success")
	}
	if second.Best != first.Best || second.Init != nil || second.UserNS != nil {
		t.Fatalf("cached answer %+v, probed %+v", second, first)
	}
	if probe(""); !probed() {
		t.Fatal("without a cache directory the probe took a cached answer")
	}

	good, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		plant func() error
	}{
		{"another key", func() error { return os.WriteFile(file, []byte(`{"key":"0000"}`), 0o600) }},
		{"a symlink", func() error {
			real := filepath.Join(dir, "elsewhere.json")
			if err := os.WriteFile(real, good, 0o600); err != nil {
				return err
			}
			os.Remove(file)
			return os.Symlink(real, file)
		}},
		{"another owner", func() error {
			if os.Geteuid() != 0 {
				testenv.Skip(t, testenv.Root, "only root can make a file owned by another user")
			}
			os.Remove(file)
			if err := os.WriteFile(file, good, 0o600); err != nil {
				return err
			}
			return os.Chown(file, sandboxID, sandboxID)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.plant(); err != nil {
				t.Fatal(err)
			}
			if cachedProbeOK(dir, probeKey()) {
				t.Fatal("the planted entry was taken")
			}
			probed() // planting started nothing; reset the count
			if probe(dir); !probed() {
				t.Fatal("no probe ran although the entry was ignored")
			}
			// The control: the untampered entry is taken.
			os.Remove(file)
			if err := os.WriteFile(file, good, 0o600); err != nil {
				t.Fatal(err)
			}
			if !cachedProbeOK(dir, probeKey()) {
				t.Fatal("the control entry was not taken: the probe cannot see a good entry")
			}
		})
	}
}
