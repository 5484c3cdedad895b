"""Checkpoint conversion: megatron_t2c distributed checkpoints <-> Hugging Face directories, and ``--verify``.

**Export** (:func:`export_to_hf`).  The checkpoint's tensors are read straight from its
``torch.distributed.checkpoint`` files, one *global* tensor at a time, in one process without any process
group: megatron's format stores every tensor whole-shaped (tensor-parallel shards are pieces of it, pipeline
stages' layers are slices ``[layer, ...]`` of one ``decoder.layers.*`` tensor), so merging TP shards and
renumbering PP stages is the format's own reading.  Each tensor is mapped and streamed into
``model.safetensors`` at once (the header is computed first on meta tensors), so the peak memory is about
one megatron tensor (all layers of one weight), not the model.  Mapping:

* the word-embedding table: base rows ``[:vocab_size]`` (vocabulary padding dropped), the code rows of the
  separated ids (``embedding.word_embeddings.code_rows``, already canonical: id order, TP-independent);
  input and output layers are tied, as in training;
* ``linear_qkv``: megatron interleaves per query group ``[q_g (heads/groups x d), k_g, v_g]``; exported as
  ``[q; k; v]`` (all heads' queries, then keys, then values);
* layer norms (stored by megatron as ``linear_qkv.layer_norm_*`` / ``linear_fc1.layer_norm_*``), the
  attention projection, ``linear_fc1``/``linear_fc2``, the final LayerNorm, learned positions.

Target class: a checkpoint without separation, with learned positions and not trained with ``prefix-code``
is exactly GPT-2 (pre-LN, exact GELU -- ``activation_function="gelu"`` --, biases, 1/sqrt(d) attention
scale, tied head) and exports as a stock ``GPT2LMHeadModel`` (weights in GPT-2's ``Conv1D`` layout, no remote
code).  Anything else (separation, RoPE, a prefix-LM) exports as ``T2CForCausalLM``
(:mod:`megatron_t2c.hf.modeling_t2c`), shipped in the directory with megatron_t2c's ``modality.py``,
``objectives.py`` and ``special_tokens.py`` verbatim.  The tokenizer is always ``T2CTokenizer``
(:mod:`megatron_t2c.hf.tokenization_t2c`, remote code) over the checkpoint's ``tokenizer.model``.

**Import** (:func:`import_from_hf`): a ``GPT2LMHeadModel`` (``save_pretrained``) or an exported
``T2CForCausalLM`` directory becomes a megatron_t2c checkpoint: the inverse mapping into a TP=1/PP=1
:class:`~megatron_t2c.models.gpt.T2CGPTModel`, saved with :func:`~megatron_t2c.training.checkpointing.save_checkpoint`.
Checkpoints are TP/PP-agnostic, so any requested TP/PP is validated against the architecture, recorded in the
run info (``config.target_parallel``) and the checkpoint loads at that size.

**Verify** (:func:`verify`): both models on the same rows (PanGu/PyCodeGPT documents of random ordinary
tokens, so that every modality and, for prefix-LMs, the prefix occur): max absolute logit difference and
top-1 agreement; fails above the tolerance (float32: 1e-4).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import struct
import time
import warnings
from typing import Callable, Iterable, Iterator, Optional

import torch

from megatron_t2c.mrpt import special_tokens as st
from megatron_t2c.training.checkpointing import CheckpointError, read_run_info, resolve
from megatron_t2c.hf import SHIPPED_MODULES
from megatron_t2c.hf.configuration_t2c import id_ranges

__all__ = ["ConversionError", "ExportSummary", "MegatronTensors", "HFArchitecture", "export_to_hf",
           "import_from_hf", "verify", "deinterleave_qkv", "interleave_qkv", "write_safetensors"]

#: Tolerance of ``--verify`` on the max absolute logit difference, per dtype.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 1e-2}
SAFETENSORS_FILE = "model.safetensors"
_HF_DIR = os.path.dirname(os.path.abspath(__file__))
_REMOTE_MODEL_FILES = ("configuration_t2c.py", "modeling_t2c.py")
_REMOTE_TOKENIZER_FILES = ("tokenization_t2c.py",)
_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
              torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}
_ST_NAMES = {name: dtype for dtype, name in _ST_DTYPES.items()}


class ConversionError(ValueError):
    """A checkpoint or directory that cannot be converted (unknown architecture, missing files, ...)."""


# ---------------------------------------------------------------------------------------------------
# Names: megatron (checkpoint keys, module names) <-> Hugging Face (GPT-2, T2C)
# ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _LayerTensor:
    module: str  # megatron module name (TP=1 model), below decoder.layers.{i}.
    stored: str  # dist-checkpoint key, below decoder.layers.
    gpt2: str  # below transformer.h.{i}.
    t2c: str
    qkv: bool = False


_LAYER = tuple(_LayerTensor(*row) for row in (
    ("input_layernorm.weight", "self_attention.linear_qkv.layer_norm_weight", "ln_1.weight", "ln_1.weight"),
    ("input_layernorm.bias", "self_attention.linear_qkv.layer_norm_bias", "ln_1.bias", "ln_1.bias"),
    ("self_attention.linear_qkv.weight", "self_attention.linear_qkv.weight", "attn.c_attn.weight",
     "attn.qkv_proj.weight", True),
    ("self_attention.linear_qkv.bias", "self_attention.linear_qkv.bias", "attn.c_attn.bias", "attn.qkv_proj.bias",
     True),
    ("self_attention.linear_proj.weight", "self_attention.linear_proj.weight", "attn.c_proj.weight",
     "attn.out_proj.weight"),
    ("self_attention.linear_proj.bias", "self_attention.linear_proj.bias", "attn.c_proj.bias", "attn.out_proj.bias"),
    ("pre_mlp_layernorm.weight", "mlp.linear_fc1.layer_norm_weight", "ln_2.weight", "ln_2.weight"),
    ("pre_mlp_layernorm.bias", "mlp.linear_fc1.layer_norm_bias", "ln_2.bias", "ln_2.bias"),
    ("mlp.linear_fc1.weight", "mlp.linear_fc1.weight", "mlp.c_fc.weight", "mlp.fc_in.weight"),
    ("mlp.linear_fc1.bias", "mlp.linear_fc1.bias", "mlp.c_fc.bias", "mlp.fc_in.bias"),
    ("mlp.linear_fc2.weight", "mlp.linear_fc2.weight", "mlp.c_proj.weight", "mlp.fc_out.weight"),
    ("mlp.linear_fc2.bias", "mlp.linear_fc2.bias", "mlp.c_proj.bias", "mlp.fc_out.bias"),
))
#: Alternative stored names of the layer norms (a spec whose layer norms are modules of their own).
_STORED_ALIASES = {"self_attention.linear_qkv.layer_norm_weight": "input_layernorm.weight",
                   "self_attention.linear_qkv.layer_norm_bias": "input_layernorm.bias",
                   "mlp.linear_fc1.layer_norm_weight": "pre_mlp_layernorm.weight",
                   "mlp.linear_fc1.layer_norm_bias": "pre_mlp_layernorm.bias"}
TABLE, CODE_ROWS = "embedding.word_embeddings.weight", "embedding.word_embeddings.code_rows"
POSITIONS = "embedding.position_embeddings.weight"
_FINAL = (("decoder.final_layernorm.weight", "transformer.ln_f.weight"),
          ("decoder.final_layernorm.bias", "transformer.ln_f.bias"))
_MODEL_PREFIXES = ("embedding.", "decoder.", "output_layer.")


def deinterleave_qkv(t: torch.Tensor, heads: int, groups: int, head_dim: int) -> torch.Tensor:
    """megatron's fused QKV rows ``[g0: q.. k v | g1: q.. k v | ...]`` -> ``[q (all heads); k; v]``."""
    rest = t.shape[1:]
    per_group = heads // groups * head_dim
    g = t.reshape(groups, per_group + 2 * head_dim, *rest)
    return torch.cat([g[:, :per_group].reshape(heads * head_dim, *rest),
                      g[:, per_group:per_group + head_dim].reshape(groups * head_dim, *rest),
                      g[:, per_group + head_dim:].reshape(groups * head_dim, *rest)])


