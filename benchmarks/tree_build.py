"""Trajectory-tree build time and memory, embedding time apart, MCTS iterations/s and pair mining.

Synthesises N weak-model explorations (default 10,000 trajectories of 10 steps over 100 tasks,
ScienceWorld-like text): at each step the agent picks one of a few actions with skewed
probabilities, so explorations share prefixes and branch like real ones; observations are
deterministic in the task and the action history; thoughts come from paraphrase templates.

Embedding (all-MiniLM-L6-v2, one batched pass over all unique strings) is timed separately from
merging. On 2 shared cores the full pass over ~10^5 strings takes minutes, so by default the
encoder's throughput is measured on a sample of ``--embed-sample`` unique strings, the full pass
is extrapolated from it, and the merge runs with precomputed deterministic unit vectors
(``--full-embedding`` embeds everything for real). Prints one table.

    .venv/bin/python benchmarks/tree_build.py                       # 10,000 x 10 steps
    .venv/bin/python benchmarks/tree_build.py --trajectories 1000   # quicker
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import random
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from trainers.data.schema import make_trajectory  # noqa: E402
from trainers.tree import build_forest, mine_pairs, run_mcts  # noqa: E402

ROOMS = [
    "kitchen",
    "hallway",
    "greenhouse",
    "workshop",
    "art studio",
    "bedroom",
    "living room",
    "bathroom",
    "foundry",
    "outside",
]
OBJECTS = [
    "a stove",
    "a sink",
    "a thermometer",
    "a metal pot",
    "a fridge",
    "a flower pot",
    "a table",
    "a cupboard",
    "a lighter",
    "an orange",
]
VERBS = ["go to", "open", "pick up", "focus on", "look at", "move", "heat", "pour", "activate", "wait"]
THOUGHTS = [
    "I should {verb} the {target} next.",
    "Next I will {verb} the {target}.",
    "The {target} matters here, so I {verb} it.",
]


def synthetic_trajectories(n: int, steps: int, tasks: int, branching: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    # the first action is the common choice, as with a weak SFT policy sampled at temperature
    weights = [0.8] + [0.2 / (branching - 1)] * (branching - 1) if branching > 1 else [1.0]
    rows = []
    for index in range(n):
        task = index % tasks
        instruction = (
            f"Your task is to boil water (variation {task}). First, focus on the substance. "
            "Then, take actions that will cause it to change its state of matter."
        )
        messages = [
            {"role": "system", "content": "You are a helpful science agent."},
            {"role": "user", "content": instruction},
        ]
        history = f"task{task}"
        good = 0
        for step in range(steps):
            choice = rng.choices(range(branching), weights=weights)[0]
            digest = int(hashlib.md5(f"{history}|{choice}".encode()).hexdigest()[:8], 16)
            verb, target = VERBS[digest % len(VERBS)], OBJECTS[(digest // 10) % len(OBJECTS)].split(" ", 1)[1]
            thought = rng.choice(THOUGHTS).format(verb=verb, target=target)
            messages.append({"role": "assistant", "content": f"Thought: {thought}\nAction: {verb} {target}"})
            history = f"{history}|{choice}"
            room = ROOMS[(digest // 100) % len(ROOMS)]
            seen = ", ".join(OBJECTS[(digest >> k) % len(OBJECTS)] for k in range(0, 12, 3))
            if step < steps - 1:
                messages.append(
                    {"role": "user", "content": f"Observation: This room is called the {room}. In it, you see: {seen}."}
                )
            good += choice == 0
        score = round(good / steps, 2)
        rewards = [0.0] * (steps - 1) + [score]
        rows.append(
            make_trajectory(
                messages, rewards, id=f"traj-{index}", task_id=f"task-{task}", source="weak", metadata={"score": score}
            )
        )
    return rows


class HashEmbedder:
    """Deterministic pseudo-random unit vectors (no model): merge timing without the encoder."""

    dim = 384

    def encode(self, texts, show_progress_bar=False):
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
            out[i] = np.random.default_rng(seed).standard_normal(self.dim)
        return out


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trajectories", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--branching", type=int, default=3, help="actions to choose from at each step")
    parser.add_argument("--iterations", type=int, default=1000, help="MCTS iterations per tree")
    parser.add_argument(
        "--embed-sample", type=int, default=2000, help="strings embedded with MiniLM to measure its throughput"
    )
    parser.add_argument("--full-embedding", action="store_true", help="embed every unique string with MiniLM (minutes)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for the encoder")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    rows = synthetic_trajectories(args.trajectories, args.steps, args.tasks, args.branching)
    generate_s = time.perf_counter() - start
    gc.collect()

    # ---- embedding: the encoder's throughput on unique strings
    from trainers.embeddings import EmbeddingCache
    from trainers.tree.tree import TrajectoryTree, parse_steps

    probe = TrajectoryTree("", similarity_on="observation+thought")
    unique: dict[str, None] = {}
    for row in rows:
        for step in parse_steps(row["messages"])[2]:
            unique[probe.step_text(step.observation, step.thought)] = None
            unique[step.observation] = None
    unique_strings = list(unique)
    cache = EmbeddingCache()
    cache.encode(["warm up the encoder"])
    sample = unique_strings if args.full_embedding else unique_strings[: args.embed_sample]
    start = time.perf_counter()
    vectors = cache.encode(sample, show_progress_bar=len(sample) > 5000)
    embed_s = time.perf_counter() - start
    per_second = len(sample) / embed_s
    full_embed_s = embed_s if args.full_embedding else len(unique_strings) / per_second

    # ---- merge: trees built with precomputed vectors (real ones when --full-embedding)
    if args.full_embedding:
        table = dict(zip(sample, vectors))

        class Precomputed:
            def encode(self, texts, show_progress_bar=False):
                return np.stack([table[t] for t in texts])

        embedder = Precomputed()
    else:
        embedder = HashEmbedder()
    gc.collect()
    rss_before = rss_mb()
    start = time.perf_counter()
    forest = build_forest(rows, embedder=embedder, show_progress=False)
    build_s = time.perf_counter() - start
    gc.collect()
    rss_after = rss_mb()
    stats = forest.build_stats
    table_mb = forest.to_dataset().data.nbytes / 2**20

    start = time.perf_counter()
    results = run_mcts(forest, iterations=args.iterations, show_progress=False)
    mcts_s = time.perf_counter() - start
    start = time.perf_counter()
    pairs = mine_pairs(forest, log=False)
    pairs_s = time.perf_counter() - start

    n_steps = sum(len(parse_steps(r["messages"])[2]) for r in rows)
    print(
        f"\nTrajectory-tree benchmark: {args.trajectories:,} trajectories x {args.steps} steps, "
        f"{args.tasks} tasks, branching {args.branching}"
    )
    print(f"(synthetic data generated in {generate_s:.1f} s; {psutil.cpu_count()} CPUs)\n")
    print("| measure | value |")
    print("|---|---|")
    print(f"| steps merged | {n_steps:,} |")
    print(f"| tree nodes (roots excluded) | {forest.num_nodes:,} ({forest.num_nodes / n_steps:.1%} of steps) |")
    print(f"| unique strings to embed | {len(unique_strings):,} |")
    print(f"| MiniLM throughput | {per_second:,.0f} strings/s (measured on {len(sample):,}) |")
    label = "measured" if args.full_embedding else "extrapolated"
    print(f"| embedding pass, all unique strings | {full_embed_s:,.1f} s ({label}) |")
    merge_s = stats["parse_seconds"] + stats["merge_seconds"]
    print(
        f"| tree build without embedding | {merge_s:.2f} s (parse {stats['parse_seconds']:.2f} s, "
        f"merge {stats['merge_seconds']:.2f} s; vector lookup {stats['embedding_seconds']:.2f} s) |"
    )
    print(
        f"| build throughput without embedding | {args.trajectories / merge_s:,.0f} trajectories/s, "
        f"{n_steps / merge_s:,.0f} steps/s |"
    )
    build_s = merge_s
    print(f"| embedding share of total build | {full_embed_s / (full_embed_s + build_s):.1%} |")
    print(
        "| memory: process RSS growth over the build (forest kept, vector table released) | "
        f"{rss_after - rss_before:,.0f} MB |"
    )
    print(f"| memory: node table (Arrow) | {table_mb:,.1f} MB |")
    total_iterations = args.iterations * len(results)
    print(
        f"| MCTS | {total_iterations / mcts_s:,.0f} iterations/s "
        f"({len(results)} trees x {args.iterations} in {mcts_s:.2f} s) |"
    )
    print(f"| pair mining | {len(pairs):,} pairs in {pairs_s:.2f} s |")
    print()


if __name__ == "__main__":
    main()
