package pythonenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// fileRecord is what the build saw of one file of an environment when it
// published it. A use compares it with one lstat: a deleted or truncated
// file, or one rewritten since, no longer matches. (A same-size rewrite
// that restores the mtime passes; that takes intent, not an accident.)
type fileRecord struct {
	Path  string `json:"p"` // relative to the environment root
	Size  int64  `json:"s"`
	MTime int64  `json:"m"` // Unix nanoseconds
	Link  bool   `json:"l,omitempty"`
}

// manifest is an environment's parsed metadata, kept in memory so that a
// use costs stats, not a read and a parse.
type manifest struct {
	dir      os.FileInfo // the environment directory it was read from
	metaSize int64
	files    []fileRecord
}

// record lists the regular files and symlinks under dir, for meta.Files,
// and their total size. Directories are left out: their mtimes change when
// a run's interpreter adds a __pycache__ entry outside a sandbox.
func record(dir string) ([]fileRecord, int64, error) {
	var files []fileRecord
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info() // lstat
		if err != nil {
			return err
		}
		total += fi.Size()
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		files = append(files, fileRecord{Path: rel, Size: fi.Size(), MTime: fi.ModTime().UnixNano(), Link: fi.Mode()&fs.ModeSymlink != 0})
		return nil
	})
	return files, total, err
}

// verify checks the published environment key against the record its build
// kept: its metadata is there and parses, every file it recorded is there
// with the same type, size and mtime, and bin/python leads to an
// interpreter. It costs one lstat per file.
func (c *Cache) verify(key string) error {
	dir := filepath.Join(c.envsDir, key)
	di, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("environment directory: %w", err)
	}
	mi, err := os.Stat(filepath.Join(dir, metaFile))
	if err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	c.mu.Lock()
	m := c.manifests[key]
	c.mu.Unlock()
	if m == nil || !os.SameFile(m.dir, di) || m.metaSize != mi.Size() {
		data, err := os.ReadFile(filepath.Join(dir, metaFile))
		if err != nil {
			return fmt.Errorf("metadata: %w", err)
		}
		var md meta
		if err := json.Unmarshal(data, &md); err != nil {
			return fmt.Errorf("metadata: %w", err)
		}
		if md.Key != key || len(md.Files) == 0 {
			return errors.New("metadata: not this environment's, or without a file record")
		}
		m = &manifest{dir: di, metaSize: int64(len(data)), files: md.Files}
		c.mu.Lock()
		c.manifests[key] = m
		c.mu.Unlock()
	}
	for _, f := range m.files {
		fi, err := os.Lstat(filepath.Join(dir, f.Path))
		if err != nil {
			return fmt.Errorf("%s: %w", f.Path, err)
		}
		if fi.Size() != f.Size || fi.ModTime().UnixNano() != f.MTime || (fi.Mode()&fs.ModeSymlink != 0) != f.Link {
			return fmt.Errorf("%s: changed since the build (size %d, was %d)", f.Path, fi.Size(), f.Size)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "bin", "python")); err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("bin/python leads to no interpreter: %v", err)
	}
	return nil
}

// quarantineLocked moves a damaged environment out of envs/ into tmp/, so
// that the next Acquire rebuilds it, and returns where it went ("" if it
// did not move). Runs already using it keep it: it is renamed, not deleted.
// With p, it moves only the directory p pins: another process may have
// replaced it already. c.mu is held.
func (c *Cache) quarantineLocked(key string, p *pin) string {
	dir := filepath.Join(c.envsDir, key)
	if p != nil {
		fi, err1 := p.f.Stat()
		di, err2 := os.Stat(dir)
		if err1 != nil || err2 != nil || !os.SameFile(fi, di) {
			return ""
		}
	}
	if c.pins[key] == p || p == nil {
		delete(c.pins, key) // holders keep their pin until they release it
	}
	delete(c.manifests, key)
	var rnd [6]byte
	rand.Read(rnd[:])
	trash := filepath.Join(c.tmpDir, "broken-"+key[:12]+"-"+hex.EncodeToString(rnd[:]))
	if err := os.Rename(dir, trash); err != nil {
		c.log.Warn("move damaged environment aside", "key", key, "err", err)
		return ""
	}
	return trash
}

// removeIfFree deletes a quarantined environment unless a run in any
// process still holds it; cleanStale removes it at a later start then.
func (c *Cache) removeIfFree(trash string) {
	if trash == "" {
		return
	}
	f, err := os.Open(trash)
	if err != nil {
		return
	}
	defer f.Close()
	if ok, _ := tryLockExclusive(f); ok {
		if err := os.RemoveAll(trash); err != nil {
			c.log.Warn("remove damaged environment", "dir", trash, "err", err)
		}
	}
}

// lockKey takes the cross-process build lock of key, waiting (and saying
// so) while another process holds it.
func (c *Cache) lockKey(ctx context.Context, key string, progress func(string)) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(c.locksDir, key), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock environment build: %w", err)
	}
	wait := 10 * time.Millisecond
	for first := true; ; first = false {
		ok, err := tryLockExclusive(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock environment build: %w", err)
		}
		if ok {
			return func() { f.Close() }, nil
		}
		if first && progress != nil {
			progress("waiting for another process building the same environment")
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for another build: %w", ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}
