"""Converters from the trajectory formats peers publish into the trajectory schema.

Supported formats (each converter returns schema rows, see :func:`to_dataset`):

* ``"eto"``: ETO / TraTree agent trajectories. A record is ``{"id", "conversations": [{"from":
  "human"|"gpt", "value"}...], "reward"}`` (golden SFT files) or ``{"meta": {"reward", "success",
  ...}, "conversations": [...]}`` (evaluation outputs), or the ``role``/``content`` variant (a bare
  list of messages, as in the example trajectories ETO publishes). The opening
  instruction turn (a human turn acknowledged by a ``gpt`` "OK") becomes the system message;
  in-context example episodes that precede the real task are recognised (see
  :func:`split_in_context_examples`) and dropped, or folded into the system message as text with
  ``in_context_examples="system"`` (never kept as actions: their rewards are unknown). The record's
  reward goes on the last assistant turn; the other ``meta`` fields (steps, terminate reason, ...)
  go into ``metadata``; the category is the task name of ScienceWorld-style ids (``boil_1`` ->
  ``boil``) unless the record has a ``category`` field.
* ``"twenty_questions"``: LMRL-Gym twenty questions, ``{"lines": ["Is it an animal? No.", ...],
  "correct": bool, "word": [variants]}``. The agent asks (assistant), the oracle answers (user).
* ``"car_dealer"``: LMRL-Gym car dealer, ``{"buyer_info": {...}, "lines": [{"role": "Seller" |
  "Buyer", "text"}...], "output": {"car_bought", "msrp", "buy_price"}}``. The agent is the seller.

Reward conventions (``reward=`` argument):

* twenty questions: ``"boost"`` (default, BOOST paper): the number of questions remaining on a
  correct guess (``max_questions - questions asked``), 0 otherwise, on the last turn;
  ``"lmrl"`` (LMRL-Gym original): -1 per question, 0 for the question that guesses the word.
* car dealer: ``"boost"`` (default, BOOST paper): the number of dialogue turns (lines, either
  speaker) remaining at agreement (``max_turns - len(lines)``, floored at 0), 0 when no car is
  bought; ``"lmrl"`` (LMRL-Gym "fancy" reward): ``buy_price / ((budget + msrp) / 2)`` on a sale,
  ``-(budget - msrp) / msrp`` otherwise; ``"lmrl_revenue"``: ``buy_price / 1000`` on a sale, else 0.

Malformed input raises :class:`ConversionError` naming the source, the record index and the
field; no record is ever dropped silently.

Each format lives in its own module under :mod:`trainers.data.formats` (``common``, ``eto``,
``lmrl_twenty_questions``, ``lmrl_car_dealer``); this module holds the format table
(``CONVERTERS``) and the one entry point (:func:`load_trajectories`), and re-exports the formats'
public names.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets

from .formats.common import ConversionError, read_json_records
from .formats.eto import EPISODE_START_PATTERNS, convert_eto, eto_task_category, split_in_context_examples
from .formats.lmrl_car_dealer import (
    CAR_DEALER_FIRST_OBSERVATION,
    CAR_DEALER_SYSTEM_PROMPT,
    car_dealer_brand,
    convert_car_dealer,
)
from .formats.lmrl_twenty_questions import (
    TWENTY_QUESTIONS_FIRST_OBSERVATION,
    TWENTY_QUESTIONS_SYSTEM_PROMPT,
    convert_twenty_questions,
    split_question_answer,
)
from .schema import TrajectoryValidationError, to_dataset
from .twenty_questions_words import TWENTY_QUESTIONS_CATEGORIES, twenty_questions_category

CONVERTERS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "eto": convert_eto,
    "twenty_questions": convert_twenty_questions,
    "car_dealer": convert_car_dealer,
}


def load_trajectories(path: str | Path, format: str, **kwargs) -> datasets.Dataset:
    """Read ``path`` (see :func:`read_json_records`), convert it with the ``format`` converter and
    return a validated :class:`datasets.Dataset` (keyword arguments go to the converter)."""
    if format not in CONVERTERS:
        raise ValueError(f"unknown format {format!r}; expected one of {sorted(CONVERTERS)}")
    records = read_json_records(path)
    if not records:
        raise ValueError(f"{path}: holds no records to convert")
    kwargs.setdefault("source_name", str(path))
    rows = CONVERTERS[format](records, **kwargs)
    try:
        return to_dataset(rows)
    except TrajectoryValidationError as error:  # e.g. a duplicate id, which no single record shows
        raise ConversionError(error.index, error.field, error.problem, str(path)) from error


__all__ = [
    "CAR_DEALER_FIRST_OBSERVATION",
    "CAR_DEALER_SYSTEM_PROMPT",
    "CONVERTERS",
    "ConversionError",
    "EPISODE_START_PATTERNS",
    "TWENTY_QUESTIONS_CATEGORIES",
    "TWENTY_QUESTIONS_FIRST_OBSERVATION",
    "TWENTY_QUESTIONS_SYSTEM_PROMPT",
    "car_dealer_brand",
    "convert_car_dealer",
    "convert_eto",
    "convert_twenty_questions",
    "eto_task_category",
    "load_trajectories",
    "read_json_records",
    "split_in_context_examples",
    "split_question_answer",
    "twenty_questions_category",
]
