package sandbox

import (
	"bytes"
	"context"
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
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/prims-mcp/prims/internal/testenv"
	"github.com/prims-mcp/prims/internal/testpython"
)

// The attack harness. TestEscape runs every row of attacks (escape rows and
// the kernel rows below) in each tier this process can give, with a control
// per row that runs the same probe without a sandbox and must see the hole.
// TestEscapeHosts re-runs it the way real hosts are: the server under a
// seccomp filter that forbids user namespaces (as Docker's default profile
// does, and as Ubuntu's AppArmor rule does in effect), so the landlock tier
// is what the probe finds, not what a test forced, with the server as root
// and as an unprivileged user; TestEscapeUnprivileged covers an
// unprivileged server with user namespaces.

// noUserNSEnv, set to 1, makes TestMain install forbidUserNS before any
// test runs.
const noUserNSEnv = "PRIMS_TEST_NO_USERNS"

func init() {
	testMainHook = func() {
		if os.Getenv(noUserNSEnv) == "1" {
			if err := forbidUserNS(); err != nil {
				fmt.Fprintln(os.Stderr, "forbid user namespaces:", err)
				os.Exit(2)
			}
		}
	}
	attacks = append(attacks, kernelAttacks()...)
}

// forbidUserNS installs, on every thread of this process and everything it
// starts, a filter that fails unshare and clone with namespace flags
// (EPERM) and clone3 (ENOSYS, so libc falls back to clone): what Docker's
// default seccomp profile does to a process without CAP_SYS_ADMIN, root in
// the container included.
func forbidUserNS() error {
	const (
		ld    = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		jset  = unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K
		ret   = unix.BPF_RET | unix.BPF_K
		allow = unix.SECCOMP_RET_ALLOW
		eperm = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	)
	f := []unix.SockFilter{
		{Code: ld, K: 0},
		{Code: jeq, K: unix.SYS_CLONE3, Jt: 0, Jf: 1},
		{Code: ret, K: unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)},
		{Code: jeq, K: unix.SYS_UNSHARE, Jt: 0, Jf: 1},
		{Code: ret, K: eperm},
		{Code: jeq, K: unix.SYS_CLONE, Jt: 0, Jf: 3},
		{Code: ld, K: 16}, // flags
		{Code: jset, K: nsCloneFlags, Jt: 0, Jf: 1},
		{Code: ret, K: eperm},
		{Code: ret, K: allow},
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return err
	}
	prog := unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}
	_, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog)))
	if e != 0 {
		return e
	}
	return nil
}

// hostTierCheck, on a host made to forbid user namespaces, checks that the
// product found the landlock tier by itself.
func hostTierCheck(t *testing.T) {
	if os.Getenv(noUserNSEnv) != "1" {
		return
	}
	s := Probe()
	if s.UserNS == nil || s.Best != TierLandlock {
		t.Fatalf("user namespaces are forbidden here, yet the probe found user namespaces %v, best tier %s", s.UserNS, s.Best)
	}
	r, err := New(Config{})
	if err != nil || r.Tier() != TierLandlock {
		t.Fatalf("auto tier on a host without user namespaces: %v, %v", r, err)
	}
}

// TestEscapeHosts re-runs the attack suite under a server that cannot make
// user namespaces, as root and as uid 65534.
func TestEscapeHosts(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	if os.Getenv(noUserNSEnv) == "1" {
		t.Skip("already under the filter that TestEscapeHosts installs")
	}
	testpython.Path(t)
	run := "^(TestEscape|TestRunDiesWithServer|TestInterpreterUnderHome|TestForbiddenUserNS)$"
	uids := []int{os.Geteuid()}
	if os.Geteuid() == 0 {
		uids = append(uids, 65534)
	}
	for _, uid := range uids {
		t.Run(fmt.Sprintf("uid=%d/no-userns", uid), func(t *testing.T) {
			out, err := testenv.Rerun(t, uid, []string{noUserNSEnv + "=1"}, run, nil, testenv.Userns)
			t.Logf("as uid %d, user namespaces forbidden:\n%s", uid, testenv.Summary(out))
			if err != nil {
				t.Fatalf("the attack suite failed: %v", err)
			}
			if !strings.Contains(out, "--- PASS: TestForbiddenUserNS") {
				t.Fatalf("the harness did not run under the filter:\n%s", out)
			}
		})
	}
}

// TestForbiddenUserNS checks the harness itself: under the filter a user
// namespace cannot be made, and the product falls back to the landlock tier.
func TestForbiddenUserNS(t *testing.T) {
	if os.Getenv(noUserNSEnv) != "1" {
		t.Skip("runs under TestEscapeHosts")
	}
	cmd := exec.Command("/bin/true")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER}
	if err := cmd.Run(); err == nil {
		t.Fatal("a user namespace was made under the filter")
	}
	hostTierCheck(t)
}

