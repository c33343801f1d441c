// Package fsat does what the server does to files a sandboxed program can
// change (walk, measure, chown, open up, remove) through directory
// descriptors it holds, one name at a time, never following a symlink and
// never opening anything but a directory while it walks: a symlink or a
// FIFO swapped in mid-walk fails the step (ELOOP, ENOTDIR) instead of
// leading the server out of the tree or blocking it. Depth does not
// matter: nothing here builds a path, so a tree deeper than PATH_MAX is
// walked like any other.
//
//	d, err := fsat.OpenDir(dir)
//	if err != nil { ... }
//	defer d.Close()
//	err = fsat.Walk(d, fsat.Options{}, func(parent int, name string, st *fsat.Stat) bool {
//		fmt.Println(name, st.Size)
//		return fsat.Enter // descend into directories
//	})
package fsat

import "errors"

// MaxDepth bounds how deep Walk goes: each level holds one descriptor.
// Deeper directories are not entered, and Walk returns ErrTooDeep.
const MaxDepth = 1024

// ErrTooDeep is returned by Walk when a tree nests deeper than MaxDepth.
var ErrTooDeep = errors.New("directory tree nests too deep")

// Options change how Walk treats what it cannot read.
type Options struct {
	// OpenUp gives a directory this process owns but cannot read (a
	// program running as the server's user can chmod 000 its own
	// directories) back its owner's rwx, through a descriptor of that very
	// directory, so it can be walked.
	OpenUp bool
}

// Action is what Walk does after an entry.
type Action int

const (
	Enter Action = iota // go on, and into the entry if it is a directory
	Skip                // go on, but not into this entry
	Stop                // end the walk
)
