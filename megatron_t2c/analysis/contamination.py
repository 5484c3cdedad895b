"""Contamination check (paper §3.3): exact matches of evaluation prompts in the training data, ignoring whitespace.

For every benchmark problem two *probes* (:func:`probes_of`): its natural-language description (the main
check) and its reference solution.  Probes and training texts are compared without any whitespace: a probe
matches a training text when it occurs in it as a substring (:class:`ProbeIndex`, which also explains how the
search is made fast).  Training data is streamed, never loaded at once: extraction records
(:func:`iter_jsonl_texts`) and indexed datasets (:func:`iter_dataset_texts`).  :func:`check` searches and
reports per benchmark; :func:`format_markdown` renders the report.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import sys
import tokenize
from collections import defaultdict
from types import SimpleNamespace
from typing import Iterable, Iterator, Optional, Sequence

from megatron_t2c.evaluation.tasks import NAMES, get_task, splits_for
from megatron_t2c.utils.jsonl import JsonlContents, iter_jsonl

__all__ = ["Probe", "nonws", "strip_comments", "benchmark_probes", "ProbeIndex", "iter_jsonl_texts",
           "iter_dataset_texts", "check", "format_markdown"]

BENCHMARKS = NAMES
PROBE_KINDS = ("description", "code")
_MARKERS = re.compile(r"\[(?:descr|python|eoc|sos|new_line|indent|dedent)\]")


def nonws(text: str) -> str:
    """``text`` without any whitespace character.

    Every probe and every training text is reduced to its non-whitespace characters (all Unicode whitespace
    removed, so re-indented or re-wrapped copies still match).
    """
    return "".join(text.split())


def strip_comments(source: str) -> str:
    """Python source without its comments (the source itself when it does not tokenize)."""
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type != tokenize.COMMENT]
        return tokenize.untokenize(tokens)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return source


@dataclasses.dataclass(frozen=True)
class Probe:
    """One searched text: a benchmark problem's description or reference code, whitespace removed."""

    benchmark: str
    problem: str  # task id
    kind: str  # "description" | "code"
    key: str  # non-whitespace text


def probes_of(benchmark: str, problems: Iterable, kinds: Sequence[str] = PROBE_KINDS) -> list[Probe]:
    """The probes of ``problems`` (:class:`megatron_t2c.evaluation.problem.Problem`).

    What is matched: for every benchmark problem two *probes*:

    * ``description``: the natural-language prompt, :attr:`Problem.description` -- HumanEval: the entry
      point's docstring (examples included); MBPP: the problem's ``text``.  This is the part of our prompts
      that comes from the benchmark's authors (the signature is generic).  It is the main check;
    * ``code``: the reference solution, :attr:`Problem.function` (signature and canonical body, comments
      removed): the answer itself in the training data.
    """
    out = []
    for p in problems:
        if "description" in kinds:
            out.append(Probe(benchmark, p.task_id, "description", nonws(p.description)))
        if "code" in kinds:
            out.append(Probe(benchmark, p.task_id, "code", nonws(strip_comments(p.function))))
    return out


def benchmark_probes(benchmarks: Sequence[str] = BENCHMARKS, *, mbpp_path: Optional[str] = None,
                     mbpp_splits: Sequence[str] = ("test", "validation"),
                     kinds: Sequence[str] = PROBE_KINDS) -> tuple[list[Probe], dict[str, int], list[str]]:
    """``(probes, problems per benchmark, notes)``; a benchmark whose data is unavailable (MBPP without
    ``mbpp.jsonl``) is left out with a note."""
    probes: list[Probe] = []
    counts: dict[str, int] = {}
    notes: list[str] = []
    for benchmark in benchmarks:
        task = get_task(benchmark)
        try:
            problems = [p for split in splits_for(task, mbpp_splits)
                        for p in task.load_from(SimpleNamespace(mbpp_path=mbpp_path, mbpp_split=split))]
        except (FileNotFoundError, ValueError) as exc:
            notes.append(f"{benchmark} not checked: {exc}")
            continue
        counts[benchmark] = len(problems)
        probes.extend(probes_of(benchmark, problems, kinds))
    return probes, counts, notes


