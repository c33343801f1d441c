package mcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/internal/testenv"
	"github.com/prims-mcp/prims/internal/testpython"
	"github.com/prims-mcp/prims/sandbox"
	"github.com/prims-mcp/prims/sandbox/sandboxtest"
	"github.com/prims-mcp/prims/workspace"
)

// Both protocol generations a client may speak today.
var protocols = []string{"2026-07-28", "2025-11-25"}

type testEnv struct {
	srv      *Server
	cs       *sdk.ClientSession
	mu       sync.Mutex
	progress []progressEvent
	returned atomic.Bool // set once the current CallTool has returned
}

type progressEvent struct {
	msg           string
	beforeResult  bool
	progressValue float64
}

func (e *testEnv) events() []progressEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]progressEvent(nil), e.progress...)
}

// start connects an SDK client to a fresh server over in-memory pipes.
func start(t testing.TB, version string, cfg Config) *testEnv {
	t.Helper()
	return startRunner(t, version, sandbox.Config{}, cfg)
}

// startRunner is start with a runner of rcfg; version "" takes the SDK's
// default protocol.
func startRunner(t testing.TB, version string, rcfg sandbox.Config, cfg Config) *testEnv {
	t.Helper()
	if cfg.Python == "" {
		cfg.Python = testpython.Path(t)
	}
	runner, err := sandbox.New(rcfg)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, runner)
	if err != nil {
		t.Fatal(err)
	}
	env := &testEnv{srv: srv}
	ct, st := sdk.NewInMemoryTransports()
	ctx, cancel := context.WithCancel(context.Background())
	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.Serve(ctx, st) }()
	client := sdk.NewClient(&sdk.Implementation{Name: "test", Version: "1"}, &sdk.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, req *sdk.ProgressNotificationClientRequest) {
			env.mu.Lock()
			env.progress = append(env.progress, progressEvent{req.Params.Message, !env.returned.Load(), req.Params.Progress})
			env.mu.Unlock()
		},
	})
	var opts *sdk.ClientSessionOptions
	if version != "" {
		opts = &sdk.ClientSessionOptions{ProtocolVersion: version}
	}
	cs, err := client.Connect(ctx, ct, opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := cs.InitializeResult().ProtocolVersion; version != "" && got != version {
		t.Fatalf("negotiated protocol %s, want %s", got, version)
	}
	env.cs = cs
	t.Cleanup(func() {
		cs.Close()
		cancel()
		<-serveDone
		srv.Close()
		runner.Close()
	})
	return env
}

// call runs a tool and decodes its structured result into out (if non-nil).
func (e *testEnv) call(t testing.TB, ctx context.Context, name string, args any, out any) *sdk.CallToolResult {
	t.Helper()
	e.returned.Store(false)
	params := &sdk.CallToolParams{Name: name, Arguments: args}
	params.SetProgressToken("tok-" + name)
	res, err := e.cs.CallTool(ctx, params)
	e.returned.Store(true)
	if err != nil {
		t.Fatalf("%s: protocol error: %v", name, err)
	}
	if out != nil && res.StructuredContent != nil {
		b, _ := json.Marshal(res.StructuredContent)
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s: decode structured result: %v", name, err)
		}
	}
	return res
}

