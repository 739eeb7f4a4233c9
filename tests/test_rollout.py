"""The rollout / evaluation harness, on a scripted in-test environment and a tiny LM."""

import json
import math

import pytest
import torch

from trainers.data.schema import metadata_of, validate_trajectories
from trainers.envs.base import StepResult, Task
from trainers.envs.rollout import EvaluationResult, GenerationSettings, LMPolicy, evaluate_policy, rollout
from trainers.evaluation import markdown_table, summarize_trajectories


class EchoEnv:
    """Each observation names the task and turn; the right action echoes both back.

    A task lasts ``spec["turns"]`` turns; every correct echo earns ``spec["reward"]``. Histories
    mixed up between batch slots would produce wrong echoes, hence lower returns.
    """

    name = "echo"
    system_prompt = "Repeat the code you are shown."
    max_steps = 10

    def __init__(self):
        self.task, self.turn = None, 0
        self.resets = 0

    def tasks(self, split=None):
        return []

    def _code(self):
        return f"{self.task.task_id}:{self.turn}"

    def reset(self, task, seed=None):
        self.task, self.turn, self.seed = task, 0, seed
        self.resets += 1
        return f"code {self._code()}"

    def step(self, action):
        correct = action.strip() == f"Action: {self._code()}"
        self.turn += 1
        done = self.turn >= self.task.spec["turns"]
        reward = self.task.spec["reward"] if correct else 0.0
        info = {"success": correct and done, "seed": self.seed} if done else {}
        return StepResult(f"code {self._code()}", reward, done, info)


def echo_policy(histories):
    """Echoes the code of the last observation, except in category 'bad', where it answers nonsense."""
    actions = []
    for messages in histories:
        last = messages[-1]["content"]
        assert messages[-1]["role"] == "user"
        category = messages[1]["content"].split()[1].split("-")[0]
        actions.append("Action: wrong" if category == "bad" else f"Action: {last.split()[1]}")
    return actions


def echo_tasks():
    return [
        Task("good-a", "good", {"turns": 2, "reward": 0.5}),
        Task("good-b", "good", {"turns": 5, "reward": 0.25}),
        Task("bad-c", "bad", {"turns": 3, "reward": 1.0}),
        Task("good-d", "good", {"turns": 1, "reward": 1.0}),
    ]


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_rollout_scripted_policy_known_returns(batch_size):
    tasks = echo_tasks()
    rows = rollout(echo_policy, EchoEnv, tasks, num_episodes=8, batch_size=batch_size, seed=11, progress=False)
    assert validate_trajectories(rows) == 8
    # episode i plays task i % 4, rows come back in episode order whatever finished first
    assert [row["task_id"] for row in rows] == [t.task_id for t in tasks] * 2
    expected_returns = {"good-a": 1.0, "good-b": 1.25, "bad-c": 0.0, "good-d": 1.0}
    expected_turns = {"good-a": 2, "good-b": 5, "bad-c": 3, "good-d": 1}
    for index, row in enumerate(rows):
        assert sum(row["rewards"]) == pytest.approx(expected_returns[row["task_id"]])
        assert len(row["rewards"]) == expected_turns[row["task_id"]]
        assert row["success"] == (row["category"] == "good")
        assert row["messages"][0] == {"role": "system", "content": EchoEnv.system_prompt}
        assert row["messages"][-1]["role"] == "assistant"
        meta = metadata_of(row)
        assert meta["episode_index"] == index and meta["episode_seed"] == 11 + index and meta["seed"] == 11
        assert meta["env"] == "echo" and meta["turns"] == expected_turns[row["task_id"]]
        assert meta["final_observation"].startswith("code ")


