"""Weak-to-strong recipe: stage caching and resuming, the study's statistics, the examples as thin CLIs."""

import ast
import json
import math
from pathlib import Path

import pytest

from trainers.data.schema import make_trajectory
from trainers.recipes.weak_to_strong_cache import StageCache, StageOptionsChanged
from trainers.recipes.weak_to_strong_scores import best_of_groups, episode_scores, eto_pairs, weak_success_summary
from trainers.recipes.weak_to_strong_study import STUDY_DEFAULTS, mean_stderr, summarize

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------- stage cache
def _builder(calls, text="artifact"):
    def build(folder):
        calls.append(folder)
        (folder / "value.txt").write_text(text)

    return build


def _load(folder):
    return (folder / "value.txt").read_text()


def test_a_finished_stage_is_loaded_not_rebuilt(tmp_path):
    calls = []
    first = StageCache(tmp_path, log=lambda _: None)
    assert first.run("weak_sft", _builder(calls), _load, {"lr": 2e-4}) == "artifact"
    assert len(calls) == 1 and first.ran == ["weak_sft"]
    assert "weak_sft" in first.times() and first.times()["weak_sft"] >= 0
    # a new run (a resumed study) over the same folder: the build is not called again
    resumed = StageCache(tmp_path, log=lambda _: None)
    assert resumed.run("weak_sft", _builder(calls, "other"), _load, {"lr": 2e-4}) == "artifact"
    assert len(calls) == 1 and resumed.ran == []
    assert resumed.done("weak_sft") and not resumed.done("strong_sft")


def test_a_stage_that_failed_leaves_nothing_and_runs_again(tmp_path):
    def crash(folder):
        (folder / "value.txt").write_text("half")
        raise RuntimeError("killed mid-stage")

    cache = StageCache(tmp_path, log=lambda _: None)
    with pytest.raises(RuntimeError, match="killed mid-stage"):
        cache.run("explore", crash, _load)
    assert not cache.path("explore").exists() and not cache.done("explore")
    assert [p.name for p in tmp_path.iterdir()] == []  # no staging folder left behind
    calls = []
    assert cache.run("explore", _builder(calls), _load) == "artifact" and len(calls) == 1


def test_a_killed_stage_leaves_a_staging_folder_the_next_run_removes(tmp_path):
    (tmp_path / ".explore.tmp-abc123").mkdir()  # what SIGKILL mid-stage leaves behind
    (tmp_path / ".explore.tmp-abc123" / "half.txt").write_text("half")
    cache = StageCache(tmp_path, log=lambda _: None)
    cache.run("explore", _builder([]), _load)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["explore", "stage_times.json"]


def test_a_finished_stage_with_other_options_is_an_error_naming_them(tmp_path):
    cache = StageCache(tmp_path, log=lambda _: None)
    cache.run("strong_sft", _builder([]), _load, {"lr": 2e-4, "epochs": 4})
    with pytest.raises(StageOptionsChanged, match=r"strong_sft.*differ: lr"):
        cache.run("strong_sft", _builder([]), _load, {"lr": 1e-5, "epochs": 4})


# -------------------------------------------------------------------------------------- statistics
def test_mean_stderr_by_hand():
    mean, se = mean_stderr([0.0, 1.0, 1.0, 0.0])
    assert mean == 0.5 and se == pytest.approx(math.sqrt(1 / 3) / 2)
    assert mean_stderr([0.3]) == (0.3, 0.0)
    with pytest.raises(ValueError):
        mean_stderr([])


def test_summarize_pools_the_episodes_of_every_seed():
    per_seed = {
        0: {"sft-strong": {"scores": [0.5, 1.0], "success": [False, True]}, "mcts": None},
        1: {"sft-strong": {"scores": [0.0, 0.5], "success": [False, False]}},
    }
    out = summarize(per_seed)
    assert list(out) == ["sft-strong"]  # a method no seed evaluated is left out
    r = out["sft-strong"]
    assert r["avg_reward"] == pytest.approx(50.0) and r["episodes"] == 4 and r["seeds"] == [0, 1]
    assert r["avg_reward_se"] == pytest.approx(100 * mean_stderr([0.5, 1.0, 0.0, 0.5])[1])
    assert r["success_rate"] == pytest.approx(25.0)
    assert r["per_seed_avg_reward"] == {"0": pytest.approx(75.0), "1": pytest.approx(25.0)}


def test_a_partial_study_says_what_is_missing():
    import argparse

    from trainers.recipes.weak_to_strong_study import missing_results

    args = argparse.Namespace(method_list=["sft-strong", "mcts"], seed_list=[0, 1])
    summary = summarize({0: {"sft-strong": {"scores": [1.0], "success": [True]}}})
    assert missing_results(summary, args) == ["SFT strong (seed 1)", "W2SG MCTS distillation (seed 0, 1)"]
    summary = summarize({s: {m: {"scores": [1.0], "success": [True]} for m in args.method_list} for s in (0, 1)})
    assert missing_results(summary, args) == []