func text(res *sdk.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*sdk.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

func forEachProtocol(t *testing.T, f func(t *testing.T, version string)) {
	for _, v := range protocols {
		t.Run(v, func(t *testing.T) { f(t, v) })
	}
}

func TestToolsAndPrompt(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, v string) {
		env := start(t, v, Config{})
		ctx := context.Background()
		tools, err := env.cs.ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tool := range tools.Tools {
			names = append(names, tool.Name)
			if tool.Description == "" || tool.InputSchema == nil || tool.OutputSchema == nil || tool.Annotations == nil {
				t.Errorf("%s lacks a description, schema or annotations", tool.Name)
			}
		}
		want := []string{"cancel_run", "drop_state", "get_run", "list_dir", "mount_file", "persist_artifact", "preview_file", "run_code"}
		if diff := cmp.Diff(want, names, sortStrings); diff != "" {
			t.Errorf("tools (-want +got):\n%s", diff)
		}
		p, err := env.cs.GetPrompt(ctx, &sdk.GetPromptParams{Name: "python_programmer", Arguments: map[string]string{"task": "sum 1..10", "files": "mounts/x.csv"}})
		if err != nil {
			t.Fatal(err)
		}
		msg := p.Messages[0].Content.(*sdk.TextContent).Text
		for _, s := range []string{"sum 1..10", "mounts/x.csv", "output/"} {
			if !strings.Contains(msg, s) {
				t.Errorf("prompt lacks %q", s)
			}
		}
	})
}

var sortStrings = cmpopts.SortSlices(func(a, b string) bool { return a < b })

func TestRunCode(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, v string) {
		env := start(t, v, Config{})
		ctx := context.Background()
		tests := []struct {
			name      string
			code      string
			wantExit  int
			wantErr   bool
			stdout    string // substring
			stderr    string // substring
			artifacts []string
		}{
			{name: "hello", code: "print('hello')", stdout: "hello\n"},
			{name: "exit code", code: "import sys; print('bye'); sys.exit(3)", wantExit: 3, wantErr: true, stdout: "bye"},
			{name: "traceback", code: "def f():\n    return 1/0\nf()\n", wantExit: 1, wantErr: true, stderr: "-code.py\", line 2, in f\n    return 1/0"},
			{name: "syntax error", code: "x = (", wantExit: 1, wantErr: true, stderr: "SyntaxError"},
			{name: "binary output", code: "import sys; sys.stdout.buffer.write(bytes(range(256))); sys.stdout.flush()", stdout: "\uFFFD"},
			{name: "writes output", code: "open('output/a.txt','w').write('a'); open('scratch.txt','w').write('b')", artifacts: []string{"output/a.txt"}},
			{name: "stdin is empty", code: "import sys; print(repr(sys.stdin.read()))", stdout: "''"},
			{name: "killed by signal", code: "import os, signal; os.kill(os.getpid(), signal.SIGKILL)", wantExit: -9, wantErr: true},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				var out RunOutput
				res := env.call(t, ctx, "run_code", map[string]any{"code": tt.code}, &out)
				if res.IsError != tt.wantErr || out.ExitCode != tt.wantExit {
					t.Errorf("isError=%v exit=%d, want %v %d\n%s", res.IsError, out.ExitCode, tt.wantErr, tt.wantExit, text(res))
				}
				if !strings.Contains(out.Stdout, tt.stdout) || !strings.Contains(out.Stderr, tt.stderr) {
					t.Errorf("stdout %q stderr %q; want %q and %q", out.Stdout, out.Stderr, tt.stdout, tt.stderr)
				}
				var arts []string
				for _, a := range out.Artifacts {
					arts = append(arts, a.Path)
				}
				if diff := cmp.Diff(tt.artifacts, arts); diff != "" {
					t.Errorf("artifacts (-want +got):\n%s", diff)
				}
				if out.Isolation == "" || out.StdoutLog == "" {
					t.Errorf("missing isolation or log path: %+v", out)
				}
				if !strings.Contains(text(res), fmt.Sprintf("Exit code %d", tt.wantExit)) && tt.wantExit >= 0 {
					t.Errorf("summary does not state the exit code:\n%s", text(res))
				}
			})
		}
	})
}

func TestRunSharesWorkspaceNotState(t *testing.T) {
	env := start(t, protocols[0], Config{})
	ctx := context.Background()
	env.call(t, ctx, "run_code", map[string]any{"code": "x = 42\nopen('state.txt','w').write('kept')"}, nil)
	var out RunOutput
	env.call(t, ctx, "run_code", map[string]any{"code": "print(open('state.txt').read()); print('x' in globals())"}, &out)
	if out.Stdout != "kept\nFalse\n" {
		t.Errorf("second run saw %q, want the file but not the variable", out.Stdout)
	}
}

