"""Text pages in the original's ``text`` observation mode: visible strings joined with `` [SEP] ``.

The layout follows the WebShop episodes that ETO and TraTree publish: the search page starts
with ``WebShop``; results pages show ``Back to Search``,
``Page N (Total results: T)``, ``< Prev`` / ``Next >`` when there is such a page, then ASIN,
title and price of up to 10 products; item pages show ``Back to Search``, ``< Prev``, each option
name followed by its values, the title, ``Price: ...``, ``Rating: ...``, ``Description``,
``Features``, ``Reviews`` and ``Buy Now``. Each page also returns its clickables, keyed by the
lower-cased text an agent writes inside ``click[...]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .catalog import Product

SEP = " [SEP] "
PRODUCT_WINDOW = 10  # results per page, as the original

BACK_TO_SEARCH = "Back to Search"
NEXT_PAGE = "Next >"
PREV_PAGE = "< Prev"
BUY_NOW = "Buy Now"
SUB_PAGES = ("Description", "Features", "Reviews")


@dataclass
class Page:
    """A rendered page: what the agent sees and what it may click."""

    kind: str  # "search", "results", "item", "item_sub", "done"
    texts: list[str]
    # lower-cased click target -> (kind of clickable, the value it carries)
    clickables: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def observation(self) -> str:
        return SEP.join(t.strip() for t in self.texts if t.strip())


def _instruction(text: str) -> list[str]:
    return ["Instruction:", text]


def search_page(instruction: str) -> Page:
    # the "Search" button is not clickable: the original excludes it from the clickables
    return Page("search", ["WebShop", *_instruction(instruction), "Search"])


def results_page(instruction: str, results: list[Product], page: int) -> Page:
    total = len(results)
    texts = [*_instruction(instruction), BACK_TO_SEARCH, f"Page {page} (Total results: {total})"]
    clickables = {BACK_TO_SEARCH.lower(): ("button", BACK_TO_SEARCH)}
    if page > 1:
        texts.append(PREV_PAGE)
        clickables[PREV_PAGE.lower()] = ("button", PREV_PAGE)
    if page * PRODUCT_WINDOW < total:
        texts.append(NEXT_PAGE)
        clickables[NEXT_PAGE.lower()] = ("button", NEXT_PAGE)
    for product in results[(page - 1) * PRODUCT_WINDOW : page * PRODUCT_WINDOW]:
        texts += [product.asin, product.title, product.price_tag]
        clickables[product.asin.lower()] = ("product", product.asin)
    return Page("results", texts, clickables)


def item_page(instruction: str, product: Product) -> Page:
    texts = [*_instruction(instruction), BACK_TO_SEARCH, PREV_PAGE]
    clickables = {BACK_TO_SEARCH.lower(): ("button", BACK_TO_SEARCH), PREV_PAGE.lower(): ("button", PREV_PAGE)}
    for name, values in product.options.items():
        texts.append(name)
        for value in values:
            texts.append(value)
            # a value shared by two option types selects the later one, as the original's dict does
            clickables[value.lower()] = ("option", name)
    texts += [product.title, f"Price: {product.price_tag}", f"Rating: {product.rating}", *SUB_PAGES, BUY_NOW]
    for name in SUB_PAGES:
        clickables[name.lower()] = ("sub_page", name)
    clickables[BUY_NOW.lower()] = ("buy", BUY_NOW)
    return Page("item", texts, clickables)


def item_sub_page(instruction: str, product: Product, sub_page: str) -> Page:
    texts = [*_instruction(instruction), BACK_TO_SEARCH, PREV_PAGE]
    if sub_page == "Description":
        texts.append(product.description)
    elif sub_page == "Features":
        texts += product.bullet_points
    elif sub_page == "Reviews":
        for review in product.reviews:
            texts += [str(review.get("title", "")), str(review.get("score", "")), str(review.get("body", ""))]
    else:
        raise ValueError(f"unknown item sub page {sub_page!r}; expected one of {', '.join(SUB_PAGES)}")
    clickables = {BACK_TO_SEARCH.lower(): ("button", BACK_TO_SEARCH), PREV_PAGE.lower(): ("button", PREV_PAGE)}
    return Page("item_sub", texts, clickables)


def done_page(score: float) -> Page:
    return Page("done", ["Thank you for shopping with us!", "Your score (min 0.0, max 1.0)", f"{score}"])


__all__ = [
    "BACK_TO_SEARCH",
    "BUY_NOW",
    "NEXT_PAGE",
    "PREV_PAGE",
    "PRODUCT_WINDOW",
    "Page",
    "SEP",
    "SUB_PAGES",
    "done_page",
    "item_page",
    "item_sub_page",
    "results_page",
    "search_page",
]
