"""OfflineRLTrainer: training steps, weights, accumulation, LoRA/QLoRA, save/load, resume, live evaluation."""

import json
import os

import pytest
import torch
from transformers import AutoModelForCausalLM

from trainers.data.schema import make_trajectory, to_dataset
from trainers.data.tokenization import TrajectoryCollator, tokenize_dataset
from trainers.losses import weighted_loss
from trainers.modeling import load_value_guided_policy
from trainers.offline_rl_config import OfflineRLConfig
from trainers.offline_rl_trainer import OfflineRLTrainer

QUESTIONS = ["is it an animal", "is it a plant", "can you eat it", "is it food", "is it a tool", "is it blue"]
ANSWERS = ["yes", "no", "maybe"]


def _rows(n=8, weights=None):
    rows = []
    for i in range(n):
        messages = [{"role": "system", "content": "guess the object"}]
        turns = 1 + i % 3
        for k in range(turns):
            messages.append({"role": "user", "content": QUESTIONS[(i + k) % len(QUESTIONS)]})
            messages.append({"role": "assistant", "content": f"Action: {ANSWERS[(i * 7 + k) % 3]}"})
        rewards = [0.0] * (turns - 1) + [float(i % 2)]
        row = make_trajectory(messages, rewards, id=f"traj-{i}", done=i % 4 != 3)
        if weights is not None:
            row["weight"] = float(weights[i])
        rows.append(row)
    return to_dataset(rows)


def _args(tmp_path, name="out", **overrides):
    values = dict(
        output_dir=str(tmp_path / name),
        max_steps=2,
        per_device_train_batch_size=4,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        seed=0,
        data_seed=0,
        max_length=256,
        disable_tqdm=True,
    )
    values.update(overrides)
    return OfflineRLConfig(**values)


def _model(path):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(path)


