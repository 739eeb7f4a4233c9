"""The one place where config values are checked: allowed values and numeric ranges, by field name.

A config declares what is allowed where a reader looks for it: ``choices`` in a field's
``metadata`` (which ``HfArgumentParser`` also turns into ``--help`` and argparse choices) and a
class-level ``field_ranges`` table in interval notation (``"[0, 1]"``, ``"(0, 1)"``,
``"[1, inf)"``). Its ``__post_init__`` calls :func:`check_fields` once. Ranges cannot live in
``metadata``: ``HfArgumentParser`` passes every metadata key on to ``argparse.add_argument``.

Every float of the checked fields must be finite, ranged or not: a NaN weight or temperature
compares false against any bound and would otherwise train silently on NaN losses.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from collections.abc import Mapping
from numbers import Real
from typing import Any

__all__ = ["Interval", "check_fields"]


@dataclasses.dataclass(frozen=True)
class Interval:
    """A numeric interval parsed from ``"[low, high]"``, ``"(low, high)"`` or a mix; ``inf`` is unbounded."""

    low: float
    high: float
    low_closed: bool
    high_closed: bool
    text: str

    @classmethod
    def parse(cls, text: str) -> Interval:
        body = text.strip()
        if len(body) < 5 or body[0] not in "[(" or body[-1] not in "])" or body.count(",") != 1:
            raise ValueError(f"interval {text!r} is not in the form '[low, high]' / '(low, high)'")
        low, high = (float(part) for part in body[1:-1].split(","))
        if not low <= high:
            raise ValueError(f"interval {text!r} is empty")
        return cls(low, high, body[0] == "[", body[-1] == "]", body)

    def __contains__(self, value: float) -> bool:
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return above and below

    def describe(self) -> str:
        """``">= 1"`` for a half-line, ``"in [0, 1]"`` otherwise (how error messages say it)."""
        if math.isinf(self.high):
            return f"{'>=' if self.low_closed else '>'} {_number(self.low)}"
        return f"in {self.text}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@functools.cache
def _optional_fields(config_class: type) -> frozenset[str]:
    # From the class annotations, not Field.type: HfArgumentParser rewrites Field.type in place
    # (it strips the None from `int | None`).
    hints = typing.get_type_hints(config_class)
    return frozenset(name for name, hint in hints.items() if type(None) in typing.get_args(hint))


def _allows_none(config_class: type, field: dataclasses.Field) -> bool:
    return field.default is None or field.name in _optional_fields(config_class)


def check_fields(config: Any, ranges: Mapping[str, str], *, upstream: type | None = None) -> None:
    """Raise ``ValueError`` naming the config and the field for the first value that is not allowed.

    Checks every field of ``config`` that ``upstream`` (e.g. ``TrainingArguments``, which checks its
    own) does not declare: a value outside ``metadata["choices"]``, a non-finite float, and, for
    the fields named in ``ranges``, a non-number or a number outside its interval. ``None`` passes
    where the field allows it.
    """
    owner = type(config).__name__
    inherited = {f.name for f in dataclasses.fields(upstream)} if upstream is not None else set()
    by_name = {f.name: f for f in dataclasses.fields(config)}
    unknown = sorted(set(ranges) - set(by_name))
    if unknown:
        raise ValueError(f"{owner}.field_ranges names fields it does not have: {unknown}")
    for field in by_name.values():
        value = getattr(config, field.name)
        if value is None and _allows_none(type(config), field):
            continue
        if field.name not in inherited:
            choices = field.metadata.get("choices")
            if choices is not None and value not in choices:
                allowed = ", ".join(repr(choice) for choice in choices)
                raise ValueError(f"{owner}: {field.name} must be one of {allowed}, got {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{owner}: {field.name} must be a finite number, got {value!r}")
        if field.name in ranges:
            interval = Interval.parse(ranges[field.name])
            if isinstance(value, bool) or not isinstance(value, Real):
                raise ValueError(f"{owner}: {field.name} must be a number {interval.describe()}, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{owner}: {field.name} must be a finite number, got {value!r}")
            if value not in interval:
                raise ValueError(f"{owner}: {field.name} must be {interval.describe()}, got {value!r}")
