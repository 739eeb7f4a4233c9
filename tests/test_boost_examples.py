"""The BOOST examples and the table-1 script end to end on a tiny local model (the pipeline is real,
the numbers are not): data, category split, self-play synthetic data, bilevel training, live
evaluation, weight analysis, and every saved artifact loaded back."""

import json
import shutil
import sys
from pathlib import Path

import datasets
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

pytestmark = pytest.mark.slow

SMALL = [
    "--num_real",
    "16",
    "--num_categories",
    "6",
    "--max_steps",
    "5",
    "--k_psi",
    "2",
    "--k_theta",
    "2",
    "--k_phi",
    "1",
    "--synthetic_max_steps",
    "2",
    "--synthetic_max_new_tokens",
    "8",
    "--num_eval_episodes",
    "2",
    "--eval_max_turns",
    "2",
    "--eval_max_new_tokens",
    "8",
    "--max_length",
    "1024",
    "--lora_r",
    "4",
]


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # the examples use every core


def test_boost_car_dealer_example_saves_loadable_artifacts(tmp_path, tiny_llama_path):
    from trainers.modeling.guidance import load_value_guided_policy
    from trainers.modeling.reweighting_head import ReweightingHead
    from trainers.recipes.boost import main

    out = tmp_path / "run"
    results = main(
        "car_dealer",
        argv=[
            "--model",
            tiny_llama_path,
            "--output_dir",
            str(out),
            "--embedding_cache_dir",
            str(tmp_path / "cache"),
            *SMALL,
        ],
    )
    assert results["method"] == "boost" and results["synthetic"] == results["train"] > 0
    assert results["eval"]["episodes"] == 2 and 0.0 <= results["eval"]["success_rate"] <= 1.0
    saved = json.loads((out / "results.json").read_text())
    assert saved["eval"] == results["eval"] and saved["config"]["trainer"]["method"] == "boost"
    episodes = datasets.load_from_disk(str(out / "eval_trajectories"))
    assert len(episodes) == 2 and all(len(m) >= 3 for m in episodes["messages"])
    synthetic = datasets.load_from_disk(str(out / "synthetic_trajectories"))
    assert set(synthetic["source"]) == {"synthetic"}
    analysis = out / "weights_analysis"
    weights = datasets.load_dataset(
        "parquet", data_files=str(analysis / "weights" / "data" / "*.parquet"), split="train"
    )
    assert len(weights) == results["train"] + results["synthetic"] and set(weights["source"]) == {"real", "synthetic"}
    # weights relative to uniform (1 = the uniform weight), averaging to 1 over the training set
    assert sum(weights["weight"]) / len(weights) == pytest.approx(1.0, abs=1e-3)
    assert weights["relative_change"] == pytest.approx([w - 1 for w in weights["weight"]], abs=1e-6)
    assert (analysis / "relative_weight_change.png").is_file() and (analysis / "weight_vs_distance.png").is_file()
    head = ReweightingHead.from_pretrained(out / "final" / "reweighting_head")
    assert isinstance(head, ReweightingHead)
    policy = load_value_guided_policy(out / "final")
    assert policy.tokenizer is not None and policy.processor is not None


def test_examples_import_only_trainers():
    import ast

    for path in sorted((REPO / "examples").glob("boost_*.py")):
        tree = ast.parse(path.read_text())
        imported = {
            alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
        }
        imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert imported <= {"trainers", "os"}, (path.name, imported)
        assert "sys.path" not in path.read_text(), path.name


def test_recipe_compares_methods_on_the_same_data_and_theta_budget(tmp_path, tiny_llama_path):
    from trainers.recipes.boost import main, theta_updates

    out = tmp_path / "compare"
    results = main(
        "car_dealer",
        methods=("vanilla_synthetic", "boost"),
        argv=[
            "--model",
            tiny_llama_path,
            "--output_dir",
            str(out),
            "--embedding_cache_dir",
            str(tmp_path / "cache"),
            *SMALL,
        ],
    )
    cells = results["methods"]
    assert list(cells) == ["vanilla_synthetic", "boost"]
    # max_steps 5 with K 2/2/1 gives θ 2 updates; Vanilla+Syn gets exactly those, as optimizer steps
    assert theta_updates(5, 2, 2, 1) == 2
    assert cells["vanilla_synthetic"]["theta_updates"] == cells["boost"]["theta_updates"] == 2
    assert cells["vanilla_synthetic"]["optimizer_steps"] == 2 and cells["boost"]["optimizer_steps"] == 5
    weights = cells["boost"]["weights"]
    assert set(weights["mean_weight"]) >= {"real", "synthetic", "expert", "noisy"}
    assert 0.0 <= weights["auc_expert_over_noisy"] <= 1.0
    assert "weights" not in cells["vanilla_synthetic"]
    table = (out / "results.md").read_text()
    assert table.count("\n") == 4 and "| vanilla_synthetic | 2 |" in table and "| boost | 2 |" in table
    assert (out / "comparison.png").is_file() and (out / "boost" / "eval.png").is_file()
    assert any(stage.startswith("boost/train/phi") for stage in results["stages"])
    assert "self-play (synthetic data)" in results["stages"]


