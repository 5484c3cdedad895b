"""Command-line entry point of zero-shot evaluation (t2c evaluate): the generate and execute stages."""

from __future__ import annotations

import sys
from typing import Sequence

STAGES = {"generate": "sample completions from a checkpoint (megatron_t2c/evaluation/generate.py)",
          "execute": "run samples against the benchmark's tests, report pass@k (megatron_t2c/evaluation/execute.py)"}


def usage(prog: str) -> str:
    return (f"usage: {prog} {{generate,execute}} [options]\n\nZero-shot evaluation, two resumable stages."
            "\n\nstages:\n" + "\n".join(f"  {name:9} {text}" for name, text in STAGES.items())
            + f"\n\n'{prog} STAGE --help' shows a stage's options.")


def evaluate_main(argv: Sequence[str] | None = None, prog: str = "t2c evaluate") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(prog))
        return 0 if argv else 2
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        print(f"error: unknown stage {stage!r}\n\n{usage(prog)}", file=sys.stderr)
        return 2
    if stage == "execute":
        from megatron_t2c.evaluation.execute import main as stage_main
    else:
        from megatron_t2c.evaluation.generate import main as stage_main
    from megatron_t2c.evaluation.tasks.mbpp import MbppUnavailable

    try:
        stage_main(rest, prog=f"{prog} {stage}")
    except MbppUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
