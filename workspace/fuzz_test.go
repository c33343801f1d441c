package workspace

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzResolve checks that no input resolves to a path outside the
// workspace, through ".." or through a symlink the code planted.
//
//	go test -fuzz FuzzResolve ./workspace
func FuzzResolve(f *testing.F) {
	for _, s := range []string{"", ".", "output/a.txt", "../x", "/etc/passwd", "output/../../x", `..\x`, "a/./b/../../..", "out\x00put", "link/x", "output/link", "mounts/", "~/.ssh/id_rsa", " ../x", "output//..//..", "C:\\Windows"} {
		f.Add(s)
	}
	ws, err := New("")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { ws.Close() })
	outside := f.TempDir()
	os.Symlink(outside, filepath.Join(ws.Dir(), "link"))
	os.Symlink(outside, filepath.Join(ws.Dir(), OutputDir, "link"))
	f.Fuzz(func(t *testing.T, name string) {
		local, err := ws.Resolve(name)
		if err != nil {
			return
		}
		if filepath.IsAbs(local) || !(local == "." || filepath.IsLocal(local)) {
			t.Fatalf("Resolve(%q) = %q, not local", name, local)
		}
		full := filepath.Join(ws.Dir(), local)
		if full != ws.Dir() && !strings.HasPrefix(full, ws.Dir()+string(filepath.Separator)) {
			t.Fatalf("Resolve(%q) = %q, outside the workspace", name, local)
		}
		// No existing prefix of the result is a symlink, in the tree
		// that holds it (logs/ and mounts/ are the server's own).
		parts := strings.Split(local, string(filepath.Separator))
		for i := range parts {
			p := filepath.Join(parts[:i+1]...)
			fi, err := ws.Lstat(p)
			if err != nil {
				break
			}
			if fi.Mode()&os.ModeSymlink != 0 {
				t.Fatalf("Resolve(%q) = %q goes through the symlink %s", name, local, p)
			}
		}
	})
}
