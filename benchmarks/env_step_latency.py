"""Environment latency: construction, reset and step time per registered environment, one table.

Every environment registered in ``trainers.envs.ENVIRONMENTS`` is built with ``make_env``; one
whose optional dependency is missing (ImportError) is reported as skipped, every other error is
raised. Each env plays ``--episodes`` tasks of its train split with a fixed list of plausible
actions (valid and invalid ones: invalid actions count as steps in every env). Prints mean reset
time and step-latency mean / p50 / p95 in milliseconds, and steps/s, after one unrecorded warm-up
episode per env. ScienceWorld also reports
the ``full_info=True`` step (the original's look / inventory / valid-action lists each step).

    .venv/bin/python benchmarks/env_step_latency.py
    .venv/bin/python benchmarks/env_step_latency.py --envs scienceworld webshop --episodes 8
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from trainers.envs import ENVIRONMENTS, make_env  # noqa: E402

ACTIONS = {
    "twenty_questions": [
        "Is it an animal?",
        "Is it bigger than a bread box?",
        "Can you eat it?",
        "Is it made of metal?",
        "Is it used outdoors?",
        "Is it a dog?",
        "Is it a fruit or a vegetable?",
        "Is it a tool?",
    ],
    "car_dealer": [
        "Hi! What kind of car are you looking for?",
        "This Honda sedan has everything you listed.",
        "I can do $38,000 for it.",
        "How about $35,500?",
        "Final offer: $33,000.",
        "Deal.",
    ],
    "webshop": [
        "search[blue cotton shirt large]",
        "click[next >]",
        "click[< prev]",
        "search[wireless headphones]",
        "click[back to search]",
        "search[organic green tea pack]",
        "click[nothing here]",
    ],
    "scienceworld": [
        "look around",
        "inventory",
        "teleport to kitchen",
        "look at counter",
        "open fridge",
        "teleport to outside",
        "pick up axe",
        "go to hallway",
    ],
}

ENV_KWARGS = {
    # two quick-loading tasks; a task load is ~0.1-0.5 s, the JVM start ~2 s (in "build")
    "scienceworld": {"task_names": ["lifespan-longest-lived", "find-non-living-thing"], "max_variations_per_task": 4},
}


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def measure(name: str, episodes: int, steps_per_episode: int, **kwargs):
    start = time.perf_counter()
    env = make_env(name, **{**ENV_KWARGS.get(name, {}), **kwargs})
    build = time.perf_counter() - start
    tasks = list(env.tasks("train"))[:episodes]
    actions = ACTIONS.get(name, ["look"])
    # one unrecorded episode first: JIT warm-up of the ScienceWorld JVM, lazy caches elsewhere
    env.reset(tasks[-1], seed=-1)
    for action in actions[:3]:
        if env.step(action).done:
            break
    resets, steps = [], []
    for episode, task in enumerate(tasks):
        start = time.perf_counter()
        env.reset(task, seed=episode)
        resets.append(time.perf_counter() - start)
        for turn in range(steps_per_episode):
            action = actions[(turn + episode) % len(actions)]
            start = time.perf_counter()
            result = env.step(action)
            steps.append(time.perf_counter() - start)
            if result.done:
                break
    return build, resets, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="*", default=sorted(ENVIRONMENTS))
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--steps", type=int, default=8, help="steps per episode at most")
    args = parser.parse_args()

    results, skipped = [], []
    for name in args.envs:
        variants = [(name, {})]
        if name == "scienceworld":
            variants.append((f"{name} (full_info)", {"full_info": True}))
        for label, kwargs in variants:
            try:
                build, resets, steps = measure(name, args.episodes, args.steps, **kwargs)
            except ImportError as error:  # a missing optional dependency, nothing else
                skipped.append((label, str(error)))
                continue
            results.append((label, build, resets, steps))
            print(f"measured {label}: {len(steps)} steps", flush=True)

    print(f"\nEnvironment latency ({args.episodes} episodes, up to {args.steps} steps each)\n")
    print("| env | build s | reset ms | step ms mean | p50 | p95 | steps/s |")
    print("|---|---|---|---|---|---|---|")
    for label, build, resets, steps in results:
        mean = statistics.mean(steps)
        print(
            f"| {label} | {build:.2f} | {1000 * statistics.mean(resets):.1f} | {1000 * mean:.2f} | "
            f"{1000 * percentile(steps, 0.5):.2f} | {1000 * percentile(steps, 0.95):.2f} | {1 / mean:.0f} |"
        )
    for label, reason in skipped:
        print(f"skipped {label}: {reason}")
    lean = {label: statistics.mean(steps) for label, _, _, steps in results}
    if "scienceworld" in lean and "scienceworld (full_info)" in lean:
        print(
            f"\nScienceWorld full_info step / lean step: {lean['scienceworld (full_info)'] / lean['scienceworld']:.1f}x"
        )


if __name__ == "__main__":
    main()
