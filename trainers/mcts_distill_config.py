"""Configuration of :class:`~trainers.MCTSDistillTrainer` (W2SG MCTS distillation)."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig

from trainers.tree_dpo_config import check_number

__all__ = ["MCTSDistillConfig"]


@dataclass
class MCTSDistillConfig(SFTConfig):
    r"""
    Configuration class for the [`~trainers.MCTSDistillTrainer`]: TRL's [`~trl.SFTConfig`] plus the offline search
    over weak-model trajectory trees that picks the paths the strong model imitates (W2SG paper, section 3.2).

    Every field of `SFTConfig` keeps its meaning; the defaults that differ are listed first. Using
    [`~transformers.HfArgumentParser`] this class becomes command-line arguments.

    Parameters:
        > Defaults that differ from `SFTConfig`

        learning_rate (`float`, *optional*, defaults to `1e-5`):
            AdamW learning rate. Paper (SFT, LoRA r=64 / alpha=128, batch 32 with gradient accumulation): 1e-5.
        lr_scheduler_type (`str`, *optional*, defaults to `"cosine"`):
            Learning-rate schedule. Paper: cosine.
        max_length (`int` or `None`, *optional*, defaults to `1024`):
            As in `SFTConfig`; a longer path drops its oldest (observation, action) turns but keeps the system
            prompt, the instruction and the last turn (see `trainers.data.tokenization`).

        > Parameters that control the search

        mcts_iterations (`int`, *optional*, defaults to `1000`):
            Selection / evaluation / backup rounds per tree. Paper: about 1000.
        exploration_constant (`float`, *optional*, defaults to `1.41`):
            `c` in UCB = mean + c * sqrt(ln N_parent / N_child). Paper: 1.41 (sqrt 2).

        > Parameters that control which paths are imitated

        min_path_value (`float` or `None`, *optional*, defaults to `0.0`):
            Paths whose empirical outcome (the mean G(e) at their leaf, in [0, 1]) is not above this are not
            trained on: a path that still scored 0 teaches failure. `None` keeps every path. Paper: not stated.
        paths_per_task (`int`, *optional*, defaults to `1`):
            Best paths imitated per task: the greedy best path of the search, then the other leaves of the tree by
            empirical mean outcome (each still subject to `min_path_value`). Paper: 1.
    """

    learning_rate: float = field(
        default=1e-5,
        metadata={"help": "AdamW learning rate. Paper (SFT, LoRA r=64 / alpha=128, batch 32): 1e-5."},
    )
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule. Paper: cosine."})
    mcts_iterations: int = field(
        default=1000, metadata={"help": "Selection / evaluation / backup rounds per tree. Paper: about 1000."}
    )
    exploration_constant: float = field(
        default=1.41,
        metadata={"help": "c in UCB = mean + c * sqrt(ln N_parent / N_child). Paper: 1.41 (sqrt 2)."},
    )
    min_path_value: float | None = field(
        default=0.0,
        metadata={
            "help": "Paths whose empirical outcome (mean G(e) at their leaf, in [0, 1]) is not above this are "
            "not trained on: a path that still scored 0 teaches failure. None keeps every path. Paper: "
            "not stated."
        },
    )
    paths_per_task: int = field(
        default=1,
        metadata={
            "help": "Best paths imitated per task: the search's greedy best path, then the tree's other leaves "
            "by empirical mean outcome (each still subject to min_path_value). Paper: 1."
        },
    )

    def __post_init__(self):
        check_number(self, "learning_rate", low=0.0)
        check_number(self, "mcts_iterations", low=1)
        check_number(self, "exploration_constant", low=0.0)
        check_number(self, "min_path_value", low=0.0, high=1.0, allow_none=True)
        check_number(self, "paths_per_task", low=1)
        super().__post_init__()
