package sandbox

import (
	"errors"
	"os"
	"time"

	"github.com/prims-mcp/prims/internal/fsat"
)

// quotaPoll is how often the watcher looks at the disk while code runs. A
// run can overshoot the quota by what it writes in one interval; RLIMIT_FSIZE
// (never above the quota) bounds each single file regardless.
const quotaPoll = 100 * time.Millisecond

// Between two full measurements the watcher keeps at most this share of a
// CPU: a full walk that took d waits walkShare×d before the next one (a
// workspace of 20,000 files took a whole core when walked every poll).
// maxWalkEvery caps the wait; in between, the filesystem's own counters
// (statfs, one system call per poll) show whether the disk filled by more
// than the quota has left, and a full walk follows at once when it may
// have.
const (
	walkShare    = 20
	maxWalkEvery = 5 * time.Second
)

// watchQuota measures what a run holds every quotaPoll (adaptively, see
// walkShare) and closes hit once it holds more than quota bytes: the
// program's directory through descriptors (fsat.Usage: blocks, inodes,
// trees deeper than PATH_MAX, never a symlink followed or a directory
// chmodded through a path), plus the files the run's processes hold open
// after deleting them (openDeleted), plus job.QuotaUsed. RLIMIT_FSIZE is
// per file (ARCHITECTURE.md pitfall 6); this bounds the total without privileges
// or a dedicated filesystem.
func watchQuota(job Job, pid int, quota int64, hit chan<- struct{}) (stop func()) {
	return poll(quotaPoll, hit, func() (func() bool, func()) {
		q, err := newQuotaMeter(job.Dir, pid, quota-job.QuotaUsed)
		if err != nil {
			return nil, nil
		}
		return q.over, q.close
	})
}

// poll watches for a limit from a goroutine of its own: it calls open
// there (setup stays off the caller's path), then check every interval
// until check reports the limit passed, and closes hit. stop ends the
// watch and waits for it, cleanup included. A nil check (open failed)
// watches nothing.
func poll(every time.Duration, hit chan<- struct{}, open func() (check func() bool, cleanup func())) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		check, cleanup := open()
		if cleanup != nil {
			defer cleanup()
		}
		if check == nil {
			return
		}
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if check() {
					close(hit)
					return
				}
			}
		}
	}()
	return func() { close(done); <-finished }
}

// quotaMeter measures one run's workspace.
type quotaMeter struct {
	dir    *os.File
	pid    int
	budget int64
	inode  int64

	last     int64     // bytes at the last full measurement
	lastDisk diskCount // the filesystem's counters then
	lastAt   time.Time
	every    time.Duration // wait until the next full measurement
}

func newQuotaMeter(dir string, pid int, budget int64) (*quotaMeter, error) {
	d, err := fsat.OpenDir(dir)
	if err != nil {
		return nil, err
	}
	return &quotaMeter{dir: d, pid: pid, budget: budget, inode: fsat.InodeBytes(d)}, nil
}

func (q *quotaMeter) close() { q.dir.Close() }

// over reports whether the run is past its budget, measuring fully only
// when the disk may have grown past it or the wait is up.
func (q *quotaMeter) over() bool {
	now := time.Now()
	disk, ok := diskCounters(q.dir)
	if !q.lastAt.IsZero() && ok && now.Sub(q.lastAt) < q.every {
		grown := disk.grownSince(q.lastDisk, q.inode)
		if q.last+grown <= q.budget {
			return false
		}
	}
	total, err := q.measure()
	took := time.Since(now)
	q.last, q.lastDisk, q.lastAt = total, disk, now
	q.every = min(max(quotaPoll, walkShare*took), maxWalkEvery)
	return total > q.budget || errors.Is(err, fsat.ErrTooDeep)
}

// measure counts the directory and the run's deleted-but-open files.
func (q *quotaMeter) measure() (int64, error) {
	total, err := fsat.Usage(q.dir, q.inode, q.budget)
	if total <= q.budget {
		total += openDeleted(q.pid, q.dir)
	}
	return total, err
}

// diskUsage is what dir holds by the quota's count, without a run.
func diskUsage(dir string, limit int64) int64 {
	d, err := fsat.OpenDir(dir)
	if err != nil {
		return 0
	}
	defer d.Close()
	n, _ := fsat.Usage(d, fsat.InodeBytes(d), limit)
	return n
}
