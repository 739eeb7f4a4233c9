"""Read and write trajectory datasets (and learned weight datasets) locally and on the Hub.

``load_trajectories`` accepts everything people hand around: a folder written by
``Dataset.save_to_disk``, a folder in Hub layout (what :func:`save_trajectories` writes and what a
Hub dataset repo holds), a ``.json`` / ``.jsonl`` / ``.parquet`` file, or a Hub dataset id. Every
row is validated against :mod:`trainers.data.schema`; the first bad row raises with the file, split,
row index, id and field.

``save_trajectories`` writes the Hub layout (``data/<split>-00000-of-00001.parquet`` plus a
``README.md`` dataset card rendered from ``hub_cards/dataset_card.md``) atomically, so that the
same folder loads with ``datasets.load_dataset(folder)`` and pushes unchanged with
:func:`trainers.hub.push_folder`. ``push_trajectories`` does both.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets

from trainers.data.schema import TrajectoryValidationError, to_dataset, validate_trajectories
from trainers.hub import atomic_save, push_folder, render_card

__all__ = [
    "EmptyDatasetError",
    "load_trajectories",
    "save_trajectories",
    "push_trajectories",
    "load_weights",
    "save_weights",
    "push_weights",
]

_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}


# -------------------------------------------------------------------------------------------- read
def read_text_file(path: Path) -> str:
    """A file's UTF-8 text; other encodings fail with the file and the first bad byte's offset."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start} cannot be decoded); "
            "save the file as UTF-8"
        ) from error


def _read_json_rows(path: Path) -> list[dict[str, Any]]:
    text = read_text_file(path)
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                problem = f"not valid JSON ({error.msg} at column {error.colno})"
                raise ValueError(f"{path}, line {number}: {problem}") from error
        return rows
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as error:
        problem = f"not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})"
        raise ValueError(f"{path}: {problem}") from error
    rows = payload
    if isinstance(payload, dict):
        # {"data": [...]} / {"trajectories": [...]}, else the object is one row (as ETO writes its outputs)
        rows = next((payload[key] for key in ("data", "trajectories") if key in payload), [payload])
    if not isinstance(rows, list):
        raise ValueError(
            f"{path}: expected a list of trajectory rows (or {{'data': [...]}}), got {type(rows).__name__}"
        )
    return rows


def _format_hint(rows: list[Any], path: Any = "path") -> str:
    """A pointer to the converter when the rows are in a peer format rather than the trajectory schema."""
    first = rows[0] if rows else None
    if isinstance(first, list) or (isinstance(first, Mapping) and "conversations" in first):
        name = "eto"
    elif isinstance(first, Mapping) and "lines" in first and "buyer_info" in first:
        name = "car_dealer"
    elif isinstance(first, Mapping) and "lines" in first and "word" in first:
        name = "twenty_questions"
    else:
        return ""
    return (
        f"; the file looks like the {name!r} format, which needs converting first: "
        f"trainers.data.converters.load_trajectories({str(path)!r}, {name!r})"
    )


