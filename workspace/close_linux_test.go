package workspace

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestCloseRemovesWhatTheCodeLeft: Close removes a workspace holding what a
// program may leave behind (a symlink to a host directory, a FIFO, a
// directory it made unreadable, a tree deeper than PATH_MAX, its own logs
// and mounts links replaced by a real directory) without touching anything
// outside it.
func TestCloseRemovesWhatTheCodeLeft(t *testing.T) {
	host := t.TempDir()
	os.Chmod(host, 0o700)
	secret := filepath.Join(host, "keep.txt")
	os.WriteFile(secret, []byte("host"), 0o600)
	w, err := New("")
	if err != nil {
		t.Fatal(err)
	}
	dir := w.Dir()
	os.Symlink(host, filepath.Join(dir, "output", "hostlink"))
	syscall.Mkfifo(filepath.Join(dir, "output", "fifo"), 0o600)
	locked := filepath.Join(dir, "locked")
	os.MkdirAll(filepath.Join(locked, "in"), 0o700)
	os.WriteFile(filepath.Join(locked, "in", "f"), []byte("x"), 0o600)
	os.Chmod(locked, 0)
	deep := filepath.Join(dir, "deep")
	os.Mkdir(deep, 0o700)
	d, err := os.Open(deep)
	if err != nil {
		t.Fatal(err)
	}
	fd := int(d.Fd())
	name := strings.Repeat("d", 200)
	for range 40 { // 8,000 bytes of path
		if err := syscall.Mkdirat(fd, name, 0o700); err != nil {
			t.Fatal(err)
		}
		next, err := syscall.Openat(fd, name, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if fd != int(d.Fd()) {
			syscall.Close(fd)
		}
		fd = next
	}
	syscall.Close(fd)
	d.Close()
	os.Remove(filepath.Join(dir, MountsDir))
	os.Mkdir(filepath.Join(dir, MountsDir), 0o700)
	os.Symlink(host, filepath.Join(dir, LogsDir+".x"))
	state := w.state
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Lstat(state); err == nil {
		t.Errorf("the workspace is still there")
	}
	if b, err := os.ReadFile(secret); err != nil || string(b) != "host" {
		t.Errorf("a host file was touched: %q %v", b, err)
	}
	if fi, err := os.Stat(host); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("the host directory changed: %v %v", fi.Mode(), err)
	}
}
