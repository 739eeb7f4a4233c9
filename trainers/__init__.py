"""Hub-native TRL / Transformers trainers for multi-turn LLM agents.

The public classes are imported lazily, so ``import trainers`` stays cheap and optional
dependencies (ScienceWorld, sentence-transformers, DeepSpeed) are only needed when used::

    from trainers import BilevelReweightTrainer, BilevelReweightConfig
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # what editors and type checkers see; at run time __getattr__ imports on first use
    from trainers.boost.config import BilevelReweightConfig
    from trainers.boost.reweighting_head import ReweightingHead
    from trainers.boost.trainer import BilevelReweightTrainer
    from trainers.data.hub_io import load_trajectories, push_trajectories
    from trainers.envs import make_env
    from trainers.mcts_distill_config import MCTSDistillConfig
    from trainers.mcts_distill_trainer import MCTSDistillTrainer
    from trainers.modeling.guidance import ValueGuidedLogitsProcessor, load_value_guided_policy
    from trainers.modeling.value_heads import ValueHeads
    from trainers.models import load_causal_lm
    from trainers.offline_rl_config import OfflineRLConfig
    from trainers.offline_rl_trainer import OfflineRLTrainer
    from trainers.tree.tree import TrajectoryForest, TrajectoryTree, build_forest
    from trainers.tree_dpo_config import TreeDPOConfig
    from trainers.tree_dpo_trainer import TreeDPOTrainer

_EXPORTS = {
    "OfflineRLConfig": "trainers.offline_rl_config",
    "OfflineRLTrainer": "trainers.offline_rl_trainer",
    "BilevelReweightConfig": "trainers.boost.config",
    "BilevelReweightTrainer": "trainers.boost.trainer",
    "TreeDPOConfig": "trainers.tree_dpo_config",
    "TreeDPOTrainer": "trainers.tree_dpo_trainer",
    "MCTSDistillConfig": "trainers.mcts_distill_config",
    "MCTSDistillTrainer": "trainers.mcts_distill_trainer",
    "ValueHeads": "trainers.modeling.value_heads",
    "ReweightingHead": "trainers.boost.reweighting_head",
    "ValueGuidedLogitsProcessor": "trainers.modeling.guidance",
    "load_value_guided_policy": "trainers.modeling.guidance",
    "TrajectoryForest": "trainers.tree.tree",
    "TrajectoryTree": "trainers.tree.tree",
    "build_forest": "trainers.tree.tree",
    "load_causal_lm": "trainers.models",
    "make_env": "trainers.envs",
    "load_trajectories": "trainers.data.hub_io",
    "push_trajectories": "trainers.data.hub_io",
}

# A literal list (equal to the keys of _EXPORTS) so that linters and type checkers see the re-exports.
__all__ = [
    "BilevelReweightConfig",
    "BilevelReweightTrainer",
    "MCTSDistillConfig",
    "MCTSDistillTrainer",
    "OfflineRLConfig",
    "OfflineRLTrainer",
    "ReweightingHead",
    "TrajectoryForest",
    "TrajectoryTree",
    "TreeDPOConfig",
    "TreeDPOTrainer",
    "ValueGuidedLogitsProcessor",
    "ValueHeads",
    "build_forest",
    "load_causal_lm",
    "load_trajectories",
    "load_value_guided_policy",
    "make_env",
    "push_trajectories",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'trainers' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
