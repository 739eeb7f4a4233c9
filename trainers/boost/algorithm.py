r"""BOOST's Algorithm 1, one named function per phase, top to bottom.

Three parameter groups, one updated at a time (BOOST section 3.3): θ, the primary policy (the
backbone or its LoRA adapter, the LM head's behaviour cloning and θ's value heads); ψ, the auxiliary
policy (a second set of value heads on the same backbone, appendix G.3, or a second LoRA adapter
plus heads); φ, the reweighting head, whose softmax over a minibatch gives the weights w̃_i of the
per-trajectory offline RL losses l_i. Each ``Trainer`` optimizer step is one inner step, and the
step number alone fixes the phase (:func:`phase_at`), so resuming anywhere continues exactly::

    phi_warmup times  phi_step      (optional, not in the paper: φ learns before θ's first step)
    for each outer iteration (L = K_ψ + K_θ + K_φ optimizer steps):
        K_ψ times   psi_step:       ψ ← ψ − η ∇_ψ Σ_i w̃_i l_i(ψ)                          (w̃ fixed)
        once        copy_psi_to_theta: θ ← ψ
        K_θ times   theta_step:     θ ← θ − η ∇_θ [L_val(θ) + α Σ_i w̃_i l_i(θ)]
        K_φ times   phi_step:       φ ← φ − η_φ ∇_φ (φ objective of ``phi_signal``)

The φ objective, ``phi_signal="paper"`` (Algorithm 1 as written):
``α Σ_i w̃_i(φ) (l_i(θ) − l_i(ψ))`` with the losses computed without gradient (L_val(θ) does not
depend on φ). ``phi_signal="val_alignment"`` (the default): ``−Σ_i w̃_i ŝ_i + τ KL(w̃ ‖ uniform)``
where ŝ is the batch-standardised cosine between each trajectory's loss gradient and the validation
loss gradient (:mod:`trainers.boost.alignment`); docs/boost.md shows why the default departs from
the paper, with the numbers.

Every micro-step is one call of the (possibly DDP / DeepSpeed-wrapped) model whose forward runs
the whole phase (:class:`BilevelPolicy`), so the wrapper sees exactly the graph the backward walks.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch

from ..losses.offline_rl import OfflineRLLossConfig, per_trajectory_losses
from ..modeling.policy import ValueHeadPolicy, is_peft_model
from .alignment import ALIGNMENT_SIGNALS, alignment_objective

Phase = Literal["psi", "theta", "phi"]
PSI_ADAPTER = "psi"
PHASE_CODES = {"psi": 0.0, "theta": 1.0, "phi": 2.0}


class PhasePosition(NamedTuple):
    """Where optimizer step ``step`` falls in Algorithm 1's schedule (a tuple: ``phase, outer, inner = ...``)."""

    phase: Phase
    outer: int  # outer iteration
    step_in_phase: int


def phase_at(step: int, k_psi: int, k_theta: int, k_phi: int, phi_warmup: int = 0) -> PhasePosition:
    """``outer, r = divmod(step - warmup, K_ψ + K_θ + K_φ)``: ψ while r < K_ψ, then θ, then φ.

    The first ``phi_warmup`` steps are φ steps on the initial policy, before outer iteration 0 (they
    count as its φ phase); Algorithm 1 has none.
    """
    if step < phi_warmup:
        return PhasePosition("phi", 0, step)
    outer, r = divmod(step - phi_warmup, k_psi + k_theta + k_phi)
    if r < k_psi:
        return PhasePosition("psi", outer, r)
    if r < k_psi + k_theta:
        return PhasePosition("theta", outer, r - k_psi)
    return PhasePosition("phi", outer, r - k_psi - k_theta)


