"""The harness side: a pool of sandbox workers that runs programs and returns their verdicts.

Layout::

    harness (ExecutionPool, one thread per worker)
      └─ worker (``python -I .../sandbox/bootstrap.py --worker``, :mod:`.worker`): forks one child per program
         └─ child (:mod:`.child`): rlimits, Landlock, unprivileged uid, seccomp, guards, ``exec(program, {})``

:attr:`ExecutionPool.capabilities` says which kernel layers are in force here; a missing one is a warning,
or an error with ``require_confinement``.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any, Hashable, Iterable, Iterator

from .config import SandboxConfig
from .privileges import resolve_user
from .verdicts import FAILED, TIMED_OUT, Verdict
from .wire import readable, recv, send
from .worker import wait_exit

BOOTSTRAP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bootstrap.py")


class _Worker:
    """Harness-side handle of one worker process."""

    def __init__(self, limits: dict) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-I", BOOTSTRAP, "--worker", json.dumps(limits)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True, close_fds=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"})
        hello = recv(self.proc.stdout.fileno())
        self.info = hello or {}
        if not hello or not hello.get("ready"):
            self.close()
            raise RuntimeError((hello or {}).get("error") or "the sandbox worker failed to start")

    def run(self, program: str, timeout: float) -> dict:
        """Run one program; raises ``RuntimeError`` (after killing what is left) if the worker dies."""
        send(self.proc.stdin.fileno(), {"program": program, "timeout": timeout})
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
                wait_exit(child, 5.0)
            self.close()
            raise RuntimeError("the sandbox worker died")
        return reply

    def _recv(self, fd: int, timeout: float) -> Any:
        if not readable(fd, timeout):
            return None
        try:
            return recv(fd)
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
        base = self.info.get("base")
        if base and os.path.basename(base).startswith("t2c-exec-"):  # left behind by a killed worker
            shutil.rmtree(base, ignore_errors=True)


def worker_limits(config: SandboxConfig) -> dict:
    """What the workers are asked to enforce; the unprivileged uid/gid only when the harness runs as root."""
    uid = gid = None
    if os.geteuid() == 0:
        uid, gid = resolve_user(config.sandbox_user)
        if uid == 0:
            raise ValueError(f"--sandbox-user {config.sandbox_user!r} is root: programs never run as root")
    return {"memory_mb": config.memory_mb, "file_size_mb": config.file_size_mb, "seccomp": config.seccomp,
            "landlock": config.landlock, "confine_reads": config.confine_reads, "uid": uid, "gid": gid}


def confinement_gaps(capabilities: dict) -> list[str]:
    """What a program could do here that the full sandbox would stop, one sentence per missing layer."""
    gaps = []
    if not capabilities["landlock"]:
        why = [e for e in capabilities.get("probe_errors", ()) if "Landlock" in e]
        why = why[0] if why else "the kernel lacks it, it is disabled, or --no-landlock"
        gaps.append(f"Landlock is not in force ({why}): a program that defeats the Python guards can write "
                    f"wherever uid {capabilities['uid']} can")
    if not capabilities["seccomp"]:
        gaps.append("the seccomp filter is not in force: a program can start processes, open sockets and "
                    "signal other processes through ctypes")
    if capabilities["uid"] == 0:
        gaps.append("programs run as root")
    if capabilities["read_search"] and not capabilities["confine_reads"]:
        gaps.append("programs keep CAP_DAC_READ_SEARCH (the Python installation is private to the harness user) "
                    "and reads are not confined: they can read any file")
    return gaps


def describe_layers(capabilities: dict) -> str:
    """One line for the console: the layers in force (each gap is a warning when the pool starts)."""
    layers = [name for name in ("seccomp",) if capabilities["seccomp"]]
    if capabilities["landlock"]:
        reads = "reads confined" if capabilities["confine_reads"] else "reads not confined"
        layers.append(f"Landlock ABI {capabilities['landlock']} ({reads})")
    uid = f"uid {capabilities['uid']}" + (" with CAP_DAC_READ_SEARCH" if capabilities["read_search"] else "")
    return f"sandbox: {', '.join(layers) or 'no kernel layers'}; programs run as {uid}"


class ExecutionPool:
    """``workers`` sandbox workers; :meth:`run` is thread-safe, :meth:`imap_unordered` runs many.

    Use as a context manager (or call :meth:`close`): workers exit, and kill whatever they still run,
    when the pool closes or the harness dies (their stdin reaches end of file).
    """

    def __init__(self, workers: int = 1, config: SandboxConfig | None = None) -> None:
        if workers < 1:
            raise ValueError("need at least one worker")
        self.config = config or SandboxConfig()
        self._limits = worker_limits(self.config)
        self.workers = workers
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        with ThreadPoolExecutor(max_workers=workers) as ex:  # start them in parallel
            futures = [ex.submit(_Worker, self._limits) for _ in range(workers)]
        errors = []
        for fut in futures:
            try:
                w = fut.result()
            except RuntimeError as exc:
                errors.append(exc)
                continue
            self._all.append(w)
            self._idle.put(w)
        if errors:
            self.close()
            raise errors[0]
        gaps = confinement_gaps(self.capabilities)
        if gaps and self.config.require_confinement:
            self.close()
            raise RuntimeError("the sandbox is not fully confined here (--require-confinement): " + "; ".join(gaps))
        for gap in gaps:
            warnings.warn(f"sandbox: {gap}", RuntimeWarning, stacklevel=2)

    @property
    def capabilities(self) -> dict:
        """What the kernel enforces on every program here (from the first worker's probe):

        ``subreaper``, ``seccomp`` (bools); ``landlock``: the ABI in force, 0 for none; ``confine_reads``:
        whether Landlock also confines reads; ``uid``/``gid``: what programs run as; ``read_search``:
        whether they keep ``CAP_DAC_READ_SEARCH`` (the Python installation is private to the harness user);
        ``probe_errors``: why a layer the kernel seemed to offer failed its probe; ``gaps``: sentences
        naming each missing layer (empty when fully confined).
        """
        info = self._all[0].info
        out = {k: info[k] for k in ("subreaper", "seccomp", "landlock", "confine_reads", "uid", "gid",
                                    "read_search")}
        out["probe_errors"] = info["errors"]
        out["gaps"] = confinement_gaps(out)
        return out

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
