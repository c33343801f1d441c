package mcp

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prims-mcp/prims/workspace"
	"github.com/prims-mcp/prims/workspace/artifactstore"
)

func fileStore(t *testing.T) (*artifactstore.Store, string) {
	t.Helper()
	dir := t.TempDir()
	st, err := artifactstore.Open(context.Background(), "file://"+dir, artifactstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, dir
}

// TestPersistToStore: persist_artifact without a presigned URL keeps the
// file in the artifact store under a key of the session's, by path or by
// the original PRIMS's relative_path; links the code planted are refused.
func TestPersistToStore(t *testing.T) {
	st, dir := fileStore(t)
	forEachProtocol(t, func(t *testing.T, v string) {
		env := start(t, v, Config{Artifacts: st})
		ctx := context.Background()
		secret := filepath.Join(t.TempDir(), "secret.txt")
		os.WriteFile(secret, []byte("top secret"), 0o600)
		code := fmt.Sprintf("import os\nos.makedirs('output/plots')\nopen('output/plots/plot.png','wb').write(b'\\x89PNG\\r\\n\\x1a\\n' + b'x'*100)\nos.symlink(%q, 'output/leak.txt')", secret)
		if res := env.call(t, ctx, "run_code", map[string]any{"code": code}, nil); res.IsError {
			t.Fatalf("run: %s", text(res))
		}
		var a, b PersistOutput
		res := env.call(t, ctx, "persist_artifact", map[string]any{"path": "output/plots/plot.png"}, &a)
		if res.IsError || a.MIME != "image/png" || a.Size != 108 || len(a.SHA256) != 64 || !strings.HasSuffix(a.Key, "/plots/plot.png") || a.Store != "the file store" {
			t.Fatalf("persist by path: %+v\n%s", a, text(res))
		}
		res = env.call(t, ctx, "persist_artifact", map[string]any{"relative_path": "plots/plot.png"}, &b)
		if res.IsError || b.Key != a.Key || b.SHA256 != a.SHA256 {
			t.Errorf("persist by relative_path: %+v, want key %s\n%s", b, a.Key, text(res))
		}
		stored, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(a.Key)))
		if err != nil || !bytes.HasPrefix(stored, []byte("\x89PNG")) {
			t.Errorf("stored file: %d bytes, %v", len(stored), err)
		}
		for _, args := range []map[string]any{
			{"path": "output/leak.txt"},
			{"relative_path": "leak.txt"},
			{"relative_path": "../logs/0001-code.py"},
			{"relative_path": "/etc/passwd"},
			{"path": "output/plots/plot.png", "relative_path": "plots/plot.png"},
			{},
		} {
			res := env.call(t, ctx, "persist_artifact", args, nil)
			if !res.IsError || strings.Contains(text(res), "top secret") {
				t.Errorf("persist %v: %s", args, text(res))
			}
		}
	})
}

// TestPersistWithoutStore: a server without --artifact-store still needs a
// presigned URL, and says so.
func TestPersistWithoutStore(t *testing.T) {
	env := start(t, "", Config{})
	ctx := context.Background()
	env.call(t, ctx, "run_code", map[string]any{"code": "open('output/a.txt','w').write('a')"}, nil)
	res := env.call(t, ctx, "persist_artifact", map[string]any{"path": "output/a.txt"}, nil)
	if !res.IsError || !strings.Contains(text(res), "presigned_url is required") {
		t.Errorf("persist without a store: %s", text(res))
	}
}

// TestOriginalNames: the original PRIMS's argument names work: mountPath in
// run_code's files and mount_file, dir_path for list_dir, relative_path for
// preview_file.
func TestOriginalNames(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("a,b\n1,2\n")) }))
	defer srv.Close()
	env := start(t, "", Config{Transfer: workspace.Limits{AllowPrivate: true}})
	ctx := context.Background()
	var out RunOutput
	res := env.call(t, ctx, "run_code", map[string]any{
		"code":  "print(open('mounts/data/in.csv').read().strip())\nopen('output/hello.txt','w').write('hi')",
		"files": []map[string]any{{"url": srv.URL, "mountPath": "data/in.csv"}},
	}, &out)
	if res.IsError || out.Stdout != "a,b\n1,2\n" {
		t.Fatalf("run_code with mountPath: %+v\n%s", out, text(res))
	}
	if res := env.call(t, ctx, "mount_file", map[string]any{"url": srv.URL, "mountPath": "b.csv"}, nil); res.IsError {
		t.Errorf("mount_file with mountPath: %s", text(res))
	}
	var ls ListOutput
	env.call(t, ctx, "list_dir", map[string]any{"dir_path": "output"}, &ls)
	if len(ls.Entries) != 1 || ls.Entries[0].Name != "hello.txt" {
		t.Errorf("list_dir dir_path=output: %+v", ls)
	}
	var p struct {
		Text string `json:"text"`
	}
	env.call(t, ctx, "preview_file", map[string]any{"relative_path": "output/hello.txt"}, &p)
	if p.Text != "hi" {
		t.Errorf("preview_file relative_path: %+v", p)
	}
	res = env.call(t, ctx, "run_code", map[string]any{"code": "print(1)", "files": []map[string]any{{"url": srv.URL, "mountPath": "x.csv", "mount_path": "y.csv"}}}, nil)
	if !res.IsError || !strings.Contains(text(res), "not both") {
		t.Errorf("both names: %s", text(res))
	}
}

