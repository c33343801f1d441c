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
	"time"

	"github.com/prims-mcp/prims/internal/fsat"
)

// The fixed layout of a workspace, as tools and the program name it: paths
// relative to the program's working directory.
const (
	MountsDir = "mounts" // inputs placed by mount_file; read-only to the code
	OutputDir = "output" // what the code writes for the user
	LogsDir   = "logs"   // the complete stdout and stderr of every run
	HomeDir   = ".home"  // HOME for the code, so caches land inside the workspace
	TmpDir    = ".tmp"   // TMPDIR for the code when the sandbox has no private /tmp
)

// statePrefix names the server-owned directory of every workspace in the
// system's temporary directory (see Sweep).
const statePrefix = "prims-ws-"

// Workspace is one session's directory. Its methods are safe for concurrent use.
//
// It is two trees. The program's directory (Dir) is the code's working
// directory and writable by it. logs/ and mounts/ live apart from it, in a
// directory of the server's (the state directory), because the program can
// rename or replace anything in a directory it can write, and Landlock
// cannot forbid renaming a child of a writable directory: kept inside,
// they could be swapped for the program's own tree while the server
// writes logs or mounts files there. In the program's directory, mounts
// and logs are symlinks the server made to its own directories, which the
// sandbox shows read-only at the same paths (ReadOnly); the program may
// replace those links, but that only changes what it sees itself: the
// server never follows them, and tools resolve "mounts/..." and
// "logs/..." to the server's directories directly.
type Workspace struct {
	dir    string   // the program's directory
	state  string   // the server's: logs/, mounts/, the owner record, and (temporary workspaces) dir
	root   *os.Root // dir
	logs   *os.Root
	mounts *os.Root
	owner  *os.File // the owner record, locked while the workspace is open
	keep   bool
	named  bool // state is the kept workspace's own (namedState), kept too

	logNotes logBook
	logBytes logCount
}

// New opens the workspace at dir, creating it (mode 0700) and its layout if
// needed; a workspace named this way is never deleted by Close, and its
// logs and mounted files are kept beside it (namedState). With dir "" it
// creates a fresh private temporary directory that Close removes.
func New(dir string) (w *Workspace, err error) {
	keep := dir != ""
	sweepLeftovers()
	state, named := "", false
	if keep {
		state, named = namedState(dir)
	}
	if !named {
		if state, err = os.MkdirTemp("", statePrefix); err != nil {
			return nil, fmt.Errorf("create workspace: %w", err)
		}
		defer func() {
			if err != nil {
				removeTree(state)
			}
		}()
	}
	if real, err := filepath.EvalSymlinks(state); err == nil {
		state = real
	}
	// A root server's sandbox user (landlock tier) must pass through to
	// reach its directory and the links' targets, but not list or write
	// here; any other server runs the code as itself, and Landlock or the
	// sandbox's read-only binds keep it out of here.
	stateMode := os.FileMode(0o700)
	if os.Geteuid() == 0 {
		stateMode = 0o711
	}
	if err := os.Chmod(state, stateMode); err != nil {
		return nil, fmt.Errorf("protect workspace: %w", err)
	}
	if dir == "" {
		dir = filepath.Join(state, "work")
		if err := os.Mkdir(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create workspace: %w", err)
		}
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create workspace %s: %w", dir, err)
	}
	if dir, err = filepath.Abs(dir); err != nil {
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
	w = &Workspace{dir: dir, state: state, keep: keep, named: named}
	w.logBytes.Store(-1)
	defer func() {
		if err != nil {
			w.closeRoots()
		}
	}()
	if !named {
		if w.owner, err = claim(state); err != nil {
			return nil, err
		}
	}
	for _, d := range []struct {
		name string
		root **os.Root
	}{{MountsDir, &w.mounts}, {LogsDir, &w.logs}} {
		p := filepath.Join(state, d.name)
		// Readable by all, whatever the umask: the sandbox user of a
		// root server reads its inputs and its own source here.
		if err := os.Mkdir(p, 0o755); err != nil && !(named && errors.Is(err, fs.ErrExist)) {
			return nil, fmt.Errorf("create workspace %s: %w", d.name, err)
		}
		if err := os.Chmod(p, 0o755); err != nil {
			return nil, fmt.Errorf("create workspace %s: %w", d.name, err)
		}
		if *d.root, err = os.OpenRoot(p); err != nil {
			return nil, fmt.Errorf("open workspace %s: %w", d.name, err)
		}
	}
	if w.root, err = os.OpenRoot(dir); err != nil {
		return nil, fmt.Errorf("open workspace %s: %w", dir, err)
	}
	for _, d := range []string{OutputDir, HomeDir, TmpDir} {
		if err := w.root.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create workspace %s: %w", d, err)
		}
	}
	for _, d := range []string{MountsDir, LogsDir} {
		if err := w.link(d); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// namedState is the server's directory for a kept workspace at dir: a
// hidden sibling, ".NAME.prims", so that logs and mounted files are kept
// with it as they always were, on the same disk. It returns false where
// there can be none (dir is a filesystem root, or the sibling is not a
// directory of this user's), and the workspace gets a temporary one.
func namedState(dir string) (string, bool) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", false
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	parent, base := filepath.Dir(abs), filepath.Base(abs)
	if parent == abs || base == "." || base == string(filepath.Separator) {
		return "", false
	}
	state := filepath.Join(parent, "."+base+".prims")
	if err := os.Mkdir(state, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", false
	}
	fi, err := os.Lstat(state)
	if err != nil || !fi.IsDir() || !ownedByMe(fi) {
		return "", false
	}
	return state, true
}

// link makes name in the program's directory a symlink to the server's
// directory of that name. Whatever a kept workspace had there (a real
// directory, from before logs and mounts moved out) is moved aside, not
// deleted.
func (w *Workspace) link(name string) error {
	target := filepath.Join(w.state, name)
	if fi, err := w.root.Lstat(name); err == nil {
		if fi.Mode()&fs.ModeSymlink != 0 {
			_ = w.root.Remove(name)
		} else if err := w.root.Rename(name, fmt.Sprintf("%s.before-%d", name, time.Now().Unix())); err != nil {
			return fmt.Errorf("move aside the old %s: %w", name, err)
		}
	}
	if err := w.root.Symlink(target, name); err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	return nil
}

// Dir returns the absolute host path of the program's directory.
func (w *Workspace) Dir() string { return w.dir }

// ReadOnly lists the server's directories the program reads through the
// mounts and logs links: the sandbox shows them, read-only, at these same
// paths.
func (w *Workspace) ReadOnly() []string {
	return []string{filepath.Join(w.state, MountsDir), filepath.Join(w.state, LogsDir)}
}

// Kept reports whether Close leaves the directory in place.
func (w *Workspace) Kept() bool { return w.keep }

func (w *Workspace) closeRoots() {
	for _, r := range []*os.Root{w.root, w.logs, w.mounts} {
		if r != nil {
			r.Close()
		}
	}
	if w.owner != nil {
		w.owner.Close()
	}
}

// Close releases the workspace and deletes the server's directory with the
// logs and mounted files, and, unless it was named by the caller, the
// program's directory too.
func (w *Workspace) Close() error {
	if w.keep && !w.named {
		// The links would point nowhere once the server's directory is
		// gone. Root.Remove unlinks a link itself, never its target.
		for _, d := range []string{MountsDir, LogsDir} {
			if fi, err := w.root.Lstat(d); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
				_ = w.root.Remove(d)
			}
		}
	}
	w.closeRoots()
	if w.named {
		return nil // logs and mounts stay with the kept workspace
	}
	if err := removeTree(w.state); err != nil {
		return fmt.Errorf("remove workspace: %w", err)
	}
	return nil
}

