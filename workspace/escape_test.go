package workspace

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// TestSymlinkEscapes plants symlinks where the code could (output/, the
// workspace root, a parent directory) and asserts that no tool-facing call
// reads, lists or uploads what they point to. The control reads the secret
// through the symlink with plain os calls, so the planted link is known to
// work.
func TestSymlinkEscapes(t *testing.T) {
	secretDir := t.TempDir()
	secret := filepath.Join(secretDir, "secret.txt")
	if err := os.WriteFile(secret, []byte("TOP-SECRET"), 0o600); err != nil {
		t.Fatal(err)
	}
	ws, err := New("")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	out := filepath.Join(ws.Dir(), OutputDir)
	links := map[string]string{
		"output/link.txt":   secret,            // absolute file link
		"output/rel.txt":    "../../" + secret, // relative link climbing out
		"output/dirlink":    secretDir,         // directory link
		"output/loop":       "loop",            // a loop
		"output/nested/x":   secret,
		"rootlink":          secretDir,
		"output/to-mounts":  "../mounts", // inside, but a link all the same
		"output/dotdot-dir": "..",
	}
	for name, target := range links {
		p := filepath.Join(ws.Dir(), name)
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	// Control: the links work for anyone who follows them.
	if b, err := os.ReadFile(filepath.Join(out, "link.txt")); err != nil || string(b) != "TOP-SECRET" {
		t.Fatalf("control: planted link does not reach the secret: %q %v", b, err)
	}

	var uploaded atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if strings.Contains(string(b), "TOP-SECRET") {
			uploaded.Add(1)
		}
	}))
	defer srv.Close()

	paths := []string{
		"output/link.txt", "output/rel.txt", "output/dirlink/secret.txt", "output/dirlink",
		"output/loop", "output/nested/x", "rootlink/secret.txt", "rootlink",
		"output/to-mounts", "output/dotdot-dir/output/link.txt",
		"../" + filepath.Base(secretDir) + "/secret.txt", secret, "output/../../secret.txt",
	}
	for _, p := range paths {
		t.Run(p, func(t *testing.T) {
			if pv, err := ws.Preview(p, 0, 0); err == nil && strings.Contains(pv.Text, "TOP-SECRET") {
				t.Errorf("Preview(%q) read the secret", p)
			} else if err == nil && pv.Type != "file" {
				t.Errorf("Preview(%q) previewed a %s", p, pv.Type)
			}
			if entries, _, err := ws.List(p); err == nil {
				for _, e := range entries {
					if e.Name == "secret.txt" {
						t.Errorf("List(%q) listed the secret's directory", p)
					}
				}
			}
			if f, _, err := ws.Open(p); err == nil {
				b, _ := io.ReadAll(f)
				f.Close()
				if strings.Contains(string(b), "TOP-SECRET") {
					t.Errorf("Open(%q) read the secret", p)
				}
			}
			if _, err := ws.Upload(context.Background(), p, srv.URL+"/put", Limits{AllowPrivate: true}); err == nil {
				t.Errorf("Upload(%q) succeeded", p)
			}
			if _, err := ws.Stat(p); err == nil {
				// Stat may describe the link itself, never its target.
				if e, _ := ws.Stat(p); e.Type == "file" && e.Size == int64(len("TOP-SECRET")) && strings.Contains(p, "secret") {
					t.Errorf("Stat(%q) described the target", p)
				}
			}
		})
	}
	if n := uploaded.Load(); n > 0 {
		t.Errorf("the secret was uploaded %d times", n)
	}
	// Listing output/ shows the links as links.
	entries, _, err := ws.List("output")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name == "link.txt" && e.Type != "symlink" {
			t.Errorf("output/link.txt listed as %s, want symlink", e.Type)
		}
	}
	// Changes (what run_code reports as artifacts) never includes links.
	for _, e := range ws.Changes(Snapshot{}) {
		if e.Type != "file" {
			t.Errorf("Changes reported %s %q", e.Type, e.Path)
		}
	}
}

// TestSymlinkSwapDuringOpen replaces a file by a symlink between the check
// and the open, as running code could, and asserts Open never returns the
// target.
func TestSymlinkSwapDuringOpen(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret.txt")
	os.WriteFile(secret, []byte("TOP-SECRET"), 0o600)
	ws, err := New("")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	p := filepath.Join(ws.Dir(), "output", "race.txt")
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			os.Remove(p)
			os.WriteFile(p, []byte("plain"), 0o600)
			os.Remove(p)
			os.Symlink(secret, p)
		}
	}()
	for range 2000 {
		f, _, err := ws.Open("output/race.txt")
		if err != nil {
			if !errors.Is(err, ErrSymlink) {
				continue
			}
			continue
		}
		b, _ := io.ReadAll(f)
		f.Close()
		if strings.Contains(string(b), "TOP-SECRET") {
			t.Fatal("Open followed a symlink swapped in during the open")
		}
	}
	close(stop)
	<-done
}
