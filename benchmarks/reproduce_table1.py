"""Reproduce the layout of BOOST table 1: four methods x low/high data regimes on the built-in envs.

    python benchmarks/reproduce_table1.py                                   # small: SmolLM2-135M, 20Q + car dealer
    python benchmarks/reproduce_table1.py --model tiny --num_eval_episodes 8 # smoke run (random tiny model)
    python benchmarks/reproduce_table1.py --envs webshop --num_real 200 --max_steps 130 --k_psi 32 --k_theta 32

For every environment one real dataset is built (``--dataset_<env>`` or the examples' scripted
expert/noisy episodes) and split once per regime with a fixed seed (BOOST appendix E: low regime
keeps 2.5% / 10% / 30% of train for Twenty Questions / Car Dealer / WebShop, override with
``--low_fraction``), so every method sees the same data, and the same number of θ updates: the
uniform-weight methods run as many optimizer steps as the bilevel schedule gives θ
(``--match_theta_updates``, on by default). Synthetic data is generated once per
(environment, regime) and shared by ``vanilla_synthetic`` and ``boost``. Each cell trains a fresh
policy with :class:`BilevelReweightTrainer` (``method`` switch) and evaluates it live on tasks from
the held-out categories: mean ± standard error over ``--num_eval_episodes`` (paper: 64).

Outputs in ``--output_dir``: ``table1.md`` (paper layout, best per row in bold), ``table1.png``,
``results.json``, and each cell's artifacts (``<env>/<regime>/<method>/``). Finished cells are
reused when the script is run again with the same output folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

from trainers.boost.config import SYNTHETIC_METHODS
from trainers.checkpointing import write_text_atomically
from trainers.evaluation.metrics import mean_and_stderr
from trainers.recipes import boost as recipe

#: mean learned weight per group in the per-seed table: by source, then by the scripted player's quality
#: (real rows, and synthetic rows when the synthetic data is scripted)
WEIGHT_GROUPS = ("real", "synthetic", "expert", "noisy", "synthetic_expert", "synthetic_noisy")
#: what each cell keeps in ``results.json``
CELL_FIELDS = ("eval", "train", "val", "synthetic", "seconds", "theta_updates", "optimizer_steps", "weights")
METHODS = ("vanilla", "vanilla_synthetic", "bilevel", "boost")
METHOD_TITLES = {
    "vanilla": "Vanilla",
    "vanilla_synthetic": "Vanilla+Syn",
    "bilevel": "Bilevel Only",
    "boost": "BOOST (ours)",
}
ENV_TITLES = {"twenty_questions": "Twenty Questions", "car_dealer": "Car Negotiation", "webshop": "Webshop Agent"}
PAPER_LOW_FRACTION = {"twenty_questions": 0.025, "car_dealer": 0.10, "webshop": 0.30}


def tiny_model(folder: Path) -> str:
    """A tiny random Llama + local tokenizer (smoke runs: numbers are meaningless, the pipeline is real)."""
    from trainers.testing import build_tiny_model, build_tiny_tokenizer

    if not (folder / "config.json").is_file():
        tokenizer = build_tiny_tokenizer(folder)
        build_tiny_model(folder, tokenizer)
    return str(folder)


def cell_argv(args, env: str, regime: str, method: str, seed: int, out: Path, synthetic: Path | None) -> list[str]:
    low = args.low_fraction if args.low_fraction is not None else PAPER_LOW_FRACTION[env]
    argv = [
        "--env",
        env,
        "--model",
        args.model,
        "--method",
        method,
        "--output_dir",
        str(out),
        "--num_real",
        str(args.num_real),
        "--num_eval_episodes",
        str(args.num_eval_episodes),
        "--max_steps",
        str(args.max_steps),
        "--k_psi",
        str(args.k_psi),
        "--k_theta",
        str(args.k_theta),
        "--k_phi",
        str(args.k_phi),
        "--loss_type",
        args.loss_type,
        "--seed",
        str(seed),
        "--split_seed",
        str(seed),
        "--synthetic_max_steps",
        str(args.synthetic_max_steps),
        "--eval_max_turns",
        str(args.eval_max_turns),
        "--embedding_cache_dir",
        str(Path(args.output_dir) / "embedding_cache"),
        # every cell runs exactly these settings: no fitting to a wall-time budget
        "--time_budget_minutes",
        "0",
    ]
    if args.num_categories:
        argv += ["--num_categories", str(args.num_categories)]
    if regime == "low":
        argv += ["--low_data_fraction", str(low)]
    if synthetic is not None:
        argv += ["--synthetic_path", str(synthetic)]
    dataset = getattr(args, f"dataset_{env}", None)
    if dataset:
        argv += ["--dataset", dataset]
    if args.lora_r is not None:
        argv += ["--lora_r", str(args.lora_r)]
    return argv + list(args.extra)


def pooled(cells: list[dict]) -> dict | None:
    """Mean ± s.e. over every live episode of the seeds' cells (``None`` when none was evaluated)."""
    returns = [r for cell in cells if cell and "eval" in cell for r in cell["eval"].get("returns", [])]
    if not returns:
        return None
    mean, stderr = mean_and_stderr(returns)
    successes = [c["eval"]["success_rate"] * c["eval"]["episodes"] for c in cells if c and "eval" in c]
    return {
        "mean_return": mean,
        "stderr": stderr,
        "episodes": len(returns),
        "success_rate": sum(successes) / len(returns),
    }


