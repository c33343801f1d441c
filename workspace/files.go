package workspace

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Entry describes one file or directory in the workspace.
type Entry struct {
	Name     string    `json:"name"`
	Path     string    `json:"path"` // relative to the workspace root, slash-separated
	Type     string    `json:"type"` // "file", "dir", "symlink" or "other"
	Size     int64     `json:"size"`
	Modified time.Time `json:"modified"`
	MIME     string    `json:"mime,omitempty"`
}

// MaxListEntries bounds one List call, so a directory of a million files
// cannot flood the client.
const MaxListEntries = 1000

func entryOf(local string, fi fs.FileInfo) Entry {
	e := Entry{
		Name:     filepath.Base(local),
		Path:     filepath.ToSlash(local),
		Size:     fi.Size(),
		Modified: fi.ModTime().UTC().Truncate(time.Second),
	}
	switch m := fi.Mode(); {
	case m.IsRegular():
		e.Type = "file"
		e.MIME = MIMEType(fi.Name(), nil)
	case m.IsDir():
		e.Type = "dir"
		e.Size = 0
	case m&fs.ModeSymlink != 0:
		e.Type = "symlink"
	default:
		e.Type = "other"
	}
	return e
}

// Stat describes the entry at a client-supplied path without following it.
func (w *Workspace) Stat(name string) (Entry, error) {
	local, err := w.Resolve(name)
	if err != nil {
		return Entry{}, err
	}
	fi, err := w.Lstat(local)
	if err != nil {
		return Entry{}, errorf(err, "%q: %s", filepath.ToSlash(local), errText(err))
	}
	return entryOf(local, fi), nil
}

// List returns the entries of a directory, sorted by name, and whether the
// listing was cut at MaxListEntries. Symlinks are listed, never followed;
// anything but a directory (a FIFO the code made, say) is refused before it
// is opened, and opened so that it could not block if it raced in.
func (w *Workspace) List(name string) (entries []Entry, truncated bool, err error) {
	local, err := w.Resolve(name)
	if err != nil {
		return nil, false, err
	}
	shown := filepath.ToSlash(local)
	root, rel := w.locate(local)
	fi, err := root.Lstat(rel)
	if err != nil {
		return nil, false, errorf(err, "cannot list %q: %s", shown, errText(err))
	}
	if !fi.IsDir() {
		if fi.Mode().IsRegular() {
			return nil, false, errorf(nil, "%q is a file, not a directory: use preview_file to read it", shown)
		}
		return nil, false, errorf(nil, "%q is not a directory", shown)
	}
	f, err := root.OpenFile(rel, os.O_RDONLY|oDirectory|oNoFollow|oNonBlock, 0)
	if err != nil {
		return nil, false, errorf(err, "cannot list %q: %s", shown, errText(err))
	}
	defer f.Close()
	des, err := f.ReadDir(MaxListEntries + 1)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, false, errorf(err, "cannot list %q: %s", shown, errText(err))
	}
	if local == "." {
		// mounts and logs here are the program's links (or whatever it
		// put in their place); list the server's directories instead.
		des = slices.DeleteFunc(des, func(d fs.DirEntry) bool { return d.Name() == MountsDir || d.Name() == LogsDir })
		for _, d := range []string{LogsDir, MountsDir} {
			if fi, err := w.Lstat(d); err == nil {
				entries = append(entries, entryOf(d, fi))
			}
		}
	}
	if len(des)+len(entries) > MaxListEntries {
		des, truncated = des[:MaxListEntries-len(entries)], true
	}
	for _, de := range des {
		// Lstat relative to the listed directory, not de.Info (which
		// stats a path).
		info, err := root.Lstat(filepath.Join(rel, de.Name()))
		if err != nil {
			continue // removed while listing
		}
		entries = append(entries, entryOf(filepath.Join(local, de.Name()), info))
	}
	slices.SortFunc(entries, func(a, b Entry) int { return strings.Compare(a.Name, b.Name) })
	return entries, truncated, nil
}

// Open opens a regular file for reading by client-supplied path. It refuses
// directories, devices and symlinks, and checks after opening that the file
// is the one it looked at, so a swap by the running code cannot redirect it.
func (w *Workspace) Open(name string) (*os.File, Entry, error) {
	local, err := w.Resolve(name)
	if err != nil {
		return nil, Entry{}, err
	}
	return w.openLocal(local)
}

