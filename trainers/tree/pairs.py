"""Preference pairs at the divergence points of trajectory trees (W2SG "Tree-DPO").

At a node whose children (from the same state, see ``state_group``) lead to different mean
outcomes, the shared prefix becomes the prompt; the better child's continuation is ``chosen`` and
the worse child's is ``rejected``. A continuation is either the next step alone or the whole
path below the child (best path for the chosen side, worst for the rejected side, each followed
greedily by mean outcome).

The output is TRL's conversational preference format: ``prompt`` is a list of messages ending
with the user observation both sides answer; ``chosen`` / ``rejected`` are lists of assistant
(and, inside a multi-step continuation, user) messages.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .tree import TrajectoryForest, TrajectoryTree, TreeNode

__all__ = ["NoPreferencePairsError", "PairMiningResult", "greedy_path", "mine_pairs", "mine_tree_pairs"]

logger = logging.getLogger(__name__)

CONTINUATIONS = ("step", "path")
PAIRINGS = ("all", "best_vs_worst")


class NoPreferencePairsError(ValueError):
    """The trees hold no divergence point, so there is nothing for DPO to learn from."""


def _rank_key(node: TreeNode, best: bool):
    # ties broken by visit count (more evidence first), then by insertion order
    return (-node.mean_outcome if best else node.mean_outcome, -node.visits, node.node_id)


def greedy_path(tree: TrajectoryTree, start: int, *, best: bool = True) -> list[int]:
    """Node ids from ``start`` down to a leaf, taking the best (or worst) child by mean outcome."""
    path = [start]
    node = tree.nodes[start]
    while node.children:
        node = min(tree.children(node.node_id), key=lambda child: _rank_key(child, best))
        path.append(node.node_id)
    return path


@dataclass
class PairMiningResult:
    """Pairs plus the per-task bookkeeping people need when the count is surprising."""

    pairs: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.pairs)

    def to_dataset(self):
        import datasets

        if not self.pairs:
            raise NoPreferencePairsError(self.explain())
        return datasets.Dataset.from_list(self.pairs)

    def explain(self) -> str:
        """A human-readable account of how many pairs each task gave and why some gave none."""
        total = len(self.pairs)
        lines = [f"{total} preference pairs from {len(self.counts)} trees"]
        for task_id, count in self.counts.items():
            reason = f" ({self.reasons[task_id]})" if task_id in self.reasons else ""
            lines.append(f"  task {task_id!r}: {count} pairs{reason}")
        if total == 0:
            lines.append(
                "No divergence point: every tree has a single trajectory, or its branches from the same state have "
                "equal mean outcomes (within the margin). Explore more times per task (M), with more varied "
                "sampling, or lower the margin."
            )
        return "\n".join(lines)


def had_no_effect(tree: TrajectoryTree, node: TreeNode, pattern: re.Pattern[str]) -> bool:
    """Whether ``node``'s action changed nothing: the environment's answer to it matches ``pattern``.

    A node's own ``observation`` is what its action answered, so the answer to its action is in its
    children's observations; a leaf's answer is unknown and counts as accepted.
    """
    return any(pattern.search(child.observation) for child in tree.children(node.node_id))


def mine_tree_pairs(
    tree: TrajectoryTree,
    *,
    margin: float = 0.0,
    continuation: str = "path",
    pairing: str = "all",
    min_visits: int = 1,
    no_effect_pattern: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Pairs of one tree and, when there are none, the reason."""
    if continuation not in CONTINUATIONS:
        raise ValueError(f"continuation must be one of {CONTINUATIONS}, got {continuation!r}")
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if tree.root.visits <= 1:
        return [], f"built from {tree.root.visits} trajectory: a single path has no divergence point"
    no_effect = re.compile(no_effect_pattern) if no_effect_pattern else None
    pairs: list[dict[str, Any]] = []
    branching = 0
    skipped_no_effect = 0
    for parent in tree.nodes:
        if len(parent.children) < 2:
            continue
        branching += 1
        groups: dict[int, list[TreeNode]] = {}
        for child in tree.children(parent.node_id):
            if child.visits >= min_visits:
                groups.setdefault(child.state_group, []).append(child)
        prefix = tree.prompt_messages() + tree.messages_for_path(tree.path_to(parent.node_id))
        for siblings in groups.values():
            if len(siblings) < 2:
                continue
            ranked = sorted(siblings, key=lambda n: _rank_key(n, True))
            # an action that changed nothing (refused, or a door already open) is not a better decision than
            # a sibling's: its branch only ended better by what came after, so it is never `chosen`
            choosable = [n for n in ranked if no_effect is None or not had_no_effect(tree, n, no_effect)]
            skipped_no_effect += int(ranked[0] not in choosable)
            if pairing == "best_vs_worst":
                candidates = [(choosable[0], ranked[-1])] if choosable else []
            else:
                candidates = [(a, b) for a, b in itertools.combinations(ranked, 2) if a in choosable]
            for better, worse in candidates:
                if better.mean_outcome - worse.mean_outcome <= margin:
                    continue
                pairs.append(_make_pair(tree, parent, prefix, better, worse, continuation))
    reason = None
    if not pairs:
        reason = (
            "no branching node"
            if branching == 0
            else f"{branching} branching nodes but no sibling outcomes differ by more than margin={margin}"
        )
        if skipped_no_effect:
            reason += f"; at {skipped_no_effect} of them the best branch's action had no effect"
    return pairs, reason