def _row(task, score, sample=0, category=None):
    return make_trajectory(
        [{"role": "user", "content": "task"}, {"role": "assistant", "content": "Action: look"}],
        [score],
        id=f"{task}-{sample}",
        task_id=task,
        source="weak",
        success=score >= 1.0,
        metadata={"final_score": score, "normalized_score": score, "category": category or task.rsplit("-", 1)[0]},
    )


def test_weak_success_summary_counts_tasks_with_a_success_and_with_a_spread():
    rows = [
        _row("a-1", 1.0, 0),
        _row("a-1", 0.0, 1),
        _row("a-2", 0.5, 0),
        _row("a-2", 0.5, 1),
        _row("b-1", 0.0, 0),
        _row("b-1", 0.0, 1),
    ]
    summary = weak_success_summary(rows)
    assert summary["a"] == {
        "tasks": 2,
        "episodes": 4,
        "mean_score": pytest.approx(50.0),
        "success_rate": 25.0,
        "tasks_with_success": 1,
        "tasks_with_spread": 1,
    }
    assert summary["b"]["success_rate"] == 0.0 and summary["b"]["tasks_with_spread"] == 0
    assert summary["all"]["episodes"] == 6 and summary["all"]["tasks_with_success"] == 1
    assert episode_scores(rows)["success"] == [True, False, False, False, False, False]


def test_best_of_groups_keeps_the_best_sample_per_task():
    episodes = {
        "task_ids": ["a", "a", "b", "b"],
        "scores": [0.2, 0.9, 0.0, 0.1],
        "success": [False, False, False, False],
    }
    assert best_of_groups(episodes, 2) == {"task_ids": ["a", "b"], "scores": [0.9, 0.1], "success": [False, False]}


def test_eto_pairs_prefer_the_demonstration_over_failures_only():
    system = {"role": "system", "content": "rules"}
    demo = make_trajectory(
        [system, {"role": "user", "content": "t"}, {"role": "assistant", "content": "Action: focus"}],
        [1.0],
        id="e",
        task_id="a-1",
        source="expert",
    )
    own = [_row("a-1", 0.3), _row("a-1", 1.0, 1)]
    own = [{**r, "messages": [system] + r["messages"] + [{"role": "user", "content": "obs"}]} for r in own]
    pairs = eto_pairs([demo], own)
    assert len(pairs) == 1  # the successful attempt is no rejected example
    assert pairs[0]["prompt"] == [system, {"role": "user", "content": "t"}]
    assert pairs[0]["chosen"] == [{"role": "assistant", "content": "Action: focus"}]
    assert pairs[0]["rejected"][-1]["role"] == "assistant"  # the trailing observation is cut


# --------------------------------------------------------------------------------- study and CLIs
def test_study_defaults_have_the_sizes_the_claims_need(tmp_path):
    from trainers.recipes import weak_to_strong as setup

    parser = setup.build_parser("study")
    parser.set_defaults(**{**STUDY_DEFAULTS, "output_dir": str(tmp_path)})
    args = setup.finish_options(parser.parse_args([]))
    assert len(setup._csv(args.task_names)) * args.train_variations >= 20 and args.explore_samples == 6
    assert args.test_episodes == 64 and len(args.seed_list) == 2
    assert args.method_list == list(setup.METHODS) and args.dpo_nll_weight > 0
    assert args.strong_sft_lr < args.sft_lr  # the strong model's own, lower rate (chosen on dev tasks)


def test_options_are_checked(tmp_path):
    from trainers.recipes import weak_to_strong as setup

    parser = setup.build_parser("x")
    with pytest.raises(SystemExit, match="unknown"):
        setup.finish_options(parser.parse_args(["--methods", "tree-dpo,ppo", "--output-dir", str(tmp_path)]))
    with pytest.raises(SystemExit, match="paths-per-task"):
        setup.finish_options(parser.parse_args(["--paths-per-task", "0", "--output-dir", str(tmp_path)]))


def test_no_effect_pattern_env_is_scienceworlds_own(tmp_path):
    from trainers.envs.scienceworld import NO_EFFECT_PATTERN
    from trainers.recipes import weak_to_strong as setup

    parser = setup.build_parser("x")
    args = setup.finish_options(parser.parse_args(["--no-effect-pattern", "env", "--output-dir", str(tmp_path)]))
    assert args.no_effect_pattern == NO_EFFECT_PATTERN
    with pytest.raises(SystemExit, match="no-effect-pattern"):
        setup.finish_options(
            parser.parse_args(["--env", "webshop", "--no-effect-pattern", "env", "--output-dir", str(tmp_path)])
        )


def test_interleaved_test_tasks_cover_every_type():
    from trainers.envs.base import Task
    from trainers.recipes.weak_to_strong import interleave_by_category

    tasks = [Task(f"a-{i}", "a") for i in range(3)] + [Task(f"b-{i}", "b") for i in range(2)]
    assert [t.task_id for t in interleave_by_category(tasks)] == ["a-0", "b-0", "a-1", "b-1", "a-2"]


