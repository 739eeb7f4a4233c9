"""Crash-safe checkpoints and saves: kill -9 loops, interrupted rotations, failed artifact writes."""

import errno
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from trainers.checkpointing import (
    COMPLETE_MARKER,
    IncompleteCheckpointError,
    latest_complete_checkpoint,
    list_checkpoints,
    rotate,
    write_complete_marker,
)
from trainers.data.schema import make_trajectory, to_dataset
from trainers.modeling.policy import ValueHeadPolicy
from trainers.modeling.value_heads import ValueHeads
from trainers.offline_rl_config import OfflineRLConfig
from trainers.offline_rl_trainer import OfflineRLTrainer

torch.set_num_threads(1)
DRIVER = Path(__file__).with_name("kill_loop_driver.py")


# ------------------------------------------------------------------------------ the kill loop
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["offline", "bilevel"])
def test_kill_loop_every_resume_continues_the_same_run(tmp_path, kind):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    completed = subprocess.run(
        [sys.executable, str(DRIVER), kind, str(tmp_path), "--kills", "20", "--seed", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert summary["kills"] >= 20
    # the kills hit checkpoint writes and rotations, not only training steps
    assert summary["kills_during_save_or_rotation"] >= 5, summary
    assert summary["errors"] == [] and summary["unexpected_exits"] == [] and summary["final_exit"] == 0, summary
    assert summary["stalled_lives"] == 0, summary
    # later lives resumed from real checkpoints, and the newest complete one never went backwards
    assert any(step for step in summary["resumed_from"]), summary["resumed_from"]
    assert summary["newest_checkpoint_regressions"] == 0
    assert summary["leftovers"] == []
    reference, final = summary["reference"], summary["final"]
    assert final["finished"] == reference["finished"] == summary["max_steps"]
    # the killed-and-resumed run logged exactly the losses of the run that was never interrupted
    assert [step for step, _ in final["losses"]] == list(range(1, summary["max_steps"] + 1))
    assert [loss for _, loss in final["losses"]] == pytest.approx([loss for _, loss in reference["losses"]], abs=1e-6)


# ------------------------------------------------------------------------------ rotation and resume (no training)
def _fake_checkpoint(run_dir: Path, step: int, complete: bool = True) -> Path:
    folder = run_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (folder / "model.safetensors").write_bytes(b"x" * (100 + step))
    if complete:
        write_complete_marker(folder, step)
    return folder


def test_rotation_orders_by_step_not_by_modification_time(tmp_path):
    for step in (1, 2, 3):
        _fake_checkpoint(tmp_path, step)
    # an interrupted deletion (the old behaviour) leaves an old folder with fresh mtime and some files gone
    os.remove(tmp_path / "checkpoint-1" / "model.safetensors")
    os.utime(tmp_path / "checkpoint-1", (time.time() + 100, time.time() + 100))
    newest = _fake_checkpoint(tmp_path, 4)
    deleted = rotate(tmp_path, 2, keep=newest)
    assert sorted(p.name for p in deleted) == ["checkpoint-1", "checkpoint-2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-3", "checkpoint-4"]


def test_rotation_after_a_resume_from_an_earlier_checkpoint_keeps_the_newer_ones(tmp_path):
    for step in (5, 6, 7, 8):
        _fake_checkpoint(tmp_path, step)
    deleted = rotate(tmp_path, 2, keep=tmp_path / "checkpoint-6")  # the run resumed from 5 and just wrote 6
    assert [p.name for p in deleted] == ["checkpoint-5"]


def test_rotation_keeps_the_best_and_the_newest(tmp_path):
    for step in (1, 2, 3, 4):
        _fake_checkpoint(tmp_path, step)
    rotate(tmp_path, 1, keep=tmp_path / "checkpoint-4", best=tmp_path / "checkpoint-2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-4"]


def test_a_truncated_file_makes_a_checkpoint_incomplete(tmp_path, caplog):
    _fake_checkpoint(tmp_path, 1)
    _fake_checkpoint(tmp_path, 2)
    _fake_checkpoint(tmp_path, 3, complete=False)
    with open(tmp_path / "checkpoint-2" / "model.safetensors", "r+b") as handle:
        handle.truncate(10)
    with caplog.at_level(logging.WARNING, logger="trainers.checkpointing"):
        assert latest_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-1"
    assert "checkpoint-2: model.safetensors has 10 bytes, 102 were written" in caplog.text
    assert f"checkpoint-3: {COMPLETE_MARKER} is missing" in caplog.text
    complete, incomplete = list_checkpoints(tmp_path)
    assert complete == [tmp_path / "checkpoint-1"] and len(incomplete) == 2


# ------------------------------------------------------------------------------ trainer-level behaviour
def _rows():
    return to_dataset(
        [
            make_trajectory(
                [
                    {"role": "user", "content": f"is it an animal {i}"},
                    {"role": "assistant", "content": "yes " * (i % 3 + 1)},
                ],
                [float(i % 2)],
                id=f"t{i}",
            )
            for i in range(8)
        ]
    )


def _trainer(tmp_path, tiny_llama_path, tokenizer, cls=OfflineRLTrainer, **overrides):
    values = dict(
        output_dir=str(tmp_path / "out"),
        max_steps=2,
        per_device_train_batch_size=4,
        logging_steps=1,
        report_to=[],
        bf16=False,
        use_cpu=True,
        save_strategy="steps",
        save_steps=1,
        save_total_limit=2,
        disable_tqdm=True,
        seed=0,
    )
    values.update(overrides)
    return cls(
        AutoModelForCausalLM.from_pretrained(tiny_llama_path),
        OfflineRLConfig(**values),
        train_dataset=_rows(),
        processing_class=tokenizer,
    )


def test_resume_true_skips_an_incomplete_newest_checkpoint(tmp_path, tiny_llama_path, tiny_tokenizer, caplog):
    _trainer(tmp_path, tiny_llama_path, tiny_tokenizer).train()
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-1", "checkpoint-2"]
    os.remove(out / "checkpoint-2" / "value_heads" / "model.safetensors")
    resumed = _trainer(tmp_path, tiny_llama_path, tiny_tokenizer, max_steps=3)
    with caplog.at_level(logging.WARNING, logger="trainers.checkpointing"):
        resumed.train(resume_from_checkpoint=True)
    assert "skipping incomplete checkpoint" in caplog.text and "checkpoint-2" in caplog.text
    steps = [e["step"] for e in resumed.state.log_history if "loss" in e]
    assert steps == [1, 2, 3]  # step 1 came from checkpoint-1's history, steps 2 and 3 were trained again
    # the incomplete checkpoint was rotated away; the new ones are complete
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-2", "checkpoint-3"]
    assert list_checkpoints(out)[1] == {}

    with pytest.raises(IncompleteCheckpointError, match="value_heads/model.safetensors is missing"):
        os.remove(out / "checkpoint-3" / "value_heads" / "model.safetensors")
        trainer = _trainer(tmp_path, tiny_llama_path, tiny_tokenizer, max_steps=4)
        trainer.train(resume_from_checkpoint=str(out / "checkpoint-3"))


def test_resume_true_without_any_complete_checkpoint_names_what_it_skipped(tmp_path, tiny_llama_path, tiny_tokenizer):
    _fake_checkpoint(tmp_path / "out", 5, complete=False)
    trainer = _trainer(tmp_path, tiny_llama_path, tiny_tokenizer)
    expected = r"(?s)no complete checkpoint .*checkpoint-5: checkpoint_complete.json is missing"
    with pytest.raises(IncompleteCheckpointError, match=expected):
        trainer.train(resume_from_checkpoint=True)


class _FailingExtras(OfflineRLTrainer):
    def _save_checkpoint_extras(self, checkpoint_dir):
        if self.state.global_step == 2:
            raise OSError(errno.ENOSPC, "No space left on device (injected)")


def test_a_failed_checkpoint_write_publishes_nothing(tmp_path, tiny_llama_path, tiny_tokenizer):
    trainer = _trainer(tmp_path, tiny_llama_path, tiny_tokenizer, cls=_FailingExtras)
    with pytest.raises(OSError, match="injected"):
        trainer.train()
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-1"]
    assert latest_complete_checkpoint(out) == out / "checkpoint-1"


# ------------------------------------------------------------------------------ policy saves
def _policy(tiny_llama):
    return ValueHeadPolicy(tiny_llama, ValueHeads.for_model(tiny_llama))


@pytest.mark.parametrize("failing", ["value_heads", "extra_artifacts"])
def test_a_failed_policy_save_never_leaves_a_loadable_mix(tmp_path, tiny_llama, monkeypatch, failing):
    folder = tmp_path / "policy"
    policy = _policy(tiny_llama)
    policy.save_pretrained(folder)
    assert ValueHeadPolicy.from_pretrained(folder, check_name=False) is not None
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.add_(1.0)

    def fail(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device (injected)")

    extra = None
    if failing == "value_heads":
        monkeypatch.setattr(ValueHeads, "_save_pretrained", fail)
    else:
        extra = fail
    with pytest.raises(OSError, match="injected"):
        policy.save_pretrained(folder, extra_artifacts=extra)
    with pytest.raises(FileNotFoundError, match="holds an incomplete save"):
        ValueHeadPolicy.from_pretrained(folder, check_name=False)
    fresh = _policy(AutoModelForCausalLM.from_config(tiny_llama.config))
    with pytest.raises(FileNotFoundError, match="holds an incomplete save"):
        fresh.load_weights_from(folder)
    if failing == "value_heads":
        # the heads folder itself is swapped atomically: the old heads are intact, not half-written
        old = ValueHeads.from_pretrained(str(folder / "value_heads"))
        assert not torch.equal(old.q_heads[0].projection.weight, policy.heads.q_heads[0].projection.weight)


def test_a_policy_save_removes_the_staging_folder_a_killed_save_left(tmp_path, tiny_llama):
    folder = tmp_path / "policy"
    stale = folder / ".policy-base-dead1"  # what SIGKILL during the base weights' save leaves
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    _policy(tiny_llama).save_pretrained(folder)
    assert not stale.exists() and not [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert ValueHeadPolicy.from_pretrained(folder, check_name=False) is not None


def test_atomic_save_removes_what_a_killed_save_left_behind(tmp_path):
    from trainers.hub import atomic_save

    (tmp_path / ".artifact.tmp-dead1").mkdir()
    (tmp_path / ".artifact.old-dead2").mkdir()
    (tmp_path / ".other.tmp-keep").mkdir()  # another artifact's staging folder is not ours to remove
    with atomic_save(tmp_path / "artifact") as staging:
        (staging / "weights.bin").write_bytes(b"v1")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-keep", "artifact"]
