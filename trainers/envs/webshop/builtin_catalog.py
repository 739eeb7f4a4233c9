"""The built-in catalog: deterministic synthetic products over the BOOST task categories.

``build_catalog`` spreads ``num_products`` items evenly over ``CATEGORY_SPECS`` (from
:mod:`.categories`), with synthetic brands, titles, attributes, options, prices, features and
reviews; a share of them (``VARIANT_RATE``) are near-duplicate variants of an earlier product of
the same type.
"""

from __future__ import annotations

import random
from functools import lru_cache

from .categories import CATEGORY_SEPARATOR, CATEGORY_SPECS, OPTION_DISPLAY, OPTION_POOLS, CategorySpec
from .products import Catalog, Product

_BRAND_HEADS = [
    "Lu",
    "Ve",
    "Mar",
    "Ko",
    "Sol",
    "Ari",
    "Bel",
    "Cor",
    "Dan",
    "El",
    "Fen",
    "Gra",
    "Hal",
    "Iso",
    "Jun",
    "Kai",
    "Lor",
    "Mio",
    "Nor",
    "Ost",
    "Pra",
    "Qui",
    "Ros",
    "Sev",
    "Tor",
    "Ula",
]
_BRAND_TAILS = ["mira", "vo", "den", "ska", "trix", "lane", "nova", "bury", "tec", "ora", "well", "crest"]
VARIANT_RATE = 0.4  # share of built-in products generated as a variant of an earlier one of the same type
_SELLING_POINTS = ["Premium", "Classic", "Everyday", "Professional", "Deluxe", "Essential", "Ultra", "Original"]


def _asin(rng: random.Random, taken: set[str]) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    while True:
        asin = "B0" + "".join(rng.choice(alphabet) for _ in range(8))
        if asin not in taken:
            taken.add(asin)
            return asin


_SMALL_WORDS = frozenset({"of", "and", "for", "with", "de", "in"})


def _title_case(text: str) -> str:
    words = []
    for position, word in enumerate(text.split()):
        if position and word in _SMALL_WORDS:
            words.append(word)
            continue
        letter = next((i for i, c in enumerate(word) if c.isalpha()), None)
        if letter is None or any(c.isdigit() for c in word):
            words.append(word)
        else:
            words.append(word[:letter] + word[letter].upper() + word[letter + 1 :])
    return " ".join(words)


def _price(rng: random.Random, low: float, high: float) -> float:
    # Log-uniform between the category's bounds, ending in .99/.49/.95/.00 like shop prices.
    value = low * (high / low) ** rng.random()
    cents = rng.choice([0.99, 0.49, 0.95, 0.0])
    return round(max(1.0, int(value) + cents), 2)


def _make_product(
    rng: random.Random,
    spec: CategorySpec,
    product_type: str,
    asin: str,
    brands: list[str],
    base: Product | None = None,
) -> Product:
    if base is None:
        brand = rng.choice(brands)
        attributes = rng.sample(list(spec.attributes), rng.randint(3, 5))
    else:
        # A variant listing of ``base`` (same brand and type, one attribute swapped): shops list
        # many near-duplicates, and telling them apart is what makes reading pages worth it.
        brand = base.title.split()[0]
        attributes = list(base.attributes)
        unused = [a for a in spec.attributes if a not in attributes]
        if unused:
            attributes[rng.randrange(len(attributes))] = rng.choice(unused)
    options: dict[str, list[str]] = {}
    for key in spec.options:
        # A few products have no choice for an option type, like many real listings.
        if rng.random() < 0.15:
            continue
        pool = OPTION_POOLS[key]
        values = rng.sample(pool, rng.randint(2, min(5, len(pool))))
        values.sort(key=pool.index)  # page order follows the pool (sizes ascending etc.)
        options.setdefault(OPTION_DISPLAY[key], values)
    # The title names the brand, the product type and one or two of its attributes; the remaining
    # attributes appear only in features / description, so reading the page matters.
    in_title = attributes[: rng.randint(1, 2)]
    tail_option = ""
    if options and rng.random() < 0.5:
        name, values = next(iter(options.items()))
        tail_option = f", {_title_case(values[0])}"
    selling_point = rng.choice(_SELLING_POINTS)
    title = f"{brand} {selling_point} {_title_case(' '.join(in_title))} {_title_case(product_type)}{tail_option}"
    low, high = spec.price_range
    price = _price(rng, low, high)
    if rng.random() < 0.1:  # a price range, as some original listings have
        pricing = [price, int(price * rng.uniform(1.1, 1.6)) + 0.99]
        price = round(rng.uniform(pricing[0], pricing[1]), 2)
    else:
        pricing = [price]
    domain, sub = spec.label.split(CATEGORY_SEPARATOR)
    features = [f"{attribute.upper()}: this {product_type} is {attribute}." for attribute in attributes]
    features.append(f"WHAT YOU GET: {brand} {product_type} and a hassle-free 30-day return policy.")
    description = (
        f"The {brand} {product_type} is made for everyday use. "
        f"{' '.join(f'It is {a}.' for a in attributes[1:])} Backed by {brand} customer service."
    )
    reviews = []
    for _ in range(rng.randint(0, 2)):
        score = rng.randint(3, 5)
        reviews.append(
            {
                "title": rng.choice(["Works as described", "Great value", "Would buy again", "Decent quality"]),
                "score": score,
                "body": f"I bought this {product_type} a month ago. "
                + rng.choice(["Happy with it.", "Does the job.", "Good for the price."]),
            }
        )
    rating = f"{sum(r['score'] for r in reviews) / len(reviews):.1f}" if reviews else "N.A."
    return Product(
        asin=asin,
        title=title,
        category=spec.label,
        product_category=f"{domain} › {sub} › {_title_case(product_type)}",
        query=product_type,
        attributes=attributes,
        options=options,
        pricing=pricing,
        price=price,
        description=description,
        bullet_points=features,
        reviews=reviews,
        rating=rating,
        coarse_category=spec.key,
        product_type=product_type,
    )


@lru_cache(maxsize=8)
def build_catalog(num_products: int = 3000, seed: int = 0) -> Catalog:
    """A deterministic catalog of ``num_products`` items spread evenly over the task categories.

    The same ``(num_products, seed)`` always gives the same products, in the same order (results
    are cached per process: treat the returned catalog as read-only).
    """
    if num_products < len(CATEGORY_SPECS):
        raise ValueError(
            f"num_products={num_products} is too small: the built-in catalog needs at least one product "
            f"per category ({len(CATEGORY_SPECS)})"
        )
    rng = random.Random(f"webshop-catalog-{seed}")
    brands = sorted({head + tail for head in _BRAND_HEADS for tail in _BRAND_TAILS})
    brands = rng.sample(brands, 120)
    taken: set[str] = set()
    products = []
    by_type: dict[tuple[str, str], list[Product]] = {}
    for index in range(num_products):
        spec = CATEGORY_SPECS[index % len(CATEGORY_SPECS)]
        product_type = spec.types[(index // len(CATEGORY_SPECS)) % len(spec.types)]
        siblings = by_type.setdefault((spec.label, product_type), [])
        base = rng.choice(siblings) if siblings and rng.random() < VARIANT_RATE else None
        product = _make_product(rng, spec, product_type, _asin(rng, taken), brands, base)
        siblings.append(product)
        products.append(product)
    return Catalog(products, source="builtin")


__all__ = ["VARIANT_RATE", "build_catalog"]
