package sandbox

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prims-mcp/prims/internal/testenv"
	"github.com/prims-mcp/prims/internal/testpython"
	"github.com/prims-mcp/prims/sandbox/sandboxtest"
)

// The attacks here aim at what is new with a zygote (issue 16): several
// runs forked from one long-lived sandbox, side by side, and a zygote and a
// PID 1 per run that keep capabilities next to the program. TestEscapeWarm
// already runs the whole escape suite through forked runs.

// zygoteRunner is a namespaces-tier runner whose runs fork from a zygote.
func zygoteRunner(t *testing.T) *Runner {
	t.Helper()
	return zygoteRunnerWith(t, Config{})
}

// zygoteRunnerWith is zygoteRunner with more of cfg.
func zygoteRunnerWith(t *testing.T, cfg Config) *Runner {
	t.Helper()
	testpython.Path(t)
	if !Probe().Can(TierNamespaces) {
		testenv.Skip(t, testenv.Userns, "%s", Probe().Missing())
	}
	cfg.Tier, cfg.Warm, cfg.Limits = TierNamespaces, 1, testLimits
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// zygoteWorkspace is a workspace whose zygote is ready: its first run is
// cold and starts it.
func zygoteWorkspace(t *testing.T, r *Runner) string {
	t.Helper()
	ws := mkWorkspace(t)
	t.Cleanup(func() { r.ForgetDir(ws) })
	res, _, _ := zrun(t, r, context.Background(), ws, "pass", nil)
	if res.Warm {
		t.Fatal("a first run in a new workspace cannot be forked")
	}
	waitZygote(t, r, ws)
	return ws
}

// waitZygote waits until ws has a live zygote.
func waitZygote(t *testing.T, r *Runner, ws string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for zygoteOf(r, ws) == nil {
		if time.Now().After(deadline) {
			t.Fatal("the workspace's zygote never started")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// zygoteOf returns ws's live zygote, or nil.
func zygoteOf(r *Runner, ws string) *zygote {
	zs := &r.zygotes
	zs.mu.Lock()
	defer zs.mu.Unlock()
	for _, z := range zs.m {
		if z.job.Dir == ws && z.alive() {
			return z
		}
	}
	return nil
}

// zrun runs code in ws; stdout goes to out as well when out is set.
func zrun(t *testing.T, r *Runner, ctx context.Context, ws, code string, edit func(*Job)) (Result, string, string) {
	t.Helper()
	var out, errOut lockedBuffer
	job := Job{Python: testpython.Path(t), Code: code, Dir: ws, ReadOnly: readOnlyOf(ws), Stdout: &out, Stderr: &errOut, Timeout: 30 * time.Second}
	if edit != nil {
		edit(&job)
	}
	res, err := r.Run(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	return res, out.String(), errOut.String()
}

// zwarm runs code in ws and fails unless it was forked by the zygote.
func zwarm(t *testing.T, r *Runner, ws, code string) (Result, string, string) {
	t.Helper()
	res, out, errOut := zrun(t, r, context.Background(), ws, code, nil)
	if !res.Warm {
		t.Fatalf("the run was not forked by the zygote (stderr %s)", errOut)
	}
	return res, out, errOut
}

// zygoteHolder is what run A holds for a neighbour to reach: files in its
// /tmp and /dev/shm, an abstract socket, SysV segments, a child process
// whose argv carries the token; it writes it all to a.json in the shared
// workspace.
const zygoteHolder = `
import ctypes, json, os, socket, subprocess, sys, time
tok = %q
open("/tmp/a-secret", "w").write("A")
open("/dev/shm/a-secret", "w").write("A")
lst = socket.socket(socket.AF_UNIX)
lst.bind("\0prims-z1-" + tok)
lst.listen(8)
libc = ctypes.CDLL(None, use_errno=True)
shm = libc.shmget(0x5eed1, 4096, 0o1600)
msq = libc.msgget(0x5eed2, 0o1600)
assert shm >= 0 and msq >= 0, ctypes.get_errno()
kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", tok])
ns = {n: os.readlink("/proc/self/ns/" + n) for n in ("pid", "ipc", "mnt", "net")}
json.dump({"pid": os.getpid(), "kid": kid.pid, "shm": shm, "msq": msq, "ns": ns, "tok": tok}, open("a.tmp", "w"))
os.rename("a.tmp", "a.json")
`

// zygoteProbe tries to reach what a.json names and prints which attempts
// worked as JSON; it runs as run B, or as a child of run A (the control).
const zygoteProbe = `
import ctypes, json, os, socket, sys
a = json.load(open("a.json"))
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.shmat.restype = ctypes.c_void_p
got = {}
see = False
for p in os.listdir("/proc"):
    if p.isdigit():
        try: see = see or a["tok"].encode() in open("/proc/%s/cmdline" % p, "rb").read()
        except OSError: pass
got["see A in /proc"] = see
me = os.getpid()
sig = []
for pid in list(range(2, 1 << 15)) + [a["kid"], a["pid"], a["host_kid"]]:
    if pid in (me, os.getppid() if sys.argv[-1] == "B" else -1):
        continue
    try:
        os.kill(pid, 0)
        sig.append(pid)
    except OSError:
        pass
got["signal another process"] = bool(sig)
got["ptrace A's child"] = libc.ptrace(0x4206, a["kid"], None, None) == 0 or libc.ptrace(16, a["host_kid"], None, None) == 0
for f in ("/tmp/a-secret", "/dev/shm/a-secret"):
    try: got["read " + f] = open(f).read() == "A"
    except OSError: got["read " + f] = False
try:
    s = socket.socket(socket.AF_UNIX)
    s.connect("\0prims-z1-" + a["tok"])
    got["connect A's abstract socket"] = True
except OSError:
    got["connect A's abstract socket"] = False
got["SysV shmget A's key"] = libc.shmget(0x5eed1, 0, 0) >= 0
got["SysV shmat A's id"] = libc.shmat(a["shm"], None, 0) not in (None, ctypes.c_void_p(-1).value)
got["SysV msgget A's key"] = libc.msgget(0x5eed2, 0) >= 0
print(json.dumps(got, sort_keys=True))
`

// TestZygoteRunsCannotReachEachOther runs B while A, forked from the same
// zygote, holds files, sockets, SysV objects and a child: B reaches none.
// The control is a child of A, which reaches all but ptrace (seccomp).
// With --network the runs share the host's network namespace, where
// Landlock's scope must keep abstract sockets apart.
func TestZygoteRunsCannotReachEachOther(t *testing.T) {
	t.Parallel()
	for _, network := range []bool{false, true} {
		t.Run("network="+strconv.FormatBool(network), func(t *testing.T) {
			t.Parallel()
			testRunsCannotReachEachOther(t, zygoteRunnerWith(t, Config{Network: network}))
		})
	}
}

func testRunsCannotReachEachOther(t *testing.T, r *Runner) {
	ws := zygoteWorkspace(t, r)
	tok := sandboxtest.Token(t)
	probe := filepath.Join(ws, "probe.py")
	if err := os.WriteFile(probe, []byte(zygoteProbe), 0o644); err != nil {
		t.Fatal(err)
	}

	// The control: a child of the run that holds everything.
	ctl := strings.Replace(zygoteHolder, "%q", strconv.Quote(tok+"c"), 1) + `
d = json.load(open("a.json")); d["host_kid"] = kid.pid; json.dump(d, open("a.json", "w"))
print(subprocess.run([sys.executable, "probe.py", "ctl"], stdout=subprocess.PIPE, check=True).stdout.decode(), end="")
kid.kill()
`
	res, out, errOut := zwarm(t, r, ws, ctl)
	var got map[string]bool
	if err := json.Unmarshal([]byte(out), &got); err != nil || res.ExitCode != 0 {
		t.Fatalf("control: exit %d, %v: %s %s", res.ExitCode, err, out, errOut)
	}
	t.Logf("control (a child of A): %s", out)
	for what, ok := range got {
		if !ok && what != "ptrace A's child" {
			t.Errorf("control: a child of the run cannot %s: the probe is blind", what)
		}
	}
	os.Remove(filepath.Join(ws, "a.json"))

	// A and B side by side.
	holder := strings.Replace(zygoteHolder, "%q", strconv.Quote(tok), 1) + `
while not os.path.exists("b.done"): time.sleep(0.02)
print("kid", kid.poll(), os.path.exists("/tmp/a-secret"))
kid.kill()
`
	var wg sync.WaitGroup
	var resA Result
	var outA, errA string
	wg.Add(1)
	go func() {
		defer wg.Done()
		resA, outA, errA = zrun(t, r, context.Background(), ws, holder, nil)
		os.WriteFile(filepath.Join(ws, "b.done"), nil, 0o644) // A ended early: do not wait for B
	}()
	defer wg.Wait()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(ws, "a.json")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			os.WriteFile(filepath.Join(ws, "b.done"), nil, 0o644)
			wg.Wait()
			t.Fatalf("run A never got ready: %s %s", outA, errA)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// B also aims at A's child by its host pid.
	hostKid := sandboxtest.Procs(tok)
	if len(hostKid) != 1 {
		t.Fatalf("A's child on the host: %v", hostKid)
	}
	b, _ := os.ReadFile(filepath.Join(ws, "a.json"))
	var a map[string]any
	json.Unmarshal(b, &a)
	a["host_kid"] = hostKid[0]
	b, _ = json.Marshal(a)
	os.WriteFile(filepath.Join(ws, "a.json"), b, 0o644)

	res, out, errOut = zwarm(t, r, ws, `import runpy, sys; sys.argv = ["probe.py", "B"]; runpy.run_path("probe.py")`)
	os.WriteFile(filepath.Join(ws, "b.done"), nil, 0o644)
	wg.Wait()
	got = nil
	if err := json.Unmarshal([]byte(out), &got); err != nil || res.ExitCode != 0 {
		t.Fatalf("B: exit %d, %v: %s %s", res.ExitCode, err, out, errOut)
	}
	t.Logf("run B: %s", out)
	if len(got) < 8 {
		t.Fatalf("B ran %d probes: %s", len(got), out)
	}
	for what, ok := range got {
		if ok {
			t.Errorf("run B can %s of run A, forked from the same zygote", what)
		}
	}
	if !resA.Warm || resA.ExitCode != 0 || outA != "kid None True\n" {
		t.Errorf("run A was disturbed: warm %v exit %d %q %s", resA.Warm, resA.ExitCode, outA, errA)
	}
}

// TestZygoteRunCannotReachItsPID1 attacks P, the run's PID 1, which holds
// the run's socket to the server and keeps capabilities, and looks for
// the zygote: signals do nothing, its /proc is closed, ptrace fails, the
// zygote is not there at all, and the run has no socket to forge its exit
// status through.
func TestZygoteRunCannotReachItsPID1(t *testing.T) {
	t.Parallel()
	r := zygoteRunner(t)
	ws := zygoteWorkspace(t, r)
	const code = `
import ctypes, json, os, stat, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
got = {}
got["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
got["own environ"] = len(open("/proc/self/environ", "rb").read()) > 0
for f in ("fd", "mem", "environ", "root/"):
    try:
        if f == "fd":
            for n in os.listdir("/proc/1/fd"):
                try:
                    os.readlink("/proc/1/fd/" + n)
                    got["readlink /proc/1/fd/" + n] = True
                except OSError: pass
                try:
                    os.close(os.open("/proc/1/fd/" + n, os.O_RDONLY | os.O_NONBLOCK))
                    got["open /proc/1/fd/" + n] = True
                except OSError: pass
            got["list /proc/1/fd"] = len(os.listdir("/proc/1/fd"))
            continue
        else: open("/proc/1/" + f, "rb").read(1)
        got["/proc/1/" + f] = True
    except OSError:
        got["/proc/1/" + f] = False
got["ptrace attach"] = libc.ptrace(16, 1, None, None) == 0
got["ptrace seize"] = libc.ptrace(0x4206, 1, None, None) == 0
socks = []
for fd in os.listdir("/proc/self/fd"):
    try:
        if stat.S_ISSOCK(os.fstat(int(fd)).st_mode): socks.append(int(fd))
    except OSError: pass
got["sockets"] = socks
for sig in (9, 15, 2):
    try:
        os.kill(1, sig)
    except OSError:
        pass
time.sleep(0.3)
print(json.dumps(got, sort_keys=True), flush=True)
sys.exit(7)
`
	res, out, errOut := zwarm(t, r, ws, code)
	if res.ExitCode != 7 || res.Signal != "" {
		t.Fatalf("the run did not report its own exit status after signalling its PID 1: exit %d signal %q: %s %s", res.ExitCode, res.Signal, out, errOut)
	}
	var got struct {
		Pids       []int
		OwnEnviron bool `json:"own environ"`
		Mem        bool `json:"/proc/1/mem"`
		Environ    bool `json:"/proc/1/environ"`
		Root       bool `json:"/proc/1/root/"`
		Attach     bool `json:"ptrace attach"`
		Seize      bool `json:"ptrace seize"`
		Sockets    []int
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v: %s %s", err, out, errOut)
	}
	t.Logf("%s", out)
	// The control: /proc/1 is there to aim at, and the probe reads /proc.
	if len(got.Pids) == 0 || got.Pids[0] != 1 || !got.OwnEnviron {
		t.Fatalf("the run does not see its PID 1 or its own /proc: the probe is blind: %s", out)
	}
	if len(got.Pids) != 2 {
		t.Errorf("the run sees processes besides its PID 1 and itself (the zygote?): %v", got.Pids)
	}
	// Listing /proc/1/fd shows descriptor numbers only (the directory
	// belongs to the namespace's root, which the run is); what they are
	// and opening them needs ptrace access, which must fail.
	var all map[string]any
	json.Unmarshal([]byte(out), &all)
	for k, v := range all {
		if (strings.HasPrefix(k, "readlink /proc/1/fd/") || strings.HasPrefix(k, "open /proc/1/fd/")) && v == true {
			t.Errorf("the run can %s, its PID 1's descriptor", k)
		}
	}
	if got.Mem || got.Environ || got.Root || got.Attach || got.Seize {
		t.Errorf("the run reaches its PID 1: %s", out)
	}
	if len(got.Sockets) != 0 {
		t.Errorf("the run holds sockets %v (its PID 1's to the server?)", got.Sockets)
	}
	// The zygote lives on.
	if res, out, _ := zwarm(t, r, ws, "print(1)"); res.ExitCode != 0 || out != "1\n" {
		t.Errorf("the next run: exit %d %q", res.ExitCode, out)
	}
}

// TestZygoteRunHasNoPrivileges checks the confinement of a forked run and
// of a program it execs: no capabilities of any kind, no_new_privs,
// seccomp, no namespaces or mounts, and writes only to the workspace and
// /tmp (the control).
func TestZygoteRunHasNoPrivileges(t *testing.T) {
	t.Parallel()
	r := zygoteRunner(t)
	ws := zygoteWorkspace(t, r)
	const code = `
import ctypes, json, os, subprocess, sys
STATUS = "import json; print(json.dumps({l.split(':')[0]: l.split()[1] for l in open('/proc/self/status') if l.startswith(('Cap', 'NoNewPrivs', 'Seccomp:'))}))"
got = {}
got["run"] = {l.split(":")[0]: l.split()[1] for l in open("/proc/self/status") if l.startswith(("Cap", "NoNewPrivs", "Seccomp:"))}
got["exec"] = json.loads(subprocess.run(["/bin/sh", "-c", 'exec "$0" -c "$1"', sys.executable, STATUS], stdout=subprocess.PIPE, check=True).stdout)
libc = ctypes.CDLL(None, use_errno=True)
ops = {}
ops["unshare user"] = libc.unshare(0x10000000) == 0
ops["unshare mount"] = libc.unshare(0x00020000) == 0
ops["mount tmpfs"] = libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None) == 0
fd = os.open("/proc/self/ns/net", os.O_RDONLY)
ops["setns"] = libc.setns(fd, 0) == 0
for p in ("/etc/prims-z1", "/usr/prims-z1", "/prims-z1", "/var/tmp/prims-z1", "/dev/shm/../prims-z1"):
    try:
        open(p, "w").write("x")
        ops["write " + p] = True
    except OSError:
        ops["write " + p] = False
for p in ("output/ok", "/tmp/ok", "/dev/shm/ok"):
    open(p, "w").write("x")
got["ops"] = ops
print(json.dumps(got, sort_keys=True))
`
	res, out, errOut := zwarm(t, r, ws, code)
	var got struct {
		Run, Exec map[string]string
		Ops       map[string]bool
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil || res.ExitCode != 0 {
		t.Fatalf("exit %d %v: %s %s", res.ExitCode, err, out, errOut)
	}
	t.Logf("%s", out)
	for _, st := range []map[string]string{got.Run, got.Exec} {
		for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
			if st[k] != "0000000000000000" {
				t.Errorf("%s = %q in %v", k, st[k], st)
			}
		}
		if st["NoNewPrivs"] != "1" || st["Seccomp"] != "2" {
			t.Errorf("NoNewPrivs %q Seccomp %q", st["NoNewPrivs"], st["Seccomp"])
		}
	}
	if len(got.Ops) != 9 {
		t.Fatalf("ran %d probes: %v", len(got.Ops), got.Ops)
	}
	for op, ok := range got.Ops {
		if ok {
			t.Errorf("a forked run can %s", op)
		}
	}
	for _, f := range []string{"/etc/prims-z1", "/usr/prims-z1", "/prims-z1"} {
		if _, err := os.Lstat(f); err == nil {
			os.Remove(f)
			t.Errorf("%s was written on the host", f)
		}
	}
}

// notifyWriter captures output and closes seen once it contains want.
type notifyWriter struct {
	lockedBuffer
	want string
	once sync.Once
	seen chan struct{}
}

func newNotifyWriter(want string) *notifyWriter {
	return &notifyWriter{want: want, seen: make(chan struct{})}
}

func (w *notifyWriter) Write(p []byte) (int, error) {
	n, err := w.lockedBuffer.Write(p)
	if strings.Contains(w.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return n, err
}

// waitSeen waits for w's output, or fails the test.
func waitSeen(t *testing.T, w *notifyWriter, done <-chan struct{}) {
	t.Helper()
	select {
	case <-w.seen:
	case <-done:
		t.Fatalf("the run ended before printing %q: %s", w.want, w.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("the run never printed %q: %s", w.want, w.String())
	}
}

// TestZygoteTreeKill double-forks a daemon in its own session from a
// forked run: whether the run exits, times out or is cancelled, nothing of
// it is left on the host, and the zygote lives on and forks the next run.
// The control: the host sees the daemon while the run lives.
func TestZygoteTreeKill(t *testing.T) {
	t.Parallel()
	r := zygoteRunner(t)
	for _, how := range []string{"exit", "timeout", "cancel"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			ws := zygoteWorkspace(t, r)
			token := sandboxtest.Token(t)
			code := `import os, subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import os, time\nif os.fork(): os._exit(0)\nos.setsid()\nopen('daemon.up', 'w').close()\ntime.sleep(300)", ` + strconv.Quote(token) + `], start_new_session=True)
while not os.path.exists("daemon.up"): time.sleep(0.01)
print("started", flush=True)
if ` + strconv.Quote(how) + ` == "exit":
    while not os.path.exists("end"): time.sleep(0.01)
    print("exiting", flush=True)
else:
    time.sleep(120)
`
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			out := newNotifyWriter("started")
			job := Job{Python: testpython.Path(t), Code: code, Dir: ws, ReadOnly: readOnlyOf(ws), Stdout: out, Stderr: out, Timeout: 60 * time.Second}
			if how == "timeout" {
				job.Timeout = 5 * time.Second
			}
			done := make(chan struct{})
			var res Result
			var err error
			go func() {
				defer close(done)
				res, err = r.Run(ctx, job)
			}()
			waitSeen(t, out, done)
			if len(sandboxtest.Procs(token)) == 0 {
				t.Error("the host does not see the daemon while the run lives: the check is blind")
			}
			switch how {
			case "exit":
				os.WriteFile(filepath.Join(ws, "end"), nil, 0o644)
			case "cancel":
				cancel()
			}
			select {
			case <-done:
			case <-time.After(60 * time.Second):
				t.Fatal("the run did not end")
			}
			if err != nil {
				t.Fatal(err)
			}
			ok := map[string]bool{"exit": res.ExitCode == 0, "timeout": res.TimedOut, "cancel": res.Cancelled}[how]
			if !res.Warm || !ok {
				t.Errorf("warm %v exit %d timed out %v cancelled %v: %s", res.Warm, res.ExitCode, res.TimedOut, res.Cancelled, out.String())
			}
			sandboxtest.WaitGone(t, token)
			if res, out, _ := zwarm(t, r, ws, "print('next')"); res.ExitCode != 0 || out != "next\n" {
				t.Errorf("the next run: exit %d %q", res.ExitCode, out)
			}
		})
	}
}

// TestZygoteLimits breaks each limit in a forked run while another run of
// the same zygote works alongside: the breaking run is ended with the
// limit, the neighbour finishes, the zygote forks the next run.
func TestZygoteLimits(t *testing.T) {
	t.Parallel()
	r := zygoteRunner(t)
	for _, c := range []struct{ name, code, limit string }{
		{"memory", "x = bytearray(1 << 30)\nfor i in range(0, len(x), 4096): x[i] = 1\nprint('allocated')", LimitMemory},
		{"fork bomb", "import os, time\nwhile True:\n    if os.fork() == 0:\n        time.sleep(60); os._exit(0)", LimitMaxProcs},
		{"cpu", "while True: pass", LimitCPUTime},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ws := zygoteWorkspace(t, r)
			// The neighbour waits for the breaking run to end, then forks.
			nb := newNotifyWriter("up")
			nbDone := make(chan struct{})
			var nbRes Result
			go func() {
				defer close(nbDone)
				nbRes, _, _ = zrun(t, r, context.Background(), ws, `import os, subprocess, sys, time
print("up", flush=True)
while not os.path.exists("broken"): time.sleep(0.01)
print(subprocess.run([sys.executable, "-c", "print('child')"], stdout=subprocess.PIPE, check=True).stdout.decode(), end="")
`, func(j *Job) { j.Stdout = nb })
			}()
			waitSeen(t, nb, nbDone)
			res, out, errOut := zwarm(t, r, ws, c.code)
			os.WriteFile(filepath.Join(ws, "broken"), nil, 0o644)
			if res.Limit != c.limit || res.ExitCode == 0 {
				t.Errorf("the run ended with limit %q exit %d, want %q: %s %s", res.Limit, res.ExitCode, c.limit, out, errOut)
			}
			<-nbDone
			if !nbRes.Warm || nbRes.ExitCode != 0 || nb.String() != "up\nchild\n" {
				t.Errorf("the neighbour run: warm %v exit %d limit %q %q", nbRes.Warm, nbRes.ExitCode, nbRes.Limit, nb.String())
			}
			if res, out, _ := zwarm(t, r, ws, "print('next')"); res.ExitCode != 0 || out != "next\n" {
				t.Errorf("the next run: exit %d %q", res.ExitCode, out)
			}
		})
	}
}

// TestZygoteForksAreFresh checks what forking could carry from the zygote
// into two runs: the random generators differ, ctypes (which the zygote
// uses and removes) is not loaded, and a module one run monkeypatches is
// pristine in the next.
func TestZygoteForksAreFresh(t *testing.T) {
	t.Parallel()
	r := zygoteRunner(t)
	ws := zygoteWorkspace(t, r)
	const code = `import os, random, sys, uuid
print(random.random(), os.urandom(8).hex(), uuid.uuid4(), random.getrandbits(64))
print("ctypes" in sys.modules, [m for m in sys.modules if m.startswith("ctypes")])
print(random.randint.__func__ is random.Random.randint, os.path.join("a", "b"))
print(hash("prims-z1"), hash(b"prims-z1"))
random.randint = None
os.path.join = lambda *a: "patched"
`
	var lines [][]string
	for i := range 2 {
		res, out, errOut := zwarm(t, r, ws, code)
		if res.ExitCode != 0 {
			t.Fatalf("run %d: exit %d: %s %s", i, res.ExitCode, out, errOut)
		}
		lines = append(lines, strings.Split(out, "\n"))
	}
	a, b := strings.Fields(lines[0][0]), strings.Fields(lines[1][0])
	for i, what := range []string{"random.random()", "os.urandom", "uuid.uuid4()", "random.getrandbits"} {
		if a[i] == b[i] {
			t.Errorf("%s is the same in two forked runs: %s", what, a[i])
		}
	}
	for i := range 2 {
		if lines[i][1] != "False []" {
			t.Errorf("run %d has ctypes loaded without importing it: %s", i, lines[i][1])
		}
		if lines[i][2] != "True a/b" {
			t.Errorf("run %d sees a patched module: %s", i, lines[i][2])
		}
	}
	// Recorded, not required: forks share the zygote's string hash secret
	// (PYTHONHASHSEED's), as all runs of one interpreter start would if it
	// were fixed. Hash flooding needs the attacker to feed the victim's
	// dict; runs share no dicts, so knowing the secret of its own run tells
	// a program nothing about anything it cannot already see. If this
	// changes (a zygote that rerandomizes), update the test.
	if lines[0][3] != lines[1][3] {
		t.Errorf("the string hash secret now differs between forked runs (%q, %q): update this record", lines[0][3], lines[1][3])
	}
}

// TestZygoteDeath kills the zygote's sandbox from the host while a run is
// in flight: the run ends, the server does not hang, the next run starts
// anew and the one after forks from a new zygote.
func TestZygoteDeath(t *testing.T) {
	t.Parallel()
	r := zygoteRunner(t)
	ws := zygoteWorkspace(t, r)
	z := zygoteOf(r, ws)
	out := newNotifyWriter("started")
	done := make(chan struct{})
	var res Result
	var err error
	go func() {
		defer close(done)
		res, err = r.Run(context.Background(), Job{Python: testpython.Path(t), Code: "import time\nprint('started', flush=True)\ntime.sleep(120)",
			Dir: ws, ReadOnly: readOnlyOf(ws), Stdout: out, Stderr: out, Timeout: 90 * time.Second})
	}()
	waitSeen(t, out, done)
	if err := syscallKill(z.c.pid); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the run did not end when its zygote's sandbox was killed")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the run: exit %d signal %q limit %q", res.ExitCode, res.Signal, res.Limit)
	if res.TimedOut || res.ExitCode == 0 {
		t.Errorf("the run: exit %d timed out %v signal %q", res.ExitCode, res.TimedOut, res.Signal)
	}
	// The dead zygote is noticed; the next run starts its own sandbox.
	deadline := time.Now().Add(20 * time.Second)
	for zygoteOf(r, ws) == z {
		if time.Now().After(deadline) {
			t.Fatal("the dead zygote is still registered as alive")
		}
		time.Sleep(5 * time.Millisecond)
	}
	res2, out2, errOut := zrun(t, r, context.Background(), ws, "print('cold')", nil)
	if res2.ExitCode != 0 || out2 != "cold\n" {
		t.Fatalf("the run after the zygote died: exit %d warm %v %q %s", res2.ExitCode, res2.Warm, out2, errOut)
	}
	waitZygote(t, r, ws)
	if nz := zygoteOf(r, ws); nz == z || nz == nil {
		t.Fatal("no new zygote")
	}
	if res, out, _ := zwarm(t, r, ws, "print('forked')"); res.ExitCode != 0 || out != "forked\n" {
		t.Errorf("the run of the new zygote: exit %d %q", res.ExitCode, out)
	}
}

func syscallKill(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }
