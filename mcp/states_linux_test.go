package mcp

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/sandbox/sandboxtest"
)

// stateCall runs code on a state (args adds fields) and returns the result.
func stateCall(t *testing.T, env *testEnv, state, code string, args map[string]any) (*sdk.CallToolResult, RunOutput) {
	t.Helper()
	a := map[string]any{"code": code, "state": state}
	for k, v := range args {
		a[k] = v
	}
	var out RunOutput
	res := env.call(t, context.Background(), "run_code", a, &out)
	return res, out
}

// stateServers lists the processes of state sandboxes whose working
// directory is dir: the state server and the states' interpreters.
func stateServers(dir string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if !strings.Contains(string(b), "PRIMS state server") {
			continue
		}
		if cwd, _ := os.Readlink("/proc/" + e.Name() + "/cwd"); cwd == dir {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestStatefulRunCode: run_code with state keeps globals between calls; a
// failing call is rolled back and the result says which happened; results
// list the session's states with age and memory, as the states resource
// does; fork_from copies a state and the two stay apart; drop_state ends
// one.
func TestStatefulRunCode(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, v string) {
		env := start(t, v, Config{})
		res, out := stateCall(t, env, "df", "rows = list(range(1000))\nprint(len(rows))", nil)
		if res.IsError || out.State != "df" || out.StateRolledBack == nil || *out.StateRolledBack || out.Stdout != "1000\n" {
			t.Fatalf("first call: isError %v state %q rolled back %v stdout %q\n%s", res.IsError, out.State, out.StateRolledBack, out.Stdout, text(res))
		}
		if !strings.Contains(text(res), `state "df" kept this call's changes`) {
			t.Errorf("the summary does not say the state kept the call:\n%s", text(res))
		}
		if len(out.States) != 1 || out.States[0].Name != "df" || out.States[0].MemoryBytes <= 0 || out.States[0].Python == "" {
			t.Errorf("states in the result: %+v", out.States)
		}
		res, out = stateCall(t, env, "df", "rows.clear()\nraise RuntimeError('half done')", nil)
		if !res.IsError || out.ExitCode != 1 || out.StateRolledBack == nil || !*out.StateRolledBack || !strings.Contains(text(res), "rolled back") {
			t.Errorf("failing call: isError %v exit %d rolled back %v\n%s", res.IsError, out.ExitCode, out.StateRolledBack, text(res))
		}
		if _, out = stateCall(t, env, "df", "print(len(rows))", nil); out.Stdout != "1000\n" {
			t.Errorf("after the rollback the state holds %q rows, want 1000", out.Stdout)
		}
		// A run without state is still a fresh process.
		var fresh RunOutput
		env.call(t, context.Background(), "run_code", map[string]any{"code": "print('rows' in globals())"}, &fresh)
		if fresh.Stdout != "False\n" || fresh.State != "" || fresh.StateRolledBack != nil {
			t.Errorf("a run without state: stdout %q state %q", fresh.Stdout, fresh.State)
		}

		if res, out = stateCall(t, env, "copy", "rows.append(-1)\nprint(len(rows))", map[string]any{"fork_from": "df"}); res.IsError || out.Stdout != "1001\n" {
			t.Fatalf("fork_from: %s", text(res))
		}
		if _, out = stateCall(t, env, "df", "print(len(rows))", nil); out.Stdout != "1000\n" {
			t.Errorf("the copy changed the original: %q", out.Stdout)
		}
		if len(out.States) != 2 || out.States[0].Name != "copy" || out.States[0].ForkedFrom != "df" {
			t.Errorf("states after fork_from: %+v", out.States)
		}
		res, _ = stateCall(t, env, "df", "print(1)", map[string]any{"fork_from": "copy"})
		if !res.IsError || !strings.Contains(text(res), "exists already") {
			t.Errorf("fork_from onto an existing state: %s", text(res))
		}
		res, _ = stateCall(t, env, "other", "print(1)", map[string]any{"fork_from": "nope"})
		if !res.IsError || !strings.Contains(text(res), `"nope", which does not exist`) {
			t.Errorf("fork_from a missing state: %s", text(res))
		}

		// The states resource lists them too.
		rr, err := env.cs.ReadResource(context.Background(), &sdk.ReadResourceParams{URI: statesURI})
		if err != nil {
			t.Fatal(err)
		}
		var listed struct{ States []StateInfo }
		if err := json.Unmarshal([]byte(rr.Contents[0].Text), &listed); err != nil || len(listed.States) != 2 {
			t.Errorf("states resource: %v %s", err, rr.Contents[0].Text)
		}

		var dropped DropStateOutput
		res = env.call(t, context.Background(), "drop_state", map[string]any{"state": "copy"}, &dropped)
		if res.IsError || dropped.Dropped != "copy" || len(dropped.States) != 1 {
			t.Errorf("drop_state: %s %+v", text(res), dropped)
		}
		res = env.call(t, context.Background(), "drop_state", map[string]any{"state": "copy"}, nil)
		if !res.IsError || !strings.Contains(text(res), `no state "copy"`) {
			t.Errorf("dropping it again: %s", text(res))
		}
		// A dropped name starts afresh.
		if res, out = stateCall(t, env, "copy", "print('rows' in globals())", nil); out.Stdout != "False\n" {
			t.Errorf("a dropped state's name reused: %q %s", out.Stdout, text(res))
		}
	})
}

// TestStateRules: --max-states caps the states of a session; a state keeps
// the environment it was created with and says so when asked for another;
// a thread left running is reported; fork_from needs state.
func TestStateRules(t *testing.T) {
	env := start(t, protocols[0], Config{MaxStates: 2})
	stateCall(t, env, "a", "x = 1", nil)
	stateCall(t, env, "b", "x = 2", nil)
	res, _ := stateCall(t, env, "c", "x = 3", nil)
	if !res.IsError || !strings.Contains(text(res), "--max-states") || !strings.Contains(text(res), "drop_state") {
		t.Errorf("a third state over --max-states 2: %s", text(res))
	}
	res, _ = stateCall(t, env, "c", "x = 3", map[string]any{"fork_from": "a"})
	if !res.IsError || !strings.Contains(text(res), "--max-states") {
		t.Errorf("a third state by fork_from: %s", text(res))
	}
	res, _ = stateCall(t, env, "a", "import pandas", map[string]any{"requirements": []string{"pandas"}})
	if !res.IsError || !strings.Contains(text(res), "keeps its environment") {
		t.Errorf("new requirements on a state: %s", text(res))
	}
	res, _ = stateCall(t, env, "a", "x = 1", map[string]any{"python": "2.7"})
	if !res.IsError || !strings.Contains(text(res), "keeps the interpreter") {
		t.Errorf("another Python on a state: %s", text(res))
	}
	res, out := stateCall(t, env, "a", "import threading, time\nthreading.Thread(target=time.sleep, args=(30,), name='poller', daemon=True).start()", nil)
	if res.IsError || len(out.StateWarnings) != 1 || !strings.Contains(out.StateWarnings[0], "poller") || !strings.Contains(text(res), "only the main thread") {
		t.Errorf("a thread left running: warnings %q\n%s", out.StateWarnings, text(res))
	}
	if _, out = stateCall(t, env, "a", "import threading\nprint(threading.active_count(), x)", nil); out.Stdout != "1 1\n" {
		t.Errorf("the call after: %q", out.Stdout)
	}
	var plain RunOutput
	res = env.call(t, context.Background(), "run_code", map[string]any{"code": "print(1)", "fork_from": "a"}, &plain)
	if !res.IsError || !strings.Contains(text(res), "fork_from needs state") {
		t.Errorf("fork_from without state: %s", text(res))
	}
	res, _ = stateCall(t, env, "bad/name", "print(1)", nil)
	if !res.IsError || !strings.Contains(text(res), "not a valid state name") {
		t.Errorf("a bad state name: %s", text(res))
	}
}