@dataclass(frozen=True)
class PhaseSpec:
    """What one call of :class:`BilevelPolicy` computes.

    ``val``: a validation batch whose losses θ's forward also returns (the single-pass θ step);
    ``adapters``: ``(θ adapter, ψ adapter)`` names in ``separate_adapters`` mode;
    ``anchor``: the φ pass keeps ψ's graph and returns ``0 x`` its losses (DeepSpeed needs one
    gradient of the engine's parameters in every backward).
    """

    phase: Phase
    loss_config: OfflineRLLossConfig
    no_bc: OfflineRLLossConfig  # the same loss without behaviour cloning (ψ's heads have no LM head)
    val: dict[str, torch.Tensor] | None = None
    adapters: tuple[str, str] | None = None
    anchor: bool = False


@dataclass
class PhaseResult:
    """One micro-step of one phase: the loss to back-propagate and what to log."""

    loss: torch.Tensor
    losses: torch.Tensor  # [B] detached per-trajectory values (losses, or φ's per-trajectory signal)
    weights: torch.Tensor  # [B] the batch's weights
    loss_metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    logs: dict[str, float] = field(default_factory=dict)


class BilevelPolicy(ValueHeadPolicy):
    """A :class:`ValueHeadPolicy` with ψ's heads in ``psi_heads`` whose forward can run a whole phase.

    ``forward(**batch, bilevel=spec)`` returns the phase's per-trajectory losses:

    * ``psi``: ψ's losses; with a shared backbone the backbone runs without gradient, so only the ψ
      heads are in the graph;
    * ``theta``: θ's losses and, when ``spec.val`` is given, ``val_losses`` on that batch;
    * ``phi``: θ's and ψ's losses (``losses``, ``psi_losses``), meant to run under ``no_grad``.

    Without ``bilevel`` it is the plain policy forward. θ's heads are ``heads`` (alias ``theta_heads``),
    ψ's ``psi_heads`` (``aux_heads`` is its deprecated old name).
    """

    @property
    def theta_heads(self):
        """θ's value heads (the same module as ``heads``, which the saved policy and generation use)."""
        return self.heads

    @property
    def aux_heads(self):
        """Deprecated name of :attr:`psi_heads`."""
        import warnings

        warnings.warn("BilevelPolicy.aux_heads is deprecated; use psi_heads", FutureWarning, stacklevel=2)
        return self.psi_heads

    def forward(self, input_ids, attention_mask=None, *, bilevel: PhaseSpec | None = None, **batch):
        if bilevel is None:
            return super().forward(input_ids, attention_mask, **batch)
        plain = super().forward
        if bilevel.phase == "psi":
            if bilevel.adapters is None:
                with torch.no_grad():
                    hidden = self.hidden_states(input_ids, attention_mask)
                losses, metrics = per_trajectory_losses(
                    hidden, self.psi_heads, _full(input_ids, attention_mask, batch), bilevel.no_bc
                )
                return {"losses": losses, "metrics": metrics}
            # ψ's adapter was made active by the trainer (PEFT lets only the active adapter train)
            return plain(input_ids, attention_mask, heads=self.psi_heads, loss_config=bilevel.loss_config, **batch)
        if bilevel.phase == "theta":
            output = plain(input_ids, attention_mask, loss_config=bilevel.loss_config, **batch)
            if bilevel.val is not None:
                output["val_losses"] = plain(loss_config=bilevel.loss_config, **bilevel.val)["losses"]
            return output
        if bilevel.phase != "phi":
            raise ValueError(f"unknown bilevel phase {bilevel.phase!r}")
        psi_grad = torch.enable_grad() if bilevel.anchor else torch.no_grad()
        if bilevel.adapters is None:
            with torch.no_grad():
                hidden = self.hidden_states(input_ids, attention_mask)
                full = _full(input_ids, attention_mask, batch)
                # the behaviour-cloning term is the same for θ and ψ here (shared LM head): it cancels
                theta_losses, metrics = per_trajectory_losses(hidden, self.heads, full, bilevel.no_bc)
            with psi_grad:
                psi_losses, _ = per_trajectory_losses(hidden, self.psi_heads, full, bilevel.no_bc)
        else:
            theta_name, psi_name = bilevel.adapters
            with torch.no_grad():
                output = plain(input_ids, attention_mask, loss_config=bilevel.loss_config, **batch)
            theta_losses, metrics = output["losses"], output["metrics"]
            self.base.set_adapter(psi_name)
            try:
                with psi_grad:
                    psi_losses = plain(
                        input_ids, attention_mask, heads=self.psi_heads, loss_config=bilevel.loss_config, **batch
                    )["losses"]
            finally:
                self.base.set_adapter(theta_name)
        output = {"losses": theta_losses, "psi_losses": psi_losses.detach(), "metrics": metrics}
        if bilevel.anchor:
            output["anchor"] = 0.0 * psi_losses.sum()
        return output


