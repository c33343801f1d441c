package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/internal/testpython"
	"github.com/prims-mcp/prims/workspace/artifactstore/s3test"
)

// TestOriginalClients runs the calls of the original Python PRIMS's README
// and examples (github.com/hileamlakB/PRIMCS: list_tools.py, run_code.py,
// inspect_workspace.py, mount_and_run.py, artifact_download.py and the
// README's persist_artifact and curl lines), with the original's argument
// names, against prims serve and prims stdio, both started with an S3
// artifact store on loopback.
func TestOriginalClients(t *testing.T) {
	py := testpython.Path(t)
	endpoint := s3test.Start(t)
	csv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "country,region\nChad,AFRICA\nPeru,SOUTH AMERICA\n")
	}))
	defer csv.Close()
	var putMu sync.Mutex
	var put []byte // what the presigned URL received
	presigned := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut || r.URL.Query().Get("X-Amz-Signature") != "sig" {
			http.Error(w, "want a signed PUT", http.StatusForbidden)
			return
		}
		body, _ := io.ReadAll(r.Body)
		putMu.Lock()
		put = body
		putMu.Unlock()
	}))
	defer presigned.Close()

	args := []string{"--python", py, "--artifact-store", s3test.URL(endpoint, s3test.Bucket), "--allow-private-fetch"}
	for _, transport := range []string{"serve", "stdio"} {
		t.Run(transport, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var cs *sdk.ClientSession
			var base string
			client := sdk.NewClient(&sdk.Implementation{Name: "fastmcp-like"}, nil)
			// The original's clients speak the protocol of their day.
			opts := &sdk.ClientSessionOptions{ProtocolVersion: "2025-11-25"}
			if transport == "serve" {
				base = startServeS3(t, append([]string{"serve", "--addr", "127.0.0.1:0"}, args...))
				c, err := client.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: base + "/mcp", MaxRetries: -1}, opts)
				if err != nil {
					t.Fatal(err)
				}
				cs = c
			} else {
				cmd := primsCmd(t, append([]string{"stdio"}, args...)...)
				cmd.Env = append(cmd.Env, s3test.Env...)
				c, err := client.Connect(ctx, &sdk.CommandTransport{Command: cmd}, opts)
				if err != nil {
					t.Fatal(err)
				}
				cs = c
			}
			defer cs.Close()
			call := func(name string, args map[string]any) map[string]any {
				t.Helper()
				res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: name, Arguments: args})
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if res.IsError {
					t.Fatalf("%s %v: %s", name, args, text(res))
				}
				var out map[string]any
				b, _ := json.Marshal(res.StructuredContent)
				json.Unmarshal(b, &out)
				return out
			}

			// examples/list_tools.py
			tools, err := cs.ListTools(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, tl := range tools.Tools {
				names = append(names, tl.Name)
			}
			for _, want := range []string{"run_code", "list_dir", "preview_file", "persist_artifact", "mount_file"} {
				if !slices.Contains(names, want) {
					t.Errorf("tools %v lack %s", names, want)
				}
			}

			// examples/run_code.py
			if out := call("run_code", map[string]any{"code": "print('Hello from FastMCP!')"}); out["stdout"] != "Hello from FastMCP!\n" {
				t.Errorf("run_code stdout %q", out["stdout"])
			}

			// examples/inspect_workspace.py
			call("run_code", map[string]any{"code": "with open('output/hello.txt', 'w') as f:\n    f.write('Hello inspection!\\nThis is a test file.')\n"})
			call("list_dir", map[string]any{})
			ls := call("list_dir", map[string]any{"dir_path": "output"})
			if b, _ := json.Marshal(ls["entries"]); !strings.Contains(string(b), `"hello.txt"`) {
				t.Errorf("list_dir dir_path=output: %s", b)
			}
			if p := call("preview_file", map[string]any{"relative_path": "output/hello.txt"}); p["text"] != "Hello inspection!\nThis is a test file." {
				t.Errorf("preview_file relative_path: %v", p["text"])
			}

			// examples/mount_and_run.py, and run_code's files with mountPath
			call("mount_file", map[string]any{"url": csv.URL, "mount_path": "data/countries.csv"})
			out := call("run_code", map[string]any{
				"code":  "import os\nprint('File exists:', os.path.exists('mounts/data/countries.csv'))\nprint(open('mounts/in/c.csv').read().count('\\n'))",
				"files": []map[string]any{{"url": csv.URL, "mountPath": "in/c.csv"}},
			})
			if out["stdout"] != "File exists: True\n3\n" {
				t.Errorf("mount and run: %q", out["stdout"])
			}

			// examples/artifact_download.py writes output/plots/plot.png;
			// the README persists and downloads it.
			png := "b'\\x89PNG\\r\\n\\x1a\\n' + bytes(range(256)) * 64"
			call("run_code", map[string]any{"code": "import os\nos.makedirs('output/plots', exist_ok=True)\nopen('output/plots/plot.png', 'wb').write(" + png + ")\nprint('Plot saved!')"})
			want := append([]byte("\x89PNG\r\n\x1a\n"), bytes.Repeat(func() []byte {
				b := make([]byte, 256)
				for i := range b {
					b[i] = byte(i)
				}
				return b
			}(), 64)...)

			// README: persist_artifact with relative_path and presigned_url.
			call("persist_artifact", map[string]any{"relative_path": "plots/plot.png", "presigned_url": presigned.URL + "/bucket/plot.png?X-Amz-Signature=sig"})
			putMu.Lock()
			if !bytes.Equal(put, want) {
				t.Errorf("the presigned URL received %d bytes, want the plot's %d", len(put), len(want))
			}
			putMu.Unlock()

			// The roadmap's artifact store: the same call without a URL.
			stored := call("persist_artifact", map[string]any{"relative_path": "plots/plot.png"})
			key, _ := stored["key"].(string)
			if !strings.HasPrefix(key, "sessions/") || !strings.HasSuffix(key, "/plots/plot.png") || stored["mime"] != "image/png" {
				t.Errorf("stored: %v", stored)
			}
			signed, _ := stored["url"].(string)
			if got := download(t, signed, nil); !bytes.Equal(got, want) {
				t.Errorf("signed download: %d bytes, want %d", len(got), len(want))
			}

			// README: curl -H "mcp-session-id: ..." /artifacts/plots/plot.png
			if transport == "serve" {
				got := download(t, base+"/artifacts/plots/plot.png", map[string]string{"mcp-session-id": cs.ID()})
				if !bytes.Equal(got, want) {
					t.Errorf("GET /artifacts/plots/plot.png: %d bytes, want %d", len(got), len(want))
				}
			}
		})
	}
}

// download GETs u as curl would, failing t unless it answers 200.
func download(t *testing.T, u string, header map[string]string) []byte {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatalf("GET %q: %v", u, err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", u, resp.Status, body)
	}
	return body
}

// startServeS3 starts prims serve with args and the S3 test credentials and
// returns its base URL once it listens.
func startServeS3(t *testing.T, args []string) string {
	t.Helper()
	cmd := primsCmd(t, args...)
	cmd.Env = append(cmd.Env, "TMPDIR="+t.TempDir(), "PRIMS_AUTH_TOKEN=")
	cmd.Env = append(cmd.Env, s3test.Env...)
	return serveBase(t, cmd, nil)
}
