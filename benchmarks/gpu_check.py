"""GPU check: every trainer, QLoRA, ZeRO-2, value guidance and the chunked CQL on one CUDA GPU.

``make gpu-check`` runs this. Without CUDA it says so and exits 0 (nothing to check). On a CUDA GPU it
runs, on a SmolLM2-135M-shaped Llama built from a config (random weights: no download needed), each
check in isolation (a failing check is reported and the others still run), within ``--budget`` seconds
(default 8 minutes), and writes one markdown report:

* one bf16 training step of each trainer: OfflineRLTrainer (MC and ILQL), BilevelReweightTrainer
  (BOOST), TreeDPOTrainer, MCTSDistillTrainer;
* QLoRA: a 4-bit NF4 base through bitsandbytes with LoRA adapters, one OfflineRLTrainer step;
* DeepSpeed ZeRO-2 on one GPU (a separate process: DeepSpeed sets up torch.distributed);
* value-guided generation (``beta = 0`` reproduces greedy decoding, ``beta > 0`` changes it);
* the chunked CQL log-sum-exp against the naive one: values, gradients, peak CUDA memory ratio;
* tokens/s of an offline RL (MC) step against a plain SFT step on the same model and batch.

``--device cpu --tiny`` runs the same checks on a tiny model on the CPU (checks that need CUDA are
reported as skipped with the reason), which is how the test suite exercises this script.

    python benchmarks/gpu_check.py                      # on a CUDA machine
    python benchmarks/gpu_check.py --device cpu --tiny --out /tmp/gpu_check.md

Plan for a GPU image that has torch, transformers, accelerate and peft (possibly other versions)
and no package registry: bring wheels of trl, datasets, bitsandbytes and deepspeed if the image
lacks them; a check whose package is missing is reported as skipped, not failed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

#: SmolLM2-135M's architecture (config.json of HuggingFaceTB/SmolLM2-135M), built with random weights.
SMOLLM2_SHAPE = dict(
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    vocab_size=49152,
    max_position_embeddings=8192,
    rope_theta=100000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
)
TINY_SHAPE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=512,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
)


class Skip(Exception):
    """A check that cannot run here (no CUDA, a package missing): reported as skipped with the reason."""


@dataclass
class Result:
    name: str
    status: str  # "ok", "FAILED", "skipped"
    seconds: float
    details: dict = field(default_factory=dict)


@dataclass
class Context:
    device: str
    tiny: bool
    workdir: Path
    tokenizer: object
    shape: dict
    seq: int
    batch: int

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    def model(self, dtype=torch.float32):
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        config = LlamaConfig(
            **self.shape,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            bos_token_id=self.tokenizer.bos_token_id,
        )
        return LlamaForCausalLM(config).to(dtype)

    def saved_model(self) -> str:
        path = self.workdir / "model"
        if not (path / "config.json").is_file():
            self.model().save_pretrained(path)
            self.tokenizer.save_pretrained(path)
        return str(path)

    def training_args(self, name: str, **overrides) -> dict:
        values = dict(
            output_dir=str(self.workdir / name),
            max_steps=1,
            per_device_train_batch_size=self.batch,
            logging_steps=1,
            report_to=[],
            save_strategy="no",
            seed=0,
            bf16=self.cuda,
            use_cpu=not self.cuda,
            disable_tqdm=True,
        )
        values.update(overrides)
        return values


def require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise Skip(f"{module} is not installed ({error})") from error


def require_cuda(what: str) -> None:
    if not torch.cuda.is_available():
        raise Skip(f"{what} needs CUDA")


# ---------------------------------------------------------------------------------------- data
def trajectory_rows(n: int, turns: int = 3, words: int = 40, prefix: str = "row"):
    from trainers.data.schema import make_trajectory, to_dataset

    rows = []
    for i in range(n):
        messages = [{"role": "system", "content": "You are shopping. Answer with Action: ..."}]
        for k in range(turns):
            messages.append({"role": "user", "content": " ".join(f"item{(i + k + j) % 50}" for j in range(words))})
            messages.append({"role": "assistant", "content": f"Action: click item{(i * 3 + k) % 50}"})
        rows.append(
            make_trajectory(
                messages, [0.0] * (turns - 1) + [float(i % 2)], id=f"{prefix}-{i}", source="real", done=True
            )
        )
    return to_dataset(rows)


def synthetic_rows(n: int):
    from trainers.data.schema import make_trajectory, to_dataset

    rows = []
    for i in range(n):
        messages = [
            {"role": "user", "content": f"find item{i}"},
            {"role": "assistant", "content": f"Action: search item{i}"},
        ]
        rows.append(
            make_trajectory(
                messages,
                [float(i % 2)],
                id=f"syn-{i}",
                source="synthetic",
                done=True,
                metadata={"parent_id": f"row-{i % 4}"},
            )
        )
    return to_dataset(rows)


def preference_pairs(n: int):
    import datasets

    return datasets.Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": f"task {i}: heat water"}],
                "chosen": [{"role": "assistant", "content": "Action: go to kitchen"}],
                "rejected": [{"role": "assistant", "content": f"Action: open door {i}"}],
            }
            for i in range(n)
        ]
    )


def finite_loss(trainer) -> float:
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    if not logs:
        raise AssertionError("the trainer logged no loss")
    loss = float(logs[-1]["loss"])
    if loss != loss or loss in (float("inf"), float("-inf")):
        raise AssertionError(f"loss is {loss}")
    return loss


# -------------------------------------------------------------------------------------- checks
def check_offline_rl(ctx: Context, loss_type: str) -> dict:
    from trainers.offline_rl_config import OfflineRLConfig
    from trainers.offline_rl_trainer import OfflineRLTrainer

    args = OfflineRLConfig(**ctx.training_args(f"offline_{loss_type}", loss_type=loss_type, max_length=ctx.seq))
    trainer = OfflineRLTrainer(
        ctx.model(), args, train_dataset=trajectory_rows(ctx.batch), processing_class=ctx.tokenizer
    )
    trainer.train()
    return {"loss": round(finite_loss(trainer), 4), "bf16": args.bf16}


def check_boost(ctx: Context) -> dict:
    from trainers.bilevel_config import BilevelReweightConfig
    from trainers.bilevel_trainer import BilevelReweightTrainer

    args = BilevelReweightConfig(
        **ctx.training_args(
            "boost",
            method="boost",
            k_psi=1,
            k_theta=1,
            k_phi=1,
            max_steps=3,
            max_length=ctx.seq,
            embedding_cache_dir=str(ctx.workdir / "embeddings"),
        )
    )
    trainer = BilevelReweightTrainer(
        ctx.model(),
        args,
        train_dataset=trajectory_rows(8),
        val_dataset=trajectory_rows(4, prefix="val"),
        synthetic_dataset=synthetic_rows(8),
        processing_class=ctx.tokenizer,
    )
    trainer.train()
    return {"loss": round(finite_loss(trainer), 4), "steps": trainer.state.global_step}


def check_tree_dpo(ctx: Context) -> dict:
    from trainers.tree_dpo_config import TreeDPOConfig
    from trainers.tree_dpo_trainer import TreeDPOTrainer

    args = TreeDPOConfig(**ctx.training_args("tree_dpo", max_length=ctx.seq))
    # the reference is given: a model built from a config has no name TRL could reload it from
    trainer = TreeDPOTrainer(
        ctx.model(),
        ref_model=ctx.model(),
        args=args,
        train_dataset=preference_pairs(ctx.batch),
        processing_class=ctx.tokenizer,
    )
    trainer.train()
    return {"loss": round(finite_loss(trainer), 4)}


def check_mcts_distill(ctx: Context) -> dict:
    from trainers.mcts_distill_config import MCTSDistillConfig
    from trainers.mcts_distill_trainer import MCTSDistillTrainer

    args = MCTSDistillConfig(**ctx.training_args("mcts_distill", max_length=ctx.seq))
    rows = trajectory_rows(ctx.batch).map(lambda row: {"source": "mcts"})
    trainer = MCTSDistillTrainer(ctx.model(), args=args, train_dataset=rows, processing_class=ctx.tokenizer)
    trainer.train()
    return {"loss": round(finite_loss(trainer), 4)}


def check_qlora(ctx: Context) -> dict:
    require_cuda("4-bit QLoRA through bitsandbytes")
    require("bitsandbytes")
    from peft import LoraConfig

    from trainers.offline_rl_config import OfflineRLConfig
    from trainers.offline_rl_trainer import OfflineRLTrainer

    args = OfflineRLConfig(**ctx.training_args("qlora", load_in_4bit=True, max_length=ctx.seq))
    trainer = OfflineRLTrainer(
        ctx.saved_model(),
        args,
        train_dataset=trajectory_rows(ctx.batch),
        processing_class=ctx.tokenizer,
        peft_config=LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
    )
    base = trainer.policy.base.get_base_model()
    layer = type(base.model.layers[0].self_attn.k_proj).__name__
    if layer != "Linear4bit":
        raise AssertionError(f"the base's k_proj is a {layer}, not a bitsandbytes Linear4bit")
    trainer.train()
    return {
        "loss": round(finite_loss(trainer), 4),
        "k_proj": layer,
        "peak_cuda_mib": round(torch.cuda.max_memory_allocated() / 2**20),
    }


def check_deepspeed_zero2(ctx: Context) -> dict:
    require_cuda("DeepSpeed ZeRO-2 on one GPU")
    require("deepspeed")
    command = [sys.executable, str(Path(__file__).resolve()), "--child-zero2", str(ctx.workdir)]
    if ctx.tiny:
        command.append("--tiny")
    env = {
        **os.environ,
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": os.environ.get("GPU_CHECK_PORT", "29517"),
    }
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    lines = [line for line in done.stdout.splitlines() if line.startswith("ZERO2_RESULT ")]
    if done.returncode != 0 or not lines:
        raise AssertionError(f"exit {done.returncode}: {(done.stderr or done.stdout)[-1500:]}")
    return json.loads(lines[-1].split(" ", 1)[1])


def zero2_child(workdir: Path, tiny: bool) -> None:
    """Runs in its own process (see :func:`check_deepspeed_zero2`)."""
    from trainers.offline_rl_config import OfflineRLConfig
    from trainers.offline_rl_trainer import OfflineRLTrainer

    ctx = make_context("cuda", tiny, workdir / "zero2")
    zero2 = {
        "zero_optimization": {"stage": 2},
        "bf16": {"enabled": "auto"},
        "gradient_clipping": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
    }
    args = OfflineRLConfig(**ctx.training_args("zero2", max_length=ctx.seq, deepspeed=zero2))
    trainer = OfflineRLTrainer(
        ctx.model(), args, train_dataset=trajectory_rows(ctx.batch), processing_class=ctx.tokenizer
    )
    trainer.train()
    plugin = trainer.accelerator.state.deepspeed_plugin
    stage = plugin.zero_stage if plugin is not None else None
    print("ZERO2_RESULT " + json.dumps({"loss": round(finite_loss(trainer), 4), "zero_stage": stage}))


def check_value_guidance(ctx: Context) -> dict:
    from transformers import LogitsProcessorList

    from trainers.modeling import ValueGuidedLogitsProcessor, ValueHeads

    dtype = torch.bfloat16 if ctx.cuda else torch.float32
    model = ctx.model(dtype).to(ctx.device).eval()
    heads = ValueHeads.for_model(model, loss_type="mc").to(ctx.device)
    with torch.no_grad():
        for parameter in heads.parameters():
            parameter.normal_(0.0, 0.5)
    ids = torch.randint(10, ctx.tokenizer.vocab_size - 1, (4, 64), device=ctx.device)

    def greedy(processors=None):
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=16,
                min_new_tokens=16,
                do_sample=False,
                logits_processor=processors,
                pad_token_id=ctx.tokenizer.pad_token_id,
            )
        return out[:, ids.shape[1] :]

    base = greedy()
    processor = ValueGuidedLogitsProcessor(heads, beta=0.0, model=model)
    try:
        same = torch.equal(greedy(LogitsProcessorList([processor])), base)
        processor.beta = 4.0
        start = time.perf_counter()
        guided = greedy(LogitsProcessorList([processor]))
        seconds = time.perf_counter() - start
    finally:
        processor.detach()
    if not same:
        raise AssertionError("beta = 0 did not reproduce greedy decoding")
    changed = float((guided != base).float().mean())
    if changed == 0.0:
        raise AssertionError("beta = 4 changed no token")
    return {
        "beta0_equals_greedy": same,
        "tokens_changed_at_beta4": round(changed, 3),
        "guided_new_tokens_per_s": round(guided.numel() / seconds, 1),
    }


def check_chunked_cql(ctx: Context) -> dict:
    from trainers.losses.chunked import chunked_linear_logsumexp, naive_linear_logsumexp

    rows, hidden, vocab = (4096, ctx.shape["hidden_size"], ctx.shape["vocab_size"]) if ctx.cuda else (256, 64, 512)
    torch.manual_seed(0)
    x = torch.randn(rows, hidden, device=ctx.device)
    weight = torch.randn(vocab, hidden, device=ctx.device) * 0.05
    targets = torch.randint(0, vocab, (rows,), device=ctx.device)
    results, peaks = {}, {}
    for name, function in (("naive", naive_linear_logsumexp), ("chunked", chunked_linear_logsumexp)):
        xi, wi = x.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        if ctx.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        lse, picked = function(xi, wi, None, targets)
        (lse - picked).sum().backward()
        if ctx.cuda:
            torch.cuda.synchronize()
            peaks[name] = torch.cuda.max_memory_allocated() - before
        results[name] = (lse.detach(), picked.detach(), xi.grad, wi.grad)
    naive, chunked = results["naive"], results["chunked"]
    labels = ("lse", "picked", "grad_x", "grad_w")
    diffs = {label: float((a - b).abs().max()) for label, a, b in zip(labels, naive, chunked)}
    scale = {label: float(a.abs().max()) for label, a in zip(labels, naive)}
    for label, diff in diffs.items():
        if diff > 1e-3 * max(1.0, scale[label]):
            raise AssertionError(f"chunked and naive {label} differ by {diff:.3g}")
    details = {"rows x vocab": f"{rows} x {vocab}", **{f"max_abs_diff_{k}": f"{v:.2e}" for k, v in diffs.items()}}
    if ctx.cuda:
        details["peak_mib_naive"] = round(peaks["naive"] / 2**20, 1)
        details["peak_mib_chunked"] = round(peaks["chunked"] / 2**20, 1)
        details["peak_ratio_chunked_over_naive"] = round(peaks["chunked"] / peaks["naive"], 3)
    else:
        details["peak_memory"] = "skipped: peak CUDA memory needs CUDA"
    return details


def check_throughput(ctx: Context) -> dict:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from trainers.data.tokenization import TrajectoryCollator, tokenize_dataset
    from trainers.offline_rl_config import OfflineRLConfig
    from trainers.offline_rl_trainer import OfflineRLTrainer

    steps = 4 if ctx.tiny else 8
    rows = trajectory_rows(ctx.batch * steps, turns=4, words=60)
    tokenized = tokenize_dataset(rows, ctx.tokenizer, max_length=ctx.seq)
    tokens_per_step = sum(len(ids) for ids in tokenized["input_ids"]) / steps

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())

    def tokens_per_s(build) -> float:
        timer = StepTimes()
        trainer = build(timer)
        trainer.train()
        return tokens_per_step * (len(timer.times) - 1) / (timer.times[-1] - timer.times[0])

    collator = TrajectoryCollator(pad_token_id=ctx.tokenizer.pad_token_id)

    def sft_collate(features):
        batch = collator(features)
        return {key: batch[key] for key in ("input_ids", "attention_mask", "labels")}

    common = ctx.training_args("throughput", max_steps=steps, remove_unused_columns=False)
    sft = tokens_per_s(
        lambda timer: Trainer(
            model=ctx.model(),
            args=TrainingArguments(**common),
            train_dataset=tokenized,
            data_collator=sft_collate,
            callbacks=[timer],
        )
    )
    offline = tokens_per_s(
        lambda timer: OfflineRLTrainer(
            ctx.model(),
            OfflineRLConfig(**common, max_length=ctx.seq),
            train_dataset=rows,
            processing_class=ctx.tokenizer,
            callbacks=[timer],
        )
    )
    return {
        "sft_tokens_per_s": round(sft),
        "offline_rl_mc_tokens_per_s": round(offline),
        "offline_over_sft": round(offline / sft, 2),
        "tokens_per_step": round(tokens_per_step),
    }


CHECKS = {
    "offline RL (MC) bf16 step": lambda ctx: check_offline_rl(ctx, "mc"),
    "offline RL (ILQL) bf16 step": lambda ctx: check_offline_rl(ctx, "ilql"),
    "BOOST (BilevelReweightTrainer) bf16 steps": check_boost,
    "Tree-DPO bf16 step": check_tree_dpo,
    "MCTS distillation bf16 step": check_mcts_distill,
    "QLoRA 4-bit (bitsandbytes)": check_qlora,
    "DeepSpeed ZeRO-2, one GPU": check_deepspeed_zero2,
    "value-guided generation": check_value_guidance,
    "chunked CQL vs naive": check_chunked_cql,
    "tokens/s offline RL vs SFT": check_throughput,
}


# ------------------------------------------------------------------------------------- driver
def make_context(device: str, tiny: bool, workdir: Path) -> Context:
    from trainers.data.tokenization import prepare_tokenizer
    from trainers.testing import build_tiny_tokenizer

    tokenizer = prepare_tokenizer(build_tiny_tokenizer(workdir / "tokenizer"))
    shape = TINY_SHAPE if tiny else SMOLLM2_SHAPE
    return Context(device, tiny, workdir, tokenizer, shape, seq=1024, batch=2 if tiny else 4)


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "deepspeed"):
        try:
            found[name] = importlib.import_module(name).__version__
        except Exception as error:  # noqa: BLE001 - a broken optional package is reported, not fatal
            found[name] = f"missing ({type(error).__name__})"
    return found


def report(results: list[Result], header: dict, path: Path) -> str:
    lines = ["# GPU check", ""]
    lines += [f"- {key}: {value}" for key, value in header.items()]
    lines += ["", "| check | status | seconds | details |", "|---|---|---|---|"]
    for result in results:
        details = "; ".join(f"{k}: {v}" for k, v in result.details.items()).replace("|", "/").replace("\n", " ")
        lines.append(f"| {result.name} | {result.status} | {result.seconds:.1f} | {details} |")
    failed = [r.name for r in results if r.status == "FAILED"]
    lines += [
        "",
        f"{len(results) - len(failed)} of {len(results)} checks passed or were skipped"
        + (f"; failed: {', '.join(failed)}" if failed else ""),
        "",
    ]
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(text)
    os.replace(staging, path)
    return text


def run_checks(device: str, tiny: bool, out: Path, budget: float, only: list[str] | None = None) -> list[Result]:
    started = time.perf_counter()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        ctx = make_context(device, tiny, Path(tmp))
        for name, check in CHECKS.items():
            if only and not any(part.lower() in name.lower() for part in only):
                continue
            if time.perf_counter() - started > budget:
                results.append(Result(name, "skipped", 0.0, {"reason": f"time budget of {budget:.0f} s used up"}))
                continue
            begin = time.perf_counter()
            try:
                result = Result(name, "ok", 0.0, check(ctx))
            except Skip as reason:
                result = Result(name, "skipped", 0.0, {"reason": str(reason)})
            except Exception as error:  # noqa: BLE001 - every check is isolated: report and go on
                trace = traceback.format_exc(limit=3).strip().splitlines()
                result = Result(
                    name,
                    "FAILED",
                    0.0,
                    {"error": f"{type(error).__name__}: {error}"[:600], "at": " / ".join(trace[-3:])[:400]},
                )
            finally:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            result.seconds = time.perf_counter() - begin
            print(f"[gpu-check] {result.status:>7} {result.seconds:6.1f}s  {name}  {result.details}", flush=True)
            results.append(result)
    cpu = f"CPU ({platform.processor() or platform.machine()})"
    header = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else cpu,
        "model": "tiny Llama" if tiny else "SmolLM2-135M-shaped Llama (random weights)",
        "total seconds": f"{time.perf_counter() - started:.0f}",
        **versions(),
    }
    print(report(results, header, out))
    print(f"report written to {out}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="a tiny model instead of the SmolLM2-135M shape")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "gpu_check" / "report.md")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds; checks not started by then are skipped")
    parser.add_argument("--only", nargs="*", help="run the checks whose names contain one of these words")
    parser.add_argument("--child-zero2", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_zero2 is not None:
        zero2_child(args.child_zero2, args.tiny)
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "gpu-check: no CUDA device here, nothing to check (use --device cpu --tiny to exercise the script "
            "on the CPU)"
        )
        return 0
    results = run_checks(args.device, args.tiny, args.out, args.budget, args.only)
    return 1 if any(r.status == "FAILED" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
