package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/internal/testpython"
	"github.com/prims-mcp/prims/sandbox"
	"github.com/prims-mcp/prims/sandbox/sandboxtest"
)

// TestMain lets the test binary stand in for the prims binary: tests start
// it as a child with PRIMS_TEST_AS_PRIMS=1 and real pipes, so no build step
// and no shell are needed.
func TestMain(m *testing.M) {
	sandbox.MaybeInit()
	if os.Getenv("PRIMS_TEST_AS_PRIMS") == "1" {
		os.Exit(run(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// primsCmd returns a command that runs this test binary as prims.
func primsCmd(t testing.TB, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), "PRIMS_TEST_AS_PRIMS=1")
	return cmd
}

func TestRunCommand(t *testing.T) {
	py := testpython.Path(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "script.py")
	os.WriteFile(script, []byte("import sys\nprint(__file__, sys.argv)\ndef f():\n    raise ValueError('boom')\nif sys.argv[1:] == ['fail']:\n    f()\n"), 0o644)
	tests := []struct {
		name     string
		args     []string
		stdin    string
		wantCode int
		stdout   string
		stderr   string
	}{
		{name: "code", args: []string{"run", "--python", py, "-c", "print(6*7)"}, stdout: "42\n"},
		{name: "exit status", args: []string{"run", "--python", py, "-c", "import sys; sys.exit(5)"}, wantCode: 5},
		{name: "stdin program", args: []string{"run", "--python", py, "-"}, stdin: "print('from stdin')", stdout: "from stdin\n"},
		{name: "timeout", args: []string{"run", "--python", py, "--timeout", "500ms", "-c", "import time; time.sleep(30)"}, wantCode: 124, stderr: "timed out"},
		{name: "traceback", args: []string{"run", "--python", py, "-c", "1/0"}, wantCode: 1, stderr: "ZeroDivisionError"},
		{name: "nothing to run", args: []string{"run"}, wantCode: 1, stderr: "nothing to run"},
		{name: "bad python", args: []string{"run", "--python", "/nonexistent/python", "-c", "1"}, wantCode: 1, stderr: "find Python"},
		{name: "version", args: []string{"version"}, stdout: "prims "},
		// prims run FILE ARGS... is python FILE ARGS...: __file__ is FILE's
		// absolute path, sys.argv[0] FILE as typed, ARGS (flags too) the
		// program's, and tracebacks name FILE and show its lines.
		{name: "file and args", args: []string{"run", "--python", py, script, "a", "--b", "-c", "x"}, stdout: script + " ['" + script + "', 'a', '--b', '-c', 'x']\n"},
		{name: "file traceback", args: []string{"run", "--python", py, script, "fail"}, wantCode: 1, stderr: "File \"" + script + "\", line 4, in f\n    raise ValueError('boom')\nValueError: boom"},
		{name: "code and args", args: []string{"run", "--python", py, "-c", "import sys; print(sys.argv)", "x", "--y"}, stdout: "['-c', 'x', '--y']\n"},
		{name: "stdin and args", args: []string{"run", "--python", py, "-", "q"}, stdin: "import sys; print(sys.argv)", stdout: "['-', 'q']\n"},
		{name: "code traceback shows lines", args: []string{"run", "--python", py, "-c", "x = 1\n1/0"}, wantCode: 1, stderr: "line 2, in <module>\n    1/0"},
		{name: "empty code", args: []string{"run", "--python", py, "-c", ""}, wantCode: 1, stderr: "-c needs the program text"},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: 1, stderr: "unknown command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := primsCmd(t, tt.args...)
			cmd.Stdin = strings.NewReader(tt.stdin)
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.wantCode || !strings.Contains(stdout.String(), tt.stdout) || !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, %q, %q", code, stdout.String(), stderr.String(), tt.wantCode, tt.stdout, tt.stderr)
			}
		})
	}
}

