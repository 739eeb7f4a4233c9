"""Command line: ``python -m trainers <command> --config run.yaml [--field value ...]``.

Commands and what they train:

=============== ======================== ====================================================
command         trainer                  data
=============== ======================== ====================================================
``offline-rl``  ``OfflineRLTrainer``      trajectories (``train_dataset``)
``boost``       ``BilevelReweightTrainer`` real trajectories, real validation trajectories,
                                          synthetic trajectories
``tree-dpo``    ``TreeDPOTrainer``        preference pairs, or a saved trajectory forest
``mcts-distill`` ``MCTSDistillTrainer``    best-path trajectories, or a saved trajectory forest
=============== ======================== ====================================================

Every field of the trainer's config dataclass, of TRL's ``ModelConfig`` (model, LoRA, 4-bit) and
of :class:`RunArguments` (datasets) can be set in the YAML file or on the command line; the command
line wins. The YAML may also hold ``env:`` (environment variables to set). The effective settings
are written to ``<output_dir>/run_config.yaml``, which reproduces the run with ``--config``.
Trainer modules are imported only for the command that runs, so a missing optional dependency of
one trainer does not break the others.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .allocator import keep_freed_memory

__all__ = ["COMMANDS", "RunArguments", "TrainerUnavailableError", "build_parser", "main", "parse_command", "run"]


@dataclass(frozen=True)
class _Command:
    trainer_module: str
    trainer_class: str
    config_module: str
    config_class: str
    help: str


COMMANDS: dict[str, _Command] = {
    "offline-rl": _Command(
        "trainers.offline_rl_trainer",
        "OfflineRLTrainer",
        "trainers.offline_rl_config",
        "OfflineRLConfig",
        "offline RL (MC return regression or ILQL) on trajectories",
    ),
    "boost": _Command(
        "trainers.bilevel_trainer",
        "BilevelReweightTrainer",
        "trainers.bilevel_config",
        "BilevelReweightConfig",
        "BOOST: offline RL on real + synthetic trajectories with a bilevel-learned reweighting head",
    ),
    "tree-dpo": _Command(
        "trainers.tree_dpo_trainer",
        "TreeDPOTrainer",
        "trainers.tree_dpo_config",
        "TreeDPOConfig",
        "weak-to-strong DPO on preference pairs mined from a trajectory tree",
    ),
    "mcts-distill": _Command(
        "trainers.mcts_distill_trainer",
        "MCTSDistillTrainer",
        "trainers.mcts_distill_config",
        "MCTSDistillConfig",
        "weak-to-strong SFT on offline-MCTS best paths of a trajectory tree",
    ),
}


class TrainerUnavailableError(ImportError):
    """The trainer behind a command cannot be imported in this installation."""


@dataclass
class RunArguments:
    """Where the data comes from (local folders/files or Hub dataset ids)."""

    train_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Training data: trajectories (offline-rl, boost, mcts-distill) or preference pairs "
            "(tree-dpo). A folder, a .json/.jsonl/.parquet file or a Hub dataset id."
        },
    )
    train_split: str = field(default="train", metadata={"help": "Split of train_dataset to use."})
    val_dataset: str | None = field(
        default=None, metadata={"help": "boost: real validation trajectories for the bilevel outer loss (required)."}
    )
    val_split: str = field(default="train", metadata={"help": "Split of val_dataset to use."})
    synthetic_dataset: str | None = field(
        default=None,
        metadata={"help": "boost: synthetic trajectories to reweight (required by method boost/vanilla_synthetic)."},
    )
    synthetic_split: str = field(default="train", metadata={"help": "Split of synthetic_dataset to use."})
    eval_dataset: str | None = field(
        default=None, metadata={"help": "Optional evaluation data (same kind as train_dataset)."}
    )
    eval_split: str = field(default="train", metadata={"help": "Split of eval_dataset to use."})
    forest: str | None = field(
        default=None,
        metadata={
            "help": "tree-dpo / mcts-distill: a trajectory forest folder (TrajectoryForest.save_to_disk) or Hub "
            "dataset id; pairs / best paths are computed from it instead of train_dataset."
        },
    )
    ref_model: str | None = field(
        default=None, metadata={"help": "tree-dpo: the weak SFT reference model (default: the policy's initial copy)."}
    )
    dataset_revision: str | None = field(default=None, metadata={"help": "Hub revision of the datasets."})


def _load(command: str) -> tuple[Any, type]:
    """Import the trainer and config classes of ``command`` (lazily), with a clear error."""
    if command not in COMMANDS:
        raise SystemExit(f"unknown command {command!r}; choose one of: {', '.join(COMMANDS)}")
    spec = COMMANDS[command]
    try:
        config_class = getattr(importlib.import_module(spec.config_module), spec.config_class)
        trainer_class = getattr(importlib.import_module(spec.trainer_module), spec.trainer_class)
    except (ImportError, AttributeError) as error:
        raise TrainerUnavailableError(
            f"the '{command}' command needs {spec.trainer_module}.{spec.trainer_class}, "
            f"which cannot be imported in this installation ({type(error).__name__}: {error}). "
            "Reinstall the package (pip install 'trajectory-trainers[all]') "
            f"or use another command: {', '.join(c for c in COMMANDS if c != command)}."
        ) from error
    return trainer_class, config_class


def _model_arguments_class(config_class: type) -> type:
    """TRL's ``ModelConfig`` minus the fields the trainer config already has (e.g. ``load_in_4bit``).

    argparse refuses two options with one name; the trainer config's field wins, and
    :func:`parse_command` copies its value into the ``ModelConfig`` it returns.
    """
    import typing

    from trl import ModelConfig

    taken = {f.name for f in dataclasses.fields(config_class)}
    hints = typing.get_type_hints(ModelConfig)
    specs = []
    for f in dataclasses.fields(ModelConfig):
        if f.name in taken or not f.init:
            continue
        default = (
            {"default": f.default} if f.default is not dataclasses.MISSING else {"default_factory": f.default_factory}
        )
        specs.append((f.name, hints[f.name], field(metadata=f.metadata, **default)))
    return dataclasses.make_dataclass("ModelArguments", specs)


def build_parser(command: str):
    """A ``trl.TrlParser`` over (RunArguments, <trainer config>, model arguments) for ``command``."""
    from trl import TrlParser

    _, config_class = _load(command)
    parser = TrlParser(
        (RunArguments, config_class, _model_arguments_class(config_class)), prog=f"python -m trainers {command}"
    )
    parser.description = COMMANDS[command].help
    return parser


def parse_command(command: str, argv: list[str]):
    """Parse ``argv`` (``--config`` YAML plus overrides) into ``(run_args, trainer_args, model_args)``.

    ``model_args`` is a ``trl.ModelConfig``; fields it shares with the trainer config take the
    trainer config's value.
    """
    from trl import ModelConfig

    parser = build_parser(command)
    run_args, trainer_args, partial = parser.parse_args_and_config(list(argv))
    values = dataclasses.asdict(partial)
    for f in dataclasses.fields(ModelConfig):
        if f.init and f.name not in values and hasattr(trainer_args, f.name):
            values[f.name] = getattr(trainer_args, f.name)
    model_args = ModelConfig(**values)
    if not model_args.model_name_or_path:
        raise SystemExit(
            f"python -m trainers {command}: set model_name_or_path (in the YAML or as --model_name_or_path)"
        )
    return run_args, trainer_args, model_args


# -------------------------------------------------------------------------------------- running
def _dataset(path: str | None, split: str, run_args: RunArguments, *, trajectories: bool = True):
    if path is None:
        return None
    kwargs = {"revision": run_args.dataset_revision} if run_args.dataset_revision else {}
    if trajectories:
        from trainers.data.hub_io import load_trajectories

        return load_trajectories(path, split=split, **kwargs)
    import datasets

    from trainers.data.hub_io import _load_raw

    loaded = _load_raw(path, split, **kwargs)
    if isinstance(loaded, datasets.DatasetDict):
        raise ValueError(f"{path}: pick a split with the matching *_split argument; available: {', '.join(loaded)}")
    return loaded


def _forest(path: str):
    from trainers.tree.tree import TrajectoryForest

    return TrajectoryForest.load_from_disk(path) if Path(path).exists() else TrajectoryForest.from_hub(path)


def _model(model_args, trainer_args):
    """Load the policy as TRL's scripts do: dtype, 4/8-bit quantization, revision, attention implementation."""
    import torch
    from trl import get_quantization_config

    from trainers.models import load_causal_lm

    dtype = model_args.dtype
    if dtype not in (None, "auto"):
        dtype = getattr(torch, dtype)
    kwargs: dict[str, Any] = {}
    if model_args.model_revision:
        kwargs["revision"] = model_args.model_revision
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    quantization = get_quantization_config(model_args)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    return load_causal_lm(model_args.model_name_or_path, dtype=dtype, **kwargs)


