// Package workspace owns a PRIMS session's files: a private directory where
// model-written code runs, with inputs under mounts/ and results under
// output/. Every path a client names goes through one resolver
// ([Workspace.Resolve]) that refuses absolute paths, "..", and symlinks, and
// every file operation goes through an [os.Root] so that a symlink planted by
// the code cannot lead the server outside the directory.
//
//	ws, err := workspace.New("") // a fresh temporary directory
//	if err != nil { ... }
//	defer ws.Close()             // removes it
//	entries, err := ws.List("output")
//
// Errors from this package that a client caused (a bad path, a missing file,
// a download over its cap) are [*Error] values whose text is safe to show to
// the client: it never names host paths.
package workspace

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// The fixed layout of a workspace, relative to its root.
const (
	MountsDir = "mounts" // inputs placed by mount_file; read-only to the code
	OutputDir = "output" // what the code writes for the user
	LogsDir   = "logs"   // the complete stdout and stderr of every run
	HomeDir   = ".home"  // HOME for the code, so caches land inside the workspace
	TmpDir    = ".tmp"   // TMPDIR for the code when the sandbox has no private /tmp
)

// Workspace is one session's directory. Its methods are safe for concurrent use.
type Workspace struct {
	dir  string
	root *os.Root
	keep bool
}

// New opens the workspace at dir, creating it (mode 0700) and its layout if
// needed; a workspace named this way is never deleted by Close. With dir ""
// it creates a fresh private temporary directory that Close removes.
func New(dir string) (*Workspace, error) {
	keep := dir != ""
	if dir == "" {
		d, err := os.MkdirTemp("", "prims-ws-")
		if err != nil {
			return nil, fmt.Errorf("create workspace: %w", err)
		}
		dir = d
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create workspace %s: %w", dir, err)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("workspace path: %w", err)
	}
	// Resolve symlinks in the root itself (e.g. /tmp on macOS) once, so the
	// paths handed to the sandbox are the real ones.
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	if err := os.Chmod(dir, 0o700); err != nil && !keep {
		return nil, fmt.Errorf("protect workspace: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open workspace %s: %w", dir, err)
	}
	w := &Workspace{dir: dir, root: root, keep: keep}
	for _, d := range []string{MountsDir, OutputDir, LogsDir, HomeDir, TmpDir} {
		if err := root.MkdirAll(d, 0o700); err != nil {
			root.Close()
			return nil, fmt.Errorf("create workspace %s: %w", d, err)
		}
	}
	return w, nil
}

// Dir returns the workspace's absolute host path.
func (w *Workspace) Dir() string { return w.dir }

// Kept reports whether Close leaves the directory in place.
func (w *Workspace) Kept() bool { return w.keep }

// Close releases the workspace and, unless it was named by the caller,
// deletes it with everything in it.
func (w *Workspace) Close() error {
	err := w.root.Close()
	if w.keep {
		return err
	}
	// The code may have left read-only directories behind (mounts/ is made
	// read-only on purpose); make them writable so RemoveAll can empty them.
	_ = filepath.WalkDir(w.dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	if rerr := os.RemoveAll(w.dir); rerr != nil {
		return fmt.Errorf("remove workspace: %w", rerr)
	}
	return err
}

// Error is a failure the client caused or can act on. Its message is written
// for the model that called the tool and never contains host paths.
type Error struct {
	Msg string
	Err error // underlying cause, for errors.Is; not shown
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Err }

func errorf(cause error, format string, args ...any) *Error {
	return &Error{Msg: fmt.Sprintf(format, args...), Err: cause}
}

// ErrSymlink is wrapped by errors for paths that pass through a symlink.
var ErrSymlink = errors.New("path is a symlink")

// Resolve checks a client-supplied path and returns it in clean, slash-free
// local form ("." for the root). It refuses absolute paths, paths that climb
// out with "..", and paths whose existing components include a symlink: the
// code running in the workspace can plant symlinks, and the server must never
// follow one on the client's behalf.
func (w *Workspace) Resolve(name string) (string, error) {
	clean, err := cleanLocal(name)
	if err != nil {
		return "", err
	}
	if err := w.noSymlinks(clean); err != nil {
		return "", err
	}
	return clean, nil
}

// cleanLocal is the lexical half of Resolve.
func cleanLocal(name string) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return ".", nil
	}
	if strings.ContainsRune(name, 0) {
		return "", errorf(nil, "path %q contains a NUL byte", name)
	}
	if filepath.IsAbs(name) || strings.HasPrefix(name, "/") || strings.HasPrefix(name, `\`) {
		return "", errorf(nil, "path %q is absolute: use a path relative to the workspace, such as %q", name, "output/result.csv")
	}
	clean := filepath.Clean(filepath.FromSlash(name))
	if !filepath.IsLocal(clean) && clean != "." {
		return "", errorf(nil, "path %q leaves the workspace: use a path inside it, such as %q", name, "output/result.csv")
	}
	return clean, nil
}

// noSymlinks walks the existing prefix of a local path and fails at the first
// symlink. Missing components end the walk: they cannot be links yet.
func (w *Workspace) noSymlinks(clean string) error {
	parts := strings.Split(clean, string(filepath.Separator))
	for i := range parts {
		p := filepath.Join(parts[:i+1]...)
		fi, err := w.root.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil
		}
		if err != nil {
			return errorf(err, "cannot check %q: %v", filepath.ToSlash(p), errText(err))
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return errorf(ErrSymlink, "path %q goes through a symlink (%q); PRIMS does not follow symlinks in the workspace", filepath.ToSlash(clean), filepath.ToSlash(p))
		}
	}
	return nil
}

// errText describes a filesystem error without the host path that
// *fs.PathError carries.
func errText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		err = le.Err
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "no such file or directory"
	case errors.Is(err, fs.ErrPermission):
		return "permission denied"
	}
	return err.Error()
}

// Root returns the workspace's os.Root, for callers that open files
// themselves after resolving their names with Resolve.
func (w *Workspace) Root() *os.Root { return w.root }

// inDir reports whether the resolved local path lies inside top (or is top).
func inDir(local, top string) bool {
	return local == top || strings.HasPrefix(local, top+string(filepath.Separator))
}
