"""trainers.config_checks: interval notation, and what check_fields accepts and rejects."""

import math
from dataclasses import dataclass, field

import pytest

from trainers.config_checks import Interval, check_fields


@pytest.mark.parametrize(
    "text,inside,outside",
    [
        ("[0, 1]", [0, 0.5, 1], [-0.01, 1.01]),
        ("(0, 1)", [0.01, 0.99], [0, 1]),
        ("[1, inf)", [1, 10**9], [0, 0.99]),
        ("(0, inf)", [1e-9], [0, -1]),
    ],
)
def test_intervals_hold_what_their_notation_says(text, inside, outside):
    interval = Interval.parse(text)
    assert all(value in interval for value in inside)
    assert not any(value in interval for value in outside)


@pytest.mark.parametrize("text", ["0, 1", "[0; 1]", "[1, 0]", "[a, 1]", "[0, 1, 2]"])
def test_malformed_intervals_are_errors(text):
    with pytest.raises(ValueError):
        Interval.parse(text)


@dataclass
class _Toy:
    mode: str = field(default="a", metadata={"choices": ("a", "b")})
    rate: float = 0.5
    size: int | None = None
    free: float = 1.0


def test_check_fields_names_the_config_and_field():
    ranges = {"rate": "[0, 1]", "size": "[1, inf)"}
    check_fields(_Toy(), ranges)  # defaults pass, None included
    for values, message in [
        ({"mode": "c"}, "_Toy: mode must be one of 'a', 'b', got 'c'"),
        ({"rate": 2.0}, r"_Toy: rate must be in \[0, 1\], got 2.0"),
        ({"size": 0}, "_Toy: size must be >= 1, got 0"),
        ({"size": True}, "_Toy: size must be a number >= 1, got True"),
        ({"free": math.nan}, "_Toy: free must be a finite number, got nan"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_fields(_Toy(**values), ranges)


def test_a_range_for_a_missing_field_is_a_programming_error():
    with pytest.raises(ValueError, match=r"field_ranges names fields it does not have: \['ratio'\]"):
        check_fields(_Toy(), {"ratio": "[0, 1]"})
