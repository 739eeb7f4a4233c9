"""The BOOST pipeline as a library recipe: data, split, self-play, train, evaluate, analyse.

:func:`run` trains one table-1 method; :func:`compare` trains several on the same data and the same
number of θ updates and prints them side by side (what ``examples/boost_webshop.py`` runs);
:func:`main` parses the command line (every :class:`BoostRecipeArguments` and
:class:`~trainers.BilevelReweightConfig` field is a flag). Steps:

1. policy: the embedded SmolLM2-135M-Instruct (``trainers.models.DEFAULT_MODEL``) or ``--model``;
   LoRA r 8 by default on Car Dealer and Twenty Questions (the paper uses QLoRA), full fine-tuning on
   WebShop (``ENV_DEFAULTS``: a few θ updates teach the full 135M model WebShop's procedure, not LoRA);
   ``--lora_r`` sets either;
2. real data: ``--dataset`` (Hub id or local path in the trajectory schema), or episodes played in
   the built-in environment by scripted expert and noisy players (:mod:`trainers.recipes.boost_scripted`);
3. BOOST category split (train / val / eval by task category; ``--low_data_fraction``);
4. one synthetic trajectory per train trajectory by self-play of the same model (appendix F);
5. training (Algorithm 1 for the bilevel methods);
6. live evaluation of the value-guided policy on held-out categories (mean ± s.e., success rate);
7. weight analysis: figure 2, the mean weight per source and per scripted quality (expert vs noisy)
   and the AUC that an expert episode outweighs a noisy one.

Every artifact goes under ``--output_dir``; with ``--profile`` (on by default) each stage's wall
time is printed at the end.
"""

from __future__ import annotations

import copy
import json
import random
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import TrainerCallback

from .. import hardware
from ..boost.config import METHODS, SYNTHETIC_METHODS, BilevelReweightConfig
from ..data.schema import metadata_of, to_dataset
from .boost_scripted import REAL_BUILDERS, scripted_quality
from .time_budget import (
    EMBEDDING_STAGE,
    SELF_PLAY_STAGE,
    SHRINKABLE,
    fit_job,
    given_on_command_line,
    optimizer_steps_by_phase,
)

#: Paper hyperparameters per environment (BOOST appendix D, MC rows) and small-scale defaults.
ENV_DEFAULTS: dict[str, dict[str, Any]] = {
    # 1536 tokens: a scripted WebShop episode (search page, a 436-token results page, item pages) is
    # 840-1170 tokens; at 1024 (the paper's) 14 of 20 lost their first turn, so few search actions were
    # trained and the policy answered "click[Buy Now]" on the search page. Batches pad to their longest
    # row, so the extra room costs only what the kept turns cost
    # full fine-tuning at 1e-4: after 6 θ updates a LoRA (r 8, lr 1e-3) policy wrote the system prompt's
    # "search[keywords]" then "click[text]" (return 0 on 8 episodes); the full model searched, clicked
    # a result and bought (return 0.52 ± 0.13), in the same training time
    "webshop": dict(
        alpha=0.1, reweight_depth=4, per_device_train_batch_size=2, max_length=1536, lora_r=0, learning_rate=1e-4
    ),
    # returns of up to 19 (questions left at the correct guess) made the value regression's gradient (q_loss
    # 54-69, norm ~200, clipped to 1) drown behaviour cloning: after 6 θ updates every method played the base
    # model's episodes word for word. Scaled to [0, 0.95] the terms share the clipped gradient. 448 tokens
    # hold the scripted episodes whole (up to 14 questions: 409 tokens with SmolLM2's chat template)
    "twenty_questions": dict(
        alpha=1.0, reweight_depth=2, per_device_train_batch_size=8, max_length=448, reward_scale=0.05
    ),
    "car_dealer": dict(alpha=10.0, reweight_depth=2, per_device_train_batch_size=8, max_length=512),
}


