package sandbox

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prims-mcp/prims/internal/testenv"
	"github.com/prims-mcp/prims/internal/testpython"
)

// probePrelude is prepended to every attack. An attack prints "ESCAPED"
// when it worked; the controls run the same code unsandboxed and must
// print it, so no row can pass because its probe is broken.
const probePrelude = `
import os, sys, socket, ctypes, errno, time
E = os.environ
CONTROL = E.get("T_CONTROL") == "1"
libc = ctypes.CDLL(None, use_errno=True)
def esc(msg): print("ESCAPED", msg, flush=True)
def blocked(msg): print("blocked", msg, flush=True)
`

type attack struct {
	name string
	code string
	// control: the attack works unsandboxed here, so its control must
	// print ESCAPED (false when it would harm the host or needs root).
	control func() bool
	// check inspects the sandboxed result beyond "no ESCAPED".
	check func(t *testing.T, env *escapeEnv, res Result, out string)
	// only names the one tier where the attack is a hole (what it reaches
	// is private to a namespaces-tier run); "" means every tier.
	only Tier
	// limit, when it returns a reason, says the kernel offers no fix for
	// the attack in this tier under this server: the test then asserts
	// that it does get through, so the limit stays where the README says.
	limit func(tier Tier) string
}

func always() bool { return true }
func asRoot() bool { return os.Geteuid() == 0 }
func never() bool  { return false }
func wantLimit(l string) func(*testing.T, *escapeEnv, Result, string) {
	return func(t *testing.T, _ *escapeEnv, res Result, out string) {
		if res.Limit != l {
			t.Errorf("Limit = %q, want %q (exit %d %s)\n%s", res.Limit, l, res.ExitCode, res.Signal, out)
		}
	}
}