@pytest.mark.parametrize(
    "name", ["tree_dpo_scienceworld", "tree_dpo_webshop", "mcts_distill_scienceworld", "mcts_distill_webshop"]
)
def test_examples_are_thin_clis_over_the_library(name):
    source = (ROOT / "examples" / f"{name}.py").read_text()
    tree = ast.parse(source)
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert imported and all(m.split(".")[0] == "trainers" for m in imported), imported
    assert "sys.path" not in source and len(source.splitlines()) < 80


def test_recipe_modules_stay_small():
    for path in (ROOT / "trainers" / "recipes").glob("weak_to_strong*.py"):
        assert len(path.read_text().splitlines()) < 600, path.name


def test_stage_options_are_json(tmp_path):
    cache = StageCache(tmp_path, log=lambda _: None)
    cache.run("s", _builder([]), _load, {"path": tmp_path, "x": 1})
    saved = json.loads((tmp_path / "s" / "stage.json").read_text())
    assert saved["options"] == {"path": str(tmp_path), "x": 1} and saved["seconds"] >= 0


def test_a_sweep_writes_its_own_report_and_keeps_the_study_report():
    from argparse import Namespace

    from trainers.recipes.weak_to_strong_study import report_name

    assert report_name(Namespace(eval_split="test", variant=None)) == "results"
    assert report_name(Namespace(eval_split="dev", variant="lr3e-5")) == "results-dev-lr3e-5"
    assert report_name(Namespace(eval_split="test", variant="plain-dpo")) == "results-plain-dpo"


def _options_only_run(tmp_path, *argv):
    """A study run built from command-line options alone: no environment, no models."""
    from trainers.recipes import weak_to_strong as setup
    from trainers.recipes.weak_to_strong_stages import WeakToStrongRun

    run = object.__new__(WeakToStrongRun)
    run.args = setup.finish_options(setup.build_parser("x").parse_args([*argv, "--output-dir", str(tmp_path)]))
    run.seed = 0
    return run


def test_method_finetune_trains_the_methods_with_lora_over_fully_fine_tuned_sft_stages(tmp_path):
    def run_with(*argv):
        return _options_only_run(tmp_path, *argv)

    default = run_with()
    assert default.peft_config() is None and default.peft_config(default.method_finetune()) is None
    assert "method_finetune" not in default._method_options()  # stages cached before the option still match

    lora_methods = run_with("--method-finetune", "lora")
    assert lora_methods.peft_config() is None  # the SFT stages stay full fine-tuning
    config = lora_methods.peft_config(lora_methods.method_finetune())
    assert config.r == 64 and config.lora_alpha == 128  # the paper's rank, alpha = 2r
    options = lora_methods._method_options()
    assert options["method_finetune"] == "lora" and options["finetune"] == "full"
    assert lora_methods._explore_options() == default._explore_options()  # SFT and explorations are shared

    everything_lora = run_with("--finetune", "lora")
    assert everything_lora.peft_config() is not None and everything_lora.method_finetune() == "lora"


def test_strong_sft_lr_trains_only_the_strong_model_at_its_own_rate(tmp_path, monkeypatch):
    import trl

    from trainers.recipes import weak_to_strong as setup
    from trainers.recipes.weak_to_strong_stages import WeakToStrongRun

    def run_with(*argv):
        return _options_only_run(tmp_path, *argv)

    default, same, slower = run_with(), run_with("--strong-sft-lr", "2e-4"), run_with("--strong-sft-lr", "5e-5")
    # stages cached before the option existed (strong model at --sft-lr) still match
    assert "strong_sft_lr" not in default.strong_sft_options()
    assert same.strong_sft_options() == default.strong_sft_options()
    assert slower.strong_sft_options() == {**default.strong_sft_options(), "strong_sft_lr": 5e-5}

    rates = []

    class RecordingTrainer:  # stands in for TRL's SFTTrainer: what learning rate would it train at?
        def __init__(self, model, args, **kwargs):
            rates.append(args.learning_rate)

        def train(self):
            pass

    monkeypatch.setattr(trl, "SFTTrainer", RecordingTrainer)
    monkeypatch.setattr(WeakToStrongRun, "save_trained", lambda *a: None)
    monkeypatch.setattr("trainers.mcts_distill_trainer.tokenize_for_sft", lambda rows, tok, max_length: rows)
    monkeypatch.setattr(setup, "load_weak", lambda name: (None, None))
    monkeypatch.setattr(setup, "load_strong", lambda strong, weak: ((None, None), "strong"))
    slower.expert = lambda: []
    slower.cache = StageCache(tmp_path / "seed-0", log=lambda _: None)
    slower.weak_sft()
    slower.strong_sft()
    assert rates == [pytest.approx(2e-4), pytest.approx(5e-5)]  # weak at --sft-lr, strong at its own
    saved = json.loads((tmp_path / "seed-0" / "strong_sft" / "stage.json").read_text())
    assert saved["options"]["strong_sft_lr"] == 5e-5