def cells_of(results: dict, env: str, regime: str, method: str) -> list[dict]:
    """The finished cells of ``(env, regime, method)``, one per seed."""
    return [
        seed_results[env][regime][method]
        for seed_results in results.get("seeds", {}).values()
        if method in seed_results.get(env, {}).get(regime, {})
    ]


def fmt(stats: dict | None) -> str:
    return "n/a" if stats is None else f"{stats['mean_return']:.2f} ± {stats['stderr']:.2f}"


def verdict(stats: dict[str, dict | None]) -> str:
    """The paper's two claims for one row, and whether the standard-error intervals overlap."""

    def compare(a: str, b: str) -> str:
        if stats.get(a) is None or stats.get(b) is None:
            return f"{METHOD_TITLES[a]} vs {METHOD_TITLES[b]}: not run"
        x, y = stats[a], stats[b]
        overlap = abs(x["mean_return"] - y["mean_return"]) <= x["stderr"] + y["stderr"]
        sign = ">=" if x["mean_return"] >= y["mean_return"] else "<"
        return f"{METHOD_TITLES[a]} {sign} {METHOD_TITLES[b]} ({'s.e. overlap' if overlap else 's.e. apart'})"

    baseline = max(
        ("vanilla", "vanilla_synthetic"), key=lambda m: -math.inf if stats.get(m) is None else stats[m]["mean_return"]
    )
    return "; ".join([compare("bilevel", "vanilla"), compare("boost", baseline)])


