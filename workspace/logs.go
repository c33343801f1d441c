package workspace

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// logBook remembers, for the session, which logs are not the whole stream
// they name: cut at the per-stream cap, short because the disk filled up,
// or deleted to keep logs/ within its budget. Tools say so instead of
// presenting such a log as complete.
type logBook struct {
	mu    sync.Mutex
	notes map[string]string // file name in logs/ -> why it is incomplete
}

// logCount is what logs/ holds as far as PruneLogs knows, or -1 before it
// has looked.
type logCount struct{ atomic.Int64 }

func (b *logBook) set(name, note string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.notes == nil {
		b.notes = map[string]string{}
	}
	b.notes[name] = note
}

func (b *logBook) get(name string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.notes[name]
}

// NoteLog records why the log at local (as CreateLog returned it) does not
// hold its whole stream, in words for the model: preview_file repeats it.
func (w *Workspace) NoteLog(local, note string) {
	if top, name, ok := strings.Cut(filepath.ToSlash(local), "/"); ok && top == LogsDir {
		w.logNotes.set(name, note)
	}
}

// logNote is what NoteLog recorded for a resolved local path, if anything.
func (w *Workspace) logNote(local string) string {
	top, name, ok := strings.Cut(filepath.ToSlash(local), "/")
	if !ok || top != LogsDir {
		return ""
	}
	return w.logNotes.get(name)
}

// PruneLogs deletes the logs of the oldest runs, a whole run at a time
// (files named NNNN-...), until logs/ holds at most budget bytes, and
// returns how many runs it pruned. Logs have their own budget, apart from
// the workspace quota: they are the server's files, and a long session
// must neither fill the disk with them nor have them crowd out the code's.
// A pruned log, asked for later, is reported as pruned (see Open).
//
// It walks logs/ only when the bytes it last counted plus those reported
// since (AddLogBytes) may pass budget, and once it must prune it prunes
// down to 7/8 of budget, so a long session at its budget walks all its
// logs once every budget/8 bytes of output, not on every run.
func (w *Workspace) PruneLogs(budget int64) int {
	if known := w.logBytes.Load(); known >= 0 && known <= budget {
		return 0
	}
	type run struct {
		prefix string
		bytes  int64
		files  []string
	}
	byRun := map[string]*run{}
	var total int64
	_ = w.walk(LogsDir, func(p string, fi fs.FileInfo) bool {
		if !fi.Mode().IsRegular() || strings.Contains(p, string(filepath.Separator)) {
			return true
		}
		prefix, _, ok := strings.Cut(p, "-")
		if !ok {
			return true
		}
		r := byRun[prefix]
		if r == nil {
			r = &run{prefix: prefix}
			byRun[prefix] = r
		}
		n := allocatedOf(fi)
		r.bytes += n
		r.files = append(r.files, p)
		total += n
		return true
	})
	if total <= budget {
		w.logBytes.Store(total)
		return 0
	}
	runs := make([]*run, 0, len(byRun))
	for _, r := range byRun {
		runs = append(runs, r)
	}
	// Run numbers are zero-padded, and wider once past 9999: order by
	// length, then by text.
	slices.SortFunc(runs, func(a, b *run) int {
		if c := len(a.prefix) - len(b.prefix); c != 0 {
			return c
		}
		return strings.Compare(a.prefix, b.prefix)
	})
	pruned := 0
	low := budget - budget/8
	for _, r := range runs {
		if total <= low {
			break
		}
		for _, f := range r.files {
			if err := w.logs.Remove(f); err == nil || errors.Is(err, fs.ErrNotExist) {
				w.logNotes.set(f, fmt.Sprintf("it was deleted to keep logs/ within its budget of %s (the oldest runs' logs go first)", sizeText(budget)))
			}
		}
		total -= r.bytes
		pruned++
	}
	w.logBytes.Store(total)
	return pruned
}

// AddLogBytes reports n more bytes written to logs/ since the last
// PruneLogs, so the next one knows whether it must look.
func (w *Workspace) AddLogBytes(n int64) {
	// A file takes whole blocks: round up generously.
	w.logBytes.Add(n + 4<<10)
}

// sizeText is n bytes in the largest binary unit that fits.
func sizeText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