func TestRunEnvironmentIsScrubbed(t *testing.T) {
	t.Setenv("PRIMS_TEST_SECRET", "hunter2")
	env := start(t, protocols[0], Config{})
	var out RunOutput
	env.call(t, context.Background(), "run_code", map[string]any{"code": `import os, json; print(json.dumps(dict(os.environ)))`}, &out)
	var got map[string]string
	if err := json.Unmarshal([]byte(out.Stdout), &got); err != nil {
		t.Fatalf("%v: %q", err, out.Stdout)
	}
	if _, ok := got["PRIMS_TEST_SECRET"]; ok {
		t.Error("the server's environment leaked into the run")
	}
	ws := env.srv.Workspace()
	if got["PYTHONUNBUFFERED"] != "1" || got["MPLBACKEND"] != "Agg" || !strings.HasPrefix(got["HOME"], ws) {
		t.Errorf("unexpected environment: %v", got)
	}
}

func TestProgressStreamsBeforeResult(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, v string) {
		env := start(t, v, Config{})
		var out RunOutput
		code := "import sys, time\nprint('first line')\nprint('to stderr', file=sys.stderr)\ntime.sleep(1)\nprint('last line')"
		env.call(t, context.Background(), "run_code", map[string]any{"code": code}, &out)
		var early []string
		var all strings.Builder
		last := 0.0
		for _, e := range env.events() {
			if e.progressValue <= last {
				t.Errorf("progress did not increase: %v after %v", e.progressValue, last)
			}
			last = e.progressValue
			all.WriteString(e.msg + "\n")
			if e.beforeResult {
				early = append(early, e.msg)
			}
		}
		joined := strings.Join(early, "\n")
		if !strings.Contains(joined, "stdout: first line") || !strings.Contains(joined, "stderr: to stderr") {
			t.Errorf("no streamed output before the result; events:\n%s", all.String())
		}
		if out.Stdout != "first line\nlast line\n" {
			t.Errorf("stdout = %q", out.Stdout)
		}
	})
}

func TestHeartbeatDuringSilentRun(t *testing.T) {
	env := start(t, protocols[1], Config{Heartbeat: 300 * time.Millisecond})
	env.call(t, context.Background(), "run_code", map[string]any{"code": "import time; time.sleep(1.5)"}, nil)
	beats := 0
	for _, e := range env.events() {
		if strings.HasPrefix(e.msg, "still running") && e.beforeResult {
			beats++
		}
	}
	if beats < 2 {
		t.Errorf("got %d heartbeats during a silent 1.5 s run with a 300 ms heartbeat, want at least 2", beats)
	}
}

func TestTimeoutKeepsPartialOutput(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, v string) {
		env := start(t, v, Config{})
		var out RunOutput
		res := env.call(t, context.Background(), "run_code", map[string]any{
			"code":      "import time\nprint('before', flush=True)\ntime.sleep(60)\nprint('after')",
			"timeout_s": 1,
		}, &out)
		if !out.TimedOut || !res.IsError || out.Stdout != "before\n" {
			t.Errorf("timed_out=%v isError=%v stdout=%q", out.TimedOut, res.IsError, out.Stdout)
		}
		if !strings.Contains(text(res), "Timed out") || !strings.Contains(out.Hint, "timeout_s") {
			t.Errorf("summary/hint do not explain the timeout:\n%s", text(res))
		}
	})
}

func TestTimeoutAboveMaximumIsLowered(t *testing.T) {
	env := start(t, protocols[0], Config{MaxTimeout: 2 * time.Second})
	res := env.call(t, context.Background(), "run_code", map[string]any{"code": "print(1)", "timeout_s": 3600}, nil)
	if res.IsError || !strings.Contains(text(res), "lowered to the server's maximum") {
		t.Errorf("result:\n%s", text(res))
	}
}

