
# PRIMS zygote: the program of a sandbox that forks a fresh interpreter for
# each run instead of starting one (sandbox/zygote_linux.go). It runs after
# the bootstrap's definitions and msgs.py, and has done what the bootstrap
# does before a program is known (_prims_ready); it never runs a program's
# code itself. The sandbox init left it the namespace's capabilities and
# did not confine it; each run's processes confine themselves, before the
# program's first line, exactly as the init confines a fresh run:
#
#   the zygote: gets {"op": "run"} on fd 3 with a socket of the run's own
#     (the server asks ahead of the run); forks P, PID 1 of a new PID
#     namespace, and goes back to waiting (it reaps P when P ends);
#   P: new mount, IPC (and network) namespaces, a fresh /tmp and /dev/shm;
#     its own session, says hello on the run's socket (the kernel adds its
#     host pid: SO_PASSCRED); makes the cgroup namespace once the server
#     says it has moved it into the run's cgroup, mounts /proc, and waits
#     (all this happens ahead of the run) for "go" with the run's stdout,
#     stderr and code pipe; forks Q, reaps until Q is gone, reports Q's
#     status and exits, which ends everything left in the namespace;
#   Q: drops every capability, enters the workspace, restricts itself with
#     the init's Landlock ruleset, takes the run's limits, the seccomp
#     filter and is not dumpable; then the bootstrap runs the program.
import _signal
import base64
import fcntl
import gc
import os
import resource
import socket
import struct


def _zy_libc():
    """libc through ctypes, with the prototypes used here; ctypes itself is
    taken out of sys.modules again, so the program imports its own (and
    _prims_exit sees only the program's)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    ul, vp, cp = ctypes.c_ulong, ctypes.c_void_p, ctypes.c_char_p
    libc.prctl.argtypes = [ctypes.c_int, ul, ul, ul, ul]
    libc.mount.argtypes = [cp, cp, cp, ul, cp]
    libc.unshare.argtypes = [ctypes.c_int]
    libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.capset.argtypes = [vp, vp]
    for name in [n for n in sys.modules if n == "ctypes" or n.startswith("ctypes.")]:
        del sys.modules[name]
    return ctypes, libc


_zy_ctypes, _zy_c = _zy_libc()

# Linux constants (the same on every architecture PRIMS builds for).
_ZY_CLONE_NEWNS = 0x00020000
_ZY_CLONE_NEWCGROUP = 0x02000000
_ZY_CLONE_NEWIPC = 0x08000000
_ZY_CLONE_NEWPID = 0x20000000
_ZY_CLONE_NEWNET = 0x40000000
_ZY_SIOCSIFFLAGS, _ZY_IFF_UP, _ZY_IFF_RUNNING = 0x8914, 0x1, 0x40
_ZY_MS_NOSUID, _ZY_MS_NODEV, _ZY_MS_NOEXEC = 2, 4, 8
_ZY_MS_REC, _ZY_MS_PRIVATE = 0x4000, 0x40000
_ZY_PR_SET_DUMPABLE = 4
_ZY_PR_SET_SECCOMP = 22
_ZY_PR_CAPBSET_DROP = 24
_ZY_PR_SET_SECUREBITS = 28
_ZY_PR_SET_NO_NEW_PRIVS = 38
_ZY_PR_CAP_AMBIENT, _ZY_PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_ZY_SYS_OPEN_TREE, _ZY_SYS_MOVE_MOUNT = 428, 429
_ZY_SYS_LANDLOCK_CREATE_RULESET, _ZY_SYS_LANDLOCK_ADD_RULE, _ZY_SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
_ZY_O_PATH = 0o10000000
_ZY_ENOENT = 2
_ZY_OPEN_TREE_CLONE, _ZY_AT_RECURSIVE, _ZY_O_CLOEXEC = 1, 0x8000, 0o2000000
_ZY_MOVE_MOUNT_F_EMPTY_PATH = 4
_ZY_AT_FDCWD = -100
_ZY_EINVAL = 22


def _zy_ok(ret, what):
    if ret != 0:
        e = _zy_ctypes.get_errno()
        raise OSError(e, "%s: %s" % (what, os.strerror(e)))


def _zy_prctl(op, a=0, what="prctl"):
    _zy_ok(_zy_c.prctl(op, a, 0, 0, 0), what)


def _zy_mount(src, dst, fstype, flags, data):
    _zy_ok(_zy_c.mount(src, dst, fstype, flags, data), "mount " + dst.decode())


def _zy_fresh_tmp(covered):
    """Mounts a fresh /tmp and /dev/shm, with the binds that were under
    them (the workspace may be) moved onto the new ones."""
    c, ct = _zy_c, _zy_ctypes
    trees = []
    for path in covered:
        fd = c.syscall(ct.c_long(_ZY_SYS_OPEN_TREE), ct.c_int(_ZY_AT_FDCWD), ct.c_char_p(path.encode()),
                       ct.c_uint(_ZY_OPEN_TREE_CLONE | _ZY_AT_RECURSIVE | _ZY_O_CLOEXEC))
        if fd < 0:
            _zy_ok(-1, "open_tree " + path)
        trees.append((path, fd))
    for d in (b"/tmp", b"/dev/shm"):
        _zy_mount(b"tmpfs", d, b"tmpfs", _ZY_MS_NOSUID | _ZY_MS_NODEV, b"mode=1777,size=64m")
    for path, fd in trees:
        os.makedirs(path, 0o755, exist_ok=True)
        ret = c.syscall(ct.c_long(_ZY_SYS_MOVE_MOUNT), ct.c_int(fd), ct.c_char_p(b""), ct.c_int(_ZY_AT_FDCWD),
                        ct.c_char_p(path.encode()), ct.c_uint(_ZY_MOVE_MOUNT_F_EMPTY_PATH))
        _zy_ok(ret, "move_mount " + path)
        os.close(fd)


def _zy_landlock(spec):
    """Builds the run's Landlock ruleset (the init's plan, zygote_linux.go)
    and restricts this process with it."""
    c, ct = _zy_c, _zy_ctypes
    attr = struct.pack("=QQQ", spec["handled_fs"], spec["handled_net"], spec["scoped"])
    fd = c.syscall(ct.c_long(_ZY_SYS_LANDLOCK_CREATE_RULESET), ct.c_char_p(attr), ct.c_size_t(len(attr)), ct.c_uint(0))
    if fd < 0:
        _zy_ok(-1, "landlock_create_ruleset")
    try:
        for rule in spec["paths"] or ():
            try:
                pfd = os.open(rule["path"], _ZY_O_PATH | _ZY_O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                beneath = struct.pack("=Qi", rule["access"], pfd)  # packed, as the kernel's
                ret = c.syscall(ct.c_long(_ZY_SYS_LANDLOCK_ADD_RULE), ct.c_int(fd), ct.c_int(1), ct.c_char_p(beneath), ct.c_uint(0))
                _zy_ok(ret, "landlock rule for " + rule["path"])
            finally:
                os.close(pfd)
        for port, access in spec["ports"] or ():
            net = struct.pack("=QQ", access, port)
            ret = c.syscall(ct.c_long(_ZY_SYS_LANDLOCK_ADD_RULE), ct.c_int(fd), ct.c_int(2), ct.c_char_p(net), ct.c_uint(0))
            _zy_ok(ret, "landlock rule for port %d" % port)
        ret = c.syscall(ct.c_long(_ZY_SYS_LANDLOCK_RESTRICT_SELF), ct.c_int(fd), ct.c_uint(0))
        _zy_ok(ret, "landlock_restrict_self")
    finally:
        os.close(fd)


def _zy_tasks(proc):
    """The tasks of the sandbox now (all one uid, which RLIMIT_NPROC
    counts), through the sandbox's /proc (a descriptor kept from before the
    run's own /proc hid it)."""
    n = 0
    for name in os.listdir(proc):
        if name.isdigit():
            try:
                n += max(os.stat(name + "/task", dir_fd=proc).st_nlink - 2, 1)
            except OSError:
                pass
    return n


