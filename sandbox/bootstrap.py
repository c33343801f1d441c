# PRIMS bootstrap: reads the program from fd 3 and runs it as __main__.
# Reading from a descriptor instead of argv lifts the argv size limit and lets
# an interpreter be started before its code is known.
import sys


def _prims_main():
    import builtins, linecache, os, types

    with os.fdopen(3, "rb") as f:
        src = f.read().decode("utf-8", "replace")
    name = "<code>"
    # Tracebacks and inspect find the source through linecache; mtime None
    # keeps checkcache from evicting the entry.
    linecache.cache[name] = (len(src), None, src.splitlines(True), name)
    main = types.ModuleType("__main__")
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    sys.argv = [name]
    try:
        code = compile(src, name, "exec", dont_inherit=True)
    except SyntaxError as e:
        import traceback

        traceback.print_exception(type(e), e, None)
        sys.exit(1)
    try:
        exec(code, main.__dict__)
    except SystemExit:
        raise
    except BaseException as e:
        # Drop the bootstrap's own frame so the traceback starts at the
        # model's code.
        tb = e.__traceback__.tb_next
        e = e.with_traceback(tb)
        if sys.excepthook is sys.__excepthook__:
            # The C hook reads source lines from disk; the program has no
            # file, only its linecache entry, which traceback uses.
            import traceback

            traceback.print_exception(type(e), e, tb)
        else:
            sys.excepthook(type(e), e, tb)
        sys.exit(1)


_prims_main()
