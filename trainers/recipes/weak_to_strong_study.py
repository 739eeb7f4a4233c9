"""Weak-to-strong recipe, part 3: the multi-seed study and its report (W2SG paper, table 1's shape).

``python -m trainers.recipes.weak_to_strong_study`` runs the study with the sizes the paper's
claims need (:data:`STUDY_DEFAULTS`): ScienceWorld's ``lifespan-longest-lived`` and
``lifespan-shortest-lived`` (the weak SFT model succeeds on part of their explorations; gold paths
of 2-8 steps), 12 train variations each (24 train tasks) with M=6 explorations per task, 64 greedy
test episodes per method (32 test variations of each type), seeds 0 and 1, every method: SFT
weak, SFT strong, Best-of-4, ETO-style trajectory DPO, Tree-DPO with an NLL term on the chosen
continuation, MCTS distillation; the strong model's SFT at 5e-5 (the weak model's 2e-4 left a fully
fine-tuned Gemma-3-270M unstable from seed to seed). Every option of
:func:`~trainers.recipes.weak_to_strong.build_parser` can override them; studies cached before
``--strong-sft-lr`` existed resume with ``--strong-sft-lr 2e-4``.

Every stage caches its artifact under ``--output-dir`` (see
:mod:`trainers.recipes.weak_to_strong_stages`): run the same command again to continue a stopped
study. ``--until explore`` stops after the weak model's explorations and prints its success rate
per task type, the number that says whether trees can teach anything. The report
(``results.md``, ``results.json``, ``results.png``) gives, per method, the mean over every test
episode of every seed that finished with its standard error (avg reward and success x100), each
seed's mean, and the wall time of each stage.
"""

from __future__ import annotations

import json
import math
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

from trainers.evaluation.metrics import mean_and_stderr
from trainers.recipes import weak_to_strong as setup
from trainers.recipes.weak_to_strong_cache import read_json
from trainers.recipes.weak_to_strong_stages import WeakToStrongRun

__all__ = ["STUDY_DEFAULTS", "main", "mean_stderr", "run_study", "summarize"]

#: The study's sizes (issue: >= 20 train tasks, M = 6, 64 test episodes per method, 2 seeds).
STUDY_DEFAULTS = {
    "task_names": "lifespan-longest-lived,lifespan-shortest-lived",
    "train_variations": 12,
    "test_variations": 32,
    "test_episodes": 64,
    "explore_samples": 6,
    "seeds": "0,1",
    # chosen on the dev split (40-task study: 50.0 / 50.0 against 50.0 / 9.4 at the weak model's 2e-4)
    "strong_sft_lr": 5e-5,
    "methods": "all",
    "output_dir": "runs/w2sg-study",
}

METHOD_TITLES = {
    "sft-weak": "SFT weak",
    "sft-strong": "SFT strong",
    "best-of-n": "SFT strong + Best-of-N",
    "eto": "SFT strong + ETO (trajectory DPO)",
    "tree-dpo": "W2SG Tree-DPO",
    "mcts": "W2SG MCTS distillation",
}


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean; s.e. 0 (not nan) for one value, so a one-episode report stays JSON."""
    if not values:
        raise ValueError("mean_stderr of no values")
    mean, stderr = mean_and_stderr(values)
    return mean, 0.0 if math.isnan(stderr) else stderr


def summarize(per_seed: dict[int, dict[str, dict]]) -> dict[str, dict]:
    """Per method: pooled mean ± s.e. over all episodes of the seeds that evaluated it (x100), and each seed's mean."""
    out: dict[str, dict] = {}
    for method in setup.METHODS:
        seeds = {seed: results[method] for seed, results in per_seed.items() if results.get(method)}
        if not seeds:
            continue
        scores = [s for episodes in seeds.values() for s in episodes["scores"]]
        success = [float(ok) for episodes in seeds.values() for ok in episodes["success"]]
        reward, reward_se = mean_stderr(scores)
        rate, rate_se = mean_stderr(success)
        out[method] = {
            "avg_reward": 100 * reward,
            "avg_reward_se": 100 * reward_se,
            "success_rate": 100 * rate,
            "success_rate_se": 100 * rate_se,
            "episodes": len(scores),
            "seeds": sorted(seeds),
            "per_seed_avg_reward": {str(s): 100 * mean_stderr(e["scores"])[0] for s, e in seeds.items()},
        }
    return out