@dataclass
class BoostRecipeArguments:
    """Pipeline settings of the BOOST recipe (the trainer's settings are ``BilevelReweightConfig`` flags)."""

    env: str = field(default="webshop", metadata={"help": "Built-in environment.", "choices": list(ENV_DEFAULTS)})
    model: str = field(default="", metadata={"help": "Policy model (id or folder; default: the embedded SmolLM2)."})
    dataset: str | None = field(
        default=None,
        metadata={"help": "Hub id or path of real trajectories (default: scripted expert and noisy episodes)."},
    )
    methods: list[str] | None = field(
        default=None,
        metadata={
            "help": "Train these methods on the same data and "
            "theta-update budget and compare them (default: --method alone)."
        },
    )
    num_real: int = field(
        default=40, metadata={"help": "Scripted real episodes when no --dataset (paper: 2,000 on WebShop)."}
    )
    num_categories: int | None = field(
        default=10, metadata={"help": "Task categories of the scripted episodes (None = all)."}
    )
    scripted_thoughts: bool = field(
        default=False,
        metadata={
            "help": "WebShop's scripted episodes write a 'Thought: ...' line before each action (ETO's form). "
            "Off by default: a policy trained for a few minutes learns the bare 'Action: ...' turns, and "
            "they are shorter to train on and to play."
        },
    )
    noise: float = field(default=0.5, metadata={"help": "Fraction of scripted episodes played by the noisy policy."})
    low_data_fraction: float | None = field(
        default=None,
        metadata={
            "help": "Low-data regime: keep this fraction of "
            "train (paper 0.30 / 0.025 / 0.10 on WebShop / 20Q / Car Dealer)."
        },
    )
    train_category_fraction: float = field(default=0.6, metadata={"help": "Categories in train (paper 0.6)."})
    val_split: float = field(default=0.3, metadata={"help": "Held-out trajectories in val (paper 0.3)."})
    split_seed: int = field(default=0, metadata={"help": "Category split seed (shared by all methods)."})
    match_theta_updates: bool = field(
        default=True,
        metadata={
            "help": "Give the uniform-weight methods as many "
            "optimizer steps as the bilevel schedule gives theta (the same policy budget)."
        },
    )
    synthetic_source: str = field(
        default="self_play",
        metadata={
            "help": "Where the synthetic trajectories come from: 'self_play' (the policy's own model plays agent and "
            "environment, as the paper's generator does) or 'scripted' (the scripted expert and noisy players replay "
            "each train trajectory's task: synthetic data of known, mixed quality, where part of it is useful).",
            "choices": ["self_play", "scripted"],
        },
    )
    synthetic_noise: float = field(
        default=0.5, metadata={"help": "With synthetic_source='scripted': fraction played by the noisy player."}
    )
    synthetic_max_steps: int = field(default=4, metadata={"help": "Agent actions per synthetic episode."})
    synthetic_max_new_tokens: int = field(
        default=32, metadata={"help": "Tokens per generated agent turn (observations get twice as many)."}
    )
    synthetic_batch_size: int = field(default=8, metadata={"help": "Episodes per generate call."})
    synthetic_path: str | None = field(
        default=None, metadata={"help": "Reuse synthetic trajectories saved by an earlier run."}
    )
    num_eval_episodes: int = field(default=8, metadata={"help": "Live evaluation episodes per method (paper 64)."})
    eval_max_new_tokens: int = field(default=32, metadata={"help": "Tokens per agent turn in evaluation."})
    eval_batch_size: int = field(default=8, metadata={"help": "Episodes played at once in evaluation."})
    eval_max_turns: int | None = field(default=8, metadata={"help": "Cap on evaluation turns (None = env horizon)."})
    lora_r: int = field(
        default=8, metadata={"help": "LoRA rank (0 = full fine-tuning; WebShop's default, 8 elsewhere)."}
    )
    skip_eval: bool = field(default=False, metadata={"help": "Skip the live evaluation."})
    time_budget_minutes: float = field(
        default=14.0,
        metadata={
            "help": "Fit the job to this wall time from the speed this machine measures at the start: fewer "
            "real episodes, evaluation episodes, self-play steps, evaluation turns and outer iterations where "
            "the settings would take longer (flags given on the command line are kept). 0 = run them as given."
        },
    )
    profile: bool = field(default=True, metadata={"help": "Print the wall time of every stage at the end."})

    def needs_self_play(self, methods: Sequence[str]) -> bool:
        """Whether ``methods`` need a self-play run for their synthetic data (not a saved set, not scripted players)."""
        uses_synthetic = any(m in SYNTHETIC_METHODS for m in methods)
        return uses_synthetic and self.synthetic_source == "self_play" and not self.synthetic_path


