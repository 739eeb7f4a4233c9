"""Products: the built-in catalog over the BOOST task categories, and the original file format.

This module gathers the catalog's public names; they live in:

* :mod:`.products`: :class:`Product` (the fields WebShop's engine derives from
  ``items_shuffle*.json`` after its load step, under Python names) and :class:`Catalog`;
* :mod:`.categories` (+ ``categories.json``): the task categories of the BOOST paper's table 4
  (:class:`CategorySpec`, ``CATEGORY_SPECS``, ``WEBSHOP_CATEGORIES``) and their option pools;
* :mod:`.builtin_catalog`: ``build_catalog``, a deterministic catalog from a seed (~3,000 items by
  default) over those categories;
* :mod:`.original_catalog`: ``load_catalog``, which reads the original files
  (``items_shuffle*.json`` for products, ``items_ins_v2*.json`` for per-product attributes) with the
  original's field names and cleaning rules (options lower-cased, ``/`` shown as `` | ``, pricing
  strings parsed into one price or a two-value range, ``DUMMY_ATTR`` when a product has no
  attribute entry), plus ``parse_pricing`` and ``category_label``.
"""

from __future__ import annotations

from .builtin_catalog import VARIANT_RATE, build_catalog
from .categories import CATEGORY_SEPARATOR, CATEGORY_SPECS, WEBSHOP_CATEGORIES, CategorySpec
from .original_catalog import (
    _read_json,  # noqa: F401  (env.py imports it from here)
    category_label,
    load_catalog,
    parse_pricing,
)
from .products import Catalog, Product

__all__ = [
    "CATEGORY_SEPARATOR",
    "CATEGORY_SPECS",
    "Catalog",
    "CategorySpec",
    "Product",
    "VARIANT_RATE",
    "WEBSHOP_CATEGORIES",
    "build_catalog",
    "category_label",
    "load_catalog",
    "parse_pricing",
]