// removeTree deletes dir, a directory of the server's, and everything in
// it through descriptors: the program may have left symlinks, FIFOs and
// directories it made unreadable behind, and none of them may lead the
// removal anywhere else.
func removeTree(dir string) error {
	parent, err := fsat.OpenDir(filepath.Dir(dir))
	if err != nil {
		return err
	}
	defer parent.Close()
	return fsat.RemoveAll(int(parent.Fd()), filepath.Base(dir))
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
	root, rel := w.locate(clean)
	if rel == "." {
		return nil
	}
	top := ""
	if root != w.root {
		top, _, _ = strings.Cut(clean, string(filepath.Separator))
	}
	parts := strings.Split(rel, string(filepath.Separator))
	for i := range parts {
		p := filepath.Join(parts[:i+1]...)
		fi, err := root.Lstat(p)
		p = filepath.Join(top, p)
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

// Root returns the os.Root of the program's directory, for callers that
// open files there themselves after resolving their names with Resolve. It
// does not reach logs/ or mounts/ (see Lstat and Open).
func (w *Workspace) Root() *os.Root { return w.root }

// locate maps a resolved local path to the tree that holds it and the path
// inside that tree: logs/ and mounts/ are the server's own directories,
// everything else is the program's.
func (w *Workspace) locate(local string) (*os.Root, string) {
	top, rest, _ := strings.Cut(local, string(filepath.Separator))
	if rest == "" {
		rest = "."
	}
	switch top {
	case MountsDir:
		return w.mounts, rest
	case LogsDir:
		return w.logs, rest
	}
	return w.root, local
}

// Lstat describes the entry at a resolved local path without following it.
func (w *Workspace) Lstat(local string) (fs.FileInfo, error) {
	root, rel := w.locate(local)
	return root.Lstat(rel)
}

// inDir reports whether the resolved local path lies inside top (or is top).
func inDir(local, top string) bool {
	return local == top || strings.HasPrefix(local, top+string(filepath.Separator))
}