#: the examples' old name for the recipe arguments
ExampleArguments = BoostRecipeArguments


def small_scale_defaults(env: str) -> dict[str, Any]:
    """Flag defaults that keep one run within minutes on 2 CPU cores (2 outer iterations of K 3/3/1)."""
    values = ENV_DEFAULTS[env]
    return dict(
        lora_r=values.get("lora_r", 8),
        output_dir=f"outputs/boost-{env}",
        method="boost",
        alpha=values["alpha"],
        reweight_depth=values["reweight_depth"],
        k_psi=3,
        k_theta=3,
        k_phi=1,
        max_steps=14,
        # 2 φ steps instead of the weight benchmark's 30: at the library's 1e-3 the head ranked the
        # corrupted trajectories last (AUC >= 0.9) but moved them only to 0.79-0.93x the faithful weight
        # (n_eff 118-120 of 120); at 1.5e-2 (the same total step, 30 x 1e-3 / 2) to 0.02-0.39x with the
        # same AUCs (benchmarks/boost_weight_quality.py --outer_iterations 2, 5 kinds x 3 seeds)
        reweight_learning_rate=1.5e-2,
        per_device_train_batch_size=values["per_device_train_batch_size"],
        max_length=values["max_length"],
        reward_scale=values.get("reward_scale", 1.0),
        # LoRA on a 135M model for a few dozen steps (the paper: 1e-4 for ~650 steps of QLoRA on 7B)
        learning_rate=values.get("learning_rate", 1e-3),
        # the paper's 10 made the CQL term's gradient (norm 50-100, clipped to 1) drown the behaviour
        # cloning term: its cross-entropy stayed at 2.2-2.4 over 12 WebShop steps; at 1 it fell to 1.2
        cql_weight=1.0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=0,
        # bf16 autocast on CPU needs use_cpu (TrainingArguments refuses bf16 "on GPU" without one)
        use_cpu=not torch.cuda.is_available(),
    )


def parse_args(env: str, argv: Sequence[str] | None = None) -> tuple[BoostRecipeArguments, BilevelReweightConfig]:
    """Recipe and trainer arguments from a command line, with ``env``'s small-scale defaults."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser((BoostRecipeArguments, BilevelReweightConfig))
    parser.set_defaults(env=env, **small_scale_defaults(env))
    recipe, config = parser.parse_args_into_dataclasses(args=list(argv) if argv is not None else sys.argv[1:])
    if not recipe.model:
        from ..models import DEFAULT_MODEL

        recipe.model = DEFAULT_MODEL
    return recipe, config


parse = parse_args  # the examples' old name


class StageTimer:
    """Wall time per named stage (``with timer("data"): ...``), printed by :meth:`report`."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, stage: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - started

    def report(self, predicted: dict[str, float] | None = None) -> str:
        """Markdown table of the stages; with ``predicted``, the time budget's prediction next to each."""
        # "<method>/train/<phase>" splits "<method>/train": only the stages above it add up
        total = sum(v for k, v in self.seconds.items() if k.count("/") < 2)
        predicted = predicted or {}
        column = " predicted |" if predicted else ""
        lines = [f"| stage | seconds |{column}", "|---|---|" + ("---|" if predicted else "")]
        for stage, seconds in self.seconds.items():
            guess = f" {predicted[stage]:.1f} |" if stage in predicted else (" |" if predicted else "")
            lines.append(f"| {stage} | {seconds:.1f} |{guess}")
        lines.append(f"| total | {total:.1f} |" + (f" {sum(predicted.values()):.1f} |" if predicted else ""))
        return "\n".join(lines)


class PhaseTimeCallback(TrainerCallback):
    """Adds each optimizer step's wall time to its Algorithm 1 phase (``train/psi``, ``train/theta``, ...)."""

    def __init__(self, timer: StageTimer, method: str, phase_of: Callable[[int], str] | None):
        self.timer, self.method, self.phase_of = timer, method, phase_of
        self.started = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        phase = self.phase_of(state.global_step - 1) if self.phase_of else "theta (uniform weights)"
        self.timer.seconds[f"{self.method}/train/{phase}"] += time.perf_counter() - self.started


