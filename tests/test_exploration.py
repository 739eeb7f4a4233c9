"""Weak-model exploration: M samples per task, schedule of (temperature, top_p), G(e) recorded."""

import pytest
import torch

from trainers.data.schema import metadata_of, validate_trajectories
from trainers.envs.base import StepResult, Task
from trainers.envs.exploration import DEFAULT_SAMPLING_SCHEDULE, explore, final_score


class ScoreEnv:
    """Two turns; the final ``normalized_score`` is the fraction of actions containing 'good'."""

    name = "score"
    system_prompt = "Say good things."
    max_steps = 2

    def tasks(self, split=None):
        return []

    def reset(self, task, seed=None):
        self.task, self.seed, self.good, self.turn = task, seed, 0, 0
        return f"task {task.task_id} seed {seed}"

    def step(self, action):
        self.turn += 1
        self.good += "good" in action
        done = self.turn >= 2
        info = {"normalized_score": self.good / 2, "score": 50 * self.good, "success": self.good == 2} if done else {}
        return StepResult("ok", 0.5 * ("good" in action), done, info)


TASKS = [Task("a", "cat1"), Task("b", "cat2"), Task("c", "cat1")]


def test_explore_callable_policy_rows_scores_and_settings():
    calls = []

    def policy(histories):
        calls.append(len(histories))
        # good on task a, half good on b, never on c
        out = []
        for messages in histories:
            task = messages[1]["content"].split()[1]
            turn = sum(m["role"] == "assistant" for m in messages)
            out.append("good" if task == "a" or (task == "b" and turn == 0) else "bad")
        return out

    schedule = [(0.5, 0.9), (1.3, 0.8)]
    rows = explore(
        policy, ScoreEnv, TASKS, num_samples=3, sampling_schedule=schedule, batch_size=4, seed=7, progress=False
    )
    assert validate_trajectories(rows) == 9
    assert [r["task_id"] for r in rows] == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    assert {r["source"] for r in rows} == {"weak"}
    assert len({r["id"] for r in rows}) == 9
    expected = {"a": 1.0, "b": 0.5, "c": 0.0}
    seeds = set()
    for row in rows:
        meta = metadata_of(row)
        assert meta["final_score"] == expected[row["task_id"]]
        assert 0.0 <= meta["final_score"] <= 1.0
        temperature, top_p = schedule[meta["sample_index"] % 2]
        assert (meta["temperature"], meta["top_p"]) == (temperature, top_p)
        assert meta["sampling"]["temperature"] == temperature and meta["sampling"]["top_p"] == top_p
        seeds.add(meta["episode_seed"])
        # the env really was reset with the recorded seed
        assert row["messages"][1]["content"].endswith(f"seed {meta['episode_seed']}")
    assert len(seeds) == 9
    # one batched pass per schedule entry: entry 0 has 6 episodes (batch 4), entry 1 has 3
    assert max(calls) == 4 and sum(1 for c in calls if c == 3) >= 1


def test_final_score_falls_back_to_clipped_return():
    from trainers.data.schema import make_trajectory

    msgs = [{"role": "user", "content": "o"}, {"role": "assistant", "content": "a"}]
    assert final_score(make_trajectory(msgs, [7.0])) == 1.0
    assert final_score(make_trajectory(msgs, [-2.0])) == 0.0
    assert final_score(make_trajectory(msgs, [0.25])) == 0.25
    assert final_score(make_trajectory(msgs, [9.0], metadata={"normalized_score": 0.4})) == 0.4
    # a native 0-1 score wins over a discounted training reward (WebShop), not a 0-100 one
    assert final_score(make_trajectory(msgs, [0.3], metadata={"score": 0.75})) == 0.75
    assert final_score(make_trajectory(msgs, [0.3], metadata={"score": 75})) == 0.3


def test_explore_rejects_bad_schedules():
    with pytest.raises(ValueError, match=r"sampling_schedule\[1\]"):
        explore(lambda h: ["x"] * len(h), ScoreEnv, TASKS, sampling_schedule=[(1.0, 0.9), (0.0, 0.9)], progress=False)
    with pytest.raises(ValueError, match="empty"):
        explore(lambda h: ["x"] * len(h), ScoreEnv, TASKS, sampling_schedule=[], progress=False)
    with pytest.raises(ValueError, match="temperature"):
        explore(lambda h: ["x"] * len(h), ScoreEnv, TASKS, temperature=0.3, progress=False)


def test_explore_passes_schedule_to_generate(tiny_tokenizer):
    """Each schedule entry must reach ``generate`` as do_sample + temperature + top_p."""
    seen = []
    answer = tiny_tokenizer("good", add_special_tokens=False)["input_ids"] + [tiny_tokenizer.eos_token_id]

    class RecordingModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def generate(self, input_ids, attention_mask, generation_config, **kwargs):
            seen.append(
                (generation_config.do_sample, generation_config.temperature, generation_config.top_p, len(input_ids))
            )
            tail = torch.tensor([answer] * len(input_ids))
            return torch.cat([input_ids, tail], dim=1)

    rows = explore(
        RecordingModel(),
        ScoreEnv,
        TASKS[:2],
        tokenizer=tiny_tokenizer,
        num_samples=2,
        sampling_schedule=[(0.6, 0.8), (1.4, 0.95)],
        batch_size=8,
        progress=False,
    )
    assert {(s[0], s[1], s[2]) for s in seen} == {(True, 0.6, 0.8), (True, 1.4, 0.95)}
    assert all(metadata_of(r)["final_score"] == 1.0 for r in rows)
    assert [m["content"] for m in rows[0]["messages"] if m["role"] == "assistant"] == ["good", "good"]


@pytest.mark.slow
def test_explore_tiny_llama_samples_differ(tiny_llama, tiny_tokenizer):
    rows = explore(
        tiny_llama,
        ScoreEnv,
        TASKS[:1],
        tokenizer=tiny_tokenizer,
        num_samples=4,
        sampling_schedule=DEFAULT_SAMPLING_SCHEDULE[:2],
        max_new_tokens=6,
        autocast=False,
        progress=False,
    )
    actions = {tuple(m["content"] for m in r["messages"] if m["role"] == "assistant") for r in rows}
    assert len(actions) > 1  # sampling, not four copies of one greedy answer
    assert [metadata_of(r)["sample_index"] for r in rows] == [0, 1, 2, 3]