var attacks = []attack{
	{name: "read /etc/shadow", control: asRoot, code: `
try: open("/etc/shadow").read(1); esc("read shadow")
except OSError as e: blocked(e)`},
	{name: "list the home directory", control: always, code: `
try: esc(os.listdir(E["T_HOME"]))
except OSError as e: blocked(e)`},
	{name: "read another workspace", control: always, code: `
try: esc(open(E["T_OTHER_WS"] + "/output/secret.txt").read())
except OSError as e: blocked(e)`},
	{name: "read a file planted in /tmp", control: always, code: `
try: esc(open(E["T_PLANTED"]).read())
except OSError as e: blocked(e)`},
	{name: "server environment", control: always, code: `
if "PRIMS_TEST_SECRET" in E: esc("env")
for pid in (E["T_SERVER_PID"], str(os.getppid())):
    try:
        if b"PATH=" in open("/proc/%s/environ" % pid, "rb").read(): esc("/proc/%s/environ" % pid)
        else: blocked("no environment visible for %s" % pid)
    except OSError as e: blocked(e)`},
	{name: "write outside the workspace", control: always, code: `
for d in (E["T_OUTDIR"], "/tmp", "/", "/usr", "/etc", os.path.dirname(os.getcwd())):
    try:
        with open(os.path.join(d, "prims-escape"), "w") as f: f.write("x")
        # /tmp, and in the namespaces tier the workspace's parent (made on
        # the run's private /tmp), may be writable; check writes to the
        # host's from outside (see check).
        if CONTROL or os.path.realpath(d) not in ("/tmp", os.path.dirname(os.getcwd())): esc("wrote in " + d)
        elif os.path.realpath(d) == "/tmp": os.unlink(os.path.join(d, "prims-escape"))
    except OSError as e: blocked(e)`, check: func(t *testing.T, env *escapeEnv, res Result, out string) {
		if _, err := os.Lstat(filepath.Join(filepath.Dir(env.ws), "prims-escape")); err == nil {
			t.Errorf("the run wrote into the host directory holding the workspace")
		}
	}},
	{name: "write into mounts/", control: always, code: `
def chmod_then_write():
    # Landlock does not cover chmod (the file is the server's user's under
    # an unprivileged server): what must hold is that the mode opens no
    # write.
    try: os.chmod("mounts/input.txt", 0o666)
    except OSError: pass
    open("mounts/input.txt", "a").write("x")
for name, op in (("append", lambda: open("mounts/input.txt", "a").write("x")), ("create", lambda: open("mounts/new.txt", "w").write("x")), ("unlink", lambda: os.unlink("mounts/input.txt")), ("rename", lambda: os.rename("mounts/input.txt", "mounts/moved.txt")), ("chmod, then append", chmod_then_write)):
    try: op(); esc("changed mounts/: " + name)
    except OSError as e: blocked(e)`},
	{name: "create a setuid file", control: always, code: `
for p in ("output/suid", "suid2"):
    try:
        open(p, "w").close(); os.chmod(p, 0o4755)
        if os.stat(p).st_mode & 0o4000: esc("setuid via chmod")
    except OSError as e: blocked(e)
try:
    fd = os.open("output/suid3", os.O_CREAT | os.O_WRONLY, 0o6755); os.close(fd)
    if os.stat("output/suid3").st_mode & 0o6000: esc("setuid via open")
except OSError as e: blocked(e)`},
	{name: "TCP connect to a host listener", control: always, code: `
try: socket.create_connection(("127.0.0.1", int(E["T_TCP_PORT"])), timeout=2); esc("tcp")
except OSError as e: blocked(e)`},
	{name: "UDP exchange with a host listener", control: always, code: `
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
    s.sendto(b"ping", ("127.0.0.1", int(E["T_UDP_PORT"]))); s.recvfrom(16); esc("udp")
except OSError as e: blocked(e)`},
	{name: "abstract unix socket connect", control: always, code: `
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(2)
    s.connect("\0" + E["T_ABSTRACT"]); esc("abstract")
except OSError as e: blocked(e)`},
	{name: "ptrace a process", control: always, code: `
pid = os.fork()
if pid == 0:
    time.sleep(30); os._exit(0)
PTRACE_ATTACH = 16
r = libc.ptrace(PTRACE_ATTACH, pid, None, None)
if r == 0: esc("ptrace attach")
else: blocked(os.strerror(ctypes.get_errno()))
os.kill(pid, 9)`},
	{name: "mount", control: func() bool { return os.Getenv(noUserNSEnv) != "1" }, code: `
if CONTROL: libc.unshare(0x10000000 | 0x00020000)  # a private namespace, so the control is harmless
r = libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)
if r == 0: esc("mount")
else: blocked(os.strerror(ctypes.get_errno()))`},
	{name: "unshare a user namespace", control: func() bool { return os.Getenv(noUserNSEnv) != "1" }, code: `
r = libc.unshare(0x10000000)
if r == 0: esc("unshare")
else: blocked(os.strerror(ctypes.get_errno()))`},
	{name: "keyctl", control: always, code: `
SYS_keyctl = 250; KEYCTL_GET_KEYRING_ID = 0; KEY_SPEC_SESSION_KEYRING = -3
r = libc.syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 1)
if r >= 0: esc("keyctl %d" % r)
else: blocked(os.strerror(ctypes.get_errno()))`},
	{name: "i386 system call via int 0x80", control: always, code: `
import mmap
buf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
buf.write(bytes([0xb8, 20, 0, 0, 0, 0xcd, 0x80, 0xc3]))  # mov eax, 20 (i386 getpid); int 0x80; ret
addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
r = ctypes.CFUNCTYPE(ctypes.c_int)(addr)()
if r > 0: esc("i386 getpid = %d" % r)
else: blocked(r)`, check: func(t *testing.T, _ *escapeEnv, res Result, out string) {
		if res.Signal != "bad system call" {
			t.Errorf("want the program killed by SIGSYS, got exit %d signal %q; output:\n%s", res.ExitCode, res.Signal, out)
		}
	}},
	{name: "TIOCSTI", control: asRoot, code: `
import pty, fcntl, termios
try: m, s = os.openpty()
except OSError as e: blocked(e); m = s = 0
for req in (termios.TIOCSTI, termios.TIOCSTI | (1 << 32)):
    r = libc.ioctl(s, ctypes.c_ulong(req), ctypes.c_char_p(b"x"))
    if r == 0: esc("TIOCSTI %#x" % req)
    elif ctypes.get_errno() != errno.EPERM and s: esc("not stopped by the filter: %s" % os.strerror(ctypes.get_errno()))
    else: blocked(os.strerror(ctypes.get_errno()))
if CONTROL and s == 0: esc("no pty")`},
	{name: "signal the server and a host process", control: always, code: `
for pid in (E["T_SERVER_PID"], E["T_VICTIM_PID"]):
    try: os.kill(int(pid), 0); esc("may signal %s" % pid)
    except OSError as e: blocked(e)
try: os.kill(-1, 0); blocked("kill(-1) reaches only the sandbox") if not CONTROL else esc("kill -1")
except OSError as e: blocked(e)`},
	{name: "fork bomb", control: never, code: `
n = 0
try:
    for _ in range(5000):
        if os.fork() == 0:
            time.sleep(60); os._exit(0)
        n += 1
    esc("forked %d" % n)
except OSError as e: blocked("%d forks, then %s" % (n, e)); raise`, check: wantLimit(LimitMaxProcs)},
	{name: "memory bomb", control: never, code: `
x = bytearray(1 << 30)
for i in range(0, len(x), 4096): x[i] = 1
esc("1 GiB allocated")`, check: wantLimit(LimitMemory)},
	{name: "CPU spin", control: never, code: `
while True: pass`, check: func(t *testing.T, env *escapeEnv, res Result, out string) {
		wantLimit(LimitCPUTime)(t, env, res, out)
		if res.TimedOut {
			t.Error("the wall-clock limit ended the spin, not the CPU limit")
		}
	}},
	{name: "disk fill past the quota", control: never, code: `
chunk = b"x" * (1 << 20)
for i in range(10000):
    with open("output/fill-%d" % i, "wb") as f:
        for _ in range(4): f.write(chunk)
esc("wrote 40 GB")`, check: func(t *testing.T, env *escapeEnv, res Result, out string) {
		wantLimit(LimitWorkspaceQuota)(t, env, res, out)
		if got := diskUsage(env.ws, 1<<40); got > testLimits.WorkspaceQuota+512<<20 {
			t.Errorf("workspace grew to %d bytes, quota %d", got, testLimits.WorkspaceQuota)
		}
	}},
	{name: "daemonize to outlive the run", control: always, code: `
if os.fork() == 0:
    os.setsid() if hasattr(os, "setsid") else None
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(30)", E["T_TOKEN"]])
    os._exit(0)
time.sleep(0.2)
# The daemon is checked from outside after the run: see daemonSurvivors.
print("parent done")`, check: func(t *testing.T, env *escapeEnv, res Result, out string) {
		if pids := daemonSurvivors(env.token); len(pids) > 0 {
			t.Errorf("processes outlived the run: %v", pids)
			for _, p := range pids {
				syscall.Kill(p, syscall.SIGKILL)
			}
		}
	}},
}