// TestStateIdleExpiry: a state unused for --state-idle ends and its
// sandbox with it; the name then starts afresh.
func TestStateIdleExpiry(t *testing.T) {
	env := start(t, protocols[0], Config{StateIdle: 300 * time.Millisecond})
	stateCall(t, env, "s", "x = 1", nil)
	dir := env.srv.Workspace()
	if len(stateServers(dir)) == 0 {
		t.Fatal("no state server found for the workspace: the probe is broken")
	}
	waitFor(t, func() bool { return len(stateServers(dir)) == 0 })
	if _, out := stateCall(t, env, "s", "print('x' in globals())", nil); out.Stdout != "False\n" || len(out.States) != 1 {
		t.Errorf("after expiry: %q, states %+v", out.Stdout, out.States)
	}
}

// TestStatesEndWithTheSession: closing the server ends its states'
// sandboxes.
func TestStatesEndWithTheSession(t *testing.T) {
	env := start(t, protocols[0], Config{})
	stateCall(t, env, "a", "x = 1", nil)
	stateCall(t, env, "b", "y = 1", map[string]any{"fork_from": "a"})
	dir := env.srv.Workspace()
	if n := len(stateServers(dir)); n != 3 {
		t.Fatalf("%d state processes for two states, want 3 (server and two interpreters)", n)
	}
	if err := env.srv.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(stateServers(dir)) == 0 })
}

// TestBackgroundRuns: background: true returns at once with a run_id;
// get_run gives the output so far while it runs and then the final result
// with run_code's fields; cancel_run kills the run's tree; a stateful
// background run commits like any other.
func TestBackgroundRuns(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, v string) {
		env := start(t, v, Config{})
		ctx := context.Background()
		var started RunOutput
		res := env.call(t, ctx, "run_code", map[string]any{"code": "import time\nprint('step 1', flush=True)\ntime.sleep(1.5)\nprint('step 2')", "background": true}, &started)
		if res.IsError || started.Status != "running" || started.RunID == "" {
			t.Fatalf("background start: %+v\n%s", started, text(res))
		}
		var got RunOutput
		waitFor(t, func() bool {
			env.call(t, ctx, "get_run", map[string]any{"run_id": started.RunID}, &got)
			return got.Status == "done" || strings.Contains(got.Stdout, "step 1\n")
		})
		if got.Status != "running" || got.Stdout != "step 1\n" {
			t.Errorf("get_run while running: status %q stdout %q", got.Status, got.Stdout)
		}
		res = env.call(t, ctx, "get_run", map[string]any{"run_id": started.RunID, "wait_s": 30}, &got)
		if res.IsError || got.Status != "done" || got.Stdout != "step 1\nstep 2\n" || got.ExitCode != 0 || got.StdoutLog == "" || !strings.Contains(text(res), "Exit code 0") {
			t.Errorf("get_run waited: %+v\n%s", got, text(res))
		}

		token := sandboxtest.Token(t)
		env.call(t, ctx, "run_code", map[string]any{"code": treeCode(token), "background": true}, &started)
		waitTree(t, token)
		waitFor(t, func() bool {
			got = RunOutput{}
			env.call(t, ctx, "get_run", map[string]any{"run_id": started.RunID}, &got)
			return strings.Contains(got.Stdout, "ready")
		})
		got = RunOutput{}
		res = env.call(t, ctx, "cancel_run", map[string]any{"run_id": started.RunID}, &got)
		if !got.Cancelled || got.Status != "done" || !strings.Contains(got.Stdout, "ready") {
			t.Errorf("cancel_run: %+v\n%s", got, text(res))
		}
		sandboxtest.WaitGone(t, token)

		res = env.call(t, ctx, "get_run", map[string]any{"run_id": "run-nope"}, nil)
		if !res.IsError || !strings.Contains(text(res), "no background run") {
			t.Errorf("get_run of an unknown id: %s", text(res))
		}

		// A state changed in the background, then rolled back by a cancel.
		env.call(t, ctx, "run_code", map[string]any{"code": "n = 1", "state": "s", "background": true}, &started)
		env.call(t, ctx, "get_run", map[string]any{"run_id": started.RunID, "wait_s": 30}, &got)
		if got.Status != "done" || got.State != "s" || got.StateRolledBack == nil || *got.StateRolledBack {
			t.Errorf("background stateful run: %+v", got)
		}
		env.call(t, ctx, "run_code", map[string]any{"code": "n = 2\nprint('set', flush=True)\nimport time\ntime.sleep(60)", "state": "s", "background": true}, &started)
		waitFor(t, func() bool {
			env.call(t, ctx, "get_run", map[string]any{"run_id": started.RunID}, &got)
			return strings.Contains(got.Stdout, "set")
		})
		env.call(t, ctx, "cancel_run", map[string]any{"run_id": started.RunID}, &got)
		if got.StateRolledBack == nil || !*got.StateRolledBack {
			t.Errorf("cancelled stateful run not rolled back: %+v", got)
		}
		if _, out := stateCall(t, env, "s", "print(n)", nil); out.Stdout != "1\n" {
			t.Errorf("state after the cancelled background run: %q", out.Stdout)
		}
	})
}

