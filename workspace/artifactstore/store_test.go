package artifactstore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"gocloud.dev/blob"

	"github.com/prims-mcp/prims/workspace"
	"github.com/prims-mcp/prims/workspace/artifactstore"
	"github.com/prims-mcp/prims/workspace/artifactstore/s3test"
)

// pngBytes is a file whose content type PRIMS knows by name and content.
var pngBytes = append([]byte("\x89PNG\r\n\x1a\n"), bytes.Repeat([]byte("plot"), 4096)...)

func newWorkspace(t *testing.T) *workspace.Workspace {
	t.Helper()
	ws, err := workspace.New("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

func writeOutput(t *testing.T, ws *workspace.Workspace, rel string, data []byte) {
	t.Helper()
	p := filepath.Join(ws.Dir(), "output", filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func open(t *testing.T, rawURL string) *artifactstore.Store {
	t.Helper()
	st, err := artifactstore.Open(context.Background(), rawURL, artifactstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// backends are the two stores tested against a real server: gofakes3 on
// loopback for S3, and a directory for file://. sign says whether the
// backend gives download URLs; fileSigned gives a file store that signs.
func backends(t *testing.T) map[string]string {
	dir := t.TempDir()
	key := filepath.Join(t.TempDir(), "url.key")
	if err := os.WriteFile(key, []byte("prims-test-signing-key"), 0o600); err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"s3":         s3test.URL(s3test.Start(t), s3test.Bucket),
		"file":       "file://" + dir,
		"fileSigned": "file://" + t.TempDir() + "?base_url=" + url.QueryEscape("https://prims.example/store") + "&secret_key_path=" + url.QueryEscape(key),
	}
}

func TestPut(t *testing.T) {
	t.Parallel()
	for name, rawURL := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ws := newWorkspace(t)
			writeOutput(t, ws, "plots/plot.png", pngBytes)
			st := open(t, rawURL)
			a, err := st.Put(context.Background(), ws, "output/plots/plot.png", "sessions/s1")
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(pngBytes)
			want := artifactstore.Artifact{Path: "output/plots/plot.png", Key: "sessions/s1/plots/plot.png", Size: int64(len(pngBytes)), MIME: "image/png", SHA256: hex.EncodeToString(sum[:])}
			got := a
			got.URL, got.URLExpires = "", got.URLExpires.UTC()
			want.URLExpires = got.URLExpires
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("artifact (-want +got):\n%s", diff)
			}

			// What the store holds, read back through its own client.
			b, err := blob.OpenBucket(context.Background(), rawURL)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			attrs, err := b.Attributes(context.Background(), a.Key)
			if err != nil {
				t.Fatal(err)
			}
			if attrs.ContentType != "image/png" || attrs.Metadata["sha256"] != want.SHA256 || attrs.Size != want.Size {
				t.Errorf("stored object: content type %q, metadata %v, size %d; want image/png, sha256 %s, %d", attrs.ContentType, attrs.Metadata, attrs.Size, want.SHA256, want.Size)
			}
			data, err := b.ReadAll(context.Background(), a.Key)
			if err != nil || !bytes.Equal(data, pngBytes) {
				t.Errorf("stored bytes differ (%d bytes, err %v)", len(data), err)
			}

			switch name {
			case "file":
				if a.URL != "" {
					t.Errorf("a file store without a signing key gave URL %q", a.URL)
				}
			case "fileSigned":
				if !strings.HasPrefix(a.URL, "https://prims.example/store?") || a.URLExpires.IsZero() {
					t.Errorf("signed file URL %q, expires %v", a.URL, a.URLExpires)
				}
			case "s3":
				checkS3Download(t, a.URL, pngBytes)
			}
		})
	}
}

// checkS3Download downloads a presigned URL with a plain HTTP client, as the
// user's browser would, and proves the server refuses the same URL without
// its signature (so the download worked because of it).
func checkS3Download(t *testing.T, signed string, want []byte) {
	t.Helper()
	u, err := url.Parse(signed)
	if err != nil || u.Query().Get("X-Amz-Signature") == "" || u.Query().Get("X-Amz-Expires") == "" {
		t.Fatalf("URL %q is not a presigned S3 URL (%v)", signed, err)
	}
	get := func(u string) (int, []byte) {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}
	if code, body := get(signed); code != http.StatusOK || !bytes.Equal(body, want) {
		t.Errorf("presigned download: %d, %d bytes; want 200 and the file's %d", code, len(body), len(want))
	}
	u.RawQuery = ""
	if code, _ := get(u.String()); code != http.StatusForbidden {
		t.Errorf("control: the same URL without its signature answered %d, want 403", code)
	}
}

// TestPutRefused: the store takes only regular files under output/, and
// never follows a link the code planted, as persist_artifact by URL.
func TestPutRefused(t *testing.T) {
	t.Parallel()
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("host secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, rawURL := range backends(t) {
		if name == "fileSigned" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ws := newWorkspace(t)
			out := filepath.Join(ws.Dir(), "output")
			writeOutput(t, ws, "ok.txt", []byte("fine"))
			must(t, os.Symlink(secret, filepath.Join(out, "link.txt")))
			must(t, os.Mkdir(filepath.Join(out, "real"), 0o755))
			must(t, os.Symlink(filepath.Dir(secret), filepath.Join(out, "dirlink")))
			if err := mkfifo(filepath.Join(out, "fifo")); err != nil {
				t.Logf("no FIFO case: %v", err)
			}
			st := open(t, rawURL)
			for _, tc := range []struct {
				name    string
				symlink bool
			}{
				{"output/link.txt", true},
				{"output/dirlink/secret", true},
				{"../secret", false},
				{secret, false},
				{"mounts/x", false},
				{"ok.txt", false},
				{"output", false},
				{"output/real", false},
				{"output/fifo", false},
			} {
				a, err := st.Put(context.Background(), ws, tc.name, "sessions/s1")
				var we *workspace.Error
				if err == nil || !errors.As(err, &we) {
					t.Errorf("Put(%q) = %+v, %v; want a workspace error", tc.name, a, err)
					continue
				}
				if tc.symlink != errors.Is(err, workspace.ErrSymlink) {
					t.Errorf("Put(%q): %v; symlink error %v, want %v", tc.name, err, !tc.symlink, tc.symlink)
				}
				if strings.Contains(err.Error(), ws.Dir()) {
					t.Errorf("Put(%q): the message names a host path: %v", tc.name, err)
				}
			}
			// Control: the store takes the regular file beside them, so
			// the refusals above are the paths', not the store's.
			if _, err := st.Put(context.Background(), ws, "output/ok.txt", "sessions/s1"); err != nil {
				t.Errorf("control: Put(output/ok.txt): %v", err)
			}
			b, err := blob.OpenBucket(context.Background(), rawURL)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			keys := listKeys(t, b)
			if diff := cmp.Diff([]string{"sessions/s1/ok.txt"}, keys); diff != "" {
				t.Errorf("keys in the store (-want +got):\n%s", diff)
			}
		})
	}
}