// testLimits are small, so that the limit rows end fast.
var testLimits = Limits{Memory: 256 << 20, CPUTime: time.Second, MaxProcs: 64, WorkspaceQuota: 48 << 20, MaxFileSize: 16 << 20}

// escapeEnv is what the attacks aim at: secrets and listeners the test
// plants on the host.
type escapeEnv struct {
	ws, otherWS, planted, outDir, token string
	env                                 []string
	victim                              *exec.Cmd
	before                              map[string][32]byte
}

func newEscapeEnv(t *testing.T) *escapeEnv {
	t.Helper()
	t.Setenv("PRIMS_TEST_SECRET", "hunter2")
	e := &escapeEnv{token: fmt.Sprintf("prims-daemon-token-%d-%d", os.Getpid(), time.Now().UnixNano())}
	e.otherWS = mkWorkspace(t)
	os.WriteFile(filepath.Join(e.otherWS, "output", "secret.txt"), []byte("other session"), 0o600)
	f, err := os.CreateTemp("", "prims-planted-")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("planted secret")
	f.Close()
	os.Chmod(f.Name(), 0o644)
	e.planted = f.Name()
	t.Cleanup(func() { os.Remove(e.planted) })
	e.outDir = t.TempDir()
	os.Chmod(e.outDir, 0o777)

	tcp, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tcp.Close() })
	go func() {
		for {
			c, err := tcp.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { udp.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			n, addr, err := udp.ReadFrom(buf)
			if err != nil {
				return
			}
			udp.WriteTo(buf[:n], addr)
		}
	}()
	abstract := fmt.Sprintf("prims-test-%d", os.Getpid())
	ul, err := net.Listen("unix", "@"+abstract)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ul.Close() })
	go func() {
		for {
			c, err := ul.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	e.victim = exec.Command("/bin/sleep", "600")
	if err := e.victim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.victim.Process.Kill(); e.victim.Wait() })
	home, _ := os.UserHomeDir()
	if home == "" {
		home = "/root"
	}
	e.env = []string{
		"T_HOME=" + home,
		"T_OTHER_WS=" + e.otherWS,
		"T_PLANTED=" + e.planted,
		"T_OUTDIR=" + e.outDir,
		"T_SERVER_PID=" + strconv.Itoa(os.Getpid()),
		"T_VICTIM_PID=" + strconv.Itoa(e.victim.Process.Pid),
		"T_TCP_PORT=" + strconv.Itoa(tcp.Addr().(*net.TCPAddr).Port),
		"T_UDP_PORT=" + strconv.Itoa(udp.LocalAddr().(*net.UDPAddr).Port),
		"T_ABSTRACT=" + abstract,
		"T_TOKEN=" + e.token,
	}
	e.env = append(e.env, kernelTargets(t, e)...)
	e.before = fingerprint(t, e.otherWS, e.planted, e.outDir)
	return e
}