def test_evaluate_policy_statistics_and_reports(tmp_path):
    result = evaluate_policy(echo_policy, EchoEnv, echo_tasks(), num_episodes=8, batch_size=4, progress=False)
    assert isinstance(result, EvaluationResult)
    returns = [1.0, 1.25, 0.0, 1.0] * 2
    mean = sum(returns) / 8
    stderr = math.sqrt(sum((r - mean) ** 2 for r in returns) / 7 / 8)
    assert result.num_episodes == 8 and len(result.rows) == 8
    assert result.mean_return == pytest.approx(mean)
    assert result.stderr == pytest.approx(stderr)
    assert result.success_rate == pytest.approx(6 / 8)
    assert set(result.per_category) == {"good", "bad"}
    assert result.per_category["good"].mean_return == pytest.approx(3.25 / 3)
    assert result.per_category["bad"].success_rate == 0.0 and result.per_category["bad"].num_episodes == 2
    table = result.to_markdown("echo")
    assert f"| echo | {mean:.3f} ± {stderr:.3f} | 75.0% | 8 |" in table
    assert "| echo / bad | 0.000 ± 0.000 | 0.0% | 2 |" in table
    png = result.plot(tmp_path / "plots" / "eval.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    both = markdown_table({"a": result, "b": summarize_trajectories(result.rows[:4])})
    assert both.count("\n") == 4


def test_max_turns_truncates_and_marks_not_done():
    rows = rollout(echo_policy, EchoEnv, echo_tasks()[1:2], max_turns=2, progress=False)
    assert len(rows[0]["rewards"]) == 2 and rows[0]["done"] is False
    assert metadata_of(rows[0])["truncated"] is True


def test_one_env_per_slot_reused():
    made = []

    def factory():
        made.append(EchoEnv())
        return made[-1]

    rollout(echo_policy, factory, echo_tasks(), num_episodes=12, batch_size=3, progress=False)
    assert len(made) == 3
    assert sum(env.resets for env in made) == 12


def test_bad_policy_and_env_errors_are_named():
    with pytest.raises(ValueError, match="returned 1 actions for 2 histories"):
        rollout(lambda h: ["x"], EchoEnv, echo_tasks()[:2], batch_size=2, progress=False)

    class Broken(EchoEnv):
        def step(self, action):
            raise KeyError("boom")

    with pytest.raises(RuntimeError, match="failed on task 'good-a' at turn 0 with action"):
        rollout(echo_policy, Broken, echo_tasks()[:1], progress=False)
    with pytest.raises(ValueError, match="logits_processor needs a model"):
        rollout(echo_policy, EchoEnv, echo_tasks(), logits_processor=[object()], progress=False)


# --------------------------------------------------------------------------------------------
# With a tiny causal LM


class TalkEnv(EchoEnv):
    """Accepts anything for ``spec['turns']`` turns; observations of different lengths per task."""

    name = "talk"

    def reset(self, task, seed=None):
        super().reset(task, seed)
        return " ".join(["is it an animal"] * task.spec["width"])

    def step(self, action):
        self.turn += 1
        done = self.turn >= self.task.spec["turns"]
        return StepResult("no " * (self.turn + self.task.spec["width"]), float(len(action) % 3), done, {})


def talk_tasks():
    return [Task(f"t{i}", f"c{i % 2}", {"turns": 1 + i % 3, "width": 1 + 2 * i}) for i in range(5)]


@pytest.mark.slow
def test_batched_greedy_equals_sequential_greedy(tiny_llama, tiny_tokenizer):
    kwargs = dict(tokenizer=tiny_tokenizer, max_new_tokens=6, autocast=False, progress=False, stop_sequences=())
    sequential = rollout(tiny_llama, TalkEnv, talk_tasks(), batch_size=1, **kwargs)
    batched = rollout(tiny_llama, TalkEnv, talk_tasks(), batch_size=4, **kwargs)
    actions = lambda rows: [[m["content"] for m in r["messages"] if m["role"] == "assistant"] for r in rows]  # noqa: E731
    assert actions(batched) == actions(sequential)
    assert any(a for episode in actions(batched) for a in episode)  # the model did write something
    assert [r["rewards"] for r in batched] == [r["rewards"] for r in sequential]
    meta = metadata_of(batched[0])
    assert meta["sampling"] == GenerationSettings(max_new_tokens=6).to_dict()
    assert meta["batch_size"] == 4 and meta["autocast_bf16"] is False


@pytest.mark.slow
def test_sampling_is_seeded_and_settings_recorded(tiny_llama, tiny_tokenizer):
    kwargs = dict(
        tokenizer=tiny_tokenizer,
        do_sample=True,
        temperature=1.5,
        top_p=0.9,
        max_new_tokens=5,
        batch_size=3,
        autocast=False,
        progress=False,
    )
    tasks = talk_tasks()[:3]
    first = rollout(tiny_llama, TalkEnv, tasks, seed=3, **kwargs)
    again = rollout(tiny_llama, TalkEnv, tasks, seed=3, **kwargs)
    other = rollout(tiny_llama, TalkEnv, tasks, seed=4, **kwargs)
    text = lambda rows: json.dumps([r["messages"] for r in rows])  # noqa: E731
    assert text(first) == text(again)
    assert text(first) != text(other)
    sampling = metadata_of(first[0])["sampling"]
    assert sampling["do_sample"] is True and sampling["temperature"] == 1.5 and sampling["top_p"] == 0.9


def test_logits_processor_steers_generation(tiny_llama, tiny_tokenizer):
    """A processor forcing one token must show up in every generated action."""
    forced = tiny_tokenizer.convert_tokens_to_ids("yes")
    assert forced is not None and forced != tiny_tokenizer.unk_token_id

    class Force:
        calls = 0

        def __call__(self, input_ids, scores):
            Force.calls += 1
            out = torch.full_like(scores, -float("inf"))
            out[:, forced] = 0.0
            return out

    rows = rollout(
        tiny_llama,
        TalkEnv,
        talk_tasks()[:3],
        tokenizer=tiny_tokenizer,
        logits_processor=[Force()],
        max_new_tokens=3,
        batch_size=3,
        progress=False,
    )
    assert Force.calls > 0
    for row in rows:
        for message in row["messages"]:
            if message["role"] == "assistant":
                assert message["content"] == "yesyesyes"
    assert metadata_of(rows[0])["logits_processor"] == ["Force"]


def test_lm_policy_prompt_truncation_and_stop(tiny_llama, tiny_tokenizer):
    from trainers.envs.rollout import _bf16_available

    # bf16 autocast by default exactly when the CPU has bf16 and the model is fp32
    assert LMPolicy(tiny_llama, tiny_tokenizer).autocast == _bf16_available(torch.device("cpu"))
    assert LMPolicy(tiny_llama.to(torch.bfloat16), tiny_tokenizer).autocast is False
    tiny_llama.float()
    policy = LMPolicy(tiny_llama, tiny_tokenizer, max_prompt_tokens=60, autocast=False)
    history = [{"role": "system", "content": "rules"}, {"role": "user", "content": "task"}]
    for turn in range(20):
        history += [{"role": "assistant", "content": f"Action: go {turn}"}, {"role": "user", "content": "no no no"}]
    ids = policy.encode(history)
    assert len(ids) <= 60
    text = tiny_tokenizer.decode(ids)
    assert "rules" in text and "task" in text and "go 19" in text and "go 0<" not in text
    assert policy._cut("Action: look\nObservation: you see") == "Action: look"
    with pytest.raises(ValueError, match="chat template"):
        tokenizer = type(tiny_tokenizer).from_pretrained(tiny_tokenizer.name_or_path)
        tokenizer.chat_template = None
        LMPolicy(tiny_llama, tokenizer)


# --------------------------------------------------------------------------------------------
# trainers.evaluation


def test_metric_functions_known_values():
    from trainers.evaluation import mean_and_stderr, success_rate, summarize_returns, trajectory_return

    mean, stderr = mean_and_stderr([1.0, 2.0, 3.0, 6.0])
    assert mean == 3.0 and stderr == pytest.approx(math.sqrt((4 + 1 + 0 + 9) / 3 / 4))
    assert math.isnan(mean_and_stderr([5.0])[1]) and mean_and_stderr([5.0])[0] == 5.0
    assert all(math.isnan(v) for v in mean_and_stderr([]))
    assert success_rate([True, 0, 1, False]) == 0.5
    assert trajectory_return([1.0, 1.0, 1.0], gamma=0.5) == 1.75
    summary = summarize_returns([1.0, 0.0, 0.5], [True, False, False], ["x", "y", "x"])
    assert summary.per_category["x"].mean_return == 0.75 and summary.per_category["y"].num_episodes == 1
    with pytest.raises(ValueError, match="3 returns but 2 success flags"):
        summarize_returns([1.0, 0.0, 0.5], [True, False])
    with pytest.raises(ValueError, match="episode 1: return must be a finite number"):
        summarize_returns([1.0, float("nan")], [True, False])


@pytest.mark.slow  # `import evaluate` pulls in transformers.pipelines (~10 s on a busy machine)
def test_evaluate_module_loads_offline_and_matches(tmp_path):
    import evaluate

    from trainers.evaluation import METRIC_PATH, summarize_returns

    metric = evaluate.load(METRIC_PATH, cache_dir=str(tmp_path))
    assert type(metric).__name__ == "TrajectoryReturn"
    returns, successes, categories = [1.0, 0.0, 0.5, 0.25], [True, False, False, True], ["a", "a", "b", "b"]
    out = metric.compute(returns=returns, successes=successes, categories=categories)
    assert out == summarize_returns(returns, successes, categories).to_dict()
    assert out["mean_return"] == pytest.approx(0.4375) and out["success_rate"] == 0.5
    assert out["per_category"]["b"]["mean_return"] == pytest.approx(0.375)
    # streaming through add_batch gives the same numbers
    metric.add_batch(returns=returns[:2], successes=successes[:2], categories=categories[:2])
    metric.add_batch(returns=returns[2:], successes=successes[2:], categories=categories[2:])
    assert metric.compute()["stderr"] == pytest.approx(out["stderr"])
    with pytest.raises(ValueError, match="missing"):
        metric.compute(returns=returns, successes=successes)
