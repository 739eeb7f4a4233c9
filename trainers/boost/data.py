"""The rows BOOST trains on: real first, then synthetic, each with its index into the embeddings."""

from __future__ import annotations

import datasets

from ..data.schema import TRAJECTORY_FEATURES
from ..data.splits import check_synthetic_parents
from .config import BilevelReweightConfig

_DEFAULTS = (
    ("source", "real"),
    ("id", None),
    ("task_id", ""),
    ("category", ""),
    ("done", True),
    ("success", False),
    ("metadata", "{}"),
)


def schema_only(dataset: datasets.Dataset, what: str) -> datasets.Dataset:
    """The schema columns of ``dataset`` (plus ``weight``), missing optional ones filled with defaults."""
    if "messages" not in dataset.column_names or "rewards" not in dataset.column_names:
        raise ValueError(
            f"{what} has columns {sorted(dataset.column_names)}: BilevelReweightTrainer needs trajectory rows "
            "('messages', 'rewards', ...) to embed them"
        )
    extra = [c for c in dataset.column_names if c not in TRAJECTORY_FEATURES and c != "weight"]
    dataset = dataset.remove_columns(extra)
    for column, default in _DEFAULTS:
        if column not in dataset.column_names:
            values = [f"{what}-{i}" for i in range(len(dataset))] if column == "id" else [default] * len(dataset)
            dataset = dataset.add_column(column, values)
    features = TRAJECTORY_FEATURES
    if "weight" in dataset.column_names:
        features = datasets.Features({**TRAJECTORY_FEATURES, "weight": datasets.Value("float32")})
    return dataset.cast(features)


def select_rows(args: BilevelReweightConfig, train_dataset, synthetic_dataset) -> datasets.Dataset:
    """Real rows, then (for the methods that use it) synthetic rows, with a ``traj_index`` column.

    Rows of ``train_dataset`` with ``source == "synthetic"`` and every row of ``synthetic_dataset``
    are the synthetic data; rows passed as ``synthetic_dataset`` get ``source="synthetic"`` whatever
    their own label said, since that label drives ``is_synthetic``, ``trajectory_weights()``, the
    per-source logs and ``bilevel_state()``.
    """
    train = schema_only(train_dataset, "train_dataset")
    real = train.filter(lambda s: s != "synthetic", input_columns="source")
    synthetic = train.filter(lambda s: s == "synthetic", input_columns="source")
    if synthetic_dataset is not None:
        extra = schema_only(synthetic_dataset, "synthetic_dataset")
        if any(source != "synthetic" for source in extra["source"]):
            extra = extra.map(lambda _: {"source": "synthetic"}, input_columns="source")
        if "weight" in real.column_names and "weight" not in extra.column_names:
            extra = extra.add_column("weight", [1.0] * len(extra)).cast(real.features)
        synthetic = datasets.concatenate_datasets([synthetic, extra]) if len(synthetic) else extra
    if len(real) == 0:
        raise ValueError("train_dataset holds no real trajectories (every row has source='synthetic')")
    if args.uses_synthetic:
        if synthetic_dataset is None and len(synthetic) == 0:
            raise ValueError(
                f"method={args.method!r} trains on real + synthetic data but no synthetic trajectories were given: "
                "pass synthetic_dataset (see trainers.boost.synthetic) or use method='vanilla' / 'bilevel'"
            )
        if len(synthetic) == 0:
            raise ValueError(f"method={args.method!r}: synthetic_dataset is empty")
        synthetic = synthetic.cast(real.features)
        # synthetic rows seeded from validation / evaluation trajectories would leak held-out data
        check_synthetic_parents(real, synthetic)
        rows = datasets.concatenate_datasets([real, synthetic])
    else:
        rows = real
    return rows.add_column("traj_index", list(range(len(rows))))


def check_val(args: BilevelReweightConfig, val_dataset) -> datasets.Dataset | None:
    """The validation rows (real only) for the bilevel methods; ``None`` for the others."""
    if not args.is_bilevel:
        return None
    if val_dataset is None or len(val_dataset) == 0:
        raise ValueError(
            f"method={args.method!r} learns trajectory weights against real validation trajectories, but "
            "val_dataset is " + ("missing" if val_dataset is None else "empty") + ": pass val_dataset "
            "(e.g. the 'val' split of trainers.data category splits) or use method='vanilla' / 'vanilla_synthetic'"
        )
    val = schema_only(val_dataset, "val_dataset")
    for index, source in enumerate(val["source"]):
        if source == "synthetic":
            raise ValueError(
                f"val_dataset row {index} (id={val[index]['id']!r}), field 'source': validation must use real "
                "trajectories only, got a synthetic one"
            )
    return val


__all__ = ["check_val", "schema_only", "select_rows"]
