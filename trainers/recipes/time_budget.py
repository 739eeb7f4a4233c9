"""Fit the BOOST recipe's job to a wall-time budget from the speed this machine measures.

The same job can take 11 minutes on a CPU with native bf16 (AMX / AVX512-BF16) and more than three
times as long on an AVX2-only one, where the library trains in fp32. Rather than a size that suits one
kind of machine, the recipe measures two speeds at the start (a training step and a batched decode of
the policy, at the precisions the library picked), predicts each stage's wall time from the work it
will do, and, when the prediction is over the budget, shrinks the job until it fits: first the
real episodes (and with them the self-play episodes and the embeddings), then the evaluation
episodes, the self-play episode length, the evaluation turns, and last the optimizer steps (whole
outer iterations of Algorithm 1's schedule, so every method keeps the same θ budget). Settings
given on the command line are never changed.

Each stage's prediction is ``work / (measured speed x efficiency)``; the efficiencies are the ratios
of a stage's real throughput to the micro-benchmark's, measured once on a whole run of the recipe
(``--profile`` prints the prediction next to the measured time, so the constants can be re-fitted
when a stage changes).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from .. import hardware
from ..boost.algorithm import phase_at

#: Real throughput of a stage / the micro-benchmark's, fitted on a whole run of the WebShop main job
#: (2026-11-26, Xeon with AMX, bf16; `--profile` prints prediction and measurement side by side):
#: self-play and evaluation decode short turns after long prompts and step the environment, so they
#: reach part of the batched-decode speed; a LoRA step skips the weights' gradients and its batches
#: are shorter than ``max_length``, so it beats the full fine-tuning micro-benchmark; embedding is a
#: forward pass alone.
SELF_PLAY_EFFICIENCY = 0.45
EVALUATION_EFFICIENCY = 0.4
TRAINING_EFFICIENCY = 1.4
EMBEDDING_EFFICIENCY = 2.1
#: Cost of one optimizer step of each phase, in plain (uniform-weight) training steps, measured on
#: the same run: ψ trains on the train loss of a smaller batch; θ adds the validation loss; φ
#: differentiates the validation signal through the head.
PHASE_COST = {"uniform": 1.0, "psi": 0.35, "theta": 2.4, "phi": 1.7}
#: The recipe's stage names (its ``StageTimer`` keys), so a prediction sits next to its measurement.
SELF_PLAY_STAGE = "self-play (synthetic data)"
EMBEDDING_STAGE = "setup (tokenize, embed)"
#: Fixed costs per method: loading, tokenizing, saving, the weights analysis (seconds on any machine).
PER_METHOD_OVERHEAD_S = 10.0


@dataclass(frozen=True)
class MachineSpeed:
    """What one training step and one batched decode of the policy achieve on this machine."""

    training_tokens_per_s: float
    generation_tokens_per_s: float
    training_dtype: str
    generation_dtype: str

    def describe(self) -> str:
        return (
            f"training {self.training_tokens_per_s:.0f} tokens/s ({self.training_dtype}), generation "
            f"{self.generation_tokens_per_s:.1f} new tokens/s ({self.generation_dtype}, batch of 8)"
        )


def fastest_call(function, repeats: int = 2) -> float:
    """Fastest wall time of ``repeats`` calls of ``function`` after one warm-up call."""
    function()  # warm-up: kernels, allocator
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def _time_training_step(model, dtype: torch.dtype, batch_size: int, sequence_length: int) -> float:
    device = next(model.parameters()).device
    trainee = copy.deepcopy(model).float().train()
    ids = torch.randint(100, model.config.vocab_size - 1, (batch_size, sequence_length), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss = trainee(input_ids=ids, labels=ids).loss
        loss.backward()
        trainee.zero_grad(set_to_none=True)

    return fastest_call(step)


def time_decode(
    model, dtype: torch.dtype, batch_size: int, prompt_length: int, new_tokens: int, repeats: int = 1
) -> float:
    """Fastest wall time of a greedy decode of exactly ``new_tokens`` for ``batch_size`` random prompts,
    on a copy of ``model`` in ``dtype``."""
    decoder = copy.deepcopy(model).to(dtype).eval()
    device = next(decoder.parameters()).device
    prompt = torch.randint(100, decoder.config.vocab_size - 1, (batch_size, prompt_length), device=device)

    @torch.no_grad()
    def decode():
        decoder.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
        )

    return fastest_call(decode, repeats)


def measure_speed(model, *, sequence_length: int = 128, batch_size: int = 2, new_tokens: int = 8) -> MachineSpeed:
    """Time one training step and one decode of ``model`` at the precisions the library picks here.

    Works on a copy (the model's weights and gradients are left alone); takes seconds on a laptop CPU.
    """
    device = next(model.parameters()).device
    train_dtype = hardware.pick_dtype("training", device=device)
    generation_dtype = hardware.pick_dtype("generation", device=device)
    training_seconds = _time_training_step(model, train_dtype, batch_size, sequence_length)
    generation_seconds = time_decode(model, generation_dtype, 8, sequence_length, new_tokens, repeats=1)
    return MachineSpeed(
        training_tokens_per_s=batch_size * sequence_length / training_seconds,
        generation_tokens_per_s=8 * new_tokens / generation_seconds,
        training_dtype=str(train_dtype).removeprefix("torch."),
        generation_dtype=str(generation_dtype).removeprefix("torch."),
    )


def optimizer_steps_by_phase(
    method: str, max_steps: int, k_psi: int, k_theta: int, k_phi: int, phi_warmup: int = 0
) -> dict[str, int]:
    """How many of ``max_steps`` optimizer steps each phase takes (uniform-weight methods: all ``uniform``)."""
    if method not in ("bilevel", "boost"):
        return {"uniform": max_steps}
    counts = {"psi": 0, "theta": 0, "phi": 0}
    for step in range(max_steps):
        counts[phase_at(step, k_psi, k_theta, k_phi, phi_warmup).phase] += 1
    return counts


def predict_seconds(recipe, config, methods: Sequence[str], speed: MachineSpeed) -> dict[str, float]:
    """Predicted wall time of each stage of :func:`trainers.recipes.boost.run` for these settings."""
    # the category split puts about train_category_fraction of the episodes in train (val is cut from the rest)
    train_episodes = max(1, round(recipe.num_real * recipe.train_category_fraction))
    stages: dict[str, float] = {}
    if recipe.needs_self_play(methods):
        # each step: one agent turn and one simulated observation of twice the length
        new_tokens = train_episodes * recipe.synthetic_max_steps * 3 * recipe.synthetic_max_new_tokens
        stages[SELF_PLAY_STAGE] = new_tokens / (speed.generation_tokens_per_s * SELF_PLAY_EFFICIENCY)
    tokens_per_step = config.per_device_train_batch_size * config.gradient_accumulation_steps * config.max_length
    step_seconds = tokens_per_step / (speed.training_tokens_per_s * TRAINING_EFFICIENCY)
    bilevel_steps = config.max_steps
    # a φ step ranks phi_batch_size rows (default: the micro-batch): its cost grows with them
    phi_width = (config.phi_batch_size or config.per_device_train_batch_size) / config.per_device_train_batch_size
    cost = {**PHASE_COST, "phi": PHASE_COST["phi"] * max(1.0, phi_width)}
    for method in methods:
        steps = bilevel_steps
        if method in ("vanilla", "vanilla_synthetic") and recipe.match_theta_updates:
            bilevel = optimizer_steps_by_phase("boost", bilevel_steps, *config.schedule)
            steps = max(1, bilevel["theta"])
        phases = optimizer_steps_by_phase(method, steps, *config.schedule)
        if method in ("bilevel", "boost"):
            # the head's input: one forward pass over every training trajectory (real, and synthetic for BOOST)
            embedded = train_episodes * (2 if method == "boost" else 1) * config.max_length
            stages[f"{method}/{EMBEDDING_STAGE}"] = embedded / (speed.training_tokens_per_s * EMBEDDING_EFFICIENCY)
        train = sum(cost[phase] * count for phase, count in phases.items()) * step_seconds
        stages[f"{method}/train"] = train + PER_METHOD_OVERHEAD_S
        if not recipe.skip_eval:
            turns = recipe.eval_max_turns or 10
            new_tokens = recipe.num_eval_episodes * turns * recipe.eval_max_new_tokens
            stages[f"{method}/evaluation"] = new_tokens / (speed.generation_tokens_per_s * EVALUATION_EFFICIENCY)
    return stages


#: what the fitting may shrink, in order, with each one's floor (the smallest job that still compares methods)
SHRINKABLE = (
    ("num_real", 12),
    ("num_eval_episodes", 4),
    ("synthetic_max_steps", 2),
    ("eval_max_turns", 4),
    ("max_steps", None),
)


def fit_to_budget(
    recipe, config, methods: Sequence[str], speed: MachineSpeed, budget_s: float, fixed: Iterable[str] = ()
) -> tuple[object, object, dict[str, float], list[str]]:
    """Shrink the settings not in ``fixed`` until the predicted total is within ``budget_s``.

    Returns new ``(recipe, config)``, the prediction for them and one line per change. Shrinks in the
    order of :data:`SHRINKABLE`, each to its floor before the next; ``max_steps`` drops one outer
    iteration at a time and keeps at least one. A job that cannot fit at the floors is left at them
    (the caller says so).
    """
    recipe, config, fixed = copy.copy(recipe), copy.deepcopy(config), set(fixed)
    changes: list[str] = []
    cycle = config.outer_length
    warmup = config.phi_warmup_steps  # φ's warm-up steps stay; whole outer iterations go

    def total() -> float:
        return sum(predict_seconds(recipe, config, methods, speed).values())

    for name, floor in SHRINKABLE:
        if name in fixed:
            continue
        target = config if name == "max_steps" else recipe
        before = getattr(target, name)
        floor = warmup + cycle if name == "max_steps" else floor
        while total() > budget_s and (getattr(target, name) or 0) > floor:  # None (no cap) stays
            value = getattr(target, name)
            if name == "max_steps":
                smaller = warmup + (math.ceil((value - warmup) / cycle) - 1) * cycle
            else:
                smaller = math.floor(value * 0.8)
            setattr(target, name, max(floor, smaller))
        if getattr(target, name) != before:
            changes.append(f"{name} {before} -> {getattr(target, name)}")
    return recipe, config, predict_seconds(recipe, config, methods, speed), changes


def given_on_command_line(argv: Sequence[str], names: Iterable[str]) -> set[str]:
    """Which of ``names`` appear as ``--name`` or ``--name=value`` in ``argv``."""
    flags = {arg.split("=", 1)[0].lstrip("-") for arg in argv if arg.startswith("--")}
    return {name for name in names if name in flags}


def _where(model) -> str:
    info = hardware.describe(next(model.parameters()).device)
    if "gpu" in info:
        return info["gpu"]
    native = "native bf16" if hardware.cpu_has_fast_bf16() else "no native bf16"  # a oneDNN ISA cap counts
    return f"CPU, {info['threads']} threads, bf16 flags: {' '.join(info['cpu_bf16_flags'])} ({native})"


def fit_job(recipe, config, methods: Sequence[str], model, fixed: Iterable[str] = ()):
    """Measure this machine, fit the job to ``recipe.time_budget_minutes`` and say what changed.

    Returns ``(recipe, config, predicted seconds per stage)``; the prediction is empty when the
    budget is 0 (the settings run as given, nothing is measured).
    """
    if not recipe.time_budget_minutes:
        return recipe, config, {}
    speed = measure_speed(model)
    as_given = sum(predict_seconds(recipe, config, methods, speed).values())
    budget = 60 * recipe.time_budget_minutes
    recipe, config, predicted, changes = fit_to_budget(recipe, config, methods, speed, budget, fixed)
    print(f"[budget] this machine ({_where(model)}): {speed.describe()}")
    fitted = sum(predicted.values())
    if not changes:
        minutes = recipe.time_budget_minutes
        print(f"[budget] predicted {as_given / 60:.1f} min, within {minutes:g} min: settings as given")
    else:
        verdict = "fits" if fitted <= budget else "still over the budget at the smallest settings"
        print(
            f"[budget] predicted {as_given / 60:.1f} min for the settings as given, over "
            f"{recipe.time_budget_minutes:g} min: {', '.join(changes)}; predicted {fitted / 60:.1f} min ({verdict}). "
            "--time_budget_minutes 0 runs the settings as given."
        )
    return recipe, config, predicted


__all__ = [
    "MachineSpeed",
    "fastest_call",
    "fit_job",
    "fit_to_budget",
    "given_on_command_line",
    "measure_speed",
    "optimizer_steps_by_phase",
    "predict_seconds",
    "time_decode",
]
