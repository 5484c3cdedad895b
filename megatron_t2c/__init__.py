"""megatron_t2c: text-to-code GPT pre-training with modality-relative pre-training on megatron-core.

One concept per module:

- ``special_tokens``: the marker and format tokens and their fixed ids.
- ``normalise``: whitespace normalisation to ``[new_line] [indent] [dedent]`` and its exact inverse.
- ``source_files``: finding, reading, decoding and filtering Python files (every file accounted for).
- ``extraction``: tree-sitter extraction of functions, methods and classes into records.
- ``formats``: PanGu-Coder and PyCodeGPT sample text.
- ``tokenizer``: SentencePiece training and the tokenizer object megatron-core consumes.
- ``preprocess``: JSONL records to Megatron indexed datasets.
- ``modality``, ``objectives``, ``separation``, ``modality_embedding``: the paper's modality rules, the four
  MRPT objectives, which tokens get code rows, and where those rows live in the embedding table.
- ``attention``, ``model``: the core-attention backends and the GPT model on megatron-core.
- ``train_config``, ``training_data``, ``training``, ``checkpointing``, ``metrics``: pretrain_t2c.py's
  configuration, data, loop, distributed checkpoints and logging.
- ``generation``: the KV-cached sampler used by the evaluation; ``pass_at_k``, ``incremental``: its metrics
  and incremental prompts.
- ``hf``: Hugging Face export/import (remote-code model, tokenizer, converter).
- ``quickstart``: the main job's stages after the data pipeline.
- ``compat``: the CPU compatibility layer for megatron-core 0.16.1; ``parallel``: process groups.
- ``cli``: dataclass configs exposed as command-line flags.
"""

__version__ = "0.1.0"
