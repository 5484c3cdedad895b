"""Zero-shot evaluation, two resumable stages::

    python tasks/evaluate.py generate ...   # a model's samples.jsonl (tasks/generate.py)
    python tasks/evaluate.py execute  ...   # run them in the sandbox, pass@k (tasks/execute.py)

``python tasks/evaluate.py <stage> --help`` lists each stage's options.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

STAGES = {"generate": "sample completions from a checkpoint (tasks/generate.py)",
          "execute": "run samples against the benchmark's tests, report pass@k (tasks/execute.py)"}


def usage() -> str:
    return ("usage: tasks/evaluate.py {generate,execute} [options]\n\nstages:\n"
            + "\n".join(f"  {name:9} {text}" for name, text in STAGES.items())
            + "\n\n'tasks/evaluate.py STAGE --help' shows a stage's options.")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    stage, rest = argv[0], argv[1:]
    if stage == "execute":
        from tasks.execute import main as execute_main

        execute_main(rest)
        return 0
    if stage == "generate":
        try:
            from tasks.generate import main as generate_main
        except ModuleNotFoundError as exc:
            if exc.name not in ("tasks.generate",):
                raise
            print("error: the generate stage (tasks/generate.py) is not available in this checkout",
                  file=sys.stderr)
            return 2
        generate_main(rest)
        return 0
    print(f"error: unknown stage {stage!r}\n\n{usage()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
