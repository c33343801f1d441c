package sandbox

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// shareWritable gives a root server's Command.Writable trees to the
// sandbox's host uid, once per runner and path: what a sandboxed command
// creates there afterwards is that uid's already.
func (r *Runner) shareWritable(paths []string) error {
	if os.Geteuid() != 0 || r.tier == TierNone {
		return nil
	}
	for _, p := range paths {
		if _, seen := r.shared.LoadOrStore("writable:"+p, true); seen {
			continue
		}
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			r.shared.Delete("writable:" + p)
			return fmt.Errorf("hand %s to the sandbox user: %w", p, os.NewSyscallError("open", err))
		}
		err = chownTree(fd, sandboxID)
		unix.Close(fd)
		if err != nil {
			r.shared.Delete("writable:" + p)
			return fmt.Errorf("hand %s to the sandbox user: %w", p, err)
		}
	}
	return nil
}

// chownTree chowns the directory dirfd and everything under it through
// descriptors, never following a link: a tree another sandboxed command
// writes in at the same time cannot turn a step of the walk into a path
// outside it (ARCHITECTURE.md pitfall 13).
func chownTree(dirfd, id int) error {
	if err := unix.Fchown(dirfd, id, id); err != nil {
		return os.NewSyscallError("fchown", err)
	}
	dup, err := unix.Dup(dirfd)
	if err != nil {
		return os.NewSyscallError("dup", err)
	}
	d := os.NewFile(uintptr(dup), "dir")
	defer d.Close()
	for {
		ents, err := d.ReadDir(256)
		for _, e := range ents {
			if e.IsDir() {
				fd, err := unix.Openat(dirfd, e.Name(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
				if err != nil {
					continue // gone, or no longer a directory
				}
				err = chownTree(fd, id)
				unix.Close(fd)
				if err != nil {
					return err
				}
				continue
			}
			if err := unix.Fchownat(dirfd, e.Name(), id, id, unix.AT_SYMLINK_NOFOLLOW); err != nil && !errors.Is(err, unix.ENOENT) {
				return os.NewSyscallError("fchownat", err)
			}
		}
		if err != nil || len(ents) == 0 {
			return nil
		}
	}
}
