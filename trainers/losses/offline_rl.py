"""MC-return and ILQL losses over the token-level MDP of a collated trajectory batch.

The MDP (batch keys of :class:`trainers.data.tokenization.TrajectoryCollator`)
-------------------------------------------------------------------------------
* **Actions** are the tokens with ``action_mask == 1`` (assistant content and its end-of-turn
  token). The action at position ``t`` is ``a = input_ids[t]``; its **state** is the final hidden
  state at ``t - 1`` (a causal LM's state before emitting token ``t``), so
  ``Q(s, a) = q_head(hidden[t - 1])[input_ids[t]]``. An action at position 0 has no state and is
  an error.
* **Rewards** ``token_rewards[t]`` sit on the last action token of each assistant turn.
* **Next state** of action ``t`` is the state of the next action token ``t'`` of the same row,
  ``hidden[t' - 1]``: inside a turn that is ``hidden[t]``; at the end of a turn it skips the
  environment's observation and the next turn's role header and lands right before the next
  assistant turn's first token, so the observation is part of ``s'``.
* **Terminal**: ``token_dones[t] == 1`` or no later action token in the row (e.g. a trajectory cut
  short by ``done=False``) -> no bootstrap.
* **Discount is per turn**: ``gamma`` applies when ``t'`` belongs to the next assistant turn, and is 1
  between tokens of the same turn. An utterance is one decision of the agent (BOOST section 2: an
  action is a complete utterance), so a 40-token answer is not discounted 40 times more than a
  4-token one. MC targets are accordingly ``G_k = sum_{j >= k} gamma^{j - k} R_j`` over turns
  ``k`` and every token of turn ``k`` regresses onto its turn's ``G_k``.

Losses per action token (then averaged over each trajectory's action tokens)
------------------------------------------------------------------------------
MC (:func:`mc_loss_terms`):     ``(Q(s,a) - G)^2 + cql_weight * CE(Q(s,.), a) + bc_weight * CE(LM(s,.), a)``

ILQL (:func:`ilql_loss_terms`): ``sum_i (Q_i(s,a) - y)^2`` with ``y = r + gamma_t * V(s').detach() * (1 - done)``,
``+ L_tau(min_i targetQ_i(s,a) - V(s))`` (expectile: ``|tau - 1[u < 0]| * u^2``),
``+ cql_weight * sum_i CE(Q_i(s,.), a) + bc_weight * CE(LM(s,.), a)``.

``CE`` over the vocabulary is computed by :func:`chunked_linear_cross_entropy` (never more than
``cql_chunk_size`` rows of ``|V|`` logits, forward and backward); Bellman terms gather the Q
head's weight row of the taken token instead of computing logits.

The reduction is per trajectory: :func:`per_trajectory_losses` picks the loss after the heads,
and returns ``losses [B]`` and metrics;
any weighting (uniform, a fixed ``weight`` column, BOOST's learned weights) is
:func:`weighted_loss`, a dot product with weights normalised to sum to 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch

from ..config_checks import check_fields
from .chunked import chunked_linear_logsumexp, naive_linear_logsumexp

LOSS_TYPES = ("mc", "ilql")
CQL_IMPLEMENTATIONS = ("chunked", "naive")
#: Ranges of the loss fields, shared with :class:`trainers.OfflineRLConfig` (see :mod:`trainers.config_checks`).
LOSS_FIELD_RANGES = {
    "gamma": "[0, 1]",
    "reward_scale": "(0, inf)",
    "tau": "(0, 1)",
    "cql_weight": "[0, inf)",
    "bc_weight": "[0, inf)",
    "cql_chunk_size": "[1, inf)",
}


@dataclass
class OfflineRLLossConfig:
    """The loss hyperparameters: the fields of :class:`trainers.OfflineRLConfig` with these names,
    documented there, with the same defaults and the same checks.

    Any object with these attributes (e.g. an ``OfflineRLConfig``) can be passed instead.
    """

    loss_type: str = field(default="mc", metadata={"choices": LOSS_TYPES})
    gamma: float = 0.99
    reward_scale: float = 1.0
    tau: float = 0.7
    cql_weight: float = 10.0
    bc_weight: float = 1.0
    cql_chunk_size: int = 256
    cql_implementation: str = field(default="chunked", metadata={"choices": CQL_IMPLEMENTATIONS})

    @classmethod
    def from_any(cls, config: Any) -> OfflineRLLossConfig:
        if isinstance(config, cls):
            return config
        if isinstance(config, dict):
            return cls(**{f.name: config[f.name] for f in fields(cls) if f.name in config})
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls) if hasattr(config, f.name)})

    def __post_init__(self):
        check_fields(self, LOSS_FIELD_RANGES)


@dataclass
class Transitions:
    """The action tokens of a batch, flattened in row-major order (``N`` of them)."""

    row: torch.Tensor  # [N] batch row of each action token
    position: torch.Tensor  # [N] position t of the action token (its state is hidden[t - 1])
    action: torch.Tensor  # [N] taken token id
    reward: torch.Tensor  # [N] float
    done: torch.Tensor  # [N] bool: terminal (no bootstrap)
    next_position: torch.Tensor  # [N] position t' of the next action token (valid where ~done)
    discount: torch.Tensor  # [N] gamma when t' starts the next turn, 1 inside a turn, 0 when done
    returns: torch.Tensor  # [N] discounted reward-to-go of the token's turn (MC target)
    counts: torch.Tensor  # [B] number of action tokens per row
    batch_size: int

    def states(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``[N, d]``: the state of each action token, the hidden state just before it."""
        return hidden_states[self.row, self.position - 1]


