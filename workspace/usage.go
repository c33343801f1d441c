package workspace

import (
	"errors"
	"path/filepath"
	"syscall"

	"github.com/prims-mcp/prims/internal/fsat"
)

// Usage is what the workspace holds against its quota, counted the way the
// sandbox's quota watcher counts (fsat.Usage): the program's directory and
// the mounted files. It stops counting once past limit.
func (w *Workspace) Usage(limit int64) int64 {
	var total int64
	for _, dir := range []string{w.dir, filepath.Join(w.state, MountsDir)} {
		d, err := fsat.OpenDir(dir)
		if err != nil {
			continue
		}
		n, _ := fsat.Usage(d, fsat.InodeBytes(d), limit-total)
		d.Close()
		total += n
		if total > limit {
			break
		}
	}
	return total
}

// MountsUsage is what the mounted files hold against the quota: the
// program cannot change it, so a run's quota watcher adds it once.
func (w *Workspace) MountsUsage() int64 {
	d, err := fsat.OpenDir(filepath.Join(w.state, MountsDir))
	if err != nil {
		return 0
	}
	defer d.Close()
	n, _ := fsat.Usage(d, fsat.InodeBytes(d), 1<<62)
	return n
}

// isNoSpace reports whether err says the disk (or the user's disk quota)
// is full.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
