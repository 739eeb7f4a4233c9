"""MC / ILQL per-trajectory losses against hand computations, and chunked CE against the naive one."""

import math

import pytest
import torch

from trainers.losses import (
    OfflineRLLossConfig,
    build_transitions,
    chunked_linear_cross_entropy,
    expectile_loss,
    ilql_loss_terms,
    mc_loss_terms,
    naive_linear_cross_entropy,
    normalized_weights,
    per_trajectory_losses,
    weighted_loss,
)
from trainers.modeling import ValueHeads

D, V = 3, 5


def _batch():
    """Two rows, right-padded.

    Row 0 (done): [ctx ctx a a | env env a | pad]   turn 0 at positions 2-3 (reward 1 on 3),
                  environment tokens at 4-5, turn 1 at position 6 (reward 2, done).
    Row 1 (not done, shorter): [ctx a a | pad x5]  one turn, reward 0.5 on position 2, no done flag.
    """
    input_ids = torch.tensor([[0, 1, 2, 3, 1, 0, 4, 0], [1, 3, 2, 0, 0, 0, 0, 0]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0, 0, 0]])
    action_mask = torch.tensor([[0, 0, 1, 1, 0, 0, 1, 0], [0, 1, 1, 0, 0, 0, 0, 0]])
    token_rewards = torch.zeros(2, 8)
    token_rewards[0, 3], token_rewards[0, 6], token_rewards[1, 2] = 1.0, 2.0, 0.5
    token_dones = torch.zeros(2, 8, dtype=torch.long)
    token_dones[0, 6] = 1
    turn_ids = torch.full((2, 8), -1)
    turn_ids[0, 2:4], turn_ids[0, 6], turn_ids[1, 1:3] = 0, 1, 0
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "action_mask": action_mask,
        "token_rewards": token_rewards,
        "token_dones": token_dones,
        "turn_ids": turn_ids,
    }


