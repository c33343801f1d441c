package mcp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/sys/unix"

	"github.com/prims-mcp/prims/internal/testenv"
	"github.com/prims-mcp/prims/internal/testpython"
	"github.com/prims-mcp/prims/sandbox"
)

// These are attacks on the server's own file handling (issue 11, "Server-side
// code acting on paths the program controls"): a program that renames,
// swaps and plants things in the workspace while the server walks, chmods,
// chowns and opens paths there. Each runs through the real tools, in each
// tier the host offers, with the server as root and (TestPathAttacksUnprivileged)
// as uid 65534. The races run real concurrent runs in loops.
//
// Every probe has a control: the victim is changed by the test itself
// through the same check, so a check that could never see a change fails.

// pathTiers are the tiers the attacks run in: namespaces and landlock, as
// far as the host has them.
func pathTiers(t *testing.T) []sandbox.Tier {
	sup := sandbox.Probe()
	var tiers []sandbox.Tier
	for _, tier := range []sandbox.Tier{sandbox.TierNamespaces, sandbox.TierLandlock} {
		if sup.Can(tier) {
			tiers = append(tiers, tier)
		}
	}
	if len(tiers) == 0 {
		testenv.Skip(t, testenv.Userns, "no sandbox tier here: %s", sup.Missing())
	}
	return tiers
}

// startTier is start with a runner forced to tier.
func startTier(t testing.TB, tier sandbox.Tier, cfg Config) *testEnv {
	t.Helper()
	return startRunner(t, "", sandbox.Config{Tier: tier}, cfg)
}

// callCtx is call with a deadline, reporting a call that did not return.
func (e *testEnv) callCtx(t testing.TB, d time.Duration, name string, args any, out any) (*sdk.CallToolResult, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	params := &sdk.CallToolParams{Name: name, Arguments: args}
	res, err := e.cs.CallTool(ctx, params)
	if err != nil {
		if ctx.Err() != nil {
			return nil, false
		}
		t.Fatalf("%s: %v", name, err)
	}
	if out != nil && res.StructuredContent != nil {
		b, _ := json.Marshal(res.StructuredContent)
		json.Unmarshal(b, out)
	}
	return res, true
}

// victim is a host directory outside any workspace that no run may change:
// a root-only directory (0700) with a root-only file (0600), as the server's
// user made them.
type victim struct {
	dir, file string
}

