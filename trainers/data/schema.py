"""The trajectory schema: one row is one multi-turn episode.

Rows use TRL's conversational convention so that the rest of the ecosystem reads them:
``messages`` is a list of ``{"role", "content"}`` where ``system`` holds task instructions,
``user`` holds an environment observation and ``assistant`` holds an agent action. Rewards are
given per assistant turn.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import datasets
import numpy

#: The sources a trajectory can come from. Free-form strings are allowed; these are the known ones.
KNOWN_SOURCES = ("real", "synthetic", "weak", "expert")

TRAJECTORY_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "task_id": datasets.Value("string"),
        "category": datasets.Value("string"),
        "source": datasets.Value("string"),
        "messages": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
        "rewards": datasets.List(datasets.Value("float32")),
        "done": datasets.Value("bool"),
        "success": datasets.Value("bool"),
        # Free-form provenance (generator model, sampling settings, parent id, env seed) stored as a
        # JSON string so that rows from different generators share one Arrow schema.
        "metadata": datasets.Value("string"),
    }
)

REQUIRED_FIELDS = ("messages", "rewards")
#: Largest magnitude a float32 ``rewards`` value can hold; beyond it Arrow stores inf.
FLOAT32_MAX = 3.4028234663852886e38
_TEXT_FIELDS = ("id", "task_id", "category", "source", "metadata")


class TrajectoryValidationError(ValueError):
    """A trajectory row breaks the schema. The message names the row index, its id and the field."""

    def __init__(self, index: int | None, row_id: Any, field: str, problem: str):
        self.index, self.row_id, self.field, self.problem = index, row_id, field, problem
        where = f"row {index}" if index is not None else "row"
        if row_id not in (None, ""):
            where += f" (id={row_id!r})"
        super().__init__(f"{where}, field '{field}': {problem}")


def _check_text(value: str, field: str, fail) -> None:
    """Arrow stores UTF-8: a lone surrogate (half of a cut emoji escape like ``\\ud83d``) cannot be stored."""
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        fail(
            field,
            f"character {error.start} is a lone surrogate {value[error.start]!r}, which is not valid "
            "Unicode text (often a JSON \\uXXXX escape pair cut in half); repair or drop that character",
        )


def _check_messages(messages: Any, fail) -> int:
    """Return the number of assistant turns, calling ``fail(field, problem)`` on the first error."""
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, (list, tuple)):
        fail(
            "messages",
            f"must be a list of {{'role', 'content'}} messages, got {type(messages).__name__}"
            + (f" {messages[:60]!r}" if isinstance(messages, str) else ""),
        )
    if len(messages) == 0:
        fail("messages", "empty trajectory: at least one user and one assistant message are needed")
    previous = None
    n_assistant = 0
    for position, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            fail(f"messages[{position}]", "each message needs 'role' and 'content'")
        role, content = message["role"], message["content"]
        if role not in ("system", "user", "assistant"):
            fail(f"messages[{position}].role", f"unknown role {role!r} (expected system, user or assistant)")
        if not isinstance(content, str):
            fail(f"messages[{position}].content", f"content must be a string, got {type(content).__name__}")
        _check_text(content, f"messages[{position}].content", fail)
        if role == "system" and position != 0:
            fail(f"messages[{position}].role", "a system message may only come first")
        if role == "user" and previous == "user":
            fail(f"messages[{position}].role", "roles out of order: two user messages in a row")
        if role == "assistant":
            if previous in (None, "system"):
                fail(
                    f"messages[{position}].role",
                    "roles out of order: the first turn after the system prompt must be a user observation",
                )
            if previous == "assistant":
                fail(f"messages[{position}].role", "roles out of order: two assistant messages in a row")
            n_assistant += 1
        previous = role
    if n_assistant == 0:
        fail("messages", "empty trajectory: no assistant turn (no action to learn from)")
    return n_assistant


def validate_row(row: Mapping[str, Any], index: int | None = None, *, require_category: bool = False) -> None:
    """Raise :class:`TrajectoryValidationError` if ``row`` breaks the trajectory schema."""
    row_id = row.get("id")

    def fail(field: str, problem: str):
        raise TrajectoryValidationError(index, row_id, field, problem)

    for field in REQUIRED_FIELDS:
        if field not in row or row[field] is None:
            fail(field, "missing")
    n_assistant = _check_messages(row["messages"], fail)
    rewards = row["rewards"]
    if isinstance(rewards, (str, bytes, Mapping)) or not hasattr(rewards, "__len__"):
        fail("rewards", f"rewards must be a list with one number per assistant turn, got {type(rewards).__name__}")
    if len(rewards) != n_assistant:
        fail("rewards", f"rewards length mismatch: {len(rewards)} rewards for {n_assistant} assistant turns")
    for turn, reward in enumerate(rewards):
        is_number = isinstance(reward, numbers.Real) and not isinstance(reward, bool)
        if not is_number or not math.isfinite(reward):
            fail(f"rewards[{turn}]", f"reward must be a finite number, got {reward!r}")
        if abs(reward) > FLOAT32_MAX:
            fail(
                f"rewards[{turn}]",
                f"reward {reward!r} does not fit the float32 rewards column (|r| <= 3.4e38) "
                "and would be stored as inf; rescale the rewards",
            )
    for flag in ("done", "success"):
        value = row.get(flag)
        if value is not None and not isinstance(value, (bool, numpy.bool_)):
            fail(
                flag,
                f"must be true or false (a boolean), got {value!r} ({type(value).__name__}); a string like "
                "'false' or 'no' would otherwise be read as true",
            )
    for field in _TEXT_FIELDS:
        value = row.get(field)
        # to_dataset writes dict metadata as JSON; Arrow writes an integer id as its digits
        if field == "metadata":
            converted = isinstance(value, Mapping)
        else:
            converted = isinstance(value, int) and not isinstance(value, bool)
        if value is not None and not isinstance(value, str) and not converted:
            fail(field, f"must be a string, got {type(value).__name__} {value!r}")
        if isinstance(value, str):
            _check_text(value, field, fail)
    if require_category and not row.get("category"):
        fail("category", "missing category, which a category split needs")


def validate_trajectories(rows: Iterable[Mapping[str, Any]], *, require_category: bool = False) -> int:
    """Validate every row (a ``datasets.Dataset`` or any iterable of dicts); return the row count.

    Nothing is dropped: the first bad row raises with its index, id and field. Non-empty ids must
    be unique (learned weights and splits are keyed by id).
    """
    count = 0
    first_row_of: dict[str, int] = {}
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            problem = f"expected an object with 'messages' and 'rewards', got {type(row).__name__}"
            raise TrajectoryValidationError(index, None, "row", problem)
        validate_row(row, index, require_category=require_category)
        row_id = row.get("id")
        if row_id not in (None, ""):
            key = str(row_id)  # as stored: an integer id becomes its digits
            if key in first_row_of:
                raise TrajectoryValidationError(
                    index, row_id, "id", f"duplicate id: row {first_row_of[key]} has the same id; ids must be unique"
                )
            first_row_of[key] = index
        count += 1
    return count


def make_trajectory(
    messages: list[dict[str, str]],
    rewards: list[float],
    *,
    id: str = "",
    task_id: str = "",
    category: str = "",
    source: str = "real",
    done: bool = True,
    success: bool | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build one schema row; ``success`` defaults to "the final reward is positive"."""
    if success is None:
        success = bool(rewards) and rewards[-1] > 0
    return {
        "id": id,
        "task_id": task_id,
        "category": category,
        "source": source,
        "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        "rewards": [float(r) for r in rewards],
        "done": bool(done),
        "success": bool(success),
        "metadata": json.dumps(dict(metadata or {}), sort_keys=True, default=str),
    }


