"""Command lines of tiny training runs for the tests: the tiny model's defaults and flags from keyword arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

#: A two-layer model on 128-token rows, 8 steps of 8 sequences, on the CPU.
TINY = {"cpu": True, "num_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "seq_length": 128,
        "train_iters": 8, "micro_batch_size": 4, "global_batch_size": 8, "lr": 1e-3, "log_interval": 1}


def stdlib_data(fmt: str) -> tuple[str, str]:
    """(dataset prefix, tokenizer model) made by the real preprocessing from stdlib records (cached)."""
    from helpers.modality_data import indexed_dataset
    from helpers.t2c_data import tiny_tokenizer

    return indexed_dataset(fmt), str(tiny_tokenizer("bpe"))


def to_flags(values: dict[str, Any]) -> list[str]:
    """``{"train_iters": 8, "cpu": True, "load_optim": False, "x": None}`` -> ``--train-iters 8 --cpu
    --no-load-optim`` (None leaves a flag out; a list gives several values)."""
    args: list[str] = []
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is False:
            args.append("--no-" + key.replace("_", "-"))
        elif value is not None:
            args += [flag, *(map(str, value) if isinstance(value, list) else [str(value)])]
    return args


def tiny_run(data: tuple[str, str], fmt: str, out: Path, *, cache: Optional[Path] = None, **overrides) -> list[str]:
    """``pretrain_t2c.py`` flags of a :data:`TINY` run on ``data`` logging to ``out/log.jsonl``."""
    prefix, tokenizer = data
    values = dict(TINY, data_path=prefix, tokenizer_model=tokenizer, format=fmt, log_jsonl=str(out / "log.jsonl"),
                  data_cache_path=str(cache or out / "cache"))
    values.update(overrides)
    return to_flags(values)
