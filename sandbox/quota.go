package sandbox

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// quotaPoll is how often the workspace is measured while code runs. A run
// can overshoot the quota by what it writes in one interval; RLIMIT_FSIZE
// (never above the quota) bounds each single file regardless.
const quotaPoll = 100 * time.Millisecond

// watchQuota measures dir every quotaPoll and closes hit when it holds more
// than quota bytes. RLIMIT_FSIZE is per file (DESIGN.md pitfall 6); this
// bounds the total without privileges or a dedicated filesystem.
func watchQuota(dir string, quota int64, hit chan<- struct{}) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(quotaPoll)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if diskUsage(dir, quota) > quota {
					close(hit)
					return
				}
			}
		}
	}()
	return func() { close(done); <-finished }
}

// diskUsage adds up the bytes allocated to everything under dir, without
// following symlinks, stopping early once past limit. Allocated blocks, not
// sizes, are counted: a sparse file takes no disk.
func diskUsage(dir string, limit int64) int64 {
	var total int64
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			// Code running as this user can chmod 000 a directory to hide
			// what it holds; open it up again and count it anyway.
			if d != nil && d.IsDir() && errors.Is(err, fs.ErrPermission) && os.Chmod(p, 0o700) == nil {
				total += diskUsage(p, limit-total)
			}
			return nil
		}
		if info, err := d.Info(); err == nil {
			total += allocated(info)
		}
		if total > limit {
			return filepath.SkipAll
		}
		return nil
	})
	return total
}
