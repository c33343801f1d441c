package sandbox

import (
	"github.com/prims-mcp/prims/internal/fsat"
	"golang.org/x/sys/unix"
)

// shareWorkspace gives the program's directory to the sandbox's host uid,
// so that code running as that uid can write it; the server, as root, keeps
// full access. logs/ and mounts/ are not in it (they are the server's own
// directories, readable by all, see workspace.Workspace), so nothing else
// needs opening up, now or after later mount_file calls.
//
// It walks the whole directory, so a runner does it once per workspace:
// what the code creates afterwards is the sandbox user's already. The walk
// goes through directory descriptors and chowns each name relative to its
// directory without following it (fsat): another server's program sharing
// a --workspace may swap directories for symlinks to host directories
// while this runs, and a chown must never land outside. A file with more
// than one link is left as it is: it may be a hard link to a host file
// (protected_hardlinks allows linking files one can read and write).
func shareWorkspace(dir string) error {
	d, err := fsat.OpenDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Fchown(int(d.Fd()), sandboxID, sandboxID); err != nil {
		return err
	}
	return fsat.Walk(d, fsat.Options{}, func(parent int, _, name string, st *fsat.Stat) fsat.Action {
		if st.Nlink > 1 && !fsat.IsDir(st) {
			return fsat.Skip
		}
		_ = unix.Fchownat(parent, name, sandboxID, sandboxID, unix.AT_SYMLINK_NOFOLLOW)
		return fsat.Enter
	})
}
