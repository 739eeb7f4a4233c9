"""The original WebShop product files: ``items_shuffle*.json`` (+ ``items_ins_v2*.json``) -> a catalog.

``load_catalog`` reads them with the original's field names and cleaning rules (options
lower-cased, ``/`` shown as `` | ``, pricing strings parsed into one price or a two-value range,
``DUMMY_ATTR`` when a product has no attribute entry).
"""

from __future__ import annotations

import json
import random
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .categories import CATEGORY_SEPARATOR
from .products import Catalog, Product


def _read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"WebShop {what} file not found: {path}")
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"WebShop {what} file {path} is not valid JSON: {error}") from error


def parse_pricing(pricing: Any) -> list[float]:
    """The original's pricing rule: ``"$12.99"`` -> [12.99]; ``"$10.00 - $15.50"`` -> [10.0, 15.5]; empty -> [100.0]."""
    if not pricing:
        return [100.0]
    if isinstance(pricing, (int, float)):
        return [float(pricing)]
    if isinstance(pricing, list):
        return [float(p) for p in pricing[:2]] or [100.0]
    values = []
    for piece in str(pricing).split("$")[1:]:
        digits = re.sub(r"[^\d.]", "", piece)
        try:
            values.append(float(Decimal(digits)))
        except InvalidOperation:
            continue
    return values[:2] or [100.0]


def category_label(product_category: str) -> str:
    """Two-level task label from a breadcrumb: ``"A › B › C"`` -> ``"A – B"`` (BOOST appendix E.3)."""
    levels = [level.strip() for level in product_category.split("›") if level.strip()]
    return CATEGORY_SEPARATOR.join(levels[:2]) if levels else "unknown"


def load_catalog(
    product_file: str | Path,
    attribute_file: str | Path | None = None,
    *,
    num_products: int | None = None,
    seed: int = 0,
) -> tuple[Catalog, dict[str, dict[str, Any]]]:
    """Load ``items_shuffle*.json`` (+ ``items_ins_v2*.json``) the way WebShop's engine does.

    Returns the catalog and the attribute file's entries (asin -> {attributes, instruction,
    instruction_attributes}), which :func:`~trainers.envs.webshop.goals.goals_from_attribute_file`
    turns into goals. Products with asin ``"nan"``, asins longer than 10 characters or repeated
    asins are skipped, as in the original. A product whose price is a range gets a price drawn
    uniformly inside it, from ``seed`` (the original draws it unseeded).
    """
    raw = _read_json(product_file, "product")
    if not isinstance(raw, list):
        raise ValueError(
            f"WebShop product file {product_file} must hold a JSON list of products, got {type(raw).__name__}"
        )
    attributes: dict[str, dict[str, Any]] = {}
    if attribute_file is not None:
        attributes = _read_json(attribute_file, "attribute")
        if not isinstance(attributes, dict):
            raise ValueError(
                f"WebShop attribute file {attribute_file} must map asin -> entry, got {type(attributes).__name__}"
            )
    if num_products is not None:
        raw = raw[:num_products]
    rng = random.Random(f"webshop-prices-{seed}")
    products: list[Product] = []
    seen: set[str] = set()
    required = ("asin", "name", "product_category", "query")
    # the full product file has 1.18M items: show progress on anything that large
    progress = tqdm(raw, desc="loading WebShop products", unit="item", disable=len(raw) < 20_000)
    for index, item in enumerate(progress):
        if not isinstance(item, dict):
            raise ValueError(
                f"WebShop product file {product_file}, item {index}: expected an object, got {type(item).__name__}"
            )
        missing = [key for key in required if key not in item]
        if missing:
            raise ValueError(
                f"WebShop product file {product_file}, item {index}: missing field(s) {', '.join(missing)}"
            )
        asin = str(item["asin"])
        if asin == "nan" or len(asin) > 10 or asin in seen:
            continue
        seen.add(asin)
        pricing = parse_pricing(item.get("pricing"))
        price = pricing[0] if len(pricing) == 1 else rng.uniform(pricing[0], pricing[1])
        options: dict[str, list[str]] = {}
        for name, contents in (item.get("customization_options") or {}).items():
            if contents is None:
                continue
            options[name.lower()] = [str(c["value"]).strip().replace("/", " | ").lower() for c in contents]
        bullets = item.get("small_description") or []
        bullets = bullets if isinstance(bullets, list) else [bullets]
        entry = attributes.get(asin, {})
        # the original keeps an entry's list even when empty; DUMMY_ATTR only when there is no entry
        product_attributes = entry.get("attributes") if isinstance(entry, dict) and "attributes" in entry else None
        products.append(
            Product(
                asin=asin,
                title=item["name"],
                category=category_label(item["product_category"]),
                product_category=item["product_category"],
                query=str(item["query"]).lower().strip(),
                attributes=list(product_attributes) if product_attributes is not None else ["DUMMY_ATTR"],
                options=options,
                pricing=pricing,
                price=price,
                description=item.get("full_description") or "",
                # the original reads ratings from a separate reviews file; without it every page says N.A.
                bullet_points=[str(b) for b in bullets],
                rating="N.A.",
                coarse_category=str(item.get("category", "")),
            )
        )
    if not products:
        raise ValueError(f"WebShop product file {product_file} holds no usable product")
    return Catalog(products, source=str(product_file)), attributes


__all__ = ["category_label", "load_catalog", "parse_pricing"]
