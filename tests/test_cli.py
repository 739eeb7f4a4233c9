"""python -m trainers: YAML + command-line parsing per command, clear errors, and a tiny offline-rl run."""

import subprocess
import sys

import pytest
import yaml
from trl import ModelConfig

from trainers import cli
from trainers.cli import COMMANDS, TrainerUnavailableError, main, parse_command


def _yaml(tmp_path, **values):
    values.setdefault("use_cpu", True)  # the configs default to bf16, which TrainingArguments ties to use_cpu here
    values.setdefault("report_to", "none")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def _tiny_run_yaml(tmp_path, model_path, data, out, **values):
    """A short fp32 CPU run of a tiny model: what every end-to-end CLI test shares."""
    settings = dict(
        model_name_or_path=model_path,
        train_dataset=data,
        output_dir=str(out),
        per_device_train_batch_size=2,
        bf16=False,
        save_strategy="no",
        disable_tqdm=True,
        max_length=128,
    )
    return _yaml(tmp_path, **{**settings, **values})


def test_yaml_sets_fields_and_flags_override(tmp_path):
    config = _yaml(
        tmp_path,
        model_name_or_path="owner/model",
        output_dir=str(tmp_path / "out"),
        train_dataset="owner/trajectories",
        learning_rate=3e-5,
        loss_type="ilql",
        gamma=0.9,
        use_peft=True,
        lora_r=16,
    )
    run_args, trainer_args, model_args = parse_command(
        "offline-rl", ["--config", config, "--gamma", "0.5", "--lora_r", "4"]
    )
    assert run_args.train_dataset == "owner/trajectories"
    assert trainer_args.learning_rate == 3e-5 and trainer_args.loss_type == "ilql"
    assert trainer_args.gamma == 0.5  # command line beats YAML
    assert isinstance(model_args, ModelConfig) and model_args.use_peft and model_args.lora_r == 4
    assert model_args.model_name_or_path == "owner/model"


def test_shared_field_goes_to_trainer_config_and_model_config(tmp_path):
    config = _yaml(tmp_path, model_name_or_path="m", output_dir=str(tmp_path / "o"), load_in_4bit=True)
    _, trainer_args, model_args = parse_command("offline-rl", ["--config", config])
    assert trainer_args.load_in_4bit is True and model_args.load_in_4bit is True


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_parses_its_own_config(command, tmp_path):
    config = _yaml(tmp_path, model_name_or_path="m", output_dir=str(tmp_path / "o"), train_dataset="d", seed=7)
    _, trainer_args, _ = parse_command(command, ["--config", config])
    assert type(trainer_args).__name__ == COMMANDS[command].config_class
    assert trainer_args.seed == 7


def test_command_specific_fields(tmp_path):
    config = _yaml(
        tmp_path, model_name_or_path="m", output_dir=str(tmp_path / "o"), val_dataset="v", synthetic_dataset="s"
    )
    run_args, trainer_args, _ = parse_command("boost", ["--config", config, "--method", "bilevel"])
    assert run_args.val_dataset == "v" and run_args.synthetic_dataset == "s" and trainer_args.method == "bilevel"
    with pytest.raises(ValueError, match="not used.*--method"):  # a BOOST-only field is not an offline-rl field
        parse_command("offline-rl", ["--config", config, "--method", "bilevel"])


def test_unknown_yaml_key_is_refused(tmp_path):
    config = _yaml(tmp_path, model_name_or_path="m", output_dir=str(tmp_path / "o"), learning_rat=1e-4)
    with pytest.raises(ValueError, match="learning_rat"):
        parse_command("offline-rl", ["--config", config])


def test_missing_model_is_a_clear_error(tmp_path):
    config = _yaml(tmp_path, output_dir=str(tmp_path / "o"))
    with pytest.raises(SystemExit, match="set model_name_or_path"):
        parse_command("tree-dpo", ["--config", config])


def test_usage_and_unknown_command(capsys):
    assert main([]) == 0
    usage = capsys.readouterr().out
    assert all(name in usage for name in COMMANDS)
    assert main(["sft"]) == 2
    assert "unknown command 'sft'" in capsys.readouterr().err


def test_unavailable_trainer_is_named(monkeypatch, capsys, tmp_path):
    broken = dict(COMMANDS)
    broken["tree-dpo"] = cli._Command(
        "trainers.no_such_module", "TreeDPOTrainer", "trainers.tree_dpo_config", "TreeDPOConfig", "x"
    )
    monkeypatch.setattr(cli, "COMMANDS", broken)
    with pytest.raises(
        TrainerUnavailableError, match=r"'tree-dpo' command needs trainers\.no_such_module\.TreeDPOTrainer"
    ):
        cli._load("tree-dpo")
    assert main(["tree-dpo", "--output_dir", str(tmp_path)]) == 3
    assert "cannot be imported" in capsys.readouterr().err
    # the other commands still load
    assert cli._load("offline-rl")[0].__name__ == "OfflineRLTrainer"