# ------------------------------------------------------------------------------------------ data
def _spread_over_categories(tasks, n: int, seed: int):
    by_category: dict[str, list] = {}
    for task in tasks:
        by_category.setdefault(task.category, []).append(task)
    rng = random.Random(seed)
    for group in by_category.values():
        rng.shuffle(group)
    picked, round_ = [], 0
    while len(picked) < n and any(len(g) > round_ for g in by_category.values()):
        for category in sorted(by_category):
            if len(by_category[category]) > round_ and len(picked) < n:
                picked.append(by_category[category][round_])
        round_ += 1
    return picked


def load_real(recipe: BoostRecipeArguments, env, real_builder: Callable | None = None) -> datasets.Dataset:
    """``--dataset`` if given, else scripted expert / noisy episodes spread over ``num_categories`` categories."""
    if recipe.dataset:
        from ..data.hub_io import load_trajectories

        return load_trajectories(recipe.dataset, split="train", require_category=True)
    tasks = list(env.tasks())
    if recipe.num_categories:
        categories = sorted({t.category for t in tasks})
        keep = set(random.Random(recipe.split_seed).sample(categories, min(recipe.num_categories, len(categories))))
        tasks = [t for t in tasks if t.category in keep]
    tasks = _spread_over_categories(tasks, recipe.num_real, recipe.split_seed)
    if real_builder is not None:
        return to_dataset(real_builder(env, tasks, recipe.noise, recipe.split_seed))
    options = {"thoughts": recipe.scripted_thoughts} if recipe.env == "webshop" else {}
    return to_dataset(REAL_BUILDERS[recipe.env](env, tasks, recipe.noise, recipe.split_seed, **options))


def scripted_synthetic(recipe: BoostRecipeArguments, env, train: datasets.Dataset) -> datasets.Dataset:
    """One scripted episode per train trajectory, on its task: ``synthetic_noise`` of them by the noisy player.

    The rows are labelled synthetic (``source``, an id starting ``synthetic-``) and keep the player in
    their id and ``metadata["policy"]``, so the learned weights can be checked against the quality of
    the synthetic data itself, not only against the real data's.
    """
    by_id = {task.task_id: task for task in env.tasks()}
    missing = sorted({task_id for task_id in train["task_id"] if task_id not in by_id})
    if missing:
        raise ValueError(f"scripted synthetic data: train task ids not in the {recipe.env} environment: {missing[:5]}")
    tasks = [by_id[task_id] for task_id in train["task_id"]]
    options = {"thoughts": recipe.scripted_thoughts} if recipe.env == "webshop" else {}
    # a seed of its own, so that the synthetic players are not the real split's draws again
    rows = REAL_BUILDERS[recipe.env](env, tasks, recipe.synthetic_noise, recipe.split_seed + 7919, **options)
    for row, parent_id in zip(rows, train["id"]):
        row["source"] = "synthetic"
        row["id"] = f"synthetic-{row['id']}"
        row["metadata"] = {**metadata_of(row), "generator": "scripted", "parent_id": parent_id}
    return to_dataset(rows)


