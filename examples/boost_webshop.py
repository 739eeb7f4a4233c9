"""BOOST on WebShop, end to end, offline on a laptop-class CPU.

    accelerate launch examples/boost_webshop.py                      # small defaults: 40 scripted episodes, 2 outer iterations
    accelerate launch examples/boost_webshop.py --method vanilla     # any of the four table-1 methods
    accelerate launch examples/boost_webshop.py --dataset my/webshop-trajectories --num_eval_episodes 64 \\
        --k_psi 32 --k_theta 32 --max_steps 650 --per_device_train_batch_size 4 --gradient_accumulation_steps 4

Steps (every flag of ``BilevelReweightConfig`` and of ``ExampleArguments`` below is a CLI flag):

1. policy: the embedded SmolLM2-135M-Instruct (``trainers.models.DEFAULT_MODEL``) or ``--model``;
   LoRA by default (the paper uses QLoRA on WebShop), ``--lora_r 0`` trains the full model;
2. real data: ``--dataset`` (Hub id or local path in the trajectory schema), or episodes played in
   the built-in WebShop by scripted shoppers: an oracle (expert) for a fraction ``1 - noise`` of the
   episodes and a text-only heuristic shopper (noisy, often wrong) for the rest;
3. BOOST category split (train / val / eval by product category; ``--low_data_fraction``);
4. one synthetic trajectory per train trajectory by self-play of the same model (appendix F);
5. bilevel training (Algorithm 1) for a few outer iterations;
6. live evaluation of the value-guided policy on held-out categories (mean ± s.e.);
7. weight analysis (figure 2) and every artifact saved under ``--output_dir`` (the evaluation
   episodes too, in ``eval_trajectories``).

The same pipeline runs Twenty Questions and Car Dealer (``examples/boost_twenty_questions.py``,
``examples/boost_car_dealer.py``) and the table-1 benchmark (``benchmarks/reproduce_table1.py``).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Idle OpenMP threads sleep instead of spinning: a SmolLM2 training step took 1.7 s against 2.0 s
# on a quiet 2-core machine, and spinning threads starve a second job (examples/tree_dpo_scienceworld.py)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import datasets  # noqa: E402
import torch  # noqa: E402

from trainers.allocator import keep_freed_memory
from trainers.bilevel_config import BilevelReweightConfig
from trainers.bilevel_trainer import BilevelReweightTrainer
from trainers.data.schema import to_dataset
from trainers.data.splits import split_by_category
from trainers.envs import make_env
from trainers.envs.rollout import evaluate_policy
from trainers.hardware import configure_threads, use_bf16
from trainers.hardware import generation_model as generation_copy
from trainers.models import DEFAULT_MODEL, load_causal_lm, load_tokenizer
from trainers.synthetic import SyntheticConfig, SyntheticTrajectoryGenerator
from trainers.weight_analysis import analyze_weights

#: Paper hyperparameters per environment (BOOST appendix D, MC rows) and per-example small-scale defaults.
ENV_DEFAULTS: dict[str, dict[str, Any]] = {
    "webshop": dict(alpha=0.1, reweight_depth=4, per_device_train_batch_size=4, max_length=512, low_data=0.30),
    "twenty_questions": dict(alpha=1.0, reweight_depth=2, per_device_train_batch_size=8, max_length=384, low_data=0.025),
    "car_dealer": dict(alpha=10.0, reweight_depth=2, per_device_train_batch_size=8, max_length=512, low_data=0.10),
}


@dataclass
class ExampleArguments:
    """Pipeline settings of the BOOST examples (the trainer's settings are ``BilevelReweightConfig`` flags)."""

    env: str = field(default="webshop", metadata={"help": "webshop | twenty_questions | car_dealer."})
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "Policy model (id, folder or the embedded SmolLM2)."})
    dataset: str | None = field(default=None, metadata={"help": "Hub id or path of real trajectories (default: scripted episodes)."})
    num_real: int = field(default=40, metadata={"help": "Scripted real episodes when no --dataset (paper: 2,000 on WebShop)."})
    num_categories: int | None = field(default=10, metadata={"help": "Task categories the scripted episodes use (None = all)."})
    noise: float = field(default=0.5, metadata={"help": "Fraction of scripted episodes played by the noisy policy."})
    low_data_fraction: float | None = field(default=None, metadata={"help": "Low-data regime: keep this fraction of train (paper 0.30 / 0.025 / 0.10)."})
    train_category_fraction: float = field(default=0.6, metadata={"help": "Categories in train (paper 0.6)."})
    val_split: float = field(default=0.3, metadata={"help": "Held-out trajectories in val (paper 0.3)."})
    split_seed: int = field(default=0, metadata={"help": "Category split seed (shared by all methods)."})
    synthetic_max_steps: int = field(default=4, metadata={"help": "Agent actions per synthetic episode."})
    synthetic_max_new_tokens: int = field(default=32, metadata={"help": "Tokens per generated agent turn (observations get 2x)."})
    synthetic_batch_size: int = field(default=8, metadata={"help": "Episodes per generate call."})
    synthetic_path: str | None = field(default=None, metadata={"help": "Reuse synthetic trajectories saved by an earlier run."})
    num_eval_episodes: int = field(default=8, metadata={"help": "Live evaluation episodes (paper 64)."})
    eval_max_new_tokens: int = field(default=48, metadata={"help": "Tokens per agent turn in evaluation."})
    eval_batch_size: int = field(default=8, metadata={"help": "Episodes played at once in evaluation."})
    eval_max_turns: int | None = field(default=8, metadata={"help": "Harness cap on evaluation turns (None = env horizon)."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank (0 = full fine-tuning)."})
    skip_eval: bool = field(default=False, metadata={"help": "Skip the live evaluation."})


def small_scale_defaults(env: str) -> dict[str, Any]:
    """Defaults that keep one run of the example within ~10-15 minutes on 2 CPU cores."""
    values = ENV_DEFAULTS[env]
    return dict(
        output_dir=f"outputs/boost-{env}",
        method="boost",
        alpha=values["alpha"],
        reweight_depth=values["reweight_depth"],
        k_psi=3,
        k_theta=3,
        k_phi=1,
        max_steps=14,  # 2 outer iterations
        per_device_train_batch_size=values["per_device_train_batch_size"],
        max_length=values["max_length"],
        learning_rate=1e-4,
        reweight_learning_rate=1e-3,
        cql_weight=10.0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=0,
        # bf16 autocast on CPU needs use_cpu (TrainingArguments refuses bf16 "on GPU" without one)
        use_cpu=not torch.cuda.is_available(),
    )


def parse(env: str, argv: list[str] | None = None) -> tuple[ExampleArguments, BilevelReweightConfig]:
    from transformers import HfArgumentParser

    parser = HfArgumentParser((ExampleArguments, BilevelReweightConfig))
    defaults = {"env": env, **small_scale_defaults(env)}
    parser.set_defaults(**defaults)
    example, config = parser.parse_args_into_dataclasses(args=argv if argv is not None else sys.argv[1:])
    return example, config


# ------------------------------------------------------------------------------------------ data
def webshop_real_rows(env, tasks, noise: float, seed: int) -> list[dict[str, Any]]:
    """Scripted WebShop episodes: oracle (expert) on a ``1 - noise`` fraction, heuristic (noisy) on the rest."""
    from trainers.envs.webshop.scripted import scripted_trajectories

    rng = random.Random(seed)
    noisy = set(rng.sample(range(len(tasks)), round(noise * len(tasks))))
    rows = scripted_trajectories([t for i, t in enumerate(tasks) if i not in noisy], env=env, policy="oracle", progress=False)
    rows += scripted_trajectories([t for i, t in enumerate(tasks) if i in noisy], env=env, policy="heuristic", progress=False)
    return rows


def play_scripted(env, tasks, choose_policy: Callable, noise: float, seed: int, *, max_actions: int | None = None) -> list[dict[str, Any]]:
    """Play ``tasks`` with scripted policies: ``choose_policy(task, noisy, rng)`` returns ``messages -> action``.

    A ``noise`` fraction of the episodes (chosen with ``seed``) gets the noisy policy. Rows carry the
    environment's rewards, the task spec in ``metadata["task"]`` and which policy played.
    """
    from trainers.data.schema import make_trajectory

    rng = random.Random(seed)
    noisy = set(rng.sample(range(len(tasks)), round(noise * len(tasks))))
    rows = []
    for index, task in enumerate(tasks):
        policy = choose_policy(task, index in noisy, random.Random(seed * 7919 + index))
        observation = env.reset(task, seed=seed + index)
        messages = [{"role": "system", "content": env.system_prompt}, {"role": "user", "content": observation}]
        rewards, done, info = [], False, {}
        while not done and len(rewards) < (max_actions or env.max_steps):
            action = policy(messages)
            observation, reward, done, info = env.step(action)
            messages.append({"role": "assistant", "content": action})
            rewards.append(float(reward))
            if not done:
                messages.append({"role": "user", "content": observation})
        rows.append(make_trajectory(
            messages, rewards, id=f"{env.name}-{'noisy' if index in noisy else 'expert'}-{index}", task_id=task.task_id,
            category=task.category, done=done, success=bool(info.get("success", False)),
            metadata={"env": env.name, "task": {"task_id": task.task_id, "spec": task.spec}, "policy": "noisy" if index in noisy else "expert"},
        ))
    return rows


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


def load_real(example: ExampleArguments, env, real_builder: Callable) -> datasets.Dataset:
    if example.dataset:
        from trainers.data.hub_io import load_trajectories

        return load_trajectories(example.dataset, split="train", require_category=True)
    tasks = list(env.tasks())
    if example.num_categories:
        categories = sorted({t.category for t in tasks})
        keep = set(random.Random(example.split_seed).sample(categories, min(example.num_categories, len(categories))))
        tasks = [t for t in tasks if t.category in keep]
    tasks = _spread_over_categories(tasks, example.num_real, example.split_seed)
    return to_dataset(real_builder(env, tasks, example.noise, example.split_seed))


# ------------------------------------------------------------------------------------------ run
def run(example: ExampleArguments, config: BilevelReweightConfig, real_builder: Callable) -> dict[str, Any]:
    started = time.time()
    configure_threads(verbose=True)  # all cores, also under `accelerate launch` (which exports OMP_NUM_THREADS=1)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = make_env(example.env)
    tokenizer = load_tokenizer(example.model)
    model = load_causal_lm(example.model, dtype=torch.float32)
    peft_config = None
    if example.lora_r > 0:
        from peft import LoraConfig

        peft_config = LoraConfig(r=example.lora_r, lora_alpha=2 * example.lora_r, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM")

    real = load_real(example, env, real_builder)
    splits = split_by_category(
        real, example.train_category_fraction, example.val_split, example.low_data_fraction, seed=example.split_seed
    )
    print(splits.split_report if hasattr(splits, "split_report") else splits)
    train, val, evaluation = splits["train"], splits["val"], splits["eval"]

    synthetic = None
    if config.method in ("vanilla_synthetic", "boost"):
        if example.synthetic_path:
            synthetic = datasets.load_from_disk(example.synthetic_path)
        else:
            # a bf16 copy where bf16 generates faster on this machine (native bf16), else the fp32 weights
            generation_model = generation_copy(model)
            generator = SyntheticTrajectoryGenerator(
                generation_model, tokenizer,
                SyntheticConfig(
                    env_name=example.env, max_steps=example.synthetic_max_steps,
                    max_new_tokens_agent=example.synthetic_max_new_tokens, max_new_tokens_env=2 * example.synthetic_max_new_tokens,
                    batch_size=example.synthetic_batch_size, seed=config.seed, max_prompt_tokens=config.max_length or 1024,
                ),
                generator_id=example.model,
            )
            synthetic = generator.generate(train)
            del generation_model, generator
            synthetic.save_to_disk(str(out / "synthetic_trajectories"))
        print(f"[data] {len(synthetic)} synthetic trajectories, "
              f"{sum(synthetic['success'])} judged successful by the self-play rules")

    trainer = BilevelReweightTrainer(
        model, config, train_dataset=train, val_dataset=val if config.is_bilevel else None,
        synthetic_dataset=synthetic, processing_class=tokenizer, peft_config=peft_config,
    )
    trainer.train()
    trainer.save_model(str(out / "final"))
    results: dict[str, Any] = {"method": config.method, "env": example.env, "train": len(train), "val": len(val),
                               "eval_pool": len(evaluation), "synthetic": 0 if synthetic is None else len(synthetic)}

    if config.is_bilevel:
        results["weights"] = analyze_weights(
            trainer.reweighting_head, trainer.embeddings, trainer.training_rows["id"], trainer.training_rows["source"],
            out / "weights_analysis", title=f"{example.env} / {config.method}",
        )

    if not example.skip_eval:
        held_out = set(evaluation["category"])
        tasks = [t for t in env.tasks() if t.category in held_out]
        tasks = _spread_over_categories(tasks, example.num_eval_episodes, seed=1234)
        if use_bf16("generation"):
            # training is over (artifacts saved): bf16 weights decode ~1.3x and prefill ~3x faster on
            # CPU than fp32 weights under bf16 autocast, which casts them again on every forward
            trainer.policy.to(torch.bfloat16)
        guided = trainer.guided_policy()
        trainer.policy.eval()
        try:
            result = evaluate_policy(
                guided.model, example.env, tasks, num_episodes=example.num_eval_episodes, tokenizer=tokenizer,
                logits_processor=[guided.processor], max_new_tokens=example.eval_max_new_tokens,
                batch_size=example.eval_batch_size, max_turns=example.eval_max_turns, max_prompt_tokens=config.max_length,
            )
        finally:
            guided.processor.detach()
        results["eval"] = {"mean_return": result.mean_return, "stderr": result.stderr,
                           "success_rate": result.success_rate, "episodes": result.num_episodes}
        (out / "eval.md").write_text(result.to_markdown(config.method))
        to_dataset(result.rows).save_to_disk(str(out / "eval_trajectories"))  # what the policy actually did
        result.plot(out / "eval.png", title=f"{example.env}: {config.method}")
        print(f"[eval] {config.method}: return {result.mean_return:.3f} ± {result.stderr:.3f}, "
              f"success {result.success_rate:.2f} over {result.num_episodes} episodes")

    results["seconds"] = round(time.time() - started, 1)
    results["config"] = {"example": asdict(example), "trainer": {k: v for k, v in config.to_dict().items() if isinstance(v, (int, float, str, bool, type(None)))}}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"[done] artifacts in {out} ({results['seconds']} s)")
    return results


def main(env: str = "webshop", real_builder: Callable = webshop_real_rows, argv: list[str] | None = None) -> dict[str, Any]:
    keep_freed_memory()  # before any model loads: steps ran ~1.5x faster (benchmarks/cpu_allocator.py)
    example, config = parse(env, argv)
    if example.env != env:
        raise ValueError(f"this example runs {env!r}; use examples/boost_{example.env}.py for {example.env!r}")
    return run(example, config, real_builder)


if __name__ == "__main__":
    main()
