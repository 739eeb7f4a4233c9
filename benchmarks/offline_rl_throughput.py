"""Training throughput (tokens/s) of OfflineRLTrainer (MC and ILQL) vs plain SFT on the same model and data.

SFT is ``transformers.Trainer`` with the model's own causal-LM cross-entropy on the assistant tokens
(the same collated batches, ``labels`` = actions). Offline RL adds the value heads (a second and,
for ILQL, third/fourth vocabulary-sized projection), the chunked CQL term and the behaviour-cloning
term, so some slowdown is expected; this script measures it side by side in one process, alternating
the runs and keeping each method's best of ``--repeats`` (the machine is shared; contention only
ever adds time).

    .venv/bin/python benchmarks/offline_rl_throughput.py [--vocab 32000] [--hidden 256] [--layers 4]

The model is a freshly initialised Llama of the given size (no download), the tokenizer the tiny
local one from ``trainers.testing``; ``--vocab`` pads the vocabulary to a realistic size.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def _data(tokenizer, n: int):
    from trainers.data.schema import make_trajectory, to_dataset

    words = "is it an animal a plant a vehicle food tool yes no maybe bigger than a bread box".split()
    rows = []
    for i in range(n):
        messages = [{"role": "system", "content": "guess the object in twenty questions"}]
        for k in range(4):
            question = " ".join(words[(i + k + j) % len(words)] for j in range(12))
            messages.append({"role": "user", "content": question})
            messages.append(
                {
                    "role": "assistant",
                    "content": "Thought: " + " ".join(words[(3 * i + k + j) % len(words)] for j in range(16)),
                }
            )
        rows.append(make_trajectory(messages, [0.0, 0.0, 0.0, float(i % 2)], id=f"bench-{i}"))
    return to_dataset(rows)


def _save_plot(path: str, title: str, labels: list[str], series: dict[str, list[float]], ylabel: str) -> None:
    from trainers.plotting import grouped_bar_chart

    print(f"plot written to {grouped_bar_chart(path, title, labels, series, ylabel)}")


class _Timer:
    def __init__(self, warmup: int):
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                if state.global_step == warmup:
                    timer.start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                timer.end = time.perf_counter()

        self.callback = Callback()
        self.start = self.end = None


def _sft_collator(collator):
    def collate(features):
        batch = collator(features)
        return {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}

    return collate


def _run(method: str, model_dir: str, tokenizer, tokenized, args) -> float:
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from trainers.data.tokenization import TrajectoryCollator
    from trainers.offline_rl_config import OfflineRLConfig
    from trainers.offline_rl_trainer import OfflineRLTrainer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    timer = _Timer(args.warmup)
    common = dict(
        output_dir=tempfile.mkdtemp(prefix=f"bench-{method}-"),
        max_steps=args.warmup + args.steps,
        per_device_train_batch_size=args.batch,
        report_to="none",
        save_strategy="no",
        logging_steps=1000,
        use_cpu=True,
        disable_tqdm=True,
        remove_unused_columns=False,
        seed=0,
    )
    if args.bf16 is not None:
        common["bf16"] = args.bf16
    collator = TrajectoryCollator(tokenizer.pad_token_id)
    if method == "sft":
        if "bf16" not in common:
            common["bf16"] = OfflineRLConfig(output_dir=common["output_dir"]).bf16  # same autocast policy as RL
        trainer = Trainer(
            model=model,
            args=TrainingArguments(**common),
            train_dataset=tokenized,
            data_collator=_sft_collator(collator),
            callbacks=[timer.callback],
        )
    else:
        config = OfflineRLConfig(loss_type=method, max_length=None, **common)
        trainer = OfflineRLTrainer(
            model,
            config,
            train_dataset=tokenized,
            processing_class=tokenizer,
            data_collator=collator,
            callbacks=[timer.callback],
        )
    trainer.train()
    tokens = args.steps * args.batch * args.tokens_per_row
    return tokens / (timer.end - timer.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--plot", type=str, default=None, help="write a PNG of tokens/s per method here")
    parser.add_argument(
        "--bf16",
        type=lambda s: s.lower() in ("1", "true", "yes"),
        default=None,
        help="force bf16 autocast on/off (default: OfflineRLConfig's choice for both)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM, LlamaConfig

    from trainers.data.tokenization import tokenize_dataset
    from trainers.testing import build_tiny_tokenizer

    work = Path(tempfile.mkdtemp(prefix="offline-rl-throughput-"))
    tokenizer = build_tiny_tokenizer(work / "tokenizer")
    vocab = max(args.vocab, len(tokenizer))
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=max(1, args.hidden // 64),
        num_key_value_heads=max(1, args.hidden // 128),
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(work / "model")
    tokenized = tokenize_dataset(_data(tokenizer, args.batch * (args.warmup + args.steps)), tokenizer)
    lengths = [len(ids) for ids in tokenized["input_ids"]]
    args.tokens_per_row = max(lengths)  # the collator pads to the longest row; all rows have similar length
    print(
        f"Llama {args.layers}x{args.hidden}, vocab {vocab}, batch {args.batch} x ~{args.tokens_per_row} tokens, "
        f"{args.threads} thread(s); best of {args.repeats}"
    )
    best: dict[str, float] = {}
    for _ in range(args.repeats):
        for method in ("sft", "mc", "ilql"):
            best[method] = max(best.get(method, 0.0), _run(method, str(work / "model"), tokenizer, tokenized, args))
    for method, rate in best.items():
        print(f"  {method:>5}: {rate:9.1f} tokens/s")
    print("ratios offline RL / SFT (tokens/s)")
    for method in ("mc", "ilql"):
        print(f"  {method:>5}: {best[method] / best['sft']:.3f}")
    if args.plot:
        _save_plot(
            args.plot, f"Training throughput, vocab {vocab}", list(best), {"tokens/s": list(best.values())}, "tokens/s"
        )


if __name__ == "__main__":
    main()
