"""The task categories of the built-in catalog and their option value pools.

The table itself is data, in ``categories.json`` next to this module (shipped as package data):

* ``option_pools``: pool key -> option values (lower-case, as the original stores them after
  loading), in page order (sizes ascending etc.);
* ``option_display``: pool key -> the option name the item page shows (WebShop pages show e.g.
  "size", "color", "flavor name", "style"); several pools share a name (``finish`` and ``shade``
  are both shown as "color");
* ``categories``: the 36 two-level labels of table 4 of the BOOST paper (its caption says 37), each
  with its product types, attribute pool, option pool keys, price bounds and the original's coarse
  ``category`` field. Labels are used verbatim as task categories, with the paper's en dash
  between the two levels.

This module turns the file into :class:`CategorySpec` rows (``CATEGORY_SPECS``, in file order).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CATEGORY_SEPARATOR = " – "
CATEGORY_TABLE_PATH = Path(__file__).with_name("categories.json")


@dataclass(frozen=True)
class CategorySpec:
    """One task category of the built-in catalog: product types, attribute pool, options, prices."""

    label: str  # "Beauty & Personal Care – Fragrance"
    types: tuple[str, ...]  # product types; each also serves as the product's search "query"
    attributes: tuple[str, ...]  # attribute pool (WebShop-style short phrases)
    options: tuple[str, ...]  # keys of OPTION_POOLS
    price_range: tuple[float, float]
    key: str  # the original's coarse "category" field (beauty, electronics, ...)


def _load_table(
    path: Path = CATEGORY_TABLE_PATH,
) -> tuple[dict[str, list[str]], dict[str, str], tuple[CategorySpec, ...]]:
    with path.open(encoding="utf-8") as handle:
        table = json.load(handle)
    pools: dict[str, list[str]] = {key: list(values) for key, values in table["option_pools"].items()}
    display: dict[str, str] = dict(table["option_display"])
    specs = []
    for row in table["categories"]:
        low, high = row["price_range"]
        spec = CategorySpec(
            label=row["label"],
            types=tuple(row["types"]),
            attributes=tuple(row["attributes"]),
            options=tuple(row["options"]),
            price_range=(float(low), float(high)),
            key=row["key"],
        )
        unknown = [key for key in spec.options if key not in pools or key not in display]
        if unknown:
            raise ValueError(f"{path}: category {spec.label!r} names unknown option pool(s) {unknown}")
        specs.append(spec)
    return pools, display, tuple(specs)


OPTION_POOLS, OPTION_DISPLAY, CATEGORY_SPECS = _load_table()
WEBSHOP_CATEGORIES: tuple[str, ...] = tuple(spec.label for spec in CATEGORY_SPECS)

__all__ = [
    "CATEGORY_SEPARATOR",
    "CATEGORY_SPECS",
    "CategorySpec",
    "OPTION_DISPLAY",
    "OPTION_POOLS",
    "WEBSHOP_CATEGORIES",
]