def write_table(results: dict, envs, regimes, out: Path) -> str:
    """``table1.md``: the paper's layout pooled over seeds, then every seed's cells and weights."""
    seeds = sorted(results.get("seeds", {}), key=int)
    lines = [
        f"| Environment | Data | {' | '.join(METHOD_TITLES[m] for m in METHODS)} |",
        "|---|---|" + "---|" * len(METHODS),
    ]
    verdicts, per_seed = [], []
    for env in envs:
        for regime in regimes:
            stats = {m: pooled(cells_of(results, env, regime, m)) for m in METHODS}
            best = max((s["mean_return"] for s in stats.values() if s), default=None)
            row = [
                f"**{fmt(stats[m])}**" if stats[m] and stats[m]["mean_return"] == best else fmt(stats[m])
                for m in METHODS
            ]
            lines.append(f"| {ENV_TITLES[env]} | {regime.capitalize()} | {' | '.join(row)} |")
            verdicts.append(f"- {ENV_TITLES[env]} ({regime}): {verdict(stats)}")
            for seed in seeds:
                for m in METHODS:
                    cell = results["seeds"][seed].get(env, {}).get(regime, {}).get(m)
                    if not cell or "eval" not in cell:
                        continue
                    # uniform-weight methods have no head; "n/a": a source the cell did not train on
                    weights = cell.get("weights", {}).get("mean_weight")
                    w = " | ".join(
                        "uniform" if weights is None else f"{weights[k]:.3f}" if k in weights else "n/a"
                        for k in WEIGHT_GROUPS
                    )
                    per_seed.append(
                        f"| {ENV_TITLES[env]} | {regime} | {seed} | {METHOD_TITLES[m]} "
                        f"| {cell.get('theta_updates', 'n/a')} "
                        f"| {cell['eval']['mean_return']:.2f} ± {cell['eval']['stderr']:.2f} "
                        f"| {cell['eval']['success_rate']:.2f} | {w} |"
                    )
    episodes = sorted(
        {
            s["episodes"]
            for env in envs
            for regime in regimes
            for m in METHODS
            if (s := pooled(cells_of(results, env, regime, m)))
        }
    )
    table = "\n".join(lines) + "\n"
    text = (
        f"Mean return ± s.e. over all live episodes of seeds {', '.join(seeds)} "
        f"({'/'.join(map(str, episodes))} episodes per cell); best per row in bold.\n\n"
        + table
        + "\n"
        + "\n".join(verdicts)
        + "\n\n| Environment | Data | seed | method | θ updates | return ± s.e. | success | "
        + " | ".join(f"w {group.replace('_', ' ')}" for group in WEIGHT_GROUPS)
        + " |\n|---|---|---|---|---|---|---|"
        + "---|" * len(WEIGHT_GROUPS)
        + "\n"
        + "\n".join(per_seed)
        + "\n"
    )
    (out / "table1.md").write_text(text)
    return text