// treeCode starts two children and a grandchild that sleep with token in
// their argv, then says "ready" and sleeps.
func treeCode(token string) string {
	return fmt.Sprintf(`
import subprocess, sys, time
TOKEN = %q
sleeper = [sys.executable, "-c", "import time; time.sleep(300)", TOKEN]
procs = [subprocess.Popen(sleeper) for _ in range(2)]
deep = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen(sys.argv[1:]); time.sleep(300)"] + sleeper)
time.sleep(0.5)
print('ready', flush=True)
time.sleep(300)
`, token)
}

// waitTree waits until the run's three sleepers are up, proving the probe.
func waitTree(t *testing.T, token string) {
	t.Helper()
	waitFor(t, func() bool { return len(sandboxtest.Procs(token)) >= 3 })
}

func TestCancelKillsProcessTree(t *testing.T) {
	if runtime.GOOS != "linux" {
		testenv.Skip(t, testenv.Proc, "uses /proc")
	}
	forEachProtocol(t, func(t *testing.T, v string) {
		env := start(t, v, Config{})
		token := sandboxtest.Token(t)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			params := &sdk.CallToolParams{Name: "run_code", Arguments: map[string]any{"code": treeCode(token)}}
			params.SetProgressToken("cancel-me")
			_, err := env.cs.CallTool(ctx, params)
			done <- err
		}()
		waitFor(t, func() bool {
			for _, e := range env.events() {
				if strings.Contains(e.msg, "ready") {
					return true
				}
			}
			return false
		})
		waitTree(t, token)
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("CallTool after cancel: %v", err)
		}
		sandboxtest.WaitGone(t, token)
		// The server still serves.
		var out RunOutput
		env.call(t, context.Background(), "run_code", map[string]any{"code": "print('alive')"}, &out)
		if out.Stdout != "alive\n" {
			t.Errorf("server did not serve after a cancellation: %q", out.Stdout)
		}
	})
}

func TestTimeoutKillsProcessTree(t *testing.T) {
	if runtime.GOOS != "linux" {
		testenv.Skip(t, testenv.Proc, "uses /proc")
	}
	env := start(t, protocols[0], Config{})
	token := sandboxtest.Token(t)
	var out RunOutput
	env.call(t, context.Background(), "run_code", map[string]any{"code": treeCode(token), "timeout_s": 3}, &out)
	if !out.TimedOut || !strings.Contains(out.Stdout, "ready") {
		t.Fatalf("timed_out=%v stdout=%q stderr=%q", out.TimedOut, out.Stdout, out.Stderr)
	}
	sandboxtest.WaitGone(t, token)
}

func TestCloseKillsRunsAndRemovesWorkspace(t *testing.T) {
	if runtime.GOOS != "linux" {
		testenv.Skip(t, testenv.Proc, "uses /proc")
	}
	env := start(t, protocols[0], Config{})
	token := sandboxtest.Token(t)
	go func() {
		params := &sdk.CallToolParams{Name: "run_code", Arguments: map[string]any{"code": treeCode(token)}}
		params.SetProgressToken("close-me")
		env.cs.CallTool(context.Background(), params)
	}()
	waitFor(t, func() bool {
		for _, e := range env.events() {
			if strings.Contains(e.msg, "ready") {
				return true
			}
		}
		return false
	})
	waitTree(t, token)
	ws := env.srv.Workspace()
	if err := env.srv.Close(); err != nil {
		t.Fatal(err)
	}
	sandboxtest.WaitGone(t, token)
	if _, err := os.Stat(ws); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("workspace survived Close: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOutputFloodKeepsMemoryFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("prints 1 GiB")
	}
	env := start(t, protocols[0], Config{LogLimit: 8 << 20})
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > peak.Load() {
					peak.Store(ms.HeapInuse)
				}
			}
		}
	}()
	var out RunOutput
	code := "import sys\nchunk = b'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.buffer.write(chunk)\nsys.stdout.flush()\nprint('done', file=sys.stderr)"
	env.call(t, context.Background(), "run_code", map[string]any{"code": code, "timeout_s": 300}, &out)
	close(stop)
	<-sampled
	if out.StdoutBytes != 1<<30 || !out.Truncated || out.ExitCode != 0 {
		t.Errorf("stdout_bytes=%d truncated=%v exit=%d", out.StdoutBytes, out.Truncated, out.ExitCode)
	}
	if len(out.Stdout) > 40<<10 {
		t.Errorf("inline stdout is %d bytes", len(out.Stdout))
	}
	if growth := int64(peak.Load()) - int64(base); growth > 64<<20 {
		t.Errorf("heap grew by %d MiB while streaming 1 GiB", growth>>20)
	}
	fi, err := os.Stat(filepath.Join(env.srv.Workspace(), out.StdoutLog))
	if err != nil || fi.Size() > 9<<20 {
		t.Errorf("log: %v, size %d", err, fi.Size())
	}
	t.Logf("heap in use: base %d MiB, peak %d MiB", base>>20, peak.Load()>>20)
}

