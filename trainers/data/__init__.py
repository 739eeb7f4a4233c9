"""Trajectory data: schema and validation, converters from published formats, category splits,
tokenization for token-level RL.

Two readers, two names: :func:`load_trajectories` (also ``trainers.load_trajectories``) loads a
trajectory dataset that is already in the schema (a folder, a file or a Hub id);
:func:`convert_trajectories` reads a published format (ETO, LMRL-Gym) and converts it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import datasets

from .converters import (
    CONVERTERS,
    ConversionError,
    convert_car_dealer,
    convert_eto,
    convert_twenty_questions,
    read_json_records,
    split_in_context_examples,
    twenty_questions_category,
)
from .converters import load_trajectories as _read_and_convert
from .hub_io import load_trajectories as _load_schema_dataset
from .schema import (
    KNOWN_SOURCES,
    TRAJECTORY_FEATURES,
    TrajectoryValidationError,
    make_trajectory,
    metadata_of,
    to_dataset,
    validate_row,
    validate_trajectories,
)
from .splits import (
    PAPER_LOW_DATA_FRACTIONS,
    EmptySplitError,
    SplitReport,
    attach_synthetic,
    check_synthetic_parents,
    split_by_category,
)
from .tokenization import (
    PLAIN_CHAT_TEMPLATE,
    TOKENIZED_COLUMNS,
    TrajectoryCollator,
    TrajectoryTooLongError,
    prepare_tokenizer,
    tokenize_dataset,
    tokenize_trajectory,
)


def convert_trajectories(path: str | Path, format: str, **kwargs: Any) -> datasets.Dataset:
    """Read ``path`` in a published ``format`` (a key of :data:`CONVERTERS`: ``"eto"``,
    ``"twenty_questions"``, ``"car_dealer"``), convert it and return validated trajectory rows.

    Keyword arguments go to the format's converter (e.g. ``default_reward``, ``category_of`` for ETO).
    """
    return _read_and_convert(path, format, **kwargs)


def load_trajectories(
    path_or_repo_id: str | Path, *args: Any, **kwargs: Any
) -> datasets.Dataset | datasets.DatasetDict:
    """:func:`trainers.load_trajectories`: load a trajectory dataset (folder, file or Hub id) and validate it.

    Deprecated form: ``load_trajectories(path, format, ...)`` with ``format`` one of
    :data:`CONVERTERS` (or ``format=...``) used to read and convert a published format; it still
    works, with a ``FutureWarning``, and calls :func:`convert_trajectories`.
    """
    format = kwargs.pop("format", None)
    if format is None and args and isinstance(args[0], str) and args[0] in CONVERTERS:
        format, args = args[0], args[1:]
    if format is None:
        return _load_schema_dataset(path_or_repo_id, *args, **kwargs)
    warnings.warn(
        "trainers.data.load_trajectories(path, format) is deprecated and will be removed: use "
        f"trainers.data.convert_trajectories(path, {format!r}) to convert a published format; "
        "load_trajectories(path_or_repo_id, split=...) loads a dataset already in the trajectory schema",
        FutureWarning,
        stacklevel=2,
    )
    return convert_trajectories(path_or_repo_id, format, *args, **kwargs)


__all__ = [
    "CONVERTERS",
    "ConversionError",
    "EmptySplitError",
    "KNOWN_SOURCES",
    "PAPER_LOW_DATA_FRACTIONS",
    "PLAIN_CHAT_TEMPLATE",
    "SplitReport",
    "TOKENIZED_COLUMNS",
    "TRAJECTORY_FEATURES",
    "TrajectoryCollator",
    "TrajectoryTooLongError",
    "TrajectoryValidationError",
    "attach_synthetic",
    "check_synthetic_parents",
    "convert_car_dealer",
    "convert_eto",
    "convert_trajectories",
    "convert_twenty_questions",
    "load_trajectories",
    "make_trajectory",
    "metadata_of",
    "prepare_tokenizer",
    "read_json_records",
    "split_by_category",
    "split_in_context_examples",
    "to_dataset",
    "tokenize_dataset",
    "tokenize_trajectory",
    "twenty_questions_category",
    "validate_row",
    "validate_trajectories",
]
