"""Overhead of one BOOST outer iteration, measured side by side in separate processes.

    python benchmarks/boost_overhead.py                       # small local Llama, ~1-2 minutes
    python benchmarks/boost_overhead.py --model smollm2-135m-embedded --batch_size 2 --seq_tokens 256

Three workers run the same batches on the same model, each in its own process (so that peak RSS
is per method):

* ``boost``: :class:`BilevelReweightTrainer` (``aux_mode="shared_backbone"``, heads only for ψ), one
  outer iteration = ``k_psi + k_theta + k_phi`` optimizer steps, timed after a warm-up iteration;
* ``raw``: the forward/backward work those phases contain, written directly in torch with no
  trainer around it (ψ: backbone without grad + ψ-head loss backward + step; θ: train and
  validation forward/backward, one after the other, + step; φ: backbone without grad + both heads' losses): the floor;
* ``vanilla``: :class:`OfflineRLTrainer` doing the same number of optimizer steps (one
  forward/backward each), for memory and for scale.

The ``boost`` worker runs ``--phi_signal`` (default ``paper``: the φ work the ``raw`` floor does;
``val_alignment``, the library default, adds per-trajectory gradients of the output layers).
Printed ratios: ``boost / raw`` time (target <= 1.15: the bilevel bookkeeping, weights, sync and
φ update cost at most 15% over the work of the phases) and ``boost / vanilla`` peak memory (target
<= 1.10 in heads-only mode; the extra is ψ's value heads and their optimizer state, so it grows
with the vocabulary-to-model-size ratio).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rows(n: int, words: int, source: str = "real", offset: int = 0):
    from trainers.data.schema import make_trajectory

    vocab = (
        "is it an animal a plant a vehicle food tool yes no maybe search click buy now price item size color".split()
    )
    rows = []
    for i in range(n):
        turns = []
        for t in range(3):
            obs = " ".join(vocab[(i * 7 + t * 3 + k + offset) % len(vocab)] for k in range(words))
            act = " ".join(vocab[(i * 5 + t + k + offset) % len(vocab)] for k in range(max(2, words // 4)))
            turns += [{"role": "user", "content": obs}, {"role": "assistant", "content": act}]
        # a synthetic row is seeded from the real train row with the same index (appendix F)
        metadata = {"parent_id": f"real-{i}"} if source == "synthetic" else None
        rows.append(
            make_trajectory(
                turns,
                [0.0, 0.0, float((i + offset) % 2)],
                id=f"{source}-{i}",
                source=source,
                category=f"c{i % 4}",
                metadata=metadata,
            )
        )
    return rows


def _model(args, workdir: Path):
    import torch

    if args.model == "local":
        from transformers import AutoModelForCausalLM, LlamaConfig

        from trainers.testing import build_tiny_tokenizer

        tokenizer = build_tiny_tokenizer(workdir / "tokenizer")
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=args.hidden,
            intermediate_size=4 * args.hidden,
            num_hidden_layers=args.layers,
            num_attention_heads=8,
            num_key_value_heads=4,
            max_position_embeddings=4096,
            tie_word_embeddings=False,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(config), tokenizer
    from trainers.models import load_causal_lm, load_tokenizer

    return load_causal_lm(args.model, dtype=torch.float32), load_tokenizer(args.model)


def worker(args) -> dict:
    import torch
    from transformers import TrainerCallback

    from trainers import BilevelReweightConfig, BilevelReweightTrainer
    from trainers.data.schema import to_dataset

    torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="boost-overhead-"))
    model, tokenizer = _model(args, workdir)
    real, val, synthetic = (
        to_dataset(_rows(32, args.seq_tokens // 6)),
        to_dataset(_rows(16, args.seq_tokens // 6, offset=5)),
        to_dataset(_rows(32, args.seq_tokens // 6, "synthetic", 11)),
    )
    outer = args.k_psi + args.k_theta + args.k_phi

    class Clock(TrainerCallback):
        def __init__(self):
            self.marks = {}

        def on_step_begin(self, a, state, control, **kw):
            self.marks.setdefault(state.global_step, time.perf_counter())

        def on_train_end(self, a, state, control, **kw):
            self.marks[state.global_step] = time.perf_counter()

    iterations = args.iterations + 1  # the first one is warm-up
    common = dict(
        output_dir=str(workdir / "out"),
        per_device_train_batch_size=args.batch_size,
        max_steps=iterations * outer,
        logging_steps=1000,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        bf16=args.bf16,
        seed=0,
        cql_weight=10.0,
        max_length=args.seq_tokens * 2,
        k_psi=args.k_psi,
        k_theta=args.k_theta,
        k_phi=args.k_phi,
        embedding_cache_dir=str(workdir / "cache"),
        lr_scheduler_type="constant",
        phi_signal=args.phi_signal,
    )
    clock = Clock()
    if args.worker in ("boost", "vanilla"):
        method = "boost" if args.worker == "boost" else "vanilla"
        trainer = BilevelReweightTrainer(
            model,
            BilevelReweightConfig(method=method, **common),
            train_dataset=real,
            val_dataset=val if method == "boost" else None,
            synthetic_dataset=synthetic if method == "boost" else None,
            processing_class=tokenizer,
            callbacks=[clock],
        )
        trainer.train()
        # fastest timed outer iteration: the machine is shared, the minimum is the least disturbed
        seconds = min(clock.marks[(i + 1) * outer] - clock.marks[i * outer] for i in range(1, iterations))
    else:
        seconds = _raw(args, model, tokenizer, real, val, synthetic, common)
    return {
        "worker": args.worker,
        "seconds_per_outer_iteration": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _raw(args, model, tokenizer, real, val, synthetic, common) -> float:
    """The phases' forward/backward work in plain torch, on the trainer's own batches."""
    import copy

    import torch

    from trainers import BilevelReweightConfig, BilevelReweightTrainer
    from trainers.losses.offline_rl import per_trajectory_losses

    trainer = BilevelReweightTrainer(
        model,
        BilevelReweightConfig(method="boost", **common),
        train_dataset=real,
        val_dataset=val,
        synthetic_dataset=synthetic,
        processing_class=tokenizer,
    )
    policy = trainer.policy
    psi_heads = copy.deepcopy(policy.heads)
    optimizer = torch.optim.AdamW(
        [p for p in policy.parameters() if p.requires_grad] + list(psi_heads.parameters()), lr=1e-4
    )
    loader = trainer.get_train_dataloader()
    batches = [trainer._prepare_inputs(b) for b, _ in zip(loader, range(args.k_psi + args.k_theta + args.k_phi))]
    while len(batches) < args.k_psi + args.k_theta + args.k_phi:
        batches += batches
    vals = [trainer._val_batch(i, 0) for i in range(args.k_theta)]
    config, no_bc = trainer.loss_config, trainer.loss_config_no_bc
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(args.bf16))

    def one_outer():
        step = 0
        for _ in range(args.k_psi):
            b = batches[step]
            step += 1
            with autocast:
                with torch.no_grad():
                    hidden = policy.hidden_states(b["input_ids"], b["attention_mask"])
                losses, _ = per_trajectory_losses(hidden, psi_heads, b, no_bc)
            losses.mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        for j in range(args.k_theta):
            b = batches[step]
            step += 1
            # L_val's backward, then L_train's: one graph alive at a time, as the trainer does
            for source in (vals[j], b):
                with autocast:
                    out = policy(
                        **{
                            k: source[k]
                            for k in (
                                "input_ids",
                                "attention_mask",
                                "action_mask",
                                "token_rewards",
                                "token_dones",
                                "turn_ids",
                            )
                        },
                        loss_config=config,
                    )
                out["losses"].mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        for _ in range(args.k_phi):
            b = batches[step]
            step += 1
            with autocast, torch.no_grad():
                hidden = policy.hidden_states(b["input_ids"], b["attention_mask"])
                per_trajectory_losses(hidden, policy.heads, b, no_bc)
                per_trajectory_losses(hidden, psi_heads, b, no_bc)

    policy.train()
    one_outer()  # warm-up
    times = []
    for _ in range(args.iterations):
        started = time.perf_counter()
        one_outer()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", default="local", help="'local' (small Llama built from a config) or a model id/folder"
    )
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--seq_tokens", type=int, default=192, help="approximate tokens per trajectory")
    parser.add_argument("--k_psi", type=int, default=4)
    parser.add_argument("--k_theta", type=int, default=4)
    parser.add_argument("--k_phi", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--iterations", type=int, default=3, help="timed outer iterations per run (the minimum is kept)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="runs of each worker, interleaved (the minimum is kept)")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument(
        "--phi_signal",
        default="paper",
        choices=["paper", "val_alignment"],
        help="BOOST's phi step; the raw floor does the paper's phi work (a forward without gradient), so the "
        "ratio against it is meaningful for 'paper'; 'val_alignment' adds one small backward per trajectory",
    )
    parser.add_argument("--worker", choices=["boost", "raw", "vanilla"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args)))
        return
    results: dict = {}
    for repeat in range(args.repeats):
        for name in ("raw", "boost", "vanilla"):
            command = [sys.executable, __file__, "--worker", name] + [a for a in sys.argv[1:]]
            output = subprocess.run(
                command, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"}
            )
            line = next((ln for ln in output.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                sys.stderr.write(output.stdout[-3000:] + output.stderr[-3000:])
                raise SystemExit(f"worker {name} failed")
            result = json.loads(line[len("RESULT ") :])
            print(
                f"run {repeat}: {name:8s} {result['seconds_per_outer_iteration']:8.3f} s / outer iteration   "
                f"peak RSS {result['peak_rss_mb']:8.1f} MB"
            )
            best = results.setdefault(name, result)
            best["seconds_per_outer_iteration"] = min(
                best["seconds_per_outer_iteration"], result["seconds_per_outer_iteration"]
            )
            best["peak_rss_mb"] = min(best["peak_rss_mb"], result["peak_rss_mb"])
    time_ratio = results["boost"]["seconds_per_outer_iteration"] / results["raw"]["seconds_per_outer_iteration"]
    memory_ratio = results["boost"]["peak_rss_mb"] / results["vanilla"]["peak_rss_mb"]
    print(
        f"time   boost / raw phase work : {time_ratio:.3f}  (target <= 1.15) {'OK' if time_ratio <= 1.15 else 'OVER'}"
    )
    print(
        f"memory boost / vanilla (peak) : {memory_ratio:.3f}  (target <= 1.10) "
        f"{'OK' if memory_ratio <= 1.10 else 'OVER'}"
    )
    print(
        "time   boost / vanilla steps  : "
        f"{results['boost']['seconds_per_outer_iteration'] / results['vanilla']['seconds_per_outer_iteration']:.3f}"
        "  (for scale: a θ step does two forward/backward passes, a ψ step none through the backbone)"
    )


if __name__ == "__main__":
    main()
