"""Log-sum-exp / cross-entropy of a vocabulary projection without keeping ``[N, |V|]`` logits.

``chunked_linear_logsumexp(x, weight, bias, targets)`` returns ``logsumexp(x W^T + b)`` and the
logit at ``targets`` per row; their difference is ``F.cross_entropy(x W^T + b, targets)``. It never
holds more than ``chunk_size`` rows of logits: the forward pass keeps only the per-row log-sum-exp
``[N]``; the backward pass recomputes each chunk's logits to form the softmax and accumulates the
gradients of ``x``, ``weight`` and ``bias`` chunk by chunk (a custom ``autograd.Function``, so
neither pass stores all chunks). At ``|V| = 128k`` a 512-token sequence has 65M logits (256 MB in
fp32, and as much again for their gradient); this keeps ``chunk_size * |V|`` at a time.

The price is one extra ``[N, k] x [k, V]`` matmul in the backward pass (the logits are recomputed).

It serves the CQL term of the Q heads (whose picked logit is also ``Q(s, a)`` for the Bellman
terms, so one weight gradient covers both) and the behaviour-cloning term of the LM head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _autocast_state(device_type: str):
    try:
        return torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)
    except (TypeError, RuntimeError):
        return False, None


class _ChunkedLinearLogSumExp(torch.autograd.Function):
    """``(logsumexp_v(x W^T + b), (x W^T + b)[target])`` per row, chunked over rows.

    Returning the picked logit too lets one backward pass produce a single ``[V, k]`` weight gradient
    for both the Bellman term (which uses ``Q(s, a)``) and the CQL term (which uses the log-sum-exp).
    The picked logit is computed from the gathered weight rows in fp32 even under autocast.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, targets, chunk_size):
        device_type = x.device.type
        enabled, dtype = _autocast_state(device_type)
        ctx.autocast = (device_type, enabled, dtype)
        n = x.shape[0]
        lse = torch.empty(n, dtype=torch.float32, device=x.device)
        xw = x if enabled else x.to(weight.dtype)
        for start in range(0, n, chunk_size):
            stop = min(start + chunk_size, n)
            logits = _logits(xw[start:stop], weight, bias)
            lse[start:stop] = torch.logsumexp(logits.float(), dim=-1)
            del logits
        with torch.autocast(device_type=device_type, enabled=False):
            picked = (x.float() * weight[targets].float()).sum(-1)
            if bias is not None:
                picked = picked + bias[targets].float()
        ctx.save_for_backward(x, weight, bias if bias is not None else torch.empty(0), targets, lse)
        ctx.has_bias = bias is not None
        ctx.chunk_size = chunk_size
        return lse, picked

    @staticmethod
    def backward(ctx, grad_lse, grad_picked):
        x, weight, bias, targets, lse = ctx.saved_tensors
        bias = bias if ctx.has_bias else None
        device_type, enabled, dtype = ctx.autocast
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = ctx.has_bias and ctx.needs_input_grad[2]
        n = x.shape[0]
        if grad_lse is None:
            grad_lse = torch.zeros(n, dtype=torch.float32, device=x.device)
        if grad_picked is None:
            grad_picked = torch.zeros(n, dtype=torch.float32, device=x.device)
        grad_lse, grad_picked = grad_lse.float(), grad_picked.float()
        x32 = x.float()
        # the picked-logit part: d picked / d W[target] = x, d picked / d x = W[target]
        grad_x = (grad_picked[:, None] * weight[targets].float()) if need_x else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        if need_w:
            grad_w.index_add_(0, targets, grad_picked[:, None] * x32)
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if need_b else None
        if need_b:
            grad_b.index_add_(0, targets, grad_picked)
        with torch.autocast(device_type=device_type, dtype=dtype or torch.bfloat16, enabled=bool(enabled)):
            for start in range(0, n, ctx.chunk_size):
                stop = min(start + ctx.chunk_size, n)
                xc = x[start:stop]
                # d lse / d logits = softmax, recomputed from the logits of this chunk only
                g = _logits(xc, weight, bias).float()
                g.sub_(lse[start:stop, None]).exp_().mul_(grad_lse[start:stop, None])
                if enabled:  # autocast picks the matmul dtype
                    gm, wm, xm = g, weight, xc
                else:
                    gm, wm, xm = g.to(weight.dtype), weight, xc.to(weight.dtype)
                if need_x:
                    grad_x[start:stop] += (gm @ wm).float()
                if need_w:
                    grad_w += (gm.transpose(0, 1) @ xm).float()
                if need_b:
                    grad_b += g.sum(0)
                del g, gm, xm
        return (
            grad_x.to(x.dtype) if need_x else None,
            grad_w.to(weight.dtype) if need_w else None,
            grad_b.to(bias.dtype) if need_b else None,
            None,
            None,
        )


def _logits(x, weight, bias):
    return F.linear(x, weight, bias)


def chunked_linear_logsumexp(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    chunk_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logsumexp [N], picked logit [N])`` of ``x [N, k] @ weight[V, k].T + bias`` at ``targets [N]``.

    Cross-entropy is ``lse - picked``; ``picked`` is also ``Q(s, a)`` when ``weight`` is a Q head.
    """
    if x.dim() != 2:
        raise ValueError(f"x must be [N, k], got shape {tuple(x.shape)}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if x.shape[0] == 0:
        zero = x.new_zeros(0, dtype=torch.float32) + 0.0 * weight.sum()
        return zero, zero
    return _ChunkedLinearLogSumExp.apply(x, weight, bias, targets, int(chunk_size))


def chunked_linear_cross_entropy(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    chunk_size: int = 256,
) -> torch.Tensor:
    """Per-row cross-entropy ``[N]`` of ``x [N, k] @ weight[V, k].T + bias`` on ``targets [N]``."""
    lse, picked = chunked_linear_logsumexp(x, weight, bias, targets, chunk_size)
    return lse - picked


def naive_linear_logsumexp(x, weight, bias, targets, chunk_size=None):
    """Reference for :func:`chunked_linear_logsumexp` that materialises all ``[N, |V|]`` logits."""
    logits = F.linear(x, weight, bias).float()
    return torch.logsumexp(logits, -1), logits.gather(-1, targets[:, None]).squeeze(-1)


def naive_linear_cross_entropy(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Reference implementation that materialises all ``[N, |V|]`` logits (tests and benchmarks)."""
    logits = F.linear(x, weight, bias).float()
    return F.cross_entropy(logits, targets, reduction="none")