def _write_run_config(run_args, trainer_args, model_args, command: str) -> Path | None:
    """Write every effective setting as YAML beside the outputs (main process only)."""
    import yaml

    from .checkpointing import write_text_atomically

    if int(os.environ.get("RANK", "0")) != 0:
        return None
    values: dict[str, Any] = {}
    for group in (run_args, model_args):
        values.update(dataclasses.asdict(group))
    trainer_values = trainer_args.to_dict()
    # Fields TrainingArguments derives at runtime are not settable (init=False); leave them out.
    settable = {f.name for f in dataclasses.fields(trainer_args) if f.init}
    values.update({k: v for k, v in trainer_values.items() if k in settable})
    clean = {k: (v.value if hasattr(v, "value") else v) for k, v in values.items()}
    clean = {
        k: (v if isinstance(v, (str, int, float, bool, list, dict, type(None))) else str(v)) for k, v in clean.items()
    }
    out = Path(trainer_args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "run_config.yaml"
    write_text_atomically(
        path, f"# python -m trainers {command} --config {path.name}\n" + yaml.safe_dump(clean, sort_keys=True)
    )
    return path


def run(command: str, argv: list[str]):
    """Parse, build the trainer, train, save; return the trainer."""
    trainer_class, _ = _load(command)
    run_args, trainer_args, model_args = parse_command(command, argv)
    from trl import get_peft_config

    from trainers.models import load_tokenizer

    if run_args.train_dataset is None and run_args.forest is None:
        raise SystemExit(
            f"python -m trainers {command}: set train_dataset"
            + (" or forest" if command in ("tree-dpo", "mcts-distill") else "")
        )
    tokenizer = load_tokenizer(model_args.model_name_or_path)
    if getattr(trainer_args, "load_in_4bit", False):
        # The offline RL trainers quantize the base themselves (QLoRA) when given a model path.
        model = model_args.model_name_or_path
    else:
        model = _model(model_args, trainer_args)
    peft_config = get_peft_config(model_args)
    kwargs: dict[str, Any] = {"args": trainer_args, "processing_class": tokenizer}
    if peft_config is not None:
        kwargs["peft_config"] = peft_config
    if command in ("offline-rl", "boost"):
        kwargs["train_dataset"] = _dataset(run_args.train_dataset, run_args.train_split, run_args)
        kwargs["eval_dataset"] = _dataset(run_args.eval_dataset, run_args.eval_split, run_args)
        if command == "boost":
            kwargs["val_dataset"] = _dataset(run_args.val_dataset, run_args.val_split, run_args)
            kwargs["synthetic_dataset"] = _dataset(run_args.synthetic_dataset, run_args.synthetic_split, run_args)
    elif command == "tree-dpo":
        if run_args.forest:
            kwargs["forest"] = _forest(run_args.forest)
        else:
            kwargs["train_dataset"] = _dataset(
                run_args.train_dataset, run_args.train_split, run_args, trajectories=False
            )
        if run_args.ref_model:
            kwargs["ref_model"] = _model(
                dataclasses.replace(model_args, model_name_or_path=run_args.ref_model), trainer_args
            )
            ref_tokenizer = load_tokenizer(run_args.ref_model)
            kwargs["ref_processing_class"] = ref_tokenizer
        kwargs["eval_dataset"] = _dataset(run_args.eval_dataset, run_args.eval_split, run_args, trajectories=False)
    elif command == "mcts-distill":
        if run_args.forest:
            kwargs["forest"] = _forest(run_args.forest)
        else:
            kwargs["train_dataset"] = _dataset(run_args.train_dataset, run_args.train_split, run_args)
        kwargs["eval_dataset"] = _dataset(run_args.eval_dataset, run_args.eval_split, run_args)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    _write_run_config(run_args, trainer_args, model_args, command)
    trainer = trainer_class(model, **kwargs)
    trainer.train(resume_from_checkpoint=trainer_args.resume_from_checkpoint)
    trainer.save_model(trainer_args.output_dir)
    if trainer_args.push_to_hub:
        trainer.push_to_hub()
    return trainer


def _usage() -> str:
    lines = ["usage: python -m trainers <command> --config run.yaml [--field value ...]", "", "commands:"]
    lines += [f"  {name:<13} {spec.help}" for name, spec in COMMANDS.items()]
    lines += ["", "python -m trainers <command> --help lists every field of that command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    keep_freed_memory()  # before any model loads: steps ran ~1.5x faster (benchmarks/cpu_allocator.py)
    # all cores for this process, also under `accelerate launch` (which would leave one thread);
    # precision needs no wiring here: model dtype and the config's bf16 default follow trainers.hardware
    from .hardware import configure_threads

    configure_threads()
    try:
        run(command, rest)
    except TrainerUnavailableError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