class _ZyFprog(_zy_ctypes.Structure):
    _fields_ = [("len", _zy_ctypes.c_ushort), ("filter", _zy_ctypes.c_void_p)]


def _zy_filter(spec):
    """The seccomp program, built once in the zygote: every fork has it."""
    filt = base64.b64decode(spec["seccomp"])
    buf = _zy_ctypes.create_string_buffer(filt, len(filt))
    return buf, _ZyFprog(len(filt) // 8, _zy_ctypes.cast(buf, _zy_ctypes.c_void_p))


def _zy_confine(spec, prog, tasks):
    """Q's steps before the program, in the init's order (confine)."""
    _zy_prctl(_ZY_PR_SET_NO_NEW_PRIVS, 1, "no_new_privs")
    for cap in range(spec["last_cap"] + 1):
        if _zy_c.prctl(_ZY_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and _zy_ctypes.get_errno() != _ZY_EINVAL:
            _zy_ok(-1, "drop bounding capability")
    _zy_c.prctl(_ZY_PR_CAP_AMBIENT, _ZY_PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    _zy_prctl(_ZY_PR_SET_SECUREBITS, 0xF, "securebits")
    hdr = (_zy_ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_zy_ctypes.c_uint32 * 6)()
    _zy_ok(_zy_c.capset(hdr, data), "capset")
    os.chdir(spec["dir"])
    if spec["landlock"]:
        _zy_landlock(spec["landlock"])
    for res, soft, hard in spec["rlimits"]:
        if res == spec["nproc"]:
            soft, hard = soft + tasks, hard + tasks
        resource.setrlimit(res, (soft, hard))
    _zy_ok(_zy_c.prctl(_ZY_PR_SET_SECCOMP, 2, _zy_ctypes.addressof(prog), 0, 0), "seccomp")
    _zy_prctl(_ZY_PR_SET_DUMPABLE, 0, "dumpable")


def _zy_fail(sock, e):
    try:
        _prims_send(sock, {"err": "%s" % (e,)})
    except BaseException:
        pass
    os._exit(125)


def _zy_run_process(spec, prog, run):
    """P, PID 1 of the run's PID namespace; returns only in Q, confined,
    with the program's fds (which come with "go")."""
    try:
        _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
        flags = _ZY_CLONE_NEWNS | _ZY_CLONE_NEWIPC
        if spec["netns"]:
            flags |= _ZY_CLONE_NEWNET
        _zy_ok(_zy_c.unshare(flags), "unshare")
        if spec["netns"]:
            # Loopback only, as a fresh run's: for programs that talk to
            # themselves.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                fcntl.ioctl(s.fileno(), _ZY_SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", _ZY_IFF_UP | _ZY_IFF_RUNNING))
        _zy_mount(None, b"/", None, _ZY_MS_REC | _ZY_MS_PRIVATE, None)
        _zy_fresh_tmp(spec["covered"] or ())
    except BaseException as e:
        _zy_fail(run, e)
    try:
        os.setsid()
        _prims_send(run, {"ok": True})
        placed, _ = _prims_recv(run)
        if placed is None or placed.get("op") != "placed":
            os._exit(0)
        # In its cgroup now: the cgroup namespace's root is that cgroup.
        _zy_ok(_zy_c.unshare(_ZY_CLONE_NEWCGROUP), "unshare cgroup")
        proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | _ZY_O_CLOEXEC)
        flags = _ZY_MS_NOSUID | _ZY_MS_NODEV | _ZY_MS_NOEXEC
        if _zy_c.mount(b"proc", b"/proc", b"proc", flags, b"subset=pid") != 0:
            _zy_mount(b"proc", b"/proc", b"proc", flags, None)
        # PID 1 ignores what it has no handler for: no signal from the
        # run's processes can end it early (Landlock also scopes them).
        _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
        # Ready: all of the above is done before a run comes.
        go, fds = _prims_recv(run)
        if go is None or go.get("op") != "go" or len(fds) != 3:
            os._exit(0)
        out, err, code = fds
        tasks = _zy_tasks(proc)
        os.close(proc)
        q = os.fork()
    except BaseException as e:
        _zy_fail(run, e)
    if q == 0:
        try:
            _signal.signal(_signal.SIGINT, _signal.default_int_handler)
            _zy_confine(spec, prog, tasks)
        except BaseException as e:
            _zy_fail(run, e)
        run.detach()  # closed below, with everything else of P's
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.dup2(code, 3)
        os.closerange(4, 1 << 16)
        return
    os.close(out)
    os.close(err)
    os.close(code)
    while True:
        try:
            pid, status, ru = os.wait4(-1, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            os._exit(0)
        if pid == q:
            break
    cpu = int((ru.ru_utime + ru.ru_stime) * 1e9)
    try:
        _prims_send(run, {"status": status, "cpu_ns": cpu})
    finally:
        os._exit(0)


def _zy_serve():
    """The zygote's loop; returns only in a run's Q."""
    import json

    _prims_gate(os)
    _zy_prctl(_ZY_PR_SET_DUMPABLE, 0, "dumpable")
    spec = json.loads(os.environ.pop("PRIMS_ZYGOTE"))
    _, prog = filt = _zy_filter(spec)
    _prims_ready(os)
    os.set_inheritable(3, False)
    server = socket.socket(fileno=3)
    # Each run's P is PID 1 of a PID namespace made for it: unshare
    # makes the next fork the first of a new one, setns to this process's
    # own namespace undoes it for the fork after.
    pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    _signal.signal(_signal.SIGCHLD, _zy_reap)
    if hasattr(gc, "freeze"):
        # What the zygote holds is never collected by a run: its pages
        # stay shared instead of being written by each run's collector.
        gc.collect()
        gc.freeze()
    _prims_send(server, {"pid": os.getpid()})
    while True:
        msg, fds = _prims_recv(server)
        if msg is None:
            os._exit(0)
        if msg.get("op") != "run" or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            continue
        run = fds[0]
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        try:
            _zy_ok(_zy_c.unshare(_ZY_CLONE_NEWPID), "unshare PID namespace")
            pid = os.fork()
        except OSError as e:
            _zy_fail_reply(run, e)
            pid = -1
        if pid != 0 and _zy_c.setns(pidns, _ZY_CLONE_NEWPID) != 0:
            os._exit(1)  # later runs would land in this run's namespace
        if pid == 0:
            server.close()
            os.close(pidns)
            _zy_run_process(spec, prog, socket.socket(fileno=run))
            global _prims_site_modules
            _prims_site_modules = frozenset(sys.modules)
            return
        for fd in fds:
            os.close(fd)


def _zy_reap(signum, frame):
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def _zy_fail_reply(run, e):
    try:
        _prims_send(socket.socket(fileno=os.dup(run)), {"err": "fork: %s" % (e,)})
    except BaseException:
        pass


_zy_serve()
_prims_run()