def interleave_qkv(t: torch.Tensor, heads: int, groups: int, head_dim: int) -> torch.Tensor:
    """The inverse of :func:`deinterleave_qkv`."""
    rest = t.shape[1:]
    q, k, v = t.split([heads * head_dim, groups * head_dim, groups * head_dim])
    return torch.cat([q.reshape(groups, heads // groups * head_dim, *rest), k.reshape(groups, head_dim, *rest),
                      v.reshape(groups, head_dim, *rest)], dim=1).reshape(-1, *rest)


# ---------------------------------------------------------------------------------------------------
# Architecture
# ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class HFArchitecture:
    """What both sides must agree on; from a checkpoint's run info or a Hugging Face config."""

    vocab_size: int
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    ffn_hidden_size: int
    seq_length: int
    position_embedding_type: str = "learned_absolute"
    rotary_base: float = 10000.0
    layernorm_epsilon: float = 1e-5
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    init_method_std: float = 0.02
    separated_ids: tuple = ()
    separation: str = "none"
    sample_format: str = "pangu"
    objective: str = "text-code"
    make_vocab_size_divisible_by: int = 128

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def prefix_lm(self) -> bool:
        return self.objective == "prefix-code"

    @property
    def stock_gpt2(self) -> bool:
        """Whether stock ``GPT2LMHeadModel`` computes exactly this model."""
        return (not self.separated_ids and self.position_embedding_type == "learned_absolute"
                and not self.prefix_lm and self.num_query_groups == self.num_attention_heads)

    @classmethod
    def from_run_info(cls, info: dict) -> "HFArchitecture":
        arch, config = info["architecture"], info["model_config"]
        return cls(vocab_size=info["vocab_size"], num_layers=arch["num_layers"], hidden_size=arch["hidden_size"],
                   num_attention_heads=arch["num_attention_heads"], num_query_groups=arch["num_attention_heads"],
                   ffn_hidden_size=arch["ffn_hidden_size"], seq_length=arch["seq_length"],
                   position_embedding_type=arch["position_embedding_type"],
                   rotary_base=config.get("rotary_base", 10000), layernorm_epsilon=config["layernorm_epsilon"],
                   hidden_dropout=config["hidden_dropout"], attention_dropout=config["attention_dropout"],
                   init_method_std=config["init_method_std"], separated_ids=tuple(info["separated_ids"]),
                   separation=info["separation"], sample_format=info["format"], objective=info["objective"],
                   make_vocab_size_divisible_by=arch["make_vocab_size_divisible_by"])

    # -- Hugging Face configs ----------------------------------------------------------------------
    def _export_note(self, info: Optional[dict]) -> dict:
        note = {"format": self.sample_format, "objective": self.objective, "separation": self.separation,
                "make_vocab_size_divisible_by": self.make_vocab_size_divisible_by}
        if info:
            note.update(stage=info.get("stage"), iteration=info.get("iteration"),
                        tokenizer_sha256=(info.get("tokenizer") or {}).get("sha256"))
        return note

    def hf_config(self, target: str, dtype: torch.dtype, info: Optional[dict] = None):
        """The ``GPT2Config`` or ``T2CConfig`` of this architecture."""
        common = dict(vocab_size=self.vocab_size, layer_norm_epsilon=self.layernorm_epsilon,
                      initializer_range=self.init_method_std, bos_token_id=None, eos_token_id=st.EOC_ID,
                      pad_token_id=st.PAD_ID, tie_word_embeddings=True, dtype=dtype,
                      t2c_export=self._export_note(info))
        if target == "gpt2":
            from transformers import GPT2Config

            return GPT2Config(n_positions=self.seq_length, n_embd=self.hidden_size, n_layer=self.num_layers,
                              n_head=self.num_attention_heads, n_inner=self.ffn_hidden_size,
                              activation_function="gelu", resid_pdrop=self.hidden_dropout,
                              embd_pdrop=self.hidden_dropout, attn_pdrop=self.attention_dropout,
                              architectures=["GPT2LMHeadModel"], **common)
        from megatron_t2c.hf.configuration_t2c import T2CConfig

        return T2CConfig(hidden_size=self.hidden_size, num_hidden_layers=self.num_layers,
                         num_attention_heads=self.num_attention_heads, num_key_value_heads=self.num_query_groups,
                         intermediate_size=self.ffn_hidden_size, max_position_embeddings=self.seq_length,
                         position_embedding_type=self.position_embedding_type, rope_theta=float(self.rotary_base),
                         hidden_dropout=self.hidden_dropout, attention_dropout=self.attention_dropout,
                         sample_format=self.sample_format, separation=self.separation,
                         separated_id_ranges=id_ranges(self.separated_ids), prefix_lm=self.prefix_lm,
                         objective=self.objective, architectures=["T2CForCausalLM"],
                         auto_map={"AutoConfig": "configuration_t2c.T2CConfig",
                                   "AutoModelForCausalLM": "modeling_t2c.T2CForCausalLM"}, **common)

    @classmethod
    def from_hf_config(cls, config: dict, *, sample_format: Optional[str] = None,
                       objective: Optional[str] = None) -> tuple["HFArchitecture", str]:
        """The architecture of a Hugging Face ``config.json`` (dict) and its target name (gpt2 / t2c)."""
        note = config.get("t2c_export") or {}
        model_type = config.get("model_type")
        fmt = sample_format or note.get("format") or config.get("sample_format") or "pangu"
        common = dict(vocab_size=config["vocab_size"], layernorm_epsilon=config.get("layer_norm_epsilon", 1e-5),
                      init_method_std=config.get("initializer_range", 0.02), sample_format=fmt,
                      make_vocab_size_divisible_by=note.get("make_vocab_size_divisible_by", 128))
        if model_type == "gpt2":
            problems = []
            if config.get("activation_function", "gelu_new") != "gelu":
                problems.append(f"activation_function {config.get('activation_function', 'gelu_new')!r} "
                                "(megatron_t2c models use the exact GELU, 'gelu')")
            for key, wanted in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                                ("add_cross_attention", False), ("tie_word_embeddings", True)):
                if config.get(key, wanted) != wanted:
                    problems.append(f"{key}={config.get(key)!r} (needs {wanted!r})")
            if problems:
                raise ConversionError("unsupported GPT-2 architecture: " + "; ".join(problems))
            hidden = config["n_embd"]
            return cls(num_layers=config["n_layer"], hidden_size=hidden, num_attention_heads=config["n_head"],
                       num_query_groups=config["n_head"], ffn_hidden_size=config.get("n_inner") or 4 * hidden,
                       seq_length=config["n_positions"], hidden_dropout=config.get("resid_pdrop", 0.1),
                       attention_dropout=config.get("attn_pdrop", 0.1), objective=objective or note.get(
                           "objective", "text-code"), **common), "gpt2"
        if model_type == "t2c_gpt":
            ids = [i for start, end in config.get("separated_id_ranges") or [] for i in range(start, end)]
            return cls(num_layers=config["num_hidden_layers"], hidden_size=config["hidden_size"],
                       num_attention_heads=config["num_attention_heads"],
                       num_query_groups=config.get("num_key_value_heads") or config["num_attention_heads"],
                       ffn_hidden_size=config.get("intermediate_size") or 4 * config["hidden_size"],
                       seq_length=config["max_position_embeddings"],
                       position_embedding_type=config.get("position_embedding_type", "learned_absolute"),
                       rotary_base=config.get("rope_theta", 10000.0), hidden_dropout=config.get("hidden_dropout", 0.0),
                       attention_dropout=config.get("attention_dropout", 0.0), separated_ids=tuple(ids),
                       separation=config.get("separation", "none") if ids else "none",
                       objective=objective or config.get("objective", "text-code"), **common), "t2c"
        raise ConversionError(f"unknown architecture: model_type {model_type!r} (supported: 'gpt2' -- "
                              "GPT2LMHeadModel --, and 't2c_gpt' -- directories exported by megatron_t2c)")


