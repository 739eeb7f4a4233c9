"""The weak-to-strong recipe end to end on tiny models and the built-in WebShop: every stage, then a resume."""

import json

import pytest

from trainers.data.schema import metadata_of


@pytest.fixture
def scored_explorations(monkeypatch):
    """Tiny random models never shop well: give the weak explorations spread-out scores so trees have pairs."""
    import trainers.envs.exploration as exploration

    original = exploration.explore

    def explore(*args, **kwargs):
        rows = original(*args, **kwargs)
        if kwargs.get("id_prefix", "weak") == "weak":
            for row in rows:
                meta = metadata_of(row)
                meta["final_score"] = meta["normalized_score"] = [1.0, 0.0, 0.5][meta["sample_index"] % 3]
                row["metadata"] = json.dumps(meta)
        return rows

    monkeypatch.setattr(exploration, "explore", explore)


@pytest.mark.slow
def test_every_stage_runs_and_a_second_run_recomputes_nothing(
    tmp_path, tiny_llama_path, tiny_gpt2_path, scored_explorations, capsys
):
    from trainers.recipes.weak_to_strong_study import main

    argv = [
        "--env",
        "webshop",
        "--smoke",
        "--weak",
        tiny_llama_path,
        "--strong",
        tiny_gpt2_path,
        "--methods",
        "all",
        "--output-dir",
        str(tmp_path / "study"),
        "--max-new-tokens",
        "8",
        "--max-prompt-tokens",
        "512",
        "--sft-epochs",
        "1",
        "--mcts-iterations",
        "20",
    ]
    study = main("test", env="webshop", argv=argv)
    assert set(study["summary"]) == {"sft-weak", "sft-strong", "best-of-n", "eto", "tree-dpo", "mcts"}
    assert all(r["episodes"] == 2 for r in study["summary"].values())
    stages = study["stage_seconds"][0]
    for name in (
        "expert",
        "weak_sft",
        "explore",
        "forest",
        "pairs",
        "mcts_paths",
        "strong_sft",
        "tree_dpo",
        "mcts_distill",
        "eto",
        "eval-tree-dpo",
        "eval-mcts",
        "eval-best-of-n",
    ):
        assert name in stages, name
    assert (tmp_path / "study" / "results.md").exists() and (tmp_path / "study" / "results.png").exists()
    weak = study["weak_explorations"][0]["all"]
    assert weak["episodes"] == 6 and weak["tasks_with_spread"] == 2
    capsys.readouterr()

    # the study folder moved elsewhere keeps its cache
    (tmp_path / "study").rename(tmp_path / "moved")
    argv[argv.index(str(tmp_path / "study"))] = str(tmp_path / "moved")
    again = main("test", env="webshop", argv=argv)
    out = capsys.readouterr().out
    assert "[stage]" not in out and out.count("[cache]") >= len(stages)  # every stage loaded, none rebuilt
    assert again["summary"] == study["summary"]
    # --report-only reads what finished without running anything
    report = main("test", env="webshop", argv=[*argv, "--report-only", "--methods", "sft-weak,mcts,eto"])
    assert report["summary"] == {m: study["summary"][m] for m in ("sft-weak", "mcts", "eto")}
    assert report["weak_explorations"] == study["weak_explorations"]


@pytest.mark.slow
def test_lora_from_the_base_model(tmp_path, tiny_llama_path, tiny_gpt2_path, scored_explorations):
    from transformers import AutoModelForCausalLM

    from trainers.recipes.weak_to_strong_study import main

    argv = [
        "--env",
        "webshop",
        "--smoke",
        "--weak",
        tiny_llama_path,
        "--strong",
        tiny_gpt2_path,
        "--methods",
        "tree-dpo,mcts,eto",
        "--output-dir",
        str(tmp_path),
        "--max-new-tokens",
        "8",
        "--max-prompt-tokens",
        "512",
        "--sft-epochs",
        "1",
        "--mcts-iterations",
        "20",
        "--finetune",
        "lora",
        "--lora-r",
        "4",
        "--strong-init",
        "base",
        "--until",
        "train",
    ]
    main("test", env="webshop", argv=argv)
    for method in ("tree_dpo", "mcts_distill", "eto"):
        folder = tmp_path / "seed-0" / method
        assert not (folder / "adapter_config.json").exists(), method  # adapters merged: a plain checkpoint
        model = AutoModelForCausalLM.from_pretrained(folder)
        assert model.config.model_type == "gpt2"
    assert not (tmp_path / "seed-0" / "eval-mcts").exists()  # --until train stops before evaluation
