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
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/prims-mcp/prims/internal/testenv"
)

func newWS(t *testing.T) *Workspace {
	t.Helper()
	w, err := New("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func write(t *testing.T, w *Workspace, name, content string) {
	t.Helper()
	p := filepath.Join(w.Dir(), name)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestNewLayoutAndClose(t *testing.T) {
	w, err := New("")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(w.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o700 {
		t.Errorf("workspace mode = %o, want 700", got)
	}
	for _, d := range []string{MountsDir, OutputDir, LogsDir, HomeDir, TmpDir} {
		if fi, err := os.Stat(filepath.Join(w.Dir(), d)); err != nil || !fi.IsDir() {
			t.Errorf("%s missing: %v", d, err)
		}
	}
	// Read-only leftovers must not stop the removal.
	write(t, w, "mounts/in.txt", "x")
	os.Chmod(filepath.Join(w.Dir(), "mounts"), 0o500)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(w.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("workspace still exists after Close: %v", err)
	}
}

func TestNamedWorkspaceIsKept(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keep")
	w, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	write(t, w, "output/a.txt", "a")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "output", "a.txt")); err != nil {
		t.Errorf("named workspace lost its files: %v", err)
	}
}

func TestResolve(t *testing.T) {
	w := newWS(t)
	write(t, w, "output/ok.txt", "ok")
	if err := os.Symlink("/etc", filepath.Join(w.Dir(), "output", "etc")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("ok.txt", filepath.Join(w.Dir(), "output", "inside")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		in      string
		want    string
		wantErr string
	}{
		{in: "", want: "."},
		{in: ".", want: "."},
		{in: "output/ok.txt", want: "output/ok.txt"},
		{in: "./output//ok.txt", want: "output/ok.txt"},
		{in: "output/new/file.txt", want: "output/new/file.txt"},
		{in: "output/../mounts", want: "mounts"},
		{in: "/etc/passwd", wantErr: "absolute"},
		{in: "../x", wantErr: "leaves the workspace"},
		{in: "output/../../x", wantErr: "leaves the workspace"},
		{in: "output/etc/passwd", wantErr: "symlink"},
		{in: "output/etc", wantErr: "symlink"},
		{in: "output/inside", wantErr: "symlink"},
		{in: "a\x00b", wantErr: "NUL"},
	}
	for _, tt := range tests {
		got, err := w.Resolve(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Resolve(%q) = %q, %v; want error containing %q", tt.in, got, err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), w.Dir()) {
				t.Errorf("Resolve(%q) error names the host path: %v", tt.in, err)
			}
			continue
		}
		if err != nil || filepath.ToSlash(got) != tt.want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestList(t *testing.T) {
	w := newWS(t)
	write(t, w, "output/b.txt", "bb")
	write(t, w, "output/a.csv", "a,b\n")
	os.Mkdir(filepath.Join(w.Dir(), "output", "sub"), 0o700)
	os.Symlink("/etc/passwd", filepath.Join(w.Dir(), "output", "link"))
	got, truncated, err := w.List("output")
	if err != nil || truncated {
		t.Fatal(err, truncated)
	}
	var names, types []string
	for _, e := range got {
		names = append(names, e.Name)
		types = append(types, e.Type)
		if e.Modified.IsZero() {
			t.Errorf("%s has no modification time", e.Name)
		}
	}
	if diff := cmp.Diff([]string{"a.csv", "b.txt", "link", "sub"}, names); diff != "" {
		t.Errorf("names (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"file", "file", "symlink", "dir"}, types); diff != "" {
		t.Errorf("types (-want +got):\n%s", diff)
	}
	if got[1].Size != 2 || got[1].Path != "output/b.txt" {
		t.Errorf("b.txt entry = %+v", got[1])
	}
	if _, _, err := w.List("output/b.txt"); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("List(file) err = %v", err)
	}
	if _, _, err := w.List("output/link"); err == nil {
		t.Error("List through a symlink succeeded")
	}
	if _, _, err := w.List("nope"); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("List(missing) err = %v", err)
	}
}

func TestPreviewPaging(t *testing.T) {
	w := newWS(t)
	// Multi-byte runes straddle page boundaries: pages must reassemble
	// exactly, with no replacement characters.
	text := strings.Repeat("héllo wörld ✓ ", 2000)
	write(t, w, "output/big.txt", text)
	var got strings.Builder
	offset := int64(0)
	pages := 0
	for {
		p, err := w.Preview("output/big.txt", offset, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Text) > 1000 {
			t.Fatalf("page of %d bytes, asked for 1000", len(p.Text))
		}
		if strings.ContainsRune(p.Text, '\uFFFD') {
			t.Fatalf("page at %d has a replacement character", offset)
		}
		got.WriteString(p.Text)
		pages++
		if p.EOF {
			break
		}
		if p.NextOffset <= offset {
			t.Fatalf("no progress at offset %d", offset)
		}
		offset = p.NextOffset
	}
	if got.String() != text {
		t.Errorf("pages do not reassemble the file (%d pages)", pages)
	}
	// Default and maximum page size.
	p, err := w.Preview("output/big.txt", 0, 1<<20)
	if err != nil || len(p.Text) > PreviewPage || p.EOF {
		t.Errorf("big page: %d bytes, eof=%v, err=%v", len(p.Text), p.EOF, err)
	}
	if _, err := w.Preview("output/big.txt", int64(len(text)+1), 0); err == nil {
		t.Error("offset past the end accepted")
	}
}

func TestPreviewBinary(t *testing.T) {
	w := newWS(t)
	write(t, w, "output/img.png", "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
	p, err := w.Preview("output/img.png", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Binary || p.Text != "" || p.MIME != "image/png" {
		t.Errorf("binary preview = %+v", p)
	}
}

func TestOpenRefusesSpecialFiles(t *testing.T) {
	w := newWS(t)
	if err := mkfifo(filepath.Join(w.Dir(), "output", "fifo")); err != nil {
		testenv.Skip(t, testenv.FIFO, "no FIFOs here: %v", err)
	}
	if _, _, err := w.Open("output/fifo"); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Open(fifo) err = %v", err)
	}
}

func TestChanges(t *testing.T) {
	w := newWS(t)
	write(t, w, "output/old.txt", "old")
	write(t, w, "output/same.txt", "same")
	snap := w.Snapshot()
	time.Sleep(10 * time.Millisecond)
	write(t, w, "output/old.txt", "changed")
	write(t, w, "output/dir/new.txt", "new")
	write(t, w, "elsewhere.txt", "not output")
	os.Symlink("/etc/passwd", filepath.Join(w.Dir(), "output", "link"))
	var got []string
	for _, e := range w.Changes(snap) {
		got = append(got, e.Path)
	}
	if diff := cmp.Diff([]string{"output/dir/new.txt", "output/old.txt"}, got, sortStrings); diff != "" {
		t.Errorf("Changes (-want +got):\n%s", diff)
	}
}

var sortStrings = cmpopts.SortSlices(func(a, b string) bool { return a < b })

func TestFetch(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/data.csv":
			io.WriteString(rw, "a,b\n1,2\n")
		case "/endless":
			buf := make([]byte, 32<<10)
			for {
				if _, err := rw.Write(buf); err != nil {
					return
				}
			}
		case "/big":
			rw.Header().Set("Content-Length", "999999999")
			rw.WriteHeader(200)
		case "/hang":
			<-r.Context().Done()
		default:
			http.NotFound(rw, r)
		}
	}))
	defer srv.Close()
	w := newWS(t)
	ctx := context.Background()
	lim := Limits{MaxDownload: 1 << 20, Timeout: 2 * time.Second, AllowPrivate: true}

	e, err := w.Fetch(ctx, srv.URL+"/data.csv", "in/data.csv", lim)
	if err != nil {
		t.Fatal(err)
	}
	if e.Path != "mounts/in/data.csv" || e.Size != 8 {
		t.Errorf("entry = %+v", e)
	}
	b, _ := os.ReadFile(filepath.Join(w.Dir(), "mounts", "in", "data.csv"))
	if string(b) != "a,b\n1,2\n" {
		t.Errorf("content = %q", b)
	}
	fi, _ := os.Stat(filepath.Join(w.Dir(), "mounts", "in", "data.csv"))
	if fi.Mode().Perm()&0o222 != 0 {
		t.Errorf("mounted file is writable: %v", fi.Mode())
	}
	// "mounts/" prefix is accepted and means the same place.
	if e, err := w.Fetch(ctx, srv.URL+"/data.csv", "mounts/again.csv", lim); err != nil || e.Path != "mounts/again.csv" {
		t.Errorf("mounts/ prefix: %+v %v", e, err)
	}

	bad := []struct {
		url, path, want string
	}{
		{"file:///etc/passwd", "x", "scheme"},
		{"ftp://example.com/x", "x", "scheme"},
		{"not a url", "x", "not a valid URL"},
		{srv.URL + "/missing", "x", "404"},
		{srv.URL + "/endless", "endless.bin", "larger than"},
		{srv.URL + "/big", "big.bin", "over the"},
		{srv.URL + "/hang", "hang.bin", "did not finish"},
		{"http://127.0.0.1:1/x", "x", "could not connect"},
		{"http://host.invalid/x", "x", "not found"},
		{srv.URL + "/data.csv", "../escape.csv", "leaves the workspace"},
		{srv.URL + "/data.csv", "/etc/escape.csv", "absolute"},
		{srv.URL + "/data.csv", "", "must name a file"},
	}
	for _, tt := range bad {
		_, err := w.Fetch(ctx, tt.url, tt.path, Limits{MaxDownload: 1 << 20, Timeout: 500 * time.Millisecond, AllowPrivate: true})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Fetch(%q, %q) err = %v, want %q", tt.url, tt.path, err, tt.want)
		}
		var we *Error
		if err != nil && !errors.As(err, &we) {
			t.Errorf("Fetch(%q) error is not a *workspace.Error: %T", tt.url, err)
		}
	}
	// No partial files were left behind.
	entries, _, _ := w.List("mounts")
	for _, e := range entries {
		if e.Name != "in" && e.Name != "again.csv" {
			t.Errorf("leftover in mounts/: %s", e.Name)
		}
	}
}

