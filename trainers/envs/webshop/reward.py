"""WebShop's purchase reward, with the structure of ``web_agent_site/engine/goal.py``.

    total = (attribute matches + option matches + [price <= price ceiling])
            / (#goal attributes + #goal options + 1)          then  total *= r_type

* attribute match: a goal attribute matches when some product attribute has a token-set ratio
  > 85 with it, or else when it occurs verbatim in the lower-cased title, features or description;
* option match: counted per *purchased* option (as the original does): a ``size`` option must equal
  a goal option exactly, other options need token-set ratio > 85 with some goal option; an option
  value found in the title / features / description also counts. Values are colour-normalised;
* type factor ``r_type``: 1.0, dropped to 0.5 when neither the search query, nor >= 2 breadcrumb
  levels, nor > 20 % of the goal title's nouns match; 0.1 when under 10 % of those nouns match;
  0.0 when none does.

Differences from the original (see ``docs/environments_webshop.md``): nouns come from a word-list
heuristic (:func:`title_nouns`) instead of spaCy's ``en_core_web_lg`` POS tagger; fuzzy matching
uses rapidfuzz's ``token_set_ratio`` with thefuzz's preprocessing and rounding (thefuzz itself
wraps rapidfuzz); the colour list of :func:`normalize_color` is ours.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from rapidfuzz import fuzz
from rapidfuzz.utils import default_process

EXACT_MATCH_OPTIONS = ("size",)
FUZZY_THRESHOLD = 85

# Colour words an option value is reduced to when it contains one (first hit in this order wins,
# so multi-word shades like "navy blue" reduce to a base colour and match "blue").
_COLOR_WORDS = (
    "beige",
    "black",
    "blue",
    "bronze",
    "brown",
    "burgundy",
    "charcoal",
    "coral",
    "cream",
    "gold",
    "gray",
    "green",
    "grey",
    "ivory",
    "khaki",
    "lavender",
    "maroon",
    "navy",
    "nude",
    "olive",
    "orange",
    "pink",
    "purple",
    "red",
    "rose",
    "silver",
    "tan",
    "teal",
    "turquoise",
    "violet",
    "white",
    "yellow",
)

_STOPWORDS = frozenset(
    "a an and are as at be by for from in into is it its of on or that the this to with without your you "
    "our we i my me per each all any set pcs pc pack count oz fl ounce ounces inch inches ft lb lbs pound "
    "pounds ml gb tb mm cm x de la le du des di del el".split()
)
# Descriptive words that spaCy tags as adjectives / adverbs / verbs in product titles; everything
# else that is alphabetic counts as a noun (brand names are PROPN for spaCy, so they count too).
_NON_NOUNS = frozenset(
    """
    premium classic everyday professional deluxe essential ultra original new best great perfect
    natural organic long lasting free lightweight heavy duty easy quick fast slim soft high low
    durable portable compact adjustable waterproof breathable washable hypoallergenic non toxic
    sensitive dry fresh fine dark light small large medium mini big extra super full half double
    single multi universal wireless rechargeable cordless stainless plated ready safe resistant proof
    friendly based wicking stretch quality modern vintage decorative handmade cute funny unisex
    mens men's womens women's kids baby girls boys red blue black white green pink grey gray brown
    beige purple yellow orange gold silver navy clean install assemble apply carry use shockproof
    scratch slip anti thermal insulated cooling warm cool deep loose regular relaxed short sleeve
    sleeveless assorted smooth refillable dimmable efficient rated dishwasher microwave stick
    """.split()
)


def normalize_color(value: str) -> str:
    """Reduce an option value to its colour word when it has one (``"navy blue"`` -> ``"blue"``)."""
    lowered = value.lower()
    for color in _COLOR_WORDS:
        if re.search(rf"\b{color}\b", lowered):
            return color
    return value


def title_nouns(title: str) -> list[str]:
    """Noun-like words of a product title, lower-cased, in order (duplicates kept, as the original)."""
    words = re.findall(r"[a-z][a-z'\-]*[a-z]|[a-z]", title.lower())
    return [w for w in words if len(w) > 1 and w not in _STOPWORDS and w not in _NON_NOUNS]


def _ratio(a: str, b: str) -> int:
    # thefuzz.token_set_ratio = rapidfuzz's with default preprocessing, rounded to an int
    return int(round(fuzz.token_set_ratio(a, b, processor=default_process)))


def _field(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _page_text(product: Any) -> tuple[str, str, str]:
    return (
        str(_field(product, "title", "")).lower(),
        " ".join(_field(product, "bullet_points", []) or []).lower(),
        str(_field(product, "description", "")).lower(),
    )


def _goal_option_values(goal_options: Any) -> list[str]:
    if isinstance(goal_options, Mapping):
        return [str(v) for v in goal_options.values()]
    return [str(v) for v in (goal_options or [])]


def type_reward(product: Any, goal: Any) -> dict[str, Any]:
    """The type factor and its parts: ``r_type``, ``query_match``, ``category_match``, ``title_score``."""
    query_match = str(_field(product, "query", "")) == str(_field(goal, "query", ""))
    purchased_levels = {x.strip() for x in str(_field(product, "product_category", "")).split("›")}
    goal_levels = {x.strip() for x in str(_field(goal, "product_category", "")).split("›")}
    category_match = len((purchased_levels & goal_levels) - {""}) >= 2
    purchased_nouns = title_nouns(str(_field(product, "title", "")))
    desired_nouns = title_nouns(str(_field(goal, "name", "")))
    if not desired_nouns:
        title_score = 0.2
    else:
        title_score = len(set(purchased_nouns) & set(desired_nouns)) / len(desired_nouns)
    r_type = 1.0
    if not (query_match or category_match or title_score > 0.2):
        r_type = 0.5
    if title_score < 0.1:
        r_type = 0.1
    if title_score == 0.0:
        r_type = 0.0
    return {"r_type": r_type, "query_match": query_match, "category_match": category_match, "title_score": title_score}


def attribute_reward(product: Any, goal_attributes: Sequence[str]) -> tuple[float, int]:
    """(fraction of goal attributes matched, number matched)."""
    title, bullets, description = _page_text(product)
    product_attributes = list(_field(product, "attributes", []) or [])
    matches = 0
    for goal_attribute in goal_attributes:
        if any(_ratio(p, goal_attribute) > FUZZY_THRESHOLD for p in product_attributes):
            matches += 1
        elif goal_attribute in title or goal_attribute in bullets or goal_attribute in description:
            matches += 1
    return (matches / len(goal_attributes) if goal_attributes else 0.0), matches


def option_reward(product: Any, goal_options: Any, purchased_options: Mapping[str, str]) -> tuple[float | None, int]:
    """(fraction of goal options matched or None when the goal has none, number of matches)."""
    title, bullets, description = _page_text(product)
    goal_values = [normalize_color(v) for v in _goal_option_values(goal_options)]
    matches = 0
    for name, value in purchased_options.items():
        value = normalize_color(value)
        matched = False
        if name.lower() in EXACT_MATCH_OPTIONS:
            matched = value in goal_values
        else:
            matched = any(_ratio(g, value) > FUZZY_THRESHOLD for g in goal_values)
        if not matched and (value in title or value in bullets or value in description):
            matched = True
        matches += int(matched)
    return (matches / len(goal_values) if goal_values else None), matches


def get_reward(
    product: Any, goal: Any, price: float, options: Mapping[str, str] | None = None
) -> tuple[float, dict[str, Any]]:
    """Score buying ``product`` at ``price`` with the chosen ``options`` against ``goal``.

    ``product`` and ``goal`` may be the dataclasses of this package or plain dicts with the same
    field names (product: title, attributes, bullet_points, description, query, product_category;
    goal: attributes, goal_options, price_upper, query, name, product_category).
    """
    options = dict(options or {})
    goal_attributes = list(_field(goal, "attributes", []) or [])
    goal_options = _field(goal, "goal_options", []) or []
    n_goal_options = len(_goal_option_values(goal_options))
    price_upper = float(_field(goal, "price_upper", 1_000_000.0))
    r_price = price <= price_upper if price_upper > 0 else None
    type_info = type_reward(product, goal)
    r_attribute, n_attribute = attribute_reward(product, goal_attributes)
    r_option, n_option = option_reward(product, goal_options, options)
    denominator = len(goal_attributes) + n_goal_options + 1
    total = (n_attribute + n_option + int(bool(r_price))) / denominator
    total *= type_info["r_type"]
    info = {
        **type_info,
        "r_att": r_attribute,
        "w_att": len(goal_attributes) / denominator,
        "num_attr_matches": n_attribute,
        "num_option_matches": n_option,
    }
    if r_option is not None:
        info["r_option"] = r_option
        info["w_option"] = n_goal_options / denominator
    if r_price is not None:
        info["r_price"] = bool(r_price)
        info["w_price"] = 1 / denominator
    return total, info


__all__ = [
    "EXACT_MATCH_OPTIONS",
    "FUZZY_THRESHOLD",
    "attribute_reward",
    "get_reward",
    "normalize_color",
    "option_reward",
    "title_nouns",
    "type_reward",
]
