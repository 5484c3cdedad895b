"""Corpus extraction: Python files in, JSONL records and a report accounting for every file out.

Files are processed by a pool of worker processes (``--workers``) in a fixed order (sorted paths under
each input, inputs in the order given); results are consumed in that same order, so the output does not
depend on the number of workers.  The first file with given bytes is kept and later copies are rejected
as ``duplicate``; the first record with a given normalised code is kept and later ones are counted in
``duplicates_dropped`` (function-level dedup).  Every file lands in ``files_kept`` or under exactly one
rejection reason: ``files_seen == files_kept + sum(rejected.values())``.

Corpus scale.  Inputs are streamed (directories are walked lazily, ``--files-from`` lists and glob
patterns expanded as they are read), and the dedup keys are the only state that grows with the corpus:
an exact open-addressing table of file MD5s and record ids (:mod:`.dedup`, ~25-50 bytes per file and
~13-26 bytes per distinct record).  With several ranks (``mpiexec``, ``srun``, torchrun, ``--ranks N``;
:mod:`.corpus_ranks`) or ``--shard-dir``/``--resume``, the global file order is cut into shards of
``--shard-files`` consecutive files; each rank extracts its shards (every file read, filtered and parsed
once, no dedup yet) into ``extract-NNNNNN.files.jsonl`` (one line per file: name, MD5, reason, record
ids) and ``extract-NNNNNN.records.jsonl`` (the record lines).  Rank 0 then replays the shards in order
through the very same dedup and accounting as a single process (:class:`_Tally`), so the output, the
rejected list and the report are identical to a single-process run on the same input.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import json
import multiprocessing
import os
import sys
import time
import traceback
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from tqdm import tqdm

from megatron_t2c.data import corpus_ranks
from megatron_t2c.data import source_files
from megatron_t2c.utils.atomic import atomic_open, write_json
from megatron_t2c.utils.dataclass_flags import option
from megatron_t2c.data.extraction import CLEANING_FAILED, TREE_SITTER_ERROR, extract_records
from megatron_t2c.data.dedup import KeySet
from megatron_t2c.data.corpus_ranks import ShardingOptions, World
from megatron_t2c.data.source_files import DUPLICATE, InputFile, Rejected

#: A worker raised something unexpected on this file (the message is in the rejected list).
INTERNAL_ERROR = "internal_error"
ALL_REASONS = source_files.REJECTION_REASONS + (TREE_SITTER_ERROR, CLEANING_FAILED, INTERNAL_ERROR)
#: How many rejected definitions the report quotes.
REJECTED_EXAMPLES = 20


@dataclass(kw_only=True)
class ExtractConfig(ShardingOptions):
    """Extract functions, methods and classes from Python files into JSONL records."""

    paths: list[str] = option(default_factory=list, positional=True, metavar="PATH",
                              help="directories (searched recursively for *.py), files or glob patterns; "
                                   "none (and no --files-from): this interpreter's standard library")
    files_from: str | None = option(None, help="also read paths (files, directories, patterns) from this "
                                               "file, one a line ('-': stdin)", metavar="FILE")
    output: str = option(help="the JSONL file of records to write")
    report: str | None = option(None, help="also write the JSON report here")
    rejected_list: str | None = option(None, help="write each rejected file with its reason here (TSV)")
    workers: int = option(os.cpu_count() or 1, help="worker processes (per rank)")
    shard_files: int = option(1000, help="files per shard (the unit of work of a rank and of --resume)")
    progress: bool = option(True, help="show a progress bar on stderr")


@dataclass
class FileResult:
    """What a worker found in one file."""

    name: str
    md5: str | None = None
    reason: str | None = None
    detail: str = ""
    records: list[tuple[str, str, bool, str]] = field(default_factory=list)  # id, json, has docstring, kind
    rejected_records: list[str] = field(default_factory=list)  # definitions left out, with why


def process_file(item: InputFile) -> FileResult:
    """Read, filter and extract one file (runs in a worker)."""
    result = FileResult(item.name)
    try:
        data = source_files.read_bytes(item.path)
        result.md5 = source_files.content_hash(data)
        text = source_files.decode(data)
        source_files.check_lines(text)
        records = extract_records(text, item.name, result.rejected_records)
    except Rejected as exc:
        result.reason, result.detail = exc.reason, exc.detail
        return result
    except Exception as exc:  # one bad file must not end the run: it is counted and named
        result.reason = INTERNAL_ERROR
        result.detail = f"{type(exc).__name__}: {exc} | " + traceback.format_exc(limit=2).replace("\n", " ")
        return result
    result.records = [(r.id, r.to_json(), r.docstring is not None, r.kind) for r in records]
    return result


def _process_batch(items: list[InputFile]) -> list[FileResult]:
    return [process_file(item) for item in items]


def _init_worker() -> None:
    warnings.simplefilter("ignore")  # invalid escapes in parsed sources are not our business


class FileProcessors:
    """Where files are processed: here (``workers <= 1``) or in a pool of forked workers.

    :meth:`ordered` yields results in input order and keeps at most a few batches per worker in flight,
    so a stream of millions of files is never queued (``Pool.imap`` would read it all).
    """

    BATCH = 4

    def __init__(self, workers: int) -> None:
        self.pool = None
        if workers > 1:
            self.pool = multiprocessing.get_context("fork").Pool(workers, initializer=_init_worker)
        else:
            _init_worker()
        self.ahead = 4 * max(workers, 1)

    def ordered(self, files: Iterable[InputFile]) -> Iterator[FileResult]:
        if self.pool is None:
            yield from map(process_file, files)
            return
        pending: deque = deque()
        it = iter(files)
        while True:
            batch = list(itertools.islice(it, self.BATCH))
            if batch:
                pending.append(self.pool.apply_async(_process_batch, (batch,)))
            while pending and (len(pending) > self.ahead or not batch):
                yield from pending.popleft().get()
            if not batch:
                return

    def __enter__(self) -> "FileProcessors":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.pool is not None:
            if exc_type is None:
                self.pool.close()
                self.pool.join()
            self.pool.terminate()


class _Tally:
    """The running report: the one place where dedup and accounting are decided (single run or merge)."""

    def __init__(self) -> None:
        self.rejected = collections.Counter({reason: 0 for reason in ALL_REASONS})
        self.kinds: collections.Counter = collections.Counter()
        self.files_seen = self.files_kept = self.records = self.text_code = self.duplicates = 0
        self.records_rejected = 0
        self.rejected_examples: list[str] = []
        self.file_hashes = KeySet(width=2)
        self.record_ids = KeySet(width=1)

    def add(self, result: FileResult, out, rejected_out) -> None:
        self.files_seen += 1
        if result.md5 is not None and not self.file_hashes.add(int(result.md5, 16)):
            result.reason, result.detail, result.records = DUPLICATE, "same bytes as an earlier file", []
        if result.reason is not None:
            self.rejected[result.reason] += 1
            if rejected_out is not None:
                detail = result.detail.replace("\t", " ").replace("\n", " ")
                rejected_out.write(f"{result.name}\t{result.reason}\t{detail}\n")
            return
        self.files_kept += 1
        self.records_rejected += len(result.rejected_records)
        room = REJECTED_EXAMPLES - len(self.rejected_examples)
        if room > 0:
            self.rejected_examples.extend(result.rejected_records[:room])
        for rid, line, has_doc, kind in result.records:
            if not self.record_ids.add(int(rid, 16)):
                self.duplicates += 1
                continue
            out.write(line)
            out.write("\n")
            self.records += 1
            self.text_code += has_doc
            self.kinds[kind] += 1


def extract_corpus(config: ExtractConfig) -> dict | None:
    """Run the extraction described by ``config``; returns (and optionally writes) the report.

    Runs as one process unless a launcher started several ranks, ``ranks > 1``, or ``shard_dir`` or
    ``resume`` is set (then sharded; see the module doc).  Returns None on ranks other than 0.
    """
    source_files.check_paths(config.paths)
    if config.files_from not in (None, "-") and not os.path.exists(config.files_from):
        raise FileNotFoundError(f"no such file or directory: {config.files_from}")
    if config.shard_files < 1:
        raise ValueError("--shard-files must be at least 1")
    if not corpus_ranks.is_sharded(config):
        return _single(config)
    return corpus_ranks.run_ranks(config, lambda world: _sharded(config, world))


def _inputs(config: ExtractConfig) -> list[str]:
    return [str(p) for p in config.paths] + ([f"@{config.files_from}"] if config.files_from else []) \
        or [str(source_files.stdlib_root())]


def _single(config: ExtractConfig) -> dict:
    files = source_files.iter_discover(config.paths, config.files_from)
    start = time.perf_counter()
    tally = _Tally()
    bar = tqdm(unit="file", disable=not config.progress, file=sys.stderr, dynamic_ncols=True, desc="extract")
    with atomic_open(config.output) as out, \
            (atomic_open(config.rejected_list) if config.rejected_list else contextlib.nullcontext()) as rejected_out, \
            FileProcessors(config.workers) as processors:
        for result in processors.ordered(files):
            tally.add(result, out, rejected_out)
            bar.update()
            if bar.n % 64 == 0:
                bar.set_postfix(records=tally.records, refresh=False)
    bar.set_postfix(records=tally.records)
    bar.close()
    return _finish(config, tally, time.perf_counter() - start, ranks=1, shards=0)


def _finish(config: ExtractConfig, tally: _Tally, seconds: float, ranks: int, shards: int) -> dict:
    report = {
        "inputs": _inputs(config),
        "files_seen": tally.files_seen,
        "files_kept": tally.files_kept,
        "rejected": dict(tally.rejected),
        "records": tally.records,
        "text_code": tally.text_code,
        "code_only": tally.records - tally.text_code,
        "duplicates_dropped": tally.duplicates,
        "records_rejected": tally.records_rejected,
        "records_rejected_examples": tally.rejected_examples,
        "kinds": dict(sorted(tally.kinds.items())),
        "workers": config.workers,
        "ranks": ranks,
        "shards": shards,
        "seconds": round(seconds, 3),
        "files_per_s": round(tally.files_seen / seconds, 1) if seconds else None,
        "functions_per_s": round((tally.records + tally.duplicates) / seconds, 1) if seconds else None,
    }
    assert report["files_seen"] == report["files_kept"] + sum(report["rejected"].values())
    if config.report:
        write_json(config.report, report)
    return report


# --- sharded runs --------------------------------------------------------------------------------------

#: Options that change what a shard holds: a shard directory is only resumed with the same ones.
_PLAN_OPTIONS = ("shard_files",)


def _plan(config: ExtractConfig) -> Iterator[tuple[int, list[InputFile]]]:
    """The shards: ``(index, files)`` for consecutive runs of ``shard_files`` files in the global order."""
    files = source_files.iter_discover(config.paths, config.files_from)
    for index in itertools.count():
        batch = list(itertools.islice(files, config.shard_files))
        if not batch:
            return
        yield index, batch


def _names_digest(files: list[InputFile]) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    for f in files:
        digest.update(f.name.encode("utf-8", "surrogateescape") + b"\0")
    return digest.hexdigest()


def _sharded(config: ExtractConfig, world: World) -> dict | None:
    start = time.perf_counter()
    shard_dir = config.shard_dir or config.output + ".shards"
    plan = {"tool": "extract_functions", "inputs": _inputs(config),
            **{k: getattr(config, k) for k in _PLAN_OPTIONS}}
    digests: list[tuple[str, int]] = []  # (names digest, files) of every shard, for rank 0's merge
    bar = tqdm(unit="file", disable=not config.progress or world.rank != 0, file=sys.stderr,
               dynamic_ncols=True, desc=f"extract (rank 0 of {world.size})")

    def shards() -> Iterator[tuple[str, list[InputFile]]]:
        for _, files in _plan(config):
            digest = _names_digest(files)
            if world.rank == 0:
                digests.append((digest, len(files)))
            yield digest, files

    with FileProcessors(config.workers) as processors:
        def convert(name: str, index: int, shard: tuple[str, list[InputFile]]) -> bool:
            digest, files = shard
            _extract_shard(processors, shard_dir, name, index, files, digest, world.rank)
            return True

        corpus_ranks.process_shards(world, shard_dir=shard_dir, plan=plan, resume=config.resume, kind="extract",
                                    shards=shards(), convert=convert,
                                    still_valid=lambda done, shard: done["names_md5"] == shard[0],
                                    advance=lambda shard: bar.update(len(shard[1])))
    bar.close()
    if world.rank != 0:
        return None
    tally = _merge(config, shard_dir, digests)
    report = _finish(config, tally, time.perf_counter() - start, ranks=world.size, shards=len(digests))
    world.cleanup()
    return report


def _extract_shard(processors: FileProcessors, shard_dir: str, name: str, index: int, files: list[InputFile],
                   digest: str, rank: int) -> None:
    """Extract one shard's files into its two JSONL outputs, then write its marker."""
    t0 = time.perf_counter()
    base = os.path.join(shard_dir, name)
    records = 0
    with atomic_open(base + ".files.jsonl") as meta, atomic_open(base + ".records.jsonl") as rec:
        for result in processors.ordered(files):
            meta.write(json.dumps([result.name, result.md5, result.reason, result.detail,
                                   [[rid, has_doc, kind] for rid, _, has_doc, kind in result.records],
                                   result.rejected_records], ensure_ascii=False))
            meta.write("\n")
            for _, line, _, _ in result.records:
                rec.write(line)
                rec.write("\n")
            records += len(result.records)
    corpus_ranks.write_done(shard_dir, name, {
        "shard": index, "rank": rank, "files": len(files), "first_file": files[0].path,
        "last_file": files[-1].path, "names_md5": digest, "records": records,
        "outputs": [name + ".files.jsonl", name + ".records.jsonl"],
        "seconds": round(time.perf_counter() - t0, 3)})


