"""JSONL extraction records to a Megatron indexed dataset (``OUT.bin`` + ``OUT.idx``): options, inputs,
encoding, outputs, accounting, the single-process run and the sharded run, one module each."""

from megatron_t2c.data.preprocess.config import PreprocessConfig
from megatron_t2c.data.preprocess.run import preprocess

__all__ = ["PreprocessConfig", "preprocess"]
