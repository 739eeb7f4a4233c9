"""The BOOST category split protocol (BOOST appendix E.4) and the synthetic-data guard.

:func:`split_by_category` partitions *real* trajectories by task category:

1. all distinct categories are collected (sorted, so the input order does not matter);
2. a seeded shuffle assigns ``round(train_category_fraction * n_categories)`` of them to train;
   every trajectory of a train category goes to ``train``;
3. inside each held-out category, trajectories (ordered by ``id``, then shuffled with a seed
   derived from the split seed and the category name) are divided ``val_split`` to ``val`` and the
   rest to ``eval``; both therefore cover the same held-out categories;
4. optionally (low-data regime) ``train`` is subsampled to ``low_data_fraction`` of its rows
   (paper: 0.025 twenty questions, 0.10 car dealer, 0.30 WebShop).

The result depends only on the set of rows (ids and categories) and the seed, so every method
trained on a given environment sees the same split. Synthetic trajectories are generated from
``train`` prefixes only (appendix E.4 step 4); :func:`attach_synthetic` enforces this through the
``parent_id`` each synthetic row records in its ``metadata``.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from .schema import TrajectoryValidationError, metadata_of

SPLIT_NAMES = ("train", "val", "eval")

#: BOOST paper values (appendix E.4, step 6) for ``low_data_fraction``.
PAPER_LOW_DATA_FRACTIONS = {"twenty_questions": 0.025, "car_dealer": 0.10, "webshop": 0.30}


class EmptySplitError(ValueError):
    """A category split left ``train``, ``val`` or ``eval`` without trajectories."""


@dataclass
class SplitReport:
    """What :func:`split_by_category` did; ``print(report)`` shows a table."""

    seed: int
    train_category_fraction: float
    val_split: float
    low_data_fraction: float | None
    train_categories: list[str]
    heldout_categories: list[str]
    sizes: dict[str, int]
    train_size_before_low_data: int
    per_category: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def plot(self, path: str | Path) -> Path:
        """Save a PNG bar chart of trajectories per category and split; returns the path."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        categories = self.train_categories + self.heldout_categories
        colors = {"train": "#4c72b0", "val": "#dd8452", "eval": "#55a868"}
        fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(categories) + 2), 4.5))
        bottom = [0] * len(categories)
        for name in SPLIT_NAMES:
            counts = [self.per_category[c][name] for c in categories]
            ax.bar(
                range(len(categories)), counts, bottom=bottom, label=f"{name} ({self.sizes[name]})", color=colors[name]
            )
            bottom = [b + c for b, c in zip(bottom, counts)]
        ax.set_xticks(range(len(categories)))
        ax.set_xticklabels(categories, rotation=60, ha="right", fontsize=8)
        ax.axvline(len(self.train_categories) - 0.5, color="grey", linestyle="--", linewidth=1)
        ax.set_ylabel("trajectories")
        low = f", low-data {self.low_data_fraction:g}" if self.low_data_fraction is not None else ""
        ax.set_title(
            f"Category split\nseed {self.seed}, train fraction {self.train_category_fraction:g}, "
            f"val split {self.val_split:g}{low}",
            fontsize=10,
        )
        ax.legend()
        fig.tight_layout()
        from trainers.plotting import save_figure

        return save_figure(fig, path)

    def __str__(self) -> str:
        width = max([len("category")] + [len(c) for c in self.per_category])
        lines = [
            f"Category split (seed={self.seed}, train_category_fraction={self.train_category_fraction}, "
            f"val_split={self.val_split}, low_data_fraction={self.low_data_fraction})",
            f"  {len(self.train_categories)} train categories, {len(self.heldout_categories)} held-out categories",
            f"  sizes: train={self.sizes['train']} (of {self.train_size_before_low_data} before low-data subsampling), "
            f"val={self.sizes['val']}, eval={self.sizes['eval']}",
            f"  {'category'.ljust(width)}  {'split':>8}  {'train':>6}  {'val':>6}  {'eval':>6}",
        ]
        for category in sorted(self.per_category):
            counts = self.per_category[category]
            kind = "train" if category in self.train_categories else "held-out"
            lines.append(
                f"  {category.ljust(width)}  {kind:>8}  {counts['train']:>6}  {counts['val']:>6}  {counts['eval']:>6}"
            )
        return "\n".join(lines)


