"""Batched, KV-cached incremental decoding on a :class:`~megatron_t2c.models.gpt.T2CGPTModel` (any TP, PP = 1).

The engine (:class:`Generator`) takes prompts as token-id lists -- ``[descr] d [python] sig`` (PanGu) or
``[sos] sig [descr] d [python]`` (PyCodeGPT), optionally followed by a body prefix (incremental prompts) --
and continues them until ``[eoc]`` or a length limit.  It follows the training-time rules exactly, so that a
cached step gives the logits a full forward pass over the whole sequence gives (:func:`full_forward_logits`;
tested to 1e-5 in fp32).  Where each rule is described:

* **Rows** and **Positions**: :meth:`Generator._prompt_tensors`; **Attention**: :meth:`Generator._prefill_mask`;
  **Output space** and the never-generated markers: :meth:`Generator._forward`;
* **KV cache** (megatron-core's own static batching): :meth:`Generator._new_context` and
  :meth:`Generator._generate_batch`;
* **Sampling** (greedy, temperature, top-k, top-p; counter-based, no generator state): :func:`sample_tokens`,
  :func:`uniforms`, and under TP :meth:`Generator._agree`;
* **Length** (by default to the model's context; stop at ``[eoc]``): :meth:`Generator.budget`;
* **Output** (the generated ids without ``[eoc]``): :class:`GenerationResult`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional, Sequence

import torch

from megatron_t2c.mrpt import special_tokens as st
from megatron_t2c.utils.dataclass_flags import option
from megatron_t2c.mrpt.modality import CODE, modality_ids
from megatron_t2c.mrpt.objectives import OBJECTIVES, _signed, prefix_mask, splitmix64

__all__ = ["SamplingConfig", "GenerationResult", "Generator", "SUPPRESSED_IDS", "uniforms", "sample_tokens",
           "sequence_key", "full_forward_logits"]

#: Ids never generated (``suppress_markers``): control pieces, opening markers and ``[MASK]``.
SUPPRESSED_IDS = (st.PAD_ID, st.UNK_ID, st.BOS_ID, st.EOS_ID, st.DESCR_ID, st.PYTHON_ID, st.SOS_ID, st.MASK_ID)


@dataclasses.dataclass
class SamplingConfig:
    """How the next token is chosen (paper: greedy for pass@1; n = 200, T = 0.95, top-p = 0.8 for pass@10/100)."""

    greedy: bool = option(False, "greedy decoding (argmax; temperature/top-p/top-k are ignored)")
    temperature: float = option(0.95, "softmax temperature of sampling (> 0)")
    top_p: float = option(0.8, "nucleus sampling: keep the smallest set of tokens with this much probability "
                          "(1: off)")
    top_k: int = option(0, "keep only the k most likely tokens (0: off)")
    max_new_tokens: Optional[int] = option(None, "stop a sample after this many generated tokens (default: run to "
                                           "the model's context length, as the paper; always at [eoc])")
    seed: int = option(1234, "sampling seed: with the same seed a sample is the same whatever the batch size")

    def __post_init__(self):
        if not self.greedy and not self.temperature > 0:
            raise ValueError("temperature must be > 0 (use greedy for argmax)")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1 (or None: to the context length)")

    def describe(self) -> dict:
        """The settings that decide the samples (stored with every sample record)."""
        if self.greedy:
            return {"greedy": True, "max_new_tokens": self.max_new_tokens}
        return {"greedy": False, "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k,
                "max_new_tokens": self.max_new_tokens, "seed": self.seed}


@dataclasses.dataclass
class GenerationResult:
    """One finished sequence.

    Output: the generated ids without ``[eoc]`` (a missing ``[eoc]`` never costs the last character: the
    release cut one character off the text unconditionally) -- :mod:`megatron_t2c.evaluation.completions`
    turns them into de-normalised Python.
    """

    tokens: list[int]  # generated ids, without the [eoc]
    stop: str  # "eoc", or "length": max_new_tokens or the model's context length was reached
    logits: Optional[torch.Tensor] = None  # [len, V] float32 logits of each step (with return_logits)

    @property
    def finished(self) -> bool:
        """Whether the model closed the sample with ``[eoc]``."""
        return self.stop == "eoc"


# ---------------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------------

def sequence_key(*parts: object) -> int:
    """A stable 63-bit key for a sample (e.g. ``sequence_key(task_id, sample_index)``), the same in every
    process (Python's ``hash`` of a string is not)."""
    import hashlib

    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def uniforms(seed: int, keys: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """float64 uniforms in ``[0, 1)``, a hash of ``(seed, key, step)`` per element (SplitMix64): no state.

    The draw is *counter-based*: the uniform number for a sequence's ``t``-th token is a hash of
    ``(seed, sequence key, t)``, used for an inverse-CDF draw over the filtered distribution
    (:func:`sample_tokens`).  No generator state: the same seed and key give the same sample on every TP
    rank, whatever the batch size or batch companions, on resume, and for any order of work.
    """
    h = splitmix64(splitmix64(keys.long() + _signed(seed)) + steps.long())
    h = splitmix64(h + 0x5851F42D4C957F2D)
    return ((h >> 11) & ((1 << 53) - 1)).double() * (2.0 ** -53)


def sample_tokens(logits: torch.Tensor, sampling: SamplingConfig, keys: torch.Tensor,
                  steps: torch.Tensor) -> torch.LongTensor:
    """The next token of each row of ``logits [b, V]`` (float32; ``-inf`` = never).

    Greedy: argmax (the lowest id on ties).  Else: divide by the temperature, keep the top-k and the
    top-p nucleus (the most likely tokens until their mass reaches ``top_p``; the first always stays),
    and draw by inverse CDF with :func:`uniforms` over the tokens sorted by probability (stable order).
    Vocab-parallel logits are gathered (:meth:`Generator._forward`), so every TP rank holds the same
    ``[b, V]`` logits and draws the same tokens.
    """
    if sampling.greedy:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1).double()
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    keep = torch.ones_like(sorted_probs, dtype=torch.bool)
    if sampling.top_k:
        keep[:, sampling.top_k:] = False
    if sampling.top_p < 1:
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        keep &= mass_before < sampling.top_p
    keep[:, 0] = True
    sorted_probs = torch.where(keep, sorted_probs, 0.0)
    cdf = sorted_probs.cumsum(dim=-1)
    target = uniforms(sampling.seed, keys, steps).to(cdf.device) * cdf[:, -1]
    index = torch.searchsorted(cdf, target[:, None], right=True).clamp(max=cdf.shape[1] - 1)
    index = torch.minimum(index, keep.sum(dim=-1, keepdim=True) - 1)  # never past the kept set (rounding)
    return order.gather(1, index).squeeze(1)


# ---------------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------------

def _tp_group_and_size(model) -> tuple[object, int]:
    group = getattr(model, "tp_group", None)
    if group is None:
        return None, 1
    return group, torch.distributed.get_world_size(group)


class Generator:
    """Generate continuations of prompts with a :class:`~megatron_t2c.models.gpt.T2CGPTModel`.

    Args:
        model: this rank's model (eval mode, current parallel state, PP = 1; any TP).
        fmt: the prompts' format (``pangu`` / ``pycodegpt``): decides the prompt tokens' modality.
        objective: the model's MRPT objective; ``prefix-code`` attends bidirectionally over the prompt's prefix.
        max_batch_size: prompts decoded together (longer lists are split).
        suppress_markers: never generate :data:`SUPPRESSED_IDS`.
        progress: show a tqdm bar of generated tokens with tokens/s (rank 0 of the caller decides).
        logits_hook: ``hook(logits [b, V], keys [b], step) -> logits``, applied before each draw (tests,
            extra constraints); must act the same on every TP rank.
    """

    def __init__(self, model, fmt: str, objective: str = "text-code", *, max_batch_size: int = 16,
                 suppress_markers: bool = True, progress: bool = False,
                 logits_hook: Optional[Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]] = None):
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; choose from {', '.join(OBJECTIVES)}")
        if not (model.pre_process and model.post_process):
            raise NotImplementedError("generation needs the whole model on one pipeline stage "
                                      "(pipeline-model-parallel size 1); use tensor parallelism instead")
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.model = model
        self.fmt = fmt
        self.objective = objective
        self.max_batch_size = max_batch_size
        self.suppress_markers = suppress_markers
        self.progress = progress
        self.logits_hook = logits_hook
        self.tp_group, self.tp_size = _tp_group_and_size(model)
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.context_length = model.max_sequence_length
        self.learned_positions = model.position_embedding_type == "learned_absolute"
        self.vocab_size = model.layout.vocab_size
        #: totals of the last :meth:`generate` call: tokens generated, seconds, prompt tokens
        self.stats = {"tokens": 0, "seconds": 0.0, "prompt_tokens": 0, "sequences": 0}

    # -- public ----------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig,
                 keys: Optional[Sequence[int]] = None, *, return_logits: bool = False,
                 on_batch: Optional[Callable[[list[int], list[GenerationResult]], None]] = None,
                 bar=None) -> list[GenerationResult]:
        """Continue every prompt; results in the prompts' order.

        ``keys``: one int per prompt that seeds its draws (:func:`uniforms`; default: the prompt's index).
        ``on_batch(indices, results)`` is called after each batch (to write samples as they are produced).
        ``bar``: a tqdm bar to advance (one per run, made by the caller) instead of one for this call.
        ``return_logits``: keep each step's float32 logits in the results (for tests).
        """
        if self.model.training:
            raise RuntimeError("put the model in eval mode (model.eval()) before generating")
        keys = list(range(len(prompts))) if keys is None else [int(k) for k in keys]
        if len(keys) != len(prompts):
            raise ValueError("one key per prompt")
        for i, prompt in enumerate(prompts):
            if len(prompt) == 0:
                raise ValueError(f"prompt {i} is empty")
            if len(prompt) >= self.context_length:
                raise ValueError(f"prompt {i} has {len(prompt)} tokens: no room left in the model's context "
                                 f"of {self.context_length}")
        results: list[Optional[GenerationResult]] = [None] * len(prompts)
        self.stats = {"tokens": 0, "seconds": 0.0, "prompt_tokens": 0, "sequences": 0}
        own_bar = bar is None
        if own_bar:
            bar = self._bar(sum(self.budget(len(p), sampling) for p in prompts))
        start = time.perf_counter()
        try:
            with torch.no_grad(), self.model.frozen_output():  # the code-space output gathered once
                for lo in range(0, len(prompts), self.max_batch_size):
                    index = list(range(lo, min(lo + self.max_batch_size, len(prompts))))
                    batch = self._generate_batch([list(map(int, prompts[i])) for i in index],
                                                 [keys[i] for i in index], sampling, return_logits, bar)
                    for i, result in zip(index, batch):
                        results[i] = result
                    if on_batch is not None:
                        on_batch(index, batch)
        finally:
            self.stats["seconds"] = time.perf_counter() - start
            if own_bar and bar is not None:
                bar.close()
        return results  # type: ignore[return-value]

    def budget(self, prompt_length: int, sampling: SamplingConfig) -> int:
        """The most tokens a prompt of ``prompt_length`` may get: to the context, or ``max_new_tokens``.

        Length: by default a sample runs to the model's context (prompt + generation = context length, as
        the release generates up to 1,024 tokens in total) and stops at ``[eoc]``; ``max_new_tokens`` caps
        it lower.  A sample cut by either limit has ``stop = "length"``.
        """
        room = self.context_length - prompt_length
        return room if sampling.max_new_tokens is None else min(sampling.max_new_tokens, room)

    # -- internals ---------------------------------------------------------------------------------
    def _bar(self, total: int):
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, unit="tok", desc="generate", dynamic_ncols=True, smoothing=0.1)

    def _prompt_tensors(self, prompts: list[list[int]]):
        """Left-padded tokens, row ids, positions, validity and prefix flags of a batch of prompts.

        * **Rows**: prompt tokens take rows by modality (``model.rows(tokens, modality_ids(prompt, fmt))``);
          every generated token is code (``CODE`` rows: separated tokens their code row, specials their
          shared row).
        * **Positions** restart at 0 at a prompt's first real token (left padding takes no positions);
          learned absolute positions cap a sequence at the model's context length.  RoPE (megatron applies
          it by cache slot) is relative, so left padding does not change it.
        """
        b, length = len(prompts), max(len(p) for p in prompts)
        tokens = torch.full((b, length), st.PAD_ID, dtype=torch.long)
        modality = torch.zeros((b, length), dtype=torch.long)
        prefix = torch.zeros((b, length), dtype=torch.bool)
        real = torch.zeros((b, length), dtype=torch.bool)
        positions = torch.zeros((b, length), dtype=torch.long)
        for i, prompt in enumerate(prompts):
            ids = torch.tensor(prompt, dtype=torch.long)
            pad = length - len(prompt)
            tokens[i, pad:] = ids
            modality[i, pad:] = modality_ids(ids, self.fmt)  # on the unpadded prompt, as in training
            if self.objective == "prefix-code":
                prefix[i, pad:] = prefix_mask(ids, self.fmt)
            real[i, pad:] = True
            positions[i, pad:] = torch.arange(len(prompt))
        dev = self.device
        rows = self.model.rows(tokens.to(dev), modality.to(dev))
        return rows, positions.to(dev), real.to(dev), prefix.to(dev)

    def _prefill_mask(self, real: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """``[b, 1, P, P]`` bool, True = masked: causal over real keys, the prefix both ways, pads see themselves.

        Attention: causal over real tokens; pad keys are never visible.  Under ``prefix-code`` the prompt's
        prefix (:func:`~megatron_t2c.mrpt.objectives.prefix_mask`: its start through ``[python]``) attends to
        itself both ways, computed per prompt on the *unpadded* tokens (:meth:`_prompt_tensors`) and placed
        after the padding (the paper's release ignored left padding here).  Pad query rows see only
        themselves (no NaN reaches the cache).
        """
        length = real.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=real.device).tril()
        allowed = (causal | (prefix[:, :, None] & prefix[:, None, :])) & real[:, None, :]
        allowed |= torch.eye(length, dtype=torch.bool, device=real.device)
        return (~allowed).unsqueeze(1)

    def _new_context(self, batch: int, slots: int):
        """megatron's static inference context with K/V buffers allocated here (model device and dtype).

        KV cache: megatron-core's own static-batching machinery, a
        ``megatron.core.inference.contexts.StaticInferenceContext`` passed as ``inference_context``.
        megatron's ``Attention`` writes each step's K/V into the context's buffers and hands the core
        attention the keys of all slots so far; we pass an explicit boolean mask each step (prefill
        ``[b, 1, P, P]``, decode ``[b, 1, 1, P+t]``), which the model's core attention
        (:mod:`megatron_t2c.models.attention`) applies as in training.  The buffers are allocated here, on the
        model's device and dtype (megatron's allocator would use ``torch.cuda.current_device()``), and rows
        of finished sequences are dropped from them (:meth:`_generate_batch`).
        """
        from megatron.core.inference.contexts import StaticInferenceContext

        ctx = StaticInferenceContext(batch, slots)
        for layer in self.model.decoder.layers:
            attn = layer.self_attention
            shape = (slots, batch, attn.num_query_groups_per_partition)
            ctx.key_value_memory_dict[attn.layer_number] = (
                torch.empty(*shape, attn.key_hidden_size, device=self.device, dtype=self.dtype),
                torch.empty(*shape, attn.val_hidden_size, device=self.device, dtype=self.dtype))
        return ctx

    def _forward(self, rows, positions, masked, ctx) -> torch.Tensor:
        """Logits ``[b, V]`` (float32, gathered over TP, padded vocabulary cut) of each row's last position.

        Output space: a prompt ends inside code (after ``[python]`` or in the signature/body that follows
        it), so the segment after every position that predicts a generated token is ``CODE``
        (:func:`~megatron_t2c.mrpt.modality.segment_ids`, as ``objectives.build_batch`` sets
        ``label_modality``): the logits are scored with the code-space rows.  The opening markers and the
        unused control pieces (``<pad> <unk> <s> </s> [descr] [python] [sos] [MASK]``) are never generated
        (``suppress_markers``): training never has them as a label inside code, and one would switch
        modality mid-sample.  Vocab-parallel logits are gathered, so every TP rank holds the same
        ``[b, V]`` logits.
        """
        logits = self.model(rows, positions, masked, inference_context=ctx, runtime_gather_output=True,
                            label_modality=CODE)
        logits = logits[:, -1, :self.vocab_size].float()
        if self.suppress_markers:
            logits[:, list(SUPPRESSED_IDS)] = float("-inf")
        return logits

    def _agree(self, tokens: torch.Tensor) -> torch.Tensor:
        """Under TP: every rank takes the first TP rank's tokens (they are equal already; a guard).

        The chosen tokens are broadcast from the first TP rank: a guard against any divergence.
        """
        if self.tp_size > 1:
            src = torch.distributed.get_global_rank(self.tp_group, 0)
            torch.distributed.broadcast(tokens, src=src, group=self.tp_group)
        return tokens

    def _generate_batch(self, prompts: list[list[int]], keys: list[int], sampling: SamplingConfig,
                        return_logits: bool, bar) -> list[GenerationResult]:
        """Prefill then decode one batch with a KV cache; rows of finished sequences are dropped from the
        cache and the batch as they end (the batch shrinks as sequences end)."""
        b = len(prompts)
        lengths = torch.tensor([len(p) for p in prompts])
        length = int(lengths.max())
        budget = [self.budget(n, sampling) for n in lengths.tolist()]
        slots = length + max(budget)
        rows, positions, real, prefix = self._prompt_tensors(prompts)
        ctx = self._new_context(b, slots)
        logits = self._forward(rows, positions, self._prefill_mask(real, prefix), ctx)
        ctx.sequence_len_offset = length
        ctx.enable_decode_mode()
        self.stats["prompt_tokens"] += int(lengths.sum())
        self.stats["sequences"] += b

        out: list[list[int]] = [[] for _ in range(b)]
        step_logits: list[list[torch.Tensor]] = [[] for _ in range(b)]
        stops: list[Optional[str]] = [None] * b
        active = list(range(b))  # original indices of the cache's rows
        key_t = torch.tensor(keys, dtype=torch.long, device=self.device)
        next_pos = lengths.to(self.device).clone()
        valid = real  # [rows, slots so far]: which cache slots hold real tokens
        step = 0
        while True:
            steps = torch.full((len(active),), step, dtype=torch.long, device=self.device)
            if self.logits_hook is not None:
                logits = self.logits_hook(logits, key_t, step)
            chosen = self._agree(sample_tokens(logits, sampling, key_t, steps))
            chosen_list = chosen.tolist()
            keep = []
            for row, (i, token) in enumerate(zip(active, chosen_list)):
                if return_logits:
                    step_logits[i].append(logits[row].cpu())
                if token == st.EOC_ID:
                    stops[i] = "eoc"
                    continue
                out[i].append(token)
                if len(out[i]) >= budget[i]:
                    stops[i] = "length"
                    continue
                keep.append(row)
            produced = len(active)
            self.stats["tokens"] += produced
            if bar is not None:
                bar.update(produced)
            if not keep:
                break
            if len(keep) < len(active):  # drop finished rows from the cache and the batch
                idx = torch.tensor(keep, device=self.device)
                for layer, (k, v) in list(ctx.key_value_memory_dict.items()):
                    ctx.key_value_memory_dict[layer] = (k.index_select(1, idx), v.index_select(1, idx))
                active = [active[r] for r in keep]
                chosen, key_t, next_pos, valid = chosen[idx], key_t[idx], next_pos[idx], valid[idx]
                ctx.max_batch_size = len(active)
            valid = torch.cat([valid, torch.ones(len(active), 1, dtype=torch.bool, device=self.device)], dim=1)
            rows_t = self.model.rows(chosen[:, None], CODE)
            masked = (~valid)[:, None, None, :]
            logits = self._forward(rows_t, next_pos[:, None], masked, ctx)
            ctx.sequence_len_offset += 1
            next_pos = next_pos + 1
            step += 1
        if bar is not None:  # the bar's total assumed each sequence's whole budget: take off what went unused
            counted = [len(o) + (s == "eoc") for o, s in zip(out, stops)]
            bar.total = max(bar.n, bar.total - sum(b - c for b, c in zip(budget, counted)))
            bar.set_postfix_str(f"{self.stats['sequences']} sequences", refresh=True)
        return [GenerationResult(tokens, stop, torch.stack(lg) if return_logits else None)
                for tokens, stop, lg in zip(out, stops, step_logits)]


# ---------------------------------------------------------------------------------------------------
# Reference: one full forward pass (what the cache must reproduce)
# ---------------------------------------------------------------------------------------------------

def full_forward_logits(model, tokens: Sequence[int], fmt: str, objective: str) -> torch.Tensor:
    """``[len, V]`` float32 logits of one unpadded sequence in a single training-style forward pass: rows by
    :func:`modality_ids`, positions and the (prefix) mask of :mod:`megatron_t2c.mrpt.objectives`, output space by
    :func:`segment_ids`.  The reference that the KV-cached engine is tested against."""
    from megatron_t2c.mrpt.modality import segment_ids
    from megatron_t2c.mrpt.objectives import attention_mask, position_ids

    ids = torch.tensor([list(tokens)], dtype=torch.long)
    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model(model.rows(ids, modality_ids(ids, fmt)).to(device), position_ids(ids).to(device),
                       attention_mask(ids, fmt, objective).to(device), runtime_gather_output=True,
                       label_modality=segment_ids(ids, fmt).to(device))
    return logits[0, :, :model.layout.vocab_size].float()
