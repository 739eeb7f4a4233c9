"""The catalog's data types: :class:`Product` (one item) and :class:`Catalog` (items by asin).

A :class:`Product` holds the fields WebShop's engine derives from ``items_shuffle*.json`` after its
load step (``Title``, ``Description``, ``BulletPoints``, ``Attributes``, lower-cased ``options``,
``pricing``, ``Price`` tag, ``query``, ``product_category``), under Python names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Product:
    """One catalog item (what WebShop's engine keeps per product after loading)."""

    asin: str
    title: str
    category: str  # two-level task category label (BOOST table 4 style)
    product_category: str  # breadcrumb joined with " › " (used by the type reward)
    query: str  # the search query the product was scraped under (used by the type reward)
    attributes: list[str]
    options: dict[str, list[str]]  # option name -> lower-case values, in page order
    pricing: list[float]  # one price, or [low, high]
    price: float  # the price the reward compares with the goal's ceiling
    description: str = ""
    bullet_points: list[str] = field(default_factory=list)
    reviews: list[dict[str, Any]] = field(default_factory=list)
    rating: str = "N.A."
    coarse_category: str = ""  # the original's "category" field (beauty, fashion, ...)
    product_type: str = ""  # built-in catalog only: the product type the title names

    @property
    def price_tag(self) -> str:
        # Same rendering as the original engine: "$12.99" or "$10.5 to $15.0" (Python float repr).
        if len(self.pricing) == 1:
            return f"${self.pricing[0]}"
        return f"${self.pricing[0]} to ${self.pricing[1]}"


@dataclass
class Catalog:
    products: list[Product]
    source: str = "builtin"

    def __post_init__(self):
        self.by_asin: dict[str, Product] = {}
        for product in self.products:
            if product.asin in self.by_asin:
                raise ValueError(f"duplicate asin {product.asin!r} in the {self.source} catalog")
            self.by_asin[product.asin] = product

    def __len__(self) -> int:
        return len(self.products)

    def __getitem__(self, asin: str) -> Product:
        return self.by_asin[asin.upper()]

    def __contains__(self, asin: str) -> bool:
        return asin.upper() in self.by_asin


__all__ = ["Catalog", "Product"]
