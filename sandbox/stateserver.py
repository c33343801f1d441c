
# PRIMS state server: the program of a sandbox that holds named interpreter
# states (sandbox/state_linux.go). It runs after the bootstrap's definitions
# (bootstrap.py without its last line), so calls get the same matplotlib
# hook and descriptor fallbacks as a fresh run.
#
# Three kinds of process, all inside the one sandbox:
#   the anchor (this program, started by the sandbox init): talks to the
#     server over fd 3, a unix socket, and keeps one socket per state;
#   a holder per state: an idle interpreter whose __main__ is the state;
#   a call: a fork of a holder that runs one program. If the program ends
#     well, the call tells the anchor "ok" and becomes the state's holder
#     (the old one is killed); otherwise it dies and the holder is as it was.
# Messages are msgs.py's.
import os
import select
import socket


def _st_flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except BaseException:
            pass


def _st_exec(main, msg):
    """Runs one program in the state's __main__, as the bootstrap runs a
    fresh one; returns its exit status (0: ended well)."""
    name = msg.get("filename") or "<code>"
    main.__file__ = name
    sys.argv = [name]
    src = msg["code"].encode("utf-8", "surrogateescape")
    try:
        code = compile(src, name, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as e:
        sys.excepthook(type(e), e.with_traceback(None), None)
        return 1
    try:
        exec(code, main.__dict__)
    except SystemExit as e:
        if e.code is None:
            return 0
        if type(e.code) is int:
            return e.code & 0xFF
        try:
            print(e.code, file=sys.stderr)
        except BaseException:
            pass
        return 1
    except BaseException as e:
        tb = e.__traceback__.tb_next
        try:
            sys.excepthook(type(e), e.with_traceback(tb), tb)
        except BaseException:
            pass
        return 1
    return 0


def _st_report(keep):
    """What a fork cannot carry, as the state is after a call that ended
    well: threads other than the main one, and open files and sockets
    (their position is shared with every later fork)."""
    threads = []
    threading = sys.modules.get("threading")
    if threading is not None:
        try:
            main = threading.main_thread()
            threads = [t.name for t in threading.enumerate() if t is not main and t.is_alive()]
        except BaseException:
            pass
    files = sockets = 0
    try:
        import resource

        top = min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 4096)
    except BaseException:
        top = 1024
    import stat

    for fd in range(3, top):
        if fd == keep:
            continue
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if stat.S_ISSOCK(st.st_mode):
            sockets += 1
        else:
            files += 1
    return {"threads": threads, "files": files, "sockets": sockets}


def _st_reap():
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def _st_holder(chan, main):
    """The loop of a state's holder: fork on demand, never run code itself.
    A call's fork leaves this loop to run its program and, when it ends
    well, comes back into it as the new holder."""
    while True:
        _st_reap()
        msg, fds = _prims_recv(chan)
        if msg is None or msg.get("op") != "fork":
            os._exit(0)
        try:
            pid = os.fork()
        except OSError as e:
            # Out of processes (--max-procs) or memory: the state is
            # untouched, and the call never started.
            for fd in fds:
                os.close(fd)
            _prims_send(chan, {"forkerr": str(e), "errno": e.errno or 0})
            continue
        if pid == 0:
            chan.close()
            if msg.get("bare"):
                # fork_from: a copy that is a holder at once.
                chan = socket.socket(fileno=fds[0])
                continue
            out, err, mine = fds
            os.dup2(out, 1)
            os.dup2(err, 2)
            os.close(out)
            os.close(err)
            chan = socket.socket(fileno=mine)
            go, _ = _prims_recv(chan)
            if go is None or go.get("op") != "go":
                os._exit(125)
            status = _st_exec(main, msg)
            _st_flush()
            if status != 0:
                os._exit(status)
            report = _st_report(chan.fileno())
            # The call's streams end here: its output is complete once
            # this process lets go of them.
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 1)
            os.dup2(null, 2)
            os.close(null)
            report["ok"] = True
            report["pid"] = os.getpid()
            _prims_send(chan, report)
            continue
        for fd in fds:
            os.close(fd)
        _prims_send(chan, {"pid": pid})
        if msg.get("bare"):
            continue
        _, status, ru = os.wait4(pid, 0)
        _prims_send(chan, {"status": status, "cpu_ns": int((ru.ru_utime + ru.ru_stime) * 1e9)})


