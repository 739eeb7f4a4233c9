"""BilevelReweightTrainer: Algorithm 1 phases, the φ gradient, methods, exact resume, saved artifacts."""

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, TrainerCallback

from trainers.bilevel_config import BilevelReweightConfig
from trainers.bilevel_trainer import BilevelReweightTrainer, load_bilevel_artifacts
from trainers.data.schema import TrajectoryValidationError, to_dataset
from trainers.losses.offline_rl import per_trajectory_losses
from trainers.modeling.reweighting_head import ReweightingHead
from trainers.modeling.value_heads import ValueHeads
from trainers.offline_rl_config import OfflineRLConfig
from trainers.offline_rl_trainer import OfflineRLTrainer
from trainers.testing import yes_no_trajectories

torch.set_num_threads(1)


_rows = yes_no_trajectories


@pytest.fixture
def data():
    return {
        "train": to_dataset(_rows(8)),
        "val": to_dataset(_rows(4, offset=1)),
        "synthetic": to_dataset(_rows(8, "synthetic", offset=3)),
    }


def _args(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path / "out"),
        method="boost",
        k_psi=2,
        k_theta=2,
        k_phi=1,
        max_steps=5,
        per_device_train_batch_size=4,
        logging_steps=1,
        report_to=[],
        bf16=False,
        save_strategy="no",
        embedding_cache_dir=str(tmp_path / "cache"),
        alpha=1.0,
        reweight_learning_rate=1e-2,
        use_cpu=True,
        seed=3,
        bc_weight=1.0,
        cql_weight=1.0,
        learning_rate=1e-3,
    )
    values.update(overrides)
    return BilevelReweightConfig(**values)


def _trainer(tmp_path, model, tokenizer, data, callbacks=None, **overrides):
    return BilevelReweightTrainer(
        model,
        _args(tmp_path, **overrides),
        train_dataset=data["train"],
        val_dataset=data["val"],
        synthetic_dataset=data["synthetic"],
        processing_class=tokenizer,
        callbacks=callbacks,
    )


def _groups(trainer):
    policy = trainer.policy
    return {
        "backbone": {k: v.detach().clone() for k, v in policy.base.named_parameters()},
        "theta_heads": {k: v.detach().clone() for k, v in policy.heads.state_dict().items()},
        "psi_heads": {k: v.detach().clone() for k, v in policy.psi_heads.state_dict().items()},
        "phi": {k: v.detach().clone() for k, v in trainer.reweighting_head.state_dict().items()},
    }


def _changed(before, after):
    return {g for g in before if any(not torch.equal(before[g][k], after[g][k]) for k in before[g])}


class Recorder(TrainerCallback):
    def __init__(self):
        self.trainer, self.steps, self.synced = None, [], []

    def on_step_begin(self, args, state, control, **kwargs):
        self.before = _groups(self.trainer)
        policy = self.trainer.policy
        upcoming = self.trainer.phase_at(state.global_step)
        if upcoming.phase == "theta" and upcoming.step_in_phase == 0:  # right after the θ <- ψ copy
            self.synced.append(
                all(
                    torch.equal(a, b)
                    for a, b in zip(policy.heads.state_dict().values(), policy.psi_heads.state_dict().values())
                )
            )

    def on_step_end(self, args, state, control, **kwargs):
        # runs before the trainer's own callback, so this sees the step's effect before any θ <- ψ copy
        phase = self.trainer.phase_at(state.global_step - 1)[0]
        self.steps.append((phase, _changed(self.before, _groups(self.trainer))))