def test_reproduce_table1_writes_the_paper_layout(tmp_path, tiny_llama_path):
    import reproduce_table1

    out = tmp_path / "table1"
    argv = [
        "reproduce_table1.py",
        "--envs",
        "twenty_questions",
        "--methods",
        "vanilla",
        "boost",
        "--regimes",
        "high",
        "--model",
        tiny_llama_path,
        "--num_real",
        "16",
        "--num_categories",
        "6",
        "--num_eval_episodes",
        "2",
        "--max_steps",
        "5",
        "--k_psi",
        "2",
        "--k_theta",
        "2",
        "--synthetic_max_steps",
        "2",
        "--eval_max_turns",
        "2",
        "--seeds",
        "0",
        "1",
        "--output_dir",
        str(out),
        "--",
        "--max_length",
        "1024",
        "--bf16",
        "false",
        "--eval_max_new_tokens",
        "8",
        "--synthetic_max_new_tokens",
        "8",
    ]
    old_argv, sys.argv = sys.argv, argv
    try:
        reproduce_table1.main()
    finally:
        sys.argv = old_argv
    table = (out / "table1.md").read_text()
    header, _, row = [line for line in table.splitlines() if line.startswith("|")][:3]
    assert header.startswith("| Environment | Data | Vanilla | Vanilla+Syn | Bilevel Only | BOOST (ours) |")
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:2] == ["Twenty Questions", "High"]
    assert cells[3] == cells[4] == "n/a" and "±" in cells[2] and "±" in cells[5]
    assert "Bilevel Only vs Vanilla: not run" in table  # the claims' verdicts name what is missing
    assert (out / "table1.png").is_file()
    results = json.loads((out / "results.json").read_text())
    assert set(results["seeds"]) == {"0", "1"}
    for seed in ("0", "1"):
        cell = results["seeds"][seed]["twenty_questions"]["high"]
        assert set(cell) == {"vanilla", "boost"}
        # every episode's return is kept, so the table pools the seeds' episodes
        assert len(cell["vanilla"]["eval"]["returns"]) == 2
        assert cell["boost"]["theta_updates"] == cell["vanilla"]["theta_updates"]
    # the per-seed rows: 2 seeds x 2 methods
    assert sum(1 for line in table.splitlines() if line.startswith("| Twenty Questions | high |")) == 4
    # the second run reuses every finished cell instead of training again
    sys.argv = argv
    try:
        reproduce_table1.main()
    finally:
        sys.argv = old_argv
    assert json.loads((out / "results.json").read_text()) == results

    # finished cells copied into another folder (or a folder whose results.json was lost) are reused too
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "results.json").unlink()
    sys.argv = [*argv[: argv.index("--output_dir") + 1], str(copy), *argv[argv.index("--output_dir") + 2 :]]
    try:
        reproduce_table1.main()
    finally:
        sys.argv = old_argv
    assert json.loads((copy / "results.json").read_text()) == results  # same seconds: nothing trained again

    # a later run of another synthetic-data method in the same folder trains on the same self-play set
    cell = out / "seed0" / "twenty_questions" / "high"
    argv[argv.index("--methods") + 1 : argv.index("--regimes")] = ["vanilla_synthetic"]
    argv[argv.index("--seeds") + 1 : argv.index("--output_dir")] = ["0"]
    old_argv, sys.argv = sys.argv, argv
    try:
        reproduce_table1.main()
    finally:
        sys.argv = old_argv
    assert (cell / "boost" / "synthetic_trajectories").is_dir()
    assert (cell / "vanilla_synthetic" / "eval.md").is_file()
    assert not (cell / "vanilla_synthetic" / "synthetic_trajectories").exists()


def test_weight_benchmark_corrupts_built_in_environment_episodes():
    import boost_weight_quality

    from trainers.boost.corruptions import UncorruptibleError, quality_of

    real, val, synthetic = boost_weight_quality.env_cell_data("twenty_questions", "truncated", 0, 4, 3)
    assert len(real) == 4 and len(val) == 3 and len(synthetic) == 8
    assert {row["source"] for row in synthetic} == {"synthetic"} and {row["source"] for row in real} == {"real"}
    assert len({row["id"] for row in real + val + synthetic}) == 15  # every set plays its own tasks
    corrupted = [row for row in synthetic if quality_of(row) == "truncated"]
    assert len(corrupted) == 4
    success = sorted(sum(row["rewards"]) for row in real)[2]
    for row in corrupted:
        # cut at a failing (noisy-policy) turn that claims the median real return
        assert row["rewards"][-1] == success and sum(row["rewards"]) == success
    # Car Dealer's expert sells in one exchange: nothing to shuffle, and the benchmark is told so
    with pytest.raises(UncorruptibleError, match="shuffled"):
        boost_weight_quality.env_cell_data("car_dealer", "shuffled", 0, 4, 3)