func (w *Workspace) openLocal(local string) (*os.File, Entry, error) {
	shown := filepath.ToSlash(local)
	root, rel := w.locate(local)
	before, err := root.Lstat(rel)
	if err != nil {
		if note := w.logNote(local); note != "" && errors.Is(err, fs.ErrNotExist) {
			return nil, Entry{}, errorf(err, "%q is gone: %s", shown, note)
		}
		return nil, Entry{}, errorf(err, "%q: %s", shown, errText(err))
	}
	if before.Mode()&fs.ModeSymlink != 0 {
		return nil, Entry{}, errorf(ErrSymlink, "%q is a symlink; PRIMS does not follow symlinks in the workspace", shown)
	}
	if before.IsDir() {
		return nil, Entry{}, errorf(nil, "%q is a directory: use list_dir to see what is in it", shown)
	}
	if !before.Mode().IsRegular() {
		return nil, Entry{}, errorf(nil, "%q is not a regular file", shown)
	}
	f, err := root.OpenFile(rel, os.O_RDONLY|oNoFollow|oNonBlock, 0)
	if err != nil {
		return nil, Entry{}, errorf(err, "cannot open %q: %s", shown, errText(err))
	}
	after, err := f.Stat()
	if err != nil || !os.SameFile(before, after) || !after.Mode().IsRegular() {
		f.Close()
		return nil, Entry{}, errorf(nil, "%q changed while it was being opened; try again", shown)
	}
	return f, entryOf(local, after), nil
}

// Preview is one page of a file.
type Preview struct {
	Entry
	Offset     int64  `json:"offset"`      // where this page starts
	NextOffset int64  `json:"next_offset"` // where the next page starts; equals size at the end
	Text       string `json:"text,omitempty"`
	Binary     bool   `json:"binary"`
	EOF        bool   `json:"eof"`
	// Note says why a log does not hold its whole stream (cut at the
	// cap, or short because the disk filled up).
	Note string `json:"note,omitempty"`
}

// PreviewPage is the default and the largest page preview_file returns.
const PreviewPage = 8 << 10

// Preview reads up to max bytes of a text file starting at offset, cut on a
// UTF-8 boundary. A binary file is described instead of dumped: its type,
// size and the first bytes in hex.
func (w *Workspace) Preview(name string, offset, max int64) (p *Preview, err error) {
	if max <= 0 || max > PreviewPage {
		max = PreviewPage
	}
	if offset < 0 {
		return nil, errorf(nil, "offset %d is negative", offset)
	}
	f, e, err := w.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	note := w.logNote(e.Path)
	defer func() {
		if p != nil {
			p.Note = note
		}
	}()
	if offset > e.Size {
		return nil, errorf(nil, "offset %d is past the end of %q (%d bytes)", offset, e.Path, e.Size)
	}
	// Sniff the start of the file, whatever page was asked for, so that
	// every page of a binary file is described the same way.
	head := make([]byte, 512)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	e.MIME = MIMEType(e.Name, head)
	p = &Preview{Entry: e, Offset: offset}
	if IsBinary(head) {
		p.Binary = true
		p.NextOffset = e.Size
		p.EOF = true
		return p, nil
	}
	buf := make([]byte, max+utf8.UTFMax)
	n, err = f.ReadAt(buf, offset)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, errorf(err, "cannot read %q: %s", e.Path, errText(err))
	}
	buf = buf[:n]
	// Step forward over continuation bytes at the start (the offset may land
	// mid-rune) and cut the end on a rune boundary.
	for len(buf) > 0 && offset > 0 && !utf8.RuneStart(buf[0]) {
		buf = buf[1:]
		p.Offset++
	}
	if int64(len(buf)) > max {
		cut := int(max)
		for cut > 0 && !utf8.RuneStart(buf[cut]) {
			cut--
		}
		if cut == 0 {
			cut = int(max)
		}
		buf = buf[:cut]
	}
	p.Text = strings.ToValidUTF8(string(buf), "\uFFFD")
	p.NextOffset = p.Offset + int64(len(buf))
	p.EOF = p.NextOffset >= e.Size
	return p, nil
}