func newVictim(t *testing.T) victim {
	dir, err := os.MkdirTemp("", "prims-victim-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	v := victim{dir: dir, file: filepath.Join(dir, "secret")}
	os.WriteFile(v.file, []byte("host secret"), 0o600)
	v.reset()
	return v
}

func (v victim) reset() {
	os.Chmod(v.dir, 0o700)
	os.Chmod(v.file, 0o600)
	uid, gid := os.Getuid(), os.Getgid()
	os.Lchown(v.dir, uid, gid)
	os.Lchown(v.file, uid, gid)
	os.WriteFile(v.file, []byte("host secret"), 0o600)
}

// changed says how the victim differs from what reset made, or "".
func (v victim) changed() string {
	var out []string
	for p, mode := range map[string]os.FileMode{v.dir: 0o700, v.file: 0o600} {
		fi, err := os.Lstat(p)
		if err != nil {
			out = append(out, fmt.Sprintf("%s: %v", filepath.Base(p), err))
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != mode || int(st.Uid) != os.Getuid() {
			out = append(out, fmt.Sprintf("%s: mode %o uid %d", filepath.Base(p), fi.Mode().Perm(), st.Uid))
		}
	}
	if b, _ := os.ReadFile(v.file); string(b) != "host secret" {
		out = append(out, "content changed")
	}
	return strings.Join(out, "; ")
}

// TestVictimControl proves the victim's check sees the changes the attacks
// aim at.
func TestVictimControl(t *testing.T) {
	v := newVictim(t)
	if c := v.changed(); c != "" {
		t.Fatalf("fresh victim changed: %s", c)
	}
	os.Chmod(v.file, 0o644)
	if v.changed() == "" {
		t.Error("a chmod went unseen")
	}
	v.reset()
	if os.Geteuid() == 0 {
		os.Lchown(v.file, 65534, 65534)
		if v.changed() == "" {
			t.Error("a chown went unseen")
		}
		v.reset()
	}
	os.Chmod(v.dir, 0o755)
	if v.changed() == "" {
		t.Error("a chmod of the directory went unseen")
	}
}

// swapper is Python that makes name alternate, as fast as it can, between
// a directory and a symlink to target (renameat2 RENAME_EXCHANGE), for secs
// seconds, in directory parent (made first).
func swapper(parent, name, target string, secs int) string {
	return fmt.Sprintf(`
import os, time, ctypes
libc = ctypes.CDLL(None, use_errno=True)
parent, name, target = %q, %q, %q
os.makedirs(parent, exist_ok=True)
d, l = os.path.join(parent, name), os.path.join(parent, name + ".alt")
os.makedirs(d, exist_ok=True)
open(os.path.join(d, "secret"), "w").close()
os.symlink(target, l)
end, n = time.time() + %d, 0
while time.time() < end:
    libc.renameat2(-100, d.encode(), -100, l.encode(), 2)
    n += 1
print("swaps", n)
`, parent, name, target, secs)
}

// TestPathAttacks runs every attack of this file in every tier here.
func TestPathAttacks(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the races run for seconds")
	}
	for _, tier := range pathTiers(t) {
		t.Run(string(tier), func(t *testing.T) {
			t.Run("ShareWalkThroughSwappedMounts", func(t *testing.T) { attackShareWalk(t, tier) })
			t.Run("TwoServersOneWorkspace", func(t *testing.T) { attackTwoServers(t, tier) })
			t.Run("FIFOInLogs", func(t *testing.T) { attackFIFOLogs(t, tier) })
			t.Run("FIFOListAndPreview", func(t *testing.T) { attackFIFOList(t, tier) })
			t.Run("ForgedLogs", func(t *testing.T) { attackForgedLogs(t, tier) })
			t.Run("NewlineNames", func(t *testing.T) { attackNewlineNames(t, tier) })
			t.Run("MountsSymlinkToHost", func(t *testing.T) { attackMountsSymlink(t, tier) })
		})
	}
}

// raceRounds is how many concurrent runs each race gets.
const raceRounds = 40

// attackShareWalk: the program moves mounts/ aside and builds its own,
// where a directory keeps swapping places with a symlink to a host
// directory, while run_code("pass") runs again and again beside it (each
// run used to walk mounts/ to make it readable, chmodding what it found).
func attackShareWalk(t *testing.T, tier sandbox.Tier) {
	v := newVictim(t)
	env := startTier(t, tier, Config{MaxTimeout: time.Minute})
	code := `
import os
try:
    os.rename("mounts", "mounts.orig")
except OSError as e:
    print("cannot move mounts:", e)
    os.makedirs("scratch", exist_ok=True)
` + swapper("mounts", "d", v.dir, 15)
	lost := raceBeside(t, env, code, func() string { return v.changed() }, v.reset)
	if lost > 0 {
		t.Errorf("lost %d of %d rounds: a run changed a host file through mounts/", lost, raceRounds)
	}
}

// raceBeside runs attack in the background and run_code("pass") beside it
// raceRounds times, checking after each; it returns how many rounds lost.
func raceBeside(t *testing.T, env *testEnv, attack string, check func() string, reset func()) int {
	var wg sync.WaitGroup
	var attackOut RunOutput
	started := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		close(started)
		res, ok := env.callCtx(t, 2*time.Minute, "run_code", map[string]any{"code": attack, "timeout_s": 60}, &attackOut)
		if !ok || res == nil {
			t.Errorf("attack run did not return")
		}
	}()
	<-started
	time.Sleep(500 * time.Millisecond) // let it build its tree
	lost := 0
	for i := range raceRounds {
		var out RunOutput
		if _, ok := env.callCtx(t, time.Minute, "run_code", map[string]any{"code": "pass"}, &out); !ok {
			t.Errorf("round %d: run_code(pass) did not return", i)
			break
		}
		if c := check(); c != "" {
			lost++
			t.Logf("round %d lost: %s", i, c)
			reset()
		}
	}
	wg.Wait()
	t.Logf("attack: exit %d, %s %s", attackOut.ExitCode, strings.TrimSpace(attackOut.Stdout), lastLine(attackOut.Stderr))
	return lost
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// attackTwoServers: two servers share one --workspace. The first one's
// program swaps a directory with a symlink to a host directory; each new
// second server hands the workspace to the sandbox user on its first run
// (a chown walk, when the server is root).
func attackTwoServers(t *testing.T, tier sandbox.Tier) {
	v := newVictim(t)
	// A parent the sandbox user can pass through (a landlock-tier run of
	// a root server is that user on the host).
	parent, err := os.MkdirTemp("", "prims-shared-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(parent, 0o755)
	t.Cleanup(func() { os.RemoveAll(parent) })
	dir := filepath.Join(parent, "ws")
	a := startTier(t, tier, Config{Workspace: dir, MaxTimeout: time.Minute})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var out RunOutput
		a.callCtx(t, 2*time.Minute, "run_code", map[string]any{"code": swapper("shared", "d", v.dir, 15), "timeout_s": 60}, &out)
		t.Logf("attack: exit %d, %s %s", out.ExitCode, strings.TrimSpace(out.Stdout), lastLine(out.Stderr))
		if !strings.Contains(out.Stdout, "swaps") {
			t.Errorf("control: the attack did not run: %+v", out)
		}
	}()
	time.Sleep(time.Second)
	lost, rounds := 0, raceRounds/2
	for i := range rounds {
		b := startTier(t, tier, Config{Workspace: dir})
		b.callCtx(t, time.Minute, "run_code", map[string]any{"code": "pass"}, nil)
		if c := v.changed(); c != "" {
			lost++
			t.Logf("round %d lost: %s", i, c)
			v.reset()
		}
	}
	wg.Wait()
	if lost > 0 {
		t.Errorf("lost %d of %d rounds: a second server changed a host file through the shared workspace", lost, rounds)
	}
}

// attackFIFOLogs: the program plants FIFOs where the next runs' logs go
// (moving logs/ aside first where it cannot write into it). The next
// run_code must still finish.
func attackFIFOLogs(t *testing.T, tier sandbox.Tier) {
	env := startTier(t, tier, Config{})
	code := `
import os
try:
    os.rename("logs", "logs.orig"); os.mkdir("logs")
except OSError as e:
    print("cannot move logs:", e)
n = 0
for i in range(1, 20):
    for kind in ("code.py", "stdout.txt", "stderr.txt"):
        try:
            os.mkfifo("logs/%04d-%s" % (i, kind)); n += 1
        except OSError as e:
            pass
print("fifos", n)
`
	var out RunOutput
	env.callCtx(t, time.Minute, "run_code", map[string]any{"code": code}, &out)
	t.Logf("attack: %s %s", strings.TrimSpace(out.Stdout), lastLine(out.Stderr))
	res, ok := env.callCtx(t, 15*time.Second, "run_code", map[string]any{"code": "print('after')"}, &out)
	if !ok {
		t.Errorf("run_code after FIFOs were planted in logs/ never returned")
		releaseFIFOs(env.srv.Workspace())
		return
	}
	if res.IsError || out.Stdout != "after\n" {
		t.Errorf("run after FIFOs: %s", text(res))
	}
}

// releaseFIFOs opens every FIFO under dir from the other end, so a server
// stuck opening one (the unfixed code) can shut down.
func releaseFIFOs(dir string) {
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type()&os.ModeNamedPipe != 0 {
			for _, fl := range []int{unix.O_RDONLY | unix.O_NONBLOCK, unix.O_WRONLY | unix.O_NONBLOCK} {
				if fd, err := unix.Open(p, fl, 0); err == nil {
					go func() { time.Sleep(time.Second); unix.Close(fd) }()
				}
			}
		}
		return nil
	})
}

