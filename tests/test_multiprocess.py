"""Really start 2 processes (torchrun / accelerate launch) and train every trainer under DDP, DeepSpeed
ZeRO-2 and ZeRO-3 on CPU, then load the saved artifacts back.

One launch per backend runs all trainers a few steps each in the same processes, which keeps the
cost of process start-up (imports, rendezvous, DeepSpeed init) to three launches. The launched
script writes one JSON file per rank and trainer into ``<out>/results/`` (not stdout, where two
ranks' lines can interleave); the tests assert on those.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from trainers.testing.hub import free_port

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "examples" / "accelerate_configs"
# Which trainers run under which backend (boost = BilevelReweightTrainer, one full outer iteration).
DDP_TRAINERS = ("plain", "offline-rl", "tree-dpo", "mcts-distill", "boost")
ZERO2_TRAINERS = ("plain", "offline-rl", "tree-dpo", "mcts-distill", "boost")
# boost last under ZeRO-3: by then from_pretrained partitions the weights at load (zero.Init, once a
# ZeRO-3 TrainingArguments exists), which the trainers must cope with (value-head sizes and the
# trajectory embeddings are read from gathered weights).
ZERO3_TRAINERS = ("offline-rl", "plain", "tree-dpo", "mcts-distill", "boost")

SCRIPT = textwrap.dedent(
    r'''
    """Train each requested trainer 2-3 steps under the launcher's distributed setup and save it.

    Loading back happens in the test process: under ZeRO-3 every from_pretrained is a collective.
    """
    import json, os, sys, traceback
    import torch

    torch.set_num_threads(1)
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir, out_root, names = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    deepspeed = os.environ.get("MP_DEEPSPEED_CONFIG") or None
    rank = int(os.environ.get("RANK", "0"))
    common = dict(max_steps=2, per_device_train_batch_size=2, use_cpu=True, bf16=False, report_to="none",
                  save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0, deepspeed=deepspeed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def fresh():
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_pretrained(model_dir)

    def rows(n, source="real", offset=0):
        from trainers.data.schema import make_trajectory, to_dataset
        qs = ["is it an animal", "is it a plant", "can you eat it", "is it a tool"]
        return to_dataset([
            make_trajectory(
                [{"role": "user", "content": qs[(i + offset) % 4]}, {"role": "assistant", "content": "Action: yes"},
                 {"role": "user", "content": "no"}, {"role": "assistant", "content": f"Action: {qs[i % 4]}"}],
                [0.0, float((i + offset) % 2)], id=f"{source}-{offset}-{i}", source=source,
                metadata={"parent_id": f"real-0-{i}"} if source == "synthetic" else None)
            for i in range(n)])

    def phi_gradients(trainer):
        """phi's gradient on one global batch of 4 trajectories: 2 ranks x 2 vs 1 process x (2 + 2).

        Per-rank normalisation: each rank's softmax runs over its own micro-batch and phi's gradient is
        averaged over the ranks, which must equal one process accumulating the same two micro-batches.
        """
        rows_ = [0, 5, 9, 14]
        halves = [rows_[:2], rows_[2:]]
        head = trainer.reweighting_head
        trainer.model_wrapped.train()
        # a phi step
        steps, trainer.state.global_step = trainer.state.global_step, trainer.args.k_psi + trainer.args.k_theta

        def grads(indices):
            # every forward goes through the wrapped model (under ZeRO-3 a forward is a collective, run
            # the same number of times on each rank); autograd.grad reaches phi only, so no DDP / ZeRO
            # gradient hook of the policy fires outside the trainer's own backward
            batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in indices]))
            gradients = torch.autograd.grad(trainer.compute_loss(trainer.model_wrapped, batch), list(head.parameters()))
            for parameter, gradient in zip(head.parameters(), gradients):
                parameter.grad = gradient
            return list(head.parameters())

        grads(halves[rank])
        two = torch.cat([p.grad.flatten() for p in trainer._reduce_reweighting_gradients()])
        one = sum(torch.cat([p.grad.flatten() for p in grads(h)]) for h in halves) / 2
        whole = torch.cat([p.grad.flatten() for p in grads(rows_)])
        head.zero_grad(set_to_none=True)
        trainer.state.global_step = steps
        return {"phi_grad_scale": float(one.abs().max()), "phi_grad_diff": float((two - one).abs().max()),
                "phi_grad_diff_vs_global_softmax": float((two - whole).abs().max())}

    def checksum(model):
        # Identical on every rank under DDP / ZeRO-2 (replicated parameters); ZeRO-3 shards them.
        return float(sum(p.detach().double().sum() for p in model.parameters()))

    def run(name, out):
        extra = {}
        if name == "plain":
            from transformers import Trainer, TrainingArguments
            texts = ["buy now blue item", "search red shoes", "click next page", "is it an animal yes"] * 4
            padded = (tokenizer(t).input_ids[:6] + [tokenizer.pad_token_id] * (6 - len(tokenizer(t).input_ids[:6]))
                      for t in texts)
            data = [{"input_ids": ids, "labels": list(ids)} for ids in padded]
            trainer = Trainer(model=fresh(), args=TrainingArguments(out, **common), train_dataset=data)
            trainer.train(); trainer.save_model(out)
        elif name == "offline-rl":
            from trainers.offline_rl_config import OfflineRLConfig
            from trainers.offline_rl_trainer import OfflineRLTrainer
            trainer = OfflineRLTrainer(fresh(), OfflineRLConfig(out, max_length=64, **common), train_dataset=rows(8),
                                       processing_class=tokenizer)
            trainer.train(); trainer.save_model(out)
        elif name == "boost":
            from trainers.bilevel_config import BilevelReweightConfig
            from trainers.bilevel_trainer import BilevelReweightTrainer
            # val_batch_size 4 = the whole validation set: every micro-step of the phi-gradient check below
            # then sees the same validation gradient, on one process as on two
            args = BilevelReweightConfig(out, method="boost", k_psi=1, k_theta=1, k_phi=1, max_length=64,
                                         val_batch_size=4, embedding_cache_dir=os.path.join(out_root, f"emb-{rank}"),
                                         **{**common, "max_steps": 3})
            trainer = BilevelReweightTrainer(fresh(), args, train_dataset=rows(8), val_dataset=rows(4, offset=1),
                                             synthetic_dataset=rows(8, "synthetic", offset=3),
                                             processing_class=tokenizer)
            trainer.train(); trainer.save_model(out)
            extra = phi_gradients(trainer)
            # theta <- psi on (possibly ZeRO-3 partitioned) heads, saved again: the test compares the two saves
            trainer.sync_theta_from_psi(); trainer.save_model(out + "-synced")
        elif name == "tree-dpo":
            import datasets
            from trainers.tree_dpo_config import TreeDPOConfig
            from trainers.tree_dpo_trainer import TreeDPOTrainer
            pairs = datasets.Dataset.from_list([
                {"prompt": [{"role": "user", "content": f"task {i}: heat water"}],
                 "chosen": [{"role": "assistant", "content": "Action: go to kitchen"}],
                 "rejected": [{"role": "assistant", "content": "Action: open door"}]} for i in range(8)])
            trainer = TreeDPOTrainer(fresh(), ref_model=fresh(), args=TreeDPOConfig(out, max_length=64, **common),
                                     train_dataset=pairs, processing_class=tokenizer)
            trainer.train(); trainer.save_model(out)
        elif name == "mcts-distill":
            from trainers.mcts_distill_config import MCTSDistillConfig
            from trainers.mcts_distill_trainer import MCTSDistillTrainer
            trainer = MCTSDistillTrainer(fresh(), args=MCTSDistillConfig(out, max_length=64, **common),
                                         train_dataset=rows(8), processing_class=tokenizer)
            trainer.train(); trainer.save_model(out)
        result = {"world_size": trainer.args.world_size, "steps": trainer.state.global_step,
                  "losses": [e["loss"] for e in trainer.state.log_history if "loss" in e],
                  "deepspeed": trainer.is_deepspeed_enabled, "checksum": checksum(trainer.model),
                  # ZeRO-3 replaces each parameter by a partitioned one carrying a ds_id
                  "zero3_partitioned": any(hasattr(p, "ds_id") for p in trainer.model.parameters()), **extra}
        return result

    for name in names:
        out = os.path.join(out_root, name)
        try:
            result = run(name, out)
        except Exception as error:
            result = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-3000:]}
        results_dir = os.path.join(out_root, "results")
        os.makedirs(results_dir, exist_ok=True)
        partial = os.path.join(results_dir, f".{name}-{rank}.json.tmp")
        with open(partial, "w") as handle:
            json.dump({"trainer": name, "rank": rank, **result}, handle)
        os.replace(partial, os.path.join(results_dir, f"{name}-{rank}.json"))
        if dist.is_initialized():
            dist.barrier()
    '''
)


def _env(tmp_path, deepspeed: bool):
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        MASTER_ADDR="127.0.0.1",
    )
    if deepspeed:
        env["DS_ACCELERATOR"] = "cpu"
    return env


def _launch(command: list[str], env, out: Path, timeout=600) -> dict[tuple[str, int], dict]:
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    results = {}
    for path in sorted((out / "results").glob("*.json")):
        record = json.loads(path.read_text())
        results[(record["trainer"], record["rank"])] = record
    assert results, f"no results (exit {result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return results


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_llama_path):
    root = tmp_path_factory.mktemp("multiprocess")
    script = root / "train_all.py"
    script.write_text(SCRIPT)
    model = root / "model"
    shutil.copytree(tiny_llama_path, model)
    return root, script, model


def _deepspeed_json(root: Path, stage: int) -> Path:
    config = {
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_optimization": {"stage": stage, "stage3_gather_16bit_weights_on_model_save": True},
        "bf16": {"enabled": "auto"},
    }
    path = root / f"ds_zero{stage}.json"
    path.write_text(json.dumps(config))
    return path


def _load_back(trainer: str, folder: Path):
    """Load a saved artifact the way a user would, in this (non-distributed) process."""
    from transformers import AutoModelForCausalLM

    if trainer == "offline-rl":
        from trainers.modeling import load_value_guided_policy

        return load_value_guided_policy(str(folder)).policy.base
    if trainer == "boost":
        from trainers.bilevel_trainer import load_bilevel_artifacts

        return load_bilevel_artifacts(folder)["policy"].base
    return AutoModelForCausalLM.from_pretrained(folder)


def _check(results, trainer: str, out: Path, initial: Path, *, replicated: bool, deepspeed: bool):
    import torch
    from transformers import AutoModelForCausalLM

    ranks = [results.get((trainer, rank)) for rank in (0, 1)]
    assert all(r is not None for r in ranks), f"{trainer}: missing rank results {sorted(results)}"
    for record in ranks:
        assert "error" not in record, (
            f"{trainer} rank {record['rank']}: {record.get('error')}\n{record.get('traceback')}"
        )
        assert record["world_size"] == 2 and record["steps"] >= 2 and record["deepspeed"] == deepspeed
        assert record["losses"] and all(loss == loss for loss in record["losses"])  # logged and not NaN
    assert all(r["zero3_partitioned"] == (deepspeed and not replicated) for r in ranks), (
        f"{trainer}: ZeRO-3 partitioning"
    )
    if replicated:
        assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-6), f"{trainer}: replicas diverged"
    loaded = dict(_load_back(trainer, out / trainer).named_parameters())
    start = dict(AutoModelForCausalLM.from_pretrained(initial).named_parameters())
    assert set(loaded) == set(start), f"{trainer}: saved parameters differ in names from the base model's"
    assert all(loaded[name].shape == p.shape and torch.isfinite(loaded[name]).all() for name, p in start.items())
    assert any(not torch.equal(loaded[name], p) for name, p in start.items()), f"{trainer}: saved weights are untrained"
    if trainer == "boost":
        _check_boost(ranks, out / trainer, initial)


def _check_boost(ranks, folder: Path, initial: Path):
    """Every BOOST artifact loads back with full shapes; theta <- psi worked; phi's gradient is rank-independent."""
    import torch
    from transformers import AutoConfig

    from trainers.bilevel_trainer import load_bilevel_artifacts

    config = AutoConfig.from_pretrained(initial)
    final, synced = load_bilevel_artifacts(folder), load_bilevel_artifacts(f"{folder}-synced")
    theta = final["policy"].heads.state_dict()
    psi = final["psi_value_heads"].state_dict()
    assert theta.keys() == psi.keys() and theta
    for name, tensor in theta.items():
        assert tensor.shape == psi[name].shape and tensor.numel() > 0 and torch.isfinite(psi[name]).all(), name
        assert config.hidden_size in tensor.shape or tensor.dim() < 2, (name, tuple(tensor.shape))
    # one outer iteration (psi, theta, phi): theta took a step after the copy, so it differs from psi ...
    assert any(not torch.equal(theta[k], psi[k]) for k in theta)
    # ... until sync_theta_from_psi copies psi into theta again (gathered under ZeRO-3)
    synced_theta, synced_psi = synced["policy"].heads.state_dict(), synced["psi_value_heads"].state_dict()
    assert all(torch.equal(synced_theta[k], synced_psi[k]) for k in synced_theta)
    assert all(torch.equal(synced_psi[k], psi[k]) for k in psi)
    head = final["reweighting_head"]
    # default pooling: the mean hidden state of the action tokens, then their mean and max NLL
    assert head.embedding_dim == config.hidden_size + 2
    assert head(torch.zeros(3, config.hidden_size + 2)).shape == (3,)
    assert final["state"]["global_step"] == 3 and final["state"]["next_phase"] == "psi"
    for record in ranks:
        # 2 ranks x 2 trajectories == 1 process x 2 micro-batches of 2 (per-rank softmax, averaged gradient)
        assert record["phi_grad_scale"] > 0
        assert record["phi_grad_diff"] <= 1e-5 * record["phi_grad_scale"], record


