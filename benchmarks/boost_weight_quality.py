"""Do BOOST's learned weights track trajectory quality? Controlled corruptions with known labels.

Half of the synthetic trajectories are corrupted in one of five known ways
(``trainers.boost.corruptions``: false success rewards, rule-breaking actions, observations from
another task, shuffled turn order, truncated episodes carrying the final reward); the other half and
the real data are faithful. After training, each cell reports

* ``auc_faithful``: the probability that a faithful synthetic trajectory outweighs a corrupted one;
* ``auc_real``: the same for a real trajectory against a corrupted one;
* the mean weight of each group (real, faithful synthetic, corrupted; mean 1 over the training set)
  and ``n_eff`` = 1 / Σ w̃² of the softmax over the whole training set.

Targets (library defaults): AUC >= 0.9 mean and >= 0.8 min over 3 seeds per kind, corrupted mean
weight <= 0.5x the faithful one. The task is the tiny rule task of ``trainers.boost.corruptions``
on a tiny Llama from ``trainers.testing``, pre-trained for a few hundred steps on the task's
language. Every finished cell is written to
``<output_dir>/cells/<variant>-<kind>-<seed>.json`` and reused when the script runs again.

    python benchmarks/boost_weight_quality.py                        # library defaults, 5 kinds x 3 seeds
    python benchmarks/boost_weight_quality.py --variant paper        # Algorithm 1 as written
    python benchmarks/boost_weight_quality.py --set weight_temperature=0.5 --variant t05
    python benchmarks/boost_weight_quality.py --signal_only    # the phi signal's own AUC (no head)
    python benchmarks/boost_weight_quality.py --probe          # what the head's input can separate at best
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from trainers import BilevelReweightConfig, BilevelReweightTrainer, hardware
from trainers.boost.corruptions import (
    CORRUPTIONS,
    UncorruptibleError,
    follows_rule,
    half_corrupted,
    quality_of,
    rule_task,
    rule_task_success_rewards,
)
from trainers.checkpointing import write_text_atomically
from trainers.data.schema import to_dataset
from trainers.models import DEFAULT_MODEL, load_tokenizer

VARIANTS = {
    "default": {},
    # Algorithm 1 as written: φ follows l_i(θ) - l_i(ψ), head on the last token, head lr = lr / 10
    "paper": {"phi_signal": "paper", "embedding_pooling": "last_token", "reweight_learning_rate": None},
}


def auc(positive: list[float], negative: list[float]) -> float:
    """P(a positive outweighs a negative), ties count one half (Mann-Whitney)."""
    if not positive or not negative:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in positive for n in negative)
    return wins / (len(positive) * len(negative))


def build_tiny(output_dir: Path, pretrain_steps: int = 300):
    """A tiny Llama, pre-trained on the rule task's language (faithful episodes of both tasks, fresh seeds).

    BOOST fine-tunes a pretrained LM and embeds trajectories with it; a randomly initialised tiny
    model knows nothing about which answer fits which word, so its embeddings could not tell a
    faithful episode from a corrupted one whatever the φ signal. A few hundred causal-LM steps on
    error-free episodes stand in for pretraining. The result is saved once and reused.
    """
    import random

    from trainers.data.tokenization import prepare_tokenizer, tokenize_trajectory
    from trainers.testing import build_tiny_model, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(output_dir / "tiny-tokenizer")
    model_dir = output_dir / "tiny-llama-rule-lm"
    if (model_dir / "config.json").exists():
        return str(model_dir), tokenizer
    model = build_tiny_model(output_dir / "tiny-llama", tokenizer, "llama")
    prepared = prepare_tokenizer(tokenizer)
    episodes = rule_task(300, seed=7001, error_rate=0.0) + rule_task(100, task="cars", seed=7002, error_rate=0.0)
    encoded = [tokenize_trajectory(e["messages"], e["rewards"], prepared)["input_ids"] for e in episodes]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = random.Random(0)
    torch.manual_seed(0)
    for _ in range(pretrain_steps):
        batch = rng.sample(encoded, 16)
        length = max(map(len, batch))
        ids = torch.tensor([b + [prepared.pad_token_id] * (length - len(b)) for b in batch])
        mask = torch.tensor([[1] * len(b) + [0] * (length - len(b)) for b in batch])
        loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    staging = output_dir / ".tiny-llama-rule-lm.tmp"
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    os.replace(staging, model_dir)
    return str(model_dir), tokenizer


def cell_data(kind: str, seed: int, num_real: int, num_val: int, error_rate: float = 0.05, turns: int = 3):
    common = {"error_rate": error_rate, "turns": turns}
    real = rule_task(num_real, seed=1000 * seed + 1, **common)
    val = rule_task(num_val, seed=1000 * seed + 2, **common)
    parents = [row["id"] for row in real]
    synthetic = rule_task(2 * num_real, source="synthetic", seed=1000 * seed + 3, parents=parents, **common)
    foreign = rule_task(20, task="cars", seed=1000 * seed + 4)
    synthetic = half_corrupted(
        synthetic,
        kind,
        seed=1000 * seed + 5,
        foreign_rows=foreign,
        is_faithful=follows_rule,
        success_rewards=rule_task_success_rewards,
    )
    return real, val, synthetic


#: actions that break each built-in environment's rules: other environments' turns
ENV_RULE_BREAKING = {
    "car_dealer": ("Is it a living thing?", "search[wireless headphones]", "click[Buy Now]"),
    "twenty_questions": ("Deal!", "This sedan is $25,000, a great price.", "click[Buy Now]"),
    "webshop": ("Deal!", "Is it a living thing?", "This sedan is $25,000, a great price."),
}


def env_cell_data(env_name: str, kind: str, seed: int, num_real: int, num_val: int):
    """Scripted expert episodes of a built-in environment: real, validation and synthetic (half corrupted).

    Each set plays its own tasks. ``false_reward`` and ``truncated`` substitute the noisy scripted
    policy's turns (valid actions that fail), rule-breaking actions come from other environments,
    foreign observations from tasks none of the sets plays, and every false claim is the median
    return of the real episodes on the last turn.
    """
    import random

    from trainers.envs import make_env
    from trainers.recipes.boost_scripted import REAL_BUILDERS

    env = make_env(env_name)
    tasks = list(env.tasks())
    random.Random(seed).shuffle(tasks)
    num_synthetic = 2 * num_real
    needed = num_real + num_val + num_synthetic + 8
    if len(tasks) < needed:
        raise ValueError(f"{env_name} has {len(tasks)} tasks; --num_real {num_real} --num_val {num_val} need {needed}")

    def play(name: str, chosen, noise: float) -> list[dict]:
        rows = REAL_BUILDERS[env_name](env, chosen, noise, 1000 * seed + len(name))
        for row in rows:
            row["id"] = f"{name}-{row['id']}"
        return rows

    start = num_real + num_val
    real = play("real", tasks[:num_real], 0.0)
    val = play("val", tasks[num_real:start], 0.0)
    synthetic = play("synthetic", tasks[start : start + num_synthetic], 0.0)
    for parent, row in zip(real * 2, synthetic):
        row["source"] = "synthetic"
        row["metadata"] = json.dumps({**json.loads(row["metadata"]), "parent_id": parent["id"]})
    spare = tasks[start + num_synthetic :][:16]
    noisy_turns = [
        m["content"] for row in play("noisy", spare, 1.0) for m in row["messages"] if m["role"] == "assistant"
    ]
    returns = sorted(sum(row["rewards"]) for row in real)
    success_return = returns[len(returns) // 2]
    synthetic = half_corrupted(
        synthetic,
        kind,
        seed=1000 * seed + 5,
        foreign_rows=play("foreign", spare, 0.0),
        invalid_actions=ENV_RULE_BREAKING[env_name],
        wrong_actions=noisy_turns,
        success_rewards=lambda n: [0.0] * (n - 1) + [success_return],
    )
    return real, val, synthetic


def env_settings(env_name: str) -> dict:
    """The BOOST recipe's small-scale trainer settings for ``env_name`` (LoRA added by :func:`run_cell`)."""
    from trainers.recipes.boost import small_scale_defaults

    keep = ("alpha", "reweight_depth", "max_length", "learning_rate", "cql_weight", "use_cpu")
    return {k: v for k, v in small_scale_defaults(env_name).items() if k in keep}


