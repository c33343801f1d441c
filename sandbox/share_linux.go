package sandbox

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// shareWorkspace gives the workspace to the sandbox's host uid, so that code
// running as that uid can write it; the server, as root, keeps full access.
// mounts/ and logs/ stay the server's, readable by all: the code reads its
// inputs and its own source (tracebacks quote logs/NNNN-code.py) but cannot
// change them, even in the landlock tier.
//
// It walks the whole workspace, so a runner does it once per workspace:
// afterwards the server adds files only under mounts/ (shareMounts) and
// logs/ (created readable by all), and what the code creates is the
// sandbox user's already.
func shareWorkspace(dir string) error { return share(dir, dir) }

// shareMounts makes what mount_file added since the last run readable.
func shareMounts(dir string) error { return share(dir, filepath.Join(dir, "mounts")) }

func share(dir, from string) error {
	return filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		top, _, _ := strings.Cut(rel, string(filepath.Separator))
		if top == "mounts" || top == "logs" {
			if d.Type()&fs.ModeSymlink != 0 {
				return nil
			}
			mode := os.FileMode(0o644)
			if d.IsDir() {
				mode = 0o755
			}
			return os.Chmod(p, mode)
		}
		return os.Lchown(p, sandboxID, sandboxID)
	})
}
