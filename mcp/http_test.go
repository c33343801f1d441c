package mcp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/internal/testpython"
	"github.com/prims-mcp/prims/sandbox"
	"github.com/prims-mcp/prims/session"
	"github.com/prims-mcp/prims/workspace/pythonenv"
	"github.com/prims-mcp/prims/workspace/pythonenv/pythonenvtest"
)

type httpFixture struct {
	srv *Server
	ts  *httptest.Server
	url string
}

// newHTTPFixture serves a fresh Server's Handler on a loopback listener.
func newHTTPFixture(t *testing.T, hc HTTPConfig) *httpFixture {
	t.Helper()
	return newHTTPFixtureConfig(t, Config{}, hc)
}

func newHTTPFixtureConfig(t *testing.T, cfg Config, hc HTTPConfig) *httpFixture {
	t.Helper()
	cfg.Python = testpython.Path(t)
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = time.Hour
	}
	runner, err := sandbox.New(sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, runner)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(nil)
	ts.Start()
	if hc.PublicURL == "" {
		hc.PublicURL = ts.URL
	}
	h, err := srv.Handler(hc)
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = h
	t.Cleanup(func() {
		// Close first: it ends the sessions' event streams, which the
		// test server would otherwise wait for.
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		ts.Close()
	})
	return &httpFixture{srv: srv, ts: ts, url: ts.URL}
}

// bearer adds an Authorization header to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

func httpClient(token string) *http.Client {
	if token == "" {
		return &http.Client{}
	}
	return &http.Client{Transport: bearer{token, http.DefaultTransport}}
}

type clientOpts struct {
	token    string
	version  string // protocol version to ask for; "" = the SDK's latest
	progress func(*sdk.ProgressNotificationClientRequest)
}

func (f *httpFixture) connect(t *testing.T, o clientOpts) (*sdk.ClientSession, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := sdk.NewClient(&sdk.Implementation{Name: "test", Version: "0"}, &sdk.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, r *sdk.ProgressNotificationClientRequest) {
			if o.progress != nil {
				o.progress(r)
			}
		},
	})
	cs, err := c.Connect(ctx, &sdk.StreamableClientTransport{
		Endpoint:   f.url + "/mcp",
		HTTPClient: httpClient(o.token),
		MaxRetries: -1,
	}, &sdk.ClientSessionOptions{ProtocolVersion: o.version})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { cs.Close() })
	return cs, nil
}

func (f *httpFixture) mustConnect(t *testing.T, o clientOpts) *sdk.ClientSession {
	t.Helper()
	cs, err := f.connect(t, o)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	return cs
}

// call calls a tool and returns its text and structured content.
func call(t *testing.T, cs *sdk.ClientSession, tool string, args map[string]any) (text string, structured map[string]any, isError bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	for _, c := range res.Content {
		if tc, ok := c.(*sdk.TextContent); ok {
			text += tc.Text
		}
	}
	if res.StructuredContent != nil {
		b, _ := json.Marshal(res.StructuredContent)
		_ = json.Unmarshal(b, &structured)
	}
	return text, structured, res.IsError
}

func runOK(t *testing.T, cs *sdk.ClientSession, code string) map[string]any {
	t.Helper()
	text, out, isErr := call(t, cs, "run_code", map[string]any{"code": code})
	if isErr {
		t.Fatalf("run_code failed: %s", text)
	}
	return out
}

