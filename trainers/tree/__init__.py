"""Weak-to-strong trajectory trees: tree building, divergence-point pairs, offline MCTS, pictures."""

from .mcts import MCTSResult, best_path, best_path_rows, mcts_search, ranked_paths, run_mcts, select_child, ucb
from .pairs import NoPreferencePairsError, PairMiningResult, greedy_path, mine_pairs, mine_tree_pairs
from .render import render_forest, render_tree
from .tree import (
    Step,
    TrajectoryForest,
    TrajectoryTree,
    TreeNode,
    build_forest,
    node_features,
    parse_steps,
    trajectory_outcome,
)

__all__ = [
    "MCTSResult",
    "NoPreferencePairsError",
    "PairMiningResult",
    "Step",
    "TrajectoryForest",
    "TrajectoryTree",
    "TreeNode",
    "best_path",
    "best_path_rows",
    "build_forest",
    "greedy_path",
    "mcts_search",
    "mine_pairs",
    "mine_tree_pairs",
    "node_features",
    "parse_steps",
    "ranked_paths",
    "render_forest",
    "render_tree",
    "run_mcts",
    "select_child",
    "trajectory_outcome",
    "ucb",
]