def _read_parquet(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise ValueError(
            f"{path}: not a readable Parquet file ({error}); it is truncated or corrupt: write it again"
        ) from error


def _load_raw(source: str, split: str | None, **kwargs: Any) -> datasets.Dataset | datasets.DatasetDict:
    path = Path(source)
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            loaded = datasets.load_from_disk(str(path))
            if split is not None and isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise KeyError(f"{source}: no split {split!r}; available: {', '.join(loaded)}")
                return loaded[split]
            return loaded
        return _load_local_folder(path, split)
    if path.is_file():
        if path.suffix not in _FILE_BUILDERS:
            raise ValueError(f"{source}: unsupported file type {path.suffix!r}; use .json, .jsonl or .parquet")
        if path.suffix in (".json", ".jsonl"):
            # Through the schema's own builder so that dict metadata becomes the JSON string column and
            # missing optional fields get their defaults (Arrow inference would do neither).
            rows = _read_json_rows(path)
            if not rows:
                raise EmptyDatasetError(f"{source}: holds no trajectory rows")
            try:
                return to_dataset(rows)
            except TrajectoryValidationError as error:
                raise _located(error, source, split, hint=_format_hint(rows, source)) from error
        return _read_files([path], source)
    if source.startswith(("/", ".", "~")) or source.count("/") > 1 or path.suffix in _FILE_BUILDERS:
        raise FileNotFoundError(f"{source}: no such file or folder (and not a Hub dataset id 'owner/name')")
    return datasets.load_dataset(source, split=split, **kwargs)


def _split_files(folder: Path) -> dict[str, list[Path]]:
    """Data files per split of a Hub-layout folder: the card's ``configs`` first, else ``data/<split>-*``."""
    readme = folder / "README.md"
    if readme.exists():
        from huggingface_hub import DatasetCard

        configs = DatasetCard.load(readme).data.to_dict().get("configs") or []
        config = next((c for c in configs if c.get("config_name") == "default"), configs[0] if configs else None)
        if config and isinstance(config.get("data_files"), list):
            found = {}
            for entry in config["data_files"]:
                patterns = entry["path"] if isinstance(entry["path"], list) else [entry["path"]]
                found[entry["split"]] = sorted(p for pattern in patterns for p in folder.glob(pattern))
            return found
    found: dict[str, list[Path]] = {}
    for file in sorted((folder / "data").glob("*")) if (folder / "data").is_dir() else sorted(folder.glob("*")):
        if file.suffix in _FILE_BUILDERS:
            found.setdefault(file.name.split("-")[0].split(".")[0], []).append(file)
    return found


def _read_files(files: list[Path], where: str) -> datasets.Dataset:
    import pyarrow as pa

    if not files:
        raise FileNotFoundError(f"{where}: the split's data files are missing")
    if all(f.suffix == ".parquet" for f in files):
        # Read directly rather than through load_dataset: its cache keys local folders by name and
        # modification time only, so two folders called "traj" could serve each other's rows.
        table = pa.concat_tables([_read_parquet(f) for f in files])
        return datasets.Dataset(datasets.table.InMemoryTable(table))
    rows = []
    for file in files:
        file_rows = _read_json_rows(file)
        for index, row in enumerate(file_rows):
            # only the shape here (full validation follows, once per split): enough to build the columns
            if not isinstance(row, Mapping) or "messages" not in row or "rewards" not in row:
                is_object = isinstance(row, Mapping)
                problem = "missing" if is_object else f"expected an object, got {type(row).__name__}"
                field = "rewards" if is_object and "messages" in row else "messages"
                error = TrajectoryValidationError(index, row.get("id") if is_object else None, field, problem)
                raise _located(error, str(file), None, hint=_format_hint(file_rows, file))
        rows.extend(file_rows)
    return to_dataset(rows, validate=False)


def _load_local_folder(folder: Path, split: str | None) -> datasets.Dataset | datasets.DatasetDict:
    splits = _split_files(folder)
    if not splits:
        raise FileNotFoundError(
            f"{folder}: no trajectory data found (expected a save_to_disk folder, data/<split>-*.parquet, "
            f"or .json/.jsonl/.parquet files)"
        )
    if split is not None:
        if split not in splits:
            raise KeyError(f"{folder}: no split {split!r}; available: {', '.join(splits)}")
        return _read_files(splits[split], f"{folder} split {split!r}")
    return datasets.DatasetDict(
        {name: _read_files(files, f"{folder} split {name!r}") for name, files in splits.items()}
    )


class EmptyDatasetError(ValueError):
    """A file, folder or split holds no rows."""


def _located(
    error: TrajectoryValidationError, source: str, split: str | None, hint: str = ""
) -> TrajectoryValidationError:
    where = f"{source}" + (f", split {split!r}" if split else "")
    return TrajectoryValidationError(error.index, error.row_id, error.field, f"{error.problem} (in {where}){hint}")


def _validate(ds: datasets.Dataset, source: str, split: str | None, require_category: bool) -> None:
    try:
        validate_trajectories(ds, require_category=require_category)
    except TrajectoryValidationError as error:
        hint = _format_hint([ds[0]], source) if error.field == "messages" and "conversations" in ds.column_names else ""
        raise _located(error, source, split, hint) from error


def load_trajectories(
    path_or_repo_id: str | os.PathLike,
    split: str | None = None,
    *,
    validate: bool = True,
    require_category: bool = False,
    **load_kwargs: Any,
) -> datasets.Dataset | datasets.DatasetDict:
    """Load trajectories from a folder, a file or a Hub dataset id and validate every row.

    Args:
        path_or_repo_id: a ``save_to_disk`` folder, a Hub-layout folder, a ``.json`` / ``.jsonl`` /
            ``.parquet`` file, or a Hub dataset id (``owner/name``).
        split: the split to return; ``None`` returns a ``DatasetDict`` when the source has splits.
        validate: check every row against the trajectory schema (default ``True``).
        require_category: also require a non-empty ``category`` (needed by category splits).
        load_kwargs: passed to ``datasets.load_dataset`` (``revision``, ``token``, ``cache_dir``...).
    """
    source = os.fspath(path_or_repo_id)
    loaded = _load_raw(source, split, **load_kwargs)
    parts = loaded.values() if isinstance(loaded, datasets.DatasetDict) else [loaded]
    if all(len(part) == 0 for part in parts):  # one empty split beside others is fine; nothing at all is not
        raise EmptyDatasetError(f"{source}" + (f", split {split!r}" if split else "") + ": holds no trajectory rows")
    if validate:
        if isinstance(loaded, datasets.DatasetDict):
            for name, part in loaded.items():
                _validate(part, source, name, require_category)
        else:
            _validate(loaded, source, split, require_category)
    return loaded


# ------------------------------------------------------------------------------------------- write
def _as_dataset_dict(dataset: Any, what: str) -> datasets.DatasetDict:
    if isinstance(dataset, datasets.DatasetDict):
        return dataset
    if isinstance(dataset, datasets.Dataset):
        return datasets.DatasetDict({"train": dataset})
    if isinstance(dataset, Mapping) and all(isinstance(v, datasets.Dataset) for v in dataset.values()):
        return datasets.DatasetDict(dict(dataset))
    raise TypeError(
        f"{what} must be a datasets.Dataset, a DatasetDict or a dict of split -> Dataset, got {type(dataset).__name__}"
    )


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "n>1M"


def _write_hub_layout(parts: datasets.DatasetDict, staging: Path, template: str, fields: dict[str, Any]) -> None:
    data_dir = staging / "data"
    data_dir.mkdir()
    for split, part in parts.items():
        part.to_parquet(str(data_dir / f"{split}-00000-of-00001.parquet"))
    total = sum(len(part) for part in parts.values())
    defaults = {
        "num_rows": total,
        "splits": {split: len(part) for split, part in parts.items()},
        "size_categories": [_size_category(total)],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": split, "path": f"data/{split}-*.parquet"} for split in parts],
            }
        ],
    }
    card = render_card(template, repo_type="dataset", **{**defaults, **fields})
    card.save(str(staging / "README.md"))


