"""The tied output layer and its cross-entropy fused and chunked: the logits are never held whole.

A speed-up of :meth:`megatron_t2c.models.gpt.T2CGPTModel._loss` (issue 8) for tensor-parallel size 1, chosen by
``ModelConfig(chunked_head=True)`` (``--chunked-head``).
The plain path is ``_TiedOutput`` (logits ``[n, Vp]`` in the compute dtype) then megatron's
``vocab_parallel_cross_entropy``, which casts them to fp32 and keeps the fp32 softmax for the backward pass:
for a 16 x 1024 micro-batch and a 32k vocabulary that is 1 GiB of bf16 logits plus 2 GiB of fp32 copies, and
several full passes over them.  :func:`tied_cross_entropy` computes the same per-token losses ``chunk`` rows
at a time -- logits in the compute dtype, softmax statistics in fp32 as megatron does -- keeps only the rows'
log-sum-exp, and recomputes each chunk's logits in the backward pass (one extra head matmul, a third of the
head's training FLOPs).

Rows ``[:n_code]`` are scored with the code-space rows ``weight[code_index]``, the others with the base rows
``weight[:vocab]``, exactly as ``_TiedOutput``; columns from ``vocab`` on (vocabulary padding, ``-inf`` in the
plain path) are never computed.  No host synchronisation; shapes depend only on ``n`` and ``n_code``.
"""

from __future__ import annotations

import torch

__all__ = ["tied_cross_entropy"]


def _logits(x: torch.Tensor, start: int, n_code: int, code_weight, base_weight) -> torch.Tensor:
    """Logits of the rows ``x`` (rows ``start...`` of the whole): code-space rows first, then base-space."""
    split = min(max(n_code - start, 0), x.shape[0])
    parts = []
    if split:
        parts.append(x[:split] @ code_weight.t())
    if split < x.shape[0]:
        parts.append(x[split:] @ base_weight.t())
    return parts[0] if len(parts) == 1 else torch.cat(parts)


class _TiedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, code_index, n_code, vocab, targets, chunk):
        code_weight = weight.index_select(0, code_index[:vocab]) if n_code else None
        base_weight = weight[:vocab]
        n = x.shape[0]
        losses = torch.empty(n, dtype=torch.float32, device=x.device)
        lse = torch.empty(n, dtype=torch.float32, device=x.device)
        for start in range(0, n, chunk):
            end = min(start + chunk, n)
            logits = _logits(x[start:end], start, n_code, code_weight, base_weight).float()
            lse[start:end] = torch.logsumexp(logits, dim=-1)
            losses[start:end] = lse[start:end] - logits.gather(1, targets[start:end, None]).squeeze(1)
        ctx.save_for_backward(x, weight, code_index, targets, lse)
        ctx.n_code, ctx.vocab, ctx.chunk = n_code, vocab, chunk
        return losses

    @staticmethod
    def backward(ctx, grad_losses):
        x, weight, code_index, targets, lse = ctx.saved_tensors
        n_code, vocab, chunk, n = ctx.n_code, ctx.vocab, ctx.chunk, x.shape[0]
        code_weight = weight.index_select(0, code_index[:vocab]) if n_code else None
        base_weight = weight[:vocab]
        grad_x = torch.empty_like(x)
        grad_code = torch.zeros(vocab, x.shape[1], dtype=torch.float32, device=x.device) if n_code else None
        grad_base = torch.zeros(vocab, x.shape[1], dtype=torch.float32, device=x.device)
        for start in range(0, n, chunk):
            end = min(start + chunk, n)
            xs = x[start:end]
            logits = _logits(xs, start, n_code, code_weight, base_weight).float()
            grad = torch.exp(logits - lse[start:end, None])  # softmax
            grad[torch.arange(end - start, device=x.device), targets[start:end]] -= 1.0
            grad = (grad * grad_losses[start:end, None].float()).to(x.dtype)
            split = min(max(n_code - start, 0), end - start)
            if split:
                grad_x[start:start + split] = grad[:split] @ code_weight
                grad_code += (grad[:split].t() @ xs[:split]).float()
            if split < end - start:
                grad_x[start + split:end] = grad[split:] @ base_weight
                grad_base += (grad[split:].t() @ xs[split:]).float()
        grad_weight = torch.zeros_like(weight, dtype=torch.float32)
        grad_weight[:vocab] = grad_base
        if n_code:
            grad_weight.index_add_(0, code_index[:vocab], grad_code)
        return grad_x, grad_weight.to(weight.dtype), None, None, None, None, None


def tied_cross_entropy(x: torch.Tensor, weight: torch.Tensor, code_index: torch.Tensor, n_code: int, vocab: int,
                       targets: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Per-row fp32 cross-entropy losses ``[n]`` of ``x [n, h]`` against the tied table ``weight``.

    Args:
        x: hidden states of the rows with loss, code-space rows first.
        weight: the embedding table (this rank's block, ``[S + C, h]``).
        code_index: ``[>= vocab]`` the code-space row of each base column (``T2CGPTModel.code_output_index``).
        n_code: how many leading rows of ``x`` score in the code space.
        vocab: the real columns (the first padding column, or the shard size without padding).
        targets: ``[n]`` base-vocabulary ids.
        chunk: rows per chunk (the largest logits block held: ``chunk x vocab``).
    """
    if chunk < 1:
        raise ValueError("chunk must be positive")
    return _TiedCrossEntropy.apply(x, weight, code_index, int(n_code), int(vocab), targets.long(), int(chunk))