// kernelTargets plants what the kernel-surface attacks aim at and returns
// the environment that names them to the probes.
func kernelTargets(t *testing.T, e *escapeEnv) []string {
	t.Helper()
	sandboxUID := os.Geteuid()
	if sandboxUID == 0 {
		sandboxUID = sandboxID // the landlock tier's uid under a root server
	}
	// A socket like ssh-agent's, of the sandbox's user, where that user
	// can reach it.
	agentDir, err := os.MkdirTemp("", "prims-agent-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(agentDir) })
	os.Chmod(agentDir, 0o755)
	agent := filepath.Join(agentDir, "agent.sock")
	al, err := net.Listen("unix", agent)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { al.Close() })
	os.Chmod(agent, 0o600)
	os.Chown(agent, sandboxUID, sandboxUID)
	go func() {
		for {
			c, err := al.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("agent-secret-" + e.token))
			c.Close()
		}
	}()
	// A home-like directory and a key of the sandbox's user, outside the
	// workspace.
	owned := filepath.Join(agentDir, "home")
	os.Mkdir(owned, 0o700)
	key := filepath.Join(owned, "id_key")
	os.WriteFile(key, []byte("key"), 0o600)
	os.Chown(owned, sandboxUID, sandboxUID)
	os.Chown(key, sandboxUID, sandboxUID)
	// A host SysV segment anyone may read.
	shmKey := 0x50520000 + os.Getpid()&0xffff
	var shmOK string
	if id, err := unix.SysvShmGet(shmKey, 4096, unix.IPC_CREAT|0o666); err == nil {
		if b, err := unix.SysvShmAttach(id, 0, 0); err == nil {
			copy(b, "sysv-secret")
			unix.SysvShmDetach(b)
			shmOK = "1"
		}
		t.Cleanup(func() { unix.SysvShmCtl(id, unix.IPC_RMID, nil) })
	}
	// A file in the host's /dev/shm.
	devShm := devShmPath()
	if os.WriteFile(devShm, []byte("shm-secret"), 0o644) == nil {
		t.Cleanup(func() { os.Remove(devShm) })
	}
	var ifaces []string
	if l, err := net.Interfaces(); err == nil {
		for _, i := range l {
			if i.Name != "lo" {
				ifaces = append(ifaces, i.Name)
			}
		}
	}
	cgns, _ := os.Readlink("/proc/self/ns/cgroup")
	var more []string
	if p := testIPv6Port(); p != "" {
		more = append(more, "T_TCP6_PORT="+p)
	}
	return append(more,
		"T_AGENT="+agent,
		"T_OWNED="+key,
		"T_OWNED_DIR="+owned,
		"T_SHM_KEY="+strconv.Itoa(shmKey),
		"T_SHM_OK="+shmOK,
		"T_DEV_SHM="+devShm,
		"T_IFACES="+strings.Join(ifaces, ","),
		"T_CGROUPNS="+cgns,
	)
}

func devShmPath() string { return "/dev/shm/prims-test-" + strconv.Itoa(os.Getpid()) }

// ownedUnchanged checks that the sandbox user's file outside the workspace
// kept its mode, times and (no) extended attributes.
func ownedUnchanged(t *testing.T, env *escapeEnv, _ Result, out string) {
	t.Helper()
	var key string
	for _, kv := range env.env {
		if v, ok := strings.CutPrefix(kv, "T_OWNED="); ok {
			key = v
		}
	}
	for _, p := range []string{key, filepath.Dir(key)} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		want := os.FileMode(0o600)
		if fi.IsDir() {
			want = 0o700 | os.ModeDir
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", filepath.Base(p), fi.Mode(), want)
			os.Chmod(p, want)
		}
		if time.Since(fi.ModTime()) > time.Hour {
			t.Errorf("%s: time set to %v", filepath.Base(p), fi.ModTime())
			os.Chtimes(p, time.Now(), time.Now())
		}
		if n, _ := unix.Listxattr(p, make([]byte, 256)); n > 0 {
			t.Errorf("%s: an extended attribute was set", filepath.Base(p))
			unix.Removexattr(p, "user.prims")
		}
	}
}

// reaches reports whether system call nr with these (harmless, invalid)
// arguments gets past seccomp and capability checks in this process: the
// control of the syscall rows.
func reaches(nr uintptr, args ...uintptr) func() bool {
	return func() bool {
		var a [6]uintptr
		copy(a[:], args)
		r, _, e := unix.Syscall6(nr, a[0], a[1], a[2], a[3], a[4], a[5])
		if e == 0 && int(r) > 2 && nr != unix.SYS_PERSONALITY && nr != unix.SYS_KCMP && nr != unix.SYS_PROCESS_VM_READV && nr != unix.SYS_PROCESS_VM_WRITEV {
			unix.Close(int(r))
		}
		return e != unix.EPERM
	}
}

// socketWorks is the control of a socket row: this process may make one.
func socketWorks(family, typ, proto int) func() bool {
	return func() bool {
		fd, err := unix.Socket(family, typ, proto)
		if err != nil {
			return false
		}
		unix.Close(fd)
		return true
	}
}

// noNewPrivsOff: this process may still gain privileges through exec (not
// so under TestEscapeHosts's filter, which needs no_new_privs).
func noNewPrivsOff() bool {
	v, err := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
	return err == nil && v == 0
}

func envSet(k string) func() bool { return func() bool { return os.Getenv(k) != "" } }

func readable(p string) func() bool {
	return func() bool {
		f, err := os.Open(p)
		if err != nil {
			return false
		}
		f.Close()
		return true
	}
}

// unprivilegedLandlock is the one place where files under read-only paths
// that the server's own user owns can have their mode, times and extended
// attributes changed: the program runs as that user, may open them for
// reading (Landlock), and fchmod, futimens and fsetxattr check ownership
// only.
func unprivilegedLandlock(tier Tier) string {
	if tier == TierLandlock && os.Geteuid() != 0 {
		return "landlock tier, unprivileged server: fchmod/futimens/fsetxattr on read-only files the server's user owns"
	}
	return ""
}

// knownLimit is why a attack is expected to get through here, or "".
func knownLimit(a attack, tier Tier) string {
	if a.limit == nil {
		return ""
	}
	return a.limit(tier)
}