def to_dataset(rows: list[dict[str, Any]], *, validate: bool = True) -> datasets.Dataset:
    """Validate rows and build a :class:`datasets.Dataset` with :data:`TRAJECTORY_FEATURES` (no rows: an empty one)."""
    if validate:
        validate_trajectories(rows)
    rows = [dict(row) for row in rows]
    if not rows:
        return datasets.Dataset.from_dict({name: [] for name in TRAJECTORY_FEATURES}, features=TRAJECTORY_FEATURES)
    for index, row in enumerate(rows):
        row.setdefault("id", f"traj-{index}")
        for key in ("task_id", "category"):
            row.setdefault(key, "")
        row.setdefault("source", "real")
        row.setdefault("done", True)
        row.setdefault("success", bool(row["rewards"]) and row["rewards"][-1] > 0)
        meta = row.get("metadata", "{}")
        row["metadata"] = meta if isinstance(meta, str) else json.dumps(meta, sort_keys=True, default=str)
    extra = sorted({key for row in rows for key in row} - set(TRAJECTORY_FEATURES))
    features = TRAJECTORY_FEATURES.copy()
    for key in extra:
        # e.g. a fixed per-trajectory "weight" column; let Arrow infer the type from the first row.
        sample = next((row[key] for row in rows if row.get(key) is not None), None)
        features[key] = datasets.Dataset.from_list([{key: sample}]).features[key]
    return datasets.Dataset.from_list(rows, features=features)


def metadata_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """Decode a row's ``metadata`` JSON string (empty dict when absent)."""
    meta = row.get("metadata")
    if not meta:
        return {}
    return json.loads(meta) if isinstance(meta, str) else dict(meta)