def generate_synthetic(
    recipe: BoostRecipeArguments,
    config: BilevelReweightConfig,
    model,
    tokenizer,
    train: datasets.Dataset,
    out: Path,
    env=None,
) -> datasets.Dataset:
    """One synthetic trajectory per train trajectory (or ``--synthetic_path``), saved under ``out``.

    Self-play by ``model`` by default; the scripted players with ``synthetic_source='scripted'`` (needs ``env``).
    """
    if recipe.synthetic_path:
        return datasets.load_from_disk(recipe.synthetic_path)
    if recipe.synthetic_source == "scripted":
        synthetic = scripted_synthetic(recipe, env, train)
        synthetic.save_to_disk(str(out / "synthetic_trajectories"))
        noisy = sum(scripted_quality(row_id) == "noisy" for row_id in synthetic["id"])
        print(f"[data] {len(synthetic)} scripted synthetic trajectories, {noisy} of them by the noisy player")
        return synthetic
    if recipe.synthetic_source != "self_play":
        raise ValueError(f"--synthetic_source must be 'self_play' or 'scripted', got {recipe.synthetic_source!r}")
    from ..boost.synthetic import SyntheticConfig, SyntheticTrajectoryGenerator

    # a bf16 copy where bf16 is this device's fast generation precision (several times faster than fp32
    # weights under autocast on CPUs with AMX / AVX512-BF16); the fp32 weights themselves elsewhere
    generation_model = hardware.generation_model(model)
    generator = SyntheticTrajectoryGenerator(
        generation_model,
        tokenizer,
        SyntheticConfig(
            env_name=recipe.env,
            max_steps=recipe.synthetic_max_steps,
            max_new_tokens_agent=recipe.synthetic_max_new_tokens,
            max_new_tokens_env=2 * recipe.synthetic_max_new_tokens,
            batch_size=recipe.synthetic_batch_size,
            seed=config.seed,
            max_prompt_tokens=config.max_length or 1024,
        ),
        generator_id=recipe.model,
    )
    synthetic = generator.generate(train)
    synthetic.save_to_disk(str(out / "synthetic_trajectories"))
    print(
        f"[data] {len(synthetic)} synthetic trajectories, {sum(synthetic['success'])} judged successful by the "
        "self-play rules"
    )
    return synthetic


def theta_updates(max_steps: int, k_psi: int, k_theta: int, k_phi: int, phi_warmup: int = 0) -> int:
    """How many of ``max_steps`` optimizer steps of Algorithm 1's schedule train θ."""
    return optimizer_steps_by_phase("boost", max_steps, k_psi, k_theta, k_phi, phi_warmup)["theta"]


def method_config(
    config: BilevelReweightConfig, method: str, out: Path, match_theta_updates: bool
) -> BilevelReweightConfig:
    """``config`` for ``method``; the uniform-weight methods get as many steps as the bilevel schedule gives θ."""
    args = copy.deepcopy(config)
    args.method, args.output_dir = method, str(out)
    if method in ("vanilla", "vanilla_synthetic") and match_theta_updates:
        args.max_steps = max(1, theta_updates(config.max_steps, *config.schedule))
    return args


# ------------------------------------------------------------------------------------------ stages
def evaluate(
    recipe: BoostRecipeArguments, config: BilevelReweightConfig, trainer, env, evaluation, tokenizer, out: Path
) -> dict[str, Any]:
    """Live episodes of the value-guided policy on held-out categories; writes ``eval.md``, ``eval.png``."""
    from ..data.schema import to_dataset as rows_to_dataset
    from ..envs.rollout import evaluate_policy
    from ..evaluation.metrics import trajectory_return

    held_out = set(evaluation["category"])
    tasks = _spread_over_categories(
        [t for t in env.tasks() if t.category in held_out], recipe.num_eval_episodes, seed=1234
    )
    if hardware.use_bf16("generation", device=next(trainer.policy.parameters()).device):
        # training is over (artifacts saved): bf16 weights decode ~1.3x and prefill ~3x faster on CPU than
        # fp32 weights under bf16 autocast, which casts them again on every forward
        trainer.policy.to(torch.bfloat16)
    guided = trainer.guided_policy()
    trainer.policy.eval()
    try:
        result = evaluate_policy(
            guided.model,
            recipe.env,
            tasks,
            num_episodes=recipe.num_eval_episodes,
            tokenizer=tokenizer,
            logits_processor=[guided.processor],
            max_new_tokens=recipe.eval_max_new_tokens,
            batch_size=recipe.eval_batch_size,
            max_turns=recipe.eval_max_turns,
            max_prompt_tokens=config.max_length,
        )
    finally:
        guided.processor.detach()
    (out / "eval.md").write_text(result.to_markdown(config.method))
    rows_to_dataset(result.rows).save_to_disk(str(out / "eval_trajectories"))  # what the policy actually did
    result.plot(out / "eval.png", title=f"{recipe.env}: {config.method}")
    empty = sum(
        1 for row in result.rows for m in row["messages"] if m["role"] == "assistant" and not m["content"].strip()
    )
    print(
        f"[eval] {config.method}: return {result.mean_return:.3f} ± {result.stderr:.3f}, success "
        f"{result.success_rate:.2f} over {result.num_episodes} episodes ({empty} empty actions)"
    )
    return {
        "mean_return": result.mean_return,
        "stderr": result.stderr,
        "success_rate": result.success_rate,
        "episodes": result.num_episodes,
        "empty_actions": empty,
        # per episode, so studies can pool seeds and compute their own standard errors
        "returns": [trajectory_return(row["rewards"]) for row in result.rows],
    }