@pytest.mark.parametrize("loss_type", ["mc", "ilql"])
def test_training_steps_log_value_metrics(tmp_path, tiny_llama_path, tiny_tokenizer, loss_type):
    trainer = OfflineRLTrainer(
        _model(tiny_llama_path),
        _args(tmp_path, loss_type=loss_type),
        train_dataset=_rows(),
        processing_class=tiny_tokenizer,
    )
    before = [p.detach().clone() for p in trainer.value_heads.q_heads.parameters()]
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2 and all(torch.isfinite(torch.tensor(entry["loss"])) for entry in logs)
    expected = {"q_mean", "td_error", "cql", "bc", "q_loss"} | (
        {"v_mean", "v_loss"} if loss_type == "ilql" else {"mc_return_mean"}
    )
    assert expected <= set(logs[0])
    after = list(trainer.value_heads.q_heads.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


def test_fixed_weights_are_honoured(tmp_path, tiny_llama_path, tiny_tokenizer):
    weights = [1.0, 0.0, 3.0, 2.0]
    dataset = _rows(4, weights=weights)
    trainer = OfflineRLTrainer(
        _model(tiny_llama_path), _args(tmp_path), train_dataset=dataset, processing_class=tiny_tokenizer
    )
    collate = TrajectoryCollator(tiny_tokenizer.pad_token_id)
    batch = collate([trainer.train_dataset[i] for i in range(4)])
    assert batch["weights"].tolist() == weights
    trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
        losses, _ = trainer.compute_per_trajectory_losses(trainer.model, batch)
    expected = (torch.tensor(weights) / sum(weights) * losses).sum()
    assert torch.allclose(loss, expected, atol=1e-6)
    assert not torch.allclose(loss, losses.mean(), atol=1e-4)  # it is not the uniform mean
    # the zero-weight trajectory's rewards cannot change the loss
    batch["token_rewards"][1] *= 100.0
    with torch.no_grad():
        assert torch.allclose(trainer.compute_loss(trainer.model, batch), loss, atol=1e-6)
    assert torch.allclose(weighted_loss(losses, batch["weights"]), expected, atol=1e-6)


@pytest.mark.slow
def test_gradient_accumulation_matches_one_big_batch(tmp_path, tiny_llama_path, tiny_tokenizer):
    dataset = _rows(4)
    results = []
    for name, batch_size, accumulation in (("big", 4, 1), ("accumulated", 2, 2)):
        args = _args(
            tmp_path,
            name,
            max_steps=1,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            optim="sgd",
            learning_rate=0.05,
            lr_scheduler_type="constant",
            max_grad_norm=1e9,
            loss_type="ilql",
        )
        trainer = OfflineRLTrainer(
            _model(tiny_llama_path), args, train_dataset=dataset, processing_class=tiny_tokenizer
        )
        trainer.train()
        results.append({k: v.detach().clone() for k, v in trainer.policy.named_parameters()})
    big, accumulated = results
    for name in big:
        assert torch.allclose(big[name], accumulated[name], atol=2e-6), name


def test_lora_step_trains_adapter_and_heads_only_and_polyak_follows(tmp_path, tiny_llama_path, tiny_tokenizer):
    from peft import LoraConfig

    args = _args(tmp_path, loss_type="ilql", max_steps=1, polyak_rate=0.1)
    trainer = OfflineRLTrainer(
        _model(tiny_llama_path),
        args,
        train_dataset=_rows(),
        processing_class=tiny_tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    policy = trainer.policy
    before = {k: v.detach().clone() for k, v in policy.named_parameters()}
    trainable = {k for k, v in policy.named_parameters() if v.requires_grad}
    assert any("lora_" in k for k in trainable) and any(k.startswith("heads.q_heads") for k in trainable)
    assert not any(k.startswith("heads.target_q_heads") for k in trainable)
    assert all("lora_" in k or k.startswith("heads.") for k in trainable)
    trainer.train()
    after = dict(policy.named_parameters())
    for name, value in after.items():
        changed = not torch.equal(before[name], value)
        if "lora_B" in name or name.startswith("heads.q_heads") or name.startswith("heads.v_head"):
            assert changed, f"{name} should have been trained"
        elif not name.startswith("heads.target_q_heads") and "lora_A" not in name:
            assert not changed, f"{name} is frozen but changed"
    # target <- 0.9 * target + 0.1 * online, applied once after the optimizer step
    for name, value in after.items():
        if name.startswith("heads.target_q_heads"):
            online = after[name.replace("target_q_heads", "q_heads")]
            assert torch.allclose(value, 0.9 * before[name] + 0.1 * online.detach(), atol=1e-7), name


@pytest.mark.slow
def test_save_and_load_value_guided_policy_round_trip(tmp_path, tiny_llama_path, tiny_gpt2_path, tiny_tokenizer):
    from peft import LoraConfig

    args = _args(tmp_path, loss_type="ilql", max_steps=2, beta=4.0, learning_rate=5e-3)
    trainer = OfflineRLTrainer(
        _model(tiny_llama_path),
        args,
        train_dataset=_rows(),
        processing_class=tiny_tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    trainer.train()
    trainer.save_model()
    folder = tmp_path / "out"
    assert {"adapter_model.safetensors", "adapter_config.json", "offline_rl_policy.json", "value_heads"} <= set(
        os.listdir(folder)
    )
    assert not (folder / "model.safetensors").exists()
    record = json.loads((folder / "offline_rl_policy.json").read_text())
    assert record["adapter"] is True and record["beta"] == 4.0 and record["loss_type"] == "ilql"
    card = (folder / "value_heads" / "README.md").read_text()
    assert "- cql_weight: `10.0`" in card and "- LoRA: `True`" in card and "library_name: trainers" in card

    prompt = tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": "is it an animal"}], tokenize=False, add_generation_prompt=True
    )
    inputs = tiny_tokenizer(prompt, return_tensors="pt")
    live = trainer.guided_policy()
    live.policy.eval()
    with torch.no_grad():
        expected = live.generate(**inputs, max_new_tokens=8, do_sample=False, pad_token_id=tiny_tokenizer.pad_token_id)
    live.processor.detach()
    loaded = load_value_guided_policy(str(folder))
    assert loaded.beta == 4.0 and loaded.tokenizer is not None and loaded.heads.is_ilql
    with torch.no_grad():
        got = loaded.generate(**inputs, max_new_tokens=8, do_sample=False, pad_token_id=tiny_tokenizer.pad_token_id)
    assert got.tolist() == expected.tolist()
    for (name, a), b in zip(trainer.value_heads.state_dict().items(), loaded.heads.state_dict().values()):
        assert torch.equal(a, b), name
    assert loaded.policy.base.peft_config  # the adapter is loaded, not merged away
    from trainers.modeling import IncompatibleHeadsError

    with pytest.raises(IncompatibleHeadsError, match="recorded in the heads"):
        load_value_guided_policy(str(folder), base_model=tiny_gpt2_path)  # same sizes, another base model
    with pytest.raises(FileNotFoundError, match="not a folder saved by OfflineRLTrainer"):
        load_value_guided_policy(str(folder / "value_heads"))


@pytest.mark.slow
@pytest.mark.parametrize("use_lora", [False, True])
def test_resume_gives_the_same_next_losses(tmp_path, tiny_llama_path, tiny_tokenizer, use_lora):
    from peft import LoraConfig

    def peft_config():
        return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]) if use_lora else None

    dataset = _rows(8)
    common = dict(loss_type="ilql", max_steps=4, per_device_train_batch_size=2, learning_rate=1e-3, polyak_rate=0.2)
    full = OfflineRLTrainer(
        _model(tiny_llama_path),
        _args(tmp_path, "full", save_strategy="steps", save_steps=2, **common),
        train_dataset=dataset,
        processing_class=tiny_tokenizer,
        peft_config=peft_config(),
    )
    full.train()
    full_losses = [e["loss"] for e in full.state.log_history if "loss" in e]
    checkpoint = tmp_path / "full" / "checkpoint-2"
    assert (checkpoint / "value_heads" / "model.safetensors").is_file() and (checkpoint / "optimizer.pt").is_file()

    resumed = OfflineRLTrainer(
        _model(tiny_llama_path),
        _args(tmp_path, "resumed", **common),
        train_dataset=dataset,
        processing_class=tiny_tokenizer,
        peft_config=peft_config(),
    )
    resumed.train(resume_from_checkpoint=str(checkpoint))
    # the restored log history holds steps 1-2; steps 3-4 are the ones computed after resuming
    resumed_losses = [e["loss"] for e in resumed.state.log_history if "loss" in e and e["step"] > 2]
    assert len(resumed_losses) == 2
    assert resumed_losses == pytest.approx(full_losses[2:], abs=1e-5)
    for (name, a), b in zip(full.policy.state_dict().items(), resumed.policy.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_pretokenized_datasets_and_bad_datasets(tmp_path, tiny_llama_path, tiny_tokenizer):
    tokenized = tokenize_dataset(_rows(4), tiny_tokenizer, max_length=256)
    trainer = OfflineRLTrainer(
        _model(tiny_llama_path),
        _args(tmp_path, max_steps=1),
        train_dataset=tokenized,
        eval_dataset=tokenized,
        processing_class=tiny_tokenizer,
    )
    trainer.train()
    metrics = trainer.evaluate()
    assert "eval_loss" in metrics and "eval_q_mean" in metrics
    with pytest.raises(ValueError, match=r"lacks \['token_dones'"):
        OfflineRLTrainer(
            _model(tiny_llama_path),
            _args(tmp_path),
            train_dataset=tokenized.remove_columns("token_dones"),
            processing_class=tiny_tokenizer,
        )
    with pytest.raises(ValueError, match="expected trajectory rows"):
        OfflineRLTrainer(
            _model(tiny_llama_path),
            _args(tmp_path),
            train_dataset=tokenized.select_columns(["id"]),
            processing_class=tiny_tokenizer,
        )
    with pytest.raises(ValueError, match="loss_type"):
        _args(tmp_path, loss_type="ppo")


def test_live_rollout_evaluation_is_called_and_logged(tmp_path, tiny_llama_path, tiny_tokenizer):
    calls = []

    def rollout_fn(policy, env, *, episodes, max_new_tokens, temperature, tokenizer):
        inputs = tokenizer("is it", return_tensors="pt")
        out = policy.generate(**inputs, max_new_tokens=2, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        calls.append((env, episodes, policy.beta, out.shape[1]))
        return {"return_mean": 1.5, "success_rate": 0.25}

    args = _args(tmp_path, max_steps=2, eval_rollout_steps=1, eval_rollout_episodes=3, beta=2.0)
    trainer = OfflineRLTrainer(
        _model(tiny_llama_path),
        args,
        train_dataset=_rows(),
        processing_class=tiny_tokenizer,
        eval_env="scripted-env",
        rollout_fn=rollout_fn,
    )
    trainer.train()
    assert [c[:3] for c in calls] == [("scripted-env", 3, 2.0)] * 2
    logged = [e for e in trainer.state.log_history if "eval_rollout/return_mean" in e]
    assert len(logged) == 2 and logged[0]["eval_rollout/success_rate"] == 0.25
    with pytest.raises(ValueError, match="both eval_env and rollout_fn"):
        OfflineRLTrainer(
            _model(tiny_llama_path), args, train_dataset=_rows(), processing_class=tiny_tokenizer, rollout_fn=rollout_fn
        )


@pytest.mark.slow
def test_qlora_step_on_cpu(tmp_path, tiny_llama_path, tiny_tokenizer):
    from peft import LoraConfig

    args = _args(tmp_path, max_steps=1, load_in_4bit=True)
    trainer = OfflineRLTrainer(
        tiny_llama_path,
        args,
        train_dataset=_rows(4),
        processing_class=tiny_tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    base = trainer.policy.base.get_base_model()
    assert base.is_loaded_in_4bit
    assert type(base.model.layers[0].self_attn.k_proj).__name__ == "Linear4bit"
    heads_before = trainer.value_heads.q_heads[0].projection.weight.detach().clone()
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert logs and torch.isfinite(torch.tensor(logs[0]["loss"]))
    assert not torch.equal(heads_before, trainer.value_heads.q_heads[0].projection.weight)
    trainer.save_model()
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


class ColorEnv:
    """One-step scripted environment: answering with "blue" earns 1, anything else 0."""

    name = "color"
    system_prompt = "guess the object"
    max_steps = 1

    def tasks(self, split=None):
        from trainers.envs import Task

        return [Task(task_id=f"color-{i}", category="colors") for i in range(4)]

    def reset(self, task, seed=None):
        return "is it blue"

    def step(self, action):
        from trainers.envs import StepResult

        reward = 1.0 if "blue" in action else 0.0
        return StepResult("the end", reward, True, {"success": reward > 0})


def _color_rows(n_red=12, n_blue=4):
    env = ColorEnv()
    rows = []
    for i, (answer, reward) in enumerate([("red", 0.0)] * n_red + [("blue", 1.0)] * n_blue):
        messages = [
            {"role": "system", "content": env.system_prompt},
            {"role": "user", "content": "is it blue"},
            {"role": "assistant", "content": answer},
        ]
        rows.append(make_trajectory(messages, [reward], id=f"color-{i}"))
    return to_dataset(rows)


@pytest.mark.slow
def test_value_guided_policy_beats_the_base_policy_in_live_evaluation(tmp_path, tiny_llama_path, tiny_tokenizer):
    # Offline data: the behaviour policy mostly answers "red" (return 0) and sometimes "blue" (return 1).
    # Behaviour cloning makes the base policy say "red"; the MC Q head learns that "blue" is worth more,
    # so the guided policy log pi_base + beta * Q should say "blue".
    args = _args(
        tmp_path,
        loss_type="mc",
        max_steps=40,
        per_device_train_batch_size=8,
        learning_rate=1e-2,
        cql_weight=0.1,
        bc_weight=1.0,
        beta=8.0,
        eval_rollout_episodes=4,
        eval_rollout_max_new_tokens=4,
        eval_rollout_batch_size=4,
        logging_steps=10,
    )
    trainer = OfflineRLTrainer(
        _model(tiny_llama_path), args, train_dataset=_color_rows(), processing_class=tiny_tokenizer, eval_env=ColorEnv()
    )
    trainer.train()
    guided = trainer.evaluate_rollouts()
    base = trainer.evaluate_rollouts(beta=0.0)
    assert base["eval_rollout/return_mean"] == 0.0
    assert guided["eval_rollout/return_mean"] == 1.0
    assert len(trainer.rollout_history) == 2


@pytest.mark.slow
def test_push_and_load_from_a_hub_repo_id(tmp_path, tiny_llama_path, tiny_tokenizer):
    """Trainer folder and standalone heads pushed to a local Hub endpoint, then loaded by repo id."""
    import subprocess
    import sys
    import textwrap

    from peft import LoraConfig

    from trainers.hub import push_folder
    from trainers.testing.hub import LocalHub

    args = _args(tmp_path, loss_type="mc", max_steps=1, beta=2.0, learning_rate=5e-3)
    trainer = OfflineRLTrainer(
        _model(tiny_llama_path),
        args,
        train_dataset=_rows(4),
        processing_class=tiny_tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    trainer.train()
    trainer.save_model()
    prompt = tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": "is it food"}], tokenize=False, add_generation_prompt=True
    )
    ids = tiny_tokenizer(prompt).input_ids
    live = trainer.guided_policy()
    live.policy.eval()
    with torch.no_grad():
        expected = live.generate(
            input_ids=torch.tensor([ids]), max_new_tokens=6, do_sample=False, pad_token_id=tiny_tokenizer.pad_token_id
        )[0].tolist()
    live.processor.detach()

    with LocalHub(tmp_path / "hub") as hub:
        with hub.online():
            push_folder(tmp_path / "out", "me/offline-rl-policy")
            trainer.value_heads.push_to_hub("me/value-heads")
        code = f"""
            import json, torch
            from trainers.modeling import ValueHeads, load_value_guided_policy
            policy = load_value_guided_policy("me/offline-rl-policy")
            with torch.no_grad():
                out = policy.generate(input_ids=torch.tensor([{ids}]), max_new_tokens=6, do_sample=False,
                                      pad_token_id={tiny_tokenizer.pad_token_id})
            heads = ValueHeads.from_pretrained("me/value-heads")
            print(json.dumps({{"tokens": out[0].tolist(), "beta": policy.beta, "base": heads.base_model_name,
                              "same_heads": all(torch.equal(a, b) for a, b in zip(heads.state_dict().values(),
                                                policy.heads.state_dict().values()))}}))
        """
        result = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            env=hub.client_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["tokens"] == expected
    assert loaded["beta"] == 2.0 and loaded["base"] == tiny_llama_path and loaded["same_heads"]


@pytest.mark.slow
def test_activation_checkpointing_gives_the_same_training(tmp_path, tiny_llama_path, tiny_tokenizer):
    from peft import LoraConfig

    runs = []
    for checkpointing in (False, True):
        args = _args(
            tmp_path,
            f"gc-{checkpointing}",
            loss_type="ilql",
            activation_checkpointing=checkpointing,
            learning_rate=1e-3,
        )
        trainer = OfflineRLTrainer(
            _model(tiny_llama_path),
            args,
            train_dataset=_rows(),
            processing_class=tiny_tokenizer,
            peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
        )
        trainer.train()
        assert trainer.policy.base.get_base_model().is_activation_checkpointing == checkpointing
        runs.append([e["loss"] for e in trainer.state.log_history if "loss" in e])
    assert runs[0] == pytest.approx(runs[1], abs=1e-4)


def test_without_bc_the_lm_head_is_untouched_and_the_trunk_trains(tmp_path, tiny_llama_path, tiny_tokenizer):
    args = _args(tmp_path, loss_type="mc", max_steps=1, bc_weight=0.0, learning_rate=1e-3)
    trainer = OfflineRLTrainer(_model(tiny_llama_path), args, train_dataset=_rows(), processing_class=tiny_tokenizer)
    lm_head = trainer.policy.lm_head.weight.detach().clone()
    trunk = trainer.policy.base.model.layers[0].mlp.up_proj.weight.detach().clone()
    trainer.train()
    assert torch.equal(lm_head, trainer.policy.lm_head.weight)
    assert not torch.equal(trunk, trainer.policy.base.model.layers[0].mlp.up_proj.weight)
    assert "bc" not in [e for e in trainer.state.log_history if "loss" in e][0]


@pytest.mark.slow
def test_value_guided_policy_beats_the_base_policy_on_built_in_twenty_questions(
    tmp_path, tiny_llama_path, tiny_tokenizer
):
    # The built-in Twenty Questions with the hidden object "Cat". The offline data mostly guesses "dog"
    # (no reward) and sometimes "cat" (19 questions remaining): behaviour cloning makes the base policy
    # guess "dog" every turn (return 0), while the MC Q head learns that "cat" is worth 19.
    from trainers.envs import make_env

    env = make_env("twenty_questions")
    (cat,) = [task for task in env.tasks() if task.task_id == "Cat"]
    rows = []
    for i, (guess, reward) in enumerate([("dog", 0.0)] * 12 + [("cat", 19.0)] * 4):
        messages = [
            {"role": "system", "content": env.system_prompt},
            {"role": "user", "content": env.reset(cat)},
            {"role": "assistant", "content": f"Is it a {guess}?"},
        ]
        rows.append(
            make_trajectory(messages, [reward], id=f"20q-{i}", task_id="Cat", category="Animals", done=reward > 0)
        )
    args = _args(
        tmp_path,
        loss_type="mc",
        max_steps=40,
        per_device_train_batch_size=8,
        learning_rate=1e-2,
        cql_weight=0.1,
        bc_weight=1.0,
        beta=1.0,
        eval_rollout_episodes=2,
        eval_rollout_max_new_tokens=12,
        eval_rollout_batch_size=2,
        logging_steps=10,
        max_length=512,
    )
    trainer = OfflineRLTrainer(
        _model(tiny_llama_path),
        args,
        train_dataset=to_dataset(rows),
        processing_class=tiny_tokenizer,
        eval_env=env,
        eval_tasks=[cat],
    )
    trainer.train()
    guided = trainer.evaluate_rollouts()
    base = trainer.evaluate_rollouts(beta=0.0)
    assert base["eval_rollout/return_mean"] == 0.0
    assert guided["eval_rollout/return_mean"] == 19.0


def test_the_trainer_uses_every_core_under_accelerate_launch(tmp_path, tiny_llama_path, tiny_tokenizer, monkeypatch):
    from trainers import hardware

    # what `accelerate launch` exports, with its default OMP_NUM_THREADS=1 that the user did not choose
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("TRAINERS_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(hardware, "available_cores", lambda: 3)
    monkeypatch.setattr(hardware, "_launcher_environ", lambda: {"HOME": "/root"})
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        OfflineRLTrainer(
            _model(tiny_llama_path), _args(tmp_path), train_dataset=_rows(), processing_class=tiny_tokenizer
        )
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