// TestPersistOutputs: with PersistOutputs each run's new or changed output/
// files go to the store when the run ends, listed in the result; files the
// run did not touch, and links it planted, are not stored.
func TestPersistOutputs(t *testing.T) {
	st, dir := fileStore(t)
	env := start(t, "", Config{Artifacts: st, PersistOutputs: true})
	ctx := context.Background()
	var out RunOutput
	code := "import os\nfor i in range(10):\n    open(f'output/f{i}.txt','w').write(str(i))\nos.symlink('/etc/passwd', 'output/link')"
	res := env.call(t, ctx, "run_code", map[string]any{"code": code}, &out)
	if res.IsError || len(out.Persisted) != 10 || len(out.PersistErrors) != 0 {
		t.Fatalf("persisted %d files, errors %v; want 10, none\n%s", len(out.Persisted), out.PersistErrors, text(res))
	}
	for _, a := range out.Persisted {
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(a.Key)))
		want := strings.TrimSuffix(strings.TrimPrefix(a.Path, "output/f"), ".txt")
		if err != nil || string(data) != want {
			t.Errorf("%s stored as %s: %q, %v; want %q", a.Path, a.Key, data, err, want)
		}
	}
	if !strings.Contains(text(res), "Stored in the file store:") {
		t.Errorf("result text does not list the stored files:\n%s", text(res))
	}
	// A second run that changes one file stores that one only.
	env.call(t, ctx, "run_code", map[string]any{"code": "open('output/f3.txt','w').write('three')"}, &out)
	if len(out.Persisted) != 1 || out.Persisted[0].Path != "output/f3.txt" {
		t.Errorf("second run persisted %+v, want output/f3.txt only", out.Persisted)
	}
}

// TestFileStoreSignedDownload: a file:// store with base_url and
// secret_key_path gives download URLs that prims serve answers without the
// bearer token (the signature is the credential), and refuses once the URL
// is tampered with; /mcp still needs the token (the control).
func TestFileStoreSignedDownload(t *testing.T) {
	ts := httptest.NewUnstartedServer(nil)
	ts.Start()
	defer ts.Close()
	keyFile := filepath.Join(t.TempDir(), "url.key")
	os.WriteFile(keyFile, []byte("prims-test-signing-key"), 0o600)
	st, err := artifactstore.Open(context.Background(), "file://"+t.TempDir()+"?base_url="+url.QueryEscape(ts.URL+"/store")+"&secret_key_path="+url.QueryEscape(keyFile), artifactstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	env := start(t, "", Config{Artifacts: st})
	h, err := env.srv.Handler(HTTPConfig{PublicURL: ts.URL, Token: "the-token"})
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = h

	ctx := context.Background()
	env.call(t, ctx, "run_code", map[string]any{"code": "open('output/r.csv','w').write('a,b\\n1,2\\n')"}, nil)
	var a PersistOutput
	if res := env.call(t, ctx, "persist_artifact", map[string]any{"relative_path": "r.csv"}, &a); res.IsError || !strings.HasPrefix(a.URL, ts.URL+"/store?") {
		t.Fatalf("persist: %+v\n%s", a, text(res))
	}
	get := func(u string) (int, string) {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(a.URL); code != http.StatusOK || body != "a,b\n1,2\n" {
		t.Errorf("signed download: %d %q", code, body)
	}
	u, _ := url.Parse(a.URL)
	q := u.Query()
	q.Set("obj", strings.Replace(q.Get("obj"), "r.csv", "other.csv", 1))
	u.RawQuery = q.Encode()
	if code, _ := get(u.String()); code != http.StatusForbidden {
		t.Errorf("tampered URL answered %d, want 403", code)
	}
	if code, _ := get(ts.URL + "/store"); code != http.StatusForbidden {
		t.Errorf("unsigned URL answered %d, want 403", code)
	}
	if code, _ := get(ts.URL + "/mcp"); code != http.StatusUnauthorized {
		t.Errorf("control: /mcp without the token answered %d, want 401", code)
	}
}