// TestStdioSDKClient drives the real server process over its stdin and
// stdout with the SDK's client, on both protocol generations.
func TestStdioSDKClient(t *testing.T) {
	py := testpython.Path(t)
	for _, version := range []string{"2026-07-28", "2025-11-25"} {
		t.Run(version, func(t *testing.T) {
			ctx := context.Background()
			cmd := primsCmd(t, "stdio", "--python", py)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			var progress []string
			client := sdk.NewClient(&sdk.Implementation{Name: "test"}, &sdk.ClientOptions{
				ProgressNotificationHandler: func(_ context.Context, r *sdk.ProgressNotificationClientRequest) {
					progress = append(progress, r.Params.Message)
				},
			})
			cs, err := client.Connect(ctx, &sdk.CommandTransport{Command: cmd}, &sdk.ClientSessionOptions{ProtocolVersion: version})
			if err != nil {
				t.Fatal(err)
			}
			params := &sdk.CallToolParams{Name: "run_code", Arguments: map[string]any{"code": "import os\nprint('pid', os.getpid())\nopen('output/x.txt','w').write('x')"}}
			params.SetProgressToken(1)
			res, err := cs.CallTool(ctx, params)
			if err != nil {
				t.Fatal(err)
			}
			sc, _ := json.Marshal(res.StructuredContent)
			var out struct {
				ExitCode  int    `json:"exit_code"`
				Stdout    string `json:"stdout"`
				Artifacts []struct {
					Path string `json:"path"`
				} `json:"artifacts"`
			}
			json.Unmarshal(sc, &out)
			if out.ExitCode != 0 || !strings.HasPrefix(out.Stdout, "pid ") || len(out.Artifacts) != 1 {
				t.Errorf("result: %s", sc)
			}
			if err := cs.Close(); err != nil {
				t.Logf("close: %v", err)
			}
			if strings.Contains(stderr.String(), "panic") {
				t.Errorf("server stderr:\n%s", stderr.String())
			}
		})
	}
}

// rawClient speaks newline-delimited JSON-RPC as a non-Go client does.
type rawClient struct {
	t     *testing.T
	in    io.WriteCloser
	pipe  io.ReadCloser // what out reads
	out   *bufio.Scanner
	lines []map[string]any // everything read so far
}

func (c *rawClient) send(msg string) {
	c.t.Helper()
	if _, err := io.WriteString(c.in, msg+"\n"); err != nil {
		c.t.Fatal(err)
	}
}

// until reads messages until one has the given id, returning it and the
// messages that came before it.
func (c *rawClient) until(id float64) (map[string]any, []map[string]any) {
	c.t.Helper()
	var before []map[string]any
	for c.out.Scan() {
		var m map[string]any
		if err := json.Unmarshal(c.out.Bytes(), &m); err != nil {
			c.t.Fatalf("server wrote a non-JSON line to stdout: %q", c.out.Text())
		}
		c.lines = append(c.lines, m)
		if got, ok := m["id"].(float64); ok && got == id {
			return m, before
		}
		before = append(before, m)
	}
	c.t.Fatalf("stdout ended before response %v: %v", id, c.out.Err())
	return nil, nil
}