def _st_fresh(server, holders):
    """A new, empty state: a fork of the anchor, which has imported
    nothing of a program's."""
    parent, child = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        server.close()
        parent.close()
        for chan, _ in holders.values():
            chan.close()
        # The anchor's own streams stay the anchor's: a holder writes
        # nothing, and a call gets streams of its own.
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)
        main = type(sys)("__main__")
        main.__builtins__ = __builtins__
        sys.modules["__main__"] = main
        sys.meta_path.insert(0, _PrimsShowHook(os.path.abspath("output")))
        try:
            _st_holder(child, main)
        finally:
            os._exit(0)
    child.close()
    return parent, pid


def _st_copy(holder):
    parent, child = socket.socketpair()
    try:
        _prims_send(holder, {"op": "fork", "bare": True}, [child.fileno()])
        rep, _ = _prims_recv(holder)
    except OSError:
        rep = None
    child.close()
    if rep is None:
        parent.close()
        return None, 0
    if "forkerr" in rep:
        parent.close()
        raise OSError(rep.get("errno", 0), rep["forkerr"])
    return parent, rep["pid"]


def _st_run(server, holders, msg, fds):
    name = msg["name"]
    chan, hpid = holders[name]
    parent, child = socket.socketpair()
    fork = {"op": "fork", "code": msg["code"], "filename": msg.get("filename", "")}
    try:
        _prims_send(chan, fork, fds + [child.fileno()])
        sent = True
    except OSError:
        sent = False  # the holder is gone (killed by a call of another state)
    for fd in fds:
        os.close(fd)
    child.close()
    rep = _prims_recv(chan)[0] if sent else None
    if rep is None:
        chan.close()
        del holders[name]
        parent.close()
        return {"lost": True}
    if "forkerr" in rep:
        parent.close()
        return rep
    cpid = rep["pid"]
    _prims_send(server, {"pid": cpid})
    go, _ = _prims_recv(server)
    if go is None:
        os._exit(0)
    _prims_send(parent, {"op": "go"})
    watch = [parent, chan]
    while watch:
        ready, _, _ = select.select(watch, [], [])
        if parent in ready:
            m, _ = _prims_recv(parent)
            if m is not None and m.get("ok"):
                # The call ended well: it is the state now.
                try:
                    os.kill(hpid, 9)
                except OSError:
                    pass
                chan.close()
                holders[name] = (parent, cpid)
                m["committed"] = True
                return m
            watch.remove(parent)
            continue
        m, _ = _prims_recv(chan)
        if m is None:
            # The holder itself died (a limit took it, not the call): the
            # call may still end well and become the state.
            watch.remove(chan)
            if parent not in watch:
                break
            continue
        parent.close()
        return {"status": m["status"], "cpu_ns": m["cpu_ns"]}
    parent.close()
    chan.close()
    del holders[name]
    return {"lost": True}


def _st_anchor():
    _prims_gate(os)  # bootstrap.py's
    if os.environ.pop("PRIMS_STATE_PRIVATE", "") == "1":
        # In a PID namespace every process of the sandbox can see the
        # others in /proc: a call could read a state's memory and
        # environment there (/proc/PID/mem, environ). A process that is not
        # dumpable is closed to that; forks inherit it, so every holder and
        # call is. (The landlock tier's program cannot read /proc at all.)
        try:
            import ctypes

            if ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
                raise OSError(ctypes.get_errno(), "prctl")
        except BaseException as e:
            sys.stderr.write("prims state server: cannot make its processes private: %r\n" % (e,))
            os._exit(126)
    _prims_fd_attrs(os)
    os.set_inheritable(3, False)
    server = socket.socket(fileno=3)
    preload = os.environ.pop("PRIMS_PRELOAD", "")
    if preload:
        _prims_preload(preload.split(","))
    compile(b"pass\n", "<prims>", "exec", dont_inherit=True)
    holders = {}
    _prims_send(server, {"pid": os.getpid()})
    while True:
        _st_reap()
        msg, fds = _prims_recv(server)
        if msg is None:
            os._exit(0)
        op = msg.get("op")
        try:
            if op == "new":
                src = msg.get("from")
                if src:
                    chan, pid = _st_copy(holders[src][0])
                    if chan is None:
                        del holders[src]
                        reply = {"lost": True}
                    else:
                        holders[msg["name"]] = (chan, pid)
                        reply = {"pid": pid}
                else:
                    chan, pid = _st_fresh(server, holders)
                    holders[msg["name"]] = (chan, pid)
                    reply = {"pid": pid}
            elif op == "run":
                reply = _st_run(server, holders, msg, fds)
            elif op == "drop":
                chan, pid = holders.pop(msg["name"])
                chan.close()
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass
                reply = {}
            else:
                reply = {"err": "unknown op %r" % (op,)}
        except BaseException as e:
            reply = {"err": "%s: %s" % (type(e).__name__, e)}
        _prims_send(server, reply)


_st_anchor()
