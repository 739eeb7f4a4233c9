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

from trainers.recipes import boost as recipe

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


def cell_argv(args, env: str, regime: str, method: str, out: Path, synthetic: Path | None) -> list[str]:
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
        "1",
        "--loss_type",
        args.loss_type,
        "--seed",
        str(args.seed),
        "--split_seed",
        str(args.seed),
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


def fmt(cell: dict | None) -> str:
    if not cell or "eval" not in cell:
        return "n/a"
    return f"{cell['eval']['mean_return']:.2f} ± {cell['eval']['stderr']:.2f}"


def write_table(results: dict, envs, regimes, out: Path) -> str:
    lines = [
        f"| Environment | Data | {' | '.join(METHOD_TITLES[m] for m in METHODS)} |",
        "|---|---|" + "---|" * len(METHODS),
    ]
    for env in envs:
        for regime in regimes:
            cells = {m: results.get(env, {}).get(regime, {}).get(m) for m in METHODS}
            means = {m: c["eval"]["mean_return"] for m, c in cells.items() if c and "eval" in c}
            best = max(means.values()) if means else None
            row = []
            for m in METHODS:
                text = fmt(cells[m])
                row.append(f"**{text}**" if best is not None and m in means and means[m] == best else text)
            lines.append(f"| {ENV_TITLES[env]} | {regime.capitalize()} | {' | '.join(row)} |")
    table = "\n".join(lines) + "\n"
    (out / "table1.md").write_text(table)
    return table


def plot(results: dict, envs, regimes, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(env, regime) for env in envs for regime in regimes]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for ax, (env, regime) in zip(axes[0], panels):
        cells = [results.get(env, {}).get(regime, {}).get(m) for m in METHODS]
        means = [c["eval"]["mean_return"] if c and "eval" in c else math.nan for c in cells]
        errors = [c["eval"]["stderr"] if c and "eval" in c else 0.0 for c in cells]
        ax.bar(range(len(METHODS)), means, yerr=errors, capsize=3, color=["#9e9e9e", "#bdbdbd", "#64b5f6", "#1e88e5"])
        ax.set_xticks(
            range(len(METHODS)),
            [METHOD_TITLES[m].replace(" (ours)", "") for m in METHODS],
            rotation=35,
            ha="right",
            fontsize=8,
        )
        ax.set_title(f"{ENV_TITLES[env]} ({regime})", fontsize=9)
        ax.set_ylabel("mean return ± s.e.", fontsize=8)
    fig.tight_layout()
    temporary = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(temporary, dpi=120)
    plt.close(fig)
    os.replace(temporary, path)


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
    parser.add_argument("--synthetic_max_steps", type=int, default=4)
    parser.add_argument("--eval_max_turns", type=int, default=8)
    parser.add_argument("--lora_r", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
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
    # synthetic-data methods first in each regime so the generated set is shared
    order = sorted(args.methods, key=lambda m: m not in ("boost", "vanilla_synthetic"))
    for env in args.envs:
        for regime in args.regimes:
            synthetic = None
            for method in order:
                cell_dir = out / env / regime / method
                done = results.get(env, {}).get(regime, {}).get(method)
                if done and "eval" in done:
                    print(f"[table1] {env}/{regime}/{method}: reusing {fmt(done)}")
                else:
                    example, config = recipe.parse_args(env, cell_argv(args, env, regime, method, cell_dir, synthetic))
                    cell = recipe.run(example, config)
                    results.setdefault(env, {}).setdefault(regime, {})[method] = {
                        k: cell[k] for k in ("eval", "train", "val", "synthetic", "seconds") if k in cell
                    }
                    results_file.write_text(json.dumps(results, indent=2))
                    print(f"[table1] {env}/{regime}/{method}: {fmt(results[env][regime][method])}")
                if (cell_dir / "synthetic_trajectories").is_dir():
                    synthetic = cell_dir / "synthetic_trajectories"
            # every finished cell in the folder, also those of earlier runs with other --regimes / --envs
            shown_envs = [e for e in ENV_TITLES if e in results]
            shown_regimes = [r for r in ("low", "high") if any(r in results[e] for e in shown_envs)]
            table = write_table(results, shown_envs, shown_regimes, out)
            plot(results, shown_envs, shown_regimes, out / "table1.png")
    print(table)
    print(f"[table1] {out / 'table1.md'}, {out / 'table1.png'}")


if __name__ == "__main__":
    main()
