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
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainers.data.schema import metadata_of, validate_row
from trainers.envs.base import extract_action

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

SIMILARITY_ON = ("observation", "observation+thought")


@dataclass(slots=True)
class Step:
    """One assistant turn of a trajectory, as the tree sees it."""

    observation: str
    thought: str
    action: str
    content: str  # the assistant message verbatim, so training text reproduces what the agent said


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


def _split_thought(content: str) -> str:
    marker = content.rfind("Action:")
    thought = content[:marker] if marker >= 0 else ""
    thought = thought.strip()
    if thought.startswith("Thought:"):
        thought = thought[len("Thought:") :].strip()
    return thought


def parse_steps(messages: Sequence[Mapping[str, str]]) -> tuple[str, str, list[Step]]:
    """Return ``(system, instruction, steps)`` of a trajectory's messages.

    ``instruction`` is the first user message; each step's observation is the user message before
    its assistant turn (the instruction for the first step).
    """
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    instruction = next((m["content"] for m in messages if m["role"] == "user"), "")
    steps: list[Step] = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        previous = messages[index - 1] if index > 0 else None
        observation = previous["content"] if previous is not None and previous["role"] == "user" else ""
        content = message["content"]
        steps.append(Step(observation, _split_thought(content), extract_action(content), content))
    return system, instruction, steps


def trajectory_outcome(row: Mapping[str, Any], score_key: str = "final_score", index: int | None = None) -> float:
    """G(e) of a trajectory row, read from its metadata.

    In order: ``metadata[score_key]`` (exploration rows store G(e) in [0, 1] as
    ``"final_score"``); the environment's ``"normalized_score"``; its ``"score"`` when that lies in
    [0, 1] (ScienceWorld's raw ``score`` is 0-100 and is skipped); else the sum of the rewards.
    """
    meta = metadata_of(row)
    where = f"row {index}" if index is not None else "row"
    if row.get("id"):
        where += f" (id={row['id']!r})"
    field_name, value = score_key, meta.get(score_key)
    if value is None and meta.get("normalized_score") is not None:
        field_name, value = "normalized_score", meta["normalized_score"]
    if value is None and isinstance(meta.get("score"), (int, float)) and 0.0 <= float(meta["score"]) <= 1.0:
        field_name, value = "score", meta["score"]
    if value is None:
        return float(sum(row["rewards"]))
    try:
        value = float(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}, field 'metadata.{field_name}': outcome must be a number, got {value!r}") from error
    if not math.isfinite(value):
        raise ValueError(f"{where}, field 'metadata.{field_name}': outcome must be finite, got {value!r}")
    return value


EmbedFn = Callable[[list[str]], np.ndarray]


class _Similarity:
    """Similarity test with an exact-string shortcut and cached unit embeddings."""

    def __init__(self, embed: EmbedFn | Any | None, threshold: float):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"similarity_threshold must be in [0, 1], got {threshold}")
        self.threshold = threshold
        if embed is None:
            from trainers.embeddings import EmbeddingCache

            embed = EmbeddingCache()
        self._encode = embed.encode if hasattr(embed, "encode") else embed
        self.vectors: dict[str, np.ndarray] = {}
        self.encoded_strings = 0
        self.seconds = 0.0

    def ensure(self, texts: Iterable[str], show_progress_bar: bool = False) -> None:
        import time

        missing = list(dict.fromkeys(t for t in texts if t not in self.vectors))
        if not missing:
            return
        start = time.perf_counter()
        try:
            vectors = self._encode(missing, show_progress_bar=show_progress_bar)
        except TypeError:  # plain callables do not take the progress flag
            vectors = self._encode(missing)
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape[0] != len(missing):
            raise ValueError(f"the embedding function returned {vectors.shape[0]} vectors for {len(missing)} strings")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
        self.vectors.update(zip(missing, vectors))
        self.encoded_strings += len(missing)
        self.seconds += time.perf_counter() - start

    def score(self, a: str, b: str) -> float:
        if a == b:
            return 1.0
        return float(np.dot(self.vectors[a], self.vectors[b]))

    def similar(self, a: str, b: str) -> bool:
        # a tiny tolerance so that "cosine exactly at the threshold" is not lost to float rounding
        return a == b or self.score(a, b) >= self.threshold - 1e-6


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


