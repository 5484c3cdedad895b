"""Command-line entry point of checkpoint conversion (t2c convert)."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Optional

from megatron_t2c.utils.dataclass_flags import option, parse_config


CONVERT_DOC = """Convert megatron_t2c checkpoints to Hugging Face directories and back.

A thin command line over :mod:`megatron_t2c.hf.export`, :mod:`~megatron_t2c.hf.import_hf` and
:mod:`~megatron_t2c.hf.verify`; see :mod:`megatron_t2c.hf.weight_map` for the mapping.
"""

CONVERT_DESCRIPTION = CONVERT_DOC.split("\n\n")[0] + """

--to-hf: a megatron_t2c distributed checkpoint saved at any TP/PP (a run directory: its latest iteration, or
an iteration directory) -> a directory that transformers' AutoModelForCausalLM / AutoTokenizer load
(trust_remote_code=True): config.json, model.safetensors (sharded with an index above --max-shard-size),
generation_config.json (eos = [eoc]), the tokenizer (tokenizer.model and tokenizer.json; decode gives Python
source), a model card README.md, and -- for models that need it (separation, RoPE, prefix-code) -- the modelling code,
with megatron_t2c's own modality rules, inside the directory.  A model without separation, with learned
positions and not prefix-code, exports as the stock GPT2LMHeadModel or GPTNeoForCausalLM that computes it
(no remote code; a Hugging Face tokenizer goes back to its own ids, the markers added after them).

--from-hf: a GPT2LMHeadModel (any activation) or GPTNeoForCausalLM directory (save_pretrained; e.g.
PyCodeGPT) with its own tokenizer, or an exported T2C directory -> a megatron_t2c checkpoint (run directory)
that loads at any TP/PP, e.g. to start MRPT from it with --init-from alone.  A Hugging Face tokenizer gains
the markers ([descr] [python] [eoc] ...) as special tokens; their embedding rows start as the mean row.

--verify: run both models on the same rows; print the max absolute logit difference and the top-1
agreement; exit 1 above the tolerance (float32: 1e-4)."""

CONVERT_EPILOG = """examples:
  tools/convert_checkpoint.py --to-hf --load runs/mrpt-partial --output hf/mrpt-partial --verify
  tools/convert_checkpoint.py --to-hf --load runs/mapt/iter_0050000 --output hf/mapt --dtype bfloat16 \
      --max-shard-size 2GB --eval-dir runs/eval/mapt
  tools/convert_checkpoint.py --from-hf --load hf/mapt --output runs/mapt-back \\
      --tensor-model-parallel-size 2 --pipeline-model-parallel-size 2 --verify

