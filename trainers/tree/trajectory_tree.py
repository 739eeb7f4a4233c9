"""One task's trajectory tree: :class:`TreeNode`, :class:`TrajectoryTree` and the node-table schema.

The merge rules are described in :mod:`trainers.tree.tree`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trainers.data.schema import validate_row

from .similarity import EmbedFn, _Similarity
from .steps import Step, parse_steps, trajectory_outcome

SIMILARITY_ON = ("observation", "observation+thought")


@dataclass(slots=True)
class TreeNode:
    """One node. The root (``node_id == 0``) has empty action/thought; ``observation`` is the instruction."""

    node_id: int
    parent_id: int
    depth: int
    observation: str
    thought: str
    action: str
    content: str
    state_group: int = 0
    visits: int = 0
    total_outcome: float = 0.0
    trajectory_ids: list[str] = field(default_factory=list)
    children: list[int] = field(default_factory=list)

    @property
    def mean_outcome(self) -> float:
        return self.total_outcome / self.visits if self.visits else 0.0


class TrajectoryTree:
    """The merged explorations of one task. Build with :meth:`add_trajectory` or :func:`build_forest`."""

    def __init__(
        self,
        task_id: str,
        system: str = "",
        instruction: str = "",
        *,
        similarity_threshold: float = 0.9,
        similarity_on: str = "observation+thought",
    ):
        if similarity_on not in SIMILARITY_ON:
            raise ValueError(f"similarity_on must be one of {SIMILARITY_ON}, got {similarity_on!r}")
        self.task_id = task_id
        self.system = system
        self.instruction = instruction
        self.similarity_threshold = similarity_threshold
        self.similarity_on = similarity_on
        self.nodes: list[TreeNode] = [TreeNode(0, -1, 0, instruction, "", "", system)]
        # (parent, action) -> children with that action, so a merge only compares like actions
        self._by_action: dict[tuple[int, str], list[int]] = {}
        self._n_groups: dict[int, int] = {}
        self.trajectory_ids: list[str] = []

    # ------------------------------------------------------------------------------ structure
    @property
    def root(self) -> TreeNode:
        return self.nodes[0]

    def __len__(self) -> int:
        return len(self.nodes)

    def children(self, node_id: int) -> list[TreeNode]:
        return [self.nodes[c] for c in self.nodes[node_id].children]

    def leaves(self) -> list[TreeNode]:
        return [n for n in self.nodes if not n.children and n.node_id != 0]

    @property
    def depth(self) -> int:
        return max(n.depth for n in self.nodes)

    def path_to(self, node_id: int) -> list[int]:
        """Node ids from the first step down to ``node_id`` (the root excluded)."""
        path = []
        while node_id > 0:
            path.append(node_id)
            node_id = self.nodes[node_id].parent_id
        return path[::-1]

    def step_text(self, observation: str, thought: str) -> str:
        return observation if self.similarity_on == "observation" else f"{observation}\n{thought}"

    def node_text(self, node: TreeNode) -> str:
        return self.step_text(node.observation, node.thought)

    def prompt_messages(self) -> list[dict[str, str]]:
        """The system prompt as a one-message list (empty without one); the instruction is the
        first step's observation, which :meth:`messages_for_path` emits."""
        return [{"role": "system", "content": self.system}] if self.system else []

    def messages_for_path(
        self, node_ids: Sequence[int], *, include_first_observation: bool = True
    ) -> list[dict[str, str]]:
        """The conversation of a path of consecutive nodes: (user observation, assistant step) pairs."""
        messages: list[dict[str, str]] = []
        for position, node_id in enumerate(node_ids):
            node = self.nodes[node_id]
            if position > 0 or include_first_observation:
                messages.append({"role": "user", "content": node.observation})
            messages.append({"role": "assistant", "content": node.content})
        return messages

    # ------------------------------------------------------------------------------ building
    def add_trajectory(
        self,
        row: Mapping[str, Any],
        similarity: _Similarity | EmbedFn | Any | None = None,
        *,
        outcome: float | None = None,
        score_key: str = "final_score",
        index: int | None = None,
        _parsed: tuple[str, str, list[Step]] | None = None,
    ) -> list[int]:
        """Merge one trajectory row into the tree; return the node ids of its path.

        ``similarity`` is a shared similarity object (what :func:`build_forest` passes), an
        embedding callable / :class:`~trainers.embeddings.EmbeddingCache`, or ``None`` for MiniLM.
        """
        if _parsed is None:
            validate_row(row, index)
        if row.get("task_id", "") != self.task_id and row.get("task_id"):
            raise ValueError(
                f"row {index} (id={row.get('id')!r}), field 'task_id': {row['task_id']!r} "
                f"does not belong in the tree of task {self.task_id!r}"
            )
        if not isinstance(similarity, _Similarity):
            similarity = _Similarity(similarity, self.similarity_threshold)
        system, instruction, steps = _parsed if _parsed is not None else parse_steps(row["messages"])
        if len(self.nodes) == 1 and not self.trajectory_ids:
            self.system, self.instruction = system, instruction
            self.root.observation, self.root.content = instruction, system
        g = trajectory_outcome(row, score_key, index) if outcome is None else float(outcome)
        traj_id = str(row.get("id") or f"traj-{len(self.trajectory_ids)}")
        similarity.ensure([t for s in steps for t in (self.step_text(s.observation, s.thought), s.observation)])

        node = self.root
        self._visit(node, g, traj_id)
        path = []
        for step in steps:
            node = self._child_for(node, step, similarity)
            self._visit(node, g, traj_id)
            path.append(node.node_id)
        self.trajectory_ids.append(traj_id)
        return path

    @staticmethod
    def _visit(node: TreeNode, g: float, traj_id: str) -> None:
        node.visits += 1
        node.total_outcome += g
        node.trajectory_ids.append(traj_id)

    def _child_for(self, parent: TreeNode, step: Step, similarity: _Similarity) -> TreeNode:
        text = self.step_text(step.observation, step.thought)
        best, best_score = None, -math.inf
        for child_id in self._by_action.get((parent.node_id, step.action), ()):
            child = self.nodes[child_id]
            child_text = self.node_text(child)
            if child_text == text:
                return child
            score = similarity.score(child_text, text)
            if score >= similarity.threshold - 1e-6 and score > best_score:
                best, best_score = child, score
        if best is not None:
            return best
        group = None
        for sibling_id in parent.children:
            if similarity.similar(self.nodes[sibling_id].observation, step.observation):
                group = self.nodes[sibling_id].state_group
                break
        if group is None:
            group = self._n_groups.get(parent.node_id, 0)
            self._n_groups[parent.node_id] = group + 1
        child = TreeNode(
            len(self.nodes),
            parent.node_id,
            parent.depth + 1,
            step.observation,
            step.thought,
            step.action,
            step.content,
            group,
        )
        self.nodes.append(child)
        parent.children.append(child.node_id)
        self._by_action.setdefault((parent.node_id, step.action), []).append(child.node_id)
        return child

    # ------------------------------------------------------------------------------ table
    def to_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "task_id": self.task_id,
                "node_id": n.node_id,
                "parent_id": n.parent_id,
                "depth": n.depth,
                "state_group": n.state_group,
                "observation": n.observation,
                "thought": n.thought,
                "action": n.action,
                "content": n.content,
                "visits": n.visits,
                "total_outcome": float(n.total_outcome),
                "mean_outcome": float(n.mean_outcome),
                "trajectory_ids": list(n.trajectory_ids),
            }
            for n in self.nodes
        ]

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[Mapping[str, Any]],
        *,
        similarity_threshold: float = 0.9,
        similarity_on: str = "observation+thought",
    ) -> TrajectoryTree:
        rows = sorted(rows, key=lambda r: r["node_id"])
        if not rows or rows[0]["node_id"] != 0 or rows[0]["parent_id"] != -1:
            task = rows[0]["task_id"] if rows else "?"
            raise ValueError(f"node table of task {task!r}: node 0 must be the root (parent_id -1)")
        root = rows[0]
        tree = cls(
            root["task_id"],
            root["content"],
            root["observation"],
            similarity_threshold=similarity_threshold,
            similarity_on=similarity_on,
        )
        tree.nodes = []
        for expected, r in enumerate(rows):
            if r["node_id"] != expected:
                raise ValueError(
                    f"node table of task {r['task_id']!r}: node ids must be 0..N-1, "
                    f"found {r['node_id']} at position {expected}"
                )
            node = TreeNode(
                r["node_id"],
                r["parent_id"],
                r["depth"],
                r["observation"],
                r["thought"],
                r["action"],
                r["content"],
                r["state_group"],
                r["visits"],
                float(r["total_outcome"]),
                list(r["trajectory_ids"]),
            )
            tree.nodes.append(node)
            if node.parent_id >= 0:
                if node.parent_id >= node.node_id:
                    raise ValueError(
                        f"node table of task {r['task_id']!r}, node {node.node_id}: "
                        f"parent {node.parent_id} must come first"
                    )
                tree.nodes[node.parent_id].children.append(node.node_id)
                tree._by_action.setdefault((node.parent_id, node.action), []).append(node.node_id)
                tree._n_groups[node.parent_id] = max(tree._n_groups.get(node.parent_id, 0), node.state_group + 1)
        tree.trajectory_ids = list(tree.nodes[0].trajectory_ids)
        return tree

    def summary(self) -> dict[str, Any]:
        leaves = self.leaves()
        return {
            "task_id": self.task_id,
            "trajectories": self.root.visits,
            "nodes": len(self.nodes) - 1,
            "leaves": len(leaves),
            "depth": self.depth,
            "branching_nodes": sum(len(n.children) > 1 for n in self.nodes),
            "mean_outcome": self.root.mean_outcome,
        }


def node_features():
    """The node table's schema: one row per node. The root row (``node_id`` 0, ``parent_id`` -1)
    holds the instruction in ``observation`` and the system prompt in ``content``."""
    import datasets

    return datasets.Features(
        {
            "task_id": datasets.Value("string"),
            "node_id": datasets.Value("int32"),
            "parent_id": datasets.Value("int32"),
            "depth": datasets.Value("int32"),
            "state_group": datasets.Value("int32"),
            "observation": datasets.Value("string"),
            "thought": datasets.Value("string"),
            "action": datasets.Value("string"),
            "content": datasets.Value("string"),
            "visits": datasets.Value("int64"),
            "total_outcome": datasets.Value("float64"),
            "mean_outcome": datasets.Value("float64"),
            "trajectory_ids": datasets.List(datasets.Value("string")),
        }
    )


__all__ = ["SIMILARITY_ON", "TrajectoryTree", "TreeNode", "node_features"]