def _category_rng(seed: int, category: str) -> np.random.Generator:
    # crc32 is stable across processes (unlike hash()), so the split is reproducible anywhere.
    return np.random.default_rng([seed, zlib.crc32(category.encode("utf-8"))])


def _check_fraction(name: str, value: float, *, allow_one: bool = False) -> None:
    upper_ok = value <= 1 if allow_one else value < 1
    if not (0 < value and upper_ok):
        bound = "(0, 1]" if allow_one else "(0, 1)"
        raise ValueError(f"{name} must be in {bound}, got {value!r}")


def split_by_category(
    dataset: datasets.Dataset,
    train_category_fraction: float = 0.6,
    val_split: float = 0.3,
    low_data_fraction: float | None = None,
    seed: int = 0,
    *,
    category_column: str = "category",
    return_report: bool = False,
):
    """Split real trajectories into ``train`` / ``val`` / ``eval`` by category (module docstring).

    Args:
        train_category_fraction: fraction of categories whose trajectories form ``train``
            (paper ``--train_task_frac`` = 0.6 for all three environments).
        val_split: fraction of each held-out category's trajectories that go to ``val``; the rest
            go to ``eval`` (paper ``--val_split`` = 0.3).
        low_data_fraction: keep only this fraction of ``train`` (paper low-data regime: 0.025
            twenty questions, 0.10 car dealer, 0.30 WebShop; ``None`` = high-data regime).
        seed: the split seed; fixed once per environment and shared by all methods.
        return_report: also return the :class:`SplitReport` (it is always attached to the result
            as ``.split_report`` as well).

    Raises:
        TrajectoryValidationError: a row without a category (names the row and its id).
        EmptySplitError: train, val or eval would be empty (says which and why).
        ValueError: synthetic rows in the input (attach them with :func:`attach_synthetic`).
    """
    _check_fraction("train_category_fraction", train_category_fraction)
    _check_fraction("val_split", val_split)
    if low_data_fraction is not None:
        _check_fraction("low_data_fraction", low_data_fraction, allow_one=True)
    if category_column not in dataset.column_names:
        raise TrajectoryValidationError(None, None, category_column, "missing column, which a category split needs")
    # datasets >= 4 returns lazy Column objects; materialise once for fast indexing
    categories_col = list(dataset[category_column])
    ids = list(dataset["id"]) if "id" in dataset.column_names else [None] * len(dataset)
    sources = list(dataset["source"]) if "source" in dataset.column_names else [None] * len(dataset)
    for index, (category, row_id, source) in enumerate(zip(categories_col, ids, sources)):
        if category is None or not str(category).strip():
            raise TrajectoryValidationError(
                index, row_id, category_column, "missing category, which a category split needs"
            )
        if source == "synthetic":
            raise ValueError(
                f"row {index} (id={row_id!r}) is synthetic; split the real trajectories first and add synthetic "
                "ones to train with attach_synthetic(train, synthetic)"
            )
    categories = sorted(set(categories_col))
    if len(categories) < 2:
        raise EmptySplitError(
            f"a category split needs at least 2 categories (train and held-out), found {len(categories)}: {categories}"
        )
    n_train = int(round(train_category_fraction * len(categories)))
    if n_train == 0 or n_train == len(categories):
        which = "train" if n_train == 0 else "val/eval"
        raise EmptySplitError(
            f"{which} would be empty: train_category_fraction={train_category_fraction} of {len(categories)} "
            f"categories rounds to {n_train} train categories"
        )
    order = np.random.default_rng(seed).permutation(len(categories))
    train_categories = sorted(categories[i] for i in order[:n_train])
    heldout_categories = sorted(categories[i] for i in order[n_train:])
    train_set = set(train_categories)

    rows_of: dict[str, list[int]] = {c: [] for c in categories}
    for index, category in enumerate(categories_col):
        rows_of[category].append(index)
    # order rows inside a category by id (when ids are unique) so the split ignores input order
    unique_ids = ids[0] is not None and len(set(ids)) == len(ids)

    def ordered(indices: list[int]) -> list[int]:
        return sorted(indices, key=lambda i: str(ids[i])) if unique_ids else indices

    train_idx: list[int] = []
    val_idx: list[int] = []
    eval_idx: list[int] = []
    per_category: dict[str, dict[str, int]] = {}
    for category in categories:
        indices = ordered(rows_of[category])
        if category in train_set:
            train_idx += indices
            per_category[category] = {"train": len(indices), "val": 0, "eval": 0}
            continue
        shuffled = [indices[i] for i in _category_rng(seed, category).permutation(len(indices))]
        n_val = int(round(val_split * len(shuffled)))
        val_idx += shuffled[:n_val]
        eval_idx += shuffled[n_val:]
        per_category[category] = {"train": 0, "val": n_val, "eval": len(shuffled) - n_val}

    full_train = len(train_idx)
    if low_data_fraction is not None and low_data_fraction < 1:
        n_keep = max(1, int(round(low_data_fraction * full_train)))
        keep = np.random.default_rng([seed, 1]).choice(full_train, size=n_keep, replace=False)
        train_idx = [train_idx[i] for i in sorted(keep)]
        for category in train_categories:
            per_category[category]["train"] = 0
        for i in train_idx:
            per_category[categories_col[i]]["train"] += 1

    for name, indices in (("train", train_idx), ("val", val_idx), ("eval", eval_idx)):
        if not indices:
            hint = (
                f"val_split={val_split} of the held-out categories' {len(val_idx) + len(eval_idx)} trajectories "
                f"rounds to none in {name}"
                if name != "train"
                else "no train trajectories"
            )
            raise EmptySplitError(f"the {name} split is empty: {hint} (held-out categories: {heldout_categories})")

    result = datasets.DatasetDict(
        {
            "train": dataset.select(sorted(train_idx)),
            "val": dataset.select(sorted(val_idx)),
            "eval": dataset.select(sorted(eval_idx)),
        }
    )
    report = SplitReport(
        seed=seed,
        train_category_fraction=train_category_fraction,
        val_split=val_split,
        low_data_fraction=low_data_fraction,
        train_categories=train_categories,
        heldout_categories=heldout_categories,
        sizes={name: len(result[name]) for name in SPLIT_NAMES},
        train_size_before_low_data=full_train,
        per_category=per_category,
    )
    result.split_report = report
    return (result, report) if return_report else result


