"""TreeDPOTrainer step time vs TRL's plain DPOTrainer on the same pairs (target: <= 5% overhead).

Pairs are mined from a synthetic forest (see ``tree_build.py``); both trainers get the same
policy weights, the same reference model (same tokenizer, so TRL's reference forward runs every
step in both) and the same batches. Steps are timed alternately (A, B, A, B, ...) after warm-up
so that load from other processes hits both sides alike; the medians and their ratio are
printed, with the one-time preparation (tokenizing, assistant masks) apart. ``--continuation
path`` gives multi-step continuations, where TreeDPO masks the observations (same tokens, a
different loss mask).

    .venv/bin/python benchmarks/tree_dpo_overhead.py
    .venv/bin/python benchmarks/tree_dpo_overhead.py --continuation path --steps 30
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # for benchmarks.tree_build

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402


def build_models(directory, hidden, layers):
    from transformers import AutoModelForCausalLM, LlamaConfig

    from trainers.testing import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(os.path.join(directory, "tokenizer"))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    policy_dir, ref_dir = os.path.join(directory, "policy"), os.path.join(directory, "ref")
    AutoModelForCausalLM.from_config(config).save_pretrained(policy_dir)
    torch.manual_seed(1)
    AutoModelForCausalLM.from_config(config).save_pretrained(ref_dir)
    return tokenizer, policy_dir, ref_dir


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per trainer")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--continuation", choices=["step", "path"], default="step")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from benchmarks.tree_build import HashEmbedder, synthetic_trajectories
    from trainers import tree_dpo_trainer
    from trainers.tree import build_forest, mine_pairs
    from trainers.tree_dpo_config import TreeDPOConfig

    work = tempfile.mkdtemp(prefix="tree-dpo-bench-")
    tokenizer, policy_dir, ref_dir = build_models(work, args.hidden, args.layers)
    rows = synthetic_trajectories(600, 6, 20, 3, seed=1)
    forest = build_forest(rows, embedder=HashEmbedder(), show_progress=False)
    mined = mine_pairs(forest, continuation=args.continuation, log=False)
    pairs = mined.to_dataset().shuffle(seed=0).select(range(min(args.pairs, len(mined))))
    common = dict(
        output_dir=os.path.join(work, "out"),
        per_device_train_batch_size=args.batch_size,
        max_length=512,
        report_to="none",
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        disable_tqdm=True,
        learning_rate=1e-5,
        beta=0.1,
    )

    start = time.perf_counter()
    tree = tree_dpo_trainer.TreeDPOTrainer(
        AutoModelForCausalLM.from_pretrained(policy_dir),
        ref_model=AutoModelForCausalLM.from_pretrained(ref_dir),
        args=TreeDPOConfig(**common),
        train_dataset=pairs,
        processing_class=tokenizer,
    )
    tree_prep = time.perf_counter() - start
    start = time.perf_counter()
    plain = DPOTrainer(
        AutoModelForCausalLM.from_pretrained(policy_dir),
        ref_model=AutoModelForCausalLM.from_pretrained(ref_dir),
        args=DPOConfig(**common),
        train_dataset=pairs,
        processing_class=tokenizer,
    )
    plain_prep = time.perf_counter() - start

    def batches(trainer):
        while True:
            yield from trainer.get_train_dataloader()

    for trainer in (tree, plain):
        trainer.current_gradient_accumulation_steps = 1  # set by train(); stepping by hand here
    streams = {"TreeDPOTrainer": (tree, batches(tree)), "DPOTrainer": (plain, batches(plain))}
    times = {name: [] for name in streams}
    tokens = {name: 0 for name in streams}
    for step in range(args.warmup + args.steps):
        for name, (trainer, stream) in streams.items():
            batch = next(stream)
            trainer.model.train()
            start = time.perf_counter()
            trainer.training_step(trainer.model, batch)
            elapsed = time.perf_counter() - start
            if step >= args.warmup:
                times[name].append(elapsed)
                tokens[name] += int(batch["attention_mask"].sum())

    tree_median = statistics.median(times["TreeDPOTrainer"])
    plain_median = statistics.median(times["DPOTrainer"])
    print(
        f"\nTreeDPO vs DPO: {len(pairs)} pairs ({args.continuation} continuations), batch {args.batch_size}, "
        f"Llama hidden {args.hidden} x {args.layers} layers, {args.steps} timed steps each, {args.threads} threads\n"
    )
    print("| trainer | median step (ms) | mean step (ms) | tokens/s | one-time preparation (s) |")
    print("|---|---|---|---|---|")
    for name, prep in (("DPOTrainer", plain_prep), ("TreeDPOTrainer", tree_prep)):
        series = times[name]
        print(
            f"| {name} | {1000 * statistics.median(series):.1f} | {1000 * statistics.mean(series):.1f} | "
            f"{tokens[name] / sum(series):,.0f} | {prep:.2f} |"
        )
    ratio = tree_median / plain_median
    print(
        f"\nstep-time ratio TreeDPO / DPO (medians): {ratio:.3f} -> overhead {100 * (ratio - 1):+.1f}% (target <= +5%)"
    )
    masked = sum(sum(e["chosen_loss_mask"]) for e in tree.train_dataset)
    total = sum(len(e["chosen_ids"]) for e in tree.train_dataset)
    print(f"chosen completion tokens trained on by TreeDPO: {masked:,} of {total:,} ({masked / max(total, 1):.1%})\n")


if __name__ == "__main__":
    main()
