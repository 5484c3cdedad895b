"""JSONL extraction records to a Megatron indexed dataset (``OUT.bin`` + ``OUT.idx``).

One module per job: :mod:`.config` (the options), :mod:`.inputs` (input resolution, pieces, blocks of
lines), :mod:`.encode` (a block to token ids; the worker pool), :mod:`.outputs` (the dataset builder, files
renamed into place only on success), :mod:`.accounting` (every line accounted for, the summary),
:mod:`.run` (:func:`preprocess` and the single-process run) and :mod:`.shards` (the sharded run).
"""

from megatron_t2c.data.preprocess.config import PreprocessConfig
from megatron_t2c.data.preprocess.run import preprocess

__all__ = ["PreprocessConfig", "preprocess"]