def run_study(args) -> dict:
    """Every seed's stages in order, cheapest information first; returns what :func:`report` writes."""
    per_seed: dict[int, dict[str, dict]] = {}
    weak: dict[int, dict] = {}
    times: dict[int, dict] = {}
    runs = []
    for seed in args.seed_list:
        run = WeakToStrongRun(args, seed)
        runs.append(run)
        if args.report_only:  # what finished so far, nothing run
            if run.cache.done("explore"):
                weak[seed] = read_json(run.cache.path("explore"), "summary.json")
            per_seed[seed] = {m: run.finished_evaluation(m) for m in args.method_list}
            continue
        print(f"[data] seed {seed}: {len(run.train_tasks)} train tasks, {len(run.test_tasks)} test episodes")
        weak[seed] = run.weak_summary()
        print_weak_summary(seed, weak[seed])
        if args.until == "explore":
            continue
        run.forest(), run.pairs(), run.mcts_paths()
        if args.until == "trees":
            continue
        per_seed[seed] = {}
        for method in args.method_list:
            if args.until == "train":
                {"tree-dpo": run.tree_dpo, "mcts": run.mcts_distill, "eto": run.eto}.get(method, run.strong_sft)()
                continue
            per_seed[seed][method] = run.evaluate(method)
    for seed, run in zip(args.seed_list, runs):
        times[seed] = {**run.shared.times(), **run.cache.times()}
    return {"weak_explorations": weak, "per_seed": per_seed, "summary": summarize(per_seed), "stage_seconds": times}


def missing_results(summary: dict, args) -> list[str]:
    """What the requested study lacks: methods with no evaluation, or evaluated on fewer seeds than asked."""
    missing = []
    for method in args.method_list:
        done = summary.get(method, {}).get("seeds", [])
        lacking = [s for s in args.seed_list if s not in done]
        if lacking:
            missing.append(f"{METHOD_TITLES[method]} (seed {', '.join(map(str, lacking))})")
    return missing


def print_weak_summary(seed: int, summary: dict) -> None:
    for group, s in summary.items():
        print(
            f"[weak] seed {seed} {group}: success {s['success_rate']:.1f} / mean score {s['mean_score']:.1f} over "
            f"{s['episodes']} explorations; {s['tasks_with_success']}/{s['tasks']} tasks with a success, "
            f"{s['tasks_with_spread']}/{s['tasks']} with differing outcomes"
        )


def report(study: dict, args, title: str) -> str:
    """Write the report (``results.md`` / ``.json`` / ``.png``, see :func:`report_name`); returns the markdown."""
    lines = [f"# {title}", ""]
    summary = study["summary"]
    missing = missing_results(summary, args)
    if missing:
        lines += [f"**Partial study, not its result**: not finished: {'; '.join(missing)}.", ""]
    if summary:
        lines += [
            "| method | avg reward (x100) | success (x100) | episodes | seeds | avg reward per seed |",
            "|---|---|---|---|---|---|",
        ]
        for method, r in summary.items():
            per_seed = ", ".join(f"{v:.1f}" for v in r["per_seed_avg_reward"].values())
            lines.append(
                f"| {METHOD_TITLES[method]} | {r['avg_reward']:.1f} ± {r['avg_reward_se']:.1f} | "
                f"{r['success_rate']:.1f} ± {r['success_rate_se']:.1f} | {r['episodes']} | "
                f"{','.join(map(str, r['seeds']))} | {per_seed} |"
            )
        lines.append("")
    lines += [
        "Weak SFT model's explorations (success x100 / mean score x100; tasks with a success / with "
        "differing outcomes):",
        "",
    ]
    for seed, groups in study["weak_explorations"].items():
        for group, s in groups.items():
            lines.append(
                f"- seed {seed}, {group}: {s['success_rate']:.1f} / {s['mean_score']:.1f} over "
                f"{s['episodes']} explorations; {s['tasks_with_success']}/{s['tasks']}, "
                f"{s['tasks_with_spread']}/{s['tasks']}"
            )
    lines += ["", "Stage wall times (min):", ""]
    for seed, stages in study["stage_seconds"].items():
        lines.append(f"- seed {seed}: " + ", ".join(f"{name} {sec / 60:.1f}" for name, sec in stages.items()))
    text = "\n".join(lines) + "\n"
    out = Path(args.output_dir)
    stem = report_name(args)
    (out / f"{stem}.md").write_text(text, encoding="utf-8")
    (out / f"{stem}.json").write_text(json.dumps(study, indent=2, default=str), encoding="utf-8")
    if summary:
        plot(summary, out / f"{stem}.png", title)
    return text


