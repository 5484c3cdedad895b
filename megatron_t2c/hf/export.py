"""Export: a megatron_t2c distributed checkpoint (any TP/PP) to a Hugging Face directory.

The checkpoint's tensors are read straight from its ``torch.distributed.checkpoint`` files, one *global*
tensor at a time, in one process without any process group: megatron's format stores every tensor
whole-shaped (tensor-parallel shards are pieces of it, pipeline stages' layers are slices ``[layer, ...]``
of one ``decoder.layers.*`` tensor), so merging TP shards and renumbering PP stages is the format's own
reading.  Each tensor is mapped (:mod:`.weight_map`) and streamed into ``model.safetensors`` at once (the
header is computed first on meta tensors), so the peak memory is about one megatron tensor (all layers of
one weight), not the model.

Target class (:attr:`HFArchitecture.stock_target`): a model without separation, with learned positions and
not trained with ``prefix-code`` exports as the stock class that computes it exactly, with no remote code:
``GPT2LMHeadModel`` (q/k/v biases, 1/sqrt(d) attention scale, any activation GPT-2 knows; weights in
GPT-2's ``Conv1D`` layout) or ``GPTNeoForCausalLM`` (no q/k/v bias, unscaled scores, global and local
layers).  Anything else (separation, RoPE, a prefix-LM) exports as ``T2CForCausalLM``
(:mod:`megatron_t2c.hf.modeling_t2c`), shipped in the directory with megatron_t2c's ``modality.py``,
``objectives.py`` and ``special_tokens.py`` verbatim.  The tokenizer is the checkpoint's: a SentencePiece model
gives ``tokenizer.model`` plus the equivalent ``tokenizer.json`` (:mod:`.fast_tokenizer`) with the remote code
:mod:`megatron_t2c.hf.tokenization_t2c` (decoding to Python source with the shipped ``normalise.py``); a
Hugging Face tokenizer goes back to its own id space with the markers added as special tokens after the
model's rows for a stock class (:mod:`.vocab_map`), or stays in megatron_t2c's id space for
``T2CForCausalLM``.  Above ``max_shard_size`` the weights are sharded with an index; a model card
``README.md`` (:mod:`.model_card`) comes last.  Everything is written into ``OUTPUT.partial`` and renamed onto
``OUTPUT`` when complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import warnings
from typing import Callable, Iterable, Iterator, Optional, Union

import torch

from megatron_t2c.hf import SHIPPED_MODULES, TOKENIZER_MODULES
from megatron_t2c.hf.architecture import STOCK_CLASSES, ConversionError, HFArchitecture, check_tokenizer
from megatron_t2c.hf.safetensors_files import DEFAULT_MAX_SHARD_SIZE, write_model_weights
from megatron_t2c.hf.vocab_map import MARKERS, export_index, is_hf_tokenizer
from megatron_t2c.hf.weight_map import (CODE_ROWS, FINAL, MODEL_PREFIXES, POSITIONS, STORED_ALIASES, TABLE, LayerTensor,
                                        deinterleave_qkv, layer_rows)
from megatron_t2c.mrpt import special_tokens as st
from megatron_t2c.training.checkpointing import CheckpointError, read_run_info, resolve
from megatron_t2c.utils.atomic import write_json

_HF_DIR = os.path.dirname(os.path.abspath(__file__))
_REMOTE_MODEL_FILES = ("configuration_t2c.py", "modeling_t2c.py")
_REMOTE_TOKENIZER_FILES = ("tokenization_t2c.py",)


class MegatronTensors:
    """The model tensors of a megatron_t2c dist checkpoint, read whole (merged over TP/PP) on demand.

    No process group and no model are needed: ``torch.distributed.checkpoint`` reads any tensor's shards
    into one full-size tensor (``load``), or only describes it (``meta``: a meta tensor of its shape/dtype).
    """

    def __init__(self, path: str):
        from torch.distributed.checkpoint import FileSystemReader
        from torch.distributed.checkpoint.metadata import TensorStorageMetadata

        self.path = resolve(path)
        self.info = read_run_info(self.path)
        self._reader_class = FileSystemReader
        try:
            metadata = FileSystemReader(self.path).read_metadata()
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"{self.path}: cannot read the checkpoint's tensor index (.metadata): "
                                  f"{type(exc).__name__}: {exc}") from exc
        self.shapes = {key: (tuple(m.size), m.properties.dtype) for key, m in metadata.state_dict_metadata.items()
                       if isinstance(m, TensorStorageMetadata) and key.startswith(MODEL_PREFIXES)}

    def __contains__(self, key: str) -> bool:
        return key in self.shapes

    def meta(self, key: str) -> torch.Tensor:
        shape, dtype = self.shapes[key]
        return torch.empty(shape, dtype=dtype, device="meta")

    def load(self, key: str) -> torch.Tensor:
        from megatron_t2c.utils.dist_checkpoint import load_in_this_process

        shape, dtype = self.shapes[key]
        tensor = torch.empty(shape, dtype=dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_in_this_process({key: tensor}, self._reader_class(self.path))
        return tensor


def _layer_key(reader: MegatronTensors, row: LayerTensor) -> str:
    key = f"decoder.layers.{row.stored}"
    if key not in reader and row.stored in STORED_ALIASES:
        alias = f"decoder.layers.{STORED_ALIASES[row.stored]}"
        if alias in reader:
            return alias
    return key


def _check_checkpoint(reader: MegatronTensors, arch: HFArchitecture) -> None:
    """Every tensor the mapping needs is there with the expected shape, and nothing else is."""
    h, L, f = arch.hidden_size, arch.num_layers, arch.ffn_hidden_size
    qkv = (arch.num_attention_heads + 2 * arch.num_query_groups) * arch.head_dim
    expected = {TABLE: None, "decoder.final_layernorm.weight": (h,), "decoder.final_layernorm.bias": (h,)}
    if arch.separated_ids:
        expected[CODE_ROWS] = (len(arch.separated_ids), h)
    if arch.position_embedding_type == "learned_absolute":
        expected[POSITIONS] = (arch.seq_length, h)
    layer_shapes = {"input_layernorm.weight": (h,), "input_layernorm.bias": (h,),
                    "self_attention.linear_qkv.weight": (qkv, h), "self_attention.linear_qkv.bias": (qkv,),
                    "self_attention.linear_proj.weight": (h, h), "self_attention.linear_proj.bias": (h,),
                    "pre_mlp_layernorm.weight": (h,), "pre_mlp_layernorm.bias": (h,),
                    "mlp.linear_fc1.weight": (f, h), "mlp.linear_fc1.bias": (f,),
                    "mlp.linear_fc2.weight": (h, f), "mlp.linear_fc2.bias": (h,)}
    for row in layer_rows(arch.qkv_bias):
        expected[_layer_key(reader, row)] = (L, *layer_shapes[row.module])
    missing = [k for k in expected if k not in reader]
    unknown = sorted(set(reader.shapes) - set(expected))
    problems = []
    if missing:
        problems.append("missing tensors " + ", ".join(missing))
    if unknown:
        problems.append("tensors this converter does not know " + ", ".join(unknown))
    for key, shape in expected.items():
        if key in reader and shape is not None and reader.shapes[key][0] != shape:
            problems.append(f"{key} has shape {list(reader.shapes[key][0])}, the run info implies {list(shape)}")
    if TABLE in reader:
        rows, width = reader.shapes[TABLE][0]
        if rows < arch.vocab_size or width != h:
            problems.append(f"{TABLE} has shape {[rows, width]}: fewer rows than the vocabulary "
                            f"({arch.vocab_size}) or not hidden-wide ({h})")
    if problems:
        raise ConversionError(f"unknown architecture in {reader.path}: " + "; ".join(problems))


# ---------------------------------------------------------------------------------------------------
# The export plan: per megatron tensor, the Hugging Face tensors it becomes
# ---------------------------------------------------------------------------------------------------

Emit = Callable[[Callable[[str], torch.Tensor]], Iterator[tuple[str, torch.Tensor]]]


def _export_plan(reader: MegatronTensors, arch: HFArchitecture, target: str, dtype: Optional[torch.dtype],
                 table_index: Optional[list[int]] = None) -> list[Emit]:
    """Generators, one per megatron tensor: given a loader (real or meta), yield ``(hf_name, tensor)``.
    ``table_index``: which of our rows each exported row is (a stock class with a Hugging Face tokenizer);
    default the base rows in order."""

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype) if dtype is not None and t.is_floating_point() else t

    def table(load):
        full = load(TABLE)
        rows = full[:arch.vocab_size] if table_index is None else full.index_select(
            0, torch.tensor(table_index, device=full.device))
        yield "transformer.wte.weight", cast(rows)

    def simple(key, name):
        def emit(load):
            yield name, cast(load(key))
        return emit

    def layers(row: LayerTensor):
        key, name = _layer_key(reader, row), row.hf_name(target)

        def emit(load):
            stacked = load(key)
            for i in range(arch.num_layers):
                t = stacked[i]
                if row.qkv:
                    t = deinterleave_qkv(t, arch.num_attention_heads, arch.num_query_groups, arch.head_dim)
                if target == "gpt_neo" and row.qkv:
                    for part, piece in zip("qkv", t.chunk(3)):
                        yield f"transformer.h.{i}.{name.format(part)}", cast(piece.contiguous())
                    continue
                if target == "gpt2" and t.dim() == 2:
                    t = t.t()  # GPT-2's Conv1D stores [in, out]
                yield f"transformer.h.{i}.{name}", cast(t)
        return emit

    plan: list[Emit] = [table]
    if arch.separated_ids:
        plan.append(simple(CODE_ROWS, "transformer.wte_code.weight"))
    if arch.position_embedding_type == "learned_absolute":
        plan.append(simple(POSITIONS, "transformer.wpe.weight"))
    plan += [layers(row) for row in layer_rows(arch.qkv_bias)]
    plan += [simple(key, name) for key, name in FINAL]
    return plan


@dataclasses.dataclass
class ExportSummary:
    """What :func:`export_to_hf` wrote."""

    checkpoint: str
    output: str
    model_class: str
    remote_code: bool
    tensors: int
    bytes: int
    seconds: float
    weight_files: list = dataclasses.field(default_factory=list)
    parameters: int = 0


def _prepare_output(output: str, overwrite: bool) -> str:
    """Check ``output`` and return the staging directory the export is written into (``output.partial``,
    renamed onto ``output`` by :func:`_publish` once complete: a crash never leaves a complete-looking export)."""
    if os.path.exists(output):
        if not os.path.isdir(output):
            raise ConversionError(f"{output} exists and is not a directory")
        if os.listdir(output) and not overwrite:
            raise ConversionError(f"{output} is not empty (pass --overwrite to replace its contents)")
    stage = os.path.normpath(output) + ".partial"
    shutil.rmtree(stage, ignore_errors=True)  # what an interrupted export left
    os.makedirs(stage)
    return stage


def _publish(stage: str, output: str) -> None:
    """Put the finished ``stage`` in the place of ``output`` (whose old contents go)."""
    output = os.path.normpath(output)
    if os.path.isdir(output):
        old = output + ".old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(output, old)
        os.replace(stage, output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(stage, output)


def _copy_sources(output: str, names: Iterable[str]) -> None:
    for name in names:
        shutil.copyfile(os.path.join(_HF_DIR, name), os.path.join(output, name))


def _copy_shipped_modules(output: str) -> None:
    """megatron_t2c's own modality/objectives/special_tokens sources, verbatim."""
    for module in SHIPPED_MODULES:
        shutil.copyfile(module.__file__, os.path.join(output, os.path.basename(module.__file__)))