def _continuation(
    tree: TrajectoryTree, child: TreeNode, continuation: str, best: bool
) -> tuple[list[dict[str, str]], list[int]]:
    nodes = [child.node_id] if continuation == "step" else greedy_path(tree, child.node_id, best=best)
    return tree.messages_for_path(nodes, include_first_observation=False), nodes


def _make_pair(tree, parent, prefix, better, worse, continuation) -> dict[str, Any]:
    chosen, chosen_nodes = _continuation(tree, better, continuation, best=True)
    rejected, rejected_nodes = _continuation(tree, worse, continuation, best=False)
    return {
        # both children answer the same state; the better child's observation is shown
        "prompt": prefix + [{"role": "user", "content": better.observation}],
        "chosen": chosen,
        "rejected": rejected,
        "task_id": tree.task_id,
        "node_id": parent.node_id,
        "chosen_node_ids": chosen_nodes,
        "rejected_node_ids": rejected_nodes,
        "chosen_outcome": float(better.mean_outcome),
        "rejected_outcome": float(worse.mean_outcome),
    }


def mine_pairs(
    trees: TrajectoryForest | TrajectoryTree | Mapping[str, TrajectoryTree],
    *,
    margin: float = 0.0,
    continuation: str = "path",
    pairing: str = "all",
    min_visits: int = 1,
    no_effect_pattern: str | None = None,
    log: bool = True,
) -> PairMiningResult:
    """Mine divergence-point pairs from every tree.

    Args:
        margin: a pair needs ``mean(chosen) - mean(rejected) > margin`` (default 0: any difference).
        continuation: ``"path"`` (default) uses the child's step and the best / worst path below it;
            ``"step"`` uses the child's step only.
        pairing: ``"all"`` (default) pairs every two siblings that differ; ``"best_vs_worst"``
            keeps one pair per divergence point.
        min_visits: children seen fewer times are not compared.
        no_effect_pattern: a regular expression matching the environment's answers to actions that
            change nothing (see ``trainers.envs.scienceworld.NO_EFFECT_PATTERN``). A child whose action
            had no effect is never the chosen side: the next-best sibling is, if it still beats the
            rejected side.

    Zero pairs is not an error here; the result's :meth:`~PairMiningResult.explain` says why and is
    logged as a warning. :class:`~trainers.TreeDPOTrainer` raises on an empty pair set.
    """
    if isinstance(trees, TrajectoryTree):
        trees = {trees.task_id: trees}
    elif isinstance(trees, TrajectoryForest):
        trees = trees.trees
    result = PairMiningResult()
    for task_id, tree in trees.items():
        pairs, reason = mine_tree_pairs(
            tree,
            margin=margin,
            continuation=continuation,
            pairing=pairing,
            min_visits=min_visits,
            no_effect_pattern=no_effect_pattern,
        )
        result.pairs.extend(pairs)
        result.counts[task_id] = len(pairs)
        if reason:
            result.reasons[task_id] = reason
    if log:
        (logger.warning if not result.pairs else logger.info)(result.explain())
    return result