func TestLogKeepsCompleteStream(t *testing.T) {
	env := start(t, protocols[0], Config{OutputBudget: 100})
	var out RunOutput
	env.call(t, context.Background(), "run_code", map[string]any{"code": "for i in range(1000): print(i)"}, &out)
	if !out.Truncated || !strings.Contains(out.Stdout, "bytes omitted") {
		t.Errorf("truncated=%v stdout=%q", out.Truncated, out.Stdout)
	}
	// Page through the log with preview_file and reassemble it.
	var all strings.Builder
	offset := int64(0)
	for {
		var p struct {
			Text       string `json:"text"`
			NextOffset int64  `json:"next_offset"`
			EOF        bool   `json:"eof"`
		}
		res := env.call(t, context.Background(), "preview_file", map[string]any{"path": out.StdoutLog, "offset": offset}, &p)
		if res.IsError {
			t.Fatal(text(res))
		}
		all.WriteString(p.Text)
		if p.EOF {
			break
		}
		offset = p.NextOffset
	}
	var want strings.Builder
	for i := range 1000 {
		fmt.Fprintln(&want, i)
	}
	if all.String() != want.String() {
		t.Errorf("log does not hold the complete stream (%d bytes)", all.Len())
	}
}

func TestBadInput(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, v string) {
		env := start(t, v, Config{})
		ctx := context.Background()
		env.call(t, ctx, "run_code", map[string]any{"code": "open('output/keep.txt','w').write('safe')"}, nil)
		tests := []struct {
			tool string
			args any
			want string
		}{
			{"run_code", map[string]any{}, "code"},
			{"run_code", map[string]any{"code": 42}, "code"},
			{"run_code", map[string]any{"code": "print(1)", "timeout_s": "soon"}, "timeout_s"},
			{"run_code", map[string]any{"code": "   "}, "empty"},
			{"run_code", map[string]any{"code": strings.Repeat("#", 10<<20)}, "limit"},
			{"run_code", map[string]any{"code": "print(1)", "timeout_s": -1}, "negative"},
			{"run_code", map[string]any{"code": "print(1)", "files": []any{map[string]any{"url": "file:///etc/passwd", "mount_path": "p"}}}, "scheme"},
			{"mount_file", map[string]any{"url": "http://127.0.0.1:1/x", "mount_path": "x"}, "--allow-private-fetch"}, // a loopback URL is refused before any connection
			{"mount_file", map[string]any{"url": "https://example.com/x", "mount_path": "../../etc/x"}, "leaves the workspace"},
			{"list_dir", map[string]any{"path": "/etc"}, "absolute"},
			{"list_dir", map[string]any{"path": "../.."}, "leaves the workspace"},
			{"preview_file", map[string]any{"path": "/etc/passwd"}, "absolute"},
			{"preview_file", map[string]any{"path": "output/../../x"}, "leaves the workspace"},
			{"preview_file", map[string]any{"path": "output"}, "directory"},
			{"preview_file", map[string]any{"path": "nope.txt"}, "no such file"},
			{"persist_artifact", map[string]any{"path": "logs/0001-stdout.txt", "presigned_url": "http://127.0.0.1:1/x"}, "not under output/"},
			{"persist_artifact", map[string]any{"path": "output/keep.txt", "presigned_url": "gopher://x/y"}, "scheme"},
		}
		for _, tt := range tests {
			res := env.call(t, ctx, tt.tool, tt.args, nil)
			if !res.IsError || !strings.Contains(text(res), tt.want) {
				t.Errorf("%s(%.80v): isError=%v %q, want an error mentioning %q", tt.tool, tt.args, res.IsError, text(res), tt.want)
			}
			if ws := env.srv.Workspace(); ws != "" && strings.Contains(text(res), ws) {
				t.Errorf("%s error reveals the host path: %s", tt.tool, text(res))
			}
		}
		// The server still serves and the workspace is intact.
		var out RunOutput
		env.call(t, ctx, "run_code", map[string]any{"code": "print(open('output/keep.txt').read())"}, &out)
		if out.Stdout != "safe\n" {
			t.Errorf("after bad input: %q", out.Stdout)
		}
	})
}

