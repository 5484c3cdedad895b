"""megatron_t2c: text-to-code GPT pre-training with modality-relative pre-training (MRPT) on megatron-core.

One subpackage per stage of the pipeline; ``t2c`` (:mod:`megatron_t2c.__main__`) has a subcommand for each:

- ``mrpt``: the paper's method (markers, sample formats, modality, separation, objectives); stdlib + torch only.
- ``data``: source files, function extraction, multi-rank corpus runs, preprocessing, dedup, GPT datasets.
- ``tokenizer``: SentencePiece training and runtime, and the adapter megatron-core consumes.
- ``models``: the GPT model on megatron-core: presets, attention backends, row layout, tied output.
- ``training``: the run configuration, the loop, distributed checkpoints, metrics.
- ``inference``: the KV-cached batched generator.
- ``evaluation``: HumanEval/MBPP problems and the task registry, prompts, generation, sandboxed execution, pass@k.
- ``analysis``: embedding spaces (t-SNE), contamination, checkpoint correlation, batch inspection, the report.
- ``pipeline``: the main job and its run-directory layout.
- ``hf``: Hugging Face export, import and verification (remote-code model, config, tokenizer).
- ``runtime``: distributed set-up and the CPU compatibility layer for megatron-core 0.16.1.
- ``utils``: atomic files, JSONL records, dataclass configs as command-line flags.
"""

__version__ = "0.1.0"