#: Never generated (as megatron_t2c's engine: control pieces, opening markers, [MASK]).
SUPPRESSED_IDS = (st.PAD_ID, st.UNK_ID, st.BOS_ID, st.EOS_ID, st.DESCR_ID, st.PYTHON_ID, st.SOS_ID, st.MASK_ID)


def generation_config(arch: HFArchitecture, markers: Optional[dict] = None):
    """Greedy, stop at ``[eoc]``, never the markers that open a segment (the engine's defaults).  ``markers``:
    the markers' ids in the exported tokenizer's own id space (a stock class with a Hugging Face tokenizer)."""
    from transformers import GenerationConfig

    if markers is None:
        eoc, pad, suppressed = st.EOC_ID, st.PAD_ID, list(SUPPRESSED_IDS)
    else:
        eoc = pad = markers[st.EOC]
        suppressed = [markers[m] for m in (st.DESCR, st.PYTHON, st.SOS, st.MASK)]
    return GenerationConfig(eos_token_id=eoc, pad_token_id=pad, do_sample=False, max_new_tokens=256,
                            suppress_tokens=suppressed)


def write_tokenizer(output: str, tokenizer_model: str, seq_length: int, decode_python: bool = True) -> None:
    """The tokenizer files: ``tokenizer.model`` and ``tokenizer.json`` (the same tokenizer for SentencePiece and
    for Rust ``tokenizers``), ``tokenizer_config.json``, and the remote code ``tokenization_t2c.py`` with the
    megatron_t2c modules it imports (``special_tokens.py``, ``normalise.py``).

    ``AutoTokenizer`` with ``trust_remote_code=True`` gives :class:`T2CTokenizerFast` (decodes to Python);
    without it, a stock fast tokenizer over ``tokenizer.json`` (what serving stacks load: raw text).
    """
    from megatron_t2c.hf.fast_tokenizer import build_fast_tokenizer
    from megatron_t2c.hf.tokenization_t2c import T2CTokenizer

    tokenizer = T2CTokenizer(tokenizer_model, model_max_length=seq_length, decode_python=decode_python)
    tokenizer.save_pretrained(output)
    build_fast_tokenizer(tokenizer_model).save(os.path.join(output, "tokenizer.json.partial"))
    os.replace(os.path.join(output, "tokenizer.json.partial"), os.path.join(output, "tokenizer.json"))
    config_path = os.path.join(output, "tokenizer_config.json")
    with open(config_path, encoding="utf-8") as fh:
        config = json.load(fh)
    config.update(tokenizer_class="PreTrainedTokenizerFast", decode_python=decode_python,
                  auto_map={"AutoTokenizer": ["tokenization_t2c.T2CTokenizer", "tokenization_t2c.T2CTokenizerFast"]})
    write_json(config_path, config)
    _copy_sources(output, _REMOTE_TOKENIZER_FILES)
    for module in TOKENIZER_MODULES:
        shutil.copyfile(module.__file__, os.path.join(output, os.path.basename(module.__file__)))


