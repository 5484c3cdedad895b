"""Weights & Biases logging of training steps (``--wandb-project``), beside the JSONL and TensorBoard logs."""

from __future__ import annotations

import netrc
import os
from typing import Any, Optional


def _has_credentials() -> bool:
    """Whether wandb could log in without asking: an API key in the environment or in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbLog:
    """One W&B run per training run.  Without credentials (or with ``WANDB_MODE=offline``) it logs offline into
    ``save_dir`` -- nothing is sent; ``wandb sync`` uploads it later -- so a machine without network never waits."""

    def __init__(self, *, project: str, name: Optional[str], save_dir: Optional[str], config: dict[str, Any],
                 resumed_step: int = 0, console=None):
        try:
            import wandb
        except ImportError as exc:
            raise RuntimeError("--wandb-project needs the wandb package: pip install 'megatron_t2c[wandb]'") from exc
        mode = os.environ.get("WANDB_MODE") or ("online" if _has_credentials() else "offline")
        save_dir = os.path.abspath(save_dir or "wandb")
        os.makedirs(save_dir, exist_ok=True)
        self._run = wandb.init(project=project, name=name, dir=save_dir, config=config, mode=mode,
                               resume="allow" if resumed_step else None)
        self.mode, self.directory = mode, self._run.dir
        if console is not None and mode == "offline":
            console.write(f"wandb: logging offline to {self.directory} (no credentials or WANDB_MODE=offline; "
                          "`wandb sync` uploads it)\n")

    def step(self, record: dict) -> None:
        self._run.log({f"train/{key}": value for key, value in record.items()
                       if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step"},
                      step=record["step"])

    def validation(self, step: int, loss: float, tokens: int) -> None:
        self._run.log({"valid/loss": loss, "valid/tokens": tokens}, step=step)

    def close(self) -> None:
        self._run.finish()


class LogTee:
    """Several step loggers behind the one interface the loop uses (step, validation, close)."""

    def __init__(self, *loggers):
        self.loggers = loggers

    def step(self, record: dict) -> None:
        for logger in self.loggers:
            logger.step(record)

    def validation(self, step: int, loss: float, tokens: int) -> None:
        for logger in self.loggers:
            logger.validation(step, loss, tokens)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()
