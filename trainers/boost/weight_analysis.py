"""Analysis of learned trajectory weights (BOOST figure 2).

* :func:`weights_dataset`: the final weight of every training trajectory as a dataset with columns
  ``id``, ``source``, ``weight`` and ``relative_change``. ``weight`` is the softmax of the head's
  logits over the *whole* training set times its size: the expected weight of a trajectory in a
  minibatch relative to uniform, so uniform = 1 and ``relative_change = weight - 1``.
* :func:`plot_relative_change` (figure 2, top): distribution of the relative change per source.
* :func:`plot_weight_vs_distance` (figure 2, bottom): each synthetic trajectory's relative change
  against its mean L1 distance, in embedding space, to its ``k`` (default 10) nearest real
  trajectories, with the Pearson correlation (the paper reports -0.26 / -0.49 / -0.10).
* :func:`analyze_weights`: all of the above into one folder (weights dataset with its card, PNGs,
  ``summary.json``), printing the correlation.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch


@torch.no_grad()
def weights_dataset(
    head, embeddings: torch.Tensor, ids: Sequence[str], sources: Sequence[str], batch_size: int = 4096
) -> datasets.Dataset:
    """``id, source, weight, relative_change`` for every row of ``embeddings`` (see the module docstring)."""
    if len(ids) != embeddings.shape[0] or len(sources) != embeddings.shape[0]:
        raise ValueError(f"{embeddings.shape[0]} embeddings but {len(ids)} ids and {len(sources)} sources")
    device = next(head.parameters()).device
    logits = torch.cat(
        [
            head(embeddings[i : i + batch_size].to(device)).float().cpu()
            for i in range(0, embeddings.shape[0], batch_size)
        ]
    )
    weight = torch.softmax(logits, dim=0) * logits.numel()
    return datasets.Dataset.from_dict(
        {
            "id": [str(i) for i in ids],
            "source": [str(s) for s in sources],
            "weight": weight.tolist(),
            "relative_change": (weight - 1.0).tolist(),
        }
    )


def mean_knn_l1_distance(
    queries: np.ndarray, references: np.ndarray, k: int = 10, exclude_self: bool = False
) -> np.ndarray:
    """Mean L1 distance of each query to its ``k`` nearest references (fewer if there are fewer)."""
    queries, references = np.asarray(queries, dtype=np.float64), np.asarray(references, dtype=np.float64)
    if references.shape[0] == 0:
        raise ValueError("no reference (real) trajectories to measure distances to")
    out = np.empty(queries.shape[0])
    for start in range(0, queries.shape[0], 256):
        block = np.abs(queries[start : start + 256, None, :] - references[None, :, :]).sum(-1)
        if exclude_self:
            block = np.where(block == 0, np.inf, block)
        kk = min(k, block.shape[1] - (1 if exclude_self else 0)) or 1
        nearest = np.sort(block, axis=1)[:, :kk]
        nearest = np.where(np.isfinite(nearest), nearest, np.nan)
        out[start : start + 256] = np.nanmean(nearest, axis=1)
    return out


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; NaN when either side is constant or there are fewer than 3 points."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size < 3 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_relative_change(weights: datasets.Dataset, path: str | os.PathLike, title: str = "") -> Path:
    """Histogram of the relative weight change from uniform, one colour per source (figure 2, top)."""
    plt = _plt()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    change = np.asarray(weights["relative_change"]) * 100
    sources = np.asarray(weights["source"])
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(change.min(), change.max(), 30) if change.max() > change.min() else 10
    for source, colour in zip(sorted(set(sources)), ("tab:blue", "tab:orange", "tab:green", "tab:red")):
        values = change[sources == source]
        ax.hist(
            values, bins=bins, alpha=0.6, color=colour, label=f"{source} (n={values.size}, mean {values.mean():+.2f}%)"
        )
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("relative weight change from uniform (%)")
    ax.set_ylabel("trajectories")
    ax.set_title(title or "Learned weights by source")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_weight_vs_distance(
    weights: datasets.Dataset,
    embeddings: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    k: int = 10,
    title: str = "",
) -> float:
    """Relative change of synthetic points vs mean L1 distance to their ``k`` nearest real points.

    Rows of ``embeddings`` align with ``weights``. Without synthetic rows, real rows are measured
    against the other real rows. Returns the Pearson correlation (also printed in the plot).
    """
    plt = _plt()
    emb = embeddings.detach().float().cpu().numpy() if isinstance(embeddings, torch.Tensor) else np.asarray(embeddings)
    sources = np.asarray(weights["source"])
    change = np.asarray(weights["relative_change"]) * 100
    real = sources != "synthetic"
    query = ~real if (~real).any() else real
    distance = mean_knn_l1_distance(emb[query], emb[real], k=k, exclude_self=not (~real).any())
    r = pearson(distance, change[query])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(distance, change[query], s=12, alpha=0.7, color="tab:orange" if (~real).any() else "tab:blue")
    if np.isfinite(r) and distance.size >= 2 and np.std(distance) > 0:
        slope, intercept = np.polyfit(distance, change[query], 1)
        xs = np.linspace(distance.min(), distance.max(), 50)
        ax.plot(xs, slope * xs + intercept, color="black", linewidth=1)
    ax.set_xlabel(f"mean L1 distance to {k} nearest real trajectories")
    ax.set_ylabel("relative weight change (%)")
    ax.set_title((title + "  " if title else "") + f"Pearson r = {r:+.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return r


def analyze_weights(
    head,
    embeddings: torch.Tensor,
    ids: Sequence[str],
    sources: Sequence[str],
    output_dir: str | os.PathLike,
    *,
    k: int = 10,
    title: str = "",
    card_fields: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the weights dataset (``weights/``, with a card), both figure-2 PNGs and ``summary.json``."""
    from ..data.hub_io import save_weights

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    weights = weights_dataset(head, embeddings, ids, sources)
    fields = {
        "extra_columns": {
            "source": "real or synthetic",
            "relative_change": "weight - 1 (relative change from uniform)",
        },
        "base_model": getattr(head, "base_model_id", ""),
        **(card_fields or {}),
    }
    save_weights(weights, output_dir / "weights", card_fields=fields)
    plot_relative_change(weights, output_dir / "relative_weight_change.png", title)
    r = plot_weight_vs_distance(weights, embeddings, output_dir / "weight_vs_distance.png", k=k, title=title)
    values = np.asarray(weights["weight"])
    summary: dict[str, Any] = {
        "trajectories": len(weights),
        "pearson_weight_change_vs_distance": None if math.isnan(r) else r,
        "k_nearest": k,
        "n_eff": float(values.sum() ** 2 / (values**2).sum()),
        "weight_min": float(values.min()),
        "weight_max": float(values.max()),
    }
    for source in sorted(set(weights["source"])):
        mask = np.asarray(weights["source"]) == source
        summary[f"mean_relative_change_{source}"] = float(np.asarray(weights["relative_change"])[mask].mean())
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    print(
        f"[weights] Pearson r(relative weight change, mean L1 distance to {k} nearest real) = {r:+.3f} "
        f"over {len(weights)} trajectories"
    )
    return summary


__all__ = [
    "analyze_weights",
    "mean_knn_l1_distance",
    "pearson",
    "plot_relative_change",
    "plot_weight_vs_distance",
    "weights_dataset",
]