// workspaceDir returns the directory of a session's workspace, "" if none.
// postRaw sends one JSON-RPC message as a client written by hand would:
// within session sid (none for initialize) on protocol version.
func (f *httpFixture) postRaw(t *testing.T, sid, version, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.url+"/mcp", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if sid != "" {
		req.Header.Set(sessionHeader, sid)
		req.Header.Set("Mcp-Protocol-Version", version)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func (f *httpFixture) workspaceDir(id string) string {
	f.srv.table.mu.Lock()
	defer f.srv.table.mu.Unlock()
	e := f.srv.table.entries[id]
	if e == nil || e.sess == nil {
		return ""
	}
	return e.sess.Workspace().Dir()
}

// eventually polls cond until it holds or the test's patience runs out.
// It waits for events, it does not measure time: the limit is generous.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func gone(dir string) bool {
	_, err := os.Stat(dir)
	return os.IsNotExist(err)
}

func get(t *testing.T, rawURL string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestHTTPSessionsAreIsolated: two sessions get two workspaces, and no
// tool or artifact request of one reaches the other's files. Both protocol
// generations a client may ask for are tried: 2026-07-28 is sessionless, so
// the stateful handler declines it and the SDK client falls back to the
// newest session protocol, 2025-11-25.
func TestHTTPSessionsAreIsolated(t *testing.T) {
	for _, tt := range []struct{ ask, want string }{{"2026-07-28", "2025-11-25"}, {"2025-06-18", "2025-06-18"}} {
		t.Run(tt.ask, func(t *testing.T) {
			f := newHTTPFixture(t, HTTPConfig{})
			a := f.mustConnect(t, clientOpts{version: tt.ask})
			b := f.mustConnect(t, clientOpts{version: tt.ask})
			if got := a.InitializeResult().ProtocolVersion; got != tt.want {
				t.Errorf("negotiated %s, want %s", got, tt.want)
			}
			if a.ID() == "" || a.ID() == b.ID() {
				t.Fatalf("session IDs %q and %q: want two distinct ones", a.ID(), b.ID())
			}
			runOK(t, a, "open('output/secret.txt','w').write('A-secret')")
			runOK(t, b, "open('output/mine.txt','w').write('B')")
			dirA, dirB := f.workspaceDir(a.ID()), f.workspaceDir(b.ID())
			if dirA == "" || dirB == "" || dirA == dirB {
				t.Fatalf("workspaces %q and %q: want two distinct ones", dirA, dirB)
			}

			// Through the tools, B sees only its own files.
			text, _, _ := call(t, b, "list_dir", map[string]any{"path": "output"})
			if strings.Contains(text, "secret") || !strings.Contains(text, "mine.txt") {
				t.Errorf("B's list_dir output:\n%s", text)
			}
			if text, _, isErr := call(t, b, "preview_file", map[string]any{"path": "output/secret.txt"}); !isErr {
				t.Errorf("B previewed A's file: %s", text)
			}
			rel, _ := filepath.Rel(dirB, filepath.Join(dirA, "output", "secret.txt"))
			for _, p := range []string{rel, filepath.Join(dirA, "output", "secret.txt"), "../" + filepath.Base(dirA)} {
				if text, _, isErr := call(t, b, "preview_file", map[string]any{"path": p}); !isErr || strings.Contains(text, "A-secret") {
					t.Errorf("preview_file %q from B: %s", p, text)
				}
				if text, _, isErr := call(t, b, "list_dir", map[string]any{"path": p}); !isErr {
					t.Errorf("list_dir %q from B: %s", p, text)
				}
			}
			// Nor through workspace resources.
			ctx := context.Background()
			list, err := b.ListResources(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range list.Resources {
				if strings.Contains(r.URI, "secret") {
					t.Errorf("B lists A's file as a resource: %s", r.URI)
				}
			}
			if _, err := a.ReadResource(ctx, &sdk.ReadResourceParams{URI: resourcePrefix + "output/secret.txt"}); err != nil {
				t.Errorf("A cannot read its own file as a resource: %v", err)
			}
			if res, err := b.ReadResource(ctx, &sdk.ReadResourceParams{URI: resourcePrefix + "output/secret.txt"}); err == nil {
				t.Errorf("B read A's file as a resource: %+v", res.Contents)
			}
			out := runOK(t, b, "import os; print(sorted(os.listdir('output')))")
			if got := out["stdout"]; got != "['mine.txt']\n" {
				t.Errorf("B's run sees output/ = %q", got)
			}

			// Through /artifacts, each session reaches only its own files.
			art := f.url + "/artifacts/secret.txt"
			if resp, body := get(t, art, map[string]string{sessionHeader: a.ID()}); resp.StatusCode != 200 || body != "A-secret" {
				t.Errorf("A's own artifact: %d %q", resp.StatusCode, body)
			}
			resp, body := get(t, art, map[string]string{sessionHeader: b.ID()})
			if resp.StatusCode != 404 || strings.Contains(body, "A-secret") {
				t.Errorf("A's artifact with B's session: %d %q", resp.StatusCode, body)
			}
		})
	}
}

// TestArtifacts covers what GET /artifacts serves and everything it must
// refuse: traversal in the session header and in the path, in every
// spelling, symlinks, directories, other methods.
func TestArtifacts(t *testing.T) {
	f := newHTTPFixture(t, HTTPConfig{})
	cs := f.mustConnect(t, clientOpts{})
	runOK(t, cs, `
import os
os.makedirs('output/sub', exist_ok=True)
open('output/report.csv','w').write('a,b\n1,2\n')
open('output/sub/r.txt','w').write('nested')
os.symlink('/etc/passwd', 'output/link')
os.symlink('../logs', 'output/logsdir')
open('victim','w').write('root-of-workspace')
`)
	id := cs.ID()

	resp, body := get(t, f.url+"/artifacts/report.csv", map[string]string{sessionHeader: id})
	if resp.StatusCode != 200 || body != "a,b\n1,2\n" {
		t.Fatalf("report.csv: %d %q", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/csv") {
		t.Errorf("Content-Type = %q, want text/csv", ct)
	}
	if cd := resp.Header.Get("Content-Disposition"); cd != `attachment; filename=report.csv` {
		t.Errorf("Content-Disposition = %q", cd)
	}
	resp, body = get(t, f.url+"/artifacts/report.csv", map[string]string{sessionHeader: id, "Range": "bytes=4-6"})
	if resp.StatusCode != http.StatusPartialContent || body != "1,2" {
		t.Errorf("range request: %d %q", resp.StatusCode, body)
	}
	if resp, body = get(t, f.url+"/artifacts/sub/r.txt", map[string]string{sessionHeader: id}); resp.StatusCode != 200 || body != "nested" {
		t.Errorf("sub/r.txt: %d %q", resp.StatusCode, body)
	}
	// The paths run_code reports (output/...) work too.
	for path, want := range map[string]string{"output/report.csv": "a,b\n1,2\n", "output/sub/r.txt": "nested"} {
		if resp, body = get(t, f.url+"/artifacts/"+path, map[string]string{sessionHeader: id}); resp.StatusCode != 200 || body != want {
			t.Errorf("%s: %d %q", path, resp.StatusCode, body)
		}
	}

	tests := []struct {
		name   string
		path   string // after /artifacts/, sent as written
		header string
		want   int
	}{
		{"no header", "report.csv", "", 400},
		{"header traversal", "report.csv", "x/../../victim", 400},
		{"header dotdot", "report.csv", "..", 400},
		{"header absolute", "report.csv", "/etc/passwd", 400},
		{"header encoded", "report.csv", "%2e%2e%2f%2e%2e", 400},
		{"header unknown session", "report.csv", "NOSUCHSESSION234567ABCDEFG", 404},
		{"header with suffix", "report.csv", id + "/..", 400},
		{"path dotdot", "../victim", id, 400},
		{"path dotdot deep", "sub/../../victim", id, 400},
		{"path encoded dotdot", "%2e%2e/victim", id, 400},
		{"path encoded slash", "..%2fvictim", id, 400},
		{"path absolute", "%2fetc%2fpasswd", id, 400},
		{"path backslash", "..%5cvictim", id, 400},
		{"path double encoded", "%252e%252e/victim", id, 404},
		{"path unclean", "sub//r.txt", id, 400},
		{"empty path", "", id, 400},
		{"missing file", "nope.txt", id, 404},
		{"directory", "sub", id, 404},
		{"symlink", "link", id, 403},
		{"reported path, symlink", "output/link", id, 403},
		{"reported path, dotdot", "output/../victim", id, 400},
		{"reported path, dotdot deep", "output/sub/../../victim", id, 400},
		{"output only", "output/", id, 400},
		{"through symlink", "logsdir/0001-stdout.txt", id, 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := map[string]string{}
			if tt.header != "" {
				hdr[sessionHeader] = tt.header
			}
			resp, body := get(t, f.url+"/artifacts/"+tt.path, hdr)
			if resp.StatusCode != tt.want {
				t.Errorf("status %d, want %d (%q)", resp.StatusCode, tt.want, body)
			}
			for _, leak := range []string{"root-of-workspace", "root:", id, os.TempDir()} {
				if strings.Contains(body, leak) {
					t.Errorf("body %q contains %q", body, leak)
				}
			}
		})
	}

	req, _ := http.NewRequest(http.MethodPost, f.url+"/artifacts/report.csv", nil)
	req.Header.Set(sessionHeader, id)
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /artifacts: %v %v", resp.StatusCode, err)
	}
}

// TestHTTPSessionLifecycle: a session's workspace is removed when the
// client deletes the session (killing its run) and when it idles out.
func TestHTTPSessionLifecycle(t *testing.T) {
	t.Run("delete", func(t *testing.T) {
		f := newHTTPFixture(t, HTTPConfig{})
		started := make(chan struct{})
		var once sync.Once
		cs := f.mustConnect(t, clientOpts{progress: func(r *sdk.ProgressNotificationClientRequest) {
			if strings.Contains(r.Params.Message, "started") {
				once.Do(func() { close(started) })
			}
		}})
		id := cs.ID()
		type result struct {
			res *sdk.CallToolResult
			err error
		}
		done := make(chan result, 1)
		go func() {
			params := &sdk.CallToolParams{Name: "run_code", Arguments: map[string]any{"code": "import time; print('started', flush=True); time.sleep(120)"}}
			params.SetProgressToken("p1")
			res, err := cs.CallTool(context.Background(), params)
			done <- result{res, err}
		}()
		<-started
		dir := f.workspaceDir(id)
		if dir == "" || gone(dir) {
			t.Fatalf("no workspace for the session")
		}
		req, _ := http.NewRequest(http.MethodDelete, f.url+"/mcp", nil)
		req.Header.Set(sessionHeader, id)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusNoContent {
			t.Fatalf("DELETE: %v %v", resp, err)
		}
		if !gone(dir) {
			t.Errorf("workspace still on disk after DELETE returned")
		}
		if r := <-done; r.err == nil && !r.res.IsError {
			t.Errorf("the run survived DELETE: %+v", r.res)
		}
		if resp, _ := get(t, f.url+"/artifacts/x", map[string]string{sessionHeader: id}); resp.StatusCode != 404 {
			t.Errorf("artifacts of a deleted session: %d", resp.StatusCode)
		}
	})
	t.Run("client close", func(t *testing.T) {
		f := newHTTPFixture(t, HTTPConfig{})
		cs := f.mustConnect(t, clientOpts{})
		call(t, cs, "list_dir", nil)
		dir := f.workspaceDir(cs.ID())
		if dir == "" {
			t.Fatal("no workspace")
		}
		cs.Close()
		eventually(t, "workspace removed after the client closed", func() bool { return gone(dir) })
	})
	t.Run("idle ttl", func(t *testing.T) {
		f := newHTTPFixture(t, HTTPConfig{SessionTTL: 200 * time.Millisecond})
		cs := f.mustConnect(t, clientOpts{})
		runOK(t, cs, "open('output/x','w').write('x')")
		dir := f.workspaceDir(cs.ID())
		if dir == "" {
			t.Fatal("no workspace")
		}
		eventually(t, "workspace of the idle session removed", func() bool { return gone(dir) })
		if resp, _ := get(t, f.url+"/artifacts/x", map[string]string{sessionHeader: cs.ID()}); resp.StatusCode != 404 {
			t.Errorf("artifacts of an expired session: %d", resp.StatusCode)
		}
		m := scrape(t, f.url)
		if m["prims_workspaces_active"] != 0 || m["prims_sessions_active"] != 0 {
			t.Errorf("metrics after expiry: workspaces %v sessions %v", m["prims_workspaces_active"], m["prims_sessions_active"])
		}
	})
	t.Run("server close", func(t *testing.T) {
		f := newHTTPFixture(t, HTTPConfig{})
		cs := f.mustConnect(t, clientOpts{})
		call(t, cs, "list_dir", nil)
		dir := f.workspaceDir(cs.ID())
		if err := f.srv.Close(); err != nil {
			t.Fatal(err)
		}
		if !gone(dir) {
			t.Errorf("workspace still on disk after Close")
		}
	})
}

// TestHTTPLimits: the session cap refuses the session too many, and a run
// over the run cap waits, saying so, until a slot frees.
func TestHTTPLimits(t *testing.T) {
	t.Run("sessions", func(t *testing.T) {
		f := newHTTPFixture(t, HTTPConfig{MaxSessions: 1})
		first := f.mustConnect(t, clientOpts{})
		if _, err := f.connect(t, clientOpts{}); err == nil {
			t.Fatal("second session accepted over MaxSessions=1")
		}
		first.Close()
		if _, err := f.connect(t, clientOpts{}); err != nil {
			t.Errorf("new session after the first closed: %v", err)
		}
	})
	t.Run("sessions at the cap, concurrently", func(t *testing.T) {
		const n = 6
		f := newHTTPFixture(t, HTTPConfig{MaxSessions: n})
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for range n {
			wg.Go(func() {
				if _, err := f.connect(t, clientOpts{}); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("one of %d sessions under MaxSessions=%d: %v", n, n, err)
		}
		if _, err := f.connect(t, clientOpts{}); err == nil {
			t.Errorf("session %d accepted", n+1)
		}
	})
	t.Run("runs", func(t *testing.T) {
		f := newHTTPFixture(t, HTTPConfig{MaxRuns: 1})
		a := f.mustConnect(t, clientOpts{})
		queued := make(chan string, 4)
		b := f.mustConnect(t, clientOpts{progress: func(r *sdk.ProgressNotificationClientRequest) {
			queued <- r.Params.Message
		}})
		call(t, a, "list_dir", nil)
		release := filepath.Join(f.workspaceDir(a.ID()), "release")
		aDone := make(chan string, 1)
		go func() {
			text, _, _ := call(t, a, "run_code", map[string]any{"code": "import os, time\nwhile not os.path.exists('release'): time.sleep(0.01)\nprint('a done')"})
			aDone <- text
		}()
		eventually(t, "A's run in flight", func() bool { return f.srv.metrics.inFlight.Load() == 1 })
		bDone := make(chan map[string]any, 1)
		go func() {
			params := &sdk.CallToolParams{Name: "run_code", Arguments: map[string]any{"code": "print('b done')"}}
			params.SetProgressToken("b")
			res, err := b.CallTool(context.Background(), params)
			if err != nil {
				t.Error(err)
				bDone <- nil
				return
			}
			var out map[string]any
			bs, _ := json.Marshal(res.StructuredContent)
			_ = json.Unmarshal(bs, &out)
			bDone <- out
		}()
		if msg := <-queued; !strings.Contains(msg, "queued") {
			t.Errorf("first progress of the waiting run: %q, want a queued notice", msg)
		}
		if err := os.WriteFile(release, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if text := <-aDone; !strings.Contains(text, "a done") {
			t.Errorf("A: %s", text)
		}
		if out := <-bDone; out["stdout"] != "b done\n" {
			t.Errorf("B after waiting: %v", out)
		}
	})
}

// TestHTTPHostAndOrigin: DNS rebinding (a foreign Host on a loopback
// listener) and cross-origin browser requests are refused.
func TestHTTPHostAndOrigin(t *testing.T) {
	f := newHTTPFixture(t, HTTPConfig{})
	cs := f.mustConnect(t, clientOpts{})
	for _, p := range []string{"/mcp", "/artifacts/x", "/metrics"} {
		if resp, _ := get(t, f.url+p, map[string]string{"Host": "evil.example", sessionHeader: cs.ID(), "Accept": "text/event-stream"}); resp.StatusCode != 403 {
			t.Errorf("GET %s with Host evil.example: %d, want 403", p, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, f.url+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Origin", "https://evil.example")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	req.Header.Set(sessionHeader, cs.ID())
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 403 {
		t.Errorf("cross-site POST: %v %v, want 403", resp.StatusCode, err)
	}

	g := newHTTPFixture(t, HTTPConfig{AllowedHosts: []string{"prims.example"}})
	if resp, _ := get(t, g.url+"/healthz", map[string]string{"Host": "prims.example"}); resp.StatusCode != 403 {
		// On loopback only loopback names pass, whatever AllowedHosts says.
		t.Errorf("allowed host on a loopback listener: %d, want 403", resp.StatusCode)
	}
	if resp, _ := get(t, g.url+"/healthz", nil); resp.StatusCode != 200 {
		t.Errorf("loopback host: %d", resp.StatusCode)
	}
}

var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*\})? (\S+)$`)

// parseMetrics is a small checker of the Prometheus text format: every line
// is a HELP or TYPE comment or a sample with a float value, every sample's
// family was typed, and histogram buckets are cumulative and end in +Inf
// equal to _count. It returns samples by name{labels}.
func parseMetrics(text string) (map[string]float64, error) {
	samples := map[string]float64{}
	types := map[string]string{}
	var lastBucket float64
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "#" {
			switch f[1] {
			case "TYPE":
				if len(f) != 4 {
					return nil, fmt.Errorf("line %d: bad TYPE", n)
				}
				switch f[3] {
				case "counter", "gauge", "histogram", "summary": // summary: the Go collector's GC pauses
				default:
					return nil, fmt.Errorf("line %d: type %q", n, f[3])
				}
				types[f[2]] = f[3]
			case "HELP":
			default:
				return nil, fmt.Errorf("line %d: comment %q", n, line)
			}
			continue
		}
		m := sampleLine.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("line %d: not a sample: %q", n, line)
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: value %q", n, m[3])
		}
		family := m[1]
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if base := strings.TrimSuffix(family, suf); base != family && (types[base] == "histogram" || types[base] == "summary") {
				family = base
			}
		}
		if types[family] == "" {
			return nil, fmt.Errorf("line %d: %s has no TYPE", n, m[1])
		}
		if strings.HasSuffix(m[1], "_bucket") {
			if strings.Contains(m[2], `le="0.005"`) {
				lastBucket = 0
			}
			if v < lastBucket {
				return nil, fmt.Errorf("line %d: buckets not cumulative", n)
			}
			lastBucket = v
		}
		if strings.HasSuffix(m[1], "_count") && types[family] == "histogram" && v != lastBucket {
			return nil, fmt.Errorf("line %d: _count %v != +Inf bucket %v", n, v, lastBucket)
		}
		samples[m[1]+m[2]] = v
	}
	return samples, sc.Err()
}

func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	resp, body := get(t, base+"/metrics", nil)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	m, err := parseMetrics(body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, body)
	}
	return m
}

func TestParseMetricsCatchesMistakes(t *testing.T) {
	for _, bad := range []string{
		"prims_x 1\n", // untyped
		"# TYPE prims_x counter\nprims_x one\n",
		"# TYPE prims_x counter\nprims_x{a=b} 1\n",
		"# TYPE h histogram\nh_bucket{le=\"0.005\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
		"# TYPE h histogram\nh_bucket{le=\"0.005\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_count 2\n",
	} {
		if _, err := parseMetrics(bad); err == nil {
			t.Errorf("parseMetrics accepted %q", bad)
		}
	}
}

// TestHTTPMetricsCountARun: /metrics parses and counts a run, its output,
// the session, and names the sandbox tier.
func TestHTTPMetricsCountARun(t *testing.T) {
	f := newHTTPFixture(t, HTTPConfig{})
	before := scrape(t, f.url)
	cs := f.mustConnect(t, clientOpts{})
	runOK(t, cs, "print('hello')")
	call(t, cs, "run_code", map[string]any{"code": "import sys; sys.exit(3)"})
	call(t, cs, "run_code", map[string]any{"code": "import time; time.sleep(30)", "timeout_s": 0.3})
	m := scrape(t, f.url)
	checks := []struct {
		key  string
		want float64
	}{
		{`prims_runs_total{outcome="ok"}`, 1},
		{`prims_runs_total{outcome="error"}`, 1},
		{`prims_runs_total{outcome="timeout"}`, 1},
		{`prims_run_duration_seconds_count`, 3},
		{`prims_run_queue_wait_seconds_count`, 3},
		{`prims_runs_limited_total{limit="wall-time"}`, 1},
		{`prims_runs_limited_total{limit="memory"}`, 0},
		{`prims_sandbox_memory_enforcement{mode="` + string(f.srv.runner.MemoryEnforcement()) + `"}`, 1},
		{`prims_output_bytes_total{stream="stdout"}`, 6},
		{`prims_sessions_active`, 1},
		{`prims_workspaces_active`, 1},
		{`prims_runs_in_flight`, 0},
		{`prims_sandbox_tier{tier="` + f.srv.Isolation() + `"}`, 1},
	}
	for _, c := range checks {
		if got, ok := m[c.key]; !ok || got != c.want {
			t.Errorf("%s = %v (present %v), want %v", c.key, got, ok, c.want)
		}
	}
	if before[`prims_runs_total{outcome="ok"}`] != 0 {
		t.Errorf("a fresh server counted runs")
	}
}

// TestHTTPMetricsCountEnvCache: the first session to ask for a package
// builds its environment (a miss); another session asking for the same
// one gets it from the cache (a hit). The build, in its sandbox, reached
// the index through the egress proxy, which counted it.
func TestHTTPMetricsCountEnvCache(t *testing.T) {
	ix := pythonenvtest.NewIndex(t, pythonenvtest.Package{Name: "tinypkg", Version: "1.0", Files: map[string]string{"tinypkg/__init__.py": "X = 42\n"}})
	installs, err := sandbox.New(sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer installs.Close()
	cache, err := pythonenv.New(pythonenv.Options{Dir: t.TempDir(), IndexURL: ix.URL, Confine: session.ConfineInstalls(installs)})
	if err != nil {
		t.Fatal(err)
	}
	f := newHTTPFixtureConfig(t, Config{Envs: cache}, HTTPConfig{})
	before := scrape(t, f.url)
	for _, name := range []string{"first", "second"} {
		cs := f.mustConnect(t, clientOpts{})
		text, out, isErr := call(t, cs, "run_code", map[string]any{"code": "import tinypkg; print(tinypkg.X)", "requirements": []string{"tinypkg"}})
		if isErr || out["stdout"] != "42\n" {
			t.Fatalf("%s session: %s", name, text)
		}
	}
	m := scrape(t, f.url)
	if m[`prims_env_cache_total{result="miss"}`] != 1 || m[`prims_env_cache_total{result="hit"}`] != 1 {
		t.Errorf("env cache: miss %v hit %v, want 1 and 1", m[`prims_env_cache_total{result="miss"}`], m[`prims_env_cache_total{result="hit"}`])
	}
	if installs.Tier() == sandbox.TierNone {
		return // no install sandbox, no proxy
	}
	for _, k := range []string{`prims_egress_requests_total{result="allowed"}`, `prims_egress_bytes_total{direction="down"}`} {
		if m[k] <= before[k] {
			t.Errorf("%s = %v, was %v: the install's requests were not counted", k, m[k], before[k])
		}
	}
}

func TestHTTPHealth(t *testing.T) {
	f := newHTTPFixture(t, HTTPConfig{Token: "0123456789abcdef-token"})
	if resp, body := get(t, f.url+"/healthz", nil); resp.StatusCode != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", resp.StatusCode, body)
	}
	resp, body := get(t, f.url+"/readyz", nil)
	var st struct {
		Ready     bool
		Isolation string
		Memory    string
		Python    bool
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil || resp.StatusCode != 200 || !st.Ready || !st.Python || st.Isolation == "" || st.Memory != string(f.srv.runner.MemoryEnforcement()) {
		t.Errorf("/readyz: %d %s", resp.StatusCode, body)
	}
	f.srv.rt.Drain()
	if resp, body := get(t, f.url+"/readyz", nil); resp.StatusCode != 503 {
		t.Errorf("/readyz while draining: %d %s", resp.StatusCode, body)
	}
}

// sseEvent is one server-sent event.
type sseEvent struct {
	id, retry, data string
}

// readEvents reads server-sent events from r until stop returns true for
// one (which is returned last) or the stream ends.
func readEvents(r io.Reader, stop func(sseEvent) bool) ([]sseEvent, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 4<<20)
	var evs []sseEvent
	var e sseEvent
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			evs = append(evs, e)
			if stop(e) {
				return evs, nil
			}
			e = sseEvent{}
			continue
		}
		k, v, _ := strings.Cut(line, ":")
		v = strings.TrimPrefix(v, " ")
		switch k {
		case "id":
			e.id = v
		case "retry":
			e.retry = v
		case "data":
			e.data += v
		}
	}
	return evs, fmt.Errorf("the stream ended: %v", sc.Err())
}

// TestHTTPResume is a client written by hand that loses its connection in
// the middle of a long run: it reconnects with Last-Event-ID and gets the
// progress it missed and the result.
func TestHTTPResume(t *testing.T) {
	for _, version := range []string{"2025-11-25", "2025-06-18", "2025-03-26"} {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			f := newHTTPFixture(t, HTTPConfig{})
			post := func(sid, body string) *http.Response {
				t.Helper()
				return f.postRaw(t, sid, version, body)
			}
			resp := post("", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"`+version+`","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}`)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			sid := resp.Header.Get(sessionHeader)
			if resp.StatusCode != http.StatusOK || sid == "" {
				t.Fatalf("initialize: %s, session %q", resp.Status, sid)
			}
			resp = post(sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
			resp.Body.Close()

			code := `import os, time
print("before the drop", flush=True)
while not os.path.exists("go"):
    time.sleep(0.01)
print("after the drop", flush=True)
print("done")`
			args, _ := json.Marshal(map[string]any{"code": code})
			resp = post(sid, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"run_code","arguments":`+string(args)+`,"_meta":{"progressToken":"p"}}}`)
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
				t.Fatalf("tools/call answered with %s, not an event stream", ct)
			}
			evs, err := readEvents(resp.Body, func(e sseEvent) bool { return strings.Contains(e.data, "before the drop") })
			if err != nil {
				t.Fatalf("%v; events %v", err, evs)
			}
			if evs[0].retry == "" {
				t.Errorf("the stream starts without a retry field: %+v", evs[0])
			}
			last := evs[len(evs)-1].id
			if last == "" {
				t.Fatalf("progress without an event id: %+v", evs)
			}
			resp.Body.Close() // the connection drops

			// The program goes on, and writes on while nobody listens.
			dir := f.workspaceDir(sid)
			if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			// The server learns of the drop when its side of the connection
			// closes; until then it refuses a second reader of the stream
			// (409), and a client reconnects after the retry interval, as
			// this one does, a few times.
			for try := 0; ; try++ {
				req, _ := http.NewRequest(http.MethodGet, f.url+"/mcp", nil)
				req.Header.Set("Accept", "text/event-stream")
				req.Header.Set(sessionHeader, sid)
				req.Header.Set("Mcp-Protocol-Version", version)
				req.Header.Set("Last-Event-ID", last)
				resp, err = http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode != http.StatusConflict || try == 20 {
					break
				}
				resp.Body.Close()
				time.Sleep(100 * time.Millisecond)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("resume: %s %s", resp.Status, b)
			}
			evs, err = readEvents(resp.Body, func(e sseEvent) bool { return strings.Contains(e.data, `"id":2`) })
			if err != nil {
				t.Fatalf("%v; events %v", err, evs)
			}
			var missed bool
			for _, e := range evs {
				if strings.Contains(e.data, "notifications/progress") && strings.Contains(e.data, "after the drop") {
					missed = true
				}
				if strings.Contains(e.data, "notifications/progress") && strings.Contains(e.data, "before the drop") {
					t.Errorf("an event seen before the drop came again: %s", e.data)
				}
			}
			if !missed {
				t.Errorf("the progress sent while disconnected was not replayed: %v", evs)
			}
			if res := evs[len(evs)-1].data; !strings.Contains(res, "done") || strings.Contains(res, `"isError":true`) {
				t.Errorf("result: %s", res)
			}
		})
	}
}

// TestHTTPIDsEchoedExactly: over HTTP too, every request id comes back
// byte for byte, in results, errors and event streams, and a request in
// flight can be cancelled by its id.
func TestHTTPIDsEchoedExactly(t *testing.T) {
	f := newHTTPFixture(t, HTTPConfig{})
	const version = "2025-11-25"
	// post sends one message and returns the JSON-RPC messages of the
	// answer, whether a JSON body or an event stream.
	post := func(sid, body string) (*http.Response, []map[string]json.RawMessage) {
		t.Helper()
		resp := f.postRaw(t, sid, version, body)
		defer resp.Body.Close()
		var msgs []map[string]json.RawMessage
		decode := func(data string) {
			var m map[string]json.RawMessage
			if err := json.Unmarshal([]byte(data), &m); err != nil {
				t.Fatalf("%q: %v", data, err)
			}
			msgs = append(msgs, m)
		}
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			evs, _ := readEvents(resp.Body, func(sseEvent) bool { return false })
			for _, e := range evs {
				if e.data != "" {
					decode(e.data)
				}
			}
		} else if b, _ := io.ReadAll(resp.Body); len(bytes.TrimSpace(b)) > 0 {
			decode(string(b))
		}
		return resp, msgs
	}
	resp, msgs := post("", `{"jsonrpc":"2.0","id":1.5,"method":"initialize","params":{"protocolVersion":"`+version+`","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}`)
	sid := resp.Header.Get(sessionHeader)
	if len(msgs) != 1 || string(msgs[0]["id"]) != "1.5" || sid == "" {
		t.Fatalf("initialize with id 1.5: %s %v", resp.Status, msgs)
	}
	post(sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	for _, id := range []string{
		`18446744073709551616`, `-9223372036854775809`, `9223372036854775807`, `1e308`, `1.5`, `-0`, `1E+2`,
		`1` + strings.Repeat("0", 400), `0`, `"7"`, `""`, `"\u00e9t\u00e9"`, `"été"`,
	} {
		_, msgs := post(sid, `{"jsonrpc":"2.0","id":`+id+`,"method":"ping"}`)
		if len(msgs) != 1 || string(msgs[0]["id"]) != id || msgs[0]["result"] == nil {
			t.Errorf("ping %.30s: %v", id, msgs)
		}
	}
	_, msgs = post(sid, `{"jsonrpc":"2.0","id":2.25,"method":"prompts/get","params":{"name":"nope"}}`)
	if len(msgs) != 1 || string(msgs[0]["id"]) != "2.25" || msgs[0]["error"] == nil {
		t.Errorf("error for id 2.25: %v", msgs)
	}

	// Cancel a run by the id it was sent with.
	id := `1` + strings.Repeat("0", 30)
	done := make(chan []map[string]json.RawMessage, 1)
	go func() {
		args, _ := json.Marshal(map[string]any{"code": "import time\nprint('started', flush=True)\ntime.sleep(600)", "timeout_s": 600})
		_, msgs := post(sid, `{"jsonrpc":"2.0","id":`+id+`,"method":"tools/call","params":{"name":"run_code","arguments":`+string(args)+`}}`)
		done <- msgs
	}()
	eventually(t, "the run started", func() bool { return f.srv.metrics.inFlight.Load() == 1 })
	post(sid, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":`+id+`,"reason":"test"}}`)
	eventually(t, "the run cancelled by its id", func() bool {
		return f.srv.metrics.inFlight.Load() == 0 && f.srv.metrics.runs[outcomeCancelled].Load() == 1
	})
	select {
	case msgs := <-done:
		for _, m := range msgs {
			if m["id"] != nil && string(m["id"]) != id {
				t.Errorf("answer to the cancelled call has id %s", m["id"])
			}
		}
	case <-time.After(30 * time.Second):
		t.Error("the cancelled call's stream did not end")
	}
}

func TestIDSurvives(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{`0`, true}, {`1`, true}, {`-7`, true}, {`9007199254740992`, true}, {`-9007199254740992`, true},
		{`9007199254740993`, false}, {`9223372036854775807`, false}, {`18446744073709551616`, false},
		{`-0`, false}, {`01`, false}, {`1.5`, false}, {`1.0`, false}, {`1e3`, false}, {`1E+2`, false},
		{`"a"`, true}, {`""`, true}, {`"é"`, true}, {`"\u00e9"`, false}, {`"a\"b"`, false},
	}
	for _, tt := range tests {
		if got := survives(json.RawMessage(tt.id)); got != tt.want {
			t.Errorf("survives(%s) = %v, want %v", tt.id, got, tt.want)
		}
	}
}