def save_trajectories(
    dataset: datasets.Dataset | datasets.DatasetDict | Mapping[str, datasets.Dataset],
    directory: str | os.PathLike,
    card_fields: Mapping[str, Any] | None = None,
    *,
    validate: bool = True,
) -> Path:
    """Validate and write ``dataset`` to ``directory`` in Hub layout with a dataset card; atomic.

    ``card_fields`` fill ``hub_cards/dataset_card.md``: ``pretty_name``, ``summary``, ``license``,
    ``sources`` (list of sentences), ``source_datasets`` (repo ids), ``split_protocol``,
    ``repo_id``, ``extra_columns`` (name -> meaning), ``tags``... Row counts per split and per
    ``source`` are filled in automatically.
    """
    parts = _as_dataset_dict(dataset, "dataset")
    if validate:
        for split, part in parts.items():
            _validate(part, f"the dataset being saved to {os.fspath(directory)}", split, False)
    sources = Counter(source for part in parts.values() if "source" in part.column_names for source in part["source"])
    fields = {"source_counts": dict(sorted(sources.items())), **dict(card_fields or {})}
    fields.setdefault("tags", ["trajectories", "multi-turn", "agents", "trl"])
    with atomic_save(directory) as staging:
        _write_hub_layout(parts, staging, "dataset_card", fields)
    return Path(directory)


def _push(save, dataset, repo_id, card_fields, local_dir, token, private, commit_message):
    fields = {"repo_id": repo_id, **dict(card_fields or {})}
    keep = local_dir is not None
    folder = Path(local_dir) if keep else Path(tempfile.mkdtemp(prefix="trainers-push-")) / repo_id.replace("/", "--")
    save(dataset, folder, fields)
    url = push_folder(folder, repo_id, repo_type="dataset", token=token, private=private, commit_message=commit_message)
    if not keep:  # on failure the folder stays, and HubPushError names it
        shutil.rmtree(folder.parent, ignore_errors=True)
    return url


