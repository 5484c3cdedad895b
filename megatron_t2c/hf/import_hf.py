"""Import: a Hugging Face GPT-2, GPT-Neo or exported ``T2CForCausalLM`` directory to a megatron_t2c checkpoint.

The inverse mapping (:mod:`.weight_map`) into a TP=1/PP=1 :class:`~megatron_t2c.models.gpt.T2CGPTModel`,
saved with :func:`~megatron_t2c.training.checkpointing.save_checkpoint`.  Checkpoints are TP/PP-agnostic,
so any requested TP/PP is validated against the architecture, recorded in the run info
(``config.target_parallel``) and the checkpoint loads at that size.  A stock model with its own Hugging Face
tokenizer gets the markers as special tokens and one embedding row each (:mod:`.vocab_map`); the tokenizer
is stored with the checkpoint, so MRPT starts from it with ``--init-from`` alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Iterator, Optional

import torch

from megatron_t2c.hf.architecture import ConversionError, HFArchitecture, check_tokenizer
from megatron_t2c.hf.safetensors_files import SafetensorsReader, open_hf_weights
from megatron_t2c.hf.vocab_map import MARKERS, import_table, is_hf_tokenizer
from megatron_t2c.tokenizer.huggingface import OFFSET
from megatron_t2c.hf.weight_map import FINAL, POSITIONS, TABLE, interleave_qkv, layer_rows

#: Files that make a directory a Hugging Face tokenizer.
HF_TOKENIZER_FILES = ("tokenizer.json", "vocab.json")


def _hf_to_megatron(tensors: SafetensorsReader, arch: HFArchitecture,
                    target: str) -> Iterator[tuple[str, torch.Tensor]]:
    """``(megatron module name at TP=1, tensor)`` for every parameter but the table; see :func:`_hf_table`."""
    if arch.position_embedding_type == "learned_absolute":
        yield POSITIONS, tensors.get("transformer.wpe.weight")
    for i in range(arch.num_layers):
        for row in layer_rows(arch.qkv_bias):
            name = row.hf_name(target)
            if target == "gpt_neo" and row.qkv:
                t = torch.cat([tensors.get(f"transformer.h.{i}.{name.format(p)}") for p in "qkv"])
            else:
                t = tensors.get(f"transformer.h.{i}.{name}")
            if target == "gpt2" and t.dim() == 2:
                t = t.t()  # GPT-2's Conv1D stores [in, out]
            if row.qkv:
                t = interleave_qkv(t, arch.num_attention_heads, arch.num_query_groups, arch.head_dim)
            yield f"decoder.layers.{i}.{row.module}", t.contiguous()
    for key, name in FINAL:
        yield key, tensors.get(name)


def _hf_table(tensors: SafetensorsReader, arch: HFArchitecture) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    base = tensors.get("transformer.wte.weight")
    code = tensors.get("transformer.wte_code.weight") if arch.separated_ids else None
    if "lm_head.weight" in tensors and not torch.equal(tensors.get("lm_head.weight"), base):
        raise ConversionError("unsupported: the output layer (lm_head) is not tied to the input embedding")
    return base, code


def _find_tokenizer(hf_dir: str) -> str:
    """The tokenizer of a Hugging Face directory: megatron_t2c's ``tokenizer.model``, else the directory itself
    when it holds a Hugging Face tokenizer."""
    sentencepiece = os.path.join(hf_dir, "tokenizer.model")
    if os.path.isfile(sentencepiece):
        return sentencepiece
    if any(os.path.isfile(os.path.join(hf_dir, f)) for f in HF_TOKENIZER_FILES):
        return hf_dir
    raise ConversionError(f"no tokenizer in {hf_dir}: neither tokenizer.model (megatron_t2c SentencePiece) nor "
                          "tokenizer.json / vocab.json + merges.txt (Hugging Face): pass --tokenizer-model")


@contextlib.contextmanager
def single_rank():
    """megatron's parallel state for one CPU rank (TP=PP=1), unless the caller already set one up."""
    from megatron.core import parallel_state

    from megatron_t2c.runtime import distributed as parallel

    if parallel_state.model_parallel_is_initialized():
        yield
        return
    parallel.initialize_distributed(1, 1, cpu=True, seed=0)
    try:
        yield
    finally:
        parallel.destroy_distributed()


def _check_parallel(arch: HFArchitecture, tp: int, pp: int) -> None:
    problems = []
    if tp < 1 or pp < 1:
        problems.append("sizes must be positive")
    if arch.num_attention_heads % tp or arch.num_query_groups % tp:
        problems.append(f"{arch.num_attention_heads} attention heads do not split over TP={tp}")
    if arch.ffn_hidden_size % tp:
        problems.append(f"MLP width {arch.ffn_hidden_size} does not split over TP={tp}")
    if arch.num_layers % pp:
        problems.append(f"{arch.num_layers} layers do not split over PP={pp}")
    if problems:
        raise ConversionError("cannot target that parallel layout: " + "; ".join(problems))