def auc(positive: Sequence[float], negative: Sequence[float]) -> float | None:
    """P(a positive outweighs a negative), ties count one half; ``None`` when a group is empty."""
    if not positive or not negative:
        return None
    return sum((p > n) + 0.5 * (p == n) for p in positive for n in negative) / (len(positive) * len(negative))


def weights_by_group(ids: Sequence[str], sources: Sequence[str], weights: Sequence[float]) -> dict[str, list[float]]:
    """Learned weights by source (``real``, ``synthetic``) and by the scripted player's quality.

    Real rows go to ``expert`` / ``noisy``; scripted synthetic rows to ``synthetic_expert`` /
    ``synthetic_noisy``, so the head's ranking of the synthetic data can be checked on its own.
    """
    groups: dict[str, list[float]] = defaultdict(list)
    for row_id, source, weight in zip(ids, sources, weights):
        groups[source].append(float(weight))
        quality = scripted_quality(row_id)
        if quality:
            groups[quality if source != "synthetic" else f"synthetic_{quality}"].append(float(weight))
    return groups


def analyse(trainer, out: Path, title: str) -> dict[str, Any]:
    """Figure 2 (``weights_analysis/``) plus the mean weight per source and per scripted quality."""
    from ..boost.weight_analysis import analyze_weights

    summary = analyze_weights(
        trainer.reweighting_head,
        trainer.embeddings,
        trainer.training_rows["id"],
        trainer.training_rows["source"],
        out / "weights_analysis",
        title=title,
    )
    weights = trainer.trajectory_weights()
    groups = weights_by_group(weights["id"], weights["source"], weights["weight"])
    summary["mean_weight"] = {name: sum(values) / len(values) for name, values in groups.items()}
    summary["auc_expert_over_noisy"] = auc(groups.get("expert", []), groups.get("noisy", []))
    summary["auc_synthetic_expert_over_noisy"] = auc(
        groups.get("synthetic_expert", []), groups.get("synthetic_noisy", [])
    )
    summary["auc_real_over_synthetic"] = auc(groups.get("real", []), groups.get("synthetic", []))
    return summary


def train_method(recipe, config, method, data, tokenizer, peft_config, timer: StageTimer, out: Path):
    """A fresh policy trained with ``method`` on ``data`` (``train``, ``val``, ``synthetic``)."""
    from ..boost.trainer import BilevelReweightTrainer
    from ..models import load_causal_lm

    method_out = out / method if recipe.methods else out
    args = method_config(config, method, method_out, recipe.match_theta_updates)
    model = load_causal_lm(recipe.model, dtype=torch.float32)
    with timer(f"{method}/{EMBEDDING_STAGE}" if args.is_bilevel else f"{method}/setup (tokenize)"):
        trainer = BilevelReweightTrainer(
            model,
            args,
            train_dataset=data["train"],
            val_dataset=data["val"] if args.is_bilevel else None,
            synthetic_dataset=data["synthetic"] if args.uses_synthetic else None,
            processing_class=tokenizer,
            peft_config=peft_config,
        )
    phase_of = (lambda step: trainer.phase_at(step).phase) if args.is_bilevel else None
    trainer.add_callback(PhaseTimeCallback(timer, method, phase_of))
    with timer(f"{method}/train"):
        trainer.train()
    trainer.save_model(str(method_out / "final"))
    return trainer, args, method_out


