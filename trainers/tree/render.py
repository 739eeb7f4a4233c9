"""PNG pictures of trajectory trees (matplotlib, Agg): nodes coloured by mean outcome."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .tree import TrajectoryForest, TrajectoryTree

__all__ = ["render_forest", "render_tree"]


def _layout(tree: TrajectoryTree) -> dict[int, tuple[float, float]]:
    """Leaves spread left to right in depth-first order; a parent sits above its children's centre."""
    positions: dict[int, tuple[float, float]] = {}
    next_x = [0.0]

    stack = [(0, False)]
    while stack:  # iterative post-order so deep trees do not hit the recursion limit
        node_id, expanded = stack.pop()
        node = tree.nodes[node_id]
        if not node.children:
            positions[node_id] = (next_x[0], -node.depth)
            next_x[0] += 1.0
        elif expanded:
            xs = [positions[c][0] for c in node.children]
            positions[node_id] = ((min(xs) + max(xs)) / 2, -node.depth)
        else:
            stack.append((node_id, True))
            stack.extend((c, False) for c in reversed(node.children))
    return positions


def render_tree(
    tree: TrajectoryTree,
    path: str | os.PathLike,
    *,
    highlight: Sequence[int] | None = None,
    title: str | None = None,
    max_labels: int = 40,
    label_chars: int = 28,
) -> Path:
    """Draw ``tree`` into a PNG at ``path``; return the path.

    Colour is the node's mean outcome (red 0 -> green 1), size grows with visits. ``highlight``
    (e.g. an MCTS best path) is drawn as a thick blue line. Actions label the nodes when the tree
    has at most ``max_labels`` nodes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    positions = _layout(tree)
    n_leaves = max(1, sum(1 for n in tree.nodes if not n.children))
    width = min(40.0, max(6.0, 0.6 * n_leaves))
    height = min(30.0, max(4.0, 0.9 * (tree.depth + 1)))
    fig, ax = plt.subplots(figsize=(width, height))
    cmap, norm = colormaps["RdYlGn"], Normalize(0.0, 1.0)
    for node in tree.nodes[1:]:
        x0, y0 = positions[node.parent_id]
        x1, y1 = positions[node.node_id]
        ax.plot([x0, x1], [y0, y1], color="0.7", linewidth=0.8, zorder=1)
    if highlight:
        chain = [0, *highlight]
        ax.plot(
            [positions[i][0] for i in chain],
            [positions[i][1] for i in chain],
            color="tab:blue",
            linewidth=3,
            zorder=2,
            label="highlighted path",
        )
        ax.legend(loc="lower right")
    max_visits = max(n.visits for n in tree.nodes) or 1
    xs = [positions[n.node_id][0] for n in tree.nodes]
    ys = [positions[n.node_id][1] for n in tree.nodes]
    sizes = [30 + 270 * (n.visits / max_visits) for n in tree.nodes]
    colors = [cmap(norm(n.mean_outcome)) for n in tree.nodes]
    ax.scatter(xs, ys, s=sizes, c=colors, edgecolors="black", linewidths=0.5, zorder=3)
    if len(tree.nodes) <= max_labels:
        for node in tree.nodes[1:]:
            label = node.action if len(node.action) <= label_chars else node.action[: label_chars - 1] + "…"
            x, y = positions[node.node_id]
            ax.annotate(
                f"{label}\n{node.mean_outcome:.2f} ({node.visits})",
                (x, y),
                textcoords="offset points",
                xytext=(0, 8),
                ha="center",
                fontsize=7,
            )
    mappable = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(mappable, ax=ax, label="mean outcome G(e)")
    summary = tree.summary()
    ax.set_title(
        title
        or f"task {tree.task_id}: {summary['trajectories']} trajectories, {summary['nodes']} nodes, "
        f"depth {summary['depth']}"
    )
    ax.set_ylabel("depth (steps)")
    ax.set_xticks([])
    ax.set_yticks(sorted({-d for d in range(tree.depth + 1)}))
    ax.set_yticklabels([str(-t) for t in sorted({-d for d in range(tree.depth + 1)})])
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def render_forest(
    forest: TrajectoryForest,
    directory: str | os.PathLike,
    *,
    max_trees: int = 20,
    highlights: dict[str, Sequence[int]] | None = None,
) -> list[Path]:
    """One PNG per task (the first ``max_trees``), named ``tree-<task_id>.png``."""
    directory = Path(directory)
    paths = []
    for index, (task_id, tree) in enumerate(forest.trees.items()):
        if index >= max_trees:
            break
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in task_id) or "task"
        paths.append(render_tree(tree, directory / f"tree-{safe}.png", highlight=(highlights or {}).get(task_id)))
    return paths