@pytest.mark.slow
def test_phase_order_and_parameter_groups(tmp_path, tiny_llama, tiny_tokenizer, data):
    recorder = Recorder()
    trainer = _trainer(tmp_path, tiny_llama, tiny_tokenizer, data, callbacks=[recorder], max_steps=10)
    recorder.trainer = trainer
    trainer.train()
    phases = [p for p, _ in recorder.steps]
    assert phases == ["psi", "psi", "theta", "theta", "phi"] * 2
    for phase, changed in recorder.steps:
        expected = {"psi": {"psi_heads"}, "theta": {"theta_heads", "backbone"}, "phi": {"phi"}}[phase]
        assert changed == expected, (phase, changed)
    assert recorder.synced == [True, True]
    logs = [log for log in trainer.state.log_history if "phase" in log]
    assert [log["phase"] for log in logs] == [0, 0, 1, 1, 2] * 2
    assert all("n_eff" in log for log in logs) and any("weight_mean_real" in log for log in logs)
    assert any("weight_mean_synthetic" in log for log in logs)
    assert all("val_loss" in log for log in logs if log["phase"] == 1)


@pytest.mark.slow
def test_phi_warmup_steps_learn_weights_before_thetas_first_step(tmp_path, tiny_llama, tiny_tokenizer, data):
    recorder = Recorder()
    trainer = _trainer(
        tmp_path, tiny_llama, tiny_tokenizer, data, callbacks=[recorder], max_steps=7, phi_warmup_steps=2
    )
    recorder.trainer = trainer
    weights_at_theta_start = []

    class WeightsBeforeTheta(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if trainer.phase_at(state.global_step) == ("theta", 0, 0):
                batch = trainer.data_collator([trainer.train_dataset[i] for i in range(16)])
                weights_at_theta_start.append(trainer.batch_weights(batch))

    trainer.add_callback(WeightsBeforeTheta())
    trainer.train()
    assert [p for p, _ in recorder.steps] == ["phi", "phi", "psi", "psi", "theta", "theta", "phi"]
    assert [changed for _, changed in recorder.steps[:2]] == [{"phi"}, {"phi"}]  # only the head moves
    assert recorder.synced == [True]
    (weights,) = weights_at_theta_start
    assert weights.std() > 0  # θ's first step already uses learned, not uniform, weights
    assert trainer.bilevel_state()["phi_warmup_steps"] == 2


def test_phi_warmup_needs_the_alignment_signal(tmp_path):
    with pytest.raises(ValueError, match="phi_warmup_steps needs phi_signal='val_alignment'"):
        _args(tmp_path, phi_warmup_steps=1, phi_signal="paper")
    with pytest.raises(ValueError, match="phi_warmup_steps"):
        _args(tmp_path, phi_warmup_steps=-1)


@pytest.mark.parametrize("bf16", [False, True])
def test_embeddings_run_in_bf16_only_where_the_run_and_the_hardware_choose_it(
    tmp_path, tiny_llama, tiny_tokenizer, data, monkeypatch, bf16
):
    monkeypatch.setenv("TRAINERS_PRECISION_EMBEDDING", "bf16")  # as a CPU with native bf16 would choose
    trainer = _trainer(tmp_path, tiny_llama, tiny_tokenizer, data, bf16=bf16)
    assert trainer.embedding_dtype == (torch.bfloat16 if bf16 else torch.float32)
    assert trainer.embeddings.dtype == torch.float32


def test_weights_uniform_at_start_and_sum_to_one(tmp_path, tiny_llama, tiny_tokenizer, data):
    trainer = _trainer(tmp_path, tiny_llama, tiny_tokenizer, data)
    assert len(trainer.training_rows) == 16 and int(trainer.is_synthetic.sum()) == 8
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(0, 16, 3)])
    weights = trainer.batch_weights(batch)
    assert torch.allclose(weights, torch.full((6,), 1 / 6))
    torch.nn.init.normal_(trainer.reweighting_head.mlp[-1].weight, std=1.0)
    weights = trainer.batch_weights(batch)
    assert weights.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert weights.std() > 0