// TestBackgroundRunEndsWithTheServer: a background run does not outlive
// its session: closing the server kills its tree and deletes the
// workspace.
func TestBackgroundRunEndsWithTheServer(t *testing.T) {
	env := start(t, protocols[0], Config{})
	token := sandboxtest.Token(t)
	var started RunOutput
	env.call(t, context.Background(), "run_code", map[string]any{"code": treeCode(token), "background": true}, &started)
	waitTree(t, token)
	ws := env.srv.Workspace()
	if err := env.srv.Close(); err != nil {
		t.Fatal(err)
	}
	sandboxtest.WaitGone(t, token)
	if _, err := os.Stat(filepath.Join(ws, "output")); err == nil {
		t.Errorf("workspace survived Close")
	}
}

// TestHTTPSessionEndsStatesAndBackgroundRuns: over prims serve, deleting
// the MCP session ends its states' sandboxes and kills its background runs.
func TestHTTPSessionEndsStatesAndBackgroundRuns(t *testing.T) {
	f := newHTTPFixture(t, HTTPConfig{})
	cs := f.mustConnect(t, clientOpts{})
	id := cs.ID()
	if text, out, isErr := call(t, cs, "run_code", map[string]any{"code": "x = 1", "state": "s"}); isErr || out["state"] != "s" {
		t.Fatalf("stateful call over HTTP: %s", text)
	}
	if text, out, _ := call(t, cs, "run_code", map[string]any{"code": "print(x)", "state": "s"}); out["stdout"] != "1\n" {
		t.Fatalf("state not kept over HTTP: %s", text)
	}
	token := sandboxtest.Token(t)
	if text, out, isErr := call(t, cs, "run_code", map[string]any{"code": treeCode(token), "background": true}); isErr || out["status"] != "running" {
		t.Fatalf("background run over HTTP: %s", text)
	}
	waitTree(t, token)
	dir := f.workspaceDir(id)
	if len(stateServers(dir)) == 0 {
		t.Fatal("no state server found for the session's workspace: the probe is broken")
	}
	req, _ := http.NewRequest(http.MethodDelete, f.url+"/mcp", nil)
	req.Header.Set(sessionHeader, id)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: %v %v", resp, err)
	}
	sandboxtest.WaitGone(t, token)
	waitFor(t, func() bool { return len(stateServers(dir)) == 0 })
}
