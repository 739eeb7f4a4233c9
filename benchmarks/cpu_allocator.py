"""Training-step time with glibc's default malloc vs :func:`trainers.allocator.keep_freed_memory`.

Each setting runs in its own fresh process (malloc settings are per process), alternating
default / kept / default / kept ... so that load from other jobs hits both alike. A process
loads the model, runs warm-up steps, then times forward + backward of one sequence under bf16
autocast (the examples' training path). Prints the median step time of each setting, their
ratio and the peak resident memory of each process.

The default model is the embedded SmolLM2-135M-Instruct (``--model``: any ``load_causal_lm``
name or folder); ``--tiny`` uses a local 4-layer Llama instead (no embedded model needed).

    .venv/bin/python benchmarks/cpu_allocator.py
    .venv/bin/python benchmarks/cpu_allocator.py --tokens 1024 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def worker(args) -> None:
    """One process: time ``args.steps`` training steps and print a JSON line."""
    import resource

    from trainers.allocator import keep_freed_memory

    if args.keep:
        keep_freed_memory()
    import torch

    if args.tiny:
        from transformers import AutoModelForCausalLM, LlamaConfig

        config = LlamaConfig(
            vocab_size=32000,
            hidden_size=256,
            intermediate_size=512,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
        )
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
    else:
        from trainers.models import load_causal_lm

        model = load_causal_lm(args.model, dtype=torch.float32)
    model.train()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(100, model.config.vocab_size, (1, args.tokens), generator=generator)
    labels = ids.clone()
    labels[:, : args.tokens * 3 // 4] = -100  # loss on the last quarter, like an action after its context

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=labels, use_cache=False).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"median_s": statistics.median(times), "peak_rss_mb": peak_mb}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-embedded")
    parser.add_argument("--tiny", action="store_true", help="a local 4-layer Llama instead of --model")
    parser.add_argument("--tokens", type=int, default=512, help="sequence length (default 512)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per process (default 6)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="processes per setting, alternated (default 2)")
    parser.add_argument("--worker", choices=["default", "kept"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.keep = args.worker == "kept"
        return worker(args)

    results = {"default": [], "kept": []}
    passthrough = [
        "--model",
        args.model,
        "--tokens",
        str(args.tokens),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    ]
    passthrough += ["--tiny"] if args.tiny else []
    for round_index in range(args.rounds):
        for setting in ("default", "kept"):
            out = subprocess.run(
                [sys.executable, __file__, "--worker", setting, *passthrough],
                check=True,
                capture_output=True,
                text=True,
            )
            results[setting].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {round_index + 1}, {setting}: {results[setting][-1]}", flush=True)

    def best(setting, key):
        return min(run[key] for run in results[setting])

    name = "tiny Llama" if args.tiny else args.model
    print(
        f"\n{name}, forward + backward of {args.tokens} tokens, bf16 autocast, best median of {args.rounds} processes:"
    )
    print("| malloc | step (s) | peak RSS (MB) |\n|---|---|---|")
    for setting, label in (("default", "glibc defaults"), ("kept", "keep_freed_memory()")):
        print(f"| {label} | {best(setting, 'median_s'):.2f} | {best(setting, 'peak_rss_mb'):.0f} |")
    print(f"\nstep time kept / default = {best('kept', 'median_s') / best('default', 'median_s'):.3f}")
    print(f"peak RSS  kept / default = {best('kept', 'peak_rss_mb') / best('default', 'peak_rss_mb'):.3f}")


if __name__ == "__main__":
    main()