# ---------------------------------------------------------------------------------------------------
# Reading a megatron checkpoint, one global tensor at a time
# ---------------------------------------------------------------------------------------------------

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
                       if isinstance(m, TensorStorageMetadata) and key.startswith(_MODEL_PREFIXES)}

    def __contains__(self, key: str) -> bool:
        return key in self.shapes

    def meta(self, key: str) -> torch.Tensor:
        shape, dtype = self.shapes[key]
        return torch.empty(shape, dtype=dtype, device="meta")

    def load(self, key: str) -> torch.Tensor:
        from megatron_t2c.runtime.distributed import load_in_this_process

        shape, dtype = self.shapes[key]
        tensor = torch.empty(shape, dtype=dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_in_this_process({key: tensor}, self._reader_class(self.path))
        return tensor


def _layer_key(reader: MegatronTensors, row: _LayerTensor) -> str:
    key = f"decoder.layers.{row.stored}"
    if key not in reader and row.stored in _STORED_ALIASES:
        alias = f"decoder.layers.{_STORED_ALIASES[row.stored]}"
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
    for row in _LAYER:
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


def _export_plan(reader: MegatronTensors, arch: HFArchitecture, target: str, dtype: Optional[torch.dtype]
                 ) -> list[Emit]:
    """Generators, one per megatron tensor: given a loader (real or meta), yield ``(hf_name, tensor)``."""
    gpt2 = target == "gpt2"

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype) if dtype is not None and t.is_floating_point() else t

    def table(load):
        yield "transformer.wte.weight", cast(load(TABLE)[:arch.vocab_size])

    def simple(key, name):
        def emit(load):
            yield name, cast(load(key))
        return emit

    def layers(row: _LayerTensor):
        key = _layer_key(reader, row)

        def emit(load):
            stacked = load(key)
            for i in range(arch.num_layers):
                t = stacked[i]
                if row.qkv:
                    t = deinterleave_qkv(t, arch.num_attention_heads, arch.num_query_groups, arch.head_dim)
                if gpt2 and t.dim() == 2:
                    t = t.t()  # GPT-2's Conv1D stores [in, out]
                yield f"transformer.h.{i}.{row.gpt2 if gpt2 else row.t2c}", cast(t)
        return emit

    plan: list[Emit] = [table]
    if arch.separated_ids:
        plan.append(simple(CODE_ROWS, "transformer.wte_code.weight"))
    if arch.position_embedding_type == "learned_absolute":
        plan.append(simple(POSITIONS, "transformer.wpe.weight"))
    plan += [layers(row) for row in _LAYER]
    plan += [simple(key, name) for key, name in _FINAL]
    return plan