def push_trajectories(
    dataset: datasets.Dataset | datasets.DatasetDict | Mapping[str, datasets.Dataset],
    repo_id: str,
    card_fields: Mapping[str, Any] | None = None,
    *,
    local_dir: str | os.PathLike | None = None,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload trajectories with trainers",
) -> str:
    """Save ``dataset`` like :func:`save_trajectories` (into ``local_dir`` or a temporary folder) and push it.

    Returns the commit URL. A failed push raises :class:`trainers.hub.HubPushError`; the saved
    folder is kept and named in the message.
    """
    return _push(save_trajectories, dataset, repo_id, card_fields, local_dir, token, private, commit_message)


# ----------------------------------------------------------------------------------------- weights
def _weights_dataset(weights: Any) -> datasets.Dataset:
    if isinstance(weights, Mapping):
        weights = datasets.Dataset.from_dict(
            {"id": [str(k) for k in weights], "weight": [float(v) for v in weights.values()]}
        )
    if not isinstance(weights, datasets.Dataset):
        raise TypeError(
            "weights must be a Dataset with 'id' and 'weight' columns or a mapping id -> weight, "
            f"got {type(weights).__name__}"
        )
    return weights


def _validate_weights(ds: datasets.Dataset, where: str) -> None:
    for column in ("id", "weight"):
        if column not in ds.column_names:
            raise ValueError(f"{where}: missing column {column!r} (a weights dataset needs 'id' and 'weight')")
    seen: set[str] = set()
    for index, (row_id, weight) in enumerate(zip(ds["id"], ds["weight"])):
        if weight is None or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ValueError(
                f"{where}: row {index} (id={row_id!r}), field 'weight': must be a finite number >= 0, got {weight!r}"
            )
        if row_id in seen:
            raise ValueError(f"{where}: row {index}, field 'id': duplicate id {row_id!r}")
        seen.add(row_id)


def save_weights(
    weights: datasets.Dataset | Mapping[str, float],
    directory: str | os.PathLike,
    card_fields: Mapping[str, Any] | None = None,
) -> Path:
    """Write learned per-trajectory weights (``id``, ``weight`` columns) with a weights dataset card; atomic.

    ``card_fields`` fill ``hub_cards/weights_dataset_card.md``: ``trajectories_repo``,
    ``reweighting_head_repo``, ``base_model``, ``split_protocol``, ``extra_columns``, ``license``.
    Weight statistics (min, mean, max, effective sample size) are computed here.
    """
    ds = _weights_dataset(weights)
    _validate_weights(ds, f"the weights being saved to {os.fspath(directory)}")
    values = [float(v) for v in ds["weight"]]
    total = sum(values)
    stats = {
        "rows": len(values),
        "min": round(min(values), 6) if values else None,
        "mean": round(total / len(values), 6) if values else None,
        "max": round(max(values), 6) if values else None,
        # Kish effective sample size: how many equally weighted rows the weights are worth.
        "effective sample size": round(total**2 / sum(v * v for v in values), 2) if total > 0 else 0.0,
    }
    fields = {"weight_statistics": stats, "tags": ["trajectory-weights", "boost", "trl"], **dict(card_fields or {})}
    with atomic_save(directory) as staging:
        _write_hub_layout(datasets.DatasetDict({"train": ds}), staging, "weights_dataset_card", fields)
    return Path(directory)


def push_weights(
    weights: datasets.Dataset | Mapping[str, float],
    repo_id: str,
    card_fields: Mapping[str, Any] | None = None,
    *,
    local_dir: str | os.PathLike | None = None,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload trajectory weights with trainers",
) -> str:
    """Save like :func:`save_weights` and push as a dataset repo; returns the commit URL."""
    return _push(save_weights, weights, repo_id, card_fields, local_dir, token, private, commit_message)


def load_weights(path_or_repo_id: str | os.PathLike, **load_kwargs: Any) -> dict[str, float]:
    """Load a weights dataset (folder, file or Hub id) as ``{trajectory id: weight}``, validated."""
    source = os.fspath(path_or_repo_id)
    ds = _load_raw(source, "train", **load_kwargs) if not Path(source).suffix == ".json" else None
    if ds is None:  # a plain JSON object id -> weight, or rows
        payload = json.loads(Path(source).read_text(encoding="utf-8"))
        ds = _weights_dataset(payload if isinstance(payload, Mapping) else datasets.Dataset.from_list(payload))
    _validate_weights(ds, source)
    return {str(k): float(v) for k, v in zip(ds["id"], ds["weight"])}