class ProbeIndex:
    """Finds every probe occurring in a text.

    A probe matches a training text when it occurs in it as a substring, both without whitespace
    (:func:`nonws`; an identical docstring is the common case; a docstring or string literal that contains
    the prompt also counts).  Probes shorter than ``min_chars`` non-whitespace characters are not searched
    (reported as skipped): they would match by chance.

    Search: each probe's every ``k``-character window is indexed; a training text is probed only at every
    ``s``-th position, ``s = shortest probe - k + 1``, which any occurrence of any probe must cover with one
    of its windows; candidates are then verified exactly.  The whole standard library (66k records, 30M
    non-whitespace characters) takes seconds against all HumanEval and MBPP probes.
    """

    def __init__(self, probes: Sequence[Probe], k: int = 16, min_chars: int = 20):
        if k < 1 or min_chars < k:
            raise ValueError("need 1 <= k <= min_chars")
        self.probes = list(probes)
        self.skipped = [i for i, p in enumerate(self.probes) if len(p.key) < min_chars]
        active = [i for i, p in enumerate(self.probes) if len(p.key) >= min_chars]
        self.k = k
        self.step = (min(len(self.probes[i].key) for i in active) - k + 1) if active else 1
        index: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for i in active:
            key = self.probes[i].key
            for offset in range(len(key) - k + 1):
                index[key[offset:offset + k]].append((i, offset))
        self.index = dict(index)
        self.active = bool(active)

    def search(self, text: str) -> set[int]:
        """Indices of the probes that occur in ``text`` (already without whitespace)."""
        found: set[int] = set()
        if not self.active:
            return found
        k, index, probes = self.k, self.index, self.probes
        for pos in range(0, len(text) - k + 1, self.step):
            hits = index.get(text[pos:pos + k])
            if hits is None:
                continue
            for i, offset in hits:
                if i in found:
                    continue
                start = pos - offset
                if start >= 0 and text.startswith(probes[i].key, start):
                    found.add(i)
        return found


def iter_jsonl_texts(path: str, fields: Sequence[str] = ("docstring", "code")) -> Iterator[tuple[dict, str, str]]:
    """``(where, field, text)`` for each field of each record of an extraction JSONL file, streamed;
    ``where`` holds the record ``id`` and its 1-based ``line``.

    Extraction records (``functions.jsonl``): the ``docstring`` and ``code`` fields of each record are
    searched, reported with the record's ``id`` (and its 1-based line).
    """
    contents = JsonlContents()
    for line_no, record in iter_jsonl(path, contents, strict=False):
        where = {"id": record.get("id"), "line": line_no}
        for field in fields:
            text = record.get(field)
            if isinstance(text, str) and text:
                yield where, field, text
    if contents.bad or contents.torn:  # every line is searched or reported
        bad = contents.bad + ([(contents.torn_line, "torn_last_line")] if contents.torn else [])
        print(f"{path}: {len(bad)} line(s) not searched: " + ", ".join(f"{n} ({why})" for n, why in bad[:10])
              + (" ..." if len(bad) > 10 else ""), file=sys.stderr)