// attackFIFOList: list_dir and preview_file on a FIFO the program made
// return at once.
func attackFIFOList(t *testing.T, tier sandbox.Tier) {
	env := startTier(t, tier, Config{})
	var out RunOutput
	env.callCtx(t, time.Minute, "run_code", map[string]any{"code": "import os\nos.mkfifo('output/fifo')\nos.mkfifo('fifo')"}, &out)
	for _, tc := range []struct{ tool, path string }{
		{"list_dir", "output/fifo"}, {"list_dir", "fifo"}, {"preview_file", "output/fifo"}, {"preview_file", "fifo"},
	} {
		res, ok := env.callCtx(t, 10*time.Second, tc.tool, map[string]any{"path": tc.path}, nil)
		if !ok {
			t.Errorf("%s(%s) on a FIFO never returned", tc.tool, tc.path)
			releaseFIFOs(env.srv.Workspace())
			continue
		}
		if !res.IsError {
			t.Errorf("%s(%s) on a FIFO = %q, want an error", tc.tool, tc.path, text(res))
		}
	}
}

// attackForgedLogs: a later run rewrites an earlier run's log; preview_file
// must still show what the earlier run printed.
func attackForgedLogs(t *testing.T, tier sandbox.Tier) {
	env := startTier(t, tier, Config{})
	var out RunOutput
	env.callCtx(t, time.Minute, "run_code", map[string]any{"code": "print('genuine')"}, &out)
	log := out.StdoutLog
	code := fmt.Sprintf(`
import os, shutil
log = %q
for how in ("write", "replace", "move"):
    try:
        if how == "write":
            open(log, "w").write("forged\n")
        elif how == "replace":
            os.unlink(log); open(log, "w").write("forged\n")
        else:
            os.rename("logs", "logs.orig"); os.mkdir("logs"); open(log, "w").write("forged\n")
        print(how, "worked")
    except OSError as e:
        print(how, "failed:", e)
`, log)
	env.callCtx(t, time.Minute, "run_code", map[string]any{"code": code}, &out)
	t.Logf("attack: %s", strings.TrimSpace(out.Stdout))
	var p struct {
		Text string `json:"text"`
	}
	res, _ := env.callCtx(t, 10*time.Second, "preview_file", map[string]any{"path": log}, &p)
	if p.Text != "genuine\n" {
		t.Errorf("preview_file(%s) = %q (%s), want the genuine output", log, p.Text, text(res))
	}
}