def _full(input_ids, attention_mask, batch) -> dict[str, torch.Tensor]:
    full = {"input_ids": input_ids, **batch}
    if attention_mask is not None:
        full["attention_mask"] = attention_mask
    return full


# ---------------------------------------------------------------------------------------- the phases
def psi_step(model, batch: dict[str, torch.Tensor], weights: torch.Tensor, spec: PhaseSpec) -> PhaseResult:
    """ψ ← ψ − η ∇_ψ Σ_i w̃_i l_i(ψ), with the weights w̃ = softmax(φ(e_i)) held fixed."""
    output = model(**batch, bilevel=spec)
    loss = (weights * output["losses"]).sum()
    return PhaseResult(
        loss, output["losses"].detach(), weights, output["metrics"], {"psi_train_loss": float(loss.detach())}
    )


@torch.no_grad()
def copy_psi_to_theta(
    policy: BilevelPolicy,
    *,
    theta_adapter: str | None = None,
    deepspeed: bool = False,
    gathered: Callable = contextlib.nullcontext,
) -> None:
    """θ ← ψ: copy ψ's heads (ILQL targets included) and, with separate adapters, ψ's adapter into θ's.

    ``gathered(parameters, modifier_rank=0)`` gathers ZeRO-3 partitioned parameters for the copy.
    Under DeepSpeed (ZeRO-1/2/3) the optimizer also keeps fp32 master copies of the trainable weights,
    which it writes back after every step; θ's masters get ψ's values too, or the next θ step would
    undo the copy.
    """
    pairs = list(zip(policy.heads.parameters(), policy.psi_heads.parameters()))
    if theta_adapter is not None:
        parameters = dict(policy.base.named_parameters())
        pairs += [
            (parameter, parameters[name.replace(f".{theta_adapter}.", f".{PSI_ADAPTER}.")])
            for name, parameter in parameters.items()
            if f".{theta_adapter}." in name
        ]
    if deepspeed:
        from deepspeed.utils import safe_get_full_fp32_param, safe_set_full_fp32_param

        for target, source in pairs:
            if target.requires_grad and source.requires_grad:
                safe_set_full_fp32_param(target, safe_get_full_fp32_param(source))
    for target, source in pairs:
        with gathered([target, source], modifier_rank=0):
            target.copy_(source)
    for target, source in zip(policy.heads.buffers(), policy.psi_heads.buffers()):
        target.copy_(source)


def theta_step(
    model,
    batch: dict[str, torch.Tensor],
    weights: torch.Tensor,
    alpha: float,
    spec: PhaseSpec,
    val_loss: torch.Tensor | None = None,
) -> PhaseResult:
    """θ ← θ − η ∇_θ [L_val(θ) + α Σ_i w̃_i l_i(θ)], w̃ fixed.

    ``val_loss``: L_val(θ) when the caller already ran its forward and backward (the split backward
    of :meth:`BilevelReweightTrainer.training_step`); otherwise ``spec.val`` must hold the validation
    batch and both terms go into one forward and one backward.
    """
    output = model(**batch, bilevel=spec)
    train_loss = (weights * output["losses"]).sum()
    loss = alpha * train_loss
    if val_loss is None:
        val_loss = output["val_losses"].mean()
        loss = val_loss + loss
    logs = {"val_loss": float(val_loss.detach()), "theta_train_loss": float(train_loss.detach())}
    return PhaseResult(loss, output["losses"].detach(), weights, output["metrics"], logs)


