"""Corpus extraction: Python files in, JSONL records and a report accounting for every file out.

Files are processed by a pool of worker processes (``--workers``) in a fixed order (sorted paths under
each input, inputs in the order given); results are consumed in that same order, so the output does not
depend on the number of workers.  The first file with given bytes is kept and later copies are rejected
as ``duplicate``; the first record with a given normalised code is kept and later ones are counted in
``duplicates_dropped`` (function-level dedup).  Every file lands in ``files_kept`` or under exactly one
rejection reason: ``files_seen == files_kept + sum(rejected.values())``.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field

from tqdm import tqdm

from . import source_files
from .atomic import atomic_open, write_json
from .cli import option
from .extraction import CLEANING_FAILED, TREE_SITTER_ERROR, extract_records
from .source_files import DUPLICATE, InputFile, Rejected

#: A worker raised something unexpected on this file (the message is in the rejected list).
INTERNAL_ERROR = "internal_error"
ALL_REASONS = source_files.REJECTION_REASONS + (TREE_SITTER_ERROR, CLEANING_FAILED, INTERNAL_ERROR)


@dataclass(kw_only=True)
class ExtractConfig:
    """Extract functions, methods and classes from Python files into JSONL records."""

    paths: list[str] = option(default_factory=list, positional=True, metavar="PATH",
                              help="directories (searched recursively for *.py) or files; "
                                   "none: this interpreter's standard library")
    output: str = option(help="the JSONL file of records to write")
    report: str | None = option(None, help="also write the JSON report here")
    rejected_list: str | None = option(None, help="write each rejected file with its reason here (TSV)")
    workers: int = option(os.cpu_count() or 1, help="worker processes")
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


def _init_worker() -> None:
    warnings.simplefilter("ignore")  # invalid escapes in parsed sources are not our business


def _results(files: list[InputFile], workers: int):
    if workers <= 1 or len(files) <= 1:
        _init_worker()
        yield from map(process_file, files)
        return
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers, initializer=_init_worker) as pool:
        yield from pool.imap(process_file, files, chunksize=4)


class _Tally:
    """The running report."""

    def __init__(self) -> None:
        self.rejected = collections.Counter({reason: 0 for reason in ALL_REASONS})
        self.kinds: collections.Counter = collections.Counter()
        self.files_kept = self.records = self.text_code = self.duplicates = 0
        self.rejected_records: list[str] = []
        self.file_hashes: set[str] = set()
        self.record_ids: set[str] = set()

    def add(self, result: FileResult, out, rejected_out) -> None:
        if result.md5 is not None and result.md5 in self.file_hashes:
            result.reason, result.detail, result.records = DUPLICATE, "same bytes as an earlier file", []
        elif result.md5 is not None:
            self.file_hashes.add(result.md5)
        if result.reason is not None:
            self.rejected[result.reason] += 1
            if rejected_out is not None:
                detail = result.detail.replace("\t", " ").replace("\n", " ")
                rejected_out.write(f"{result.name}\t{result.reason}\t{detail}\n")
            return
        self.files_kept += 1
        self.rejected_records.extend(result.rejected_records)
        for rid, line, has_doc, kind in result.records:
            if rid in self.record_ids:
                self.duplicates += 1
                continue
            self.record_ids.add(rid)
            out.write(line)
            out.write("\n")
            self.records += 1
            self.text_code += has_doc
            self.kinds[kind] += 1


def extract_corpus(config: ExtractConfig) -> dict:
    """Run the extraction described by ``config``; returns (and optionally writes) the report."""
    files = source_files.discover(config.paths)
    start = time.perf_counter()
    tally = _Tally()
    bar = tqdm(total=len(files), unit="file", disable=not config.progress, file=sys.stderr,
               dynamic_ncols=True, desc="extract")
    with atomic_open(config.output) as out, \
            (atomic_open(config.rejected_list) if config.rejected_list else contextlib.nullcontext()) as rejected_out:
        for result in _results(files, config.workers):
            tally.add(result, out, rejected_out)
            bar.update()
            if bar.n % 64 == 0:
                bar.set_postfix(records=tally.records, refresh=False)
    bar.set_postfix(records=tally.records)
    bar.close()
    seconds = time.perf_counter() - start
    report = {
        "inputs": [str(p) for p in config.paths] or [str(source_files.stdlib_root())],
        "files_seen": len(files),
        "files_kept": tally.files_kept,
        "rejected": dict(tally.rejected),
        "records": tally.records,
        "text_code": tally.text_code,
        "code_only": tally.records - tally.text_code,
        "duplicates_dropped": tally.duplicates,
        "records_rejected": len(tally.rejected_records),
        "records_rejected_examples": tally.rejected_records[:20],
        "kinds": dict(sorted(tally.kinds.items())),
        "workers": config.workers,
        "seconds": round(seconds, 3),
        "files_per_s": round(len(files) / seconds, 1) if seconds else None,
        "functions_per_s": round((tally.records + tally.duplicates) / seconds, 1) if seconds else None,
    }
    assert report["files_seen"] == report["files_kept"] + sum(report["rejected"].values())
    if config.report:
        write_json(config.report, report)
    return report


def format_report(report: dict) -> str:
    """A short human-readable summary of a report."""
    rejected = ", ".join(f"{k} {v}" for k, v in report["rejected"].items() if v) or "none"
    return (f"files: {report['files_seen']} seen, {report['files_kept']} kept; rejected: {rejected}\n"
            f"records: {report['records']} ({report['text_code']} text-code, {report['code_only']} code-only; "
            f"{report['duplicates_dropped']} duplicates dropped, {report['records_rejected']} left out)\n"
            f"time: {report['seconds']:.1f} s, {report['files_per_s']} files/s, "
            f"{report['functions_per_s']} functions/s with {report['workers']} worker(s)")
