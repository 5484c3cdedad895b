"""Run a test body on several CPU ranks under torchrun, from inside an ordinary pytest test.

In a test module::

    from helpers.torchrun import run_with_torchrun

    def _body(ckpt_dir):                      # runs on every rank, under torchrun
        parallel.initialize_distributed(2, 1, cpu=True, seed=0)
        ...                                   # assert; an exception fails the rank

    def test_something(tmp_path):
        run_with_torchrun(__file__, "_body", nproc=2, kwargs={"ckpt_dir": str(tmp_path)})

:func:`run_with_torchrun` launches ``python -m torch.distributed.run --nproc-per-node N`` on a free port of
127.0.0.1 with this file as the entry script; on each rank the entry script imports the test module from its
path and calls the named function with ``kwargs`` (decoded from JSON), then tears down any process groups
the body left behind. If any rank fails or the run outlives ``timeout``, the whole process group of the
launcher is killed and the calling test fails with the ranks' output.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

_OUTPUT_TAIL = 20_000  # characters of the ranks' output kept in a failure message
_DONE = "[torchrun-body] {function} returned on rank {rank}"  # each rank prints this when its body returns


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _kill_group(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """Stop the launcher's whole process group: SIGTERM (torchrun passes it on to the ranks), then SIGKILL."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return  # the launcher, its ranks and their helpers are all gone
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever outlived SIGTERM (a hung rank, a checkpoint writer)
    except ProcessLookupError:
        pass
    proc.wait()


def _pump(stream, sink: list[str]) -> None:
    """Copy the launcher's output line by line to ``sink`` and to our stdout (pytest captures it)."""
    for line in iter(stream.readline, ""):
        sink.append(line)
        sys.stdout.write(line)
    stream.close()


def run_with_torchrun(test_file: str | os.PathLike, function: str, nproc: int = 2, timeout: float = 90.0,
                      kwargs: dict[str, Any] | None = None) -> str:
    """Run ``function(**kwargs)`` from ``test_file`` on ``nproc`` CPU ranks; fail the test if any rank fails.

    Returns the ranks' combined output (useful for asserting on what they printed).
    """
    import pytest  # only the calling side needs pytest

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "--max-restarts", "0",
           __file__, str(Path(test_file).resolve()), function, json.dumps(kwargs or {})]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    lines: list[str] = []
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    reader = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
    reader.start()
    try:
        returncode = proc.wait(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        returncode, timed_out = None, True
    finally:
        _kill_group(proc)  # also reaps helpers a clean exit may have left (e.g. checkpoint writers)
        reader.join(timeout=5)
    output = "".join(lines)
    missing = [rank for rank in range(nproc) if _DONE.format(function=function, rank=rank) not in output]
    if timed_out:
        what = f"timed out after {timeout:.0f} s"
    elif returncode != 0:
        what = f"exited with {returncode}"
    elif missing:
        what = f"ranks {missing} never reported that the body returned"
    else:
        return output
    pytest.fail(f"torchrun {Path(test_file).name}::{function} (nproc={nproc}) {what} "
                f"after {time.monotonic() - start:.1f} s; ranks' output:\n{output[-_OUTPUT_TAIL:]}", pytrace=False)


def _load_module(path: str):
    """Import the test module at ``path`` (its folder goes first on sys.path, as pytest does)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the helpers package
    sys.path.insert(0, str(Path(path).parent))
    name = f"_torchrun_body_{Path(path).stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _main(path: str, function: str, kwargs_json: str) -> None:
    """Entry point on each rank: run the body, then tear down whatever distributed state it left."""
    try:
        getattr(_load_module(path), function)(**json.loads(kwargs_json))
        print(_DONE.format(function=function, rank=os.environ["RANK"]), flush=True)
    finally:
        from megatron_t2c.runtime import distributed as parallel
        parallel.destroy_distributed()


if __name__ == "__main__":  # guarded: dist_checkpointing starts helper processes that re-import __main__
    _main(*sys.argv[1:4])
