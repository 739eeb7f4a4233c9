"""Car Dealer: reading the prices a seller's free-text message offers.

Prices are read from free text: "$32,500", "32500", "32.5k", "$33K", "32 grand", "32 thousand",
"thirty two thousand five hundred". Numbers followed by units (miles, mpg, hp, years, months, %)
or by "off" / "discount" / "a month" / "down", and bare years such as 2024, are not offers. When a
message names several prices, :func:`parse_offer` takes the lowest plausible one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_UNITS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_SCALES = {"hundred": 100, "thousand": 1_000, "grand": 1_000, "million": 1_000_000}
_NUMBER_WORD = "|".join([*_UNITS, *_TENS, *_SCALES, "a"])
_WORD_RUN = re.compile(
    rf"\b(?:{'|'.join([*_UNITS, *_TENS])})(?:[\s-]+(?:and[\s-]+)?(?:{_NUMBER_WORD})\b)*", re.IGNORECASE
)


def _words_value(words: Sequence[str]) -> int | None:
    total, current = 0, 0
    for word in words:
        if word in _UNITS:
            current += _UNITS[word]
        elif word in _TENS:
            current += _TENS[word]
        elif word == "hundred":
            current = max(current, 1) * 100
        elif word in ("thousand", "grand", "million"):
            total += max(current, 1) * _SCALES[word]
            current = 0
        elif word in ("and", "a"):
            continue
        else:
            return None
    return total + current


def _spell_out_numbers(text: str) -> str:
    """Replace runs of number words ("thirty-two thousand five hundred") with digits."""

    def replace(match: re.Match) -> str:
        words = [w for w in re.split(r"[\s-]+", match.group(0).lower()) if w]
        while words and words[-1] in ("and", "a"):
            words.pop()
        value = _words_value(words)
        return str(value) if value is not None else match.group(0)

    return _WORD_RUN.sub(replace, text)


_PRICE = re.compile(
    r"(?P<cur>\$|\busd\s*|\bus\$\s*)?"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
    r"(?:\s*(?P<mult>k\b|grand\b|thousand\b|million\b|mil\b|m\b))?"
    r"(?:\s*(?:dollars|bucks|usd)\b)?",
    re.IGNORECASE,
)
_NOT_A_PRICE_AFTER = re.compile(
    r"^\s*(?:-?\s*)?(?:miles?|mi\b|mpg|hp\b|horsepower|years?|yrs?|months?|mos?\b|%|percent|"
    r"days?|km\b|kilomet|weeks?|"
    r"doors?|seats?|cylinders?|liters?|l\b|inch|minutes?|hours?|people|passengers|owners?|speed|"
    r"off\b|discount|rebate|less\b|cheaper|down\b|"
    r"(?:dollars\s+|bucks\s+)?(?:off|a\s+month|per\s+month|/\s*mo|monthly|down|a\s+year))",
    re.IGNORECASE,
)
_NOT_A_PRICE_BEFORE = re.compile(
    r"(?:save|saving|savings\s+of|discount\s+of|rebate\s+of|knock(?:ing)?\s+off)\s+"
    r"(?:you\s+)?(?:an?\s+)?(?:extra\s+)?$",
    re.IGNORECASE,
)


def parse_prices(text: str) -> list[float]:
    """Dollar amounts in ``text``, in order: "$32,500", "32.5k", "32 grand", "thirty two thousand"...

    Units (miles, mpg, years, months, %), discounts ("$2,000 off"), monthly payments and bare
    years (1900-2100 without "$") are skipped, as are bare numbers under 1,000 without a "$".
    """
    text = _spell_out_numbers(text)
    prices: list[float] = []
    for match in _PRICE.finditer(text):
        after = text[match.end() :]
        if _NOT_A_PRICE_AFTER.match(after) or _NOT_A_PRICE_BEFORE.search(text[: match.start()]):
            continue
        number = float(match.group("num").replace(",", ""))
        mult = (match.group("mult") or "").lower()
        if mult in ("k", "grand", "thousand"):
            number *= 1_000
        elif mult in ("million", "mil", "m"):
            number *= 1_000_000
        has_currency = bool(match.group("cur")) or bool(
            re.match(r"\s*(?:dollars|bucks|usd)\b", text[match.end("num") :], re.I)
        )
        if not mult and not has_currency:
            if 1900 <= number <= 2100 and float(number).is_integer() and "," not in match.group("num"):
                continue  # a model year
            if number < 1_000:
                continue
        prices.append(number)
    return prices


def parse_offer(text: str, minimum: float = 1_000.0) -> float | None:
    """The price a seller's message offers: the lowest parsed price of at least ``minimum``."""
    candidates = [p for p in parse_prices(text) if p >= minimum]
    return min(candidates) if candidates else None


__all__ = ["parse_offer", "parse_prices"]