def build_transitions(batch: dict[str, torch.Tensor], gamma: float, reward_scale: float = 1.0) -> Transitions:
    """Flatten the action tokens of a collated batch into transitions (see the module docstring).

    Rewards are multiplied by ``reward_scale`` before the returns are computed.
    """
    for key in ("input_ids", "action_mask", "token_rewards", "token_dones", "turn_ids"):
        if key not in batch:
            raise KeyError(
                f"batch has no {key!r}: offline RL needs the columns of trainers.data.tokenization.TrajectoryCollator"
            )
    input_ids, action_mask = batch["input_ids"], batch["action_mask"].bool()
    if "attention_mask" in batch:
        action_mask = action_mask & batch["attention_mask"].bool()
    if action_mask[:, 0].any():
        bad = torch.nonzero(action_mask[:, 0]).flatten().tolist()
        raise ValueError(f"batch rows {bad}: an action token at position 0 has no state before it")
    batch_size = input_ids.shape[0]
    row, position = torch.nonzero(action_mask, as_tuple=True)  # row-major, so each row's actions are in order
    n = row.numel()
    device = input_ids.device
    counts = torch.bincount(row, minlength=batch_size)
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if empty:
        raise ValueError(f"batch rows {empty} have no action tokens (action_mask is all 0): nothing to learn from")
    action = input_ids[row, position]
    reward = batch["token_rewards"][row, position].float() * reward_scale
    has_next = torch.zeros(n, dtype=torch.bool, device=device)
    has_next[:-1] = row[1:] == row[:-1]
    next_position = torch.where(has_next, position.roll(-1), position)
    done = batch["token_dones"][row, position].bool() | ~has_next
    turn = batch["turn_ids"][row, position]
    next_turn = batch["turn_ids"][row, next_position]
    crosses = has_next & (next_turn != turn)
    one = torch.ones(n, device=device)
    discount = torch.where(crosses, one * gamma, one) * (~done).float()
    returns = _turn_returns(row, reward, discount, done)
    return Transitions(row, position, action, reward, done, next_position, discount, returns, counts, batch_size)