TREE_CONFIG_NAME = "tree_config.json"


class TrajectoryForest:
    """One :class:`TrajectoryTree` per task, with the settings they were built with."""

    def __init__(
        self,
        trees: Mapping[str, TrajectoryTree] | None = None,
        *,
        similarity_threshold: float = 0.9,
        similarity_on: str = "observation+thought",
        score_key: str = "final_score",
        embedding_model: str = "all-MiniLM-L6-v2",
    ):
        self.trees: dict[str, TrajectoryTree] = dict(trees or {})
        self.similarity_threshold = similarity_threshold
        self.similarity_on = similarity_on
        self.score_key = score_key
        self.embedding_model = embedding_model
        #: timing of the last build (seconds): embedding and merging measured apart
        self.build_stats: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self.trees)

    def __iter__(self):
        return iter(self.trees.values())

    def __getitem__(self, task_id: str) -> TrajectoryTree:
        try:
            return self.trees[task_id]
        except KeyError:
            raise KeyError(
                f"no tree for task {task_id!r}; the forest has {len(self.trees)} tasks: {sorted(self.trees)[:10]}"
            ) from None

    @property
    def num_nodes(self) -> int:
        return sum(len(t) - 1 for t in self.trees.values())

    @property
    def num_trajectories(self) -> int:
        return sum(t.root.visits for t in self.trees.values())

    def config(self) -> dict[str, Any]:
        return {
            "similarity_threshold": self.similarity_threshold,
            "similarity_on": self.similarity_on,
            "score_key": self.score_key,
            "embedding_model": self.embedding_model,
        }

    # ------------------------------------------------------------------------------ datasets
    def to_dataset(self):
        import datasets

        rows = [row for tree in self.trees.values() for row in tree.to_rows()]
        return datasets.Dataset.from_list(rows, features=node_features())

    @classmethod
    def from_dataset(cls, dataset, **config) -> TrajectoryForest:
        missing = set(node_features()) - set(dataset.column_names)
        if missing:
            raise ValueError(f"not a tree node table: missing columns {sorted(missing)}")
        by_task: dict[str, list[dict[str, Any]]] = {}
        for row in dataset:
            by_task.setdefault(row["task_id"], []).append(row)
        forest = cls(**config)
        for task_id, rows in by_task.items():
            forest.trees[task_id] = TrajectoryTree.from_rows(
                rows, similarity_threshold=forest.similarity_threshold, similarity_on=forest.similarity_on
            )
        return forest

    def card(self, repo_id: str | None = None):
        from trainers.hub import render_card

        sizes = [t.summary() for t in self.trees.values()]
        n_nodes = self.num_nodes
        size_category = (
            "n<1K"
            if n_nodes < 1000
            else "1K<n<10K"
            if n_nodes < 10000
            else "10K<n<100K"
            if n_nodes < 100000
            else "100K<n<1M"
        )
        return render_card(
            "tree_dataset_card",
            repo_type="dataset",
            repo_id=repo_id or "",
            pretty_name="Trajectory trees",
            tags=["trainers", "trajectory-tree", "weak-to-strong", "agents"],
            size_categories=[size_category],
            num_tasks=len(self.trees),
            num_nodes=n_nodes,
            num_trajectories=self.num_trajectories,
            mean_depth=round(sum(s["depth"] for s in sizes) / max(len(sizes), 1), 2),
            mean_outcome=round(sum(s["mean_outcome"] for s in sizes) / max(len(sizes), 1), 4),
            **self.config(),
        )

    def save_to_disk(self, directory: str | os.PathLike) -> Path:
        """Save the node table, the build settings and a card into ``directory`` atomically."""
        from trainers.hub import atomic_save

        dataset = self.to_dataset()
        with atomic_save(directory) as staging:
            dataset.save_to_disk(str(staging / "nodes"))
            (staging / TREE_CONFIG_NAME).write_text(json.dumps(self.config(), indent=2), encoding="utf-8")
            self.card().save(str(staging / "README.md"))
        return Path(directory)

    @classmethod
    def load_from_disk(cls, directory: str | os.PathLike) -> TrajectoryForest:
        import datasets

        directory = Path(directory)
        nodes = directory / "nodes"
        if not nodes.is_dir():
            raise FileNotFoundError(
                f"{str(directory)!r} is not a saved trajectory forest: no 'nodes' folder "
                "(save with TrajectoryForest.save_to_disk)"
            )
        config_path = directory / TREE_CONFIG_NAME
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
        return cls.from_dataset(datasets.load_from_disk(str(nodes)), **config)

    def push_to_hub(self, repo_id: str, *, token: str | None = None, private: bool | None = None) -> str:
        """Push the node table as a dataset repo (``load_dataset(repo_id)`` reads it back) with its card.

        The data goes through ``Dataset.push_to_hub``; the card and build settings follow. The
        forest in memory is never modified, so a failed push can simply be retried.
        """
        import tempfile

        from trainers.hub import HubPushError, push_folder

        try:
            self.to_dataset().push_to_hub(repo_id, token=token, private=private)
        except Exception as error:  # noqa: BLE001
            raise HubPushError(".", repo_id, "dataset", "uploading the node table", error) from error
        folder = Path(tempfile.mkdtemp(prefix="trainers-tree-card-"))
        (folder / TREE_CONFIG_NAME).write_text(json.dumps(self.config(), indent=2), encoding="utf-8")
        self.card(repo_id).save(str(folder / "README.md"))
        return push_folder(
            folder, repo_id, repo_type="dataset", token=token, private=private, commit_message="Tree card and settings"
        )

    @classmethod
    def from_hub(cls, repo_id: str, **load_kwargs) -> TrajectoryForest:
        import datasets

        dataset = datasets.load_dataset(repo_id, split="train", **load_kwargs)
        return cls.from_dataset(dataset)

    def summary(self) -> list[dict[str, Any]]:
        return [tree.summary() for tree in self.trees.values()]