def report_name(args) -> str:
    """``results``, or ``results-<split>-<variant>`` for a sweep's runs, so they never overwrite the study's."""
    parts = ["results"]
    if args.eval_split != "test":
        parts.append(args.eval_split)
    if args.variant:
        parts.append(args.variant)
    return "-".join(parts)


def plot(summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    xs = range(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 1.5 * len(names)), 4))
    ax.bar(
        [x - 0.2 for x in xs],
        [summary[n]["avg_reward"] for n in names],
        width=0.4,
        label="avg reward",
        yerr=[summary[n]["avg_reward_se"] for n in names],
        capsize=3,
    )
    ax.bar(
        [x + 0.2 for x in xs],
        [summary[n]["success_rate"] for n in names],
        width=0.4,
        label="success",
        yerr=[summary[n]["success_rate_se"] for n in names],
        capsize=3,
    )
    # each seed's mean avg reward on its bar: seeds can disagree more than one seed's standard error says
    seed_markers = "os^vD"
    seeds = sorted({seed for n in names for seed in summary[n]["per_seed_avg_reward"]}, key=str)
    for k, seed in enumerate(seeds):
        points = [
            (x - 0.2, summary[n]["per_seed_avg_reward"][seed])
            for x, n in zip(xs, names)
            if seed in summary[n]["per_seed_avg_reward"]
        ]
        ax.scatter(
            *zip(*points),
            marker=seed_markers[k % len(seed_markers)],
            color="black",
            s=14,
            zorder=3,
            label=f"avg reward, seed {seed}",
        )
    ax.set_xticks(list(xs))
    ax.set_xticklabels([METHOD_TITLES[n] for n in names], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("x100 (mean ± s.e. over test episodes)")
    ax.set_title(textwrap.fill(title, 70), fontsize=9)  # the study's title is longer than the figure is wide
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(
    description: str = __doc__,
    env: str = "scienceworld",
    defaults: dict | None = None,
    argv: Sequence[str] | None = None,
) -> dict:
    """Parse options (``defaults`` override the parser's), run the study, write and print its report."""
    parser = setup.build_parser(description, env)
    if defaults:
        parser.set_defaults(**defaults)
    args = setup.finish_options(parser.parse_args(argv))
    start = time.perf_counter()
    study = run_study(args)
    finished = sorted({seed for result in study["summary"].values() for seed in result["seeds"]})
    title = (
        f"{setup.ENV_TITLES[args.env]} weak-to-strong ({args.weak} -> {setup.strong_name(args.strong)}), "
        f"seeds finished {','.join(map(str, finished)) or 'none'} of {args.seeds}"
    )
    print("\n" + report(study, args, title))
    print(f"total time {(time.perf_counter() - start) / 60:.1f} min; artifacts in {args.output_dir}")
    return study


if __name__ == "__main__":
    main(defaults=STUDY_DEFAULTS, argv=sys.argv[1:])