func listKeys(t *testing.T, b *blob.Bucket) []string {
	t.Helper()
	var keys []string
	it := b.List(nil)
	for {
		o, err := it.Next(context.Background())
		if errors.Is(err, io.EOF) {
			return keys
		}
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, o.Key)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestStoreFailures: an unreachable store and a bucket that refuses the
// server's credentials each give a message the model can act on, which
// names neither a host path nor the backend's internals.
func TestStoreFailures(t *testing.T) {
	t.Parallel()
	endpoint := s3test.Start(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()

	// A file store whose directory became a file after the server started
	// (fileblob recreates a directory that is merely gone).
	gone := t.TempDir()
	goneStore := open(t, "file://"+gone)
	must(t, os.Remove(gone))
	must(t, os.WriteFile(gone, nil, 0o644))

	for _, tc := range []struct {
		name, url, want string
		st              *artifactstore.Store
	}{
		{"s3 unreachable", s3test.URL(closed, s3test.Bucket), "could not store output/a.txt in s3://results: the store cannot be reached (connection refused)", nil},
		{"s3 denied", s3test.URL(endpoint, s3test.DeniedBucket), "could not store output/a.txt in s3://denied: the store denied access", nil},
		{"s3 no bucket", s3test.URL(endpoint, "nosuch"), "could not store output/a.txt in s3://nosuch: the bucket does not exist", nil},
		{"file gone", "", "could not store output/a.txt in the file store: the store answered with an error", goneStore},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ws := newWorkspace(t)
			writeOutput(t, ws, "a.txt", []byte("a"))
			st := tc.st
			if st == nil {
				st = open(t, tc.url)
			}
			_, err := st.Put(context.Background(), ws, "output/a.txt", "sessions/s1")
			var se *artifactstore.Error
			if !errors.As(err, &se) || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("got %T %v\nwant an *artifactstore.Error starting %q", err, err, tc.want)
			}
			if strings.Contains(err.Error(), gone) || strings.Contains(err.Error(), "prims-test-secret") || strings.Contains(err.Error(), "AKIA") {
				t.Errorf("message names a host path or a credential: %v", err)
			}
		})
	}
}

// TestOpenRefusesOtherSchemes: mem:// and friends would keep artifacts
// nowhere that outlives the server.
func TestOpenRefusesOtherSchemes(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"mem://", "http://example.com/bucket", "results", ""} {
		if st, err := artifactstore.Open(context.Background(), u, artifactstore.Options{}); err == nil {
			st.Close()
			t.Errorf("Open(%q) succeeded", u)
		}
	}
}