def phi_step_paper(
    model, batch: dict[str, torch.Tensor], weights: torch.Tensor, alpha: float, spec: PhaseSpec
) -> PhaseResult:
    """Algorithm 1 as written: φ ← φ − η_φ ∇_φ α Σ_i w̃_i(φ) (l_i(θ) − l_i(ψ)), losses without gradient.

    ``weights`` carry φ's graph. With ``spec.anchor`` (DeepSpeed) the loss also carries 0 x ψ's
    losses, which gives ψ a zero gradient; the phase's optimizer mask keeps every policy weight as is.
    """
    with torch.no_grad() if not spec.anchor else contextlib.nullcontext():
        output = model(**batch, bilevel=spec)
    gap = (output["losses"] - output["psi_losses"]).detach().float()
    loss = alpha * (weights * gap).sum()
    logs = {"phi_objective": float(loss.detach()), "loss_gap_theta_minus_psi": float(gap.mean())}
    if spec.anchor:
        loss = loss + output["anchor"]
    return PhaseResult(loss, gap, weights, output["metrics"], logs)


def phi_step_val_alignment(
    model,
    policy: BilevelPolicy,
    batch: dict[str, torch.Tensor],
    val: dict[str, torch.Tensor],
    weights: torch.Tensor,
    temperature: float,
    spec: PhaseSpec,
    gathered: Callable = contextlib.nullcontext,
    signal: str = "val_alignment",
) -> PhaseResult:
    """The default φ step: φ ← φ − η_φ ∇_φ [−Σ_i w̃_i ŝ_i + τ KL(w̃ ‖ uniform)].

    ŝ_i: the batch-standardised cosine between ∇ l_i(θ) and ∇ L_val(θ) on θ's output layers (first
    order, the change of L_val that a step on trajectory i alone would make); on θ's LoRA adapter,
    centred on the batch's mean gradient, with ``signal="adapter_alignment"``. The optimum of the
    objective is w̃_i ∝ exp(ŝ_i / τ).
    """
    # ZeRO-3 partitions the output layers: gather them (read only) for the per-trajectory gradients
    output_layers = list(policy.heads.parameters()) + list(policy.lm_head.parameters())
    with gathered(output_layers):
        scores = ALIGNMENT_SIGNALS[signal](policy, batch, val, spec.loss_config)
    loss = alignment_objective(weights, scores, temperature)
    logs = {"phi_objective": float(loss.detach()), "val_alignment_mean": float(scores.mean())}
    if spec.anchor:
        loss = loss + model(**batch, bilevel=spec)["anchor"]
    return PhaseResult(loss, scores, weights, {}, logs)


def add_psi_adapter(policy: ValueHeadPolicy) -> None:
    """Add a ψ LoRA adapter that starts as a copy of θ's (``separate_adapters`` mode)."""
    base = policy.base
    if not is_peft_model(base):
        raise ValueError("aux_mode='separate_adapters' needs a PEFT model: pass peft_config (a LoRA config)")
    theta = base.active_adapter
    base.add_adapter(PSI_ADAPTER, copy.deepcopy(base.peft_config[theta]))
    with torch.no_grad():
        parameters = dict(base.named_parameters())
        for name, parameter in parameters.items():
            if f".{theta}." in name:
                parameters[name.replace(f".{theta}.", f".{PSI_ADAPTER}.")].copy_(parameter)
    base.set_adapter(theta)


__all__ = [
    "BilevelPolicy",
    "PSI_ADAPTER",
    "PhasePosition",
    "PhaseResult",
    "PhaseSpec",
    "add_psi_adapter",
    "copy_psi_to_theta",
    "phase_at",
    "phi_step_paper",
    "phi_step_val_alignment",
    "psi_step",
    "theta_step",
]