func TestFileTools(t *testing.T) {
	var uploaded atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
			io.WriteString(w, "name,score\nada,10\n")
		case http.MethodPut:
			b, _ := io.ReadAll(r.Body)
			uploaded.Store(r.Header.Get("Content-Type") + "|" + string(b))
			w.WriteHeader(http.StatusCreated)
		}
	}))
	defer srv.Close()
	forEachProtocol(t, func(t *testing.T, v string) {
		// By default the server refuses loopback destinations (issue 12):
		// the model is told why and what to do.
		ctx := context.Background()
		def := start(t, v, Config{})
		for _, tt := range []struct {
			tool string
			args map[string]any
		}{
			{"mount_file", map[string]any{"url": srv.URL + "/scores.csv", "mount_path": "s.csv"}},
			{"run_code", map[string]any{"code": "print(1)", "files": []any{map[string]any{"url": srv.URL + "/a.csv", "mount_path": "a.csv"}}}},
		} {
			res := def.call(t, ctx, tt.tool, tt.args, nil)
			if !res.IsError || !strings.Contains(text(res), "--allow-private-fetch") {
				t.Errorf("%s from a loopback URL by default: %s", tt.tool, text(res))
			}
		}

		env := start(t, v, Config{Transfer: workspace.Limits{AllowPrivate: true}})
		var m MountOutput
		res := env.call(t, ctx, "mount_file", map[string]any{"url": srv.URL + "/scores.csv", "mount_path": "data/scores.csv"}, &m)
		if res.IsError || m.Path != "mounts/data/scores.csv" || m.Size != 18 {
			t.Fatalf("mount_file: %+v %s", m, text(res))
		}
		var out RunOutput
		code := "import csv\nrows = list(csv.DictReader(open('mounts/data/scores.csv')))\nprint(rows[0]['name'])\nopen('output/report.txt','w').write('ada wins')\ntry:\n    open('mounts/data/scores.csv','w')\nexcept OSError as e:\n    print('read-only')"
		res = env.call(t, ctx, "run_code", map[string]any{"code": code, "files": []any{map[string]any{"url": srv.URL + "/again.csv", "mount_path": "again.csv"}}}, &out)
		wantOut := "ada\nread-only\n"
		if out.Isolation == "none" && os.Geteuid() == 0 {
			wantOut = "ada\n" // without a sandbox, root may write anything
		}
		if out.Stdout != wantOut || len(out.Artifacts) != 1 || out.Artifacts[0].Path != "output/report.txt" {
			t.Errorf("run: %+v\n%s", out, text(res))
		}

		var ls ListOutput
		env.call(t, ctx, "list_dir", map[string]any{}, &ls)
		var names []string
		for _, e := range ls.Entries {
			names = append(names, e.Name)
		}
		for _, want := range []string{"mounts", "output", "logs"} {
			if !strings.Contains(strings.Join(names, " "), want) {
				t.Errorf("root listing lacks %s: %v", want, names)
			}
		}
		env.call(t, ctx, "list_dir", map[string]any{"path": "mounts"}, &ls)
		if len(ls.Entries) != 2 {
			t.Errorf("mounts/ = %+v", ls.Entries)
		}

		var p struct {
			Text string `json:"text"`
			EOF  bool   `json:"eof"`
		}
		env.call(t, ctx, "preview_file", map[string]any{"path": "output/report.txt"}, &p)
		if p.Text != "ada wins" || !p.EOF {
			t.Errorf("preview = %+v", p)
		}

		res = env.call(t, ctx, "persist_artifact", map[string]any{"path": "output/report.txt", "presigned_url": srv.URL + "/bucket/report.txt?sig=x"}, nil)
		if res.IsError || uploaded.Load() != "text/plain; charset=utf-8|ada wins" {
			t.Errorf("persist: %v %s", uploaded.Load(), text(res))
		}
	})
}