// syscallRow is an attack that only needs a system call to reach the kernel.
// Its arguments are invalid on purpose: the control (the same call in the
// test process) must fail with something other than EPERM, and must not
// change the host even as root.
func syscallRow(name string, nr uintptr, args ...uintptr) attack {
	var py []string
	for _, a := range args {
		py = append(py, strconv.FormatInt(int64(a), 10))
	}
	return attack{name: name, control: reaches(nr, args...), code: fmt.Sprintf(`
libc.syscall.restype = ctypes.c_long
r = libc.syscall(ctypes.c_long(%d), %s)
e = ctypes.get_errno()
if r == -1 and e == errno.EPERM: blocked(os.strerror(e))
else: esc("syscall %d reached the kernel: %%d %%s" %% (r, os.strerror(e)))`, nr, pyArgs(py), nr)}
}

func pyArgs(a []string) string {
	for i := range a {
		a[i] = "ctypes.c_long(" + a[i] + ")"
	}
	return strings.Join(a, ", ")
}

const (
	bad   = ^uintptr(0) // -1: no such descriptor, pid or flag set
	badP  = 1           // a pointer the kernel cannot read
	nullP = 0
)

// kernelAttacks are the rows for the kernel surface: system calls, sockets,
// /proc, /sys, devices, IPC and the sandbox's own plumbing.
func kernelAttacks() []attack {
	rows := []attack{
		// The landlock tier's holes (issue 11) and the all-tier ones.
		{name: "connect to a host unix socket (ssh-agent)", control: always, code: `
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(2)
    s.connect(E["T_AGENT"]); d = s.recv(100)
    if b"agent-secret" in d: esc("agent said %r" % d)
    else: blocked("no secret")
except OSError as e: blocked(e)`},
		{name: "unix datagram to a host socket", control: always, code: `
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(b"x", E["T_AGENT"]); esc("sent")
except OSError as e:
    if e.errno == errno.EPROTOTYPE: esc("reached the socket: %s" % e)
    else: blocked(e)`},
		{name: "chmod a file of the sandbox user outside the workspace", control: always, check: ownedUnchanged, code: `
for p, m in ((E["T_OWNED"], 0o666), (E["T_OWNED_DIR"], 0o777)):
    try: os.chmod(p, m); esc("chmod %s" % p)
    except OSError as e: blocked(e)`},
		{name: "chmod through an O_PATH descriptor (fchmodat2 AT_EMPTY_PATH)", control: always, check: ownedUnchanged, code: `
try: fd = os.open(E["T_OWNED"], os.O_PATH)
except OSError as e: blocked(e); fd = -1
if fd >= 0:
    r = libc.syscall(452, fd, b"", 0o666, 0x1000)  # fchmodat2(fd, "", mode, AT_EMPTY_PATH)
    if r == 0: esc("fchmodat2")
    else: blocked(os.strerror(ctypes.get_errno()))
    if CONTROL: os.chmod(E["T_OWNED"], 0o600)`},
		{name: "chmod through /proc/self/fd", control: always, check: ownedUnchanged, code: `
try:
    fd = os.open(E["T_OWNED"], os.O_PATH)
    os.chmod("/proc/self/fd/%d" % fd, 0o666); esc("chmod via /proc")
    if CONTROL: os.chmod(E["T_OWNED"], 0o600)
except OSError as e: blocked(e)`},
		{name: "utime a file of the sandbox user outside the workspace", control: always, check: ownedUnchanged, code: `
for p in (E["T_OWNED"], E["T_OWNED_DIR"]):
    try: os.utime(p, (0, 0)); esc("utime %s" % p)
    except OSError as e: blocked(e)
    if CONTROL: os.utime(p)`},
		{name: "utimensat through an O_PATH descriptor (AT_EMPTY_PATH)", control: always, check: ownedUnchanged, code: `
try: fd = os.open(E["T_OWNED"], os.O_PATH)
except OSError as e: blocked(e); fd = -1
if fd >= 0:
    ts = (ctypes.c_long * 4)(0, 0, 0, 0)
    r = libc.utimensat(fd, b"", ts, 0x1000)
    if r == 0: esc("utimensat AT_EMPTY_PATH")
    else: blocked(os.strerror(ctypes.get_errno()))
    if CONTROL: os.utime(E["T_OWNED"])`},
		{name: "setxattr on a file of the sandbox user outside the workspace", control: always, check: ownedUnchanged, code: `
for p in (E["T_OWNED"], E["T_OWNED_DIR"]):
    try: os.setxattr(p, "user.prims", b"x"); esc("setxattr %s" % p)
    except OSError as e: blocked(e)
    if CONTROL:
        try: os.removexattr(p, "user.prims")
        except OSError: pass`},
		{name: "chown a file of the sandbox user outside the workspace", control: always, check: ownedUnchanged, code: `
try: os.chown(E["T_OWNED"], os.getuid(), os.getgid()); esc("chown")
except OSError as e: blocked(e)`},
		{name: "hard-link a host file into the workspace", control: always, code: `
try: os.link(E["T_OWNED"], "linked"); esc("linked")
except OSError as e: blocked(e)`},
		{name: "chmod a read-only input through a descriptor", control: always, limit: unprivilegedLandlock, code: `
try:
    fd = os.open("mounts/input.txt", os.O_RDONLY); os.chmod(fd, 0o666)
    if os.stat("mounts/input.txt").st_mode & 0o777 == 0o666: esc("fchmod on a read-only input")
    else: blocked("mode unchanged")
    if CONTROL: os.chmod(fd, 0o644)
except OSError as e: blocked(e)`},
		{name: "read host SysV shared memory", control: envSet("T_SHM_OK"), code: `
libc.shmat.restype = ctypes.c_void_p
i = libc.shmget(int(E["T_SHM_KEY"]), 0, 0)
if i < 0: blocked(os.strerror(ctypes.get_errno()))
else:
    a = libc.shmat(i, None, 0o10000)
    if a in (None, ctypes.c_void_p(-1).value): blocked(os.strerror(ctypes.get_errno()))
    elif ctypes.string_at(a, 11) == b"sysv-secret": esc("read the host's segment")
    else: blocked("other segment")`},
		{name: "SysV segment that outlives the run", only: TierLandlock, control: always, code: `
i = libc.shmget(0, 4096, 0o1000 | 0o600)  # IPC_PRIVATE, IPC_CREAT
if i >= 0:
    esc("made segment %d" % i); libc.shmctl(i, 0, None)  # IPC_RMID
else: blocked(os.strerror(ctypes.get_errno()))`},
		{name: "SysV semaphore set that outlives the run", only: TierLandlock, control: always, code: `
i = libc.semget(0, 1, 0o1000 | 0o600)
if i >= 0:
    esc("made semaphores %d" % i); libc.semctl(i, 0, 0)  # IPC_RMID
else: blocked(os.strerror(ctypes.get_errno()))`},
		{name: "SysV message queue that outlives the run", only: TierLandlock, control: always, code: `
i = libc.msgget(0, 0o1000 | 0o600)
if i >= 0:
    esc("made queue %d" % i); libc.msgctl(i, 0, None)  # IPC_RMID
else: blocked(os.strerror(ctypes.get_errno()))`},
		{name: "POSIX message queue that outlives the run", only: TierLandlock, control: always, code: `
name = ("/prims-mq-%d" % os.getpid()).encode()
q = libc.mq_open(name, os.O_CREAT | os.O_RDWR, 0o600, None)
if q >= 0:
    esc("made queue"); libc.mq_unlink(name)
else: blocked(os.strerror(ctypes.get_errno()))`},
		{name: "sock_diag lists host unix sockets", control: always, code: `
import struct
try:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 4)  # NETLINK_SOCK_DIAG
    s.settimeout(2)
    body = struct.pack("=BBHIIIII", socket.AF_UNIX, 0, 0, 0xffffffff, 0, 1, 0xffffffff, 0xffffffff)  # UDIAG_SHOW_NAME
    s.send(struct.pack("=IHHII", 16 + len(body), 20, 0x301, 1, 0) + body)  # SOCK_DIAG_BY_FAMILY, REQUEST|DUMP
    data = b""
    while True:
        d = s.recv(65536); data += d
        if not d or struct.unpack_from("=H", d, 4)[0] in (2, 3): break  # NLMSG_ERROR, NLMSG_DONE
    if E["T_AGENT"].encode() in data: esc("saw the host's agent socket")
    else: blocked("%d bytes, no host socket" % len(data))
except OSError as e: blocked(e)`},
		{name: "rtnetlink lists host interfaces", control: envSet("T_IFACES"), code: `
import struct
try:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)  # NETLINK_ROUTE
    s.settimeout(2)
    s.send(struct.pack("=IHHIIBxHiII", 32, 18, 0x301, 1, 0, 0, 0, 0, 0, 0))  # RTM_GETLINK dump
    data = b""
    while True:
        d = s.recv(65536); data += d
        if not d or struct.unpack_from("=H", d, 4)[0] in (2, 3): break
    seen = [i for i in E["T_IFACES"].split(",") if i and i.encode() + b"\0" in data]
    if seen: esc("host interfaces %s" % seen)
    else: blocked("no host interface")
except OSError as e: blocked(e)`},
		{name: "AF_VSOCK socket", control: socketWorks(unix.AF_VSOCK, unix.SOCK_STREAM, 0), code: `
try: socket.socket(40, socket.SOCK_STREAM); esc("vsock socket")
except OSError as e: blocked(e)`},
		{name: "AF_VSOCK datagram socket", control: socketWorks(unix.AF_VSOCK, unix.SOCK_DGRAM, 0), code: `
try: socket.socket(40, socket.SOCK_DGRAM); esc("vsock datagram socket")
except OSError as e: blocked(e)`},
		{name: "the host's cgroup namespace", control: envSet("T_CGROUPNS"), limit: func(tier Tier) string {
			if tier == TierLandlock && (os.Geteuid() != 0 || os.Getenv(noUserNSEnv) == "1") {
				return "landlock tier, a server without CAP_SYS_ADMIN: no cgroup namespace (Landlock keeps /proc/self/cgroup unreadable)"
			}
			return ""
		}, code: `
try:
    if os.readlink("/proc/self/ns/cgroup") == E["T_CGROUPNS"]: esc("same cgroup namespace as the host")
    else: blocked("own cgroup namespace")
except OSError as e: blocked(e)`},
		{name: "forge the exit status through the init's report pipe", control: always, code: `
import stat
target = E["T_VICTIM_PID"] if CONTROL else "1"
forged = False
try: fds = os.listdir("/proc/%s/fd" % target)
except OSError as e: blocked(e); fds = []
for fd in fds:
    try:
        p = "/proc/%s/fd/%s" % (target, fd)
        if not CONTROL and not stat.S_ISFIFO(os.stat(p).st_mode): continue
        w = os.open(p, os.O_WRONLY | os.O_NONBLOCK)
        if not CONTROL: os.write(w, b'{"status":0}')
        esc("opened %s for writing" % p); forged = True
    except OSError as e: blocked(e)
sys.stdout.flush(); os._exit(3)`, check: func(t *testing.T, _ *escapeEnv, res Result, out string) {
			if res.ExitCode != 3 {
				t.Errorf("exit status %d, want 3: the program forged it\n%s", res.ExitCode, out)
			}
		}},
		{name: "read the init's memory", control: always, code: `
target = E["T_VICTIM_PID"] if CONTROL else "1"
try: open("/proc/%s/environ" % target, "rb").read(); esc("read /proc/%s/environ" % target)
except OSError as e: blocked(e)`},
		{name: "write to the server's stdout through /proc", control: always, code: `
target = E["T_VICTIM_PID"] if CONTROL else E["T_SERVER_PID"]
try: os.open("/proc/%s/fd/1" % target, os.O_WRONLY); esc("opened the server's stdout")
except OSError as e: blocked(e)`},
		{name: "the server's root through /proc/pid/root", control: always, code: `
target = E["T_VICTIM_PID"] if CONTROL else E["T_SERVER_PID"]
try: esc(os.listdir("/proc/%s/root/" % target)[:3])
except OSError as e: blocked(e)`},
		{name: "read a file in the host's /dev/shm", control: func() bool { return readable(devShmPath())() }, code: `
try: esc(open(E["T_DEV_SHM"]).read())
except OSError as e: blocked(e)`},
		{name: "no_new_privs cleared", control: noNewPrivsOff, code: `
if libc.prctl(39, 0, 0, 0, 0) == 0: esc("no_new_privs is off")  # PR_GET_NO_NEW_PRIVS
else: blocked("no_new_privs")`},
		{name: "effective capabilities", control: asRoot, code: `
hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)
data = (ctypes.c_uint32 * 6)()
if libc.capget(hdr, data) != 0: blocked(os.strerror(ctypes.get_errno()))
elif data[0] or data[3]: esc("capabilities %#x %#x" % (data[0], data[3]))
else: blocked("none")`},
		{name: "raise the core dump limit", control: always, code: `
import resource
try:
    resource.setrlimit(resource.RLIMIT_CORE, (1 << 20, 1 << 20)); esc("core dumps on")
except (ValueError, OSError) as e: blocked(e)`},
		{name: "setgid binary reads /etc/shadow", control: func() bool { return readable("/usr/bin/chage")() && noNewPrivsOff() }, code: `
import subprocess, pwd
try:
    me = pwd.getpwuid(os.getuid()).pw_name
    r = subprocess.run(["/usr/bin/chage", "-l", me], capture_output=True, timeout=10)
    if b"Last password change" in r.stdout: esc(r.stdout[:60])
    else: blocked(r.stderr.strip())
except (OSError, KeyError) as e: blocked(e)`},
		{name: "clone3 into new namespaces", control: func() bool {
			_, _, e := unix.Syscall(unix.SYS_CLONE3, nullP, 0, 0)
			return e != unix.EPERM && e != unix.ENOSYS
		}, code: `
r = libc.syscall(435, None, 0)
e = ctypes.get_errno()
if e in (errno.ENOSYS, errno.EPERM): blocked(os.strerror(e))
else: esc("clone3 reached the kernel: %s" % os.strerror(e))`},
		{name: "clone with CLONE_NEWUSER", control: reaches(unix.SYS_CLONE, unix.CLONE_NEWUSER|unix.CLONE_FS, 0, 0, 0, 0), code: `
r = libc.syscall(56, 0x10000000 | 0x200, 0, 0, 0, 0)  # CLONE_NEWUSER|CLONE_FS: EINVAL if it gets through
e = ctypes.get_errno()
if r == -1 and e == errno.EPERM: blocked(os.strerror(e))
else: esc("clone reached the kernel: %s" % os.strerror(e))`},
		{name: "unshare a network namespace", control: func() bool { return asRoot() && os.Getenv(noUserNSEnv) != "1" }, code: `
r = libc.unshare(0x40000000)
if r == 0: esc("unshare net")
else: blocked(os.strerror(ctypes.get_errno()))`},
		{name: "setns into the host's namespaces", control: readable("/proc/1/ns/net"), code: `
try:
    fd = os.open("/proc/1/ns/net", os.O_RDONLY)
    if libc.setns(fd, 0) == 0 or ctypes.get_errno() != errno.EPERM: esc("setns reached the kernel: %s" % os.strerror(ctypes.get_errno()))
    else: blocked("setns EPERM")
except OSError as e: blocked(e)`},
		{name: "raw packet socket", control: socketWorks(unix.AF_PACKET, unix.SOCK_RAW, 0), code: `
try: socket.socket(17, socket.SOCK_RAW, 0); esc("AF_PACKET")
except OSError as e: blocked(e)`},
		{name: "raw IP socket", control: socketWorks(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP), code: `
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.sendto(b"\x08\0\xf7\xff\0\0\0\0", (E.get("T_GATEWAY", "127.0.0.1"), 0)); esc("raw ICMP")
except OSError as e: blocked(e)`},
		{name: "TCP to the host over IPv6 loopback", control: func() bool { return testIPv6Port() != "" }, code: `
try: socket.create_connection(("::1", int(E["T_TCP6_PORT"])), timeout=2); esc("tcp6")
except (OSError, ValueError, KeyError) as e: blocked(e)`},
		{name: "read the kernel log", control: readable("/dev/kmsg"), code: `
for p in ("/dev/kmsg", "/proc/kmsg"):
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK); esc("opened %s" % p)
    except OSError as e: blocked(e)`},
		{name: "open /proc/sysrq-trigger for writing", control: func() bool {
			f, err := os.OpenFile("/proc/sysrq-trigger", os.O_WRONLY, 0)
			if err == nil {
				f.Close()
			}
			return err == nil
		}, code: `
try: os.open("/proc/sysrq-trigger", os.O_WRONLY); esc("sysrq")
except OSError as e: blocked(e)`},
		{name: "read host sysctls", control: readable("/proc/sys/kernel/hostname"), code: `
try: esc(open("/proc/sys/kernel/hostname").read())
except OSError as e: blocked(e)`},
		{name: "list /sys", control: readable("/sys/class/net"), code: `
for p in ("/sys/class/net", "/sys/fs/cgroup", "/sys/kernel"):
    try: esc("%s: %s" % (p, os.listdir(p)[:4]))
    except OSError as e: blocked(e)`},
		{name: "write the host's cgroup files", control: asRoot, code: `
import glob
for p in glob.glob("/sys/fs/cgroup/**/cgroup.procs", recursive=True)[:3] + ["/sys/fs/cgroup/cgroup.procs"]:
    try: os.open(p, os.O_WRONLY); esc("opened %s" % p); break
    except OSError as e: blocked(e)`},
		{name: "open host devices", control: func() bool { return readable("/dev/kmsg")() || readable("/dev/tty0")() }, code: `
import glob
for p in (glob.glob("/dev/sd?") + glob.glob("/dev/vd?") + glob.glob("/dev/nvme?n?") + ["/dev/mem", "/dev/port", "/dev/kmsg", "/dev/tty0", "/dev/tty", "/dev/console"]):
    try: os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY); esc("opened %s" % p)
    except OSError as e: blocked(e)`},
		{name: "make a device node", control: asRoot, code: `
try: os.mknod("devnull2", 0o20666, os.makedev(1, 3)); esc("mknod")
except OSError as e: blocked(e)`},
		{name: "ptrace an unrelated process's memory (PEEKUSER)", control: always, code: `
r = libc.ptrace(3, int(E["T_VICTIM_PID"]), None, None)
e = ctypes.get_errno()
if e == errno.EPERM: blocked(os.strerror(e))
else: esc("ptrace reached the kernel: %s" % os.strerror(e))`},
		{name: "TIOCLINUX on a descriptor", control: always, code: `
r = libc.ioctl(0, ctypes.c_ulong(0x541C), ctypes.c_char_p(b"\x06"))
e = ctypes.get_errno()
if e == errno.EPERM: blocked(os.strerror(e))
else: esc("ioctl reached the kernel: %s" % os.strerror(e))`},
		{name: "signal the server's process group", control: always, code: `
pg = os.getpgid(int(E["T_SERVER_PID"])) if CONTROL else None
try:
    os.killpg(pg if CONTROL else os.getpgid(int(E["T_SERVER_PID"])), 0); esc("may signal the server's group")
except OSError as e: blocked(e)`},
		{name: "leave the process group", control: always, only: TierLandlock, code: `
try: os.setsid(); esc("setsid")
except OSError as e: blocked(e)
try: os.setpgid(0, 0); esc("setpgid")
except OSError as e: blocked(e)`},
	}
	for _, s := range append([]syscallAttack{
		{"bpf", unix.SYS_BPF, []uintptr{0xffff, nullP, 0}},
		{"perf_event_open", unix.SYS_PERF_EVENT_OPEN, []uintptr{nullP, 0, bad, bad, 0}},
		{"userfaultfd", unix.SYS_USERFAULTFD, []uintptr{bad}},
		{"io_uring_setup", unix.SYS_IO_URING_SETUP, []uintptr{0, nullP}},
		{"io_uring_enter", unix.SYS_IO_URING_ENTER, []uintptr{bad, 0, 0, 0, nullP, 0}},
		{"io_uring_register", unix.SYS_IO_URING_REGISTER, []uintptr{bad, 0, nullP, 0}},
		{"add_key", unix.SYS_ADD_KEY, []uintptr{nullP, nullP, nullP, 0, 0}},
		{"request_key", unix.SYS_REQUEST_KEY, []uintptr{nullP, nullP, nullP, 0}},
		{"kexec_load", unix.SYS_KEXEC_LOAD, []uintptr{0, 0, nullP, 0xffffffff}},
		{"kexec_file_load", unix.SYS_KEXEC_FILE_LOAD, []uintptr{bad, bad, 0, nullP, 0xffffffff}},
		{"init_module", unix.SYS_INIT_MODULE, []uintptr{nullP, 0, nullP}},
		{"finit_module", unix.SYS_FINIT_MODULE, []uintptr{bad, nullP, 0}},
		{"delete_module", unix.SYS_DELETE_MODULE, []uintptr{nullP, 0}},
		{"open_by_handle_at", unix.SYS_OPEN_BY_HANDLE_AT, []uintptr{bad, nullP, 0}},
		{"name_to_handle_at", unix.SYS_NAME_TO_HANDLE_AT, []uintptr{bad, nullP, nullP, nullP, 0}},
		{"fanotify_init", unix.SYS_FANOTIFY_INIT, []uintptr{0xffffffff, 0}},
		{"quotactl", unix.SYS_QUOTACTL, []uintptr{0, nullP, 0, nullP}},
		{"swapon", unix.SYS_SWAPON, []uintptr{nullP, 0}},
		{"swapoff", unix.SYS_SWAPOFF, []uintptr{nullP}},
		{"reboot", unix.SYS_REBOOT, []uintptr{0, 0, 0, nullP}},
		{"syslog", unix.SYS_SYSLOG, []uintptr{10, nullP, 0}},
		{"acct", unix.SYS_ACCT, []uintptr{badP}},
		{"settimeofday", unix.SYS_SETTIMEOFDAY, []uintptr{badP, nullP}},
		{"clock_settime", unix.SYS_CLOCK_SETTIME, []uintptr{0, nullP}},
		{"clock_adjtime", unix.SYS_CLOCK_ADJTIME, []uintptr{0, nullP}},
		{"adjtimex", unix.SYS_ADJTIMEX, []uintptr{nullP}},
		{"sethostname", unix.SYS_SETHOSTNAME, []uintptr{nullP, bad}},
		{"setdomainname", unix.SYS_SETDOMAINNAME, []uintptr{nullP, bad}},
		{"personality", unix.SYS_PERSONALITY, []uintptr{0xffffffff}},
		{"umount2", unix.SYS_UMOUNT2, []uintptr{badP, 0}},
		{"pivot_root", unix.SYS_PIVOT_ROOT, []uintptr{nullP, nullP}},
		{"chroot", unix.SYS_CHROOT, []uintptr{nullP}},
		{"open_tree", unix.SYS_OPEN_TREE, []uintptr{bad, nullP, 0}},
		{"move_mount", unix.SYS_MOVE_MOUNT, []uintptr{bad, nullP, bad, nullP, 0}},
		{"fsopen", unix.SYS_FSOPEN, []uintptr{nullP, 0}},
		{"fsconfig", unix.SYS_FSCONFIG, []uintptr{bad, 0, nullP, nullP, 0}},
		{"fsmount", unix.SYS_FSMOUNT, []uintptr{bad, 0, 0}},
		{"fspick", unix.SYS_FSPICK, []uintptr{bad, nullP, 0}},
		{"mount_setattr", unix.SYS_MOUNT_SETATTR, []uintptr{bad, nullP, 0, nullP, 0}},
		{"setns", unix.SYS_SETNS, []uintptr{bad, 0}},
		{"process_vm_readv", unix.SYS_PROCESS_VM_READV, []uintptr{uintptr(os.Getpid()), nullP, 0, nullP, 0, 0}},
		{"process_vm_writev", unix.SYS_PROCESS_VM_WRITEV, []uintptr{uintptr(os.Getpid()), nullP, 0, nullP, 0, 0}},
		{"pidfd_getfd", unix.SYS_PIDFD_GETFD, []uintptr{bad, 0, 0}},
		{"kcmp", unix.SYS_KCMP, []uintptr{uintptr(os.Getpid()), uintptr(os.Getpid()), 99, 0, 0}},
	}, archSyscallAttacks(bad, nullP)...) {
		rows = append(rows, syscallRow("system call "+s.name, s.nr, s.args...))
	}
	return rows
}

