//go:build unix

package workspace

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// ownerFile, in a workspace's state directory, records the server that owns
// it: the file is locked (flock) for as long as the workspace is open, and
// the kernel drops the lock when that process dies, however it dies.
const ownerFile = "owner"

// claim creates the owner record of a new state directory and locks it.
func claim(state string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(state, ownerFile), os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create workspace owner record: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock workspace owner record: %w", err)
	}
	fmt.Fprintf(f, "%d\n", os.Getpid())
	return f, nil
}

var sweepOnce sync.Once

// sweepLeftovers runs Sweep once per process, before its first workspace.
func sweepLeftovers() { sweepOnce.Do(func() { Sweep() }) }

// Sweep removes the temporary workspaces of servers that are gone (killed
// with SIGKILL, or crashed) and returns how many it removed. A workspace
// counts as gone only when its owner record exists and no process holds it
// locked: one being created (no record yet), one of an older PRIMS without
// records, and any in use are left alone.
func Sweep() int {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), statePrefix+"*"))
	n := 0
	for _, d := range dirs {
		if ownerGone(d) && removeTree(d) == nil {
			n++
		}
	}
	return n
}

// ownerGone reports whether the owner record in state is unlocked. No
// server ever claims an existing directory (claim makes its record in a
// fresh one), so an unlocked record stays unlocked.
func ownerGone(state string) bool {
	fi, err := os.Lstat(state)
	if err != nil || !fi.IsDir() {
		return false
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Geteuid() {
		return false // another user's: not ours to judge
	}
	f, err := os.OpenFile(filepath.Join(state, ownerFile), os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	return unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil
}

// ownedByMe reports whether this process's user owns fi.
func ownedByMe(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Geteuid()
}
