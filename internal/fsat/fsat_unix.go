//go:build unix

package fsat

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Stat is what Walk learns of an entry without following it.
type Stat = unix.Stat_t

// dirFlags open a directory and only a directory: O_NOFOLLOW fails on a
// symlink, O_DIRECTORY on anything else, and O_NONBLOCK keeps a FIFO that
// raced in from blocking the open.
const dirFlags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC

// OpenDir opens the directory at path, which must not be a symlink itself.
// The path is the server's own (a workspace it created), not one the
// program chose.
func OpenDir(path string) (*os.File, error) {
	fd, err := unix.Open(path, dirFlags, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// OpenDirAt opens name under the directory parent the same way.
func OpenDirAt(parent int, name string, opts Options) (*os.File, error) {
	fd, err := openDirAt(parent, name, opts)
	if err != nil {
		return nil, &os.PathError{Op: "openat", Path: name, Err: err}
	}
	return os.NewFile(uintptr(fd), name), nil
}

func openDirAt(parent int, name string, opts Options) (int, error) {
	for {
		fd, err := unix.Openat(parent, name, dirFlags, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EACCES) && opts.OpenUp {
			return openUp(parent, name)
		}
		return fd, err
	}
}

// Walk calls fn for every entry under dir, depth first, with the
// descriptor of the entry's directory, that directory's path relative to
// dir ("" for dir itself; for messages, never opened), the entry's name and
// its lstat. fn says whether to enter a directory (Enter), pass it over
// (Skip) or end the walk (Stop). Entries that vanish or change type while
// the walk runs are skipped; the walk goes on.
func Walk(dir *os.File, opts Options, fn func(parent int, path, name string, st *Stat) Action) error {
	err := walk(int(dir.Fd()), "", opts, fn, 0)
	if err == errStop {
		err = nil
	}
	return err
}

var errStop = errors.New("stop")

func walk(fd int, path string, opts Options, fn func(int, string, string, *Stat) Action, depth int) error {
	// A duplicate, so that reading the entries (which moves the offset)
	// and closing leave the caller's descriptor as it was.
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(dup), "")
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return err
	}
	var deep error
	for {
		// DirEntry.Name and Type come from getdents; Info would lstat a
		// path, so it is never called.
		ents, rerr := f.ReadDir(512)
		for _, e := range ents {
			name := e.Name()
			var st Stat
			if unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
				continue
			}
			switch fn(fd, path, name, &st) {
			case Stop:
				f.Close()
				return errStop
			case Skip:
				continue
			}
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				continue
			}
			if depth+1 >= MaxDepth {
				deep = ErrTooDeep
				continue
			}
			sub, err := openDirAt(fd, name, opts)
			if err != nil {
				continue // replaced by a symlink or a FIFO, removed, or unreadable
			}
			err = walk(sub, filepath.Join(path, name), opts, fn, depth+1)
			unix.Close(sub)
			if err == errStop {
				f.Close()
				return err
			}
			if err != nil && deep == nil {
				deep = err
			}
		}
		if rerr != nil || len(ents) == 0 {
			break
		}
	}
	f.Close()
	return deep
}

// RemoveAll removes name under parent and everything under it, never
// following a symlink: a link is removed, not its target.
func RemoveAll(parent int, name string) error {
	err := unix.Unlinkat(parent, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return err
	}
	fd, err := openDirAt(parent, name, Options{OpenUp: true})
	if err != nil {
		return err
	}
	d := os.NewFile(uintptr(fd), name)
	for {
		names, rerr := d.Readdirnames(512)
		for _, n := range names {
			_ = RemoveAll(fd, n)
		}
		if rerr != nil || len(names) == 0 {
			break
		}
		// Entries were removed: read again from the start.
		_, _ = d.Seek(0, io.SeekStart)
	}
	d.Close()
	err = unix.Unlinkat(parent, name, unix.AT_REMOVEDIR)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

// Info describes an entry Walk found as an fs.FileInfo.
func Info(name string, st *Stat) fs.FileInfo { return statInfo{name, st} }

type statInfo struct {
	name string
	st   *Stat
}

func (i statInfo) Name() string       { return i.name }
func (i statInfo) Size() int64        { return i.st.Size }
func (i statInfo) ModTime() time.Time { return time.Unix(i.st.Mtim.Unix()) }
func (i statInfo) IsDir() bool        { return i.st.Mode&unix.S_IFMT == unix.S_IFDIR }
func (i statInfo) Sys() any           { return i.st }
func (i statInfo) Mode() fs.FileMode {
	m := fs.FileMode(i.st.Mode & 0o777)
	switch i.st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		m |= fs.ModeDir
	case unix.S_IFLNK:
		m |= fs.ModeSymlink
	case unix.S_IFIFO:
		m |= fs.ModeNamedPipe
	case unix.S_IFSOCK:
		m |= fs.ModeSocket
	case unix.S_IFCHR:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		m |= fs.ModeDevice
	}
	return m
}

// Allocated is the disk space an entry takes.
func Allocated(st *Stat) int64 { return int64(st.Blocks) * 512 }

// IsDir reports whether an entry is a directory.
func IsDir(st *Stat) bool { return st.Mode&unix.S_IFMT == unix.S_IFDIR }