@pytest.fixture(scope="module")
def ddp_results(setup):
    """DDP (gloo) through accelerate launch and the shipped cpu_ddp_2proc.yaml."""
    root, script, model = setup
    out = root / "ddp"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(CONFIGS / "cpu_ddp_2proc.yaml"),
        "--main_process_port",
        str(free_port()),
        str(script),
        str(model),
        str(out),
        ",".join(DDP_TRAINERS),
    ]
    return _launch(command, _env(root, deepspeed=False), out)


@pytest.fixture(scope="module")
def zero2_results(setup):
    """DeepSpeed ZeRO-2 through torchrun --nproc_per_node 2 and a DeepSpeed JSON in the trainer args."""
    root, script, model = setup
    out = root / "zero2"
    env = _env(root, deepspeed=True)
    env["MP_DEEPSPEED_CONFIG"] = str(_deepspeed_json(root, 2))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        str(script),
        str(model),
        str(out),
        ",".join(ZERO2_TRAINERS),
    ]
    return _launch(command, env, out)


@pytest.fixture(scope="module")
def zero3_results(setup):
    """DeepSpeed ZeRO-3 through accelerate launch and the shipped cpu_deepspeed_zero3.yaml."""
    root, script, model = setup
    out = root / "zero3"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(CONFIGS / "cpu_deepspeed_zero3.yaml"),
        "--main_process_port",
        str(free_port()),
        str(script),
        str(model),
        str(out),
        ",".join(ZERO3_TRAINERS),
    ]
    return _launch(command, _env(root, deepspeed=True), out)