def test_phi_gradient_matches_finite_differences(tmp_path, tiny_llama, tiny_tokenizer, data):
    trainer = _trainer(tmp_path, tiny_llama, tiny_tokenizer, data, alpha=2.0, reweight_hidden_dim=8, phi_signal="paper")
    torch.manual_seed(0)
    head = trainer.reweighting_head.double()
    for parameter in head.parameters():
        torch.nn.init.normal_(parameter, std=0.3)
    with torch.no_grad():  # make ψ differ from θ
        for parameter in trainer.policy.psi_heads.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in (0, 5, 9, 14)]))
    trainer.state.global_step = 4  # k_psi + k_theta: a φ step
    assert trainer.phase_at(4)[0] == "phi"
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    analytic = [p.grad.detach().clone() for p in head.parameters()]

    # the phase-4 objective, built independently: L_val(θ) + α (Σ w_i l_i(θ) − Σ w_i l_i(ψ)), with the
    # same loss definition for θ and ψ (the shared LM head's behaviour-cloning term cancels)
    config = trainer.loss_config_no_bc
    with torch.no_grad():
        hidden = trainer.policy.hidden_states(batch["input_ids"], batch["attention_mask"])
        l_theta, _ = per_trajectory_losses(hidden, trainer.policy.heads, batch, config)
        l_psi, _ = per_trajectory_losses(hidden, trainer.policy.psi_heads, batch, config)
        val_loss = trainer.compute_per_trajectory_losses(trainer.model, trainer._val_batch(4, 99))[0].mean()
    emb = trainer.embeddings[batch["traj_index"]].double()

    def objective():
        w = torch.softmax(head(emb), 0)
        return float(val_loss) + 2.0 * float((w * l_theta.double()).sum() - (w * l_psi.double()).sum())

    eps = 1e-6
    scale = max(float(g.abs().max()) for g in analytic)
    for parameter, grad in zip(head.parameters(), analytic):
        flat, g = parameter.data.view(-1), grad.view(-1)
        for index in range(0, flat.numel(), max(1, flat.numel() // 5)):
            original = flat[index].item()
            flat[index] = original + eps
            up = objective()
            flat[index] = original - eps
            down = objective()
            flat[index] = original
            assert g[index].item() == pytest.approx((up - down) / (2 * eps), rel=1e-3, abs=1e-4 * scale)
    assert any(g.abs().sum() > 0 for g in analytic)


def _value_heads(model, seed=0):
    torch.manual_seed(seed)
    return ValueHeads.for_model(model, loss_type="mc")


@pytest.mark.slow
def test_vanilla_equals_offline_rl_trainer(tmp_path, tiny_llama_path, tiny_tokenizer, data):
    common = dict(
        per_device_train_batch_size=4,
        max_steps=4,
        logging_steps=1,
        report_to=[],
        bf16=False,
        save_strategy="no",
        use_cpu=True,
        seed=5,
        learning_rate=1e-3,
        cql_weight=1.0,
    )
    model_a = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    model_b = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    heads = _value_heads(model_a)
    reference = OfflineRLTrainer(
        model_a,
        OfflineRLConfig(output_dir=str(tmp_path / "a"), **common),
        train_dataset=data["train"],
        processing_class=tiny_tokenizer,
        value_heads=copy.deepcopy(heads),
    )
    ours = BilevelReweightTrainer(
        model_b,
        BilevelReweightConfig(output_dir=str(tmp_path / "b"), method="vanilla", **common),
        train_dataset=data["train"],
        synthetic_dataset=data["synthetic"],
        processing_class=tiny_tokenizer,
        value_heads=copy.deepcopy(heads),
    )
    assert len(ours.training_rows) == 8  # vanilla: real rows only
    reference.train()
    ours.train()
    losses_a = [log["loss"] for log in reference.state.log_history if "loss" in log]
    losses_b = [log["loss"] for log in ours.state.log_history if "loss" in log]
    assert losses_a == losses_b and len(losses_a) == 4
    for (name, a), (_, b) in zip(reference.policy.state_dict().items(), ours.policy.state_dict().items()):
        assert torch.equal(a, b), name


def test_methods_need_their_data(tmp_path, tiny_llama, tiny_tokenizer, data):
    with pytest.raises(ValueError, match="no synthetic trajectories"):
        BilevelReweightTrainer(
            tiny_llama,
            _args(tmp_path, method="boost"),
            train_dataset=data["train"],
            val_dataset=data["val"],
            processing_class=tiny_tokenizer,
        )
    with pytest.raises(ValueError, match="no synthetic trajectories"):
        BilevelReweightTrainer(
            tiny_llama,
            _args(tmp_path, method="vanilla_synthetic"),
            train_dataset=data["train"],
            processing_class=tiny_tokenizer,
        )
    with pytest.raises(ValueError, match="val_dataset is missing"):
        BilevelReweightTrainer(
            tiny_llama, _args(tmp_path, method="bilevel"), train_dataset=data["train"], processing_class=tiny_tokenizer
        )
    with pytest.raises(ValueError, match="val_dataset is empty"):
        BilevelReweightTrainer(
            tiny_llama,
            _args(tmp_path, method="boost"),
            train_dataset=data["train"],
            val_dataset=data["val"].select([]),
            synthetic_dataset=data["synthetic"],
            processing_class=tiny_tokenizer,
        )
    with pytest.raises(ValueError, match="row 0 .*real trajectories only"):
        BilevelReweightTrainer(
            tiny_llama,
            _args(tmp_path, method="bilevel"),
            train_dataset=data["train"],
            val_dataset=data["synthetic"],
            processing_class=tiny_tokenizer,
        )
    leaky = to_dataset([{**row, "metadata": '{"parent_id": "real-1-0"}'} for row in _rows(2, "synthetic", offset=3)])
    with pytest.raises(TrajectoryValidationError, match="parent 'real-1-0' is not a train trajectory"):
        BilevelReweightTrainer(
            tiny_llama,
            _args(tmp_path, method="boost"),
            train_dataset=data["train"],
            val_dataset=data["val"],
            synthetic_dataset=leaky,
            processing_class=tiny_tokenizer,
        )
    orphan = to_dataset([{**row, "metadata": "{}"} for row in _rows(2, "synthetic", offset=3)])
    with pytest.raises(TrajectoryValidationError, match="does not record the train trajectory"):
        BilevelReweightTrainer(
            tiny_llama,
            _args(tmp_path, method="vanilla_synthetic"),
            train_dataset=data["train"],
            synthetic_dataset=orphan,
            processing_class=tiny_tokenizer,
        )
    with pytest.raises(ValueError, match="method must be one of"):
        _args(tmp_path, method="magic")
    paper = _args(tmp_path, learning_rate=1e-4, reweight_learning_rate=None, phi_signal="paper")
    assert paper.reweight_learning_rate == pytest.approx(1e-5)
    assert _args(tmp_path, learning_rate=1e-4, reweight_learning_rate=None).reweight_learning_rate == pytest.approx(
        1e-3
    )
    bilevel = BilevelReweightTrainer(
        tiny_llama,
        _args(tmp_path, method="bilevel"),
        train_dataset=data["train"],
        val_dataset=data["val"],
        synthetic_dataset=data["synthetic"],
        processing_class=tiny_tokenizer,
    )
    assert len(bilevel.training_rows) == 8 and not bilevel.is_synthetic.any()


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
        return control


def _snapshot(trainer):
    return {
        **{f"policy.{k}": v.clone() for k, v in trainer.policy.state_dict().items()},
        **{f"phi.{k}": v.clone() for k, v in trainer.reweighting_head.state_dict().items()},
    }


@pytest.mark.slow
def test_exact_resume_mid_outer_iteration(tmp_path, tiny_llama_path, tiny_tokenizer, data):
    def run(out, **kw):
        model = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
        return _trainer(tmp_path, model, tiny_tokenizer, data, output_dir=str(out), max_steps=8, **kw)

    straight = run(tmp_path / "straight")
    straight.train()
    # checkpoint after 3 steps: inside outer iteration 0, one θ step done, one to go
    first = run(tmp_path / "resumed", save_strategy="steps", save_steps=3, callbacks=[StopAt(3)])
    first.train()  # interrupted after step 3 (same max_steps, so the same learning-rate schedule)
    assert first.state.global_step == 3
    checkpoint = tmp_path / "resumed" / "checkpoint-3"
    assert (checkpoint / "reweighting_optimizer.pt").is_file() and (checkpoint / "psi_value_heads").is_dir()
    import json

    state = json.loads((checkpoint / "bilevel_state.json").read_text())
    assert state["next_phase"] == "theta" and state["step_in_phase"] == 1 and state["outer_iteration"] == 0
    resumed = run(tmp_path / "resumed", save_strategy="no")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    a, b = _snapshot(straight), _snapshot(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (
        resumed.reweighting_optimizer.state_dict()["state"][0]["step"]
        == straight.reweighting_optimizer.state_dict()["state"][0]["step"]
    )


@pytest.mark.slow
def test_save_and_from_pretrained_of_every_artifact(tmp_path, tiny_llama, tiny_tokenizer, data):
    trainer = _trainer(tmp_path, tiny_llama, tiny_tokenizer, data, max_steps=5)
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    loaded = load_bilevel_artifacts(tmp_path / "final")
    for (name, a), (_, b) in zip(
        trainer.policy.heads.state_dict().items(), loaded["policy"].heads.state_dict().items()
    ):
        assert torch.equal(a, b), name
    for (name, a), (_, b) in zip(
        trainer.policy.psi_heads.state_dict().items(), loaded["psi_value_heads"].state_dict().items()
    ):
        assert torch.equal(a, b), name
    x = trainer.embeddings[:5]
    assert torch.equal(loaded["reweighting_head"](x), trainer.reweighting_head(x))
    assert loaded["state"]["global_step"] == 5 and loaded["state"]["next_phase"] == "psi"
    card = (tmp_path / "final" / "reweighting_head" / "README.md").read_text()
    assert "input normalization=none (embeddings: action_mean_nll)" in card
    with pytest.raises(ValueError, match="trained on"):
        ReweightingHead.from_pretrained(tmp_path / "final" / "reweighting_head", expected_embedding_dim=7)
    weights = trainer.trajectory_weights()
    assert weights.column_names == ["id", "source", "weight", "relative_change"]
    assert sum(weights["weight"]) == pytest.approx(16.0, rel=1e-5)
    assert set(weights["source"]) == {"real", "synthetic"}


@pytest.mark.slow
def test_separate_adapters_mode(tmp_path, tiny_llama, tiny_tokenizer, data):
    from peft import LoraConfig

    recorder = Recorder()
    trainer = BilevelReweightTrainer(
        tiny_llama,
        _args(tmp_path, aux_mode="separate_adapters", max_steps=5, bc_weight=0.0),
        train_dataset=data["train"],
        val_dataset=data["val"],
        synthetic_dataset=data["synthetic"],
        processing_class=tiny_tokenizer,
        peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
        callbacks=[recorder],
    )
    recorder.trainer = trainer
    trainer.train()
    for phase, changed in recorder.steps:
        expected = {"psi": {"psi_heads", "backbone"}, "theta": {"theta_heads", "backbone"}, "phi": {"phi"}}[phase]
        assert changed == expected, (phase, changed)
    names = dict(trainer.policy.base.named_parameters())
    theta = {k: v for k, v in names.items() if ".default." in k}
    psi = {k.replace(".default.", ".psi."): v for k, v in theta.items()}
    assert all(k in names for k in psi)
    # the θ phase moved θ's adapter away from ψ's after the copy
    assert any(not torch.equal(names[k], v) for k, v in psi.items())
    assert recorder.synced == [True]


def test_offline_rl_trainer_seeds_before_drawing_its_heads(tmp_path, tiny_llama_path, tiny_tokenizer, data):
    heads = []
    for noise in (1, 2):
        torch.manual_seed(noise)  # whatever the global RNG state, args.seed decides the new heads
        model = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
        trainer = OfflineRLTrainer(
            model,
            OfflineRLConfig(output_dir=str(tmp_path / f"o{noise}"), seed=5, report_to=[], use_cpu=True, bf16=False),
            train_dataset=data["train"],
            processing_class=tiny_tokenizer,
        )
        heads.append(trainer.policy.heads.state_dict())
    assert heads[0].keys() == heads[1].keys()
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
    assert any(v.abs().sum() > 0 for v in heads[0].values())


@pytest.mark.slow
@pytest.mark.parametrize("accumulation", [1, 2])
def test_split_theta_backward_equals_one_combined_backward(
    tmp_path, tiny_llama_path, tiny_tokenizer, data, accumulation
):
    """L_val's backward then α·L_train's (the memory-saving default) = one backward of the sum."""

    def run(split):
        model = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
        trainer = _trainer(
            tmp_path,
            model,
            tiny_tokenizer,
            data,
            output_dir=str(tmp_path / f"split-{split}"),
            split_theta_backward=split,
            max_steps=5,
            per_device_train_batch_size=2,
            gradient_accumulation_steps=accumulation,
            val_batch_size=2,
            alpha=0.5,
            # φ's default signal standardises over a micro-batch of 2: two near-equal cosines
            # would turn round-off differences of θ into ±1; the paper's gap is continuous in θ
            phi_signal="paper",
        )
        trainer.train()
        logs = [
            value
            for log in trainer.state.log_history
            if log.get("phase") == 1
            for value in (log["loss"], log["val_loss"])
        ]
        return _snapshot(trainer), logs

    (split, split_logs), (combined, combined_logs) = run(True), run(False)
    assert len(split_logs) == 4
    assert split_logs == pytest.approx(combined_logs, rel=1e-5)
    for key in split:
        torch.testing.assert_close(split[key], combined[key], rtol=1e-4, atol=1e-6, msg=key)


def test_rows_passed_as_synthetic_are_labelled_synthetic(tmp_path, tiny_llama, tiny_tokenizer, data):
    # a self-play set whose rows say source="self_play" (or "real") is still the synthetic data
    relabelled = data["synthetic"].map(lambda row, i: {"source": "self_play" if i % 2 else "real"}, with_indices=True)
    trainer = BilevelReweightTrainer(
        tiny_llama,
        _args(tmp_path, max_steps=5),
        train_dataset=data["train"],
        val_dataset=data["val"],
        synthetic_dataset=relabelled,
        processing_class=tiny_tokenizer,
    )
    assert trainer.is_synthetic.tolist() == [False] * 8 + [True] * 8
    assert trainer.bilevel_state()["synthetic_trajectories"] == 8
    weights = trainer.trajectory_weights()
    assert weights["source"] == ["real"] * 8 + ["synthetic"] * 8
    trainer.train()
    logs = [log for log in trainer.state.log_history if "weight_mean_synthetic" in log]
    assert logs, "the per-source logs never saw a synthetic row"


@pytest.mark.parametrize("mode", ["none", "center", "standardize"])
def test_head_input_normalization_is_fitted_on_the_training_embeddings(
    tmp_path, tiny_llama, tiny_tokenizer, data, mode
):
    trainer = _trainer(tmp_path, tiny_llama, tiny_tokenizer, data, reweight_input_normalization=mode)
    head, embeddings = trainer.reweighting_head, trainer.embeddings
    if mode == "none":
        assert torch.equal(head.input_mean, torch.zeros_like(head.input_mean))
        assert torch.equal(head.input_scale, torch.ones_like(head.input_scale))
        return
    assert torch.allclose(head.input_mean, embeddings.mean(0), atol=1e-5)
    spread = (
        embeddings.std(0)
        if mode == "standardize"
        else embeddings.std(0).pow(2).mean().sqrt().expand(embeddings.shape[1])
    )
    assert torch.allclose(head.input_scale, spread.clamp_min(1e-3 * float(spread.mean())), rtol=1e-4)
    # a head passed in keeps its own statistics (they belong to the data it was trained on)
    trained = ReweightingHead(embeddings.shape[1], base_model_id=head.base_model_id)
    trained.fit_input_normalization(embeddings * 2.0, mode=mode)
    kept = trained.input_mean.clone()
    passed = BilevelReweightTrainer(
        tiny_llama,
        _args(tmp_path / "passed", reweight_input_normalization=mode),
        train_dataset=data["train"],
        val_dataset=data["val"],
        synthetic_dataset=data["synthetic"],
        processing_class=tiny_tokenizer,
        reweighting_head=trained,
    )
    assert torch.equal(passed.reweighting_head.input_mean, kept)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"alpha": float("nan")}, "alpha must be a finite number"),
        ({"weight_temperature": float("inf")}, "weight_temperature must be a finite number"),
        ({"reweight_learning_rate": float("nan")}, "reweight_learning_rate must be a finite number"),
        ({"reweight_learning_rate": -1e-3}, "reweight_learning_rate must be >= 0"),
        ({"max_length": 0}, "max_length must be >= 1"),
        ({"phi_signal": "gap"}, "phi_signal must be one of"),
        ({"embedding_pooling": "first"}, "embedding_pooling must be one of"),
        ({"reweight_input_normalization": "whiten"}, "reweight_input_normalization must be one of"),
        ({"weight_temperature": 0.0}, "weight_temperature must be > 0"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        _args(tmp_path, **overrides)


def test_config_help_lists_choices_and_full_text():
    from dataclasses import fields

    by_name = {f.name: f for f in fields(BilevelReweightConfig)}
    assert by_name["phi_signal"].metadata["choices"] == ["val_alignment", "adapter_alignment", "paper"]
    assert by_name["method"].metadata["choices"] == ["vanilla", "vanilla_synthetic", "bilevel", "boost"]
    for name in ("phi_signal", "weight_temperature", "embedding_pooling", "k_psi", "reweight_learning_rate"):
        assert name in BilevelReweightConfig.__doc__, name
        assert len(by_name[name].metadata["help"]) > 30, name


def test_phi_batch_size_draws_a_wider_batch_for_the_phi_step(tmp_path, tiny_llama, tiny_tokenizer, data):
    trainer = _trainer(tmp_path, tiny_llama, tiny_tokenizer, data, max_steps=1, phi_warmup_steps=1, phi_batch_size=12)
    trainer.train()
    (log,) = [log for log in trainer.state.log_history if log.get("phase") == 2]
    # uniform weights at the first φ step: n_eff is the number of trajectories it ranked (the loader's batch is 4)
    assert log["n_eff"] == pytest.approx(12.0)
    with pytest.raises(ValueError, match="phi_batch_size needs phi_signal='val_alignment'"):
        _args(tmp_path, phi_batch_size=8, phi_signal="paper")


def _alignment_batches(trainer):
    """Four training trajectories and four validation ones, collated as the φ step receives them."""
    keys = ("input_ids", "attention_mask", "action_mask", "token_rewards", "token_dones", "turn_ids")

    def collate(rows):
        batch = trainer.data_collator(rows)
        return {k: batch[k] for k in keys if k in batch}

    train = [trainer.train_dataset[i] for i in (0, 3, 9, 14)]
    return collate(train), collate([trainer.val_tokenized[i] for i in range(4)])


def test_validation_alignment_is_the_cosine_of_per_trajectory_gradients(tmp_path, tiny_llama, tiny_tokenizer, data):
    from trainers.boost.alignment import validation_alignment

    trainer = _trainer(tmp_path, tiny_llama, tiny_tokenizer, data)
    policy, config = trainer.policy, trainer.loss_config
    batch, val = _alignment_batches(trainer)
    scores = validation_alignment(policy, batch, val, config)

    # directly: gradients of each trajectory's loss in the whole batch, w.r.t. the value heads and LM head
    parameters = list(policy.heads.parameters()) + [policy.lm_head.weight]

    def flat_grad(loss):
        grads = torch.autograd.grad(loss, parameters, allow_unused=True, retain_graph=True)
        return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, parameters)])

    with torch.no_grad():
        hidden = policy.hidden_states(batch["input_ids"], batch["attention_mask"]).float()
        val_hidden = policy.hidden_states(val["input_ids"], val["attention_mask"]).float()
    val_grad = flat_grad(per_trajectory_losses(val_hidden, policy.heads, val, config, lm_head=policy.lm_head)[0].mean())
    losses, _ = per_trajectory_losses(hidden, policy.heads, batch, config, lm_head=policy.lm_head)
    expected = torch.stack([torch.nn.functional.cosine_similarity(flat_grad(loss), val_grad, dim=0) for loss in losses])
    torch.testing.assert_close(scores, expected.detach(), atol=1e-5, rtol=1e-4)
    assert scores.std() > 0