def _trajectories(folder):
    from trainers.data.hub_io import save_trajectories
    from trainers.data.schema import make_trajectory, to_dataset

    rows = [
        make_trajectory(
            [
                {"role": "user", "content": f"is it an animal {i}"},
                {"role": "assistant", "content": "Action: yes"},
                {"role": "user", "content": "no"},
                {"role": "assistant", "content": "Action: is it a tool"},
            ],
            [0.0, float(i % 2)],
            id=f"t{i}",
        )
        for i in range(6)
    ]
    save_trajectories(to_dataset(rows), folder)
    return str(folder)


def test_tiny_offline_rl_run_writes_model_and_reproducible_config(tmp_path, tiny_llama_path):
    data = _trajectories(tmp_path / "data")
    out = tmp_path / "out"
    config = _tiny_run_yaml(tmp_path, tiny_llama_path, data, out, max_steps=2, loss_type="mc", logging_steps=1)
    trainer = cli.run("offline-rl", ["--config", config, "--learning_rate", "1e-3"])
    assert trainer.state.global_step == 2
    assert any("loss" in entry for entry in trainer.state.log_history)
    assert (out / "offline_rl_policy.json").exists() and (out / "value_heads").is_dir()
    saved = yaml.safe_load((out / "run_config.yaml").read_text())
    assert saved["learning_rate"] == 1e-3 and saved["train_dataset"] == data and saved["max_steps"] == 2
    # the written YAML parses back to the same settings
    run_args, trainer_args, model_args = parse_command("offline-rl", ["--config", str(out / "run_config.yaml")])
    assert trainer_args.learning_rate == 1e-3 and run_args.train_dataset == data
    assert model_args.model_name_or_path == tiny_llama_path


@pytest.mark.slow
def test_module_entry_point_runs_offline_rl_with_lora(tmp_path, tiny_llama_path):
    data = _trajectories(tmp_path / "data")
    out = tmp_path / "out"
    config = _tiny_run_yaml(
        tmp_path,
        tiny_llama_path,
        data,
        out,
        max_steps=1,
        use_peft=True,
        lora_r=4,
        lora_target_modules=["q_proj", "v_proj"],
    )
    result = subprocess.run(
        [sys.executable, "-m", "trainers", "offline-rl", "--config", config],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "adapter_model.safetensors").exists() and (out / "adapter_config.json").exists()


@pytest.mark.slow
def test_tiny_mcts_distill_and_tree_dpo_runs(tmp_path, tiny_llama_path):
    import datasets

    data = _trajectories(tmp_path / "paths")
    common = dict(
        model_name_or_path=tiny_llama_path,
        max_steps=1,
        per_device_train_batch_size=2,
        bf16=False,
        save_strategy="no",
        disable_tqdm=True,
        max_length=128,
        logging_steps=1,
    )
    config = _yaml(tmp_path, train_dataset=data, output_dir=str(tmp_path / "mcts"), **common)
    trainer = cli.run("mcts-distill", ["--config", config])
    assert trainer.state.global_step == 1 and (tmp_path / "mcts" / "model.safetensors").exists()

    pairs = datasets.Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": f"task {i}: heat water"}],
                "chosen": [{"role": "assistant", "content": "Action: go to kitchen"}],
                "rejected": [{"role": "assistant", "content": "Action: open door"}],
            }
            for i in range(4)
        ]
    )
    pairs.to_parquet(str(tmp_path / "pairs.parquet"))
    config = _yaml(tmp_path, train_dataset=str(tmp_path / "pairs.parquet"), output_dir=str(tmp_path / "dpo"), **common)
    trainer = cli.run("tree-dpo", ["--config", config, "--beta", "0.2"])
    assert trainer.args.beta == 0.2 and trainer.state.global_step == 1
    assert (tmp_path / "dpo" / "model.safetensors").exists() and (tmp_path / "dpo" / "run_config.yaml").exists()


@pytest.mark.slow
def test_qlora_flags_from_the_command_line(tmp_path, tiny_llama_path):
    # The documented QLoRA command, on CPU: 4-bit base through bitsandbytes, LoRA adapter trained.
    data = _trajectories(tmp_path / "data")
    config = _yaml(
        tmp_path,
        model_name_or_path=tiny_llama_path,
        train_dataset=data,
        output_dir=str(tmp_path / "out"),
        max_steps=1,
        per_device_train_batch_size=2,
        bf16=False,
        save_strategy="no",
        disable_tqdm=True,
        max_length=128,
        lora_target_modules=["q_proj", "v_proj"],
        lora_r=4,
    )
    trainer = cli.run("offline-rl", ["--config", config, "--load_in_4bit", "true", "--use_peft", "true"])
    base = trainer.policy.base
    assert base.peft_config and any("4bit" in type(m).__name__ for m in base.modules())
    assert (tmp_path / "out" / "adapter_model.safetensors").exists()
