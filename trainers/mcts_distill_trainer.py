"""W2SG MCTS distillation: offline MCTS over the weak model's trees, SFT of the strong model on the best paths.

The trainer runs :func:`trainers.tree.run_mcts` over a forest (or takes its results / best-path
rows), tokenizes each best path with :func:`trainers.data.tokenization.tokenize_trajectory` and
hands TRL's :class:`~trl.SFTTrainer` ``input_ids`` with an ``assistant_masks`` column, which TRL
turns into labels. The loss therefore covers exactly the assistant turns (content and
end-of-turn token) under any chat template, without needing ``{% generation %}`` markers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import datasets
from trl import SFTTrainer

from trainers.checkpointing import CrashSafeCheckpointMixin
from trainers.data.schema import to_dataset, validate_trajectories
from trainers.data.tokenization import prepare_tokenizer, tokenize_trajectory
from trainers.mcts_distill_config import MCTSDistillConfig
from trainers.tree import MCTSResult, TrajectoryForest, best_path_rows, run_mcts

__all__ = ["MCTSDistillTrainer", "NoBestPathsError", "tokenize_for_sft"]


class NoBestPathsError(ValueError):
    """The search produced nothing to imitate."""


def tokenize_for_sft(
    rows: datasets.Dataset | Sequence[dict], tokenizer, max_length: int | None = None
) -> datasets.Dataset:
    """Trajectory rows -> ``input_ids`` + ``assistant_masks`` (1 on assistant content and end-of-turn tokens)."""
    rows = list(rows)

    def encode(index, row):
        encoded = tokenize_trajectory(
            row["messages"], row["rewards"], tokenizer, max_length=max_length, row=f"{index} (id={row.get('id')!r})"
        )
        return {
            "input_ids": encoded["input_ids"],
            "assistant_masks": encoded["action_mask"],
            "id": row.get("id", str(index)),
        }

    return datasets.Dataset.from_list([encode(i, r) for i, r in enumerate(rows)])


class MCTSDistillTrainer(CrashSafeCheckpointMixin, SFTTrainer):
    """SFT of the strong model on MCTS best paths (W2SG).

    Give exactly one source of paths:

    * ``forest``: a :class:`~trainers.tree.TrajectoryForest`; the search runs here with the
      config's ``mcts_iterations`` / ``exploration_constant``;
    * ``mcts_results``: the output of :func:`trainers.tree.run_mcts`;
    * ``train_dataset``: trajectory rows (e.g. saved best paths, ``source="mcts"``), or an
      already tokenized dataset (``input_ids`` with ``assistant_masks`` or ``labels``).

    The best paths used are in ``trainer.best_paths`` (a trajectory dataset; save it with
    :meth:`save_best_paths`). Other arguments go to :class:`trl.SFTTrainer`.
    """

    _tag_names = ["trl", "sft", "trainers", "mcts", "weak-to-strong"]
    _name = "MCTSDistill"

    def __init__(
        self,
        model,
        args: MCTSDistillConfig | None = None,
        data_collator=None,
        train_dataset: datasets.Dataset | None = None,
        eval_dataset: datasets.Dataset | None = None,
        processing_class=None,
        *,
        forest: TrajectoryForest | None = None,
        mcts_results: Iterable[MCTSResult] | None = None,
        **kwargs,
    ):
        if args is None:
            args = MCTSDistillConfig(output_dir="mcts-distill")
        if not isinstance(args, MCTSDistillConfig):
            raise TypeError(f"args must be an MCTSDistillConfig, got {type(args).__name__}")
        sources = sum(x is not None for x in (forest, mcts_results, train_dataset))
        if sources != 1:
            raise ValueError(f"pass exactly one of forest, mcts_results or train_dataset (got {sources:d})")
        if processing_class is None:
            from transformers import AutoTokenizer

            name = model if isinstance(model, str) else model.config._name_or_path
            processing_class = AutoTokenizer.from_pretrained(name)
        tokenizer = prepare_tokenizer(getattr(processing_class, "tokenizer", processing_class))

        self.mcts_results: list[MCTSResult] | None = None
        if forest is not None:
            mcts_results = run_mcts(
                forest, iterations=args.mcts_iterations, exploration_constant=args.exploration_constant
            )
        if mcts_results is not None:
            self.mcts_results = list(mcts_results)
            if not self.mcts_results:  # nothing was explored, which is not the same as every exploration failing
                what = "the forest has no trees" if forest is not None else "mcts_results is empty"
                raise NoBestPathsError(f"{what}: there are no tasks to imitate; build it from explorations first")
            rows = best_path_rows(
                self.mcts_results, min_path_value=args.min_path_value, paths_per_task=args.paths_per_task
            )
            if not rows:
                raise NoBestPathsError(
                    f"MCTS over {len(self.mcts_results)} trees gave no best path with an outcome above "
                    f"min_path_value={args.min_path_value}: every exploration of every task failed. "
                    "Explore more, or set min_path_value=None to imitate the best failures anyway."
                )
            train_dataset = to_dataset(rows)
        if len(train_dataset) == 0:
            raise NoBestPathsError("train_dataset is empty: there are no best paths to imitate")
        if "input_ids" in train_dataset.column_names:
            self.best_paths = None
            tokenized = train_dataset
        else:
            validate_trajectories(train_dataset)
            self.best_paths = train_dataset
            tokenized = tokenize_for_sft(train_dataset, tokenizer, max_length=args.max_length)
        if eval_dataset is not None and "input_ids" not in eval_dataset.column_names:
            validate_trajectories(eval_dataset)
            eval_dataset = tokenize_for_sft(eval_dataset, tokenizer, max_length=args.max_length)
        super().__init__(
            model,
            args=args,
            data_collator=data_collator,
            train_dataset=tokenized,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )

    def save_best_paths(self, directory: str | os.PathLike) -> Path:
        """Save the imitated best paths (trajectory schema) atomically with ``save_to_disk``."""
        from trainers.hub import atomic_save

        if self.best_paths is None:
            raise ValueError("this trainer was given a tokenized dataset, so it has no best-path trajectories to save")
        with atomic_save(directory) as staging:
            self.best_paths.save_to_disk(str(staging))
        return Path(directory)
