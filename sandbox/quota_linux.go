package sandbox

import (
	"bytes"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// diskCount is a filesystem's own count of what it holds.
type diskCount struct{ bytes, inodes int64 }

func diskCounters(dir *os.File) (diskCount, bool) {
	var sf unix.Statfs_t
	if unix.Fstatfs(int(dir.Fd()), &sf) != nil {
		return diskCount{}, false
	}
	return diskCount{
		bytes:  int64(sf.Blocks-sf.Bfree) * int64(sf.Bsize),
		inodes: int64(sf.Files - sf.Ffree),
	}, true
}

// grownSince is how much the filesystem grew since before, by the quota's
// count. Whatever the run added is part of it, so a run cannot have grown by
// more (unless something else on the disk freed space meanwhile: the next
// full measurement, at most maxWalkEvery later, sees it).
func (d diskCount) grownSince(before diskCount, inode int64) int64 {
	return max(d.bytes-before.bytes, 0) + max(d.inodes-before.inodes, 0)*inode
}

// openDeleted adds up the files on dir's filesystem that the run's
// processes hold open (or mapped) after deleting them: they take disk
// space no walk can see. The run's processes are the init's descendants
// and its process group (quotaProcs).
func openDeleted(pid int, dir *os.File) int64 {
	var ws unix.Stat_t
	if unix.Fstat(int(dir.Fd()), &ws) != nil {
		return 0
	}
	var total int64
	seen := map[uint64]bool{}
	for _, p := range quotaProcs(pid) {
		base := "/proc/" + strconv.Itoa(p)
		count := func(link string) {
			var st unix.Stat_t
			// stat through the magic link reaches the open file itself,
			// not a path; it never opens, so a FIFO cannot block it.
			if unix.Stat(link, &st) != nil || st.Nlink != 0 || st.Dev != ws.Dev || st.Mode&unix.S_IFMT != unix.S_IFREG || seen[st.Ino] {
				return
			}
			seen[st.Ino] = true
			total += int64(st.Blocks) * 512
		}
		if fds, err := os.ReadDir(base + "/fd"); err == nil {
			for _, fd := range fds {
				link := base + "/fd/" + fd.Name()
				if t, err := os.Readlink(link); err == nil && strings.HasSuffix(t, " (deleted)") {
					count(link)
				}
			}
		}
		// A deleted file can also live on in a mapping after its
		// descriptor is closed.
		if maps, err := os.ReadFile(base + "/maps"); err == nil {
			for line := range bytes.Lines(maps) {
				if !bytes.HasSuffix(bytes.TrimSpace(line), []byte("(deleted)")) {
					continue
				}
				if rng, _, ok := bytes.Cut(line, []byte(" ")); ok {
					count(base + "/map_files/" + string(rng))
				}
			}
		}
	}
	return total
}

// quotaProcs lists the run started as pid: its descendants (in a PID
// namespace the init adopts every orphan) and its process group (outside
// one, an orphan keeps it: setsid and setpgid are denied there).
func quotaProcs(pid int) []int {
	in := map[int]bool{}
	var out []int
	queue := append([]int{pid}, groupMembers(pid)...)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if in[p] {
			continue
		}
		in[p] = true
		out = append(out, p)
		queue = append(queue, childrenOf(p)...)
	}
	return out
}
