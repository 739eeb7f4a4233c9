"""BOOST's learned weights must track trajectory quality on a small controlled case.

Half of the synthetic rule-task episodes break the rule (actions no rule allows) while claiming
success; with the library's defaults the head must give them less weight than the faithful half.
Deterministic (fixed seeds, one thread) and a few seconds on a tiny Llama.
"""

import pytest
import torch

from trainers import BilevelReweightConfig, BilevelReweightTrainer
from trainers.boost.corruptions import (
    CORRUPTIONS,
    corrupt,
    follows_rule,
    half_corrupted,
    quality_of,
    rule_task,
    rule_task_success_rewards,
)
from trainers.data.schema import make_trajectory, to_dataset


def _auc(positive, negative):
    return sum((p > n) + 0.5 * (p == n) for p in positive for n in negative) / (len(positive) * len(negative))


def test_weights_track_quality_on_rule_breaking(tmp_path, tiny_llama_path, tiny_tokenizer):
    torch.set_num_threads(1)
    real = rule_task(16, seed=1)
    val = rule_task(16, seed=2)
    synthetic = half_corrupted(
        rule_task(32, source="synthetic", seed=3, parents=[r["id"] for r in real]), "rule_breaking", seed=4
    )
    config = BilevelReweightConfig(
        output_dir=str(tmp_path / "out"),
        k_psi=2,
        k_theta=2,
        max_steps=75,
        learning_rate=1e-3,
        per_device_train_batch_size=8,
        seed=0,
        bf16=False,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=1000,
        embedding_cache_dir=str(tmp_path / "embeddings"),
        disable_tqdm=True,
    )
    trainer = BilevelReweightTrainer(
        tiny_llama_path,
        config,
        train_dataset=to_dataset(real),
        val_dataset=to_dataset(val),
        synthetic_dataset=to_dataset(synthetic),
        processing_class=tiny_tokenizer,
    )
    trainer.train()
    weights = dict(zip(trainer.trajectory_weights()["id"], trainer.trajectory_weights()["weight"]))
    faithful = [weights[r["id"]] for r in synthetic if quality_of(r) == "faithful"]
    corrupted = [weights[r["id"]] for r in synthetic if quality_of(r) != "faithful"]
    assert _auc(faithful, corrupted) >= 0.9
    assert sum(corrupted) / len(corrupted) <= 0.8 * sum(faithful) / len(faithful)


def test_corruptions_keep_the_schema_and_label_their_kind():
    rows = rule_task(4, seed=0)
    rows[0]["messages"][1]["content"], rows[0]["messages"][3]["content"] = "the item is food", "the item is tool"
    foreign = rule_task(2, task="cars", seed=1)
    import random

    for kind in CORRUPTIONS:
        bad = corrupt(rows[0], kind, random.Random(0), foreign_rows=foreign)
        to_dataset([bad])  # valid schema row (roles alternate, one reward per agent turn)
        assert quality_of(bad) == kind and bad["id"].endswith(kind)
        assert bad["messages"] != rows[0]["messages"] or bad["rewards"] != rows[0]["rewards"]
    # truncated: cut before the last turn at a wrong answer that claims the whole success's return
    faithful = rule_task(1, seed=3, error_rate=0.0)[0]
    for seed in range(5):
        cut = corrupt(faithful, "truncated", random.Random(seed), success_rewards=rule_task_success_rewards)
        agent_turns = [m for m in cut["messages"] if m["role"] == "assistant"]
        assert 1 <= len(agent_turns) < 3 and cut["rewards"][-1] == pytest.approx(1.0)
        assert sum(cut["rewards"]) == pytest.approx(1.0) and not follows_rule(cut)
    assert corrupt(rows[0], "false_reward", random.Random(0))["rewards"] == [0.0, 0.0, 1.0]
    claimed = corrupt(rows[0], "false_reward", random.Random(0), success_rewards=rule_task_success_rewards)
    assert claimed["rewards"] == [1 / 3] * 3 and not follows_rule(claimed)
    with pytest.raises(ValueError, match="kind must be one of"):
        corrupt(rows[0], "typo", random.Random(0))


def test_half_corrupted_never_labels_an_unchanged_episode_corrupted():
    from trainers.boost.corruptions import UncorruptibleError

    one_exchange = [
        make_trajectory(
            [{"role": "user", "content": "Beginning of Conversation"}, {"role": "assistant", "content": f"offer {i}"}],
            [48.0],
            id=f"deal-{i}",
            source="synthetic",
        )
        for i in range(6)
    ]
    # a shuffle of one exchange changes nothing: no row may be called corrupted
    with pytest.raises(UncorruptibleError, match="shuffled"):
        half_corrupted(one_exchange, "shuffled", seed=0)
    # nor can a truncation cut one exchange short (a wrong turn claiming success is false_reward's corruption)
    with pytest.raises(UncorruptibleError, match="truncated"):
        half_corrupted(one_exchange, "truncated", seed=0, wrong_actions=["I can go down to $52,600."])
    # a failing substitute action that claims the success reward does change them
    bad = half_corrupted(one_exchange, "false_reward", seed=0, wrong_actions=["I can go down to $52,600."])
    corrupted = [row for row in bad if quality_of(row) == "false_reward"]
    assert len(corrupted) == 3
    assert all(row["messages"][-1]["content"] == "I can go down to $52,600." for row in corrupted)
    # rows that cannot be corrupted stay faithful among ones that can (rule task: same word three times)
    rows = rule_task(8, seed=0, error_rate=0.0)
    for row in rows[:4]:
        for message in row["messages"]:
            if message["role"] == "user":
                message["content"] = "the item is tool"
            elif message["role"] == "assistant":
                message["content"] = "maybe"
    mixed = half_corrupted(rows, "shuffled", seed=1, is_faithful=follows_rule)
    for before, after in zip(rows, mixed):
        if quality_of(after) == "shuffled":
            assert after["messages"] != before["messages"] and not follows_rule(after)
        else:
            assert after["messages"] == before["messages"]
