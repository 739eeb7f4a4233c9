"""Peak memory and step time of the ILQL loss: chunked CQL/BC vs the naive full-vocabulary logits.

One forward + backward of :func:`trainers.losses.per_trajectory_losses` (ILQL: two Q heads, their
targets, a V head, CQL on both Q heads and the behaviour-cloning CE on an LM head) on synthetic
hidden states of a batch of 512-token trajectories (half of the tokens are actions), at vocabulary
32k and 128k. Memory is measured in a fresh subprocess per configuration: a sampling thread records
the peak resident memory during two steps, and the reported memory is that peak minus the resident
size just before the steps (weights, inputs and gradient buffers allocated up front are excluded on
both sides). Step times are measured in one process, alternating naive and chunked steps and keeping
each one's best, so that the load of a shared machine affects both alike.

    .venv/bin/python benchmarks/ilql_memory.py [--vocab 32000 128000] [--seq 512] [--hidden 256]

Prints one line per configuration and the chunked/naive ratios side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def _save_plot(path: str, title: str, labels: list[str], series: dict[str, list[float]], ylabel: str) -> None:
    from trainers.plotting import grouped_bar_chart

    print(f"plot written to {grouped_bar_chart(path, title, labels, series, ylabel)}")


def _setup(vocab: int, seq: int, hidden: int, batch_size: int):
    import torch

    from trainers.modeling import ValueHeads

    torch.manual_seed(0)
    heads = ValueHeads(hidden, vocab, loss_type="ilql")
    lm_head = torch.nn.Linear(hidden, vocab, bias=False)
    b = batch_size
    hidden_states = torch.randn(b, seq, hidden, requires_grad=True)
    input_ids = torch.randint(0, vocab, (b, seq))
    # agent trajectories: turns of 32 observation tokens followed by 32 action tokens
    action_mask = torch.zeros(b, seq, dtype=torch.long)
    turn_ids = torch.full((b, seq), -1)
    token_rewards = torch.zeros(b, seq)
    for turn in range(seq // 64):
        start = turn * 64 + 32
        action_mask[:, start : start + 32] = 1
        turn_ids[:, start : start + 32] = turn
        token_rewards[:, start + 31] = float(turn % 2)
    token_dones = torch.zeros(b, seq, dtype=torch.long)
    token_dones[:, (seq // 64 - 1) * 64 + 63] = 1
    batch = {
        "input_ids": input_ids,
        "attention_mask": torch.ones(b, seq, dtype=torch.long),
        "action_mask": action_mask,
        "token_rewards": token_rewards,
        "token_dones": token_dones,
        "turn_ids": turn_ids,
    }
    # gradient buffers exist before the step in any real training loop: allocate them up front
    for parameter in [*heads.parameters(), *lm_head.parameters(), hidden_states]:
        if parameter.requires_grad:
            parameter.grad = torch.zeros_like(parameter)
    return heads, lm_head, hidden_states, batch


def _step(setup, implementation: str, chunk: int, bf16: bool = False) -> float:
    import time

    import torch

    from trainers.losses import OfflineRLLossConfig, per_trajectory_losses

    heads, lm_head, hidden_states, batch = setup
    config = OfflineRLLossConfig(
        loss_type="ilql", cql_weight=10.0, bc_weight=1.0, cql_chunk_size=chunk, cql_implementation=implementation
    )
    started = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        losses, _ = per_trajectory_losses(hidden_states, heads, batch, config, lm_head=lm_head)
    losses.mean().backward()
    return time.perf_counter() - started


def _resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_memory(
    vocab: int,
    seq: int,
    hidden: int,
    batch_size: int,
    implementation: str,
    chunk: int,
    threads: int,
    bf16: bool = False,
) -> dict:
    """Run in a fresh subprocess: peak resident memory during two steps, above the resident size before.

    A sampling thread reads the current resident size every millisecond (torch releases the GIL in
    its kernels); ``ru_maxrss`` cannot be used because set-up transients may exceed the step's peak.
    """
    import ctypes
    import threading

    import torch

    torch.set_num_threads(threads)
    setup = _setup(vocab, seq, hidden, batch_size)
    try:  # hand freed set-up memory back to the OS so that the baseline is what is really in use
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    baseline = _resident_bytes()
    peak = [baseline]
    running = [True]

    def sample():
        while running[0]:
            peak[0] = max(peak[0], _resident_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for _ in range(2):
        _step(setup, implementation, chunk, bf16)
    running[0] = False
    sampler.join()
    peak[0] = max(peak[0], _resident_bytes())
    return {"peak_mb": (peak[0] - baseline) / 2**20, "action_tokens": int(setup[3]["action_mask"].sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, nargs="+", default=[32000, 128000])
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4, help="trajectories per batch (BOOST: 8, WebShop 4 or 1)")
    parser.add_argument("--chunk", type=int, default=None, help="chunk size (default: OfflineRLConfig's)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--plot", type=str, default=None, help="write a PNG of memory and time per vocabulary here")
    parser.add_argument(
        "--bf16", action="store_true", help="run under bf16 autocast (the trainer's default on this CPU)"
    )
    parser.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_peak_memory(**json.loads(args.child))))
        return
    if args.chunk is None:
        from trainers.losses import OfflineRLLossConfig

        args.chunk = OfflineRLLossConfig().cql_chunk_size
    import torch

    torch.set_num_threads(args.threads)
    print(
        f"ILQL loss fwd+bwd, batch {args.batch} x seq {args.seq}, hidden {args.hidden}, chunk {args.chunk}, "
        f"{args.threads} thread(s), {'bf16 autocast' if args.bf16 else 'fp32'}; "
        f"time = best of {args.steps} alternating runs"
    )
    rows = []
    for vocab in args.vocab:
        result = {}
        for implementation in ("naive", "chunked"):
            spec = dict(
                vocab=vocab,
                seq=args.seq,
                hidden=args.hidden,
                batch_size=args.batch,
                implementation=implementation,
                chunk=args.chunk,
                threads=args.threads,
                bf16=args.bf16,
            )
            out = subprocess.run(
                [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, check=True
            )
            result[implementation] = json.loads(out.stdout.strip().splitlines()[-1])
        # timing in this process, alternating the two implementations so that load changes hit both
        setup = _setup(vocab, args.seq, args.hidden, args.batch)
        for implementation in ("naive", "chunked"):
            _step(setup, implementation, args.chunk, args.bf16)  # warm-up
        for _ in range(args.steps):
            for implementation in ("naive", "chunked"):
                elapsed = _step(setup, implementation, args.chunk, args.bf16)
                result[implementation]["step_s"] = min(result[implementation].get("step_s", float("inf")), elapsed)
        del setup
        for implementation in ("naive", "chunked"):
            r = result[implementation]
            print(
                f"  vocab {vocab:>7} {implementation:>8}: peak +{r['peak_mb']:8.1f} MB  "
                f"step {r['step_s'] * 1000:8.1f} ms"
                f"  ({r['action_tokens']} action tokens)"
            )
        memory_ratio = result["chunked"]["peak_mb"] / max(result["naive"]["peak_mb"], 1e-9)
        time_ratio = result["chunked"]["step_s"] / result["naive"]["step_s"]
        rows.append((vocab, memory_ratio, time_ratio))
    print("ratios chunked / naive (target: memory <= 0.5, time <= 1.0)")
    for vocab, memory_ratio, time_ratio in rows:
        print(f"  vocab {vocab:>7}: memory {memory_ratio:.3f}  time {time_ratio:.3f}")
    if args.plot:
        _save_plot(
            args.plot,
            "ILQL loss: chunked / naive (lower is better)",
            [f"vocab {v // 1000}k" for v, _, _ in rows],
            {"peak memory": [m for _, m, _ in rows], "step time": [t for _, _, t in rows]},
            "ratio",
        )


if __name__ == "__main__":
    main()