def plot(results: dict, envs, regimes, path: Path) -> None:
    """One panel per (environment, regime): pooled mean ± s.e. per method, each seed's mean as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(env, regime) for env in envs for regime in regimes]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for ax, (env, regime) in zip(axes[0], panels):
        stats = [pooled(cells_of(results, env, regime, m)) for m in METHODS]
        means = [s["mean_return"] if s else math.nan for s in stats]
        errors = [s["stderr"] if s else 0.0 for s in stats]
        ax.bar(range(len(METHODS)), means, yerr=errors, capsize=3, color=["#9e9e9e", "#bdbdbd", "#64b5f6", "#1e88e5"])
        for x, m in enumerate(METHODS):
            seed_means = [c["eval"]["mean_return"] for c in cells_of(results, env, regime, m) if "eval" in c]
            ax.plot([x] * len(seed_means), seed_means, "k.", markersize=4)
        ax.set_xticks(
            range(len(METHODS)),
            [METHOD_TITLES[m].replace(" (ours)", "") for m in METHODS],
            rotation=35,
            ha="right",
            fontsize=8,
        )
        ax.set_title(f"{ENV_TITLES[env]} ({regime})", fontsize=9)
        ax.set_ylabel("mean return ± s.e. (dots: seeds)", fontsize=8)
    fig.tight_layout()
    temporary = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(temporary, dpi=120)
    plt.close(fig)
    os.replace(temporary, path)


def finished_cell(cell_dir: Path, method: str) -> dict | None:
    """The fields of a cell that finished in ``cell_dir`` (its own ``results.json``), or None.

    Lets a folder whose ``results.json`` was lost, or into which finished cells were copied from a
    run with the same settings, reuse them instead of training again.
    """
    path = cell_dir / "results.json"
    if not path.is_file():
        return None
    cell = json.loads(path.read_text())
    if cell.get("method") != method or "eval" not in cell:
        return None
    return {k: cell[k] for k in CELL_FIELDS if k in cell}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["twenty_questions", "car_dealer"], choices=list(ENV_TITLES))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--regimes", nargs="+", default=["low", "high"], choices=["low", "high"])
    parser.add_argument(
        "--model", default="smollm2-135m-embedded", help="model id/folder, the embedded SmolLM2, or 'tiny'"
    )
    parser.add_argument("--loss_type", default="mc", choices=["mc", "ilql"])
    parser.add_argument("--num_real", type=int, default=40)
    parser.add_argument("--num_categories", type=int, default=10)
    parser.add_argument("--low_fraction", type=float, default=None, help="override the paper's low-data fractions")
    parser.add_argument("--num_eval_episodes", type=int, default=64)
    parser.add_argument("--max_steps", type=int, default=14)
    parser.add_argument("--k_psi", type=int, default=3)
    parser.add_argument("--k_theta", type=int, default=3)
    parser.add_argument(
        "--k_phi",
        type=int,
        default=1,
        help="phi steps per outer iteration (paper: 1); keep max_steps a multiple of k_psi + k_theta + k_phi",
    )
    parser.add_argument("--synthetic_max_steps", type=int, default=4)
    parser.add_argument("--eval_max_turns", type=int, default=8)
    parser.add_argument("--lora_r", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training and split seeds (paper: 3)")
    parser.add_argument("--output_dir", default="outputs/boost-table1")
    for env in ENV_TITLES:
        parser.add_argument(f"--dataset_{env}", default=None, help=f"real {env} trajectories (Hub id or path)")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="further flags for the examples (after --)")
    args = parser.parse_args()
    args.extra = [a for a in args.extra if a != "--"]
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.model == "tiny":
        args.model = tiny_model(out / "tiny-model")

    results_file = out / "results.json"
    results: dict = json.loads(results_file.read_text()) if results_file.is_file() else {}
    results.setdefault("seeds", {})
    # synthetic-data methods first in each regime so the generated set is shared
    order = sorted(args.methods, key=lambda m: m not in SYNTHETIC_METHODS)
    for seed in args.seeds:
        seed_results = results["seeds"].setdefault(str(seed), {})
        for env in args.envs:
            for regime in args.regimes:
                # a set generated by an earlier run in this folder is shared too, whichever --methods it ran
                earlier = [out / f"seed{seed}" / env / regime / m / "synthetic_trajectories" for m in SYNTHETIC_METHODS]
                synthetic = next((path for path in earlier if path.is_dir()), None)
                for method in order:
                    cell_dir = out / f"seed{seed}" / env / regime / method
                    done = seed_results.get(env, {}).get(regime, {}).get(method)
                    if not (done and "eval" in done) and (done := finished_cell(cell_dir, method)):
                        seed_results.setdefault(env, {}).setdefault(regime, {})[method] = done
                        write_text_atomically(results_file, json.dumps(results, indent=2))
                    if done and "eval" in done:
                        print(f"[table1] seed {seed} {env}/{regime}/{method}: reusing {fmt(done['eval'])}")
                    else:
                        argv = cell_argv(args, env, regime, method, seed, cell_dir, synthetic)
                        cell = recipe.run(*recipe.parse_args(env, argv))
                        seed_results.setdefault(env, {}).setdefault(regime, {})[method] = {
                            k: cell[k] for k in CELL_FIELDS if k in cell
                        }
                        write_text_atomically(results_file, json.dumps(results, indent=2))
                        print(f"[table1] seed {seed} {env}/{regime}/{method}: {fmt(cell.get('eval'))}")
                    if (cell_dir / "synthetic_trajectories").is_dir():
                        synthetic = cell_dir / "synthetic_trajectories"
                # every finished cell in the folder, also those of earlier runs with other --envs / --regimes
                shown_envs = [e for e in ENV_TITLES if any(e in r for r in results["seeds"].values())]
                shown_regimes = [
                    r
                    for r in ("low", "high")
                    if any(r in s.get(e, {}) for s in results["seeds"].values() for e in shown_envs)
                ]
                table = write_table(results, shown_envs, shown_regimes, out)
                plot(results, shown_envs, shown_regimes, out / "table1.png")
    print(table)
    print(f"[table1] {out / 'table1.md'}, {out / 'table1.png'}")


if __name__ == "__main__":
    main()