def test_weight_benchmark_signal_only_mode_ranks_every_training_row(tmp_path, tiny_llama_path, tiny_tokenizer):
    import argparse

    import boost_weight_quality

    sizes = dict(num_real=8, num_val=8, error_rate=0.05, turns=3)
    args = argparse.Namespace(env="rule", k_psi=1, k_theta=1, batch_size=4, learning_rate=1e-3, **sizes)
    torch.set_num_threads(1)
    cell = boost_weight_quality.signal_cell(tiny_llama_path, tiny_tokenizer, "rule_breaking", 0, {}, args, tmp_path)
    # every row scored (8 real, 8 faithful, 8 rule-breaking): a rule-breaking action's gradient opposes validation's
    assert cell["signal_auc_faithful"] >= 0.9 and cell["signal_auc_real"] >= 0.9
    assert cell["signal_corrupted"] < cell["signal_faithful"]


def test_weight_benchmark_linear_probe_separates_only_what_the_features_hold():
    import boost_weight_quality

    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([1] * 20 + [0] * 20)
    noise = torch.randn(40, 16, generator=generator)
    shifted = noise.clone()
    shifted[:, 3] += 3.0 * labels  # one feature carries the label
    assert boost_weight_quality.linear_probe_auc(shifted, labels) >= 0.95
    # the same features without the shift: held-out AUC near chance, not the training fit's 1.0
    assert 0.2 <= boost_weight_quality.linear_probe_auc(noise, labels) <= 0.8


def test_weight_benchmark_probe_mode_reads_the_heads_input(tmp_path, tiny_llama_path, tiny_tokenizer):
    import argparse

    import boost_weight_quality

    sizes = dict(num_real=8, num_val=8, error_rate=0.05, turns=3)
    args = argparse.Namespace(env="rule", k_psi=1, k_theta=1, batch_size=4, learning_rate=1e-3, **sizes)
    torch.set_num_threads(1)
    cell = boost_weight_quality.probe_cell(tiny_llama_path, tiny_tokenizer, "rule_breaking", 0, {}, args, tmp_path)
    assert cell["n"] == 16  # the synthetic rows: 8 faithful, 8 rule-breaking
    # rule-breaking actions are other tokens: their pooled states differ even in a random model
    assert cell["probe_auc_faithful"] >= 0.9


def test_recipe_defaults_fine_tune_webshop_fully_and_use_lora_elsewhere():
    from trainers.recipes.boost import parse_args

    recipe, config = parse_args("webshop", [])
    assert (recipe.lora_r, config.learning_rate, config.max_length) == (0, 1e-4, 1536)
    recipe, config = parse_args("car_dealer", [])
    assert (recipe.lora_r, config.learning_rate) == (8, 1e-3)
    recipe, config = parse_args("webshop", ["--lora_r", "8", "--learning_rate", "1e-3"])
    assert (recipe.lora_r, config.learning_rate) == (8, 1e-3)  # flags still win


def test_scripted_synthetic_data_replays_the_train_tasks_with_known_quality(tmp_path):
    from trainers.data.splits import check_synthetic_parents
    from trainers.envs import make_env
    from trainers.recipes.boost import generate_synthetic, load_real, parse_args, weights_by_group

    recipe, config = parse_args(
        "car_dealer", ["--num_real", "8", "--synthetic_source", "scripted", "--synthetic_noise", "0.25"]
    )
    env = make_env("car_dealer")
    train = load_real(recipe, env)
    synthetic = generate_synthetic(recipe, config, None, None, train, tmp_path, env=env)
    assert synthetic["task_id"] == train["task_id"]  # one episode per train trajectory, on its task
    assert set(synthetic["source"]) == {"synthetic"} and all(i.startswith("synthetic-") for i in synthetic["id"])
    metadata = [json.loads(meta) for meta in synthetic["metadata"]]
    assert [meta["parent_id"] for meta in metadata] == train["id"]
    check_synthetic_parents(train, synthetic)  # what the trainer checks before it takes them
    players = [meta["policy"] for meta in metadata]
    assert players.count("noisy") == 2 and players.count("expert") == 6  # synthetic_noise 0.25 of 8
    assert (tmp_path / "synthetic_trajectories").is_dir()
    groups = weights_by_group(
        list(train["id"]) + list(synthetic["id"]),
        list(train["source"]) + list(synthetic["source"]),
        [1.0] * len(train) + [2.0 if p == "expert" else 0.5 for p in players],
    )
    assert groups["synthetic_expert"] == [2.0] * 6 and groups["synthetic_noisy"] == [0.5] * 2
    assert len(groups["expert"]) + len(groups["noisy"]) == len(groups["real"]) == 8

    with pytest.raises(ValueError, match="not in the car_dealer environment"):
        generate_synthetic(recipe, config, None, None, train.map(lambda r: {"task_id": "nope"}), tmp_path, env=env)