// fingerprint hashes every file under the given paths.
func fingerprint(t *testing.T, paths ...string) map[string][32]byte {
	t.Helper()
	m := map[string][32]byte{}
	for _, root := range paths {
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if d.IsDir() {
				m[p] = sha256.Sum256([]byte("dir"))
				return nil
			}
			b, _ := os.ReadFile(p)
			m[p] = sha256.Sum256(b)
			return nil
		})
	}
	return m
}

// daemonSurvivors lists host processes whose command line carries token.
func daemonSurvivors(token string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if bytes.Contains(b, []byte(token)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func runAttack(t *testing.T, r *Runner, env *escapeEnv, ws string, a attack, control bool) (Result, string) {
	t.Helper()
	var out lockedBuffer
	jobEnv := env.env
	if control {
		jobEnv = append(jobEnv[:len(jobEnv):len(jobEnv)], "T_CONTROL=1")
	}
	res, err := r.Run(context.Background(), Job{
		Python:   testpython.Path(t),
		Code:     probePrelude + a.code,
		Dir:      ws,
		ReadOnly: readOnlyOf(ws),
		Env:      jobEnv,
		Stdout:   &out,
		Stderr:   &out,
		Timeout:  30 * time.Second,
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res, out.String()
}

// skipKnownLimit skips an attack that is no hole in this tier (attack.only).
func skipKnownLimit(t *testing.T, tier Tier, a attack) {
	t.Helper()
	if a.only != "" && a.only != tier {
		t.Skipf("a hole of the %s tier only (TestEscape/%s runs it): a %s run has its own", a.only, a.only, tier)
	}
}

// assertBlocked checks a sandboxed attack's result: no sign of success, the
// attack's own check, and no process of the run left alive.
func assertBlocked(t *testing.T, env *escapeEnv, a attack, res Result, out string) {
	t.Helper()
	if why := knownLimit(a, res.Tier); why != "" {
		if !strings.Contains(out, "ESCAPED") {
			t.Errorf("known limit (%s) no longer gets through: update the README's tier table and prims doctor:\n%s", why, out)
		}
		return
	}
	if strings.Contains(out, "ESCAPED") {
		t.Errorf("attack worked (warm sandbox: %v):\n%s", res.Warm, out)
	}
	if a.check != nil {
		a.check(t, env, res, out)
	}
	if daemonSurvivors(env.token) != nil {
		t.Errorf("a process of the run is still alive")
	}
}

// TestEscape runs every attack in each sandbox tier this host supports and
// asserts that it failed; its control shows the same probe succeeding
// without a sandbox.
func TestEscape(t *testing.T) {
	testpython.Path(t)
	hostTierCheck(t)
	env := newEscapeEnv(t)
	none, err := New(Config{Isolation: IsolationOff, Limits: testLimits})
	if err != nil {
		t.Fatal(err)
	}
	for _, tier := range []Tier{TierNamespaces, TierLandlock} {
		t.Run(string(tier), func(t *testing.T) {
			r, err := New(Config{Tier: tier, Limits: testLimits})
			if err != nil {
				skipTier(t, tier, err)
			}
			for _, a := range attacks {
				t.Run(a.name, func(t *testing.T) {
					skipKnownLimit(t, tier, a)
					ws := mkWorkspace(t)
					env.ws = ws
					res, out := runAttack(t, r, env, ws, a, false)
					if res.Tier != tier {
						t.Errorf("ran in tier %s, want %s", res.Tier, tier)
					}
					assertBlocked(t, env, a, res, out)
				})
			}
		})
	}
	t.Run("control", func(t *testing.T) {
		for _, a := range attacks {
			if a.control == nil || !a.control() {
				continue
			}
			t.Run(a.name, func(t *testing.T) {
				ws := mkWorkspace(t)
				_, out := runAttack(t, none, env, ws, a, true)
				if daemonSurvivors(env.token) != nil {
					out += "ESCAPED: the daemon outlived the run"
				}
				if !strings.Contains(out, "ESCAPED") {
					t.Errorf("the probe does not detect the attack even without a sandbox:\n%s", out)
				}
				for _, p := range daemonSurvivors(env.token) {
					syscall.Kill(p, syscall.SIGKILL)
				}
				os.Remove(filepath.Join(env.outDir, "prims-escape"))
				os.Remove("/prims-escape")
				os.Remove("/usr/prims-escape")
				os.Remove("/etc/prims-escape")
				os.Remove(filepath.Join(filepath.Dir(ws), "prims-escape"))
			})
		}
	})
	if after := fingerprint(t, env.otherWS, env.planted, env.outDir); !sameFingerprint(env.before, after) {
		t.Errorf("files outside the workspace changed")
	}
}

func sameFingerprint(a, b map[string][32]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestEscapeUnprivileged runs TestEscape and TestProgramStartsClean again
// as uid 65534, as a server started by an ordinary user would be.
func TestEscapeUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("already unprivileged: TestEscape covers this case")
	}
	if testing.Short() {
		t.Skip("-short")
	}
	testpython.Path(t)
	testenv.RerunAsNobody(t, "^(TestEscape|TestEscapeStateful|TestEscapeWarm|TestWarmRunsAreFresh|TestProgramStartsClean|TestAllowHost|TestRunDiesWithServer|TestInterpreterUnderHome|TestProcsOfTheUserOutsideTheRun)$", func(home string) {
		os.WriteFile(filepath.Join(home, ".netrc"), []byte("machine example.com password hunter2"), 0o600)
	})
}
