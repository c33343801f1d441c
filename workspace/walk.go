package workspace

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/prims-mcp/prims/internal/fsat"
)

// treePath is the host path of the tree that holds a resolved local path,
// and the path inside it.
func (w *Workspace) treePath(local string) (string, string) {
	root, rel := w.locate(local)
	switch root {
	case w.mounts:
		return filepath.Join(w.state, MountsDir), rel
	case w.logs:
		return filepath.Join(w.state, LogsDir), rel
	}
	return w.dir, rel
}

// openDir opens the directory at a resolved local path one component at a
// time from its tree's top, never through a symlink or into anything but a
// directory.
func (w *Workspace) openDir(local string) (*os.File, error) {
	top, rel := w.treePath(local)
	d, err := fsat.OpenDir(top)
	if err != nil || rel == "." {
		return d, err
	}
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		next, err := fsat.OpenDirAt(int(d.Fd()), part, fsat.Options{})
		d.Close()
		if err != nil {
			return nil, err
		}
		d = next
	}
	return d, nil
}

// walk calls fn for everything under the directory at a resolved local
// path, with paths relative to it, through descriptors (fsat.Walk), until
// fn returns false.
func (w *Workspace) walk(local string, fn func(p string, fi fs.FileInfo) bool) error {
	d, err := w.openDir(local)
	if err != nil {
		return err
	}
	defer d.Close()
	return fsat.Walk(d, fsat.Options{}, func(_ int, dir, name string, st *fsat.Stat) fsat.Action {
		if !fn(filepath.Join(dir, name), fsat.Info(name, st)) {
			return fsat.Stop
		}
		return fsat.Enter
	})
}
