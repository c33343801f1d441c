//go:build unix

package fsat

import (
	"os"

	"golang.org/x/sys/unix"
)

// Usage adds up what everything under dir costs, stopping early once past
// limit: the blocks each file has allocated (a sparse file costs what it
// takes, not its size), plus inode bytes for every entry, so that a tree of
// empty files cannot use up the filesystem's inodes for free. A file with
// several links is counted once. Directories its owner made unreadable are
// opened up and counted (Options.OpenUp); a tree deeper than MaxDepth
// returns ErrTooDeep with what it counted.
func Usage(dir *os.File, inode, limit int64) (int64, error) {
	var total int64
	seen := map[[2]uint64]bool{}
	err := Walk(dir, Options{OpenUp: true}, func(_ int, _, _ string, st *Stat) Action {
		if st.Nlink > 1 && !IsDir(st) {
			k := [2]uint64{uint64(st.Dev), st.Ino}
			if seen[k] {
				return Skip
			}
			seen[k] = true
		}
		total += Allocated(st) + inode
		if total > limit {
			return Stop
		}
		return Enter
	})
	return total, err
}

// InodeBytes is what one inode costs in Usage: the filesystem's bytes per
// inode (its size over its inode count), so that a quota spent on inodes
// uses the same share of the filesystem's inodes as it could of its space,
// between 1 KiB and 64 KiB; 4 KiB where the filesystem does not say.
func InodeBytes(dir *os.File) int64 {
	var sf unix.Statfs_t
	if err := unix.Fstatfs(int(dir.Fd()), &sf); err != nil || sf.Files == 0 {
		return 4 << 10
	}
	ratio := int64(sf.Blocks) * int64(sf.Bsize) / int64(sf.Files)
	return min(max(ratio, 1<<10), 64<<10)
}
