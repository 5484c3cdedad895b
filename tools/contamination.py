#!/usr/bin/env python
"""Contamination check (paper §3.3): exact matches of HumanEval and MBPP prompts in the training data,
whitespace ignored.

A thin command line over :mod:`megatron_t2c.contamination`.  Probes per problem: its description (the
natural-language prompt: HumanEval's entry-point docstring, MBPP's text) and its reference solution
(signature and body, comments removed), each reduced to its non-whitespace characters; a probe matches a
training text that contains it.  Training texts, streamed: the docstring and code of every record of
--functions (extraction JSONL) and/or every document of --dataset PREFIX (decoded with --tokenizer-model,
markers removed).  Reports per benchmark the number of contaminated problems and every matching
(problem id, training record id / document) pair, as JSON (--output) and markdown (--markdown, printed)."""

import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron_t2c.cli import option, parse_config  # noqa: E402

EPILOG = """examples:
  tools/contamination.py --functions runs/quickstart/data/functions.jsonl --output contamination.json
  tools/contamination.py --dataset runs/quickstart/data/pangu_all \\
      --tokenizer-model runs/quickstart/data/tokenizer.model --benchmarks humaneval --probes description"""


@dataclasses.dataclass
class ContaminationConfig:
    """Where the training data is and what to look for."""

    functions: list[str] = option(default_factory=list, help="extraction JSONL files (docstring and code of "
                                                             "each record are searched)", metavar="FILE.jsonl")
    dataset: list[str] = option(default_factory=list, help="indexed dataset prefixes (PREFIX.bin/.idx)",
                                metavar="PREFIX")
    tokenizer_model: str = option(None, "SentencePiece model to decode --dataset documents")
    benchmarks: list[str] = option(default_factory=lambda: ["humaneval", "mbpp"], help="benchmarks to check",
                                   choices=("humaneval", "mbpp"))
    mbpp_splits: list[str] = option(default_factory=lambda: ["test", "validation"],
                                    help="MBPP splits (test = task ids 11-510, validation = dev, 511-600)",
                                    choices=("prompt", "test", "validation", "train"))
    mbpp_path: str = option(None, "the official mbpp.jsonl (default: ../shared/data/mbpp.jsonl)")
    probes: list[str] = option(default_factory=lambda: ["description", "code"], help="what to search for",
                               choices=("description", "code"))
    min_chars: int = option(20, "probes with fewer non-whitespace characters are not searched")
    output: str = option(None, "write the report as JSON", metavar="FILE.json")
    markdown: str = option(None, "write the markdown summary", metavar="FILE.md")


def main(argv=None) -> int:
    config = parse_config(ContaminationConfig, argv, description=__doc__, epilog=EPILOG,
                          prog="tools/contamination.py")
    from megatron_t2c import contamination as C
    from megatron_t2c.atomic import atomic_open, write_json

    if not config.functions and not config.dataset:
        raise SystemExit("error: give --functions and/or --dataset")
    if config.dataset and not config.tokenizer_model:
        raise SystemExit("error: --dataset needs --tokenizer-model")
    probes, problems, notes = C.benchmark_probes(config.benchmarks, mbpp_path=config.mbpp_path,
                                                 mbpp_splits=config.mbpp_splits, kinds=config.probes)
    sources = [(os.path.basename(p), C.iter_jsonl_texts(p)) for p in config.functions]
    sources += [(os.path.basename(p), C.iter_dataset_texts(p, config.tokenizer_model)) for p in config.dataset]
    if config.min_chars < 1:
        raise SystemExit("error: --min-chars must be at least 1")
    report = C.check(sources, probes, problems, k=min(16, config.min_chars), min_chars=config.min_chars, notes=notes)
    text = C.format_markdown(report)
    print(text)
    if config.output:
        write_json(config.output, report)
    if config.markdown:
        with atomic_open(config.markdown) as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