def _hidden(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(2, 8, D, generator=generator)


def _heads(loss_type, seed=1):
    torch.manual_seed(seed)
    heads = ValueHeads(D, V, loss_type=loss_type)
    with torch.no_grad():
        for p in heads.parameters():
            p.copy_(torch.randn_like(p))
    return heads


def _q(head_linear, h, a):
    """Q(s, a) by hand: row a of W dotted with h, plus b[a]."""
    return float(sum(head_linear.weight[a, k].item() * h[k].item() for k in range(D)) + head_linear.bias[a].item())


def test_transitions_skip_environment_tokens_and_discount_per_turn():
    tr = build_transitions(_batch(), gamma=0.9)
    assert tr.row.tolist() == [0, 0, 0, 1, 1]
    assert tr.position.tolist() == [2, 3, 6, 1, 2]
    assert tr.done.tolist() == [False, False, True, False, True]  # row 1's last action: no later token
    assert tr.next_position[:2].tolist() == [3, 6]  # position 3's successor skips env tokens 4-5
    assert torch.allclose(tr.discount, torch.tensor([1.0, 0.9, 0.0, 1.0, 0.0]))
    # per-turn returns: turn 0 of row 0 gets 1 + 0.9 * 2
    assert torch.allclose(tr.returns, torch.tensor([2.8, 2.8, 2.0, 0.5, 0.5]))
    assert tr.counts.tolist() == [3, 2]


def test_reward_scale_scales_rewards_and_returns_before_the_losses():
    tr = build_transitions(_batch(), gamma=0.9, reward_scale=0.1)
    assert torch.allclose(tr.returns, torch.tensor([0.28, 0.28, 0.2, 0.05, 0.05]))
    batch, hidden, heads = _batch(), _hidden(), _heads("mc")
    scaled = OfflineRLLossConfig(loss_type="mc", gamma=0.9, cql_weight=0.0, bc_weight=0.0, reward_scale=0.1)
    _, metrics = per_trajectory_losses(hidden, heads, batch, scaled)
    assert metrics["mc_return_mean"].item() == pytest.approx((2.8 + 2.8 + 2.0 + 0.5 + 0.5) / 50, abs=1e-6)
    with pytest.raises(ValueError, match="reward_scale"):
        OfflineRLLossConfig(reward_scale=0.0)


def test_mc_loss_matches_hand_computation():
    batch, hidden, heads = _batch(), _hidden(), _heads("mc")
    config = OfflineRLLossConfig(loss_type="mc", gamma=0.9, cql_weight=0.0, bc_weight=0.0)
    losses, metrics = per_trajectory_losses(hidden, heads, batch, config)
    q = heads.q_heads[0].projection
    # (row, action position, taken token, target return); the state is the hidden state one step earlier
    cases = [(0, 2, 2, 2.8), (0, 3, 3, 2.8), (0, 6, 4, 2.0), (1, 1, 3, 0.5), (1, 2, 2, 0.5)]
    expected = [0.0, 0.0]
    for row, t, a, g in cases:
        expected[row] += (_q(q, hidden[row, t - 1], a) - g) ** 2
    expected = [expected[0] / 3, expected[1] / 2]
    assert torch.allclose(losses, torch.tensor(expected), atol=1e-5)
    assert metrics["mc_return_mean"].item() == pytest.approx((2.8 + 2.8 + 2.0 + 0.5 + 0.5) / 5, abs=1e-5)


def test_mc_cql_and_bc_terms_match_hand_computation():
    batch, hidden, heads = _batch(), _hidden(), _heads("mc")
    lm_head = torch.nn.Linear(D, V, bias=False)
    config = OfflineRLLossConfig(loss_type="mc", gamma=0.9, cql_weight=0.3, bc_weight=0.7, cql_chunk_size=2)
    losses, metrics = per_trajectory_losses(hidden, heads, batch, config, lm_head=lm_head)
    base, _ = per_trajectory_losses(
        hidden, heads, batch, OfflineRLLossConfig(loss_type="mc", gamma=0.9, cql_weight=0, bc_weight=0)
    )
    q = heads.q_heads[0].projection
    extra = [0.0, 0.0]
    for row, t, a in [(0, 2, 2), (0, 3, 3), (0, 6, 4), (1, 1, 3), (1, 2, 2)]:
        h = hidden[row, t - 1]
        q_logits = [_q(q, h, b) for b in range(V)]
        lm_logits = [float(lm_head.weight[b].detach() @ h) for b in range(V)]
        ce_q = math.log(sum(math.exp(x) for x in q_logits)) - q_logits[a]
        ce_lm = math.log(sum(math.exp(x) for x in lm_logits)) - lm_logits[a]
        extra[row] += 0.3 * ce_q + 0.7 * ce_lm
    expected = base + torch.tensor([extra[0] / 3, extra[1] / 2])
    assert torch.allclose(losses, expected, atol=1e-5)
    assert metrics["cql"] > 0 and metrics["bc"] > 0


def test_ilql_loss_matches_hand_computation():
    batch, hidden, heads = _batch(), _hidden(), _heads("ilql")
    gamma, tau = 0.9, 0.7
    config = OfflineRLLossConfig(loss_type="ilql", gamma=gamma, tau=tau, cql_weight=0.0, bc_weight=0.0)
    losses, metrics = per_trajectory_losses(hidden, heads, batch, config)

    def v(h):
        return float(heads.v_head.projection.weight[0] @ h + heads.v_head.projection.bias[0])

    # (row, position, token, reward, next position or None when terminal, discount)
    cases = [
        (0, 2, 2, 0.0, 3, 1.0),
        (0, 3, 3, 1.0, 6, gamma),
        (0, 6, 4, 2.0, None, 0.0),
        (1, 1, 3, 0.0, 2, 1.0),
        (1, 2, 2, 0.5, None, 0.0),
    ]
    expected = [0.0, 0.0]
    for row, t, a, r, nxt, disc in cases:
        s = hidden[row, t - 1]
        y = r + (disc * v(hidden[row, nxt - 1]) if nxt is not None else 0.0)
        q_term = sum((_q(heads.q_heads[i].projection, s, a) - y) ** 2 for i in range(2))
        target_q = min(_q(heads.target_q_heads[i].projection, s, a) for i in range(2))
        u = target_q - v(s)
        v_term = (tau if u >= 0 else 1 - tau) * u * u
        expected[row] += q_term + v_term
    expected = [expected[0] / 3, expected[1] / 2]
    assert torch.allclose(losses, torch.tensor(expected), atol=1e-4)
    assert {"q_mean", "v_mean", "td_error", "v_loss", "target_q_mean"} <= set(metrics)


def test_padding_and_batch_composition_do_not_change_a_trajectory_loss():
    batch, hidden, heads = _batch(), _hidden(), _heads("ilql")
    config = OfflineRLLossConfig(loss_type="ilql", cql_weight=0.5, bc_weight=0.0, cql_chunk_size=3)
    losses, _ = per_trajectory_losses(hidden, heads, batch, config)
    alone = {k: v[1:2, :3] for k, v in batch.items()}
    single, _ = per_trajectory_losses(hidden[1:2, :3], heads, alone, config)
    assert torch.allclose(single, losses[1:2], atol=1e-6)


def test_gradients_reach_online_heads_but_not_targets_or_unused_lm_head():
    batch, heads = _batch(), _heads("ilql")
    hidden = _hidden().requires_grad_(True)
    lm_head = torch.nn.Linear(D, V)
    config = OfflineRLLossConfig(loss_type="ilql", cql_weight=1.0, bc_weight=0.0)
    losses, _ = per_trajectory_losses(hidden, heads, batch, config, lm_head=lm_head)
    weighted_loss(losses).backward()
    assert all(p.grad is None for p in heads.target_q_heads.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in heads.q_heads.parameters())
    assert heads.v_head.projection.weight.grad.abs().sum() > 0
    assert lm_head.weight.grad is None
    # padding and the state after the last action get no gradient
    assert hidden.grad[0, 7].abs().sum() == 0 and hidden.grad[1, 3:].abs().sum() == 0


def test_v_of_next_state_is_not_trained_by_the_bellman_term():
    batch, heads = _batch(), _heads("ilql")
    hidden = _hidden()
    config = OfflineRLLossConfig(loss_type="ilql", cql_weight=0.0, bc_weight=0.0, tau=0.5)
    # with V trained only by the expectile term, the V-head gradient equals that of the v_loss alone
    losses, _ = per_trajectory_losses(hidden, heads, batch, config)
    losses.sum().backward()
    full = heads.v_head.projection.weight.grad.clone()
    heads.zero_grad()
    tr = build_transitions(batch, config.gamma)
    s = hidden[tr.row, tr.position - 1]
    with torch.no_grad():
        target_q = torch.stack([heads.gather_q(s, tr.action, i, target=True) for i in range(2)]).min(0).values
    per_token = expectile_loss(target_q - heads.v_values(s), 0.5)
    per_row = torch.zeros(2).index_add(0, tr.row, per_token) / tr.counts
    per_row.sum().backward()
    assert torch.allclose(full, heads.v_head.projection.weight.grad, atol=1e-6)


@pytest.mark.parametrize("with_bias", [True, False])
def test_chunked_cross_entropy_equals_naive_values_and_gradients(with_bias):
    torch.manual_seed(0)
    n, k, vocab = 37, 16, 1000
    x = torch.randn(n, k, requires_grad=True)
    weight = (0.3 * torch.randn(vocab, k)).requires_grad_(True)
    bias = torch.randn(vocab, requires_grad=True) if with_bias else None
    targets = torch.randint(0, vocab, (n,))
    upstream = torch.rand(n)
    naive = naive_linear_cross_entropy(x, weight, bias, targets)
    grads_naive = torch.autograd.grad((naive * upstream).sum(), [x, weight] + ([bias] if with_bias else []))
    chunked = chunked_linear_cross_entropy(x, weight, bias, targets, chunk_size=8)
    grads_chunked = torch.autograd.grad((chunked * upstream).sum(), [x, weight] + ([bias] if with_bias else []))
    assert torch.allclose(chunked, naive, atol=1e-5, rtol=0)
    for a, b in zip(grads_chunked, grads_naive):
        assert torch.allclose(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("loss_type,head_type", [("mc", "linear"), ("ilql", "linear"), ("ilql", "mlp")])
def test_chunked_losses_equal_naive_losses_and_gradients(loss_type, head_type):
    torch.manual_seed(3)
    batch, hidden = _batch(), _hidden().requires_grad_(True)
    heads = ValueHeads(D, V, loss_type=loss_type, q_head_type=head_type)
    lm_head = torch.nn.Linear(D, V)
    results = []
    for implementation in ("naive", "chunked"):
        config = OfflineRLLossConfig(
            loss_type=loss_type, cql_weight=10.0, bc_weight=1.0, cql_chunk_size=2, cql_implementation=implementation
        )
        losses, _ = per_trajectory_losses(hidden, heads, batch, config, lm_head=lm_head)
        params = [hidden] + [p for p in heads.parameters() if p.requires_grad] + list(lm_head.parameters())
        results.append((losses.detach(), torch.autograd.grad(losses.sum(), params)))
    (naive, naive_grads), (chunked, chunked_grads) = results
    assert torch.allclose(naive, chunked, atol=1e-5)
    for a, b in zip(naive_grads, chunked_grads):
        assert torch.allclose(a, b, atol=1e-5)


def test_weights_are_normalised_and_checked():
    losses = torch.tensor([1.0, 2.0, 4.0])
    assert weighted_loss(losses).item() == pytest.approx(7 / 3)
    assert weighted_loss(losses, torch.tensor([1.0, 0.0, 3.0])).item() == pytest.approx((1 + 12) / 4)
    assert torch.allclose(normalized_weights(torch.tensor([2.0, 2.0]), 2), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="sum to 0"):
        weighted_loss(losses, torch.zeros(3))
    with pytest.raises(ValueError, match=">= 0"):
        weighted_loss(losses, torch.tensor([1.0, -1.0, 1.0]))
    learned = torch.softmax(torch.tensor([0.1, 0.2, 0.3], requires_grad=True), 0)
    weighted_loss(losses, learned).backward()  # learned weights keep their graph


def test_bad_batches_name_the_problem():
    heads = _heads("mc")
    batch = _batch()
    batch["action_mask"] = batch["action_mask"].clone()
    batch["action_mask"][1, 0] = 1
    with pytest.raises(ValueError, match=r"rows \[1\].*position 0"):
        per_trajectory_losses(_hidden(), heads, batch, OfflineRLLossConfig(bc_weight=0))
    batch = _batch()
    batch["action_mask"] = batch["action_mask"].clone()
    batch["action_mask"][0] = 0
    with pytest.raises(ValueError, match=r"rows \[0\] have no action tokens"):
        per_trajectory_losses(_hidden(), heads, batch, OfflineRLLossConfig(bc_weight=0))
    with pytest.raises(ValueError, match="'ilql' but the value heads are 'mc'"):
        per_trajectory_losses(_hidden(), heads, _batch(), OfflineRLLossConfig(loss_type="ilql"))
    with pytest.raises(ValueError, match="needs the LM head"):
        per_trajectory_losses(_hidden(), heads, _batch(), OfflineRLLossConfig(bc_weight=1.0))
    missing = {k: v for k, v in _batch().items() if k != "turn_ids"}
    with pytest.raises(KeyError, match="turn_ids"):
        per_trajectory_losses(_hidden(), heads, missing, OfflineRLLossConfig(bc_weight=0))


def test_mc_loss_terms_are_the_per_token_squared_errors():
    batch, hidden, heads = _batch(), _hidden(), _heads("mc")
    config = OfflineRLLossConfig(loss_type="mc", gamma=0.9, cql_weight=0.0, bc_weight=0.0)
    per_token, _ = mc_loss_terms(hidden, heads, build_transitions(batch, 0.9), config)
    q = heads.q_heads[0].projection
    cases = [(0, 2, 2, 2.8), (0, 3, 3, 2.8), (0, 6, 4, 2.0), (1, 1, 3, 0.5), (1, 2, 2, 0.5)]
    expected = [(_q(q, hidden[row, t - 1], a) - g) ** 2 for row, t, a, g in cases]
    assert torch.allclose(per_token, torch.tensor(expected), atol=1e-5)


@pytest.mark.parametrize("loss_type", ["mc", "ilql"])
def test_per_trajectory_losses_average_the_named_loss_terms_per_trajectory(loss_type):
    batch, hidden, heads = _batch(), _hidden(), _heads(loss_type)
    lm_head = torch.nn.Linear(D, V)
    config = OfflineRLLossConfig(loss_type=loss_type, gamma=0.9, cql_weight=0.4, bc_weight=0.6, cql_chunk_size=2)
    losses, metrics = per_trajectory_losses(hidden, heads, batch, config, lm_head=lm_head)
    tr = build_transitions(batch, config.gamma)
    terms = {"mc": mc_loss_terms, "ilql": ilql_loss_terms}[loss_type]
    per_token, term_metrics = terms(hidden, heads, tr, config, lm_head=lm_head)
    assert per_token.shape == (5,)
    expected = torch.stack([per_token[:3].mean(), per_token[3:].mean()])  # rows 0 and 1 own 3 and 2 tokens
    assert torch.allclose(losses, expected, atol=1e-6)
    assert set(term_metrics) | {"action_tokens"} == set(metrics)


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("loss_type", "sarsa", r"loss_type must be one of 'mc', 'ilql', got 'sarsa'"),
        ("cql_implementation", "fast", r"cql_implementation must be one of 'chunked', 'naive'"),
        ("gamma", 1.5, r"gamma must be in \[0, 1\], got 1.5"),
        ("gamma", float("nan"), r"gamma must be a finite number, got nan"),
        ("tau", 1.0, r"tau must be in \(0, 1\), got 1.0"),
        ("tau", 0.0, r"tau must be in \(0, 1\)"),
        ("cql_weight", float("nan"), r"cql_weight must be a finite number, got nan"),
        ("cql_weight", float("inf"), r"cql_weight must be a finite number, got inf"),
        ("bc_weight", -0.1, r"bc_weight must be >= 0, got -0.1"),
        ("cql_chunk_size", 0, r"cql_chunk_size must be >= 1, got 0"),
        ("gamma", "0.9", r"gamma must be a number in \[0, 1\], got '0.9'"),
    ],
)
def test_loss_config_rejects_values_outside_their_range_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=r"OfflineRLLossConfig: " + message):
        OfflineRLLossConfig(**{field: value})


def test_loss_config_accepts_the_edges_of_closed_ranges():
    config = OfflineRLLossConfig(gamma=1.0, cql_weight=0.0, bc_weight=0.0, cql_chunk_size=1)
    assert (config.gamma, config.cql_chunk_size) == (1.0, 1)
    assert OfflineRLLossConfig(gamma=0.0).gamma == 0.0