// IsBinary reports whether the first bytes of a file look like binary data:
// a NUL byte, or a large share of invalid UTF-8.
func IsBinary(head []byte) bool {
	if bytes.IndexByte(head, 0) >= 0 {
		return true
	}
	bad := 0
	for i := 0; i < len(head); {
		r, size := utf8.DecodeRune(head[i:])
		if r == utf8.RuneError && size == 1 && len(head)-i >= utf8.UTFMax {
			bad++
		}
		i += size
	}
	return bad*10 > len(head)
}

// MIMEType names the media type of a file from its extension, or from its
// first bytes when the extension says nothing.
func MIMEType(name string, head []byte) string {
	if t := mime.TypeByExtension(path.Ext(name)); t != "" {
		return t
	}
	switch strings.ToLower(path.Ext(name)) {
	case ".py", ".txt", ".log", ".md", ".csv", ".tsv", ".ini", ".cfg", ".toml", ".yaml", ".yml":
		return "text/plain; charset=utf-8"
	case ".webp":
		return "image/webp"
	}
	if head != nil {
		return http.DetectContentType(head)
	}
	return "application/octet-stream"
}

// CreateLog creates (or truncates) a file under logs/ for the server to
// write. logs/ is the server's own directory, out of the program's reach
// (see Workspace), so nothing there can be a link or a FIFO the program
// planted.
func (w *Workspace) CreateLog(name string) (*os.File, string, error) {
	base := filepath.Base(name)
	local := filepath.Join(LogsDir, base)
	// Readable by all: the code reads its own source for tracebacks, also
	// in a sandbox that started before this file existed.
	f, err := w.logs.OpenFile(base, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|oNoFollow|oNonBlock, 0o644)
	if err != nil {
		return nil, "", fmt.Errorf("create log %s: %w", local, err)
	}
	if err := f.Chmod(0o644); err != nil { // whatever the umask
		f.Close()
		return nil, "", fmt.Errorf("create log %s: %w", local, err)
	}
	w.logNotes.set(base, "") // a new log, complete until told otherwise
	return f, filepath.ToSlash(local), nil
}

// Snapshot records the files under output/ so a later Changes call can tell
// which of them a run created or modified.
type Snapshot map[string]fileStamp

type fileStamp struct {
	size  int64
	mtime time.Time
}

// MaxArtifacts bounds how many changed files Changes reports.
const MaxArtifacts = 200

// Snapshot walks output/ without following symlinks.
func (w *Workspace) Snapshot() Snapshot {
	s := Snapshot{}
	w.walkFiles(OutputDir, func(local string, fi fs.FileInfo) bool {
		s[local] = fileStamp{fi.Size(), fi.ModTime()}
		return len(s) < 100_000
	})
	return s
}

// Changes returns the regular files under output/ that are new or changed
// since the snapshot, newest first, at most MaxArtifacts of them.
func (w *Workspace) Changes(before Snapshot) []Entry {
	var out []Entry
	w.walkFiles(OutputDir, func(local string, fi fs.FileInfo) bool {
		if old, ok := before[local]; ok && old.size == fi.Size() && old.mtime.Equal(fi.ModTime()) {
			return true
		}
		out = append(out, entryOf(local, fi))
		return len(out) < 100_000
	})
	slices.SortStableFunc(out, func(a, b Entry) int {
		if c := b.Modified.Compare(a.Modified); c != 0 {
			return c
		}
		return strings.Compare(a.Path, b.Path)
	})
	if len(out) > MaxArtifacts {
		out = out[:MaxArtifacts]
	}
	return out
}

// Files returns up to max regular files under the directory local, in no
// particular order. It never follows a symlink.
func (w *Workspace) Files(local string, max int) []Entry {
	var out []Entry
	if max <= 0 {
		return nil
	}
	w.walkFiles(local, func(p string, fi fs.FileInfo) bool {
		out = append(out, entryOf(p, fi))
		return len(out) < max
	})
	return out
}

// walkFiles calls fn for the regular files under local through directory
// descriptors (walk), never following a symlink or opening anything but a
// directory.
func (w *Workspace) walkFiles(local string, fn func(local string, fi fs.FileInfo) bool) {
	_ = w.walk(local, func(p string, fi fs.FileInfo) bool {
		if !fi.Mode().IsRegular() {
			return true
		}
		return fn(filepath.Join(local, p), fi)
	})
}