def write_safetensors(path: str, header_tensors: Iterable[tuple[str, torch.Tensor]],
                      tensors: Iterable[tuple[str, torch.Tensor]], metadata: Optional[dict] = None) -> int:
    """Write a ``.safetensors`` file streaming: the header from ``header_tensors`` (meta tensors are fine),
    then each tensor of ``tensors`` (same names, shapes and order) as it comes; returns the data size.

    Only one tensor is held at a time (``safetensors.torch.save_file`` needs them all, plus a bytes copy).
    """
    header, specs, offset = {}, [], 0
    for name, t in header_tensors:
        if t.dtype not in _ST_DTYPES:
            raise ConversionError(f"{name}: dtype {t.dtype} cannot be written to safetensors")
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        specs.append((name, tuple(t.shape), t.dtype))
        offset += size
    header["__metadata__"] = dict(metadata or {"format": "pt"})
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    partial = path + ".partial"
    written = 0
    with open(partial, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for (name, t), (want_name, shape, dtype) in zip(tensors, specs, strict=True):
            if name != want_name or tuple(t.shape) != shape or t.dtype != dtype:
                raise RuntimeError(f"tensor {name} {tuple(t.shape)} {t.dtype} does not match the header's "
                                   f"{want_name} {shape} {dtype}")
            data = t.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
            fh.write(memoryview(data))
            written += data.nbytes
            del t, data
    os.replace(partial, path)
    return written


# ---------------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------------

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


def _prepare_output(output: str, overwrite: bool) -> None:
    if os.path.exists(output):
        if not os.path.isdir(output):
            raise ConversionError(f"{output} exists and is not a directory")
        if os.listdir(output) and not overwrite:
            raise ConversionError(f"{output} is not empty (pass --overwrite to replace its contents)")
    os.makedirs(output, exist_ok=True)


def _copy_sources(output: str, names: Iterable[str]) -> None:
    for name in names:
        shutil.copyfile(os.path.join(_HF_DIR, name), os.path.join(output, name))


def _copy_shipped_modules(output: str) -> None:
    """megatron_t2c's own modality/objectives/special_tokens sources, verbatim."""
    for module in SHIPPED_MODULES:
        shutil.copyfile(module.__file__, os.path.join(output, os.path.basename(module.__file__)))


#: Never generated (as megatron_t2c's engine: control pieces, opening markers, [MASK]).
SUPPRESSED_IDS = (st.PAD_ID, st.UNK_ID, st.BOS_ID, st.EOS_ID, st.DESCR_ID, st.PYTHON_ID, st.SOS_ID, st.MASK_ID)


def generation_config(arch: HFArchitecture):
    """Greedy, stop at ``[eoc]``, never the markers that open a segment (the engine's defaults)."""
    from transformers import GenerationConfig

    return GenerationConfig(eos_token_id=st.EOC_ID, pad_token_id=st.PAD_ID, do_sample=False,
                            max_new_tokens=256, suppress_tokens=list(SUPPRESSED_IDS))


def write_tokenizer(output: str, tokenizer_model: str, seq_length: int) -> None:
    """``tokenizer.model``, ``tokenization_t2c.py`` (+ ``special_tokens.py``) and ``tokenizer_config.json``."""
    from megatron_t2c.hf.tokenization_t2c import T2CTokenizer

    tokenizer = T2CTokenizer(tokenizer_model, model_max_length=seq_length)
    tokenizer.save_pretrained(output)
    config_path = os.path.join(output, "tokenizer_config.json")
    with open(config_path, encoding="utf-8") as fh:
        config = json.load(fh)
    config.update(tokenizer_class="T2CTokenizer", auto_map={"AutoTokenizer": ["tokenization_t2c.T2CTokenizer", None]})
    with open(config_path, "w", encoding="utf-8") as fh:
        json.dump(config, fh, indent=2)
    _copy_sources(output, _REMOTE_TOKENIZER_FILES)
    shutil.copyfile(st.__file__, os.path.join(output, os.path.basename(st.__file__)))


def _check_tokenizer(path: str, vocab_size: int) -> None:
    from megatron_t2c.tokenizer.sentencepiece import T2CTokenizerCore  # checks the special ids; no megatron import

    try:
        tokenizer = T2CTokenizerCore(path)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ConversionError(f"{path}: not a megatron_t2c SentencePiece model: {exc}") from exc
    if tokenizer.vocab_size != vocab_size:
        raise ConversionError(f"{path} has {tokenizer.vocab_size} pieces, the model's vocabulary is {vocab_size}")


def export_to_hf(checkpoint: str, output: str, *, model_class: str = "auto", dtype: Optional[str] = None,
                 tokenizer_model: Optional[str] = None, overwrite: bool = False) -> ExportSummary:
    """Write a Hugging Face directory for the megatron_t2c checkpoint at ``checkpoint`` (any TP/PP).

    ``model_class``: ``auto`` (stock GPT-2 when it computes this model exactly, else ``t2c``), ``gpt2`` or
    ``t2c``.  ``dtype``: ``float32``/``bfloat16``/``float16``, or None to keep the checkpoint's.
    ``tokenizer_model``: default the checkpoint's own ``tokenizer.model``.
    """
    start = time.perf_counter()
    reader = MegatronTensors(checkpoint)
    arch = HFArchitecture.from_run_info(reader.info)
    if model_class not in ("auto", "gpt2", "t2c"):
        raise ConversionError(f"unknown model class {model_class!r} (auto, gpt2, t2c)")
    target = ("gpt2" if arch.stock_gpt2 else "t2c") if model_class == "auto" else model_class
    if target == "gpt2" and not arch.stock_gpt2:
        raise ConversionError("this model is not a stock GPT-2 (separation, RoPE or a prefix-LM): export it "
                              "with --model-class t2c (or auto)")
    _check_checkpoint(reader, arch)
    tokenizer_model = tokenizer_model or os.path.join(reader.path, "tokenizer.model")
    if not os.path.isfile(tokenizer_model):
        raise ConversionError(f"missing file: {tokenizer_model} (the checkpoint stores no tokenizer: pass "
                              "--tokenizer-model)")
    _check_tokenizer(tokenizer_model, arch.vocab_size)
    out_dtype = getattr(torch, dtype) if dtype else None
    _prepare_output(output, overwrite)

    plan = _export_plan(reader, arch, target, out_dtype)
    meta = [item for emit in plan for item in emit(reader.meta)]
    model_dtype = out_dtype or meta[0][1].dtype

    def stream():
        for emit in plan:
            yield from emit(reader.load)

    size = write_safetensors(os.path.join(output, SAFETENSORS_FILE), meta, stream(), {"format": "pt"})
    config = arch.hf_config(target, model_dtype, reader.info)
    config.save_pretrained(output)

    generation_config(arch).save_pretrained(output)
    write_tokenizer(output, tokenizer_model, arch.seq_length)
    if target == "t2c":
        _copy_sources(output, _REMOTE_MODEL_FILES)
        _copy_shipped_modules(output)
    return ExportSummary(checkpoint=reader.path, output=output, model_class="GPT2LMHeadModel" if target == "gpt2"
                         else "T2CForCausalLM", remote_code=target == "t2c", tensors=len(meta), bytes=size,
                         seconds=round(time.perf_counter() - start, 3))


# ---------------------------------------------------------------------------------------------------
# Import
# ---------------------------------------------------------------------------------------------------

class _HFTensors:
    """The tensors of a Hugging Face directory's safetensors file(s), read one at a time with plain reads.

    Not memory-mapped (as ``safetensors.safe_open`` is): pages of a mapping count towards the process's
    resident memory for as long as it is open, i.e. the whole file by the end of a conversion.
    """

    def __init__(self, directory: str):
        index = os.path.join(directory, "model.safetensors.index.json")
        if os.path.isfile(index):
            with open(index, encoding="utf-8") as fh:
                files = sorted(set(json.load(fh)["weight_map"].values()))
        elif os.path.isfile(os.path.join(directory, SAFETENSORS_FILE)):
            files = [SAFETENSORS_FILE]
        else:
            raise ConversionError(f"missing file: {directory} holds no {SAFETENSORS_FILE} (nor an index); "
                                  "save the model with save_pretrained(safe_serialization=True)")
        self._where: dict[str, tuple[str, int, dict]] = {}
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as fh:
                (size,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(size))
            header.pop("__metadata__", None)
            self._where.update({key: (path, 8 + size, entry) for key, entry in header.items()})

    def __contains__(self, key):
        return key in self._where

    def keys(self):
        return self._where.keys()

    def get(self, key: str) -> torch.Tensor:
        if key not in self._where:
            raise ConversionError(f"missing tensor {key} in the Hugging Face weights")
        path, base, entry = self._where[key]
        dtype = _ST_NAMES.get(entry["dtype"])
        if dtype is None:
            raise ConversionError(f"{key}: unsupported safetensors dtype {entry['dtype']}")
        start, end = entry["data_offsets"]
        tensor = torch.empty(entry["shape"], dtype=dtype)
        buffer = tensor.reshape(-1).view(torch.uint8).numpy()
        if buffer.nbytes != end - start:
            raise ConversionError(f"{key}: {end - start} bytes stored for shape {entry['shape']} {entry['dtype']}")
        with open(path, "rb") as fh:
            fh.seek(base + start)
            if fh.readinto(memoryview(buffer)) != buffer.nbytes:
                raise ConversionError(f"{path} is truncated ({key})")
        return tensor


def _hf_to_megatron(tensors: _HFTensors, arch: HFArchitecture, target: str) -> Iterator[tuple[str, torch.Tensor]]:
    """``(megatron module name at TP=1, tensor)`` for every parameter but the table; see :func:`_hf_table`."""
    gpt2 = target == "gpt2"
    if arch.position_embedding_type == "learned_absolute":
        yield POSITIONS, tensors.get("transformer.wpe.weight")
    for i in range(arch.num_layers):
        for row in _LAYER:
            t = tensors.get(f"transformer.h.{i}.{row.gpt2 if gpt2 else row.t2c}")
            if gpt2 and t.dim() == 2:
                t = t.t()
            if row.qkv:
                t = interleave_qkv(t, arch.num_attention_heads, arch.num_query_groups, arch.head_dim)
            yield f"decoder.layers.{i}.{row.module}", t.contiguous()
    for key, name in _FINAL:
        yield key, tensors.get(name)


def _hf_table(tensors: _HFTensors, arch: HFArchitecture) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    base = tensors.get("transformer.wte.weight")
    code = tensors.get("transformer.wte_code.weight") if arch.separated_ids else None
    if "lm_head.weight" in tensors and not torch.equal(tensors.get("lm_head.weight"), base):
        raise ConversionError("unsupported: the output layer (lm_head) is not tied to the input embedding")
    return base, code


@contextlib.contextmanager
def _single_rank():
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


def _model_config(arch: HFArchitecture):
    from megatron_t2c.models.gpt import PRESETS, ModelConfig

    preset = next((name for name, p in PRESETS.items() if (p.num_layers, p.hidden_size, p.num_attention_heads,
                   p.seq_length) == (arch.num_layers, arch.hidden_size, arch.num_attention_heads,
                                     arch.seq_length)), "pangu-100m")
    return ModelConfig(preset=preset, num_layers=arch.num_layers, hidden_size=arch.hidden_size,
                       num_attention_heads=arch.num_attention_heads, ffn_hidden_size=arch.ffn_hidden_size,
                       seq_length=arch.seq_length, position_embedding_type=arch.position_embedding_type,
                       rotary_base=int(arch.rotary_base), separation=arch.separation,
                       hidden_dropout=arch.hidden_dropout, attention_dropout=arch.attention_dropout,
                       init_method_std=arch.init_method_std, layernorm_epsilon=arch.layernorm_epsilon,
                       make_vocab_size_divisible_by=arch.make_vocab_size_divisible_by)


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
    """A megatron_t2c checkpoint (run directory ``output``) from a Hugging Face GPT-2 / T2C directory.

    The checkpoint is written from one TP=1/PP=1 process and loads at any TP/PP (dist checkpoints reshard);
    the requested sizes are checked against the architecture and recorded in the run info.  Returns the
    iteration directory.
    """
    from megatron_t2c.training.checkpointing import make_run_info, save_checkpoint
    from megatron_t2c.models.gpt import build_model, make_layout

    config_path = os.path.join(hf_dir, "config.json")
    if not os.path.isfile(config_path):
        raise ConversionError(f"missing file: {config_path} (not a Hugging Face model directory)")
    with open(config_path, encoding="utf-8") as fh:
        hf_config = json.load(fh)
    arch, target = HFArchitecture.from_hf_config(hf_config, sample_format=sample_format, objective=objective)
    _check_parallel(arch, tensor_model_parallel_size, pipeline_model_parallel_size)
    if tokenizer_model is None:
        tokenizer_model = os.path.join(hf_dir, "tokenizer.model")
        if not os.path.isfile(tokenizer_model):
            found = [f for f in ("vocab.json", "merges.txt", "tokenizer.json")
                     if os.path.exists(os.path.join(hf_dir, f))]
            raise ConversionError(
                f"unknown tokenizer: {hf_dir} has no tokenizer.model (a megatron_t2c SentencePiece model)"
                + (f" but {', '.join(found)}" if found else "") + "; megatron_t2c needs its fixed special ids "
                "([descr] [python] [eoc] ...): pass --tokenizer-model with a model of the same vocabulary")
    _check_tokenizer(tokenizer_model, arch.vocab_size)
    tensors = _HFTensors(hf_dir)
    model_config = _model_config(arch)
    with _single_rank():
        layout = make_layout(model_config, arch.separated_ids, arch.vocab_size)
        model = build_model(model_config, layout, transformer_config=model_config.transformer_config(
            hidden_dropout=0.0, attention_dropout=0.0, perform_initialization=False))  # all overwritten
        params, copied = dict(model.named_parameters()), set()
        with torch.no_grad():
            base, code = _hf_table(tensors, arch)
            _copy_param(params, TABLE, layout.to_local(base, code, 0), copied)
            del base, code
            for name, t in _hf_to_megatron(tensors, arch, target):
                _copy_param(params, name, t, copied)
        left = sorted(set(params) - copied)
        if left:
            raise ConversionError(f"parameters without a Hugging Face source: {', '.join(left)}")
        info = make_run_info(model_config=model_config, vocab_size=arch.vocab_size, separation=arch.separation,
                             separated=arch.separated_ids, tokenizer_model=tokenizer_model,
                             fmt=arch.sample_format, objective=arch.objective, stage="imported",
                             config={"converted_from": os.path.abspath(hf_dir),
                                     "hf_model_type": hf_config["model_type"],
                                     "target_parallel": {"tensor_model_parallel_size": tensor_model_parallel_size,
                                                         "pipeline_model_parallel_size": pipeline_model_parallel_size}})
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


# ---------------------------------------------------------------------------------------------------
# Verify
# ---------------------------------------------------------------------------------------------------

def sample_rows(arch: HFArchitecture, rows: int = 4, length: int = 48, seed: int = 0) -> torch.Tensor:
    """``[rows, length]`` documents in the model's format, random ordinary tokens, each ending in code:
    ``[descr] text [python] code`` (PanGu) or ``[sos] code [descr] text [python] code`` (PyCodeGPT)."""
    gen = torch.Generator().manual_seed(seed)
    length = min(length, arch.seq_length)
    out = torch.randint(st.NEW_LINE_ID + 6, arch.vocab_size, (rows, length), generator=gen)
    for r in range(rows):
        cut = int(torch.randint(3, max(4, length // 2), (1,), generator=gen))
        if arch.sample_format == "pycodegpt":
            out[r, 0], out[r, max(2, cut // 2)], out[r, cut] = st.SOS_ID, st.DESCR_ID, st.PYTHON_ID
        else:
            out[r, 0], out[r, cut] = st.DESCR_ID, st.PYTHON_ID
        out[r, cut + 2::5] = st.NEW_LINE_ID  # whitespace markers inside code
    return out


def megatron_logits(model, tokens: torch.Tensor, arch: HFArchitecture) -> torch.Tensor:
    """``[b, s, V]`` logits of our (single-stage, TP=1) model on ``tokens``: row ids from the tokens'
    modality, the output space from their segments, the objective's attention (causal; prefix-code: the
    prefix both ways)."""
    from megatron_t2c.mrpt.modality import modality_ids, segment_ids
    from megatron_t2c.mrpt.objectives import attention_mask

    modality = modality_ids(tokens, arch.sample_format)
    mask = attention_mask(tokens, arch.sample_format, "prefix-code") if arch.prefix_lm else None
    positions = torch.arange(tokens.shape[1])[None].expand_as(tokens)
    with torch.no_grad():
        logits = model(input_ids=model.layout.rows(tokens, modality), position_ids=positions, attention_mask=mask,
                       label_modality=segment_ids(tokens, arch.sample_format), runtime_gather_output=True)
    return logits[..., :arch.vocab_size].float()


@dataclasses.dataclass
class VerifyResult:
    max_abs_diff: float
    top1_agreement: float
    tolerance: float
    positions: int

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def __str__(self) -> str:
        return (f"max |logit difference| {self.max_abs_diff:.3g} (tolerance {self.tolerance:g}), top-1 agreement "
                f"{100 * self.top1_agreement:.2f}% over {self.positions} positions: "
                + ("OK" if self.ok else "FAILED"))


def verify(checkpoint: str, hf_dir: str, *, rows: int = 4, length: int = 48, tolerance: Optional[float] = None,
           seed: int = 0) -> VerifyResult:
    """Run the megatron checkpoint (loaded at TP=1/PP=1) and the Hugging Face directory (in float32) on the same
    rows.  The default tolerance is that of the less precise of the two weight dtypes (:data:`TOLERANCE`)."""
    from transformers import AutoModelForCausalLM

    from megatron_t2c.training.checkpointing import model_from_checkpoint

    info = read_run_info(checkpoint)
    arch = HFArchitecture.from_run_info(info)
    tokens = sample_rows(arch, rows, length, seed)
    with _single_rank():
        model, _ = model_from_checkpoint(checkpoint)
        ours = megatron_logits(model, tokens, arch)
        dtype = model.embedding.word_embeddings.weight.dtype
        del model
    hf = AutoModelForCausalLM.from_pretrained(hf_dir, trust_remote_code=True, dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = hf(input_ids=tokens).logits.float()
    diff = float((ours - theirs).abs().max())
    agree = float((ours.argmax(-1) == theirs.argmax(-1)).float().mean())
    with open(os.path.join(hf_dir, "config.json"), encoding="utf-8") as fh:
        hf_dtype = getattr(torch, str(json.load(fh).get("dtype") or "float32"), torch.float32)
    tol = tolerance if tolerance is not None else max(TOLERANCE.get(dtype, 1e-4), TOLERANCE.get(hf_dtype, 1e-4))
    return VerifyResult(max_abs_diff=diff, top1_agreement=agree, tolerance=tol, positions=tokens.numel())