def run(
    recipe: BoostRecipeArguments,
    config: BilevelReweightConfig,
    real_builder: Callable | None = None,
    fixed_settings: Sequence[str] = (),
) -> dict[str, Any]:
    """The whole pipeline for ``config.method`` (or every method of ``recipe.methods``, see :func:`compare`).

    With ``recipe.time_budget_minutes`` the job is first fitted to that wall time on this machine
    (:mod:`trainers.recipes.time_budget`); ``fixed_settings`` names the settings it must not change.
    """
    methods = list(recipe.methods) if recipe.methods else [config.method]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    from ..data.splits import split_by_category
    from ..envs import make_env
    from ..models import load_causal_lm, load_tokenizer

    started, timer = time.time(), StageTimer()
    hardware.configure_threads(verbose=True)  # all cores, also under accelerate launch's OMP_NUM_THREADS=1
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = make_env(recipe.env)
    tokenizer = load_tokenizer(recipe.model)
    needs_self_play = recipe.needs_self_play(methods)
    # one fp32 copy serves the speed measurement and self-play; neither needs it otherwise
    self_play_model = (
        load_causal_lm(recipe.model, dtype=torch.float32) if needs_self_play or recipe.time_budget_minutes else None
    )
    with timer("budget (measure this machine)"):
        recipe, config, predicted = fit_job(recipe, config, methods, self_play_model, fixed_settings)
    peft_config = None
    if recipe.lora_r > 0:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=recipe.lora_r,
            lora_alpha=2 * recipe.lora_r,
            task_type="CAUSAL_LM",
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        )
    with timer("data (real episodes, split)"):
        real = load_real(recipe, env, real_builder)
        splits = split_by_category(
            real, recipe.train_category_fraction, recipe.val_split, recipe.low_data_fraction, seed=recipe.split_seed
        )
    print(splits.split_report if hasattr(splits, "split_report") else splits)
    data: dict[str, Any] = {"train": splits["train"], "val": splits["val"], "synthetic": None}
    if any(m in SYNTHETIC_METHODS for m in methods):
        with timer(SELF_PLAY_STAGE):
            data["synthetic"] = generate_synthetic(
                recipe, config, self_play_model, tokenizer, data["train"], out, env=env
            )
    del self_play_model
    results: dict[str, Any] = {
        "env": recipe.env,
        "train": len(data["train"]),
        "val": len(data["val"]),
        "eval_pool": len(splits["eval"]),
        "synthetic": 0 if data["synthetic"] is None else len(data["synthetic"]),
        "methods": {},
    }
    for method in methods:
        trainer, args, method_out = train_method(recipe, config, method, data, tokenizer, peft_config, timer, out)
        cell: dict[str, Any] = {
            "method": method,
            "optimizer_steps": args.max_steps,
            "theta_updates": theta_updates(args.max_steps, *args.schedule) if args.is_bilevel else args.max_steps,
        }
        if args.is_bilevel:
            with timer(f"{method}/analysis"):
                cell["weights"] = analyse(trainer, method_out, f"{recipe.env} / {method}")
        if not recipe.skip_eval:
            with timer(f"{method}/evaluation"):
                cell["eval"] = evaluate(recipe, args, trainer, env, splits["eval"], tokenizer, method_out)
        results["methods"][method] = cell
        del trainer
    results["seconds"] = round(time.time() - started, 1)
    results["stages"] = dict(timer.seconds)
    results["predicted_stages"] = predicted
    results["config"] = {
        "recipe": asdict(recipe),
        "trainer": {k: v for k, v in config.to_dict().items() if isinstance(v, (int, float, str, bool, type(None)))},
    }
    # one method: its fields at the top level too, as the single-method runs always wrote them
    if len(methods) == 1:
        results.update(results["methods"][methods[0]])
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    table = results_table(results)
    (out / "results.md").write_text(table + "\n")
    if len(methods) > 1:
        plot_comparison(results, out / "comparison.png")
    print(table)
    if recipe.profile:
        print(timer.report(predicted))
    print(f"[done] artifacts in {out} ({results['seconds']} s)")
    return results


def compare(
    recipe: BoostRecipeArguments,
    config: BilevelReweightConfig,
    methods: Sequence[str] = SYNTHETIC_METHODS,
    real_builder: Callable | None = None,
) -> dict[str, Any]:
    """:func:`run` for several methods on the same data and θ-update budget, side by side."""
    recipe = copy.copy(recipe)
    recipe.methods = list(methods)
    return run(recipe, config, real_builder)