then, in Python (megatron_t2c need not be installed):
  tok = AutoTokenizer.from_pretrained("hf/mrpt-partial", trust_remote_code=True)
  model = AutoModelForCausalLM.from_pretrained("hf/mrpt-partial", trust_remote_code=True)
  out = model.generate(**tok("[descr] Add two numbers. [python]", return_tensors="pt"), max_new_tokens=64)"""


@dataclasses.dataclass
class ConvertConfig:
    """Checkpoint conversion."""

    load: str = option(help="what to convert: a megatron_t2c checkpoint (--to-hf) or a Hugging Face "
                       "directory (--from-hf)")
    output: str = option(help="where to write: a Hugging Face directory (--to-hf) or a checkpoint run "
                         "directory (--from-hf)")
    to_hf: bool = option(False, "megatron_t2c checkpoint -> Hugging Face directory")
    from_hf: bool = option(False, "Hugging Face directory -> megatron_t2c checkpoint")
    verify: bool = option(False, "compare both models' logits after converting; exit 1 above the tolerance")
    tolerance: Optional[float] = option(None, "--verify tolerance on the max |logit difference| "
                                        "(default: 1e-4 for float32 weights, 5e-2 for bfloat16)")
    model_class: str = option("auto", "--to-hf: the Hugging Face class: auto (the stock class that computes the "
                              "model exactly -- GPT2LMHeadModel or GPTNeoForCausalLM --, else T2CForCausalLM), "
                              "stock, gpt2, gpt_neo, t2c", choices=("auto", "stock", "gpt2", "gpt_neo", "t2c"))
    dtype: Optional[str] = option(None, "--to-hf: weight dtype of the export (default: the checkpoint's)",
                                  choices=("float32", "bfloat16", "float16"))
    tokenizer_model: Optional[str] = option(None, "the tokenizer: a SentencePiece model or a Hugging Face "
                                            "tokenizer directory (default: the checkpoint's / the directory's own)")
    tensor_model_parallel_size: int = option(1, "--from-hf: the TP size the checkpoint is meant for (checked "
                                             "and recorded; checkpoints load at any size)")
    pipeline_model_parallel_size: int = option(1, "--from-hf: the PP size, likewise")
    format: Optional[str] = option(None, "--from-hf: sample format when the directory does not say "
                                   "(default pangu)", choices=("pangu", "pycodegpt"))
    objective: Optional[str] = option(None, "--from-hf: MRPT objective to record when the directory does not "
                                      "say (default text-code)",
                                      choices=("text-code", "code", "corrupt-code", "prefix-code"))
    overwrite: bool = option(False, "--to-hf: replace the contents of a non-empty --output")
    max_shard_size: str = option("50GB", "--to-hf: above this size the weights are sharded "
                                 "(model-0000k-of-0000n.safetensors + model.safetensors.index.json), as "
                                 "save_pretrained's max_shard_size: 5GB, 500MB, 2GiB or bytes")
    eval_dir: Optional[str] = option(None, "--to-hf: evaluation results for the model card (<task>/<mode>"
                                     ".summary.json; default: RUN_DIR/eval/<name> of a pipeline run's checkpoint)")
    raw_decode: bool = option(False, "--to-hf: the tokenizer decodes to the normalised text ([new_line] [indent] "
                              "...) by default instead of Python source")
    verify_json: Optional[str] = option(None, "--verify: also write the result (max |logit difference|, top-1 "
                                        "agreement, tolerance, ok) to this JSON file")


def convert_main(argv: list[str] | None = None) -> int:
    config = parse_config(ConvertConfig, argv, description=CONVERT_DESCRIPTION, epilog=CONVERT_EPILOG)
    if config.to_hf == config.from_hf:
        print("error: pass exactly one of --to-hf and --from-hf", file=sys.stderr)
        return 2
    from megatron_t2c.training.checkpointing import CheckpointError
    from megatron_t2c.hf.architecture import ConversionError
    from megatron_t2c.hf.export import export_to_hf
    from megatron_t2c.hf.import_hf import import_from_hf
    from megatron_t2c.hf.verify import verify

    try:
        if config.to_hf:
            summary = export_to_hf(config.load, config.output, model_class=config.model_class,
                                   dtype=config.dtype, tokenizer_model=config.tokenizer_model,
                                   overwrite=config.overwrite, max_shard_size=config.max_shard_size,
                                   eval_dir=config.eval_dir, decode_python=not config.raw_decode)
            print(json.dumps(dataclasses.asdict(summary)))
            checkpoint, hf_dir = summary.checkpoint, config.output
        else:
            checkpoint = import_from_hf(
                config.load, config.output, tensor_model_parallel_size=config.tensor_model_parallel_size,
                pipeline_model_parallel_size=config.pipeline_model_parallel_size,
                tokenizer_model=config.tokenizer_model, sample_format=config.format, objective=config.objective)
            print(json.dumps({"checkpoint": checkpoint, "from": config.load}))
            hf_dir = config.load
        if config.verify:
            result = verify(checkpoint, hf_dir, tolerance=config.tolerance)
            print(f"verify: {result}")
            if config.verify_json:
                from megatron_t2c.utils.atomic import write_json

                write_json(config.verify_json, dict(dataclasses.asdict(result), ok=bool(result.ok)))
            if not result.ok:
                return 1
    except (CheckpointError, ConversionError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