def build_forest(
    trajectories: Iterable[Mapping[str, Any]],
    *,
    similarity_threshold: float = 0.9,
    similarity_on: str = "observation+thought",
    embedder: EmbedFn | Any | None = None,
    score_key: str = "final_score",
    show_progress: bool = True,
) -> TrajectoryForest:
    """Build one tree per ``task_id`` from trajectory rows (a list or a ``datasets.Dataset``).

    All unique step texts and observations are embedded first in ONE batched pass (each unique
    string once), then the trees are merged without further encoder calls. ``embedder`` is an
    :class:`~trainers.embeddings.EmbeddingCache` (default: all-MiniLM-L6-v2), an object with
    ``encode(list[str])``, or a callable returning one vector per string.
    """
    import time

    from tqdm.auto import tqdm

    rows = list(trajectories)
    if not rows:
        raise ValueError("build_forest got no trajectories")
    similarity = _Similarity(embedder, similarity_threshold)
    forest = TrajectoryForest(
        similarity_threshold=similarity_threshold, similarity_on=similarity_on, score_key=score_key
    )
    start = time.perf_counter()
    parsed = []
    texts: dict[str, None] = {}
    probe = TrajectoryTree("", similarity_on=similarity_on)
    for index, row in enumerate(rows):
        validate_row(row, index)
        system, instruction, steps = parse_steps(row["messages"])
        parsed.append((system, instruction, steps))
        for step in steps:
            texts[probe.step_text(step.observation, step.thought)] = None
            texts[step.observation] = None
    parse_seconds = time.perf_counter() - start
    similarity.ensure(list(texts), show_progress_bar=show_progress and len(texts) > 1000)
    start = time.perf_counter()
    for index, row in enumerate(tqdm(rows, desc="Building trajectory trees", disable=not show_progress)):
        task_id = str(row.get("task_id") or "")
        tree = forest.trees.get(task_id)
        if tree is None:
            system, instruction, _ = parsed[index]
            tree = forest.trees[task_id] = TrajectoryTree(
                task_id, system, instruction, similarity_threshold=similarity_threshold, similarity_on=similarity_on
            )
        tree.add_trajectory(row, similarity, score_key=score_key, index=index, _parsed=parsed[index])  # validated above
    forest.build_stats = {
        "parse_seconds": parse_seconds,
        "embedding_seconds": similarity.seconds,
        "embedded_strings": float(similarity.encoded_strings),
        "merge_seconds": time.perf_counter() - start,
    }
    return forest
