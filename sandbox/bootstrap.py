# PRIMS bootstrap: reads the program from fd 3 and runs it as __main__.
# Reading from a descriptor instead of argv lifts the argv size limit and lets
# an interpreter be started before its code is known. The stream is the
# program's file name (as tracebacks show it), a newline, then its source.
# It imports nothing at start: every module it loaded would slow every run.
import sys


class _PrimsShowHook:
    """Makes matplotlib.pyplot.show() save open figures to output/ instead of
    doing nothing in a headless run. It is a meta path finder that answers
    only for matplotlib.pyplot and removes itself then, so a program that
    never imports matplotlib pays one string compare per import."""

    def __init__(self, out):
        self.out = out

    def find_spec(self, name, path=None, target=None):
        if name != "matplotlib.pyplot":
            return None
        sys.meta_path.remove(self)
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find else None
            if spec is not None and spec.loader is not None:
                spec.loader = _PrimsPatchLoader(spec.loader, self.out)
                return spec
        return None


class _PrimsPatchLoader:
    def __init__(self, inner, out):
        self._inner, self._out = inner, out

    def __getattr__(self, attr):
        return getattr(self._inner, attr)

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        try:
            _prims_patch_pyplot(module, self._out)
        except Exception:
            pass  # a matplotlib we do not understand keeps its own show()


def _prims_patch_pyplot(plt, out):
    import os

    fig_cls = getattr(plt, "Figure", None)
    if fig_cls is not None and not hasattr(fig_cls, "_prims_savefig"):
        orig = fig_cls.savefig

        def savefig(self, *args, **kwargs):
            self._prims_saved = True
            return orig(self, *args, **kwargs)

        fig_cls._prims_savefig = orig
        fig_cls.savefig = savefig

    def show(*args, **kwargs):
        # Figures the program saved itself are not saved twice.
        for num in list(plt.get_fignums()):
            fig = plt.figure(num)
            if not getattr(fig, "_prims_saved", False):
                os.makedirs(out, exist_ok=True)
                n = 1
                while os.path.lexists(os.path.join(out, "figure-%d.png" % n)):
                    n += 1
                fig.savefig(os.path.join(out, "figure-%d.png" % n))
            plt.close(fig)

    show.__doc__ = plt.show.__doc__
    plt.show = show


def _prims_preload(names):
    """Imports the operator's --preload modules before the program is known
    (a warm sandbox does this while it waits). A module that is missing or
    fails is skipped, and what importing prints, from Python or from C, is
    dropped: it belongs to no run."""
    import io
    import os

    saved = sys.stdout, sys.stderr
    fds = []
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        fds = [(fd, os.dup(fd)) for fd in (1, 2)]
        for fd, _ in fds:
            os.dup2(null, fd)
        os.close(null)
    except OSError:
        pass  # no /dev/null: Python-level output is still dropped
    sys.stdout = sys.stderr = io.StringIO()
    try:
        for name in names:
            try:
                __import__(name.strip())
            except BaseException:
                pass
    finally:
        sys.stdout, sys.stderr = saved
        for fd, copy in fds:
            os.dup2(copy, fd)
            os.close(copy)


def _prims_fd_attrs(os):
    """The landlock tier refuses chmod, chown, utime and setxattr by path:
    Landlock does not check them, so they would reach any file of the
    sandbox's user. Their descriptor forms act only on files the program
    could open. Where a path form is refused (EPERM), do it through a
    descriptor, so shutil.copy and tarfile keep working in the workspace."""
    if not hasattr(os, "supports_fd"):
        return  # Python 2: no descriptor forms to fall back to
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY

    def wrap(name):
        orig = getattr(os, name, None)
        if orig is None:
            return

        def attr(path, *args, **kw):
            try:
                return orig(path, *args, **kw)
            except OSError as e:
                if e.errno != 1 or isinstance(path, int):
                    raise
                err = e
            fl = flags if kw.pop("follow_symlinks", True) else flags | os.O_NOFOLLOW
            try:
                fd = os.open(path, fl, dir_fd=kw.pop("dir_fd", None))
            except OSError:
                raise err
            try:
                return orig(fd, *args, **kw)
            finally:
                os.close(fd)

        attr.__name__ = attr.__qualname__ = name
        attr.__doc__ = orig.__doc__
        setattr(os, name, attr)
        for s in (os.supports_fd, os.supports_dir_fd, os.supports_follow_symlinks):
            if orig in s:
                s.add(attr)

    for name in ("chmod", "chown", "utime", "setxattr", "removexattr"):
        wrap(name)


_prims_site_modules = frozenset()


