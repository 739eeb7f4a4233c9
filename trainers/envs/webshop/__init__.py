"""WebShop (Yao et al., 2022) as a text environment, with a built-in catalog over BOOST's categories.

What matches the original (princeton-nlp/WebShop):

* pages in its ``text`` observation mode, visible strings joined with `` [SEP] ``, laid out like
  the episodes ETO / TraTree publish; 10 results per page with ``Next >`` / ``< Prev``; up to 50
  results per search; ``Description`` / ``Features`` / ``Reviews`` sub-pages; ``Buy Now`` ends
  the episode;
* actions ``search[query]`` and ``click[text]`` (case-insensitive, only on clickables of the
  current page); anything else leaves the page unchanged with reward 0, and the step counts;
* the purchase reward of ``web_agent_site/engine/goal.py`` (attribute, option and price matches
  over their count + 1, times the type factor 1.0 / 0.5 / 0.1 / 0.0; fuzzy token-set ratio > 85);
* goals built from the original files (``items_shuffle*.json`` + ``items_ins_v2*.json``, or
  ``items_human_ins*.json``), price ceilings drawn by the original's rule, goal list shuffled with
  the original's seed 233 and split 500 test / 1000 dev / rest train.

What differs (details in ``docs/environments_webshop.md``):

* product data: the 1.18M scraped Amazon products are not distributed here, so the default
  catalog is generated (deterministically from a seed, ~3,000 items) over the 36 two-level
  categories listed in table 4 of the BOOST paper (its caption says 37), with synthetic brands,
  titles, attributes, options, prices, features and reviews, and goals whose instructions imitate
  the human ones; the original files load when given;
* search is BM25 from ``bm25s`` (title, description, first feature, option values; light plural
  stemming) instead of Pyserini / Lucene, so rankings differ;
* the type factor's nouns come from a word-list heuristic, not spaCy's POS tagger; the colour
  normalisation list is ours; price ranges draw their price from a seed;
* the done page shows only the thank-you line and the score; search is accepted on every page
  (like the gym text environment; ``search_anywhere=False`` restricts it to the search page);
* ``reward_mode="discounted"`` / ``"remaining"`` give the BOOST training reward (score discounted
  by steps to checkout), whose exact form the paper does not state.

Offline data: the paper's 2,000 GPT-4 episodes are not available; ``scripted_trajectories`` plays
tasks with a text-only :class:`HeuristicShopper` (imperfect, mixed outcomes) or an oracle
(successful demonstrations) and returns trajectory-schema rows.
"""

from .catalog import CATEGORY_SPECS, WEBSHOP_CATEGORIES, Catalog, Product, build_catalog, load_catalog
from .env import REWARD_MODES, SYSTEM_PROMPT, WebShopConfig, WebShopEnv
from .goals import Goal, builtin_goals, goals_from_attribute_file, goals_from_human_file
from .reward import get_reward, normalize_color, title_nouns, type_reward
from .search import SearchEngine

_LAZY = {"HeuristicShopper", "scripted_trajectories"}


def __getattr__(name):
    # the scripted shoppers build trajectory rows, whose schema module imports `datasets`: load on use
    if name in _LAZY:
        from . import scripted

        return getattr(scripted, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "HeuristicShopper",
    "scripted_trajectories",
    "CATEGORY_SPECS",
    "Catalog",
    "Goal",
    "Product",
    "REWARD_MODES",
    "SYSTEM_PROMPT",
    "SearchEngine",
    "WEBSHOP_CATEGORIES",
    "WebShopConfig",
    "WebShopEnv",
    "build_catalog",
    "builtin_goals",
    "get_reward",
    "goals_from_attribute_file",
    "goals_from_human_file",
    "load_catalog",
    "normalize_color",
    "title_nouns",
    "type_reward",
]
