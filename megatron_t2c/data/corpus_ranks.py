"""Running a corpus tool as several ranks: who am I, barriers, the shard directory and its manifest.

A *rank* is one process of a run; ranks may live on different nodes.  They share nothing but a directory
(``--shard-dir``, which must be on a filesystem every rank sees: NFS, Lustre, GPFS, a local disk on one
node).  The recipe both tools follow:

1. every rank enumerates the inputs the same way and cuts them into the same numbered *shards*
   (contiguous runs of the global input order);
2. rank ``r`` processes the shards ``s`` with ``s % world == r``, writing each shard's outputs to
   temporary files, renaming them into place, and writing the shard's marker (``*.done.json``) last: a
   marker means the shard is complete, so ``--resume`` skips it and never re-emits or loses a record;
3. a barrier; rank 0 merges the shards in shard order (= input order) into the final outputs, which are
   therefore independent of the number of ranks, and writes ``manifest.json`` (input -> shard -> outputs).

:func:`process_shards` is steps 1-2 and the barrier, the one shard loop of both tools.

Who am I (:func:`detect_world`): ``mpiexec``/``mpirun`` (Open MPI, MPICH/Hydra, Intel MPI: via mpi4py,
barrier = ``MPI_Barrier``), torchrun (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``: barrier = a gloo
process group), SLURM ``srun`` (``SLURM_PROCID``/``SLURM_NTASKS`` of a job step: file barrier named by
the job and step ids), any launcher that sets ``RANK`` and ``WORLD_SIZE`` plus ``T2C_RUN_ID`` (file
barrier), and ``--ranks N`` (N local processes forked by this one: file barrier).  A rank that fails
leaves an ``abort`` file that stops the others' file barriers.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import time
import traceback
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, TypeVar

from megatron_t2c.utils.atomic import write_json
from megatron_t2c.utils.dataclass_flags import option

LAUNCHERS = ("auto", "none")
_MPI_ENV = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE", "I_MPI_RANK")


@dataclass(kw_only=True)
class ShardingOptions:
    """Corpus-scale runs: several ranks, shards, resume."""

    ranks: int = option(1, "run as this many local rank processes (one node; like mpiexec -n N)")
    launcher: str = option("auto", "auto: detect mpiexec/srun/torchrun from the environment; none: ignore it",
                           choices=LAUNCHERS)
    shard_dir: str | None = option(None, "directory for per-shard outputs, markers and manifest.json, shared "
                                         "by all ranks (default: beside the output, OUTPUT.shards)",
                                   metavar="DIR")
    resume: bool = option(False, "reuse the shards a previous (interrupted) run completed in --shard-dir")
    keep_shards: bool = option(False, "keep per-shard outputs after merging (manifest.json is always kept)")


@dataclass
class World:
    """This process's place in a run; ``barrier`` waits for every rank."""

    rank: int = 0
    size: int = 1
    launcher: str = "single"  # single | mpi | torchrun | slurm | env | local
    run_id: str = ""
    comm: Any = None
    sync_dir: str | None = None
    detached: bool = False  # past the last barrier: a failure no longer strands the other ranks
    _barriers: int = 0

    @property
    def sharded(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.size == 1:
            return
        if self.launcher == "mpi":
            self.comm.Barrier()
        elif self.launcher == "torchrun":
            import torch.distributed as dist

            dist.barrier()
        else:
            self._file_barrier()

    def _sync_path(self, *names: str) -> str:
        assert self.sync_dir is not None, "set World.sync_dir before a file barrier"
        return os.path.join(self.sync_dir, ".sync", self.run_id, *names)

    def _file_barrier(self) -> None:
        k = self._barriers
        self._barriers += 1
        os.makedirs(self._sync_path(), exist_ok=True)
        with open(self._sync_path(f"b{k}.{self.rank}"), "w"):
            pass
        prefix, delay = f"b{k}.", 0.01
        while True:
            try:
                names = os.listdir(self._sync_path())
            except FileNotFoundError:  # rank 0 passed the last barrier and removed the files: all arrived
                return
            if "abort" in names:
                with open(self._sync_path("abort"), encoding="utf-8") as fh:
                    raise RuntimeError(f"another rank failed: {fh.read().strip()}")
            if sum(n.startswith(prefix) for n in names) >= self.size:
                return
            if self.launcher == "local" and self.rank > 0 and os.getppid() == 1:
                raise RuntimeError("local rank 0 is gone")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def fail(self, message: str) -> None:
        """Tell the other ranks this one failed (file barriers; MPI and torchrun launchers kill the rest)."""
        if self.size > 1 and self.sync_dir is not None and self.launcher not in ("mpi", "torchrun"):
            try:
                os.makedirs(self._sync_path(), exist_ok=True)
                with open(self._sync_path("abort"), "a", encoding="utf-8") as fh:
                    fh.write(f"rank {self.rank}: {message}\n")
            except OSError:
                pass

    def cleanup(self) -> None:
        """Remove this run's barrier files (rank 0, after the last barrier)."""
        if self.rank == 0 and self.sync_dir is not None and self.run_id:
            shutil.rmtree(self._sync_path(), ignore_errors=True)
            try:
                os.rmdir(os.path.join(self.sync_dir, ".sync"))
            except OSError:
                pass

    def describe(self) -> str:
        return f"rank {self.rank}/{self.size} ({self.launcher})"


def _int_env(*names: str) -> int | None:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            return int(value)
    return None


def detect_world(launcher: str = "auto") -> World:
    """This process's rank and world size from the environment its launcher set (see the module doc)."""
    if launcher == "none":
        return World()
    env = os.environ
    if any(name in env for name in _MPI_ENV):
        size = _int_env("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE")
        if size is None or size > 1:
            try:
                from mpi4py import MPI
            except ImportError:
                raise RuntimeError("launched by an MPI launcher but mpi4py is not installed "
                                   "(pip install 'megatron_t2c[mpi]'), or pass --launcher none") from None
            comm = MPI.COMM_WORLD
            if comm.Get_size() > 1:
                return World(comm.Get_rank(), comm.Get_size(), "mpi", comm=comm)
            return World()
    if "SLURM_PROCID" in env and ("SLURM_STEP_ID" in env or "SLURM_STEPID" in env):
        size = _int_env("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS") or 1
        if size > 1:  # srun; the batch script itself (no step) is one process
            step = env.get("SLURM_STEP_ID", env.get("SLURM_STEPID"))
            return World(int(env["SLURM_PROCID"]), size, "slurm", f"slurm-{env.get('SLURM_JOB_ID', '0')}.{step}")
    rank, size = _int_env("RANK"), _int_env("WORLD_SIZE")
    if rank is not None and size is not None and size > 1:
        if "MASTER_ADDR" in env and "MASTER_PORT" in env:
            import datetime

            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("gloo", rank=rank, world_size=size, timeout=datetime.timedelta(days=7))
            return World(rank, size, "torchrun")
        if "T2C_RUN_ID" not in env:
            raise RuntimeError("RANK/WORLD_SIZE are set without MASTER_ADDR/MASTER_PORT: set T2C_RUN_ID to a "
                               "value unique to this run (it names the file barrier), or pass --launcher none")
        return World(rank, size, "env", env["T2C_RUN_ID"])
    return World()


def is_sharded(options: ShardingOptions) -> bool:
    """Whether a run goes through shards: several ranks (``--ranks``, or started by a launcher), or a
    ``--shard-dir`` or ``--resume`` asked for."""
    if options.ranks > 1 or options.shard_dir is not None or options.resume:
        return True
    return detect_world(options.launcher).size > 1


def run_ranks(options: ShardingOptions, body: Callable[[World], Any]) -> Any:
    """Run ``body(world)`` on this process's rank (or, with ``--ranks N``, on N forked local ranks).

    Returns rank 0's result (None on other ranks).  A failing rank marks the run as aborted so that the
    others stop at their next barrier instead of waiting forever.
    """
    if options.ranks < 1:
        raise ValueError("--ranks must be at least 1")
    world = detect_world(options.launcher)
    if options.ranks > 1:
        if world.size > 1:
            raise ValueError(f"--ranks {options.ranks} inside a launcher that already started {world.size} ranks")
        return _run_local(options.ranks, body)
    return _guarded(world, body)


def _guarded(world: World, body: Callable[[World], Any]) -> Any:
    try:
        return body(world)
    except BaseException as exc:
        if world.size > 1 and not world.detached:
            world.fail(f"{type(exc).__name__}: {exc}")
            if world.launcher == "mpi":  # the others may wait in a barrier: end the whole job
                print(f"{world.describe()}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                if not isinstance(exc, (ValueError, OSError, KeyboardInterrupt, SystemExit)):
                    traceback.print_exc()
                world.comm.Abort(1)
        raise


def _die_with_parent() -> None:
    """Linux: have the kernel kill this process when its parent (local rank 0) dies."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child(world: World, body: Callable[[World], Any]) -> None:
    _die_with_parent()
    try:
        _guarded(world, body)
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def _run_local(size: int, body: Callable[[World], Any]) -> Any:
    run_id = f"local-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    context = multiprocessing.get_context("fork")
    sys.stdout.flush()
    sys.stderr.flush()
    children = [context.Process(target=_child, args=(World(r, size, "local", run_id), body), daemon=False)
                for r in range(1, size)]
    for child in children:
        child.start()
    try:
        result = _guarded(World(0, size, "local", run_id), body)
    except BaseException:
        for child in children:
            child.terminate()
        for child in children:
            child.join()
        raise
    for child in children:
        child.join()
    failed = [c.exitcode for c in children if c.exitcode != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} local rank(s) failed (exit status {failed})")
    return result


# --- the shard directory -------------------------------------------------------------------------------

PLAN = "plan.json"
MANIFEST = "manifest.json"
DONE_SUFFIX = ".done.json"


def prepare_shard_dir(world: World, shard_dir: str, plan: dict, resume: bool) -> None:
    """Rank 0 readies ``shard_dir`` for a run described by ``plan`` (a JSON-able fingerprint); then a barrier.

    Without ``resume`` old shards are removed.  With it, completed shards are kept when ``plan`` matches
    the one stored there (else ``ValueError``); temporary files of an interrupted run are removed.
    """
    world.sync_dir = shard_dir
    if world.rank == 0:
        os.makedirs(shard_dir, exist_ok=True)
        stored = os.path.join(shard_dir, PLAN)
        if resume and os.path.exists(stored):
            with open(stored, encoding="utf-8") as fh:
                previous = json.load(fh)
            if previous != plan:
                changed = sorted(k for k in set(plan) | set(previous) if plan.get(k) != previous.get(k))
                raise ValueError(f"--resume: {shard_dir} holds shards of a different run (changed: "
                                 f"{', '.join(changed)}); remove it or run without --resume")
        for name in os.listdir(shard_dir):
            path = os.path.join(shard_dir, name)
            if name == ".sync" or (resume and not name.startswith(".") and ".tmp" not in name):
                continue
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
        write_json(stored, plan)
    world.barrier()


Shard = TypeVar("Shard")


def process_shards(world: World, *, shard_dir: str, plan: dict, resume: bool, kind: str, shards: Iterable[Shard],
                   convert: Callable[[str, int, Shard], bool], still_valid: Callable[[dict, Shard], bool],
                   advance: Callable[[Shard], None] | None = None) -> None:
    """Steps 1 and 2 of the recipe (module doc) on this rank, up to the barrier after them: the one shard
    loop of every corpus tool.

    ``shards`` yields every shard of the run, the same on every rank; shard ``s`` is named
    ``shard_name(kind, s)``.  This rank takes the shards ``s % world.size == world.rank``: with ``resume``
    a shard whose marker exists and ``still_valid(marker, shard)`` is kept, any other is converted by
    ``convert(name, s, shard)``, which writes its outputs and marker and returns False to stop this rank's
    loop (a run that fails at the merge).  ``advance(shard)`` follows each of this rank's shards (progress).
    Afterwards the rank is detached: rank 0 merges.
    """
    prepare_shard_dir(world, shard_dir, plan, resume)  # a barrier: all ranks set up
    for index, shard in enumerate(shards):
        if index % world.size != world.rank:
            continue
        name = shard_name(kind, index)
        done = read_done(shard_dir, name) if resume else None
        if done is None or not still_valid(done, shard):
            if not convert(name, index, shard):
                break
        if advance is not None:
            advance(shard)
    world.barrier()  # every shard is complete (or a rank stopped)
    world.detached = True


def shard_name(kind: str, index: int) -> str:
    return f"{kind}-{index:06d}"


def read_done(shard_dir: str, name: str) -> dict | None:
    """A shard's marker (its metadata), or None when the shard is not complete."""
    try:
        with open(os.path.join(shard_dir, name + DONE_SUFFIX), encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None


def write_done(shard_dir: str, name: str, meta: dict) -> None:
    write_json(os.path.join(shard_dir, name + DONE_SUFFIX), meta)


def remove_shards(shard_dir: str, keep: tuple[str, ...] = (PLAN, MANIFEST)) -> None:
    """Delete per-shard outputs and markers after a successful merge (the plan and manifest stay)."""
    for name in os.listdir(shard_dir):
        if name not in keep and not name.startswith("."):
            os.unlink(os.path.join(shard_dir, name))


def file_fingerprint(path: str) -> dict:
    """What identifies an input file for ``--resume``: its path, size and modification time."""
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}