def iter_dataset_texts(prefix: str, tokenizer_model: str, chunk: int = 1024) -> Iterator[tuple[dict, str, str]]:
    """``(where, "document", text)`` for each document of an indexed dataset, decoded, markers removed;
    ``where`` holds the document index (and the source ``line`` when ``PREFIX.index_map.txt`` exists).

    Indexed datasets (``PREFIX.bin/.idx``): each document decoded with the tokenizer, format markers
    (``[descr] [python] [eoc] [sos]``) and whitespace markers (``[new_line] [indent] [dedent]``) removed,
    reported with the document index (and the ``functions.jsonl`` line from ``PREFIX.index_map.txt`` when
    present).
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDataset

    from megatron_t2c.tokenizer.loading import open_tokenizer

    tokenizer = open_tokenizer(tokenizer_model)
    dataset = IndexedDataset(prefix)
    lines = None
    if os.path.exists(prefix + ".index_map.txt"):
        with open(prefix + ".index_map.txt", encoding="utf-8") as fh:
            lines = [int(x) for x in fh.read().split()]
        if len(lines) != len(dataset):
            lines = None
    for start in range(0, len(dataset), chunk):
        for doc in range(start, min(len(dataset), start + chunk)):
            text = _MARKERS.sub("", tokenizer.detokenize(dataset[doc].tolist()))
            where = {"document": doc} if lines is None else {"document": doc, "line": lines[doc]}
            yield where, "document", text


def check(sources: Sequence[tuple[str, Iterable[tuple[dict, str, str]]]], probes: Sequence[Probe],
          problems: dict[str, int], *, k: int = 16, min_chars: int = 20, notes: Sequence[str] = ()) -> dict:
    """Search every ``(source name, texts)`` for the probes; a JSON-ready report per benchmark."""
    index = ProbeIndex(probes, k=k, min_chars=min_chars)
    matches: list[dict] = []
    scanned: dict[str, dict] = {}
    for name, texts in sources:
        count = chars = 0
        for where, field, text in texts:
            key = nonws(text)
            count += 1
            chars += len(key)
            for i in sorted(index.search(key)):
                p = probes[i]
                matches.append({"benchmark": p.benchmark, "problem": p.problem, "probe": p.kind, "source": name,
                                "field": field, **where})
        scanned[name] = {"texts": count, "nonws_chars": chars}
    report: dict = {"method": "exact substring match of the probe's non-whitespace text in a training text's "
                              "non-whitespace text",
                    "k": k, "min_chars": min_chars, "sources": scanned, "notes": list(notes), "benchmarks": {}}
    for benchmark, total in problems.items():
        own = [m for m in matches if m["benchmark"] == benchmark]
        by_kind = {kind: sorted({m["problem"] for m in own if m["probe"] == kind}, key=_task_key)
                   for kind in PROBE_KINDS}
        report["benchmarks"][benchmark] = {
            "problems": total,
            "contaminated_problems": len({m["problem"] for m in own}),
            "contaminated_by_probe": {kind: len(ids) for kind, ids in by_kind.items()},
            "problem_ids": by_kind,
            "skipped_probes": [{"problem": probes[i].problem, "probe": probes[i].kind}
                               for i in index.skipped if probes[i].benchmark == benchmark],
            "matches": own,
        }
    return report


def _task_key(task_id: str):
    head, _, number = task_id.rpartition("/")
    return (head, int(number)) if number.isdigit() else (task_id, 0)


def format_markdown(report: dict, max_listed: int = 20) -> str:
    """Per benchmark: contaminated problems and the first matching (problem, training text) pairs."""
    lines = ["| benchmark | problems | contaminated (any) | description matches | reference-code matches |",
             "|---|---:|---:|---:|---:|"]
    for name, b in report["benchmarks"].items():
        c = b["contaminated_by_probe"]
        lines.append(f"| {name} | {b['problems']} | {b['contaminated_problems']} | {c['description']} | "
                     f"{c['code']} |")
    sources = ", ".join(f"{n} ({s['texts']} texts, {s['nonws_chars']:,} non-whitespace characters)"
                        for n, s in report["sources"].items())
    lines += ["", f"Searched: {sources or 'nothing'}. Method: {report['method']} (probes shorter than "
                  f"{report['min_chars']} characters skipped)."]
    for name, b in report["benchmarks"].items():
        if b["matches"]:
            lines += ["", f"{name}: matching pairs (problem, probe → training text)" +
                      (f", first {max_listed} of {len(b['matches'])}" if len(b["matches"]) > max_listed else "")]
            for m in b["matches"][:max_listed]:
                where = ", ".join(f"{key} {m[key]}" for key in ("id", "document", "line") if key in m)
                lines.append(f"- {m['problem']} {m['probe']} → {m['source']} {m['field']} ({where})")
    for note in report.get("notes", []):
        lines += ["", f"Note: {note}"]
    return "\n".join(lines) + "\n"