def import_from_hf(hf_dir: str, output: str, *, tensor_model_parallel_size: int = 1,
                   pipeline_model_parallel_size: int = 1, tokenizer_model: Optional[str] = None,
                   sample_format: Optional[str] = None, objective: Optional[str] = None,
                   iteration: int = 0) -> str:
    """A megatron_t2c checkpoint (run directory ``output``) from a Hugging Face GPT-2 / GPT-Neo / T2C directory.

    ``tokenizer_model`` defaults to the directory's own tokenizer (``tokenizer.model``, else its Hugging Face
    tokenizer files; a Hugging Face tokenizer of a stock model gains the markers, see :mod:`.vocab_map`).  The
    checkpoint is written from one TP=1/PP=1 process and loads at any TP/PP (dist checkpoints reshard); the
    requested sizes are checked against the architecture and recorded in the run info.  Returns the iteration
    directory.
    """
    config_path = os.path.join(hf_dir, "config.json")
    if not os.path.isfile(config_path):
        raise ConversionError(f"missing file: {config_path} (not a Hugging Face model directory)")
    with open(config_path, encoding="utf-8") as fh:
        hf_config = json.load(fh)
    arch, target = HFArchitecture.from_hf_config(hf_config, sample_format=sample_format, objective=objective)
    _check_parallel(arch, tensor_model_parallel_size, pipeline_model_parallel_size)
    tokenizer_model = tokenizer_model or _find_tokenizer(hf_dir)
    tensors = open_hf_weights(hf_dir)
    base, code = _hf_table(tensors, arch)
    with tempfile.TemporaryDirectory(prefix="t2c-import-") as scratch:
        if target != "t2c" and os.path.isdir(tokenizer_model):  # a Hugging Face tokenizer: its own ids
            tokenizer = _open_tokenizer(tokenizer_model)
            base = import_table(base, tokenizer, hf_dir)  # markers in front, the original rows shifted
            arch.vocab_size = base.shape[0]
            tokenizer.save(os.path.join(scratch, "tokenizer"), model_rows=base.shape[0] - OFFSET)
            tokenizer_model = os.path.join(scratch, "tokenizer")
        elif base.shape[0] != arch.vocab_size:
            raise ConversionError(f"transformer.wte.weight has {base.shape[0]} rows, config.json says vocab_size "
                                  f"{arch.vocab_size}")
        tokenizer = check_tokenizer(tokenizer_model, arch.vocab_size)
        return _write_checkpoint(tensors, arch, target, base, code, tokenizer_model, tokenizer, output, iteration,
                                 hf_dir, hf_config["model_type"],
                                 (tensor_model_parallel_size, pipeline_model_parallel_size))


def _open_tokenizer(path: str):
    from megatron_t2c.tokenizer.loading import open_tokenizer

    try:
        return open_tokenizer(path)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ConversionError(f"{path}: not a tokenizer megatron_t2c reads: {exc}") from exc


def _write_checkpoint(tensors, arch, target, base, code, tokenizer_model, tokenizer, output, iteration, hf_dir,
                      model_type, parallel) -> str:
    from megatron_t2c.models.gpt import build_model, make_layout
    from megatron_t2c.training.checkpointing import make_run_info, save_checkpoint

    model_config = arch.model
    with single_rank():
        layout = make_layout(model_config, arch.separated_ids, arch.vocab_size)
        model = build_model(model_config, layout, transformer_config=model_config.transformer_config(
            hidden_dropout=0.0, attention_dropout=0.0, perform_initialization=False))  # all overwritten
        params, copied = dict(model.named_parameters()), set()
        with torch.no_grad():
            _copy_param(params, TABLE, layout.to_local(base, code, 0), copied)
            for name, t in _hf_to_megatron(tensors, arch, target):
                _copy_param(params, name, t, copied)
        left = sorted(set(params) - copied)
        if left:
            raise ConversionError(f"parameters without a Hugging Face source: {', '.join(left)}")
        config = {"converted_from": os.path.abspath(hf_dir), "hf_model_type": model_type,
                  "target_parallel": {"tensor_model_parallel_size": parallel[0],
                                      "pipeline_model_parallel_size": parallel[1]}}
        if is_hf_tokenizer(tokenizer) and target != "t2c":
            config["hf_vocabulary"] = {"offset": OFFSET, "rows": arch.vocab_size - OFFSET,
                                       "markers_added": [m for m in MARKERS if m not in tokenizer.marker_hf_ids]}
        info = make_run_info(model_config=model_config, vocab_size=arch.vocab_size, separation=arch.separation,
                             separated=arch.separated_ids, tokenizer_model=tokenizer_model,
                             fmt=arch.sample_format, objective=arch.objective, stage="imported", config=config)
        return save_checkpoint(output, iteration, [model], None, None, progress={}, run_info=info,
                               tokenizer_model=tokenizer_model)


def _copy_param(params: dict, name: str, value: torch.Tensor, copied: set) -> None:
    if name not in params:
        raise ConversionError(f"no megatron parameter {name} (unknown architecture)")
    param = params[name]
    if tuple(param.shape) != tuple(value.shape):
        raise ConversionError(f"{name}: shape {tuple(value.shape)} from Hugging Face, megatron expects "
                              f"{tuple(param.shape)}")
    param.copy_(value)
    copied.add(name)