def test_adapter_alignment_is_the_centred_cosine_of_adapter_gradients(tmp_path, tiny_llama, tiny_tokenizer, data):
    from peft import LoraConfig

    from trainers.boost.alignment import adapter_alignment, adapter_parameters

    trainer = BilevelReweightTrainer(
        tiny_llama,
        _args(tmp_path, phi_signal="adapter_alignment", aux_mode="separate_adapters", max_steps=5),
        train_dataset=data["train"],
        val_dataset=data["val"],
        synthetic_dataset=data["synthetic"],
        processing_class=tiny_tokenizer,
        peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    policy, config = trainer.policy, trainer.loss_config
    parameters = adapter_parameters(policy)
    names = {id(p): n for n, p in policy.base.named_parameters()}
    # θ's adapter only: ψ's copy (separate_adapters) and the heads are left out
    assert parameters and all(".default." in names[id(p)] and "lora_" in names[id(p)] for p in parameters)
    batch, val = _alignment_batches(trainer)
    scores = adapter_alignment(policy, batch, val, config)

    # directly: each trajectory's gradient in the whole batch, the mean of the validation ones, both centred
    def flat_grad(loss):
        grads = torch.autograd.grad(loss, parameters, retain_graph=True)
        return torch.cat([g.flatten() for g in grads])

    def trajectory_grads(rows):
        hidden = policy.hidden_states(rows["input_ids"], rows["attention_mask"]).float()
        losses, _ = per_trajectory_losses(hidden, policy.heads, rows, config, lm_head=policy.lm_head)
        return torch.stack([flat_grad(loss) for loss in losses])

    grads, val_grad = trajectory_grads(batch), trajectory_grads(val).mean(0)
    mean = grads.mean(0)
    expected = torch.nn.functional.cosine_similarity(grads - mean, (val_grad - mean)[None], dim=1)
    torch.testing.assert_close(scores, expected.detach(), atol=1e-4, rtol=1e-3)
    assert scores.std() > 0

    # the trainer's φ steps run on it
    trainer.train()
    assert any("val_alignment_mean" in log for log in trainer.state.log_history)


def test_adapter_alignment_needs_a_lora_adapter_and_no_deepspeed(tmp_path, tiny_llama, tiny_tokenizer, data):
    with pytest.raises(ValueError, match="needs a LoRA adapter"):
        _trainer(tmp_path, tiny_llama, tiny_tokenizer, data, phi_signal="adapter_alignment")
    with pytest.raises(ValueError, match="adapter_alignment.*DeepSpeed"):
        _args(tmp_path, phi_signal="adapter_alignment", deepspeed={"zero_optimization": {"stage": 2}})