def _merge(config: ExtractConfig, shard_dir: str, digests: list[tuple[str, int]]) -> _Tally:
    """Replay every shard, in order, through the single-process dedup and accounting."""
    tally = _Tally()
    manifest = []
    with atomic_open(config.output) as out, \
            (atomic_open(config.rejected_list) if config.rejected_list else contextlib.nullcontext()) as rejected_out:
        for index, (digest, n_files) in enumerate(digests):
            name = corpus_ranks.shard_name("extract", index)
            done = corpus_ranks.read_done(shard_dir, name)
            if done is None or done["names_md5"] != digest or done["files"] != n_files:
                raise RuntimeError(f"shard {name} in {shard_dir} is missing or does not match the inputs "
                                   "(were the inputs changed during the run?)")
            base = os.path.join(shard_dir, name)
            kept_before, records_before = tally.files_kept, tally.records
            with open(base + ".files.jsonl", encoding="utf-8") as meta, \
                    open(base + ".records.jsonl", encoding="utf-8") as rec:
                for line in meta:
                    fname, md5, reason, detail, recs, rejected = json.loads(line)
                    result = FileResult(fname, md5, reason, detail,
                                        [(rid, rec.readline()[:-1], has_doc, kind) for rid, has_doc, kind in recs],
                                        rejected)
                    tally.add(result, out, rejected_out)
            manifest.append({**done, "files_kept": tally.files_kept - kept_before,
                             "records_written": tally.records - records_before})
    write_json(os.path.join(shard_dir, corpus_ranks.MANIFEST),
               {"tool": "extract_functions", "inputs": _inputs(config), "output": config.output,
                "rejected_list": config.rejected_list, "shard_files": config.shard_files, "shards": manifest})
    if not config.keep_shards:
        corpus_ranks.remove_shards(shard_dir)
    return tally


def format_report(report: dict) -> str:
    """A short human-readable summary of a report."""
    rejected = ", ".join(f"{k} {v}" for k, v in report["rejected"].items() if v) or "none"
    return (f"files: {report['files_seen']} seen, {report['files_kept']} kept; rejected: {rejected}\n"
            f"records: {report['records']} ({report['text_code']} text-code, {report['code_only']} code-only; "
            f"{report['duplicates_dropped']} duplicates dropped, {report['records_rejected']} left out)\n"
            f"time: {report['seconds']:.1f} s, {report['files_per_s']} files/s, "
            f"{report['functions_per_s']} functions/s with {report['workers']} worker(s)"
            + (f" x {report['ranks']} rank(s), {report['shards']} shard(s)" if report.get("shards") else ""))
