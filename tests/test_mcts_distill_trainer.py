"""MCTSDistillTrainer: trains on MCTS best paths, assistant tokens only; saves and reloads."""

import math

import datasets
import pytest
import torch
from test_tree import FakeEmbedder, trajectory
from transformers import AutoModelForCausalLM

from trainers.mcts_distill_config import MCTSDistillConfig
from trainers.mcts_distill_trainer import MCTSDistillTrainer, NoBestPathsError
from trainers.tree import best_path_rows, build_forest, run_mcts

INSTR = "task : heat water"


def _forest():
    # Empirically "pick up thermometer" looks better (0.6 vs 0.25), but MCTS finds the winning leaf
    # under "go to kitchen".
    rows = [trajectory("t", [(INSTR, "go", "go to kitchen"), ("stove", "", "heat water")], 1.0, id="win")]
    rows += [
        trajectory("t", [(INSTR, "go", "go to kitchen"), ("stove", "", f"open door {i}")], 0.0, id=f"lose{i}")
        for i in range(3)
    ]
    rows += [
        trajectory("t", [(INSTR, "", "pick up thermometer"), ("thermometer", "", "focus on thermometer")], 0.6, id="ok")
    ]
    rows += [trajectory("fail", [("other task", "", "look around")], 0.0, id="f")]
    return build_forest(rows, embedder=FakeEmbedder(), similarity_on="observation", show_progress=False)


def _args(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=1,
        max_length=256,
        report_to="none",
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        mcts_iterations=200,
        seed=0,
    )
    values.update(overrides)
    return MCTSDistillConfig(**values)


def test_config_defaults_follow_the_paper(tmp_path):
    args = MCTSDistillConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False)
    assert (args.mcts_iterations, args.exploration_constant, args.learning_rate) == (1000, 1.41, 1e-5)
    with pytest.raises(ValueError, match="mcts_iterations"):
        MCTSDistillConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, mcts_iterations=0)


def test_trains_on_best_path_assistant_tokens_only(tmp_path, tiny_tokenizer, tiny_llama):
    trainer = MCTSDistillTrainer(tiny_llama, args=_args(tmp_path), forest=_forest(), processing_class=tiny_tokenizer)
    assert [row["task_id"] for row in trainer.best_paths] == ["t"]  # the all-failure task is left out
    assistant = [m["content"] for m in trainer.best_paths[0]["messages"] if m["role"] == "assistant"]
    assert assistant == ["Thought: go\nAction: go to kitchen", "Action: heat water"]
    example = trainer.train_dataset[0]
    ids, labels = example["input_ids"], example["labels"]
    trained = tiny_tokenizer.decode([i for i, label in zip(ids, labels) if label != -100])
    assert trained == "".join(content + "<|im_end|>" for content in assistant)
    assert "stove" in tiny_tokenizer.decode(ids) and "stove" not in trained


def test_train_save_reload_and_best_paths(tmp_path, tiny_tokenizer, tiny_llama):
    before = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    results = run_mcts(_forest(), iterations=100, show_progress=False)
    trainer = MCTSDistillTrainer(
        tiny_llama,
        args=_args(tmp_path, max_steps=3, learning_rate=1e-3),
        mcts_results=results,
        processing_class=tiny_tokenizer,
    )
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    trainer.save_model(str(tmp_path / "model"))
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    trained = trainer.model.state_dict()
    assert any(not torch.equal(before[k], trained[k]) for k in before)
    for key, value in reloaded.state_dict().items():
        assert torch.equal(value, trained[key]), key
    trainer.save_best_paths(tmp_path / "paths")
    saved = datasets.load_from_disk(str(tmp_path / "paths"))
    assert saved[0]["messages"] == trainer.best_paths[0]["messages"] and saved[0]["source"] == "mcts"


def test_takes_saved_best_path_rows(tmp_path, tiny_tokenizer, tiny_llama):
    rows = best_path_rows(run_mcts(_forest(), iterations=50, show_progress=False), min_path_value=None)
    from trainers.data.schema import to_dataset

    trainer = MCTSDistillTrainer(
        tiny_llama, args=_args(tmp_path), train_dataset=to_dataset(rows), processing_class=tiny_tokenizer
    )
    assert len(trainer.train_dataset) == 2


def test_nothing_to_imitate_is_a_clear_error(tmp_path, tiny_tokenizer, tiny_llama):
    failing = build_forest(
        [trajectory("f", [(INSTR, "", "look around")], 0.0, id="x")], embedder=FakeEmbedder(), show_progress=False
    )
    with pytest.raises(NoBestPathsError, match="every exploration of every task failed"):
        MCTSDistillTrainer(tiny_llama, args=_args(tmp_path), forest=failing, processing_class=tiny_tokenizer)
    with pytest.raises(ValueError, match="exactly one of forest"):
        MCTSDistillTrainer(tiny_llama, args=_args(tmp_path), processing_class=tiny_tokenizer)


def test_config_validates_with_field_names(tmp_path):
    for bad, field in [
        (dict(exploration_constant=float("nan")), "exploration_constant"),
        (dict(min_path_value=1.5), "min_path_value"),
        (dict(min_path_value=float("-inf")), "min_path_value"),
        (dict(paths_per_task=0), "paths_per_task"),
        (dict(learning_rate=-1.0), "learning_rate"),
    ]:
        with pytest.raises(ValueError, match=field):
            _args(tmp_path, **bad)
    assert _args(tmp_path, min_path_value=None).min_path_value is None


def test_paths_per_task_and_min_path_value_choose_the_training_paths(tmp_path, tiny_tokenizer, tiny_llama):
    one = MCTSDistillTrainer(tiny_llama, args=_args(tmp_path), forest=_forest(), processing_class=tiny_tokenizer)
    two = MCTSDistillTrainer(
        tiny_llama, args=_args(tmp_path, paths_per_task=2), forest=_forest(), processing_class=tiny_tokenizer
    )
    assert [r["rewards"][-1] for r in one.best_paths] == [1.0]
    assert [r["rewards"][-1] for r in two.best_paths] == pytest.approx([1.0, 0.6])
    high = MCTSDistillTrainer(
        tiny_llama,
        args=_args(tmp_path, paths_per_task=2, min_path_value=0.7),
        forest=_forest(),
        processing_class=tiny_tokenizer,
    )
    assert [r["rewards"][-1] for r in high.best_paths] == [1.0]


def test_checkpoints_are_staged_and_resume_from_the_newest_complete_one(tmp_path, tiny_tokenizer, tiny_llama):
    from trainers.checkpointing import COMPLETE_MARKER

    args = _args(tmp_path, save_strategy="steps", save_steps=1, save_total_limit=1, max_steps=2, logging_steps=1)
    MCTSDistillTrainer(tiny_llama, args=args, forest=_forest(), processing_class=tiny_tokenizer).train()
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith((".", "checkpoint"))) == ["checkpoint-2"]
    assert (out / "checkpoint-2" / COMPLETE_MARKER).is_file()
    # a newer checkpoint that a kill left without its marker is skipped, not resumed from
    (out / "checkpoint-3").mkdir()
    (out / "checkpoint-3" / "trainer_state.json").write_text("{}")
    args = _args(tmp_path, save_strategy="no", max_steps=3, logging_steps=1)
    resumed = MCTSDistillTrainer(tiny_llama, args=args, forest=_forest(), processing_class=tiny_tokenizer)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 3
