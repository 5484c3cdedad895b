"""Tiny models, synthetic packed rows and weight mapping for the model, attention and embedding tests.

The vocabulary is synthetic (:data:`PIECES`, :data:`VOCAB` ids): the 15 fixed specials, then Python grammar
pieces (with and without ``▁``), then text pieces -- enough for :func:`megatron_t2c.mrpt.separation.separated_token_ids`
to give real ``none``/``partial``/``full`` id lists without training a tokenizer.  Rows are PanGu-format
documents (``[descr] text [python] code [eoc]``) packed back to back and cut at random offsets, then turned
into batches by :func:`megatron_t2c.mrpt.objectives.build_batch`.

Weights move between tensor/pipeline layouts through a *canonical* single-partition form: every parameter
full-size under its name in the single-stage model, the word-embedding table as ``TABLE_BASE`` (the
``VOCAB`` base rows) and ``TABLE_CODE`` (the code rows of the separated ids, in id order).
"""

from __future__ import annotations

import torch
from megatron.core import parallel_state

from megatron_t2c.mrpt import special_tokens as st
from megatron_t2c.models.config import ModelConfig
from megatron_t2c.models.gpt import T2CGPTModel, build_model, make_layout
from megatron_t2c.models.row_layout import RowLayout
from megatron_t2c.mrpt.objectives import build_batch
from megatron_t2c.mrpt.separation import separated_token_ids

VOCAB, SEQ, MICRO_BATCH, SEED = 300, 32, 2, 1234
DIVISIBLE_BY = 64  # padded base vocabulary: 320 at TP=1, 384 at TP=2 (so checkpoints must re-pad)
MODES = ("none", "partial", "full")

_GRAMMAR = ["def", "return", "if", "else", "for", "in", "not", "None", "self", "len", "range", "print",
            "import", "True", "False", "append", "split", "join", "int", "str", "while", "lambda"]
_SYMBOLS = ["(", ")", ":", "=", ".", ",", "[", "]", "+", "-", "*", "==", "+=", "->", "{", "}"]
_TEXT = ["the", "a", "value", "values", "of", "returns", "given", "number", "string", "compute", "x", "y",
         "foo", "bar", "name", "data", "list", "item", "items", "result"]


def _pieces() -> tuple[str, ...]:
    specials = sorted(st.IDS, key=st.IDS.get)
    words = [w for g in _GRAMMAR for w in (g, "\u2581" + g)] + _SYMBOLS + ["\u2581" + t for t in _TEXT] + _TEXT
    words += [f"w{i}" for i in range(VOCAB - len(specials) - len(words))]
    return tuple(specials + words)


PIECES = _pieces()
assert len(PIECES) == VOCAB


def separated(mode: str) -> list[int]:
    """The separated ids of ``mode`` for the synthetic vocabulary."""
    return separated_token_ids(mode, PIECES)


def model_config(**overrides) -> ModelConfig:
    """A 2-layer, 32-wide, 4-head model, context ``SEQ``, no dropout."""
    values = dict(num_layers=2, hidden_size=32, num_attention_heads=4, seq_length=SEQ, hidden_dropout=0.0,
                  attention_dropout=0.0, make_vocab_size_divisible_by=DIVISIBLE_BY)
    values.update(overrides)
    return ModelConfig(**values)


def layout_for(mode: str, tp_size: int | None = None) -> RowLayout:
    return make_layout(model_config(), separated(mode), VOCAB, tp_size)


def tiny_model(mode: str = "partial", config: ModelConfig | None = None, **tc_overrides) -> T2CGPTModel:
    """This rank's stage of a tiny fp32 model (current parallel sizes)."""
    config = config or model_config()
    layout = make_layout(config, separated(mode), VOCAB)
    tc = config.transformer_config(pipeline_dtype=torch.float32, **tc_overrides)
    return build_model(config, layout, transformer_config=tc)


# ---------------------------------------------------------------------------------------------------
# Rows and batches
# ---------------------------------------------------------------------------------------------------

_TEXT_IDS = range(15 + 2 * len(_GRAMMAR) + len(_SYMBOLS), VOCAB)
_CODE_SPECIALS = (st.NEW_LINE_ID, st.INDENT_ID, st.DEDENT_ID)


def _document(gen: torch.Generator) -> list[int]:
    """``[descr] text [python] code [eoc]`` with random lengths (code may contain whitespace markers)."""
    n_text = int(torch.randint(2, 7, (1,), generator=gen))
    n_code = int(torch.randint(3, 12, (1,), generator=gen))
    text = [int(t) for t in torch.randint(_TEXT_IDS.start, _TEXT_IDS.stop, (n_text,), generator=gen)]
    code = torch.randint(15, VOCAB, (n_code,), generator=gen)
    specials = torch.tensor(_CODE_SPECIALS)[torch.randint(0, 3, (n_code,), generator=gen)]
    code = torch.where(torch.rand(n_code, generator=gen) < 0.15, specials, code)
    return [st.DESCR_ID, *text, st.PYTHON_ID, *code.tolist(), st.EOC_ID]


def packed_rows(seed: int, batch: int = MICRO_BATCH, seq: int = SEQ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens, labels)`` ``[batch, seq]``: documents packed back to back, each row cut at a random offset."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(batch):
        ids: list[int] = []
        while len(ids) < 2 * seq + 2:
            ids += _document(gen)
        start = int(torch.randint(0, seq, (1,), generator=gen))
        rows.append(ids[start:start + seq + 1])
    rows = torch.tensor(rows)
    return rows[:, :-1], rows[:, 1:]