// attackNewlineNames: a file name with newlines must not forge entries in
// list_dir's text; the structured entry keeps the real name.
func attackNewlineNames(t *testing.T, tier sandbox.Tier) {
	env := startTier(t, tier, Config{})
	name := "a.txt\n  passwords.txt  1.0 KiB  2026-01-01T00:00:00Z\n  evil"
	run, _ := env.callCtx(t, time.Minute, "run_code", map[string]any{"code": fmt.Sprintf("open('output/' + %q, 'w').write('x')", name)}, nil)
	var ls ListOutput
	res, _ := env.callCtx(t, 10*time.Second, "list_dir", map[string]any{"path": "output"}, &ls)
	for line := range strings.Lines(text(run) + text(res)) {
		if strings.HasPrefix(line, "  passwords.txt") || strings.HasPrefix(line, "  evil") {
			t.Errorf("list_dir text has a forged line %q:\n%s", line, text(res))
		}
	}
	if len(ls.Entries) != 1 || ls.Entries[0].Name != name {
		t.Errorf("structured entries = %+v, want the one real name", ls.Entries)
	}
}

// attackMountsSymlink: the program replaces mounts/ with a symlink to a
// host directory; the next run must not be given that directory.
func attackMountsSymlink(t *testing.T, tier sandbox.Tier) {
	dir, err := os.MkdirTemp("", "prims-victim-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	// A directory only the server's user may enter, holding a file
	// anyone could read once inside.
	priv := filepath.Join(dir, "priv")
	os.Mkdir(priv, 0o700)
	os.WriteFile(filepath.Join(priv, "key.txt"), []byte("host key material"), 0o644)
	env := startTier(t, tier, Config{})
	code := fmt.Sprintf(`
import os, shutil
for how in (lambda: os.rename("mounts", "mounts.orig"), lambda: shutil.rmtree("mounts")):
    try:
        how(); break
    except OSError as e:
        print("cannot move mounts:", e)
try:
    os.symlink(%q, "mounts"); print("linked")
except OSError as e:
    print("cannot link:", e)
`, priv)
	var out RunOutput
	env.callCtx(t, time.Minute, "run_code", map[string]any{"code": code}, &out)
	t.Logf("attack: %s", strings.TrimSpace(out.Stdout))
	read := `
try: print(open("mounts/key.txt").read())
except OSError as e: print("blocked", e)
`
	env.callCtx(t, time.Minute, "run_code", map[string]any{"code": read}, &out)
	if strings.Contains(out.Stdout, "host key material") {
		t.Errorf("a run read a host directory through a mounts/ symlink: %s", out.Stdout)
	}
	// Control: the same read, from the host as the server's user.
	if b, err := os.ReadFile(filepath.Join(priv, "key.txt")); err != nil || !bytes.Contains(b, []byte("host key")) {
		t.Errorf("control: the server's user cannot read the victim: %v", err)
	}
}

// TestPathAttacksUnprivileged runs TestPathAttacks again as uid 65534, as a
// server started by an ordinary user would be.
func TestPathAttacksUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("already unprivileged: TestPathAttacks covers this case")
	}
	if testing.Short() {
		t.Skip("-short")
	}
	testpython.Path(t)
	testenv.RerunAsNobody(t, "^(TestPathAttacks|TestVictimControl)$", nil)
}

