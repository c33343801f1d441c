package mcp

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/prims-mcp/prims/internal/testpython"
	"github.com/prims-mcp/prims/sandbox"
)

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// rawClient speaks JSON-RPC to a Server over NewStdioTransport, line by
// line, so that it can send what no SDK client would.
type rawClient struct {
	t     testing.TB
	srv   *Server
	in    *io.PipeWriter
	lines chan string
	held  []map[string]json.RawMessage // read while waiting for another id
	done  chan error
}

func startRaw(t testing.TB, srv *Server) *rawClient {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	c := &rawClient{t: t, srv: srv, in: inW, lines: make(chan string, 64), done: make(chan error, 1)}
	go func() { c.done <- srv.Serve(context.Background(), NewStdioTransport(inR, nopCloser{outW})) }()
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(outR)
		sc.Buffer(nil, 4<<20)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		inW.Close() // stdin EOF ends the session
		select {
		case <-c.done:
		case <-time.After(30 * time.Second):
			t.Error("the session did not end at EOF")
		}
		outW.Close()
	})
	return c
}

func (c *rawClient) send(line string) {
	c.t.Helper()
	if _, err := io.WriteString(c.in, line+"\n"); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// next returns the next message the server writes, checking that it is a
// JSON-RPC 2.0 object.
func (c *rawClient) next() map[string]json.RawMessage {
	c.t.Helper()
	select {
	case line, ok := <-c.lines:
		if !ok {
			c.t.Fatal("the server closed its output")
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			c.t.Fatalf("the server wrote %q: %v", line, err)
		}
		if string(m["jsonrpc"]) != `"2.0"` {
			c.t.Fatalf("the server wrote %q: not JSON-RPC 2.0", line)
		}
		return m
	case <-time.After(60 * time.Second):
		c.t.Fatal("no answer from the server")
		return nil
	}
}

// reply returns the response whose id is exactly id (raw JSON), keeping
// other messages for later.
func (c *rawClient) reply(id string) map[string]json.RawMessage {
	c.t.Helper()
	for i, m := range c.held {
		if string(m["id"]) == id {
			c.held = append(c.held[:i], c.held[i+1:]...)
			return m
		}
	}
	for {
		m := c.next()
		if _, isReq := m["method"]; !isReq && string(m["id"]) == id {
			return m
		}
		if _, isReq := m["method"]; !isReq {
			c.held = append(c.held, m)
		}
	}
}

func (c *rawClient) initialize(version string) {
	c.t.Helper()
	c.send(`{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"` + version + `","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}`)
	if m := c.reply(`"init"`); m["error"] != nil {
		c.t.Fatalf("initialize: %s", m["error"])
	}
	c.send(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
}

func (c *rawClient) ping(id string) {
	c.t.Helper()
	c.send(`{"jsonrpc":"2.0","id":` + id + `,"method":"ping"}`)
	if m := c.reply(id); m["result"] == nil {
		c.t.Fatalf("ping %s: %s", id, m["error"])
	}
}

func errorCode(t testing.TB, m map[string]json.RawMessage) int64 {
	t.Helper()
	var e struct {
		Code    *int64 `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(m["error"], &e); err != nil || e.Code == nil || e.Message == "" {
		t.Fatalf("not a JSON-RPC error: %v", m)
	}
	return *e.Code
}

func newStdioServer(t testing.TB, runner *sandbox.Runner) *Server {
	t.Helper()
	srv, err := New(Config{Python: testpython.Path(t)}, runner)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// TestStdioTransportSurvivesBadLines feeds the server garbage, an oversized
// line and blank lines between real requests: each bad line gets a parse
// error and every real request its answer.
func TestStdioTransportSurvivesBadLines(t *testing.T) {
	t.Parallel()
	c := startRaw(t, newStdioServer(t, nil))
	c.initialize("2025-11-25")
	c.send(``)
	for _, bad := range []string{`{not json`, `"` + strings.Repeat("x", MaxMessageBytes+10) + `"`} {
		c.send(bad)
		m := c.reply(`null`)
		if got := errorCode(t, m); got != -32700 {
			t.Errorf("%.20s: code %d, want -32700", bad, got)
		}
		c.ping(`2`)
	}
	c.send(`{"jsonrpc":"2.0","id":3,"method":"tools/list"}`)
	if m := c.reply(`3`); m["result"] == nil {
		t.Errorf("tools/list: %s", m["error"])
	}
}

// TestStdioWrongShapes sends valid JSON that is no JSON-RPC request while a
// run is in flight. Each line gets -32600 with the id it had, when valid,
// and the session and the run go on.
func TestStdioWrongShapes(t *testing.T) {
	t.Parallel()
	runner, err := sandbox.New(sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	srv := newStdioServer(t, runner)
	c := startRaw(t, srv)
	c.initialize("2025-11-25")
	// The run waits for a file that the test writes once every bad line has
	// been answered.
	code := `import os, time
while not os.path.exists("go"):
    time.sleep(0.01)
print("survived")`
	args, _ := json.Marshal(map[string]any{"code": code})
	c.send(`{"jsonrpc":"2.0","id":"run","method":"tools/call","params":{"name":"run_code","arguments":` + string(args) + `}}`)

	tests := []struct {
		line   string
		wantID string
	}{
		{`{}`, `null`},
		{`[]`, `null`},
		{`1`, `null`},
		{`null`, `null`},
		{`"ping"`, `null`},
		{`true`, `null`},
		{`{"jsonrpc":"2.0","id":true,"method":"ping"}`, `null`},
		{`{"jsonrpc":"2.0","id":false,"method":"ping"}`, `null`},
		{`{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}`, `null`},
		{`{"jsonrpc":"2.0","id":[1],"method":"ping"}`, `null`},
		{`{"jsonrpc":"2.0","id":null,"method":"ping"}`, `null`},
		{`{"jsonrpc":"1.0","id":7,"method":"ping"}`, `7`},
		{`{"jsonrpc":2.0,"id":8,"method":"ping"}`, `8`},
		{`{"id":9,"method":"ping"}`, `9`},
		{`{"jsonrpc":"2.0","id":10}`, `10`},
		{`{"jsonrpc":"2.0","id":11,"method":11}`, `11`},
		{`{"jsonrpc":"2.0","id":12,"method":null}`, `12`},
		{`{"jsonrpc":"2.0","ID":13,"method":"ping"}`, ``}, // "ID" is not "id": a notification, no answer
		{`{"jsonrpc":"2.0","method":5}`, `null`},
		{`{"jsonrpc":"1.0","method":"notifications/initialized"}`, `null`},
		{`[{"jsonrpc":"2.0","id":14,"method":"ping"}]`, `null`},
		{`[{"jsonrpc":"2.0","id":15,"method":"ping"},{"jsonrpc":"2.0","id":16,"method":"ping"}]`, `null`},
		{`{"jsonrpc":"2.0","id":"run","method":"ping"}`, `null`}, // "run" is in flight
	}
	for i, tt := range tests {
		c.send(tt.line)
		if tt.wantID == "" {
			continue
		}
		m := c.reply(tt.wantID)
		if got := errorCode(t, m); got != -32600 {
			t.Errorf("%s: code %d, want -32600 (%s)", tt.line, got, m["error"])
		}
		c.ping(fmt.Sprint(100 + i))
	}

	// The run's workspace is made when its call is handled, which under
	// load can come after every bad line was answered.
	ws := srv.Workspace()
	for deadline := time.Now().Add(time.Minute); ws == "" && time.Now().Before(deadline); ws = srv.Workspace() {
		time.Sleep(10 * time.Millisecond)
	}
	if ws == "" {
		t.Fatal("the run in flight never made its workspace")
	}
	if err := os.WriteFile(filepath.Join(ws, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	m := c.reply(`"run"`)
	var res struct {
		IsError bool `json:"isError"`
		Content []struct {
			Text string `json:"text"`
		} `json:"content"`
	}
	if err := json.Unmarshal(m["result"], &res); err != nil {
		t.Fatalf("run_code: %s", m["error"])
	}
	if res.IsError || len(res.Content) == 0 || !strings.Contains(res.Content[0].Text, "survived") {
		t.Errorf("the run in flight was harmed: %s", m["result"])
	}
}

// TestStdioIDsEchoedExactly: every valid id comes back byte for byte, even
// those that no int64 or float64 holds.
func TestStdioIDsEchoedExactly(t *testing.T) {
	t.Parallel()
	c := startRaw(t, newStdioServer(t, nil))
	c.initialize("2025-11-25")
	ids := []string{
		`18446744073709551616`, // 2**64
		`-9223372036854775809`, // -2**63-1
		`9223372036854775807`,  // 2**63-1
		`1e308`,
		`1.5`,
		`-0`,
		`1E+2`,
		`1` + strings.Repeat("0", 400), // 10**400
		`0`,
		`"7"`,
		`""`,
		`"\u00e9t\u00e9 \"quoted\""`,
		`"été"`,
	}
	for _, id := range ids {
		c.send(`{"jsonrpc":"2.0","id":` + id + `,"method":"ping"}`)
		m := c.reply(id)
		if m["result"] == nil {
			t.Errorf("id %.30s: %s", id, m["error"])
		}
	}
	// Errors carry the id too, and requests in flight can be cancelled by
	// it.
	c.send(`{"jsonrpc":"2.0","id":1.25,"method":"prompts/get","params":{"name":"nope"}}`)
	if got := errorCode(t, c.reply(`1.25`)); got != -32602 {
		t.Errorf("unknown prompt: code %d, want -32602", got)
	}
}

// TestStdioErrorCodes: requests before initialize and a prompt without its
// required argument get JSON-RPC codes, not 0.
func TestStdioErrorCodes(t *testing.T) {
	t.Parallel()
	c := startRaw(t, newStdioServer(t, nil))
	c.send(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
	if got := errorCode(t, c.reply(`1`)); got != -32600 {
		t.Errorf("tools/list before initialize: code %d, want -32600", got)
	}
	c.ping(`2`) // allowed before initialize
	c.initialize("2025-03-26")
	c.send(`{"jsonrpc":"2.0","id":3,"method":"prompts/get","params":{"name":"python_programmer"}}`)
	if got := errorCode(t, c.reply(`3`)); got != -32602 {
		t.Errorf("prompt without its task: code %d, want -32602", got)
	}
	c.send(`{"jsonrpc":"2.0","id":4,"method":"no/such/method"}`)
	if got := errorCode(t, c.reply(`4`)); got != -32601 {
		t.Errorf("unknown method: code %d, want -32601", got)
	}
}

// TestStdioCancelByClientID: notifications/cancelled names the request by
// the client's id, which the transport maps to its own.
func TestStdioCancelByClientID(t *testing.T) {
	t.Parallel()
	runner, err := sandbox.New(sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	c := startRaw(t, newStdioServer(t, runner))
	c.initialize("2025-11-25")
	id := `18446744073709551617`
	args, _ := json.Marshal(map[string]any{"code": "import time\nprint('started', flush=True)\ntime.sleep(600)", "timeout_s": 600})
	c.send(`{"jsonrpc":"2.0","id":` + id + `,"method":"tools/call","params":{"_meta":{"progressToken":"p"},"name":"run_code","arguments":` + string(args) + `}}`)
	// Wait for the program to start: its output comes as progress.
	for {
		m := c.next()
		if string(m["method"]) == `"notifications/progress"` && strings.Contains(string(m["params"]), "started") {
			break
		}
	}
	c.send(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":` + id + `,"reason":"test"}}`)
	// A cancelled request gets no response; the session answers on, and
	// the run is gone.
	c.ping(`"after"`)
	deadline := time.Now().Add(60 * time.Second)
	for c.srv.metrics.inFlight.Load() > 0 || c.srv.metrics.runs[outcomeCancelled].Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the cancelled run is still running")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAcceptKeepsNothingForResponses(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	c := &stdioConn{out: nopCloser{&out}, closed: make(chan struct{}), calls: map[int64]clientCall{}, inFlight: map[string]int64{}}
	got := []string{}
	for _, line := range []string{
		`{"jsonrpc":"2.0","id":3,"result":{}}`,
		`{"jsonrpc":"2.0","id":"x","result":{}}`,
		`{"jsonrpc":"2.0","id":4,"error":{"code":-1,"message":"no"}}`,
		`{"jsonrpc":"2.0","id":5,"error":"broken"}`,
	} {
		m := c.accept([]byte(line))
		got = append(got, fmt.Sprintf("%T", m))
	}
	want := []string{"*jsonrpc2.Response", "<nil>", "*jsonrpc2.Response", "*jsonrpc2.Response"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
	}
	if out.Len() != 0 {
		t.Errorf("a response was answered: %s", out.String())
	}
}

var fuzzRunner = sync.OnceValues(func() (*sandbox.Runner, error) { return sandbox.New(sandbox.Config{}) })

// FuzzStdioTransport sends an initialized session random lines, then a
// ping: whatever came before, every line the server writes is a JSON-RPC 2.0
// message and the ping is answered. The seed corpus in
// testdata/fuzz/FuzzStdioTransport holds the wrong shapes met in the field.
func FuzzStdioTransport(f *testing.F) {
	for _, seed := range []string{
		`{}`, `[]`, `1`, `null`, `{"jsonrpc":"2.0","id":true,"method":"ping"}`,
		`{"jsonrpc":"1.0","id":1,"method":"ping"}`,
		`[{"jsonrpc":"2.0","id":1,"method":"ping"}]`,
		`{"jsonrpc":"2.0","id":1` + strings.Repeat("0", 400) + `,"method":"ping"}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/list"}` + "\n" + `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		runner, err := fuzzRunner()
		if err != nil {
			t.Fatal(err)
		}
		c := startRaw(t, newStdioServer(t, runner))
		c.initialize("2025-11-25")
		if _, err := c.in.Write(append(input, '\n')); err != nil {
			t.Fatalf("send: %v", err)
		}
		c.ping(`"fuzz-ping-after-the-input"`)
	})
}