def make_batch(seed: int, objective: str = "code", batch: int = MICRO_BATCH, seq: int = SEQ) -> dict:
    """:func:`build_batch` of packed rows, as a dict (``input_ids`` are still token ids)."""
    tokens, labels = packed_rows(seed, batch, seq)
    return build_batch(tokens, labels, "pangu", objective, seed=seed, sample_ids=torch.arange(batch),
                       vocab_size=VOCAB)._asdict()


def model_inputs(batch: dict, layout: RowLayout) -> dict:
    """The keyword arguments of :meth:`T2CGPTModel.forward` for a batch (row ids in, labels out)."""
    return dict(input_ids=layout.rows(batch["input_ids"], batch["modality"]),
                position_ids=batch["position_ids"], attention_mask=batch["attention_mask"],
                labels=batch["labels"], loss_mask=batch["loss_mask"], label_modality=batch["label_modality"])


def mean_loss(model, batch: dict) -> torch.Tensor:
    """Masked mean per-token loss of a single-stage model."""
    losses = model(**model_inputs(batch, model.layout))
    return (losses * batch["loss_mask"]).sum() / batch["loss_mask"].sum()


# ---------------------------------------------------------------------------------------------------
# Canonical weights
# ---------------------------------------------------------------------------------------------------

TABLE = "embedding.word_embeddings.weight"
TABLE_BASE, TABLE_CODE = "table.base", "table.code"


def _table_name(name: str) -> bool:
    return name in (TABLE, "output_layer.weight")


def full_name(model: T2CGPTModel, name: str) -> str:
    """Name of this stage's parameter ``name`` in the single-stage model."""
    if name.startswith("decoder.layers."):
        local, rest = int(name.split(".")[2]), name.split(".", 3)[3]
        return f"decoder.layers.{model.decoder.layers[local].layer_number - 1}.{rest}"
    return name


def canonical(model: T2CGPTModel, tensors: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Canonical form of a TP=1/PP=1 ``model``'s parameters (or of ``tensors`` keyed like them, e.g. grads)."""
    tensors = tensors if tensors is not None else {n: p.detach() for n, p in model.named_parameters()}
    out = {}
    for name, value in tensors.items():
        if _table_name(name):
            base, code = model.layout.from_local(value, 0)
            out[TABLE_BASE], out[TABLE_CODE] = base[:VOCAB].clone(), code.clone()
        else:
            out[name] = value.clone()
    return out


def _shard(param: torch.nn.Parameter, full: torch.Tensor) -> torch.Tensor:
    if not getattr(param, "tensor_model_parallel", False):
        return full
    chunks = full.chunk(parallel_state.get_tensor_model_parallel_world_size(), dim=param.partition_dim)
    return chunks[parallel_state.get_tensor_model_parallel_rank()]


def load_canonical(model: T2CGPTModel, weights: dict[str, torch.Tensor]) -> None:
    """Copy canonical ``weights`` into this rank's TP/PP partition of ``model``."""
    rank = parallel_state.get_tensor_model_parallel_rank()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if _table_name(name):
                param.copy_(model.layout.to_local(weights[TABLE_BASE], weights[TABLE_CODE], rank))
            else:
                param.copy_(_shard(param, weights[full_name(model, name)]))


def assert_table_matches(layout: RowLayout, block: torch.Tensor, reference: dict[str, torch.Tensor],
                         rank: int, padding_zero: bool = False, **tolerance) -> None:
    """This rank's table block (weights or grads) equals the canonical ``reference``; with ``padding_zero``
    its padding rows (padded vocabulary, unused code slots) must be exactly 0 (e.g. gradients)."""
    base, code = layout.from_local(block, rank)
    start = rank * layout.shard_size
    real = max(0, min(layout.shard_size, VOCAB - start))
    torch.testing.assert_close(base[:real], reference[TABLE_BASE][start:start + real], **tolerance)
    offset, count = layout.code_offsets[rank], layout.code_counts[rank]
    torch.testing.assert_close(code, reference[TABLE_CODE][offset:offset + count], **tolerance)
    if padding_zero:
        assert not base[real:].any() and not block[layout.shard_size + count:].any()


def assert_matches(model: T2CGPTModel, tensors: dict[str, torch.Tensor], reference: dict[str, torch.Tensor],
                   padding_zero: bool = False, **tolerance) -> None:
    """Every tensor of this rank's partition (keyed like its parameters) equals its canonical reference."""
    rank = parallel_state.get_tensor_model_parallel_rank()
    params = dict(model.named_parameters())
    for name, value in tensors.items():
        if _table_name(name):
            assert_table_matches(model.layout, value, reference, rank, padding_zero, **tolerance)
        else:
            torch.testing.assert_close(value, _shard(params[name], reference[full_name(model, name)]),
                                       **tolerance, msg=lambda m: f"{name}: {m}")


#: GPT-Neo's layers on the tiny model (2 layers: the first global, the second local with a window of 8 tokens)
GPT_NEO = dict(activation="gelu_tanh", qkv_bias=False, softmax_scale=1.0, window_size=7,
               window_attn_skip_freq=[0, 1])