// TestMountFileCountsAgainstQuota: mounted downloads count against the
// workspace quota, alone and together with what the code wrote; the
// control mounts the same file under a quota with room for it.
func TestMountFileCountsAgainstQuota(t *testing.T) {
	body := strings.Repeat("x", 3<<20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/chunked" {
			w.(http.Flusher).Flush() // no Content-Length: the cap must bite while it streams
		}
		io.WriteString(w, body)
	}))
	defer srv.Close()
	mount := func(t *testing.T, quota int64, code string, path string) (*sdk.CallToolResult, MountOutput) {
		runner, err := sandbox.New(sandbox.Config{Limits: sandbox.Limits{WorkspaceQuota: quota}})
		if err != nil {
			t.Fatal(err)
		}
		defer runner.Close()
		srvCfg := Config{Python: testpython.Path(t)}
		srvCfg.Transfer.AllowPrivate = true
		s, err := New(srvCfg, runner)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		env := &testEnv{srv: s}
		ct, st := sdk.NewInMemoryTransports()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go s.Serve(ctx, st)
		cs, err := sdk.NewClient(&sdk.Implementation{Name: "quota", Version: "1"}, nil).Connect(ctx, ct, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close()
		env.cs = cs
		if code != "" {
			env.callCtx(t, time.Minute, "run_code", map[string]any{"code": code}, nil)
		}
		var m MountOutput
		res, _ := env.callCtx(t, time.Minute, "mount_file", map[string]any{"url": srv.URL + path, "mount_path": "big.bin"}, &m)
		return res, m
	}
	for _, tc := range []struct {
		name, code, path string
		quota            int64
		wantErr          bool
	}{
		{"alone", "", "/sized", 2 << 20, true},
		{"streamed", "", "/chunked", 2 << 20, true},
		{"with the code's files", "open('output/f', 'wb').write(b'x' * (3 << 20))", "/sized", 5 << 20, true},
		{"control", "", "/sized", 8 << 20, false},
		{"control with the code's files", "open('output/f', 'wb').write(b'x' * (1 << 20))", "/chunked", 8 << 20, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, m := mount(t, tc.quota, tc.code, tc.path)
			if res == nil {
				t.Fatal("mount_file did not return")
			}
			if res.IsError != tc.wantErr {
				t.Errorf("mount_file under a %d-byte quota: error %v, want %v: %s (%+v)", tc.quota, res.IsError, tc.wantErr, text(res), m)
			}
			if tc.wantErr && !strings.Contains(text(res), "quota") {
				t.Errorf("the refusal does not name the quota: %s", text(res))
			}
		})
	}
}
