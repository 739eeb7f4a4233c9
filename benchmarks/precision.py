"""fp32 vs bf16 on the machine this runs on, side by side, against what trainers.hardware picks.

Four measurements, each in both precisions in one run:

* matmul: ``[2048, 576] @ [576, 1536]`` (a SmolLM2-135M MLP projection over 2048 tokens), GFLOP/s;
* training: one SmolLM2-135M step (forward, backward, AdamW) on ``--batch x --seq`` tokens with fp32
  weights, plain fp32 against bf16 autocast (what ``TrainingArguments(bf16=True)`` runs), tokens/s;
* generation: greedy decoding of ``--new-tokens`` tokens for a batch of prompts, fp32 weights
  against a bf16 copy of them (what ``trainers.hardware.generation_model`` makes), new tokens/s;
* embedding: a no-grad forward over ``4 x 512`` tokens (how the BOOST trainer embeds trajectories),
  plain fp32 against bf16 autocast, tokens/s.

For each use it prints what ``trainers.hardware.pick_dtype`` picks and the ratio picked / best
(target >= 0.95). ``--save`` writes the output as markdown to ``docs/results/precision_<kind>.md``.
``ONEDNN_MAX_CPU_ISA=AVX2`` runs it on an AVX512-BF16/AMX CPU as an AVX2-only CPU would (oneDNN's
native bf16 kernels off; the precision policy sees the cap too).

    .venv/bin/python benchmarks/precision.py                  # SmolLM2-135M (embedded), ~2-4 minutes on 2 cores
    .venv/bin/python benchmarks/precision.py --model tiny     # random tiny Llama: checks the script in seconds
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import platform
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# idle OpenMP threads sleep instead of spinning, so a busy machine slows both sides alike
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from trainers import hardware  # noqa: E402
from trainers.recipes.time_budget import fastest_call, time_decode  # noqa: E402

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def autocast(precision: str):
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def matmul_gflops(precision: str, repeats: int) -> float:
    dtype = PRECISIONS[precision]
    a, b = torch.randn(2048, 576, dtype=dtype), torch.randn(576, 1536, dtype=dtype)
    seconds = fastest_call(lambda: a @ b, repeats * 5)
    return 2 * 2048 * 576 * 1536 / seconds / 1e9


def training_tokens_per_s(model, precision: str, batch: int, seq: int, repeats: int) -> float:
    model = copy.deepcopy(model).float().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(100, model.config.vocab_size - 1, (batch, seq))

    def step():
        with autocast(precision):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return batch * seq / fastest_call(step, repeats)


def generation_tokens_per_s(model, precision: str, batch: int, prompt: int, new_tokens: int, repeats: int) -> float:
    return batch * new_tokens / time_decode(model, PRECISIONS[precision], batch, prompt, new_tokens, repeats)


def embedding_tokens_per_s(model, precision: str, repeats: int) -> float:
    model = model.float().eval()
    ids = torch.randint(100, model.config.vocab_size - 1, (4, 512))

    @torch.no_grad()
    def forward():
        with autocast(precision):
            model.model(input_ids=ids, attention_mask=torch.ones_like(ids))

    return ids.numel() / fastest_call(forward, repeats)


def cpu_kind(flags: frozenset[str]) -> str:
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    if cap:  # oneDNN limited to an older ISA: what this CPU does as, e.g., an AVX2-only machine
        return f"cpu-onednn-{cap.lower()}"
    if "amx_bf16" in flags:
        return "cpu-amx-bf16"
    if "avx512_bf16" in flags:
        return "cpu-avx512-bf16"
    if "avx512f" in flags:
        return "cpu-avx512-no-bf16"
    if "avx2" in flags:
        return "cpu-avx2"
    return "cpu-" + (platform.machine().lower() or "unknown")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_model(name: str):
    if name == "tiny":
        from trainers.testing import build_tiny_model, build_tiny_tokenizer

        with tempfile.TemporaryDirectory() as tmp:
            tokenizer = build_tiny_tokenizer(os.path.join(tmp, "tok"))
            return build_tiny_model(os.path.join(tmp, "model"), tokenizer, "llama"), "tiny Llama (random weights)"
    from trainers.models import load_causal_lm

    return load_causal_lm(name, dtype=torch.float32), name


def run(args) -> int:
    hardware.configure_threads(args.threads)
    flags = hardware.cpu_flags()
    model, model_name = load_model(args.model)
    print("# fp32 vs bf16 on this machine\n")
    print(f"- CPU: {cpu_name()} ({hardware.available_cores()} cores used, {torch.get_num_threads()} torch threads)")
    print(
        f"- bf16 flags: {', '.join(sorted(flags & hardware.FAST_BF16_CPU_FLAGS)) or 'none'}; "
        f"AVX flags: {', '.join(sorted(f for f in flags if f.startswith('avx'))) or 'none'}"
    )
    print(
        f"- torch {torch.__version__}, model {model_name}, "
        f"TRAINERS_PRECISION={os.environ.get('TRAINERS_PRECISION', '(unset)')}, "
        f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '(unset)')}, "
        f"native bf16 as detected: {hardware.cpu_has_fast_bf16()}"
    )
    print(f"- command: `{' '.join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])}`\n")

    measurements = {
        "matmul": ("GFLOP/s", "training", lambda p: matmul_gflops(p, args.repeats)),
        "training step": (
            "tokens/s",
            "training",
            lambda p: training_tokens_per_s(model, p, args.batch, args.seq, args.repeats),
        ),
        "generation": (
            "new tokens/s",
            "generation",
            lambda p: generation_tokens_per_s(model, p, 4, 128, args.new_tokens, args.repeats),
        ),
        "embedding forward": ("tokens/s", "embedding", lambda p: embedding_tokens_per_s(model, p, args.repeats)),
    }
    print("| measurement | unit | fp32 | bf16 | bf16 / fp32 | use | picked | picked / best |")
    print("|---|---|---|---|---|---|---|---|")
    worst = float("inf")
    for label, (unit, use, measure) in measurements.items():
        speed = {precision: measure(precision) for precision in PRECISIONS}
        picked = "bf16" if hardware.pick_dtype(use, device="cpu") == torch.bfloat16 else "fp32"
        ratio = speed[picked] / max(speed.values())
        worst = min(worst, ratio)
        print(
            f"| {label} | {unit} | {speed['fp32']:.1f} | {speed['bf16']:.1f} | {speed['bf16'] / speed['fp32']:.2f} "
            f"| {use} | {picked} | {ratio:.2f} |"
        )
    verdict = "OK" if worst >= 0.95 else "BELOW TARGET"
    print(f"\nworst picked / best: {worst:.2f} (target >= 0.95): {verdict}")
    return 0 if worst >= 0.95 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-embedded", help="'tiny' or a name/path for load_causal_lm")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats per measurement (best is kept)")
    parser.add_argument("--threads", type=int, default=None, help="default: trainers.hardware.configure_threads")
    parser.add_argument("--save", action="store_true", help="also write docs/results/precision_<cpu kind>.md")
    args = parser.parse_args()
    if not args.save:
        return run(args)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = run(args)
    text = buffer.getvalue()
    print(text, end="")
    out = Path(__file__).resolve().parents[1] / "docs" / "results" / f"precision_{cpu_kind(hardware.cpu_flags())}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_suffix(".md.tmp")
    staging.write_text(text)
    os.replace(staging, out)
    print(f"\nwritten to {out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
