"""Offline Monte Carlo tree search over a static trajectory tree (W2SG "MCTS distillation").

No environment is called. Each iteration selects from the root down to a leaf of the static
tree: an unvisited child first (in insertion order), otherwise the child maximising

    UCB(v) = r(v) / n(v) + c * sqrt(ln n(parent) / n(v))

The leaf's value is its empirical mean outcome (the mean G(e) of the weak trajectories that end
there), backed up along the path into the search statistics ``r`` (sum of values) and ``n``
(visits), which are separate from the tree's own exploration counts. The best path is then read
greedily by ``r / n`` from the root.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from tqdm.auto import tqdm

from trainers.data.schema import make_trajectory

from .tree import TrajectoryForest, TrajectoryTree

__all__ = [
    "MCTSResult",
    "best_path",
    "best_path_rows",
    "mcts_search",
    "ranked_paths",
    "run_mcts",
    "select_child",
    "ucb",
]


def ucb(value_sum: float, visits: int, parent_visits: int, exploration_constant: float) -> float:
    """Upper confidence bound of a child; ``inf`` for an unvisited one."""
    if visits == 0:
        return math.inf
    return value_sum / visits + exploration_constant * math.sqrt(math.log(max(parent_visits, 1)) / visits)


@dataclass
class MCTSResult:
    """Search statistics of one tree and the best path read from them."""

    tree: TrajectoryTree
    value_sums: list[float]
    visits: list[int]
    path: list[int]
    iterations: int
    exploration_constant: float

    def mean(self, node_id: int) -> float:
        return self.value_sums[node_id] / self.visits[node_id] if self.visits[node_id] else 0.0

    @property
    def value(self) -> float:
        """The empirical mean outcome at the end of the best path."""
        return self.tree.nodes[self.path[-1]].mean_outcome if self.path else 0.0


def select_child(tree: TrajectoryTree, node_id: int, value_sums, visits, exploration_constant: float) -> int:
    """The child of ``node_id`` that selection moves to: first unvisited, else highest UCB (first on ties)."""
    children = tree.nodes[node_id].children
    parent_visits = visits[node_id]
    best, best_score = children[0], -math.inf
    for child in children:
        if visits[child] == 0:
            return child
        score = ucb(value_sums[child], visits[child], parent_visits, exploration_constant)
        if score > best_score:
            best, best_score = child, score
    return best


def mcts_search(tree: TrajectoryTree, iterations: int = 1000, exploration_constant: float = 1.41) -> MCTSResult:
    """Run ``iterations`` selection / evaluation / backup rounds on ``tree``."""
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if exploration_constant < 0:
        raise ValueError(f"exploration_constant must be >= 0, got {exploration_constant}")
    n = len(tree.nodes)
    value_sums = [0.0] * n
    visits = [0] * n
    nodes = tree.nodes
    for _ in range(iterations):
        path = [0]
        node_id = 0
        while nodes[node_id].children:
            node_id = select_child(tree, node_id, value_sums, visits, exploration_constant)
            path.append(node_id)
        value = nodes[node_id].mean_outcome
        for visited in path:
            visits[visited] += 1
            value_sums[visited] += value
    result = MCTSResult(tree, value_sums, visits, [], iterations, exploration_constant)
    result.path = best_path(tree, value_sums, visits)
    return result


def best_path(tree: TrajectoryTree, value_sums, visits) -> list[int]:
    """Greedy path from the root by search mean ``r / n`` (ties: more visits, then insertion order).

    Children the search never reached fall back to their empirical mean outcome, so a short search
    still returns a full path.
    """
    path = []
    node_id = 0
    while tree.nodes[node_id].children:

        def key(child):
            mean = value_sums[child] / visits[child] if visits[child] else tree.nodes[child].mean_outcome
            return (-mean, -visits[child], child)

        node_id = min(tree.nodes[node_id].children, key=key)
        path.append(node_id)
    return path


def ranked_paths(result: MCTSResult, k: int = 1) -> list[list[int]]:
    """Up to ``k`` root-to-leaf paths of a searched tree, best first.

    The first is the greedy best path (:func:`best_path`); the others end at the remaining leaves,
    ordered by their empirical mean outcome, then by search visits, then by node id. Every path
    is a distinct branch of the tree, so ``k`` paths of one task never repeat one another.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not result.path:
        return []
    tree = result.tree
    paths = [list(result.path)]
    leaves = [node.node_id for node in tree.nodes[1:] if not node.children and node.node_id != result.path[-1]]
    leaves.sort(key=lambda n: (-tree.nodes[n].mean_outcome, -result.visits[n], n))
    for leaf in leaves[: k - 1]:
        path = [leaf]
        while tree.nodes[path[-1]].parent_id > 0:
            path.append(tree.nodes[path[-1]].parent_id)
        paths.append(path[::-1])
    return paths


def best_path_rows(
    results: Iterable[MCTSResult], *, min_path_value: float | None = 0.0, paths_per_task: int = 1
) -> list[dict]:
    """Trajectory-schema rows (``source="mcts"``) of the best paths, for SFT.

    ``paths_per_task`` best paths of every tree (:func:`ranked_paths`); paths whose value (the
    empirical mean outcome at their leaf) is not above ``min_path_value`` are left out (a path
    that still scored 0 has nothing to teach); ``None`` keeps all.
    """
    rows = []
    for result in results:
        tree = result.tree
        for rank, path in enumerate(ranked_paths(result, paths_per_task)):
            value = tree.nodes[path[-1]].mean_outcome
            if min_path_value is not None and value <= min_path_value:
                continue
            messages = tree.prompt_messages() + tree.messages_for_path(path)
            rewards = [0.0] * (len(path) - 1) + [value]
            rows.append(
                make_trajectory(
                    messages,
                    rewards,
                    id=f"mcts-{tree.task_id}" + (f"-{rank}" if rank else ""),
                    task_id=tree.task_id,
                    source="mcts",
                    # a full outcome only: a path that ends at partial credit (0.58) is no success
                    success=value >= 1.0,
                    metadata={
                        "score": value,
                        "rank": rank,
                        "node_ids": path,
                        "search_mean": result.mean(path[-1]),
                        "iterations": result.iterations,
                        "exploration_constant": result.exploration_constant,
                    },
                )
            )
    return rows


def run_mcts(
    forest: TrajectoryForest | TrajectoryTree | Iterable[TrajectoryTree],
    *,
    iterations: int = 1000,
    exploration_constant: float = 1.41,
    show_progress: bool = True,
) -> list[MCTSResult]:
    """Search every tree of a forest (or a single tree / iterable of trees)."""
    if isinstance(forest, TrajectoryTree):
        trees = [forest]
    elif isinstance(forest, TrajectoryForest):
        trees = list(forest.trees.values())
    else:
        trees = list(forest)
    return [
        mcts_search(tree, iterations, exploration_constant)
        for tree in tqdm(trees, desc="MCTS over trajectory trees", disable=not show_progress or len(trees) < 2)
    ]