def _parent_of(row: dict[str, Any]) -> Any:
    meta = metadata_of(row)
    for key in ("parent_id", "parent"):
        if meta.get(key) not in (None, ""):
            return meta[key]
    return None


def check_synthetic_parents(train: datasets.Dataset, synthetic: datasets.Dataset) -> None:
    """Raise unless every synthetic row's ``metadata["parent_id"]`` is the id of a ``train`` row."""
    if "id" not in train.column_names:
        raise ValueError("train has no 'id' column, so synthetic parents cannot be checked")
    train_ids = set(map(str, train["id"]))
    for index, row in enumerate(synthetic):
        parent = _parent_of(row)
        if parent is None:
            raise TrajectoryValidationError(
                index,
                row.get("id"),
                "metadata.parent_id",
                "synthetic row does not record the train trajectory it was seeded from",
            )
        if str(parent) not in train_ids:
            raise TrajectoryValidationError(
                index,
                row.get("id"),
                "metadata.parent_id",
                f"parent {parent!r} is not a train trajectory (synthetic data may only be seeded from train; "
                "a parent in val/eval would leak held-out categories)",
            )


def attach_synthetic(train: datasets.Dataset, synthetic: datasets.Dataset) -> datasets.Dataset:
    """Return ``train`` followed by ``synthetic`` after checking every synthetic row derives from train.

    Synthetic rows get ``source="synthetic"`` where it was left empty or ``"real"``.
    """
    check_synthetic_parents(train, synthetic)
    if "source" in synthetic.column_names:
        synthetic = synthetic.map(
            lambda row: {"source": "synthetic" if row["source"] in ("", "real", None) else row["source"]},
            desc="Marking synthetic rows",
        )
    missing = [c for c in train.column_names if c not in synthetic.column_names]
    extra = [c for c in synthetic.column_names if c not in train.column_names]
    if missing or extra:
        raise ValueError(f"train and synthetic columns differ: synthetic lacks {missing}, has extra {extra}")
    synthetic = synthetic.select_columns(train.column_names).cast(train.features)
    return datasets.concatenate_datasets([train, synthetic])
