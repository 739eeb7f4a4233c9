"""The validation-alignment signal of BOOST's default φ step (``phi_signal="val_alignment"``).

For each training trajectory ``i`` of a batch, the signal is the cosine between its loss gradient and
the validation loss gradient, both taken with respect to θ's output layers (value heads, and the LM
head when behaviour cloning is on), at the current θ:

    s_i = cos(∇ l_i(θ), ∇ L_val(θ))

A θ step of size η on trajectory ``i`` alone changes the validation loss by ``-η ∇L_val·∇l_i``
(first order), so ``s_i > 0`` means "training on ``i`` lowers the validation loss". This is the
infinitesimal version of Algorithm 1's ``l_i(θ) - l_i(ψ)`` when θ and ψ differ only by the
validation term, without the confound that θ has also had more training steps than ψ (which makes
that gap measure extra training rather than agreement with validation data).

The backbone's hidden states are computed once without gradient: the per-trajectory gradients touch
only the output layers, so ``B`` small backward passes cost far less than one backbone backward.
Each trajectory's loss is computed on its own row (losses are per-trajectory means, so this is
exact): the behaviour-cloning logits of one row at a time, not ``[B, T, |V|]`` at once.

``phi_signal="adapter_alignment"`` takes the same cosine over θ's LoRA adapter weights instead, with
both gradients centred on the φ batch's mean gradient (:func:`adapter_alignment`). The output layers
see a trajectory through its action tokens only, so two episodes with the same actions and
rearranged observations give them nearly the same gradient; the adapter weights sit in the
attention layers, where an action's dependence on the observation before it is learnt. Centring
removes the direction every trajectory of the batch shares (the template's tokens, the average
update), which otherwise dominates both vectors. It costs one backbone backward per trajectory.
"""

from __future__ import annotations

import torch
from torch import nn

from ..losses.offline_rl import OfflineRLLossConfig, per_trajectory_losses


class _DetachedLinear(nn.Module):
    """A stand-in for a (possibly frozen) linear layer whose weight is a fresh leaf we may differentiate."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.weight = layer.weight.detach().requires_grad_(True)
        bias = getattr(layer, "bias", None)
        self.bias = bias.detach().requires_grad_(True) if bias is not None else None


def _flat_grad(loss: torch.Tensor, parameters: list[torch.Tensor], retain_graph: bool) -> torch.Tensor:
    grads = torch.autograd.grad(loss, parameters, retain_graph=retain_graph, allow_unused=True)
    return torch.cat(
        [(g if g is not None else torch.zeros_like(p)).reshape(-1).float() for g, p in zip(grads, parameters)]
    )


def validation_alignment(
    policy,
    batch: dict[str, torch.Tensor],
    val_batch: dict[str, torch.Tensor],
    loss_config: OfflineRLLossConfig,
) -> torch.Tensor:
    """``s [B]``: cosine of each trajectory's output-layer loss gradient with the validation one (no graph)."""
    heads = policy.heads
    lm_head = _DetachedLinear(policy.lm_head) if loss_config.bc_weight > 0 else None
    parameters = [p for p in heads.parameters() if p.requires_grad]
    if lm_head is not None:
        parameters += [lm_head.weight] + ([lm_head.bias] if lm_head.bias is not None else [])
    if not parameters:
        raise ValueError("phi_signal='val_alignment' needs trainable output layers (θ's value heads have none)")
    with torch.no_grad():
        hidden = policy.hidden_states(batch["input_ids"], batch.get("attention_mask")).detach().float()
        val_hidden = policy.hidden_states(val_batch["input_ids"], val_batch.get("attention_mask")).detach().float()
    with torch.enable_grad():
        val_losses, _ = per_trajectory_losses(val_hidden, heads, val_batch, loss_config, lm_head=lm_head)
        val_grad = _flat_grad(val_losses.mean(), parameters, retain_graph=False)
        scores = []
        for i in range(hidden.shape[0]):
            row = {key: value[i : i + 1] for key, value in batch.items()}
            (loss,), _ = per_trajectory_losses(hidden[i : i + 1], heads, row, loss_config, lm_head=lm_head)
            grad = _flat_grad(loss, parameters, retain_graph=False)
            scores.append(torch.nn.functional.cosine_similarity(grad, val_grad, dim=0, eps=1e-12))
    return torch.stack(scores).detach()


def adapter_parameters(policy) -> list[torch.Tensor]:
    """θ's trainable LoRA weights: the active adapter's ``lora_`` tensors (a ψ adapter's are left out)."""
    base = policy.base
    active = getattr(base, "active_adapter", None)
    parameters = [
        p
        for name, p in base.named_parameters()
        if p.requires_grad and "lora_" in name and (active is None or f".{active}." in name)
    ]
    if not parameters:
        raise ValueError(
            "phi_signal='adapter_alignment' needs a LoRA adapter on the policy (pass peft_config); "
            "with full fine-tuning use phi_signal='val_alignment'"
        )
    return parameters


def adapter_alignment(
    policy,
    batch: dict[str, torch.Tensor],
    val_batch: dict[str, torch.Tensor],
    loss_config: OfflineRLLossConfig,
) -> torch.Tensor:
    """``s [B]``: cosine of each trajectory's loss gradient over θ's adapter with the validation one,
    both centred on the batch's mean trajectory gradient (no graph). One backward per row keeps memory flat."""
    parameters = adapter_parameters(policy)
    lm_head = policy.lm_head if loss_config.bc_weight > 0 else None

    def gradient(rows: dict[str, torch.Tensor], i: int) -> torch.Tensor:
        row = {key: value[i : i + 1] for key, value in rows.items()}
        hidden = policy.hidden_states(row["input_ids"], row.get("attention_mask")).float()
        (loss,), _ = per_trajectory_losses(hidden, policy.heads, row, loss_config, lm_head=lm_head)
        return _flat_grad(loss, parameters, retain_graph=False)

    with torch.enable_grad():
        size = val_batch["input_ids"].shape[0]
        val_grad = sum(gradient(val_batch, i) for i in range(size)) / size
        grads = torch.stack([gradient(batch, i) for i in range(batch["input_ids"].shape[0])])
    mean = grads.mean(dim=0)
    return torch.nn.functional.cosine_similarity(grads - mean, (val_grad - mean)[None], dim=1, eps=1e-12).detach()


#: φ signals that score each trajectory by its gradient's agreement with the validation gradient
ALIGNMENT_SIGNALS = {"val_alignment": validation_alignment, "adapter_alignment": adapter_alignment}


def standardize(scores: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``(s - mean) / std`` over the batch (zeros when the batch has one row or no spread)."""
    if scores.numel() < 2:
        return torch.zeros_like(scores)
    centred = scores - scores.mean()
    return centred / (centred.pow(2).mean().sqrt() + eps)


def alignment_objective(weights: torch.Tensor, scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """φ's loss ``-Σ_i w_i ŝ_i + τ·KL(w ‖ uniform)``, minimised at ``w_i ∝ exp(ŝ_i / τ)``.

    ``ŝ`` is the batch-standardised signal: its scale does not depend on the loss's scale or on how
    far training has gone. The KL term keeps the weights from collapsing onto a few trajectories
    (n_eff cannot fall below what ``exp(ŝ/τ)`` gives).
    """
    size = weights.numel()
    kl = (weights * torch.log(weights * size + 1e-30)).sum()
    return -(weights * standardize(scores).to(weights.dtype)).sum() + temperature * kl


__all__ = [
    "ALIGNMENT_SIGNALS",
    "adapter_alignment",
    "adapter_parameters",
    "alignment_objective",
    "standardize",
    "validation_alignment",
]
