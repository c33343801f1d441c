package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/internal/testpython"
)

func TestServeFlags(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("  0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("abc"), 0o600)

	tests := []struct {
		name      string
		args      []string
		env       string
		wantToken string
		wantOAuth bool
		wantURL   string
		wantErr   string
	}{
		{name: "loopback without auth", args: nil},
		{name: "remote without auth", args: []string{"--addr", "0.0.0.0:9000"}, wantErr: "without authentication"},
		{name: "remote, explicitly open", args: []string{"--addr", "0.0.0.0:9000", "--no-auth"}},
		{name: "token file", args: []string{"--addr", "0.0.0.0:9000", "--auth-token-file", tokenFile}, wantToken: "0123456789abcdef0123"},
		{name: "token env", args: []string{"--addr", "0.0.0.0:9000"}, env: "fedcba9876543210fedc", wantToken: "fedcba9876543210fedc"},
		{name: "short token", args: []string{"--auth-token-file", short}, wantErr: "shorter than 16"},
		{name: "missing token file", args: []string{"--auth-token-file", filepath.Join(dir, "nope")}, wantErr: "read --auth-token-file"},
		{name: "oauth", args: []string{"--addr", "0.0.0.0:9000", "--public-url", "https://prims.example", "--oauth-issuer", "https://id.example", "--oauth-scopes", "a,b"}, wantOAuth: true, wantURL: "https://prims.example"},
		{name: "oauth remote without public url", args: []string{"--addr", "0.0.0.0:9000", "--oauth-issuer", "https://id.example"}, wantErr: "--public-url"},
		{name: "oauth on loopback", args: []string{"--oauth-issuer", "https://id.example"}, wantOAuth: true, wantURL: "http://127.0.0.1:9000"},
		{name: "wildcard address", args: []string{"--addr", "0.0.0.0:9000", "--no-auth"}, wantURL: "http://localhost:9000"},
		{name: "oauth and token", args: []string{"--oauth-issuer", "https://id.example"}, env: "fedcba9876543210fedc", wantErr: "not both"},
		{name: "oauth flags without issuer", args: []string{"--oauth-audience", "x"}, wantErr: "need --oauth-issuer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(tokenEnv, tt.env)
			var opts *serveOptions
			cmd := newServeCmd(func(_ context.Context, o *serveOptions) error { opts = o; return nil })
			cmd.SetArgs(tt.args)
			if err := cmd.Execute(); err != nil {
				t.Fatal(err)
			}
			hc, err := opts.httpConfig(opts.addr)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if hc.Token != tt.wantToken || (hc.OAuth != nil) != tt.wantOAuth {
				t.Errorf("token %q oauth %v", hc.Token, hc.OAuth)
			}
			if tt.wantURL != "" && hc.PublicURL != tt.wantURL {
				t.Errorf("public URL %q, want %q", hc.PublicURL, tt.wantURL)
			}
			if tt.name == "oauth" && strings.Join(hc.OAuth.Scopes, " ") != "a b" {
				t.Errorf("scopes %q", hc.OAuth.Scopes)
			}
		})
	}
}