func startRaw(t *testing.T, args ...string) (*rawClient, *exec.Cmd, *strings.Builder) {
	cmd := primsCmd(t, args...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &strings.Builder{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	return &rawClient{t: t, in: in, pipe: out, out: sc}, cmd, stderr
}

// TestStdioRawJSONRPC is a client written by hand, as a non-Go agent would
// speak: the 2025-11-25 initialize handshake, or 2026-07-28's server/discover
// with the protocol version in every request's _meta. It lists tools, calls
// run_code with a progress token, sends bad input, and ends with stdin EOF.
func TestStdioRawJSONRPC(t *testing.T) {
	py := testpython.Path(t)
	tests := []struct {
		version   string
		handshake []string // requests before tools/list; the last one has id 1
		meta      string   // _meta members every request carries
	}{
		{
			version: "2025-11-25",
			handshake: []string{
				`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}`,
			},
		},
		{
			version: "2026-07-28",
			handshake: []string{
				`{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"raw","version":"0"},"io.modelcontextprotocol/clientCapabilities":{}}}}`,
			},
			meta: `"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"raw","version":"0"},"io.modelcontextprotocol/clientCapabilities":{},`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.version, func(t *testing.T) {
			ws := filepath.Join(t.TempDir(), "kept")
			c, cmd, stderr := startRaw(t, "stdio", "--python", py, "--workspace", ws)
			for _, line := range tt.handshake {
				c.send(line)
			}
			hello, _ := c.until(1)
			if hello["error"] != nil {
				t.Fatalf("handshake: %v", hello["error"])
			}
			if tt.version == "2025-11-25" {
				if v := hello["result"].(map[string]any)["protocolVersion"]; v != tt.version {
					t.Fatalf("negotiated %v", v)
				}
				c.send(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
			}
			meta := func(extra string) string { return `"_meta":{` + tt.meta + extra + `}` }
			c.send(`{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{` + meta(`"x":0`) + `}}`)
			tools, _ := c.until(2)
			if r, ok := tools["result"].(map[string]any); !ok || len(r["tools"].([]any)) < 5 {
				t.Fatalf("tools/list: %v", tools)
			}
			c.send(`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"run_code","arguments":{"code":"import time\nprint('tick', flush=True)\ntime.sleep(0.5)\nprint('\\u00e9t\\u00e9')"},` + meta(`"progressToken":"p1"`) + `}}`)
			resp, before := c.until(3)
			var sawProgress bool
			for _, m := range before {
				if m["method"] == "notifications/progress" && strings.Contains(fmt.Sprint(m["params"]), "tick") {
					sawProgress = true
				}
			}
			if !sawProgress {
				t.Errorf("no progress notification with the output before the result; got %v", before)
			}
			sc := resp["result"].(map[string]any)["structuredContent"].(map[string]any)
			if sc["stdout"] != "tick\nété\n" || sc["exit_code"] != 0.0 {
				t.Errorf("structured result: %v", sc)
			}
			// Wrong-typed arguments: an error, and the server keeps serving.
			c.send(`{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"run_code","arguments":{"code":["not","a","string"]},` + meta(`"x":0`) + `}}`)
			bad, _ := c.until(4)
			if r, ok := bad["result"].(map[string]any); (!ok || r["isError"] != true) && bad["error"] == nil {
				t.Errorf("wrong-typed code accepted: %v", bad)
			}
			c.send(`{"jsonrpc":"2.0","id":5,"method":"no/such/method","params":{` + meta(`"x":0`) + `}}`)
			if unknown, _ := c.until(5); unknown["error"] == nil {
				t.Errorf("unknown method: %v", unknown)
			}
			// A line that is not JSON gets a parse error, and the session
			// goes on.
			c.send(`this is not JSON`)
			c.send(`{"jsonrpc":"2.0","id":6,"method":"tools/list","params":{` + meta(`"x":0`) + `}}`)
			again, before := c.until(6)
			if again["error"] != nil {
				t.Errorf("tools/list after garbage: %v", again)
			}
			if len(before) != 1 || fmt.Sprint(before[0]["error"]) != "map[code:-32700 message:Parse error: the line is not valid JSON]" {
				t.Errorf("want one parse error before the response, got %v", before)
			}

			// stdin EOF ends the server cleanly; a named workspace is kept.
			c.in.Close()
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("server exit: %v\n%s", err, stderr)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("server did not exit on stdin EOF")
			}
			if _, err := os.Stat(filepath.Join(ws, "logs", "0001-stdout.txt")); err != nil {
				t.Errorf("named workspace not kept: %v", err)
			}
		})
	}
}

// TestStdioSignalsRemoveWorkspace sends SIGTERM or SIGINT to a server with a
// run in flight, closes its stdin, or closes the client's end of its stdout:
// the run's process tree dies and the workspace is removed. A closed stdout
// is a client leaving, not a crash: the server exits with status 0, not of
// SIGPIPE.
func TestStdioSignalsRemoveWorkspace(t *testing.T) {
	py := testpython.Path(t)
	const closeStdout = syscall.Signal(-1)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, 0, closeStdout} {
		name := sig.String()
		switch sig {
		case 0:
			name = "stdin EOF"
		case closeStdout:
			name = "stdout closed"
		}
		t.Run(name, func(t *testing.T) {
			token := sandboxtest.Token(t)
			c, cmd, stderr := startRaw(t, "stdio", "--python", py, "--log-level", "debug")
			c.send(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}`)
			c.until(1)
			c.send(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
			c.send(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"run_code","arguments":{"code":"import os, subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', '` + token + `'])\nprint(os.getcwd(), flush=True)\ntime.sleep(300)"},"_meta":{"progressToken":"p"}}}`)
			var ws string
			for ws == "" && c.out.Scan() {
				var m struct {
					Method string `json:"method"`
					Params struct {
						Message string `json:"message"`
					} `json:"params"`
				}
				json.Unmarshal(c.out.Bytes(), &m)
				if m.Method == "notifications/progress" && strings.HasPrefix(m.Params.Message, "stdout: ") {
					ws = strings.TrimSpace(strings.TrimPrefix(m.Params.Message, "stdout: "))
				}
			}
			if ws == "" {
				t.Fatalf("never saw the run start; stderr:\n%s", stderr)
			}
			switch sig {
			case 0:
				c.in.Close()
			case closeStdout:
				c.pipe.Close()
			default:
				cmd.Process.Signal(sig)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if sig == closeStdout && err != nil {
					t.Errorf("server exit: %v (want status 0)\n%s", err, stderr)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("server did not exit on " + name)
			}
			sandboxtest.WaitGone(t, token)
			if _, err := os.Stat(ws); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("workspace %s survived %s: %v\n%s", ws, name, err, stderr)
			}
		})
	}
}