def _prims_gate(os):
    """Under a sandbox init, wait until it has put the run's limits on this
    process: no byte of the program runs without them."""
    gate = os.environ.pop("PRIMS_GATE_FD", "")
    if gate:
        try:
            opened = os.read(int(gate), 1)
            os.close(int(gate))
        except OSError:
            opened = b""
        if opened != b"1":
            os._exit(125)


def _prims_main():
    import os

    _prims_ready(os)
    _prims_gate(os)
    _prims_run()


def _prims_ready(os):
    """What a run needs before its program is known: paid while waiting."""
    global _prims_site_modules
    _prims_site_modules = frozenset(sys.modules)  # the interpreter's and site's own
    sys.meta_path.insert(0, _PrimsShowHook(os.path.abspath("output")))
    _prims_fd_attrs(os)
    preload = os.environ.pop("PRIMS_PRELOAD", "")
    if preload:
        _prims_preload(preload.split(","))
    # The first compile() of a process costs milliseconds (Debian's 3.11:
    # ~1.5 ms); pay it while the code is not known yet.
    compile(b"pass\n", "<prims>", "exec", dont_inherit=True)


def _prims_run():
    """Reads the program from fd 3 and runs it as __main__; never returns."""
    import os

    with os.fdopen(3, "rb") as f:
        data = f.read()
    name, _, src = data.partition(b"\n")
    argv = None
    if name.startswith(b"\0"):
        # prims run FILE ARGS...: [file name, argv...], as python FILE would.
        import json

        argv = json.loads(name[1:].decode("utf-8"))
        name, argv = argv[0], argv[1:]
    else:
        name = name.decode("utf-8", "replace") or "<code>"
    main = type(sys)("__main__")
    main.__builtins__ = __builtins__
    main.__file__ = name
    sys.modules["__main__"] = main
    sys.argv = argv or [name]
    try:
        code = compile(src, name, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as e:
        sys.excepthook(type(e), e.with_traceback(None), None)
        _prims_exit(main, 1)
    try:
        exec(code, main.__dict__)
    except SystemExit as e:
        if e.code is None:
            _prims_exit(main, 0)
        if type(e.code) is int and 0 <= e.code <= 255:
            _prims_exit(main, e.code)
        raise  # Python prints other codes itself
    except BaseException as e:
        # Drop the bootstrap's own frame so the traceback starts at the
        # program's code.
        tb = e.__traceback__.tb_next
        if argv is not None and _prims_show_lines(name, src):
            import traceback

            traceback.print_exception(type(e), e.with_traceback(tb), tb)
            _prims_exit(main, 1)
        sys.excepthook(type(e), e.with_traceback(tb), tb)
        _prims_exit(main, 1)
    _prims_exit(main, 0)


def _prims_show_lines(name, src):
    """Lets a traceback show the program's lines when the sandbox cannot
    read its file (prims run FILE, with FILE outside the sandbox): the
    source goes into linecache, which the traceback module reads (the
    default excepthook reads the file itself). True when the caller should
    print the traceback with the traceback module."""
    if sys.excepthook is not sys.__excepthook__:
        return False
    try:
        open(name, "rb").close()
        return False
    except OSError:
        pass
    import linecache

    text = src.decode("utf-8", "replace")
    linecache.cache[name] = (len(text), None, text.splitlines(True), name)
    return True


def _prims_exit(main, status):
    """Ends the program as interpreter shutdown would, as far as a program
    can tell: non-daemon threads are joined, atexit functions run, what
    __main__ held is released (so files it left open are flushed and
    closed), cycles are collected and the standard streams flushed. Then the
    process exits without freeing every other object, which is most of
    shutdown's cost (3-4 ms of a print(1)). A program that loaded anything
    from outside the standard library, or ctypes, gets the full shutdown:
    native code may keep buffered output or exit handlers of its own."""
    import os

    stdlib = os.path.dirname(os.__file__) + os.sep
    plain = "ctypes" not in sys.modules
    for name, m in list(sys.modules.items()):
        if name in _prims_site_modules:
            continue
        f = getattr(m, "__file__", None)
        if f and (not f.startswith(stdlib) or "-packages" in f):
            plain = False  # site-packages, dist-packages, the workspace
            break
    if not plain:
        sys.exit(status)
    import atexit
    import gc

    try:
        threading = sys.modules.get("threading")
        if threading is not None:
            threading._shutdown()
        atexit._run_exitfuncs()
        main.__dict__.clear()
        gc.collect()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except BaseException:
        sys.exit(status)  # the full shutdown reports what went wrong
    os._exit(status)


_prims_main()
