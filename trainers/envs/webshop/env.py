"""``WebShopEnv``: the WebShop shopping task as a :class:`~trainers.envs.base.TextEnv`."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

from ..base import StepResult, Task, extract_action
from .catalog import Catalog, Product, build_catalog, load_catalog
from .goals import Goal, builtin_goals, goals_from_attribute_file, goals_from_human_file
from .pages import (
    BACK_TO_SEARCH,
    NEXT_PAGE,
    PREV_PAGE,
    Page,
    done_page,
    item_page,
    item_sub_page,
    results_page,
    search_page,
)
from .reward import get_reward
from .search import SEARCH_RETURN_N, SearchEngine

SPLITS = ("train", "dev", "test")
_SPLIT_ALIASES = {"validation": "dev", "val": "dev", "eval": "dev", "train": "train", "dev": "dev", "test": "test"}
REWARD_MODES = ("score", "discounted", "remaining")

SYSTEM_PROMPT = (
    "You are shopping on WebShop for the product the instruction describes. Each observation is the "
    "text of the current web page, its parts separated by [SEP]. Answer with exactly one action per "
    "turn, optionally after a line 'Thought: ...', as 'Action: search[keywords]' to search the shop or "
    "'Action: click[text]' to click a button, a product id, an option value, 'Description', 'Features', "
    "'Reviews', '< Prev', 'Next >', 'Back to Search' or 'Buy Now', exactly as shown on the page. Select "
    "the options the instruction asks for before you click Buy Now. Buying ends the episode; the score "
    "is the share of the requested attributes, options and price limit the purchase meets."
)


@dataclass
class WebShopConfig:
    """Settings of :class:`WebShopEnv` (defaults in brackets; the papers' values where they state one).

    product_file: path to the original ``items_shuffle*.json`` [None: the built-in catalog].
    attribute_file: path to the original ``items_ins_v2*.json`` (product attributes, synthetic
        instructions) [None]. With ``product_file`` it gives product attributes and goals.
    human_goal_file: path to the original ``items_human_ins*.json``; when set, goals come from it
        (the original's ``human_goals=True``) instead of ``attribute_file`` [None].
    num_products: size of the built-in catalog [3000]; spread evenly over the 36 task categories.
    max_file_products: with ``product_file``, keep only its first N products, as the original's
        ``num_products`` [None: all].
    seed: seed of the built-in catalog, goal sampling and price draws for price ranges [0].
    goals_per_product: built-in goals generated per product [1].
    max_goals_per_product: with ``attribute_file``, cap on the option-combination goals per product
        [None: all combinations, as the original].
    max_steps: step cap; the episode ends with reward 0 when it is reached without a purchase
        [15, the usual WebShop cap in ReAct / ETO setups; BOOST does not state its own].
    search_top_k: results a search returns [50, the original's SEARCH_RETURN_N].
    search_anywhere: accept ``search[...]`` on every page, as the original text environment does;
        False accepts it only on the search page, as the web interface does [True].
    reward_mode: ``"score"`` -- the purchase reward is WebShop's score [default]; ``"discounted"``
        -- the score times ``step_discount ** (steps - 1)``, steps counted up to and including the
        click on Buy Now; ``"remaining"`` -- the score times ``(max_steps - steps + 1) / max_steps``.
        The BOOST paper trains on "the attribute match score, discounted by steps to checkout"
        without giving the form; both readings are offered. ``info["score"]`` is always the score.
    step_discount: discount per step for ``reward_mode="discounted"`` [0.9; not stated by BOOST].
    test_size / dev_size: goals in the test and dev splits (the first goals of the shuffled goal
        list, as the original: 500 test, 1000 dev, the rest train) [500 / 1000]; with fewer than
        ``2 * (test_size + dev_size)`` goals the splits are 1/6 and 1/3 of the goals instead.
    """

    product_file: str | None = None
    attribute_file: str | None = None
    human_goal_file: str | None = None
    num_products: int = 3000
    max_file_products: int | None = None
    seed: int = 0
    goals_per_product: int = 1
    max_goals_per_product: int | None = None
    max_steps: int = 15
    search_top_k: int = SEARCH_RETURN_N
    search_anywhere: bool = True
    reward_mode: str = "score"
    step_discount: float = 0.9
    test_size: int = 500
    dev_size: int = 1000

    def __post_init__(self):
        if self.reward_mode not in REWARD_MODES:
            raise ValueError(f"reward_mode={self.reward_mode!r}; expected one of {', '.join(REWARD_MODES)}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if not 0.0 < self.step_discount <= 1.0:
            raise ValueError(f"step_discount must be in (0, 1], got {self.step_discount}")
        if self.search_top_k < 1:
            raise ValueError(f"search_top_k must be >= 1, got {self.search_top_k}")
        if self.product_file is None and (self.attribute_file or self.human_goal_file):
            raise ValueError(
                "attribute_file / human_goal_file need product_file (the items_shuffle*.json they describe)"
            )


_ENGINES: dict[tuple[int, int], tuple[Catalog, SearchEngine]] = {}
# goals and tasks of the built-in catalogs, keyed by the id of a cached catalog and the settings
_BUILTIN_TASKS: dict[tuple, tuple[Catalog, list[Goal], list[Task]]] = {}


def _builtin_engine(catalog: Catalog, top_k: int) -> SearchEngine:
    # Built-in catalogs are cached per (size, seed), so are their indexes: rollouts create many
    # envs. The catalog is kept in the entry so that its id cannot be reused by another object.
    key = (id(catalog), top_k)
    if key not in _ENGINES:
        _ENGINES[key] = (catalog, SearchEngine(catalog, top_k=top_k))
    return _ENGINES[key][1]


class WebShopEnv:
    """WebShop as a text environment (search, results and item pages; ``search[...]`` / ``click[...]``).

    ``WebShopEnv()`` uses the built-in catalog; ``WebShopEnv(product_file=..., attribute_file=...)``
    loads the original data files. Any :class:`WebShopConfig` field can be passed as a keyword.
    """

    name = "webshop"
    system_prompt = SYSTEM_PROMPT

    def __init__(self, config: WebShopConfig | None = None, **kwargs: Any):
        if config is None:
            config = WebShopConfig(**kwargs)
        elif kwargs:
            known = {f.name for f in fields(WebShopConfig)}
            unknown = set(kwargs) - known
            if unknown:
                raise TypeError(f"unknown WebShopConfig field(s): {', '.join(sorted(unknown))}")
            config = WebShopConfig(**{**config.__dict__, **kwargs})
        self.config = config
        self.max_steps = config.max_steps
        if config.product_file is None:
            self.catalog = build_catalog(config.num_products, config.seed)
            self.search_engine = _builtin_engine(self.catalog, config.search_top_k)
            key = (id(self.catalog), config.goals_per_product, config.seed, config.test_size, config.dev_size)
            if key not in _BUILTIN_TASKS:  # rollouts build one env per batch slot: share goals and tasks
                self.goals = builtin_goals(self.catalog, goals_per_product=config.goals_per_product, seed=config.seed)
                # the catalog is kept in the entry so that its id cannot be reused by another object
                _BUILTIN_TASKS[key] = (self.catalog, self.goals, self._make_tasks())
            _, self.goals, self._tasks = _BUILTIN_TASKS[key]
        else:
            self.catalog, entries = load_catalog(
                config.product_file, config.attribute_file, num_products=config.max_file_products, seed=config.seed
            )
            self.search_engine = SearchEngine(self.catalog, top_k=config.search_top_k)
            if config.human_goal_file is not None:
                from .catalog import _read_json

                human = _read_json(config.human_goal_file, "human goal")
                self.goals = goals_from_human_file(self.catalog, human, seed=config.seed)
            else:
                self.goals = goals_from_attribute_file(
                    self.catalog, entries, max_goals_per_product=config.max_goals_per_product, seed=config.seed
                )
            if not self.goals:
                raise ValueError(
                    f"no goals: none of the products in {config.product_file} has an instruction in "
                    f"{config.human_goal_file or config.attribute_file}"
                )
            self._tasks = self._make_tasks()
        self._task_index = {task.task_id: i for i, task in enumerate(self._tasks)}
        self.goal: Goal | None = None
        self.task: Task | None = None
        self._page: Page | None = None
        self.done = True

    # ------------------------------------------------------------------ tasks

    def _split_sizes(self) -> tuple[int, int]:
        n = len(self.goals)
        test, dev = self.config.test_size, self.config.dev_size
        if n < 2 * (test + dev):
            test, dev = n // 6, n // 3
        return test, dev

    def _make_tasks(self) -> list[Task]:
        test, dev = self._split_sizes()
        tasks = []
        for index, goal in enumerate(self.goals):
            split = "test" if index < test else "dev" if index < test + dev else "train"
            tasks.append(Task(f"webshop-{index}", goal.category, goal.to_spec(), split))
        return tasks

    def tasks(self, split: str | None = None) -> list[Task]:
        """Goals as tasks, in a fixed order.

        ``split``: ``train``, ``dev`` (aliases ``validation``, ``val``, ``eval``), ``test``, or None / ``all``.
        """
        if split is None or split == "all":
            return list(self._tasks)
        if split not in _SPLIT_ALIASES:
            raise ValueError(f"unknown WebShop split {split!r}; expected train, dev, test or None")
        wanted = _SPLIT_ALIASES[split]
        return [task for task in self._tasks if task.split == wanted]

    # ------------------------------------------------------------------ episode

    def _resolve(self, task: Task | str | int) -> tuple[Task, Goal]:
        if isinstance(task, int):
            if not 0 <= task < len(self._tasks):
                raise IndexError(f"task index {task} out of range (0..{len(self._tasks) - 1})")
            task = self._tasks[task]
        elif isinstance(task, str):
            if task not in self._task_index:
                raise KeyError(f"unknown WebShop task_id {task!r}")
            task = self._tasks[self._task_index[task]]
        if task.spec:
            goal = Goal.from_spec(task.spec)
        elif task.task_id in self._task_index:
            goal = self.goals[self._task_index[task.task_id]]
        else:
            raise ValueError(f"WebShop task {task.task_id!r} has no spec and is not one of this environment's tasks")
        if goal.asin not in self.catalog:
            raise ValueError(
                f"WebShop task {task.task_id!r}: target asin {goal.asin} is not in the catalog ({self.catalog.source})"
            )
        return task, goal

    def reset(self, task: Task | str | int, seed: int | None = None) -> str:
        """Start an episode on the search page. Episodes are deterministic; ``seed`` is accepted for the protocol."""
        self.task, self.goal = self._resolve(task)
        self.steps = 0
        self.done = False
        self.keywords: str | None = None
        self.results: list[Product] = []
        self.page_number = 1
        self.asin: str | None = None
        self.options: dict[str, str] = {}
        self.sub_page: str | None = None
        self._page = search_page(self.goal.instruction_text)
        return self._page.observation

    @property
    def observation(self) -> str:
        if self._page is None:
            raise RuntimeError("call reset(task) before reading the observation")
        return self._page.observation

    def available_actions(self) -> dict[str, Any]:
        """Like the original's ``get_available_actions``: search bar presence and the lower-cased clickables."""
        if self._page is None:
            raise RuntimeError("call reset(task) first")
        return {"has_search_bar": self._page.kind == "search", "clickables": list(self._page.clickables)}

    def _render_results(self) -> Page:
        return results_page(self.goal.instruction_text, self.results, self.page_number)

    def _render_item(self) -> Page:
        return item_page(self.goal.instruction_text, self.catalog[self.asin])

    def _apply(self, name: str, argument: str) -> tuple[bool, bool]:
        """Apply a parsed action; returns (valid, bought)."""
        page = self._page
        if name == "search":
            query = argument.strip().lower()
            if not query or not (self.config.search_anywhere or page.kind == "search"):
                return False, False
            self.keywords = query
            self.results = self.search_engine.search(query)
            self.page_number, self.asin, self.options, self.sub_page = 1, None, {}, None
            self._page = self._render_results()
            return True, False
        if name != "click":
            return False, False
        target = argument.strip().lower()
        if target == "search" or target not in page.clickables:
            return False, False
        kind, value = page.clickables[target]
        instruction = self.goal.instruction_text
        if kind == "buy":
            return True, True
        if kind == "product":
            self.asin, self.options = value, {}
            self._page = self._render_item()
        elif kind == "option":
            self.options[value] = target
            self._page = self._render_item()
        elif kind == "sub_page":
            self.sub_page = value
            self._page = item_sub_page(instruction, self.catalog[self.asin], value)
        elif value == BACK_TO_SEARCH:
            self.keywords, self.results, self.asin, self.options, self.sub_page = None, [], None, {}, None
            self._page = search_page(instruction)
        elif value == NEXT_PAGE:
            self.page_number += 1
            self._page = self._render_results()
        elif value == PREV_PAGE and page.kind == "results":
            self.page_number -= 1
            self._page = self._render_results()
        elif value == PREV_PAGE and page.kind == "item_sub":
            self.sub_page = None
            self._page = self._render_item()
        elif value == PREV_PAGE and page.kind == "item":
            self.asin, self.options = None, {}
            self._page = self._render_results()
        else:  # pragma: no cover - every clickable kind is handled above
            return False, False
        return True, False

    def _shaped(self, score: float) -> float:
        mode = self.config.reward_mode
        if mode == "discounted":
            return score * self.config.step_discount ** (self.steps - 1)
        if mode == "remaining":
            return score * (self.max_steps - self.steps + 1) / self.max_steps
        return score

    def step(self, action: str) -> StepResult:
        if self._page is None:
            raise RuntimeError("call reset(task) before step(action)")
        if self.done:
            return StepResult(self._page.observation, 0.0, True, {"valid": False, "note": "the episode is over"})
        self.steps += 1
        text = extract_action(str(action))
        match = re.match(r"^\s*([A-Za-z_]+)\s*\[(.*)\]\s*$", text, flags=re.DOTALL)
        name, argument = (match.group(1).lower(), match.group(2)) if match else ("", "")
        valid, bought = self._apply(name, argument) if match else (False, False)
        info: dict[str, Any] = {"valid": valid, "steps": self.steps, "page": self._page.kind}
        reward = 0.0
        if bought:
            product = self.catalog[self.asin]
            score, details = get_reward(product, self.goal, price=product.price, options=self.options)
            reward = self._shaped(score)
            self.done = True
            self._page = done_page(score)
            info.update(
                score=score,
                success=score >= 1.0,
                purchased_asin=product.asin,
                purchased_options=dict(self.options),
                target_asin=self.goal.asin,
                reward_info=details,
                truncated=False,
                page="done",
            )
        elif self.steps >= self.max_steps:
            self.done = True
            info.update(score=0.0, success=False, truncated=True, target_asin=self.goal.asin)
        return StepResult(self._page.observation, reward, self.done, info)


__all__ = ["REWARD_MODES", "SPLITS", "SYSTEM_PROMPT", "WebShopConfig", "WebShopEnv"]