// runPrims runs the test binary as prims and returns its exit code and
// streams.
func runPrims(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := primsCmd(t, args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

// TestCommandLine: help and completion go to stdout; limits of zero or
// less are refused with the flag's name; byte flags take sizes; a listen
// address without a port says so.
func TestCommandLine(t *testing.T) {
	py := testpython.Path(t)
	tests := []struct {
		name     string
		args     []string
		wantCode int
		stdout   string // contained in stdout
		stderr   string // contained in stderr
	}{
		{name: "completion", args: []string{"completion", "bash"}, stdout: "bash completion"},
		{name: "help", args: []string{"--help"}, stdout: "Usage:"},
		{name: "help command", args: []string{"help", "run"}, stdout: "prims run [flags]"},
		{name: "stdio help", args: []string{"stdio", "--help"}, stdout: "--workspace"},
		{name: "serve help", args: []string{"serve", "-h"}, stdout: "--shutdown-grace"},

		{name: "cache size", args: []string{"run", "--python", py, "--cache-max-bytes", "5GiB", "-c", "print(1)"}, stdout: "1\n"},
		{name: "cache no cap", args: []string{"run", "--python", py, "--cache-max-bytes", "none", "-c", "print(2)"}, stdout: "2\n"},
		{name: "warm zero", args: []string{"run", "--python", py, "--warm", "0", "-c", "print(3)"}, stdout: "3\n"},
		{name: "grace zero", args: []string{"serve", "--shutdown-grace", "0", "--addr", "localhost"}, wantCode: 1, stderr: "has no port"},

		{name: "addr without port", args: []string{"serve", "--addr", "localhost"}, wantCode: 1, stderr: `--addr "localhost" has no port: give HOST:PORT`},
		{name: "addr ipv6 without port", args: []string{"serve", "--addr", "[::1]"}, wantCode: 1, stderr: "has no port"},
		{name: "addr bad port", args: []string{"serve", "--addr", "127.0.0.1:http-ish"}, wantCode: 1, stderr: "is not a port number"},
	}
	// Every limit flag refuses zero or less (--warm and --shutdown-grace
	// take 0, not less), before anything starts.
	for _, bad := range []struct{ cmd, flag, value string }{
		{"stdio", "--timeout", "-1s"},
		{"stdio", "--timeout", "0"},
		{"stdio", "--max-timeout", "0s"},
		{"stdio", "--cpu-time", "-1s"},
		{"stdio", "--warm", "-1"},
		{"stdio", "--warm-idle", "0s"},
		{"stdio", "--max-procs", "0"},
		{"stdio", "--max-open-files", "-5"},
		{"stdio", "--output-budget", "-1"},
		{"stdio", "--output-budget", "0"},
		{"stdio", "--image-budget", "0"},
		{"stdio", "--memory", "0"},
		{"stdio", "--max-file-size", "-1"},
		{"stdio", "--workspace-quota", "0GiB"},
		{"stdio", "--install-timeout", "-5m"},
		{"stdio", "--cache-max-bytes", "-1"},
		{"stdio", "--cache-max-bytes", "0"},
		{"serve", "--max-sessions", "0"},
		{"serve", "--max-runs", "0"},
		{"serve", "--session-ttl", "0s"},
		{"serve", "--shutdown-grace", "-1s"},
		{"run", "--timeout", "-1s"},
		{"run", "--max-procs", "-1"},
		{"doctor", "--max-procs", "0"},
	} {
		tests = append(tests, struct {
			name     string
			args     []string
			wantCode int
			stdout   string
			stderr   string
		}{name: bad.cmd + bad.flag + "=" + bad.value, args: []string{bad.cmd, bad.flag, bad.value, "-c", "1"}, wantCode: 1,
			stderr: fmt.Sprintf("prims: invalid argument %q for %q flag: ", bad.value, bad.flag)})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runPrims(t, tt.args...)
			if code != tt.wantCode || !strings.Contains(stdout, tt.stdout) || !strings.Contains(stderr, tt.stderr) {
				t.Errorf("exit %d, stdout %.300q, stderr %.300q; want %d, %q, %q", code, stdout, stderr, tt.wantCode, tt.stdout, tt.stderr)
			}
		})
	}
}

