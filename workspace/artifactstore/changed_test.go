package artifactstore

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gocloud.dev/blob"

	"github.com/prims-mcp/prims/workspace"
)

// TestPutFileChanged: a file the code rewrites between the hash and the
// upload is not stored under a checksum it does not have; the same file
// left alone is (the control).
func TestPutFileChanged(t *testing.T) {
	t.Parallel()
	ws, err := workspace.New("")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	p := filepath.Join(ws.Dir(), "output", "a.txt")
	if err := os.WriteFile(p, []byte("first version"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, change := range []bool{false, true} {
		opts := Options{afterHash: func() {
			if change {
				os.WriteFile(p, []byte("other version"), 0o644) // same size
			}
		}}
		st, err := Open(context.Background(), "file://"+dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		_, err = st.Put(context.Background(), ws, "output/a.txt", "s")
		st.Close()
		var se *Error
		switch {
		case !change && err != nil:
			t.Fatalf("control: %v", err)
		case change && (!errors.As(err, &se) || !strings.Contains(err.Error(), "changed while it was being stored")):
			t.Fatalf("changed file: %v, want a changed-file error", err)
		}
		os.WriteFile(p, []byte("first version"), 0o644)
	}
	// What the store holds is the control's upload, not the changed one.
	b, err := blob.OpenBucket(context.Background(), "file://"+dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r, err := b.NewReader(context.Background(), "s/a.txt", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, _ := io.ReadAll(r)
	if string(got) != "first version" {
		t.Errorf("stored %q, want the first version", got)
	}
}
