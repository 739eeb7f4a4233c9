"""ScienceWorld adapter over the real simulator (Java): tasks, rewards, step limit, gold replays."""

import re

import pytest

from trainers.data.schema import metadata_of, validate_trajectories
from trainers.envs import make_env
from trainers.envs.rollout import rollout
from trainers.envs.scienceworld import NO_EFFECT_PATTERN

pytestmark = [pytest.mark.scienceworld, pytest.mark.slow]

# The two quickest tasks to load and replay (5-7 gold actions each).
FAST_TASKS = ["lifespan-longest-lived", "find-non-living-thing"]


@pytest.fixture(scope="module")
def env():
    return make_env("scienceworld", task_names=FAST_TASKS, max_variations_per_task=2)


def test_gold_path_replays_reach_full_score(env):
    from trainers.envs.scienceworld import expert_trajectories

    tasks = [env.task(FAST_TASKS[0], 0), env.task(FAST_TASKS[1], 1)]
    rows = expert_trajectories(tasks, env=env, progress=False)
    assert validate_trajectories(rows) == 2
    for task, row in zip(tasks, rows):
        meta = metadata_of(row)
        assert meta["score"] == 100 and row["success"] and row["source"] == "expert"
        assert sum(row["rewards"]) == pytest.approx(1.0)
        assert all(r >= 0 for r in row["rewards"]) and any(0 < r < 1 for r in row["rewards"])  # partial credit
        assert row["category"] == task.spec["task_name"] and row["task_id"] == task.task_id
        assert row["messages"][0]["role"] == "system"
        assert row["messages"][1]["content"].startswith("Your task is to")
        assert row["messages"][3]["content"].startswith("Observation: ")
        assert row["messages"][2]["content"].startswith("Action: ")


def test_tasks_splits_restriction_and_cap(env):
    train, dev, test = env.tasks("train"), env.tasks("dev"), env.tasks("test")
    for split in (train, dev, test):
        assert len(split) == 2 * len(FAST_TASKS)
        assert {t.category for t in split} == set(FAST_TASKS)
    ids = [{t.task_id for t in s} for s in (train, dev, test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert [t.split for t in dev] == ["dev"] * 4 and env.tasks("val")[0].split == "dev"
    with pytest.raises(ValueError, match="unknown ScienceWorld split 'holdout'"):
        env.tasks("holdout")
    with pytest.raises(ValueError, match="unknown ScienceWorld task"):
        make_env("scienceworld", task_names=["boil-the-ocean"])
    with pytest.raises(ValueError, match=r"unknown ScienceWorld simplification\(s\) \['teleport'\]"):
        make_env("scienceworld", simplification="easy,teleport")


def test_rewards_failure_invalid_action_and_step_limit(env):
    task = env.task(FAST_TASKS[0], 0)
    assert env.reset(task).startswith("Your task is to find the animal with the longest life span")
    first = env.step("Thought: the animals are outside.\nAction: teleport to outside")
    assert first.info["action"] == "teleport to outside" and first.reward > 0 and not first.done
    invalid = env.step("dance wildly")  # answered as the simulator answers, never raised
    assert "No known action matches" in invalid.observation and invalid.reward == 0.0 and not invalid.done
    assert re.search(NO_EFFECT_PATTERN, invalid.observation) and not re.search(NO_EFFECT_PATTERN, first.observation)
    failed = env.step("focus on baby mouse")  # the wrong animal makes the task fail
    assert failed.done and failed.info["score"] < 0 and not failed.info["success"]
    assert failed.info["normalized_score"] == 0.0
    assert first.reward + invalid.reward + failed.reward == pytest.approx(0.0)  # sums to G(e)
    with pytest.raises(RuntimeError, match="episode of task .* is over"):
        env.step("look around")

    env.max_steps = 2
    try:
        env.reset(task)
        assert not env.step("look around").done
        last = env.step("look around")
        assert last.done and last.info["truncated"] and not last.info["success"]
    finally:
        env.max_steps = 100


def test_one_jvm_concurrent_sessions_through_the_harness(env):
    """Two episodes run side by side (one env per slot, sessions of one JVM), both to full score."""
    from trainers.envs.scienceworld import ScienceWorldEnv, _Backend

    tasks = [env.task(FAST_TASKS[0], 1), env.task(FAST_TASKS[1], 0)]
    gold = {t.task_id: env.gold_actions(t) for t in tasks}
    made = []

    def factory():
        made.append(ScienceWorldEnv(task_names=FAST_TASKS))
        return made[-1]

    def gold_policy(histories):
        actions = []
        for messages in histories:
            description = messages[1]["content"]
            task_id = tasks[0].task_id if "longest life span" in description else tasks[1].task_id
            turn = sum(m["role"] == "assistant" for m in messages)
            actions.append(f"Action: {gold[task_id][turn]}")
        return actions

    backend = _Backend.get()
    rows = rollout(gold_policy, factory, tasks, batch_size=2, progress=False)
    assert len(made) == 2 and _Backend.get() is backend
    assert made[0]._server is not made[1]._server
    for row in rows:
        meta = metadata_of(row)
        assert row["success"] and meta["score"] == 100 and meta["normalized_score"] == 1.0
        assert sum(row["rewards"]) == pytest.approx(1.0)


def test_variation_lists_come_from_the_simulator_and_are_cached(env, tmp_path, monkeypatch):
    import json

    from trainers.envs.scienceworld import _Backend, _variation_cache_path

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(_Backend, "_variations", {})
    lists = _Backend.variations("lifespan-shortest-lived")  # queried from the simulator
    assert len(lists["train"]) == 62 and lists["train"][:3] == [0, 1, 2]
    assert not set(lists["train"]) & set(lists["test"]) and not set(lists["dev"]) & set(lists["test"])
    on_disk = json.loads(_variation_cache_path().read_text())
    assert on_disk["lifespan-shortest-lived"] == lists
    monkeypatch.setattr(_Backend, "_variations", {})
    on_disk["lifespan-shortest-lived"]["test"] = [999]  # proves the next read uses the file
    _variation_cache_path().write_text(json.dumps(on_disk))
    assert _Backend.variations("lifespan-shortest-lived")["test"] == [999]


def test_ambiguous_actions_original_or_auto_disambiguated():
    from trainers.envs.scienceworld import ScienceWorldEnv

    original = ScienceWorldEnv(task_names=FAST_TASKS[:1])
    task = original.task(FAST_TASKS[0], 0)
    original.reset(task)
    asked = original.step("Action: look at door")
    assert asked.observation.startswith("Observation: Ambiguous request") and "0:" in asked.observation
    assert "disambiguated" not in asked.info
    answered = original.step("0")  # the original waits for the number
    assert "door" in answered.observation and "Ambiguous" not in answered.observation

    auto = ScienceWorldEnv(task_names=FAST_TASKS[:1], auto_disambiguate=True)
    auto.reset(task)
    result = auto.step("Action: look at door")
    assert result.info["disambiguated"] and "Ambiguous" not in result.observation
    assert "door" in result.observation  # the simulator's order of readings varies between loads
