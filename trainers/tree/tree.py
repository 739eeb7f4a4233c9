"""Trajectory trees: a weak model's explorations of one task merged into a prefix tree.

The root stands for the task (system prompt + instruction). Every other node is one execution
step ``(previous observation, thought, action)`` parsed from an assistant turn: the observation is
the user message just before it, the action is what :func:`trainers.envs.extract_action` reads
and the thought is the text before ``Action:`` (without a ``Thought:`` label).

Adding a trajectory walks down from the root. A step merges into an existing child when

* the actions are exactly equal (even small phrasing differences branch, as in the W2SG paper), and
* the step texts are similar: identical strings match at once, otherwise the cosine of their
  sentence embeddings must reach ``similarity_threshold`` (all-MiniLM-L6-v2, default 0.9).
  The step text is the observation, or observation + thought (``similarity_on``).

Siblings also carry a ``state_group``: children of one node whose *observations* are similar by
the same rule share a group. Preference pairs are only formed inside a group, so that two
continuations are compared from the same state and the difference in outcome is due to the
agent's choice, not to the environment.

Each node keeps its visit count, the total and mean outcome G(e) of the trajectories through it,
and their ids. A forest (one tree per ``task_id``) saves to a :class:`datasets.Dataset` node table.

Where things live: :mod:`.steps` (:class:`Step`, :func:`parse_steps`, :func:`trajectory_outcome`),
:mod:`.similarity` (the exact-or-embedding similarity test), :mod:`.trajectory_tree`
(:class:`TreeNode`, :class:`TrajectoryTree`, :func:`node_features`) and :mod:`.forest`
(:class:`TrajectoryForest`, :func:`build_forest`). This module re-exports them.
"""

from __future__ import annotations

from .forest import TREE_CONFIG_NAME, TrajectoryForest, build_forest  # noqa: F401 - re-exported
from .similarity import EmbedFn, _Similarity  # noqa: F401 - re-exported
from .steps import Step, parse_steps, trajectory_outcome
from .trajectory_tree import SIMILARITY_ON, TrajectoryTree, TreeNode, node_features  # noqa: F401 - re-exported

__all__ = [
    "Step",
    "TrajectoryForest",
    "TrajectoryTree",
    "TreeNode",
    "build_forest",
    "node_features",
    "parse_steps",
    "trajectory_outcome",
]