def make_trainer(model_path, tokenizer, kind: str, seed: int, overrides: dict, args, work: Path, max_steps: int):
    """A BOOST trainer on one cell's data, and the cell's rows (real + synthetic)."""
    peft_config = None
    if args.env == "rule":
        real, val, synthetic = cell_data(kind, seed, args.num_real, args.num_val, args.error_rate, args.turns)
        env_specific = {"bf16": False, "use_cpu": True}  # a tiny model: fp32 is as fast and exact
    else:
        from peft import LoraConfig

        real, val, synthetic = env_cell_data(args.env, kind, seed, args.num_real, args.num_val)
        env_specific = env_settings(args.env)  # precision: the library's choice for this machine
        peft_config = LoraConfig(
            r=8, lora_alpha=16, task_type="CAUSAL_LM", target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
        )
    config = BilevelReweightConfig(
        **{
            "output_dir": str(work / "run"),
            "method": "boost",
            "k_psi": args.k_psi,
            "k_theta": args.k_theta,
            "max_steps": max_steps,
            "per_device_train_batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "seed": seed,
            **env_specific,
            "report_to": [],
            "save_strategy": "no",
            "logging_steps": 10**6,
            "embedding_cache_dir": str(work.parent / "embeddings"),
            "disable_tqdm": True,
            **overrides,
        }
    )
    trainer = BilevelReweightTrainer(
        model_path,
        config,
        train_dataset=to_dataset(real),
        val_dataset=to_dataset(val),
        synthetic_dataset=to_dataset(synthetic),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    return trainer, real + synthetic


def grouped(ids, sources, values, rows) -> dict[str, list[float]]:
    """``values`` (one per training row) split into real, faithful synthetic and corrupted synthetic."""
    quality = {row["id"]: quality_of(row) for row in rows}
    groups: dict[str, list[float]] = {"real": [], "faithful": [], "corrupted": []}
    for row_id, source, value in zip(ids, sources, values):
        group = "real" if source != "synthetic" else ("faithful" if quality[row_id] == "faithful" else "corrupted")
        groups[group].append(float(value))
    return groups


def cell_aucs(kind: str, seed: int, overrides: dict, groups: dict[str, list[float]], prefix: str = "") -> dict:
    """A cell's identity and the AUCs that faithful and real trajectories outscore corrupted ones."""
    return {
        "kind": kind,
        "seed": seed,
        "overrides": overrides,
        f"{prefix}auc_faithful": auc(groups["faithful"], groups["corrupted"]),
        f"{prefix}auc_real": auc(groups["real"], groups["corrupted"]),
    }


def run_cell(model_path, tokenizer, kind: str, seed: int, overrides: dict, args, work: Path) -> dict:
    outer_length = args.k_psi + args.k_theta + overrides.get("k_phi", 1)
    started = time.perf_counter()
    trainer, rows = make_trainer(
        model_path, tokenizer, kind, seed, overrides, args, work, args.outer_iterations * outer_length
    )
    trainer.train()
    weights = trainer.trajectory_weights()
    groups = grouped(weights["id"], weights["source"], weights["weight"], rows)
    values = torch.tensor([w for ws in groups.values() for w in ws])
    probabilities = values / values.sum()
    mean = {name: sum(ws) / len(ws) for name, ws in groups.items()}
    return {
        **cell_aucs(kind, seed, overrides, groups),
        "weight_real": mean["real"],
        "weight_faithful": mean["faithful"],
        "weight_corrupted": mean["corrupted"],
        "corrupted_over_faithful": mean["corrupted"] / mean["faithful"],
        "n_eff": float(1.0 / probabilities.pow(2).sum()),
        "n": len(values),
        "seconds": time.perf_counter() - started,
    }


def signal_cell(model_path, tokenizer, kind: str, seed: int, overrides: dict, args, work: Path) -> dict:
    """The φ signal itself, before any head learning: does it rank faithful above corrupted?

    Trains the K_ψ + K_θ steps that precede the first φ step, then computes the run's φ signal
    (``phi_signal``: ``trainers.boost.alignment.ALIGNMENT_SIGNALS``) of every training trajectory
    against the whole validation set. A head can only learn what this ranks: an AUC near 0.5 here
    means no head learning rate or step count can separate the groups.
    """
    from trainers.boost.alignment import ALIGNMENT_SIGNALS
    from trainers.offline_rl_trainer import MODEL_INPUT_KEYS

    started = time.perf_counter()
    trainer, rows = make_trainer(model_path, tokenizer, kind, seed, overrides, args, work, args.k_psi + args.k_theta)
    trainer.train()

    def everything(dataset):
        batch = trainer._prepare_inputs(trainer.data_collator([dataset[i] for i in range(len(dataset))]))
        return batch, {key: batch[key] for key in MODEL_INPUT_KEYS if key in batch}

    batch, inputs = everything(trainer.train_dataset)
    _, val_inputs = everything(trainer.val_tokenized)
    trainer.policy.eval()
    scores = ALIGNMENT_SIGNALS[trainer.args.phi_signal](trainer.policy, inputs, val_inputs, trainer.loss_config)
    order = batch["traj_index"].tolist()
    all_ids, all_sources = trainer.training_rows["id"], trainer.training_rows["source"]
    ids, sources = [all_ids[i] for i in order], [all_sources[i] for i in order]
    groups = grouped(ids, sources, scores.tolist(), rows)
    return {
        **cell_aucs(kind, seed, overrides, groups, prefix="signal_"),
        **{f"signal_{name}": sum(values) / len(values) for name, values in groups.items()},
        "seconds": time.perf_counter() - started,
    }


def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias of an L2-regularised logistic regression (L-BFGS)."""
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y) + l2 * w.pow(2).sum() / len(y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach(), b.detach()


def linear_probe_auc(features: torch.Tensor, labels: torch.Tensor, folds: int = 4, l2: float = 1.0) -> float:
    """Cross-validated AUC of an L2-regularised logistic regression from ``features`` to ``labels`` (0 / 1).

    Stratified ``folds``-fold split (fixed order); features standardised on each fold's training part.
    """
    fold_of = torch.empty(len(labels), dtype=torch.long)
    for label in (0, 1):
        for position, row in enumerate(torch.nonzero(labels == label).flatten().tolist()):
            fold_of[row] = position % folds
    scores = torch.empty(len(labels))
    for fold in range(folds):
        train, test = fold_of != fold, fold_of == fold
        mean, std = features[train].mean(0), features[train].std(0) + 1e-6
        w, b = fit_logistic((features[train] - mean) / std, labels[train].float(), l2)
        scores[test] = (features[test] - mean) / std @ w + b
    return auc(scores[labels == 1].tolist(), scores[labels == 0].tolist())


def probe_cell(model_path, tokenizer, kind: str, seed: int, overrides: dict, args, work: Path) -> dict:
    """What the head's input can show: a linear probe on the frozen embeddings, faithful vs corrupted.

    No training: the trainer embeds the training rows as the head sees them (``embedding_pooling``),
    and a cross-validated logistic regression separates the faithful synthetic rows from the corrupted
    ones. A probe AUC near 0.5 means no head, however trained, can weight the groups apart from this
    input alone; a signal AUC well above the probe's means the head input is what holds the weights back.
    """
    started = time.perf_counter()
    trainer, rows = make_trainer(model_path, tokenizer, kind, seed, overrides, args, work, 1)
    groups = grouped(trainer.training_rows["id"], trainer.training_rows["source"], range(len(trainer.embeddings)), rows)
    faithful, corrupted = groups["faithful"], groups["corrupted"]
    features = trainer.embeddings[[int(i) for i in faithful + corrupted]].cpu()
    labels = torch.tensor([1] * len(faithful) + [0] * len(corrupted))
    return {
        "kind": kind,
        "seed": seed,
        "overrides": overrides,
        "probe_auc_faithful": linear_probe_auc(features, labels),
        "n": len(labels),
        "seconds": time.perf_counter() - started,
    }


def save_table(lines: list[str], path: Path) -> None:
    table = "\n".join(lines)
    write_text_atomically(path, table + "\n")
    print(table)


def write_report(cells: list[dict], variant: str, output_dir: Path, task: str) -> None:
    lines = [
        "| kind | seed | AUC faithful>corrupted | AUC real>corrupted | w real | w faithful | w corrupted | "
        "corrupted/faithful | n_eff |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        lines.append(
            f"| {c['kind']} | {c['seed']} | {c['auc_faithful']:.3f} | {c['auc_real']:.3f} | {c['weight_real']:.3f} "
            f"| {c['weight_faithful']:.3f} | {c['weight_corrupted']:.3f} | {c['corrupted_over_faithful']:.3f} "
            f"| {c['n_eff']:.1f}/{c['n']} |"
        )
    lines += [
        "",
        "| kind | AUC faithful mean | min | AUC real mean | min | corrupted/faithful mean |",
        "|---|---|---|---|---|---|",
    ]
    for kind in CORRUPTIONS:
        mine = [c for c in cells if c["kind"] == kind]
        if not mine:
            continue
        af, ar = [c["auc_faithful"] for c in mine], [c["auc_real"] for c in mine]
        ratio = sum(c["corrupted_over_faithful"] for c in mine) / len(mine)
        lines.append(
            f"| {kind} | {sum(af) / len(af):.3f} | {min(af):.3f} | {sum(ar) / len(ar):.3f} | {min(ar):.3f} "
            f"| {ratio:.3f} |"
        )
    save_table(lines, output_dir / f"weight_quality_{variant}.md")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in CORRUPTIONS if any(c["kind"] == k for c in cells)]
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for x, kind in enumerate(kinds):
        mine = [c for c in cells if c["kind"] == kind]
        axes[0].scatter(
            [x - 0.1] * len(mine),
            [c["auc_faithful"] for c in mine],
            color="tab:blue",
            label="faithful > corrupted" if x == 0 else None,
        )
        axes[0].scatter(
            [x + 0.1] * len(mine),
            [c["auc_real"] for c in mine],
            color="tab:green",
            label="real > corrupted" if x == 0 else None,
        )
        for offset, (group, color) in zip(
            (-0.25, 0.0, 0.25), (("real", "tab:green"), ("faithful", "tab:blue"), ("corrupted", "tab:red"))
        ):
            value = sum(c[f"weight_{group}"] for c in mine) / len(mine)
            axes[1].bar(x + offset, value, width=0.25, color=color, label=group if x == 0 else None)
    for axis in axes:
        axis.set_xticks(range(len(kinds)), kinds, rotation=20)
    axes[0].axhline(0.9, color="gray", linestyle="--", linewidth=0.8)
    axes[0].axhline(0.5, color="gray", linestyle=":", linewidth=0.8)
    axes[0].set_ylim(0, 1.02)
    axes[0].set_ylabel("AUC")
    axes[0].legend(fontsize=8)
    axes[1].set_ylabel("mean weight (1 = uniform)")
    axes[1].legend(fontsize=8)
    figure.suptitle(f"BOOST weight quality, {task}, variant '{variant}'")
    figure.tight_layout()
    figure.savefig(output_dir / f"weight_quality_{variant}.png", dpi=120)
    plt.close(figure)


def write_signal_report(cells: list[dict], variant: str, output_dir: Path) -> None:
    lines = [
        "| kind | seed | signal AUC faithful>corrupted | signal AUC real>corrupted "
        "| mean signal real / faithful / corrupted |",
        "|---|---|---|---|---|",
    ]
    for c in cells:
        lines.append(
            f"| {c['kind']} | {c['seed']} | {c['signal_auc_faithful']:.3f} | {c['signal_auc_real']:.3f} "
            f"| {c['signal_real']:.4f} / {c['signal_faithful']:.4f} / {c['signal_corrupted']:.4f} |"
        )
    save_table(lines, output_dir / f"weight_quality_{variant}_signal.md")


def write_probe_report(cells: list[dict], variant: str, output_dir: Path) -> None:
    lines = ["| kind | seed | probe AUC faithful>corrupted (cross-validated) | synthetic rows |", "|---|---|---|---|"]
    lines += [f"| {c['kind']} | {c['seed']} | {c['probe_auc_faithful']:.3f} | {c['n']} |" for c in cells]
    save_table(lines, output_dir / f"weight_quality_{variant}_probe.md")


def parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"None": None, "True": True, "False": False}.get(text, text)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="default", help="a name; 'default' and 'paper' are predefined")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="BilevelReweightConfig overrides")
    parser.add_argument(
        "--env",
        default="rule",
        choices=["rule", *ENV_RULE_BREAKING],
        help="'rule': the tiny rule task on a tiny Llama; a built-in environment: its scripted episodes "
        "on --model with LoRA and the BOOST recipe's settings",
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="policy for --env other than 'rule'")
    parser.add_argument("--kinds", nargs="*", default=list(CORRUPTIONS), choices=CORRUPTIONS)
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--num_real", type=int, help="real train trajectories, synthetic twice as many (40 | 12)")
    parser.add_argument("--num_val", type=int, help="validation trajectories (24 | 12)")
    parser.add_argument("--error_rate", type=float, default=0.05, help="chance an answer breaks the rule (faithful)")
    parser.add_argument("--turns", type=int, default=3, help="exchanges per rule-task episode")
    parser.add_argument("--outer_iterations", type=int, help="outer iterations of K_psi + K_theta + K_phi (30 | 6)")
    parser.add_argument("--k_psi", type=int, help="(5 | 3)")
    parser.add_argument("--k_theta", type=int, help="(5 | 3)")
    parser.add_argument("--batch_size", type=int, help="(8 | 4)")
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--output_dir", default="outputs/boost-weight-quality")
    measurement = parser.add_mutually_exclusive_group()
    measurement.add_argument(
        "--signal_only",
        action="store_true",
        help="measure the phi signal's own AUC after the first K_psi + K_theta steps, without training the head",
    )
    measurement.add_argument(
        "--probe",
        action="store_true",
        help="measure what the head's input can separate: a cross-validated linear probe on the embeddings",
    )
    args = parser.parse_args(argv)
    # defaults: the rule task's, then a built-in environment's (a 135M model on 2 CPU cores)
    for name, rule_value, env_value in (
        ("num_real", 40, 12),
        ("num_val", 24, 12),
        ("outer_iterations", 30, 6),
        ("k_psi", 5, 3),
        ("k_theta", 5, 3),
        ("batch_size", 8, 4),
    ):
        if getattr(args, name) is None:
            setattr(args, name, rule_value if args.env == "rule" else env_value)
    overrides = dict(VARIANTS.get(args.variant, {}))
    overrides.update({key: parse_value(value) for key, value in (item.split("=", 1) for item in args.set)})
    if args.signal_only and overrides.get("phi_signal") == "paper":
        parser.error("--signal_only measures an alignment signal; phi_signal='paper' has none before a phi step")
    output_dir = Path(args.output_dir)
    (output_dir / "cells").mkdir(parents=True, exist_ok=True)
    if args.env == "rule":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        model_path, tokenizer = build_tiny(output_dir)
    else:
        hardware.configure_threads(verbose=True)
        model_path, tokenizer = args.model, load_tokenizer(args.model)
    prefix = "" if args.env == "rule" else f"{args.env}-"
    mode = "signal" if args.signal_only else "probe" if args.probe else "weights"
    measures = {"signal": (signal_cell, "-signal"), "probe": (probe_cell, "-probe"), "weights": (run_cell, "")}
    measure, suffix = measures[mode]
    cells = []
    for kind in args.kinds:
        for seed in args.seeds:
            path = output_dir / "cells" / f"{prefix}{args.variant}{suffix}-{kind}-{seed}.json"
            if path.exists():
                cell = json.loads(path.read_text())
            else:
                try:
                    cell = measure(model_path, tokenizer, kind, seed, overrides, args, output_dir / "work")
                except UncorruptibleError as error:
                    print(f"{prefix}{args.variant} {kind}: not applicable here: {error}", flush=True)
                    break
                write_text_atomically(path, json.dumps(cell, indent=2))
            if mode == "signal":
                print(
                    f"{args.variant} {kind:20s} seed {seed}: signal AUC faithful {cell['signal_auc_faithful']:.3f} "
                    f"real {cell['signal_auc_real']:.3f} ({cell['seconds']:.0f} s)",
                    flush=True,
                )
            elif mode == "probe":
                print(
                    f"{args.variant} {kind:20s} seed {seed}: probe AUC faithful {cell['probe_auc_faithful']:.3f} "
                    f"({cell['n']} synthetic rows, {cell['seconds']:.0f} s)",
                    flush=True,
                )
            else:
                print(
                    f"{args.variant} {kind:20s} seed {seed}: AUC faithful {cell['auc_faithful']:.3f} real "
                    f"{cell['auc_real']:.3f} | w real {cell['weight_real']:.3f} faithful {cell['weight_faithful']:.3f} "
                    f"corrupted {cell['weight_corrupted']:.3f} | n_eff {cell['n_eff']:.1f}/{cell['n']} "
                    f"({cell['seconds']:.0f} s)",
                    flush=True,
                )
            cells.append(cell)
    if mode == "signal":
        write_signal_report(cells, f"{prefix}{args.variant}", output_dir)
    elif mode == "probe":
        write_probe_report(cells, f"{prefix}{args.variant}", output_dir)
    else:
        write_report(cells, f"{prefix}{args.variant}", output_dir, "tiny rule task" if args.env == "rule" else args.env)
    return cells


if __name__ == "__main__":
    main()
