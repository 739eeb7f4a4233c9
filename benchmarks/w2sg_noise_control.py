"""Is a weak-to-strong method's effect bigger than noise of the same size? A control for greedy evaluations.

Tree-DPO at lr 1e-5 for one epoch moves the strong model's weights by about 2e-5 of their norm, yet its
greedy episodes can differ completely from the SFT model's. This script asks whether *any* change of
that size does the same: it evaluates, on the same tasks and with the same greedy rollouts as the
study, the model a method started from (``--base``), the trained model (``--trained``), and
``--copies`` copies of the base whose every weight tensor gets Gaussian noise scaled to the trained
model's relative distance from the base (tensor by tensor). If the noisy copies swing as far as the
trained model, the method's score difference says nothing about what it learnt.

    python benchmarks/w2sg_noise_control.py --study-dir <study folder> --seed 1 --trained tree_dpo

It reads a finished study's folder (``trainers.recipes.weak_to_strong_study``); the options that
built the study are the study's defaults unless given after ``--`` (e.g. ``-- --train-variations 12``).
Results: ``noise_control-seed<seed>-<trained>.json`` / ``.md`` in the study folder (kept: a rerun
with the same options reuses the finished evaluations).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from trainers.checkpointing import write_text_atomically  # noqa: E402
from trainers.recipes import weak_to_strong as setup  # noqa: E402
from trainers.recipes.weak_to_strong_scores import episode_scores  # noqa: E402
from trainers.recipes.weak_to_strong_stages import WeakToStrongRun  # noqa: E402
from trainers.recipes.weak_to_strong_study import STUDY_DEFAULTS, mean_stderr  # noqa: E402


def relative_distances(base: torch.nn.Module, trained: torch.nn.Module) -> tuple[dict[str, float], float]:
    """``||trained - base|| / ||base||`` of every parameter tensor (0 for an all-zero base tensor), and overall."""
    trained_params = dict(trained.named_parameters())
    per_tensor, moved, size = {}, 0.0, 0.0
    for name, weight in base.named_parameters():
        norm = float(weight.detach().float().norm())
        step = float((trained_params[name].detach().float() - weight.detach().float()).norm())
        per_tensor[name] = step / norm if norm else 0.0
        moved, size = moved + step**2, size + norm**2
    return per_tensor, (moved / size) ** 0.5


@torch.no_grad()
def add_matched_noise(model: torch.nn.Module, distances: dict[str, float], generator: torch.Generator) -> None:
    """Adds to each tensor Gaussian noise whose norm is ``distances[name]`` times the tensor's norm."""
    for name, weight in model.named_parameters():
        noise = torch.randn(weight.shape, generator=generator, dtype=torch.float32)
        scale = distances[name] * weight.float().norm() / noise.norm().clamp_min(1e-12)
        weight.add_((noise * scale).to(weight.dtype))


def greedy_episodes(run: WeakToStrongRun, model) -> dict:
    rows = run.greedy_rollouts(setup.for_generation(model), run.strong_tokenizer())
    episodes = episode_scores(rows)
    actions = collections.Counter(
        m["content"].split("Action:")[-1].strip() for row in rows for m in row["messages"] if m["role"] == "assistant"
    )
    episodes["top_actions"] = actions.most_common(3)
    episodes["actions"] = sum(actions.values())
    return episodes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study-dir", required=True, type=Path)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--trained", default="tree_dpo", help="the trained model's stage folder in the seed folder")
    parser.add_argument("--base", default="strong_sft", help="the stage folder the method started from")
    parser.add_argument("--copies", type=int, default=2, help="noisy copies of the base")
    parser.add_argument("--eval-split", default="dev", help="never the test split when choosing settings")
    parser.add_argument("--test-episodes", type=int, default=32)
    parser.add_argument("study_options", nargs=argparse.REMAINDER, help="the study's own options, after --")
    args = parser.parse_args(argv)
    study_parser = setup.build_parser("noise control")
    study_parser.set_defaults(**STUDY_DEFAULTS)
    extra = [a for a in args.study_options if a != "--"]
    study_args = setup.finish_options(
        study_parser.parse_args(
            [
                "--output-dir",
                str(args.study_dir),
                "--eval-split",
                args.eval_split,
                "--test-episodes",
                str(args.test_episodes),
                "--seeds",
                str(args.seed),
                *extra,
            ]
        )
    )
    run = WeakToStrongRun(study_args, args.seed)
    seed_dir = args.study_dir / f"seed-{args.seed}"
    stem = f"noise_control-seed{args.seed}-{args.trained}-{args.eval_split}"
    out_json = args.study_dir / f"{stem}.json"
    results = json.loads(out_json.read_text()) if out_json.is_file() else {}

    base = run.load_model(seed_dir / args.base)
    trained = run.load_model(seed_dir / args.trained)
    distances, overall = relative_distances(base, trained)
    print(f"[noise] {args.trained} is {overall:.2e} of {args.base}'s norm away from it")
    candidates = {args.base: lambda: base, args.trained: lambda: trained}
    for copy in range(args.copies):

        def noisy(copy=copy):
            model = run.load_model(seed_dir / args.base)
            add_matched_noise(model, distances, torch.Generator().manual_seed(1000 + copy))
            return model

        candidates[f"{args.base} + matched noise #{copy}"] = noisy
    for name, build in candidates.items():
        if name in results:
            print(f"[noise] {name}: reusing")
            continue
        results[name] = greedy_episodes(run, build())
        write_text_atomically(out_json, json.dumps(results, indent=2))
        mean, stderr = mean_stderr([100 * s for s in results[name]["scores"]])
        print(f"[noise] {name}: avg reward {mean:.1f} ± {stderr:.1f}")

    lines = [
        f"Seed {args.seed}, {args.eval_split} split, {args.test_episodes} greedy episodes; {args.trained} is "
        f"{overall:.2e} of the base's norm away from {args.base}.",
        "",
        "| model | avg reward (x100) | top actions (count of all actions) |",
        "|---|---|---|",
    ]
    for name, episodes in results.items():
        mean, stderr = mean_stderr([100 * s for s in episodes["scores"]])
        top = ", ".join(f"`{action}` {count}" for action, count in episodes["top_actions"])
        lines.append(f"| {name} | {mean:.1f} ± {stderr:.1f} | {top} (of {episodes['actions']}) |")
    table = "\n".join(lines) + "\n"
    write_text_atomically(args.study_dir / f"{stem}.md", table)
    print(table)


if __name__ == "__main__":
    main(sys.argv[1:])
