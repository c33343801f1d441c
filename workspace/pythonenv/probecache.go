package pythonenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// A short-lived prims (`prims run`) would otherwise start the interpreter
// once on every call only to ask its version and prefix. With
// DiscoverOptions.ProbeCache the answer is kept per interpreter, keyed by
// the executable file's identity and the pyvenv.cfg files that can change
// its prefix; only native executables are cached, since a script (a pyenv
// shim) may run a different interpreter each time. Failures are never kept.

type probeCacheEntry struct {
	Key   string     `json:"key"`
	Probe probeCache `json:"probe"`
}

// probeCache is what the probe script answers.
type probeCache struct {
	Executable string `json:"executable"`
	Version    string `json:"version"`
	BasePrefix string `json:"base_prefix"`
}

// cachedProbe is runProbe through the cache in dir ("" for none).
func cachedProbe(ctx context.Context, dir, path string, timeout time.Duration) (probe, string) {
	key := probeCacheKey(path)
	if dir == "" || key == "" {
		return runProbe(ctx, path, timeout)
	}
	// One file per interpreter path, so that a new answer replaces the old.
	name := sha256.Sum256([]byte(path))
	file := filepath.Join(dir, "python-"+hex.EncodeToString(name[:16])+".json")
	if e, ok := readProbeCache(file); ok && e.Key == key {
		if _, err := os.Stat(e.Probe.Executable); err == nil {
			p := probe{Executable: e.Probe.Executable, Version: e.Probe.Version, BasePrefix: e.Probe.BasePrefix}
			p.Pip, p.PipRequiresPython = findPip(p.BasePrefix, p.Version)
			return p, ""
		}
	}
	p, errMsg := runProbe(ctx, path, timeout)
	if errMsg == "" {
		writeProbeCache(dir, file, probeCacheEntry{Key: key, Probe: probeCache{p.Executable, p.Version, p.BasePrefix}})
	}
	return p, errMsg
}

// probeCacheKey identifies the interpreter at path: the path, the file it
// resolves to, that file's size, mode and times, and the pyvenv.cfg files
// Python reads beside it and one level up. "" when path is not a native
// executable (ELF or Mach-O) or cannot be read.
func probeCacheKey(path string) string {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return ""
	}
	f, err := os.Open(real)
	if err != nil {
		return ""
	}
	defer f.Close()
	var magic [4]byte
	if _, err := io.ReadFull(f, magic[:]); err != nil {
		return ""
	}
	switch string(magic[:]) {
	case "\x7fELF", "\xcf\xfa\xed\xfe", "\xca\xfe\xba\xbe":
	default:
		return ""
	}
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%d %v %d\n", path, real, fi.Size(), fi.Mode(), fi.ModTime().UnixNano())
	for _, cfg := range []string{filepath.Join(filepath.Dir(path), "pyvenv.cfg"), filepath.Join(filepath.Dir(filepath.Dir(path)), "pyvenv.cfg"),
		filepath.Join(filepath.Dir(real), "pyvenv.cfg"), filepath.Join(filepath.Dir(filepath.Dir(real)), "pyvenv.cfg")} {
		if ci, err := os.Stat(cfg); err == nil {
			fmt.Fprintf(h, "%s %d %d\n", cfg, ci.Size(), ci.ModTime().UnixNano())
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// readProbeCache reads a cache entry that is a regular file of modest size
// (never a symlink someone planted).
func readProbeCache(file string) (probeCacheEntry, bool) {
	var e probeCacheEntry
	fi, err := os.Lstat(file)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() > 64<<10 || !ownedBySelf(fi) {
		return e, false
	}
	b, err := os.ReadFile(file)
	return e, err == nil && json.Unmarshal(b, &e) == nil
}

// writeProbeCache records e atomically; an error only costs the next call
// a probe.
func writeProbeCache(dir, file string, e probeCacheEntry) {
	if os.MkdirAll(dir, 0o700) != nil {
		return
	}
	f, err := os.CreateTemp(dir, filepath.Base(file)+".*")
	if err != nil {
		return
	}
	b, _ := json.Marshal(e)
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), file)
	}
	if err != nil {
		os.Remove(f.Name())
	}
}