@pytest.mark.parametrize("trainer", DDP_TRAINERS)
def test_ddp_two_processes(setup, ddp_results, trainer):
    root, _, model = setup
    _check(ddp_results, trainer, root / "ddp", model, replicated=True, deepspeed=False)


@pytest.mark.parametrize("trainer", ZERO2_TRAINERS)
def test_deepspeed_zero2_two_processes(setup, zero2_results, trainer):
    root, _, model = setup
    _check(zero2_results, trainer, root / "zero2", model, replicated=True, deepspeed=True)


@pytest.mark.parametrize("trainer", ZERO3_TRAINERS)
def test_deepspeed_zero3_two_processes(setup, zero3_results, trainer):
    root, _, model = setup
    _check(zero3_results, trainer, root / "zero3", model, replicated=False, deepspeed=True)


def test_cli_under_accelerate_ddp(setup, tmp_path):
    """The documented command: accelerate launch --config_file ... -m trainers offline-rl --config run.yaml."""
    import yaml

    from trainers.data.hub_io import save_trajectories
    from trainers.data.schema import make_trajectory, to_dataset

    _, _, model = setup
    rows = [
        make_trajectory(
            [{"role": "user", "content": f"is it an animal {i}"}, {"role": "assistant", "content": "Action: yes"}],
            [float(i % 2)],
            id=f"t{i}",
        )
        for i in range(8)
    ]
    save_trajectories(to_dataset(rows), tmp_path / "data")
    out = tmp_path / "out"
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            dict(
                model_name_or_path=str(model),
                train_dataset=str(tmp_path / "data"),
                output_dir=str(out),
                num_train_epochs=1,
                per_device_train_batch_size=2,
                use_cpu=True,
                bf16=False,
                report_to="none",
                save_strategy="epoch",
                logging_steps=1,
                disable_tqdm=True,
                max_length=64,
                seed=0,
            )
        )
    )
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(CONFIGS / "cpu_ddp_2proc.yaml"),
        "--main_process_port",
        str(free_port()),
        "-m",
        "trainers",
        "offline-rl",
        "--config",
        str(config),
    ]
    result = subprocess.run(
        command, env=_env(tmp_path, deepspeed=False), capture_output=True, text=True, timeout=600, cwd=REPO
    )
    assert result.returncode == 0, result.stderr[-5000:]
    # 8 rows / (2 processes x 2 per device) = 2 optimizer steps; one process would take 4
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-2"]
    assert yaml.safe_load((out / "run_config.yaml").read_text())["train_dataset"] == str(tmp_path / "data")
    assert _load_back("offline-rl", out) is not None


def test_boost_backends_agree(ddp_results, zero2_results, zero3_results):
    """One BOOST outer iteration gives the same losses under DDP, ZeRO-2 and ZeRO-3.

    Under ZeRO the groups outside a phase get zero gradients; if their optimizer groups were stepped,
    Adam's state would advance during other phases and the theta step (hence the phi loss) would differ.
    """
    losses = {
        name: results[("boost", 0)].get("losses")
        for name, results in (("ddp", ddp_results), ("zero2", zero2_results), ("zero3", zero3_results))
    }
    assert all(value and len(value) == 3 for value in losses.values()), losses
    for name in ("zero2", "zero3"):
        assert losses[name] == pytest.approx(losses["ddp"], rel=1e-3, abs=1e-5), losses
