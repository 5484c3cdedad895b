"""megatron_t2c: text-to-code GPT pre-training with modality-relative pre-training on megatron-core.

One concept per module:

- ``special_tokens``: the marker and format tokens and their fixed ids.
- ``normalise``: whitespace normalisation to ``[new_line] [indent] [dedent]`` and its exact inverse.
- ``source_files``: finding, reading, decoding and filtering Python files (every file accounted for).
- ``extraction``: tree-sitter extraction of functions, methods and classes into records.
- ``formats``: PanGu-Coder and PyCodeGPT sample text.
- ``tokenizer``: SentencePiece training and the tokenizer object megatron-core consumes.
- ``preprocess``: JSONL records to Megatron indexed datasets.
- ``compat``: the CPU compatibility layer for megatron-core 0.16.1.
- ``cli``: dataclass configs exposed as command-line flags.
"""

__version__ = "0.1.0"
