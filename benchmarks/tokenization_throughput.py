"""Tokenization throughput of trajectory datasets (trajectories per second), num_proc=1 vs 2.

Builds N synthetic WebShop-like trajectories (system prompt, 6 assistant turns with
``Thought: ... / Action: ...`` and ``[SEP]``-joined observation pages) and tokenizes them with
:func:`trainers.data.tokenize_dataset` using the tiny ChatML tokenizer of ``trainers.testing`` and,
when available offline, the SmolLM2-135M-Instruct tokenizer (converted cache folder, else read
from the packaged GGUF). Prints one table with trajectories/s per tokenizer and the speedup of
``num_proc=2`` over ``num_proc=1`` measured in the same run.

    .venv/bin/python benchmarks/tokenization_throughput.py            # 10,000 trajectories
    .venv/bin/python benchmarks/tokenization_throughput.py --n 1000   # quicker
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets  # noqa: E402

from trainers.data import make_trajectory, to_dataset, tokenize_dataset  # noqa: E402

WORDS = (
    "blue red black white small large pack ounce cotton leather waterproof wireless portable organic "
    "stainless steel bluetooth rechargeable vintage lightweight"
).split()


def webshop_like(n: int, turns: int = 6, seed: int = 0) -> datasets.Dataset:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        goal = " ".join(rng.choices(WORDS, k=6))
        messages = [
            {
                "role": "system",
                "content": "You are shopping on a web store. Reply with one action: search[...] or click[...].",
            },
            {
                "role": "user",
                "content": f"Observation:\nWebShop [SEP] Instruction: [SEP] i need {goal}, "
                f"and price lower than {rng.randint(10, 90)}.00 dollars [SEP] Search",
            },
        ]
        for turn in range(turns):
            asin = f"B0{rng.randint(10**7, 10**8 - 1)}"
            messages.append(
                {
                    "role": "assistant",
                    "content": f"Thought: I think I should look at {' '.join(rng.choices(WORDS, k=4))}."
                    f"\nAction: click[{asin}]",
                }
            )
            if turn < turns - 1:
                page = " [SEP] ".join(
                    f"{f'B0{rng.randint(10**7, 10**8 - 1)}'} [SEP] {' '.join(rng.choices(WORDS, k=8)).title()} "
                    f"[SEP] ${rng.randint(5, 99)}.99"
                    for _ in range(3)
                )
                messages.append(
                    {
                        "role": "user",
                        "content": f"Observation:\nInstruction: [SEP] i need {goal} [SEP] Back to Search [SEP] {page}",
                    }
                )
        rows.append(
            make_trajectory(messages, [0.0] * (turns - 1) + [rng.random()], id=f"ws-{i}", category=f"c{i % 37}")
        )
    return to_dataset(rows, validate=False)


def tokenizers_to_test():
    from trainers.testing import build_tiny_tokenizer

    found = [("tiny ChatML (BPE 512)", build_tiny_tokenizer(tempfile.mkdtemp(prefix="tiny-tok-")))]
    try:
        from trainers.models import (
            _CONVERTED_NAME,
            DEFAULT_MODEL,
            _is_complete,
            default_cache_dir,
            load_tokenizer,
            smollm2_gguf_file,
        )

        folder = default_cache_dir() / _CONVERTED_NAME
        if _is_complete(folder):
            found.append(("SmolLM2-135M (converted)", load_tokenizer(DEFAULT_MODEL)))
        else:
            found.append(("SmolLM2-135M (from GGUF)", load_tokenizer(str(smollm2_gguf_file()))))
    except (FileNotFoundError, OSError, ImportError) as error:
        print(f"SmolLM2 tokenizer not available, skipped: {error}")
    return found


def measure(dataset, tokenizer, num_proc: int) -> tuple[float, int]:
    start = time.perf_counter()
    tokenized = tokenize_dataset(dataset, tokenizer, num_proc=num_proc)
    seconds = time.perf_counter() - start
    return seconds, sum(len(ids) for ids in tokenized["input_ids"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="number of trajectories (default 10,000)")
    parser.add_argument("--turns", type=int, default=6, help="assistant turns per trajectory (default 6)")
    args = parser.parse_args()
    datasets.disable_caching()
    dataset = webshop_like(args.n, args.turns)
    print(
        f"{args.n} synthetic WebShop-like trajectories, {args.turns} assistant turns each, {os.cpu_count()} CPU cores\n"
    )
    results = []
    for name, tokenizer in tokenizers_to_test():
        one, tokens = measure(dataset, tokenizer, 1)
        two, _ = measure(dataset, tokenizer, 2)
        results.append((name, tokens / args.n, args.n / one, args.n / two, one / two))
    print()
    print("| tokenizer | tokens/traj | traj/s num_proc=1 | traj/s num_proc=2 | speedup 2 vs 1 |")
    print("|---|---:|---:|---:|---:|")
    for name, per_traj, rate1, rate2, speedup in results:
        print(f"| {name} | {per_traj:.0f} | {rate1:,.0f} | {rate2:,.0f} | {speedup:.2f}x |")


if __name__ == "__main__":
    main()
