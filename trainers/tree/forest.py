"""A forest of trajectory trees (one per ``task_id``): building, the node table, disk and Hub I/O."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from trainers.data.schema import validate_row

from .similarity import EmbedFn, _Similarity
from .steps import parse_steps
from .trajectory_tree import TrajectoryTree, node_features

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


__all__ = ["TREE_CONFIG_NAME", "TrajectoryForest", "build_forest"]