def write_hf_tokenizer(output: str, tokenizer, seq_length: int, markers: Optional[dict] = None) -> None:
    """A Hugging Face tokenizer's files: with ``markers`` (a stock class) the tokenizer's own id space with the
    markers added as special tokens at those ids; without, megatron_t2c's canonical id space (``T2CForCausalLM``,
    whose table is in that space).  Either is a plain ``PreTrainedTokenizerFast`` (no remote code); decoding
    gives the normalised text (``[new_line] [indent] ...``)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    original = dict(tokenizer.hf_tokenizer_config or {})
    specials = {k: original[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")
                if isinstance(original.get(k), str)}
    if markers is None:  # the canonical files (and the map's record), then transformers' own files over them
        tokenizer.save(output)
        backend = Tokenizer.from_file(os.path.join(output, "tokenizer.json"))
        specials = {"eos_token": st.EOC, "pad_token": st.EOC}  # left padding for batches (masked anyway)
    else:
        backend = Tokenizer.from_str(tokenizer.hf_tokenizer_json(markers))
        specials.setdefault("eos_token", st.EOC)
        specials.setdefault("pad_token", st.EOC)
    fast = PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=seq_length,
                                   additional_special_tokens=list(MARKERS), **specials)
    fast.save_pretrained(output)


def export_to_hf(checkpoint: str, output: str, *, model_class: str = "auto", dtype: Optional[str] = None,
                 tokenizer_model: Optional[str] = None, overwrite: bool = False,
                 max_shard_size: Union[int, str] = DEFAULT_MAX_SHARD_SIZE, eval_dir: Optional[str] = None,
                 decode_python: bool = True) -> ExportSummary:
    """Write a Hugging Face directory for the megatron_t2c checkpoint at ``checkpoint`` (any TP/PP).

    ``model_class``: ``auto`` (the stock class that computes this model exactly, else ``t2c``), ``stock``,
    ``gpt2``, ``gpt_neo`` or ``t2c``.  ``dtype``: ``float32``/``bfloat16``/``float16``, or None to keep the
    checkpoint's.
    ``tokenizer_model``: default the checkpoint's own tokenizer.  ``max_shard_size``: above it the
    weights are sharded with an index (``save_pretrained``'s semantics).  ``eval_dir``: the run's evaluation
    results for the model card (default: discovered from the pipeline's run-directory layout, see
    :mod:`.model_card`).  ``decode_python=False``: the tokenizer decodes to the normalised text by default.
    """
    start = time.perf_counter()
    reader = MegatronTensors(checkpoint)
    arch = HFArchitecture.from_run_info(reader.info)
    if model_class not in ("auto", "stock", *STOCK_CLASSES, "t2c"):
        raise ConversionError(f"unknown model class {model_class!r} (auto, stock, gpt2, gpt_neo, t2c)")
    stock = arch.stock_target
    target = (stock or "t2c") if model_class == "auto" else stock if model_class == "stock" else model_class
    if target is None or (target in STOCK_CLASSES and target != stock):
        raise ConversionError(f"this model is not a stock {STOCK_CLASSES.get(model_class, 'GPT-2 or GPT-Neo')} "
                              "(separation, RoPE, a prefix-LM, or other attention): export it with --model-class "
                              f"{stock or 't2c'} (or auto)")
    _check_checkpoint(reader, arch)
    if tokenizer_model is None:
        from megatron_t2c.training.checkpointing import tokenizer_path

        try:
            tokenizer_model = tokenizer_path(reader.path)
        except CheckpointError as exc:
            raise ConversionError(f"missing file: the checkpoint's tokenizer ({exc}): pass --tokenizer-model") from exc
    tokenizer = check_tokenizer(tokenizer_model, arch.vocab_size)
    hf_tokenizer = is_hf_tokenizer(tokenizer)
    table_index = markers = None
    if hf_tokenizer and target != "t2c":
        table_index, markers = export_index(tokenizer, arch.vocab_size)
    out_dtype = getattr(torch, dtype) if dtype else None
    stage = _prepare_output(output, overwrite)

    plan = _export_plan(reader, arch, target, out_dtype, table_index)
    meta = [item for emit in plan for item in emit(reader.meta)]
    model_dtype = out_dtype or meta[0][1].dtype

    def stream():
        for emit in plan:
            yield from emit(reader.load)

    size, weight_files = write_model_weights(stage, meta, stream(), max_shard_size, {"format": "pt"})
    if markers is not None:
        config = arch.hf_config(target, model_dtype, reader.info, vocab_size=len(table_index),
                                eos_token_id=markers[st.EOC], pad_token_id=markers[st.EOC])
    else:
        config = arch.hf_config(target, model_dtype, reader.info)
    config.save_pretrained(stage)

    generation_config(arch, markers).save_pretrained(stage)
    if hf_tokenizer:
        write_hf_tokenizer(stage, tokenizer, arch.seq_length, markers)
    else:
        write_tokenizer(stage, tokenizer_model, arch.seq_length, decode_python=decode_python)
    if target == "t2c":
        _copy_sources(stage, _REMOTE_MODEL_FILES)
        _copy_shipped_modules(stage)
    summary = ExportSummary(checkpoint=reader.path, output=output,
                            model_class=STOCK_CLASSES.get(target, "T2CForCausalLM"), remote_code=target == "t2c",
                            tensors=len(meta), bytes=size, seconds=0.0, weight_files=weight_files,
                            parameters=sum(t.numel() for _, t in meta))
    from megatron_t2c.hf.model_card import write_model_card

    write_model_card(stage, reader.path, reader.info, arch, summary, eval_dir=eval_dir, name=output)
    _publish(stage, output)
    summary.seconds = round(time.perf_counter() - start, 3)
    return summary