def results_table(results: dict[str, Any]) -> str:
    """One markdown row per method: budget, live return, success, weights per source and quality."""
    lines = [
        "| method | θ updates | return ± s.e. | success | w real | w synthetic | w expert | w noisy | "
        "AUC expert>noisy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, cell in results["methods"].items():
        ev, weights = cell.get("eval"), cell.get("weights", {})
        mean = weights.get("mean_weight", {})

        def w(name, mean=mean):
            return f"{mean[name]:.3f}" if name in mean else "uniform"

        score = f"{ev['mean_return']:.3f} ± {ev['stderr']:.3f}" if ev else "not run"
        success = f"{ev['success_rate']:.2f}" if ev else "not run"
        quality = weights.get("auc_expert_over_noisy")
        lines.append(
            f"| {method} | {cell['theta_updates']} | {score} | {success} | {w('real')} | {w('synthetic')} | "
            f"{w('expert')} | {w('noisy')} | {'n/a' if quality is None else f'{quality:.3f}'} |"
        )
    return "\n".join(lines)


def plot_comparison(results: dict[str, Any], path: Path) -> None:
    """Live return per method and the learned mean weight per group, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(results["methods"])
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    evals = [results["methods"][m].get("eval") or {} for m in methods]
    axes[0].bar(
        range(len(methods)),
        [e.get("mean_return", 0.0) for e in evals],
        yerr=[e.get("stderr", 0.0) for e in evals],
        capsize=3,
        color="#1e88e5",
    )
    axes[0].set_xticks(range(len(methods)), methods, fontsize=8)
    axes[0].set_ylabel("live return ± s.e.")
    weighted = [m for m in methods if "weights" in results["methods"][m]]
    groups = ["real", "synthetic", "expert", "noisy"] + [
        g
        for g in ("synthetic_expert", "synthetic_noisy")
        if any(g in results["methods"][m]["weights"]["mean_weight"] for m in weighted)
    ]
    for offset, method in enumerate(weighted):
        mean = results["methods"][method]["weights"]["mean_weight"]
        axes[1].bar(
            [g + 0.35 * offset for g in range(len(groups))],
            [mean.get(g, 0.0) for g in groups],
            width=0.35,
            label=method,
        )
    axes[1].axhline(1.0, color="gray", linestyle=":", linewidth=0.8)
    axes[1].set_xticks(range(len(groups)), [g.replace("synthetic_", "syn. ") for g in groups], fontsize=8)
    axes[1].set_ylabel("mean learned weight (1 = uniform)")
    axes[1].legend(fontsize=8)
    figure.suptitle(f"BOOST recipe on {results['env']}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(
    env: str = "webshop",
    argv: Sequence[str] | None = None,
    *,
    methods: Sequence[str] | None = None,
    real_builder: Callable | None = None,
) -> dict[str, Any]:
    """Parse the command line and run; ``methods`` is the default of ``--methods`` (compare these)."""
    from ..allocator import keep_freed_memory

    keep_freed_memory()  # before any model loads: steps ran ~1.5x faster (benchmarks/cpu_allocator.py)
    recipe, config = parse_args(env, argv)
    if recipe.env != env:
        raise ValueError(f"this command runs {env!r}; use the {recipe.env!r} one (examples/boost_{recipe.env}.py)")
    if recipe.methods is None and methods is not None:
        recipe.methods = list(methods)
    given = given_on_command_line(sys.argv[1:] if argv is None else argv, [name for name, _ in SHRINKABLE])
    return run(recipe, config, real_builder, fixed_settings=given)


__all__ = [
    "BoostRecipeArguments",
    "ENV_DEFAULTS",
    "ExampleArguments",
    "PhaseTimeCallback",
    "StageTimer",
    "analyse",
    "compare",
    "evaluate",
    "generate_synthetic",
    "load_real",
    "main",
    "method_config",
    "parse_args",
    "results_table",
    "run",
    "scripted_synthetic",
    "small_scale_defaults",
    "theta_updates",
    "weights_by_group",
]
