"""Purchase goals: instruction text, goal attributes, goal options, price ceiling, target product.

Three sources, each deterministic for a seed:

* :func:`builtin_goals` -- goals over the built-in catalog, one per product by default, with
  instruction text in the style of WebShop's human instructions ("i need a long lasting 6.76 fl
  oz eau de toilette, and price lower than 100.00 dollars");
* :func:`goals_from_attribute_file` -- the original's *synthetic* goals from ``items_ins_v2*.json``
  ("Find me ... with tea tree" + one goal per combination of the product's option values
  "with size: 8 fl oz, and color: blue" + the price clause);
* :func:`goals_from_human_file` -- the original's *human* goals from ``items_human_ins*.json``
  (asin -> list of {instruction, instruction_attributes, instruction_options}).

Price ceilings follow the original: the candidate ceilings are the first four multiples of 10 above
the target's price; two are drawn and the larger kept; fewer than two candidates means no ceiling
(1,000,000) and no price clause.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .catalog import Catalog, Product

PRICE_RANGE = [10.0 * i for i in range(1, 100)]
NO_PRICE_LIMIT = 1_000_000.0
GOAL_SHUFFLE_SEED = 233  # the original shuffles its goal list with random.seed(233)


@dataclass
class Goal:
    """One purchase goal (the original's goal dict, with Python names)."""

    asin: str  # target product
    instruction_text: str
    attributes: list[str]
    goal_options: list[str] | dict[str, str]  # values (human goals) or name -> value (synthetic)
    price_upper: float
    query: str  # the target's search query (type reward)
    name: str  # the target's title (type reward)
    product_category: str  # the target's breadcrumb (type reward)
    category: str  # two-level task category label
    weight: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_spec(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Goal:
        known = {f for f in cls.__dataclass_fields__}
        required = ("asin", "instruction_text", "attributes", "goal_options", "price_upper")
        missing = [f for f in required if f not in spec]
        if missing:
            raise ValueError(f"WebShop task spec is missing field(s) {', '.join(missing)}")
        values = {k: v for k, v in spec.items() if k in known}
        values.setdefault("query", "")
        values.setdefault("name", "")
        values.setdefault("product_category", "")
        values.setdefault("category", "")
        return cls(**values)


def price_ceiling(price: float, rng: random.Random) -> tuple[float, str]:
    """(price_upper, price clause) by the original's rule."""
    candidates = [p for p in PRICE_RANGE if p > price][:4]
    if len(candidates) >= 2:
        _, upper = sorted(rng.sample(candidates, 2))
        return upper, f", and price lower than {upper:.2f} dollars"
    return NO_PRICE_LIMIT, ""


def _join(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


_LEADS = ("i need", "i am looking for", "i want", "i'm looking for", "find me", "i would like", "get me")
_OPTION_PHRASES = {
    "color": "in {v}",
    "size": "in size {v}",
    "scent": "with {v} scent",
    "flavor name": "in {v} flavor",
    "style": "for {v}",
    "capacity": "with {v} capacity",
    "item package quantity": "in a {v}",
}


def _article(described: str) -> str:
    if described.endswith("s") and not described.endswith("ss"):
        return ""  # plural product types ("gel pens") take no article
    return "an" if described[:1] in "aeiou" else "a"


def builtin_goal(product: Product, rng: random.Random) -> Goal:
    """One goal whose target is ``product``: 1-3 of its attributes, 0-2 of its options, a price ceiling."""
    attributes = rng.sample(product.attributes, min(len(product.attributes), rng.randint(1, 3)))
    option_names = list(product.options)
    chosen = rng.sample(option_names, min(len(option_names), rng.choice([0, 1, 1, 2, 2])))
    goal_options = {name: rng.choice(product.options[name]) for name in option_names if name in chosen}
    upper, price_text = price_ceiling(product.price, rng)
    described = f"{_join(attributes)} {product.product_type or product.query}"
    phrases = [_OPTION_PHRASES.get(name, "with {v} " + name).format(v=value) for name, value in goal_options.items()]
    lead = rng.choice(_LEADS)
    text = " ".join(part for part in (lead, _article(described), described) if part)
    if phrases:
        text += " " + _join(phrases)
    return Goal(
        asin=product.asin,
        instruction_text=text + price_text,
        attributes=attributes,
        goal_options=list(goal_options.values()),
        price_upper=upper,
        query=product.query,
        name=product.title,
        product_category=product.product_category,
        category=product.category,
        extra={"goal_option_names": list(goal_options)},
    )


def builtin_goals(catalog: Catalog, *, goals_per_product: int = 1, seed: int = 0) -> list[Goal]:
    rng = random.Random(f"webshop-goals-{seed}")
    goals = [builtin_goal(product, rng) for product in catalog.products for _ in range(goals_per_product)]
    random.Random(GOAL_SHUFFLE_SEED + seed).shuffle(goals)
    return goals


def goals_from_attribute_file(
    catalog: Catalog,
    entries: Mapping[str, Mapping[str, Any]],
    *,
    max_goals_per_product: int | None = None,
    seed: int = 0,
) -> list[Goal]:
    """The original's synthetic goals: every product with an ``instruction`` in the attribute file,
    one goal per combination of its option values (capped by ``max_goals_per_product``)."""
    rng = random.Random(f"webshop-goals-{seed}")
    goals: list[Goal] = []
    attribute_counts: dict[str, int] = {}
    for product in catalog.products:
        entry = entries.get(product.asin)
        if not isinstance(entry, Mapping) or not entry.get("instruction"):
            continue
        attributes = list(entry.get("instruction_attributes") or [])
        if not attributes:
            raise ValueError(f"attribute file entry {product.asin}: an instruction without instruction_attributes")
        upper, price_text = price_ceiling(product.price, rng)
        names = sorted(product.options)
        combinations = itertools.product(*(product.options[name] for name in names))
        if max_goals_per_product is not None:
            combinations = itertools.islice(combinations, max_goals_per_product)
        for combination in combinations:
            goal_options = dict(zip(names, combination))
            option_text = ", and ".join(f"{k}: {v}" for k, v in goal_options.items())
            option_text = f" with {option_text}" if option_text else ""
            goals.append(
                Goal(
                    asin=product.asin,
                    instruction_text=f"{entry['instruction']}{option_text}{price_text}",
                    attributes=attributes,
                    goal_options=goal_options,
                    price_upper=upper,
                    query=product.query,
                    name=product.title,
                    product_category=product.product_category,
                    category=product.category,
                )
            )
            for attribute in attributes:
                attribute_counts[attribute] = attribute_counts.get(attribute, 0) + 1
    # the original's sampling weight: rarer attributes make a goal more likely to be drawn
    for goal in goals:
        goal.weight = sum(1.0 / attribute_counts[a] for a in goal.attributes) / len(goal.attributes)
    random.Random(GOAL_SHUFFLE_SEED + seed).shuffle(goals)
    return goals


def goals_from_human_file(catalog: Catalog, entries: Mapping[str, Any], *, seed: int = 0) -> list[Goal]:
    """The original's human goals (``items_human_ins*.json``): asin -> list of instructions."""
    rng = random.Random(f"webshop-goals-{seed}")
    goals: list[Goal] = []
    for product in catalog.products:
        for index, item in enumerate(entries.get(product.asin) or []):
            if not isinstance(item, Mapping) or "instruction" not in item:
                raise ValueError(
                    f"human goal file entry {product.asin}[{index}]: expected an object with 'instruction'"
                )
            attributes = list(item.get("instruction_attributes") or [])
            if not attributes:  # the original skips these
                continue
            upper, price_text = price_ceiling(product.price, rng)
            goals.append(
                Goal(
                    asin=product.asin,
                    instruction_text=str(item["instruction"]).strip(".") + price_text,
                    attributes=attributes,
                    goal_options=list(item.get("instruction_options") or []),
                    price_upper=upper,
                    query=product.query,
                    name=product.title,
                    product_category=product.product_category,
                    category=product.category,
                )
            )
    random.Random(GOAL_SHUFFLE_SEED + seed).shuffle(goals)
    return goals


__all__ = [
    "GOAL_SHUFFLE_SEED",
    "Goal",
    "NO_PRICE_LIMIT",
    "PRICE_RANGE",
    "builtin_goal",
    "builtin_goals",
    "goals_from_attribute_file",
    "goals_from_human_file",
    "price_ceiling",
]