func TestSymlinksPlantedByCodeAreNotFollowed(t *testing.T) {
	env := start(t, protocols[0], Config{})
	ctx := context.Background()
	secret := filepath.Join(t.TempDir(), "secret.txt")
	os.WriteFile(secret, []byte("top secret"), 0o600)
	code := fmt.Sprintf("import os\nos.symlink(%q, 'output/leak.txt')\nos.symlink('/', 'output/rootdir')", secret)
	env.call(t, ctx, "run_code", map[string]any{"code": code}, nil)
	for _, tt := range []struct {
		tool string
		args map[string]any
	}{
		{"preview_file", map[string]any{"path": "output/leak.txt"}},
		{"preview_file", map[string]any{"path": "output/rootdir/etc/passwd"}},
		{"list_dir", map[string]any{"path": "output/rootdir"}},
		{"persist_artifact", map[string]any{"path": "output/leak.txt", "presigned_url": "http://127.0.0.1:1/x"}},
	} {
		res := env.call(t, ctx, tt.tool, tt.args, nil)
		if !res.IsError || strings.Contains(text(res), "top secret") || !strings.Contains(text(res), "symlink") {
			t.Errorf("%s(%v) = %q", tt.tool, tt.args, text(res))
		}
	}
}

// TestPrewarm: the stdio server readies a sandbox for the first run before
// any call, so the first run_code is warm, and later runs stay warm.
func TestPrewarm(t *testing.T) {
	runner, err := sandbox.New(sandbox.Config{Warm: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer runner.Close()
	srv, err := New(Config{Python: testpython.Path(t)}, runner)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv.Prewarm()
	// A waiting sandbox, or in the namespaces tier a zygote to fork one.
	ready := func() bool { st := runner.PoolStats(); return st.Waiting+st.Zygotes > 0 }
	deadline := time.Now().Add(30 * time.Second)
	for !ready() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !ready() {
		t.Fatal("no sandbox is waiting 30 s after Prewarm")
	}
	ct, st := sdk.NewInMemoryTransports()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx, st)
	cs, err := sdk.NewClient(&sdk.Implementation{Name: "test", Version: "1"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	for i := range 2 {
		res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "run_code", Arguments: map[string]any{"code": "print(1)"}})
		if err != nil || res.IsError {
			t.Fatalf("run %d: %v %+v", i, err, res)
		}
		var out RunOutput
		b, _ := json.Marshal(res.StructuredContent)
		json.Unmarshal(b, &out)
		if !out.Warm || out.Stdout != "1\n" {
			t.Errorf("run %d: warm %v, stdout %q; want a warm run that prints 1", i, out.Warm, out.Stdout)
		}
		for !ready() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
}
