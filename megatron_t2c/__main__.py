"""``t2c``: the one command, with a subcommand per pipeline stage (also ``python -m megatron_t2c``)."""

from __future__ import annotations

import importlib
import sys
from typing import Sequence

#: subcommand -> (module, function, one-line help).  Modules are imported only when their command runs.
COMMANDS = {
    "extract": ("megatron_t2c.data.commands", "extract_main",
                "extract Python functions into JSONL records (default corpus: the standard library)"),
    "tokenizer": ("megatron_t2c.tokenizer.commands", "train_main",
                  "train the SentencePiece tokenizer on extraction records"),
    "preprocess": ("megatron_t2c.data.commands", "preprocess_main",
                   "records -> Megatron indexed dataset (.bin/.idx)"),
    "summary": ("megatron_t2c.data.commands", "summary_main", "corpus, tokenizer and dataset statistics of a run"),
    "train": ("megatron_t2c.training.commands", "train_main",
              "MAPT or MRPT training on megatron-core (same as pretrain_t2c.py; use torchrun for many ranks)"),
    "evaluate": ("megatron_t2c.evaluation.commands", "evaluate_main",
                 "zero-shot HumanEval/MBPP: 'generate' samples, 'execute' them, pass@k"),
    "convert": ("megatron_t2c.hf.commands", "convert_main", "megatron checkpoint <-> Hugging Face directory"),
    "inspect": ("megatron_t2c.analysis.commands", "inspect_main",
                "show what an objective and separation feed the model, per position"),
    "report": ("megatron_t2c.analysis.commands", "report_main", "write a run directory's report.md"),
    "embeddings": ("megatron_t2c.analysis.commands", "embeddings_main",
                   "t-SNE of embedding neighbours in the docstring and code spaces"),
    "contamination": ("megatron_t2c.analysis.commands", "contamination_main",
                      "exact matches of benchmark prompts in the training data"),
    "code-loss": ("megatron_t2c.analysis.commands", "code_loss_main",
                  "held-out code loss of a checkpoint on the HumanEval/MBPP reference solutions"),
    "correlation": ("megatron_t2c.analysis.commands", "correlation_main",
                    "Pearson correlation of pass@1 across checkpoints between test sets"),
    "pipeline": ("megatron_t2c.pipeline.commands", "pipeline_main",
                 "the main job: MAPT -> MRPT variants -> evaluation -> export -> report"),
}


def usage(prog: str = "t2c") -> str:
    lines = [f"usage: {prog} COMMAND [options]", "",
             "megatron_t2c: text-to-code GPT pre-training with modality-relative pre-training.", "", "commands:"]
    lines += [f"  {name:14} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", f"'{prog} COMMAND --help' shows a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, prog: str = "t2c") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(prog))
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from megatron_t2c import __version__

        print(f"megatron_t2c {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n\n{usage(prog)}", file=sys.stderr)
        return 2
    module, function, _ = COMMANDS[name]
    sys.argv[0] = f"{prog} {name}"  # argparse's usage line names the subcommand
    result = getattr(importlib.import_module(module), function)(rest)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # guarded: checkpoint writers and worker pools start helper processes
    sys.exit(main(prog="python -m megatron_t2c"))