// TestStdioWithoutHome: a desktop launcher may start prims stdio with no
// HOME: it caches environments in a temporary directory, says so on
// stderr, serves, and removes that directory on exit.
func TestStdioWithoutHome(t *testing.T) {
	py := testpython.Path(t)
	tmp := t.TempDir()
	cmd := primsCmd(t, "stdio", "--python", py)
	cmd.Env = slices.DeleteFunc(cmd.Env, func(kv string) bool {
		return strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "XDG_CACHE_HOME=") || strings.HasPrefix(kv, "TMPDIR=")
	})
	cmd.Env = append(cmd.Env, "TMPDIR="+tmp)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cs, err := sdk.NewClient(&sdk.Implementation{Name: "test"}, nil).Connect(context.Background(), &sdk.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("connect: %v\n%s", err, stderr.String())
	}
	res, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: "run_code", Arguments: map[string]any{"code": "print(6*7)"}})
	if err != nil || res.IsError || !strings.Contains(text(res), "42") {
		t.Fatalf("run_code without HOME: %v %s\n%s", err, text(res), stderr.String())
	}
	caches, _ := filepath.Glob(filepath.Join(tmp, "prims-cache-*"))
	if len(caches) != 1 {
		t.Errorf("temporary caches: %v, want one", caches)
	}
	cs.Close()
	if !strings.Contains(stderr.String(), "neither $XDG_CACHE_HOME nor $HOME is set") {
		t.Errorf("no warning on stderr:\n%s", stderr.String())
	}
	if caches, _ := filepath.Glob(filepath.Join(tmp, "prims-cache-*")); len(caches) != 0 {
		t.Errorf("temporary cache left after exit: %v", caches)
	}
}

// TestDoctorLabelsPATHPython: the interpreter doctor finds on PATH is
// labelled [PATH], and one given with --python [flag].
func TestDoctorLabelsPATHPython(t *testing.T) {
	py := testpython.Path(t)
	bin := t.TempDir()
	if err := os.Symlink(py, filepath.Join(bin, "python3")); err != nil {
		t.Fatal(err)
	}
	path := "PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"doctor", "--warm", "0"}, "[PATH;"},
		{[]string{"doctor", "--warm", "0", "--python", py}, "[flag;"},
	} {
		cmd := primsCmd(t, tt.args...)
		cmd.Env = append(cmd.Env, path)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", tt.args, err, out)
		}
		var def string
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "  * ") {
				def = line
			}
		}
		if !strings.Contains(def, tt.want) {
			t.Errorf("%v: the default interpreter's line is %q, want it labelled %s\n%s", tt.args, def, tt.want, out)
		}
	}
}

var tsSDK = flag.String("tsclient", "", "directory whose node_modules holds @modelcontextprotocol/sdk (npm install @modelcontextprotocol/sdk@1.11.0): run TestTypeScriptClient")

