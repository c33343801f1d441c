# PRIMS bootstrap: reads the program from fd 3 and runs it as __main__.
# Reading from a descriptor instead of argv lifts the argv size limit and lets
# an interpreter be started before its code is known. The stream is the
# program's file name (as tracebacks show it), a newline, then its source.
# It imports nothing at start: every module it loaded would slow every run.
import sys


def _prims_main():
    import os

    with os.fdopen(3, "rb") as f:
        data = f.read()
    name, _, src = data.partition(b"\n")
    name = name.decode("utf-8", "replace") or "<code>"
    main = type(sys)("__main__")
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    sys.argv = [name]
    try:
        code = compile(src, name, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as e:
        sys.excepthook(type(e), e.with_traceback(None), None)
        sys.exit(1)
    try:
        exec(code, main.__dict__)
    except SystemExit:
        raise
    except BaseException as e:
        # Drop the bootstrap's own frame so the traceback starts at the
        # program's code.
        tb = e.__traceback__.tb_next
        sys.excepthook(type(e), e.with_traceback(tb), tb)
        sys.exit(1)


_prims_main()