func TestUpload(t *testing.T) {
	type got struct {
		Method, CType string
		Length        int64
		Body          string
	}
	recv := make(chan got, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Query().Get("fail") != "" {
			http.Error(rw, "AccessDenied: signature expired", http.StatusForbidden)
			return
		}
		recv <- got{r.Method, r.Header.Get("Content-Type"), r.ContentLength, string(b)}
	}))
	defer srv.Close()
	w := newWS(t)
	write(t, w, "output/report.csv", "x,y\n1,2\n")
	write(t, w, "secret.txt", "not for upload")
	os.Symlink(filepath.Join(w.Dir(), "secret.txt"), filepath.Join(w.Dir(), "output", "link.csv"))
	os.Symlink("/etc", filepath.Join(w.Dir(), "output", "etcdir"))
	ctx := context.Background()

	r, err := w.Upload(ctx, "output/report.csv", srv.URL+"/bucket/key?X-Signature=abc", Limits{AllowPrivate: true})
	if err != nil {
		t.Fatal(err)
	}
	g := <-recv
	if diff := cmp.Diff(got{"PUT", "text/csv; charset=utf-8", 8, "x,y\n1,2\n"}, g); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}
	if r.Status != 200 {
		t.Errorf("status = %d", r.Status)
	}

	bad := []struct{ path, url, want string }{
		{"secret.txt", srv.URL, "not under output/"},
		{"output/link.csv", srv.URL, "symlink"},
		{"output/etcdir/passwd", srv.URL, "symlink"},
		{"output/../secret.txt", srv.URL, "not under output/"},
		{"output", srv.URL, "not under output/"},
		{"output/missing.csv", srv.URL, "no such file"},
		{"output/report.csv", "file:///tmp/x", "scheme"},
		{"output/report.csv", srv.URL + "/k?fail=1&X-Signature=secret", "403"},
	}
	for _, tt := range bad {
		_, err := w.Upload(ctx, tt.path, tt.url, Limits{AllowPrivate: true})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Upload(%q, %q) err = %v, want %q", tt.path, tt.url, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "AccessDenied") {
			t.Errorf("error shows the destination's answer, not only its status line: %v", err)
		}
		if err != nil && strings.Contains(err.Error(), "X-Signature") {
			t.Errorf("error leaks the presigned query: %v", err)
		}
	}
	if _, err := w.Upload(ctx, "output/report.csv", srv.URL, Limits{MaxUpload: 4, AllowPrivate: true}); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("over-cap upload err = %v", err)
	}
}