// TestServeSIGTERM runs prims serve as a child with three run slots (two for one session), starts
// two runs in it and queues a third, and sends SIGTERM: /readyz answers 503
// while the server drains (the connection is not refused), the queued run
// is told the server is shutting down, the short run finishes within the
// grace period, the long one is killed after it, and no process or
// workspace is left.
func TestServeSIGTERM(t *testing.T) {
	py := testpython.Path(t)
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := primsCmd(t, "serve", "--addr", "127.0.0.1:0", "--python", py, "--shutdown-grace", "3s", "--max-runs", "3", "--log-level", "debug")
	cmd.Env = append(cmd.Env, "TMPDIR="+tmp, "PRIMS_AUTH_TOKEN=")
	var logs lockedLog
	defer func() {
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	}()
	base := serveBase(t, cmd, &logs)

	started := make(chan string, 4)
	queued := make(chan string, 4)
	client := sdk.NewClient(&sdk.Implementation{Name: "test", Version: "0"}, &sdk.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, r *sdk.ProgressNotificationClientRequest) {
			if strings.Contains(r.Params.Message, "started") {
				started <- r.Params.Message
			}
			if strings.HasPrefix(r.Params.Message, "queued") {
				queued <- r.Params.Message
			}
		},
	})
	cs, err := client.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: base + "/mcp", MaxRetries: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()

	type outcome struct {
		res *sdk.CallToolResult
		err error
	}
	runAsync := func(token, code string) <-chan outcome {
		ch := make(chan outcome, 1)
		go func() {
			p := &sdk.CallToolParams{Name: "run_code", Arguments: map[string]any{"code": code}}
			p.SetProgressToken(token)
			res, err := cs.CallTool(ctx, p)
			ch <- outcome{res, err}
		}()
		return ch
	}
	long := runAsync("long", "import subprocess, time\nsubprocess.Popen(['sleep', '300'])\nprint('started long', flush=True)\ntime.sleep(300)")
	<-started
	// The short run ends when the test says so, after SIGTERM: till then
	// it keeps the third run queued.
	short := runAsync("short", "import os, time\nprint('started short in', os.getcwd(), flush=True)\nwhile not os.path.exists('go'):\n    time.sleep(0.01)\nprint('finished')")
	_, cwd, _ := strings.Cut(strings.TrimSpace(<-started), "started short in ")
	waiting := runAsync("waiting", "print('never')")
	<-queued

	pids := descendants(cmd.Process.Pid)
	if len(pids) < 3 { // two pythons and the sleep
		for _, p := range pids {
			t.Logf("pid %d %s", p, comm(p))
		}
		t.Fatalf("descendants of the server: %v, want the runs' processes", pids)
	}
	ws, _ := filepath.Glob(filepath.Join(tmp, "prims-ws-*"))
	if len(ws) != 1 {
		t.Fatalf("workspaces: %v, want one", ws)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if r := <-waiting; r.err != nil || !r.res.IsError || !strings.Contains(text(r.res), "the server is shutting down") || strings.Contains(text(r.res), "Try again") {
		t.Errorf("the queued run was not told the server is shutting down: %v %s", r.err, text(r.res))
	}
	// The long run holds the drain open: /readyz must answer, with 503.
	for {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			t.Fatalf("/readyz while draining: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable {
			break
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/readyz while draining: %s", resp.Status)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := os.WriteFile(filepath.Join(cwd, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := <-short; r.err != nil || r.res.IsError || !strings.Contains(text(r.res), "finished") {
		t.Errorf("the short run did not finish within the grace period: %v %s", r.err, text(r.res))
	}
	if r := <-long; r.err == nil && !r.res.IsError {
		t.Errorf("the long run was not stopped: %s", text(r.res))
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("prims serve exited with %v after SIGTERM, want 0", err)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("process %d (%s) outlived the server", pid, comm(pid))
		}
	}
	if ws, _ := filepath.Glob(filepath.Join(tmp, "prims-ws-*")); len(ws) != 0 {
		t.Errorf("workspaces left after shutdown: %v", ws)
	}
	if !strings.Contains(logs.String(), "grace period over") {
		t.Errorf("the log does not say the long run was killed at the end of the grace period")
	}
}

func text(res *sdk.CallToolResult) string {
	if res == nil {
		return ""
	}
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*sdk.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

// descendants lists the processes below pid, from /proc.
func descendants(pid int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, ok := ppid(p); ok {
			children[pp] = append(children[pp], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// stat returns the fields of /proc/pid/stat after the command name.
func stat(pid int) ([]string, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, false
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil, false
	}
	return strings.Fields(string(b[i+1:])), true
}

func ppid(pid int) (int, bool) {
	f, ok := stat(pid)
	if !ok || len(f) < 2 {
		return 0, false
	}
	p, err := strconv.Atoi(f[1])
	return p, err == nil
}

// alive reports whether pid exists and is not a zombie waiting for a reaper.
func alive(pid int) bool {
	f, ok := stat(pid)
	return ok && len(f) > 0 && f[0] != "Z"
}

func comm(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}