// syscallAttack is a system call the sandbox must refuse, with arguments
// that would do harm (or fail harmlessly) were it allowed.
type syscallAttack struct {
	name string
	nr   uintptr
	args []uintptr
}

// The process-vm and kcmp rows name this process's pid: the probe runs in
// another, whose own pid is what they must use.
func init() {
	for i, a := range attacks {
		for _, n := range []string{"process_vm_readv", "process_vm_writev", "kcmp"} {
			if a.name == "system call "+n {
				attacks[i].code = strings.Replace(a.code, "ctypes.c_long("+strconv.Itoa(os.Getpid())+")", "ctypes.c_long(os.getpid())", -1)
			}
		}
	}
}

var tcp6Port string

// testIPv6Port starts, once, a TCP listener on ::1, or returns "" where the
// host has no IPv6 loopback.
func testIPv6Port() string {
	if tcp6Port != "" {
		return tcp6Port
	}
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return ""
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	tcp6Port = strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	return tcp6Port
}

// TestRunDiesWithServer: a program that double-forks a daemon and a server
// killed with SIGKILL mid-run leave nothing behind, in every tier. The
// server is this test binary again (helperServer), killed from outside; the
// control runs it without isolation and must find the daemon alive.
func TestRunDiesWithServer(t *testing.T) {
	if os.Getenv(helperServerEnv) != "" {
		helperServer(t)
		return
	}
	testpython.Path(t)
	tiers := []Tier{TierNone, TierNamespaces, TierLandlock}
	for _, tier := range tiers {
		t.Run(string(tier), func(t *testing.T) {
			if tier != TierNone {
				if _, err := New(Config{Tier: tier}); err != nil {
					skipTier(t, tier, err)
				}
			}
			token := fmt.Sprintf("prims-orphan-%s-%d-%d", tier, os.Getpid(), time.Now().UnixNano())
			exe, _ := os.Executable()
			cmd := exec.Command(exe, "-test.run=^TestRunDiesWithServer$", "-test.count=1")
			cmd.Env = append(os.Environ(), helperServerEnv+"="+string(tier), "T_TOKEN="+token)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(20 * time.Second)
			for len(daemonSurvivors(token)) < 2 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if n := len(daemonSurvivors(token)); n < 2 {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("the run did not start its daemon (%d processes):\n%s", n, out.String())
			}
			cmd.Process.Kill()
			cmd.Wait()
			var left []int
			for end := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				if left = daemonSurvivors(token); len(left) == 0 || time.Now().After(end) {
					break
				}
			}
			for _, p := range left {
				syscall.Kill(p, syscall.SIGKILL)
			}
			switch {
			case tier == TierNone && len(left) == 0:
				t.Errorf("control: without isolation the daemon should outlive the server; the probe sees nothing")
			case tier != TierNone && len(left) > 0:
				t.Errorf("processes of the run outlived the server killed with SIGKILL: %v", left)
			}
		})
	}
}