// TestTypeScriptClient runs a real TypeScript SDK client (opt-in: it needs
// node and the SDK from npm). SDK 1.11 speaks 2025-03-26, which has no
// resource_link: a result with one fails its schema as a whole, so a run
// that writes a file must come back with text naming the resource instead.
func TestTypeScriptClient(t *testing.T) {
	if *tsSDK == "" {
		t.Skip("pass -tsclient DIR (a directory with node_modules/@modelcontextprotocol/sdk) to run it")
	}
	py := testpython.Path(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := filepath.Abs(*tsSDK)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", filepath.Join("testdata", "tsclient", "client.mjs"), exe, "stdio", "--python", py)
	cmd.Env = append(os.Environ(), "PRIMS_TEST_AS_PRIMS=1", "TS_SDK_DIR="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the TypeScript client failed: %v\n%s", err, out)
	}
	var got struct {
		Types []string `json:"types"`
		Text  string   `json:"text"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("client output %q: %v", out, err)
	}
	if slices.Contains(got.Types, "resource_link") || !strings.Contains(got.Text, "read it as resource prims://workspace/output/h.txt") {
		t.Errorf("result: %+v", got)
	}
}

// TestRunCommandKeepsLogs: prims run goes through the same session as a
// client's run_code, so a kept workspace holds the program and its streams
// in logs/, numbered as a server numbers them.
func TestRunCommandKeepsLogs(t *testing.T) {
	ws := t.TempDir()
	cmd := primsCmd(t, "run", "--python", testpython.Path(t), "--workspace", ws, "-c", "import sys\nprint(7)\nprint('e', file=sys.stderr)")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for name, want := range map[string]string{"0001-code.py": "import sys\nprint(7)", "0001-stdout.txt": "7\n", "0001-stderr.txt": "e\n"} {
		b, err := os.ReadFile(filepath.Join(ws, "logs", name))
		if err != nil || !strings.HasPrefix(string(b), want) {
			t.Errorf("logs/%s: %q, %v; want %q", name, b, err, want)
		}
	}
}

// TestStdioAnswersBeforeEOF pipes requests into prims stdio and closes its
// input at once, as `printf ... | prims stdio` does: every request read gets
// its answer before the server exits (an answer still being written when the
// input ended was lost about one time in five).
func TestStdioAnswersBeforeEOF(t *testing.T) {
	py := testpython.Path(t)
	const requests = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"pipe","version":"0"}}}
{"jsonrpc":"2.0","method":"notifications/initialized"}
{"jsonrpc":"2.0","id":2,"method":"tools/list"}
{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"run_code","arguments":{"code":"print(6*7)"}}}
`
	for i := range 5 {
		cmd := primsCmd(t, "stdio", "--python", py, "--warm", "0")
		cmd.Stdin = strings.NewReader(requests)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("try %d: %v\n%s", i, err, stderr.String())
		}
		ids := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			var m struct {
				ID     json.RawMessage `json:"id"`
				Result json.RawMessage `json:"result"`
			}
			if json.Unmarshal([]byte(line), &m) == nil && m.ID != nil {
				ids[string(m.ID)] = string(m.Result)
			}
		}
		for _, id := range []string{"1", "2", "3"} {
			if _, ok := ids[id]; !ok {
				t.Fatalf("try %d: no answer to request %s after the input ended; got:\n%s\nstderr:\n%s", i, id, out, stderr.String())
			}
		}
		if !strings.Contains(ids["3"], `42\n`) {
			t.Fatalf("try %d: run_code's answer lacks its output: %s", i, ids["3"])
		}
	}
}

// serveBase starts cmd, a prims serve on port 0 logging to its stderr, and
// returns its base URL once the log says where it listens; each log line
// also goes to logs, when not nil. At the test's end the server gets
// SIGTERM, and SIGKILL if it has not exited 10 s later.
func serveBase(tb testing.TB, cmd *exec.Cmd, logs io.Writer) string {
	tb.Helper()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM) // an error once it has exited
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if logs != nil {
				fmt.Fprintln(logs, sc.Text())
			}
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "serving MCP over streamable HTTP" {
				select {
				case addr <- line.Addr:
				default:
				}
			}
		}
	}()
	select {
	case a := <-addr:
		return "http://" + a
	case <-time.After(time.Minute):
		tb.Fatal("prims serve never said where it listens")
	}
	return ""
}

// lockedLog is a log that one goroutine writes while another reads.
type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
