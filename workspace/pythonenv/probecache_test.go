package pythonenv

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestProbeCache: a second Inspect with the same cache takes the recorded
// answer (a version planted in the entry comes back); a changed executable
// (its modification time) is probed again; a script, whose target may
// change, and a failed probe are never recorded.
func TestProbeCache(t *testing.T) {
	in := testInterp(t)
	ctx := context.Background()
	tmp := t.TempDir()
	cache := filepath.Join(tmp, "cache")
	opts := DiscoverOptions{ProbeCache: cache}
	// A copy of the interpreter, whose times the test may change; it finds
	// its standard library through the prefix compiled into it.
	py := filepath.Join(tmp, "bin", "python3")
	os.MkdirAll(filepath.Dir(py), 0o755)
	b, err := os.ReadFile(in.Path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(py, b, 0o755); err != nil {
		t.Fatal(err)
	}
	entries := func() []string {
		m, _ := filepath.Glob(filepath.Join(cache, "python-*.json"))
		return m
	}

	first, err := InspectWith(ctx, py, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries()) != 1 {
		t.Fatalf("cache holds %q after one probe, want one entry", entries())
	}
	plant := func(version string) {
		f := entries()[0]
		var e map[string]any
		raw, _ := os.ReadFile(f)
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatal(err)
		}
		e["probe"].(map[string]any)["version"] = version
		raw, _ = json.Marshal(e)
		if err := os.WriteFile(f, raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	plant("3.99.0")
	if got, err := InspectWith(ctx, py, opts); err != nil || got.Version != "3.99.0" {
		t.Fatalf("second Inspect: version %q, %v; want the recorded 3.99.0", got.Version, err)
	}
	// The control for the above: without the cache the real answer.
	if got, err := Inspect(ctx, py); err != nil || got.Version != first.Version {
		t.Fatalf("Inspect without cache: %q, %v; want %q", got.Version, err, first.Version)
	}
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(py, later, later); err != nil {
		t.Fatal(err)
	}
	if got, err := InspectWith(ctx, py, opts); err != nil || got.Version != first.Version {
		t.Fatalf("after the executable changed: %q, %v; want a new probe (%q)", got.Version, err, first.Version)
	}
	if len(entries()) != 1 {
		t.Fatalf("cache holds %q, want the one entry replaced", entries())
	}

	os.RemoveAll(cache)
	script := filepath.Join(tmp, "bin", "shim")
	os.WriteFile(script, []byte("#!/bin/sh\nexec "+py+" \"$@\"\n"), 0o755)
	if _, err := InspectWith(ctx, script, opts); err != nil {
		t.Fatal(err)
	}
	broken := filepath.Join(tmp, "bin", "false")
	if b, err := os.ReadFile("/bin/false"); err == nil {
		os.WriteFile(broken, b, 0o755)
		if _, err := InspectWith(ctx, broken, opts); err == nil {
			t.Fatal("/bin/false passed the probe")
		}
	}
	if len(entries()) != 0 {
		t.Fatalf("a script or a failed probe was recorded: %q", entries())
	}
}