const helperServerEnv = "PRIMS_TEST_HELPER_SERVER"

// helperServer runs one program that double-forks (and tries setsid) a
// daemon named by T_TOKEN, then waits to be killed.
func helperServer(t *testing.T) {
	cfg := Config{Tier: Tier(os.Getenv(helperServerEnv))}
	if cfg.Tier == TierNone {
		cfg = Config{Isolation: IsolationOff}
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ws := mkWorkspace(t)
	code := `
import os, sys, time
tok = os.environ["T_TOKEN"]
if os.fork() == 0:
    try: os.setsid()
    except OSError: pass
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(60)", tok])
    os._exit(0)
os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(60)", tok])
`
	r.Run(context.Background(), Job{Python: testpython.Path(t), Code: code, Dir: ws, ReadOnly: readOnlyOf(ws), Env: []string{"T_TOKEN=" + os.Getenv("T_TOKEN")}, Timeout: time.Minute})
	t.Fatal("the run ended before the server was killed")
}

// TestInterpreterUnderHome: an interpreter whose prefix is the home
// directory (a Python installed with --prefix=$HOME, or linked from
// ~/bin) must not bring the whole home into the sandbox: ~/.ssh stays out.
// The control runs without isolation and reads the key.
func TestInterpreterUnderHome(t *testing.T) {
	py := testpython.Path(t)
	home, err := os.MkdirTemp("", "prims-home-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	os.Chmod(home, 0o755)
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o755)
	os.WriteFile(filepath.Join(home, ".ssh", "id_ed25519"), []byte("ssh-secret"), 0o644)
	os.MkdirAll(filepath.Join(home, "bin"), 0o755)
	fake := filepath.Join(home, "bin", "python3")
	if err := os.Symlink(py, fake); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", home)
	code := `
import os
try: print("ESCAPED", open(os.environ["T_KEY"]).read())
except OSError as e: print("blocked", e)
print("ran", os.path.basename(os.__file__))`
	for _, tier := range []Tier{TierNone, TierNamespaces, TierLandlock} {
		t.Run(string(tier), func(t *testing.T) {
			cfg := Config{Tier: tier}
			if tier == TierNone {
				cfg = Config{Isolation: IsolationOff}
			}
			r, err := New(cfg)
			if err != nil {
				skipTier(t, tier, err)
			}
			ws := mkWorkspace(t)
			var out lockedBuffer
			res, err := r.Run(context.Background(), Job{
				Python: fake, Code: code, Dir: ws,
				ReadOnly: append(readOnlyOf(ws), home), // as a caller passing the prefix would
				Env:      []string{"T_KEY=" + filepath.Join(home, ".ssh", "id_ed25519")},
				Stdout:   &out, Stderr: &out, Timeout: 30 * time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			got := out.String()
			if !strings.Contains(got, "ran os.py") || res.ExitCode != 0 {
				t.Fatalf("the interpreter under home did not run (exit %d):\n%s", res.ExitCode, got)
			}
			if escaped := strings.Contains(got, "ESCAPED"); escaped != (tier == TierNone) {
				t.Errorf("read ~/.ssh: %v, want %v:\n%s", escaped, tier == TierNone, got)
			}
		})
	}
}

// TestKnownLimits: what prims doctor says the kernel cannot stop follows
// the host's facts, and the namespaces tier has no such line.
func TestKnownLimits(t *testing.T) {
	tests := []struct {
		name string
		s    Support
		tier Tier
		want []string // substrings, one per line, in order
	}{
		{"namespaces", Support{Landlock: 7}, TierNamespaces, nil},
		{"landlock, root, ABI 9", Support{Landlock: 9, Root: true}, TierLandlock, []string{"SysV IPC", "by path are refused", "cgroup namespace only"}},
		{"landlock, root, ABI 7", Support{Landlock: 7, Root: true}, TierLandlock, []string{"SysV IPC", "by path are refused", "cgroup namespace only", "Unix sockets cannot be created"}},
		{"landlock, unprivileged, ABI 7", Support{Landlock: 7}, TierLandlock, []string{"SysV IPC", "by path are refused", "cgroup namespace only", "Unix sockets cannot be created", "through a descriptor"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.s.KnownLimits(tt.tier)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d lines, want %d:\n%s", len(got), len(tt.want), strings.Join(got, "\n"))
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("line %d = %q, want it to say %q", i, got[i], w)
				}
			}
		})
	}
}

// TestAttrsInWorkspace: with chmod, utime and setxattr by path refused in
// the landlock tier, Python programs still set modes and times in the
// workspace (bootstrap.py falls back to descriptors): shutil.copy2,
// copytree, tarfile extraction, pathlib and os calls keep their effect.
func TestAttrsInWorkspace(t *testing.T) {
	py := testpython.Path(t)
	code := `
import os, shutil, tarfile, pathlib, stat
os.makedirs("src/sub", exist_ok=True)
open("src/run.sh", "w").write("#!/bin/sh\n")
os.chmod("src/run.sh", 0o750)
os.utime("src/run.sh", (1000000000, 1000000000))
shutil.copy2("src/run.sh", "copy.sh")
shutil.copytree("src", "tree")
with tarfile.open("a.tar", "w") as tf: tf.add("src", arcname="t")
with tarfile.open("a.tar") as tf: tf.extractall("out")
pathlib.Path("p.txt").write_text("x"); pathlib.Path("p.txt").chmod(0o604)
try: os.setxattr("p.txt", "user.k", b"v"); x = os.getxattr("p.txt", "user.k")
except OSError as e: x = b"v" if e.errno == 95 else repr(e).encode()  # no user xattrs on this fs
def m(p): st = os.stat(p); return "%o %d" % (stat.S_IMODE(st.st_mode), st.st_mtime)
print(m("copy.sh"), m("tree/run.sh"), m("out/t/run.sh"), "%o" % stat.S_IMODE(os.stat("p.txt").st_mode), x)
`
	want := "750 1000000000 750 1000000000 750 1000000000 604 b'v'\n"
	for _, tier := range []Tier{TierNamespaces, TierLandlock, TierNone} {
		t.Run(string(tier), func(t *testing.T) {
			cfg := Config{Tier: tier}
			if tier == TierNone {
				cfg = Config{Isolation: IsolationOff}
			}
			r, err := New(cfg)
			if err != nil {
				skipTier(t, tier, err)
			}
			var out, errOut lockedBuffer
			res, err := r.Run(context.Background(), Job{Python: py, Code: code, Dir: mkWorkspace(t), Stdout: &out, Stderr: &errOut, Timeout: 30 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if res.ExitCode != 0 || out.String() != want {
				t.Errorf("exit %d, output %q, want %q; stderr:\n%s", res.ExitCode, out.String(), want, errOut.String())
			}
		})
	}
}