def _turn_returns(row, reward, discount, done) -> torch.Tensor:
    """``G_t = r_t + discount_t * G_{t+1}`` along each row (``discount`` is 0 at terminals).

    A reverse scan over the batch's action tokens on the host: ``N`` is at most ``B * T`` and the
    scan is a few milliseconds, while the exact recursion keeps any reward placement correct.
    """
    n = row.numel()
    rewards, discounts = reward.tolist(), discount.tolist()
    out = [0.0] * n
    acc = 0.0
    for k in range(n - 1, -1, -1):
        # discount is 0 on a row's last action token, so the scan never carries across rows
        acc = rewards[k] + discounts[k] * acc
        out[k] = acc
    return torch.tensor(out, dtype=torch.float32, device=row.device)


def expectile_loss(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """``|tau - 1[diff < 0]| * diff^2`` with ``diff = target - prediction``."""
    weight = torch.where(diff < 0, 1.0 - tau, tau)
    return weight * diff.pow(2)


def _vocab_lse(features, projection_weight, projection_bias, actions, config: OfflineRLLossConfig):
    """``(logsumexp over the vocabulary, logit of the taken token)`` per action token."""
    if config.cql_implementation == "naive":
        return naive_linear_logsumexp(features, projection_weight, projection_bias, actions)
    return chunked_linear_logsumexp(features, projection_weight, projection_bias, actions, config.cql_chunk_size)


def _reduce(per_token: torch.Tensor, transitions: Transitions) -> torch.Tensor:
    total = torch.zeros(transitions.batch_size, dtype=per_token.dtype, device=per_token.device)
    total = total.index_add(0, transitions.row, per_token)
    return total / transitions.counts.clamp(min=1).to(per_token.dtype)


def _q_values(states, heads, tr: Transitions, config: OfflineRLLossConfig):
    """``Q_i(s, a)`` of every Q head, and with CQL on, the log-sum-exp of each head's vocabulary logits.

    With CQL on, the chunked log-sum-exp also returns the taken token's logit (computed in fp32 from
    the gathered weight row), so one weight gradient serves both the Bellman and the CQL term.
    """
    qs, lses = [], []
    for i in range(heads.num_q_heads):
        if config.cql_weight > 0:
            projection = heads.q_projection(i)
            lse, q = _vocab_lse(heads.q_features(states, i), projection.weight, projection.bias, tr.action, config)
            lses.append(lse)
        else:
            with torch.autocast(device_type=states.device.type, enabled=False):
                q = heads.gather_q(states.float(), tr.action, i)
        qs.append(q.float())
    return qs, lses


def _add_regularisers(per_token, qs, lses, states, tr: Transitions, config: OfflineRLLossConfig, lm_head, metrics):
    """``per_token + cql_weight * sum_i CE(Q_i(s, .), a) + bc_weight * CE(LM(s, .), a)``."""
    if config.cql_weight > 0:
        cql = sum(lse - q for lse, q in zip(lses, qs))
        per_token = per_token + config.cql_weight * cql
        metrics["cql"] = cql.detach().mean()
    if config.bc_weight > 0:
        if lm_head is None:
            raise ValueError("bc_weight > 0 needs the LM head (pass lm_head=...), or set bc_weight=0")
        lse, picked = _vocab_lse(states, lm_head.weight, getattr(lm_head, "bias", None), tr.action, config)
        bc = lse - picked
        per_token = per_token + config.bc_weight * bc
        metrics["bc"] = bc.detach().mean()
    return per_token


def mc_loss_terms(
    hidden_states: torch.Tensor,
    heads,
    transitions: Transitions,
    config: OfflineRLLossConfig,
    *,
    lm_head: torch.nn.Module | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Monte Carlo return regression, one loss per action token ``t``: ``(per_token [N], metrics)``::

        loss(t) = (Q(s_t, a_t) - G_k)^2 + cql_weight * CE(Q(s_t, .), a_t) + bc_weight * CE(LM(s_t, .), a_t)
        G_k     = sum_{j >= k} gamma^(j - k) * R_j          (k: the assistant turn of token t)

    Every token of a turn regresses onto that turn's discounted reward-to-go
    (``transitions.returns``). ``CE(f(s, .), a)`` is the cross-entropy of the vocabulary logits
    ``f(s, .)`` on the taken token: the CQL term on the Q head's logits, behaviour cloning on the
    LM head's. ``heads`` has one Q head.
    """
    states = transitions.states(hidden_states)
    metrics: dict[str, torch.Tensor] = {}
    qs, lses = _q_values(states, heads, transitions, config)
    # regression in fp32 even under bf16 autocast: value targets need the precision
    with torch.autocast(device_type=hidden_states.device.type, enabled=False):
        td = qs[0] - transitions.returns
        per_token = td.pow(2)
        metrics["mc_return_mean"] = transitions.returns.mean()
        metrics["td_error"] = td.detach().abs().mean()
        metrics["q_loss"] = per_token.detach().mean()
        metrics["q_mean"] = torch.stack([q.detach() for q in qs]).mean()
    per_token = _add_regularisers(per_token, qs, lses, states, transitions, config, lm_head, metrics)
    return per_token, metrics


def ilql_loss_terms(
    hidden_states: torch.Tensor,
    heads,
    transitions: Transitions,
    config: OfflineRLLossConfig,
    *,
    lm_head: torch.nn.Module | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ILQL, one loss per action token ``t``: ``(per_token [N], metrics)``::

        loss(t) = sum_i (Q_i(s_t, a_t) - y_t)^2                          (TD, every Q head i)
                + L_tau(min_i targetQ_i(s_t, a_t) - V(s_t))               (expectile V loss)
                + cql_weight * sum_i CE(Q_i(s_t, .), a_t) + bc_weight * CE(LM(s_t, .), a_t)
        y_t      = r_t + gamma_t * V(s'_t)                  (V(s') detached; gamma_t = 0 when done)
        L_tau(u) = |tau - 1[u < 0]| * u^2

    ``gamma_t`` is ``gamma`` when the next action token starts the next assistant turn and 1 inside
    a turn. The target Q heads get no gradient here (Polyak averaging updates them after each
    optimizer step); the expectile loss (:func:`expectile_loss`) pulls ``V`` towards an upper
    expectile of their minimum. ``CE`` is as in :func:`mc_loss_terms`.
    """
    states = transitions.states(hidden_states)
    metrics: dict[str, torch.Tensor] = {}
    qs, lses = _q_values(states, heads, transitions, config)
    # Bellman terms in fp32 even under bf16 autocast: value targets need the precision, and these
    # are [N, d] products, not vocabulary-wide matmuls.
    with torch.autocast(device_type=hidden_states.device.type, enabled=False):
        states32 = states.float()
        v_s = heads.v_values(states32)
        next_states = hidden_states[transitions.row, transitions.next_position - 1].float()
        v_next = heads.v_values(next_states).detach()
        target = transitions.reward + transitions.discount * v_next  # discount already 0 at terminals
        td = torch.stack([q - target for q in qs])  # [n_q, N]
        q_loss = td.pow(2).sum(0)
        with torch.no_grad():
            target_q = (
                torch.stack(
                    [heads.gather_q(states32, transitions.action, i, target=True) for i in range(heads.num_q_heads)]
                )
                .min(0)
                .values
            )
        v_loss = expectile_loss(target_q - v_s, config.tau)
        per_token = q_loss + v_loss
        metrics["v_mean"] = v_s.detach().mean()
        metrics["target_q_mean"] = target_q.mean()
        metrics["v_loss"] = v_loss.detach().mean()
        metrics["td_error"] = td.detach().abs().mean()
        metrics["q_loss"] = q_loss.detach().mean()
        metrics["q_mean"] = torch.stack([q.detach() for q in qs]).mean()
    per_token = _add_regularisers(per_token, qs, lses, states, transitions, config, lm_head, metrics)
    return per_token, metrics


def per_trajectory_losses(
    hidden_states: torch.Tensor,
    heads,
    batch: dict[str, torch.Tensor],
    config: Any = None,
    *,
    lm_head: torch.nn.Module | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Offline RL losses of each trajectory of ``batch``: ``(losses [B], metrics)``.

    Builds the transitions, computes the per-token terms of :func:`mc_loss_terms` or
    :func:`ilql_loss_terms` (after the heads' loss type) and averages them over each trajectory's
    action tokens.

    Args:
        hidden_states: ``[B, T, d]`` final hidden states of the backbone (what the LM head reads).
        heads: a :class:`trainers.modeling.ValueHeads`; its ``loss_type`` must match ``config``'s.
        batch: a :class:`TrajectoryCollator` batch (``input_ids``, ``action_mask``, ``token_rewards``,
            ``token_dones``, ``turn_ids``; ``attention_mask`` optional).
        config: :class:`OfflineRLLossConfig`, an ``OfflineRLConfig``, a dict, or ``None`` (defaults
            with the heads' loss type).
        lm_head: the LM's output projection (``nn.Linear``-like, ``weight [|V|, d]``, optional
            ``bias``) for the behaviour-cloning term; required when ``bc_weight > 0``.

    Each entry of ``losses`` is the mean over that trajectory's action tokens and keeps its graph;
    ``metrics`` are detached scalars (means over all action tokens of the batch).
    """
    if config is None:
        config = OfflineRLLossConfig(loss_type=heads.loss_type)
    config = OfflineRLLossConfig.from_any(config)
    if config.loss_type != heads.loss_type:
        raise ValueError(f"config.loss_type={config.loss_type!r} but the value heads are {heads.loss_type!r} heads")
    if hidden_states.dim() != 3 or hidden_states.shape[:2] != batch["input_ids"].shape:
        raise ValueError(
            f"hidden_states must be [B, T, d] matching input_ids {tuple(batch['input_ids'].shape)}, "
            f"got {tuple(hidden_states.shape)}"
        )
    if hidden_states.shape[-1] != heads.hidden_size:
        raise ValueError(f"hidden size {hidden_states.shape[-1]} != value heads' hidden_size {heads.hidden_size}")
    transitions = build_transitions(batch, config.gamma, config.reward_scale)
    loss_terms = ilql_loss_terms if heads.is_ilql else mc_loss_terms
    per_token, metrics = loss_terms(hidden_states, heads, transitions, config, lm_head=lm_head)
    losses = _reduce(per_token.float(), transitions)
    metrics["action_tokens"] = transitions.counts.sum().float()
    return losses, metrics


def normalized_weights(weights: torch.Tensor | None, batch_size: int, device=None) -> torch.Tensor:
    """Weights ``[B]`` normalised to sum to 1 (uniform when ``None``); negative or all-zero is an error."""
    if weights is None:
        return torch.full((batch_size,), 1.0 / batch_size, device=device)
    weights = weights.float()
    if weights.shape != (batch_size,):
        raise ValueError(f"weights must have shape ({batch_size},), got {tuple(weights.shape)}")
    if (weights < 0).any() or not torch.isfinite(weights).all():
        raise ValueError(f"trajectory weights must be finite and >= 0, got {weights.tolist()}")
    total = weights.sum()
    if total <= 0:
        raise ValueError("trajectory weights of this batch sum to 0: nothing would be learned from it")
    return weights / total


def weighted_loss(losses: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``dot(normalised weights, losses)``; weights may carry gradient (BOOST's reweighting head)."""
    if weights is not None and weights.requires_grad:
        # keep the graph of learned weights; they are expected to be normalised already (softmax)
        return (weights * losses).sum()
    return (normalized_weights(weights, losses.shape[0], losses.device) * losses).sum()
