"""Verify: the megatron checkpoint and its Hugging Face directory on the same rows, logits compared.

Both models run on the same rows (PanGu/PyCodeGPT documents of random ordinary tokens, so that every
modality and, for prefix-LMs, the prefix occur; longer than a local attention window): max absolute logit
difference and top-1 agreement; fails above the tolerance (float32: 1e-4).  A stock model with a Hugging
Face tokenizer has its own ids (:mod:`.vocab_map`): rows and logits are compared through the id map, and
markers take part only where the Hugging Face side has them (not in the original model of an import).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

import torch

from megatron_t2c.hf.architecture import HFArchitecture
from megatron_t2c.hf.import_hf import single_rank
from megatron_t2c.mrpt import special_tokens as st
from megatron_t2c.tokenizer.huggingface import OFFSET
from megatron_t2c.mrpt.modality import NUM_SPECIAL
from megatron_t2c.training.checkpointing import CheckpointError, read_run_info

#: Tolerance of ``--verify`` on the max absolute logit difference, per dtype.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 1e-2}


def sample_rows(arch: HFArchitecture, rows: int = 4, length: int = 48, seed: int = 0,
                ordinary: Optional[torch.Tensor] = None, markers: bool = True) -> torch.Tensor:
    """``[rows, length]`` documents in the model's format, random ordinary tokens, each ending in code:
    ``[descr] text [python] code`` (PanGu) or ``[sos] code [descr] text [python] code`` (PyCodeGPT).
    ``ordinary``: the ids to draw from (default every id above the specials); ``markers=False``: none."""
    gen = torch.Generator().manual_seed(seed)
    length = min(length, arch.seq_length)
    if ordinary is None:
        out = torch.randint(st.NEW_LINE_ID + 6, arch.vocab_size, (rows, length), generator=gen)
    else:
        out = ordinary[torch.randint(0, len(ordinary), (rows, length), generator=gen)]
    for r in range(markers and rows):
        cut = int(torch.randint(3, max(4, length // 2), (1,), generator=gen))
        if arch.sample_format == "pycodegpt":
            out[r, 0], out[r, max(2, cut // 2)], out[r, cut] = st.SOS_ID, st.DESCR_ID, st.PYTHON_ID
        else:
            out[r, 0], out[r, cut] = st.DESCR_ID, st.PYTHON_ID
        out[r, cut + 2::5] = st.NEW_LINE_ID  # whitespace markers inside code
    return out


def id_map(checkpoint_tokenizer, hf_dir: str, hf_config: dict, vocab_size: int) -> Optional[dict[int, int]]:
    """Our id -> the Hugging Face directory's id, or None when both use the same ids (a SentencePiece model, or
    ``T2CForCausalLM``, which keeps megatron_t2c's ids)."""
    from megatron_t2c.hf.vocab_map import MARKERS, is_hf_tokenizer

    if not is_hf_tokenizer(checkpoint_tokenizer) or hf_config.get("model_type") == "t2c_gpt":
        return None
    from transformers import AutoTokenizer

    theirs = AutoTokenizer.from_pretrained(hf_dir)
    offset, rows = OFFSET, hf_config["vocab_size"]
    mapping = {i: i - offset for i in range(offset, min(vocab_size, offset + rows))}
    vocab = theirs.get_vocab()
    for marker in MARKERS:
        if marker in vocab and vocab[marker] < rows:
            mapping.pop(offset + vocab[marker], None)
            mapping[st.IDS[marker]] = vocab[marker]
    return mapping


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

    from megatron_t2c.training.checkpointing import model_from_checkpoint, tokenizer_path
    from megatron_t2c.tokenizer.loading import open_tokenizer

    info = read_run_info(checkpoint)
    arch = HFArchitecture.from_run_info(info)
    with open(os.path.join(hf_dir, "config.json"), encoding="utf-8") as fh:
        hf_config = json.load(fh)
    try:
        tokenizer = open_tokenizer(tokenizer_path(checkpoint))
    except CheckpointError:  # no tokenizer stored: a SentencePiece-era checkpoint, same ids on both sides
        tokenizer = None
    mapping = id_map(tokenizer, hf_dir, hf_config, arch.vocab_size)
    length = min(arch.seq_length, max(length, (arch.window_size or 0) + 40))  # past the local window
    if mapping is None:
        tokens = sample_rows(arch, rows, length, seed)
        ours_ids = theirs_ids = torch.arange(arch.vocab_size)
    else:
        ours_ids = torch.tensor(sorted(mapping))
        theirs_ids = torch.tensor([mapping[i] for i in ours_ids.tolist()])
        markers = all(i in mapping for i in (st.DESCR_ID, st.PYTHON_ID, st.SOS_ID, st.NEW_LINE_ID))
        tokens = sample_rows(arch, rows, length, seed, ordinary=ours_ids[ours_ids >= NUM_SPECIAL], markers=markers)
    with single_rank():
        model, _ = model_from_checkpoint(checkpoint)
        ours = megatron_logits(model, tokens, arch)[..., ours_ids]
        dtype = model.embedding.word_embeddings.weight.dtype
        del model
    hf = AutoModelForCausalLM.from_pretrained(hf_dir, trust_remote_code=True, dtype=torch.float32).eval()
    hf_tokens = tokens if mapping is None else torch.tensor(
        [mapping[i] for i in tokens.flatten().tolist()]).view_as(tokens)
    with torch.no_grad():
        theirs = hf(input_ids=hf_tokens).logits.float()[..., theirs_ids]
    diff = float((ours - theirs).abs().max())
    agree = float((ours.argmax(-1) == theirs.argmax(-1)).float().mean())
    hf_dtype = getattr(torch, str(hf_config.get("dtype") or "float32"), torch.float32)
    tol = tolerance if tolerance is not None else max(TOLERANCE.get(dtype, 1e-4), TOLERANCE.get(hf_dtype, 1e-4))
    return VerifyResult(max_abs_diff=diff, top1_agreement=agree, tolerance=tol, positions=tokens.numel())
