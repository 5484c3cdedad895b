"""The embedded default corpus, extracted once per test session: every function of the standard library."""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

from megatron_t2c.data.corpus_extraction import ExtractConfig, extract_corpus


@functools.lru_cache(maxsize=None)
def stdlib_extraction() -> tuple[Path, dict, tuple[dict, ...]]:
    """(records JSONL path, report, records) for the whole standard library, extracted with 2 workers."""
    out = Path(tempfile.mkdtemp(prefix="t2c-stdlib-"))
    atexit.register(shutil.rmtree, out, True)
    config = ExtractConfig(output=str(out / "functions.jsonl"), report=str(out / "report.json"),
                           rejected_list=str(out / "rejected.tsv"), workers=2, progress=False)
    report = extract_corpus(config)
    with open(config.output, encoding="utf-8") as fh:
        records = tuple(json.loads(line) for line in fh)
    return out, report, records
