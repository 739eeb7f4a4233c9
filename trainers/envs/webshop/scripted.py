"""Scripted WebShop shoppers and the offline trajectories they produce.

The BOOST paper's offline WebShop data are 2,000 GPT-4 episodes, which cannot be fetched here.
Two scripted stand-ins produce trajectory-schema rows in the ETO style (``Thought: ...\\nAction:
...`` turns, page texts as observations):

* :class:`HeuristicShopper` -- reads only the page texts of the conversation, like an LLM agent:
  searches the instruction's keywords, clicks the result whose title shares most words with the
  instruction (skipping products over the price limit and ones it already opened), selects the
  option values the instruction mentions, and buys; it looks at up to ``max_result_pages`` result
  pages and ``max_products`` products before buying the best one seen. It succeeds on some goals
  and fails on others, which is what offline RL data needs. It is also a rollout policy:
  ``HeuristicShopper()(histories) -> actions`` for :func:`trainers.envs.rollout.rollout`.
* ``policy="oracle"`` in :func:`scripted_trajectories` -- knows the target product (from the
  environment's goal), pages to it, selects the goal's options and buys: successful
  demonstrations whose every action is still grounded in what the page shows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from tqdm.auto import tqdm

from ...data.schema import make_trajectory
from ..base import Task, extract_action
from .env import WebShopEnv
from .pages import BACK_TO_SEARCH, BUY_NOW, NEXT_PAGE, PREV_PAGE, SEP, SUB_PAGES

_FILLER = re.compile(
    r"^(i need|i am looking for|i'm looking for|i want|i would like|find me|get me|look for|"
    r"i am searching for|show me)\s+(a |an |the |some )?",
)
_PRICE = re.compile(r",?\s*and price lower than ([\d.]+) dollars")
_OBSERVATION_PREFIX = re.compile(r"^\s*Observation:\s*")
_STOP = frozenset("a an the and or of for with in on to my me i is it that this be size color".split())
_OPTION_NAMES = frozenset({"size", "color", "scent", "flavor name", "style", "capacity", "item package quantity"})


def instruction_of(observation: str) -> str:
    """The instruction text of a WebShop page (``Instruction: [SEP] <text> [SEP] ...``)."""
    parts = observation.split(SEP)
    if "Instruction:" in parts:
        index = parts.index("Instruction:")
        if index + 1 < len(parts):
            return parts[index + 1]
    return ""


def price_limit(instruction: str) -> float | None:
    match = _PRICE.search(instruction)
    return float(match.group(1)) if match else None


def search_keywords(instruction: str) -> str:
    """The instruction without its price clause and leading request words."""
    text = _PRICE.sub("", instruction.lower()).strip().rstrip(".")
    return _FILLER.sub("", text).strip()


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9][a-z0-9'\-.]*[a-z0-9]|[a-z0-9]", text.lower()) if w not in _STOP}


def _parse_price(tag: str) -> float | None:
    values = re.findall(r"\$([\d.]+)", tag)
    try:
        return float(values[0]) if values else None
    except ValueError:
        return None


def parse_results(observation: str) -> list[tuple[str, str, str]]:
    """(asin, title, price tag) triples of a results page."""
    parts = observation.split(SEP)
    start = next((i for i, p in enumerate(parts) if p.startswith("Page ") and "(Total results:" in p), None)
    if start is None:
        return []
    i = start + 1
    while i < len(parts) and parts[i] in (PREV_PAGE, NEXT_PAGE):
        i += 1
    items = []
    while i + 2 < len(parts):
        items.append((parts[i], parts[i + 1], parts[i + 2]))
        i += 3
    return items


def parse_item(observation: str) -> tuple[list[str], str, str]:
    """(option-area strings, title, price tag) of an item page."""
    parts = observation.split(SEP)
    price_at = next((i for i, p in enumerate(parts) if p.startswith("Price: ")), None)
    if price_at is None or PREV_PAGE not in parts:
        return [], "", ""
    start = parts.index(PREV_PAGE) + 1
    return parts[start : price_at - 1], parts[price_at - 1], parts[price_at][len("Price: ") :]


class HeuristicShopper:
    """A text-only scripted shopper (see the module docstring). Deterministic.

    Args:
        max_result_pages: result pages it is willing to look through (default 2).
        max_products: products it opens before buying the best one seen (default 2).
        thoughts: write ``Thought: ...`` lines before each action (default True).
    """

    def __init__(self, max_result_pages: int = 2, max_products: int = 2, thoughts: bool = True):
        self.max_result_pages = max_result_pages
        self.max_products = max_products
        self.thoughts = thoughts

    def _turn(self, thought: str, action: str) -> str:
        return agent_turn(thought, action, self.thoughts)

    def act(self, messages: Sequence[dict[str, str]]) -> str:
        """The next agent turn for a conversation (system / user observations / assistant turns)."""
        # pages may carry ETO's "Observation:" prefix when the history comes from published data
        observations = [_OBSERVATION_PREFIX.sub("", m["content"]) for m in messages if m["role"] == "user"]
        actions = [extract_action(m["content"]) for m in messages if m["role"] == "assistant"]
        page = observations[-1] if observations else ""
        instruction = instruction_of(page) or next((instruction_of(o) for o in observations if instruction_of(o)), "")
        wanted = _words(search_keywords(instruction))
        limit = price_limit(instruction)
        opened = [a[len("click[") : -1].lower() for a in actions if a.lower().startswith("click[b")]
        parts = page.split(SEP)

        if parts and parts[0] == "WebShop":  # search page
            query = search_keywords(instruction)
            return self._turn("I should search for the product the instruction describes.", f"search[{query}]")

        if any(p.startswith("Page ") and "(Total results:" in p for p in parts):  # results page
            candidates = []
            for asin, title, tag in parse_results(page):
                price = _parse_price(tag)
                if asin.lower() in opened or (limit is not None and price is not None and price > limit):
                    continue
                candidates.append((len(wanted & _words(title)), asin))
            pages_seen = 1 + sum(a.lower() == "click[next >]" for a in actions)
            if len(opened) >= self.max_products or not candidates:
                if not candidates and NEXT_PAGE in parts and pages_seen < self.max_result_pages:
                    return self._turn("Nothing here fits; I will look at the next page.", f"click[{NEXT_PAGE}]")
                visible = [a for a, _, _ in parse_results(page) if a.lower() in opened]
                if visible:  # go back to the first product it opened (the best ranked) and buy it
                    return self._turn(f"{visible[0]} was the closest match.", f"click[{visible[0]}]")
                return self._turn("Nothing fits; I will search again.", f"click[{BACK_TO_SEARCH}]")
            best_overlap, best = max(candidates, key=lambda c: c[0])
            return self._turn(f"{best} looks like the closest match to the instruction.", f"click[{best}]")

        option_area, title, _ = parse_item(page)
        if title:  # item page
            chosen = {a[len("click[") : -1].lower() for a in actions if a.lower().startswith("click[")}
            text = instruction.lower()
            for value in option_area:
                lowered = value.lower()
                if lowered in _OPTION_NAMES or lowered in chosen:
                    continue
                if re.search(rf"(?<![\w.\-]){re.escape(lowered)}(?![\w.\-])", text):
                    return self._turn(f"The instruction asks for {value}, so I select it.", f"click[{value}]")
            overlap = len(wanted & _words(title)) / max(1, len(wanted))
            current_asin = opened[-1] if opened else ""
            may_look_further = len(opened) < self.max_products and opened.count(current_asin) <= 1
            if overlap < 0.5 and may_look_further:
                return self._turn(
                    "This product does not match well; I will go back to the results.", f"click[{PREV_PAGE}]"
                )
            return self._turn("The product and options match the instruction, so I buy it.", f"click[{BUY_NOW}]")

        if any(p in SUB_PAGES for p in parts) or PREV_PAGE in parts:  # a sub page
            return self._turn("I will go back to the product.", f"click[{PREV_PAGE}]")
        return self._turn("I should search again.", f"click[{BACK_TO_SEARCH}]")

    def __call__(self, histories: list[list[dict[str, str]]]) -> list[str]:
        return [self.act(history) for history in histories]


def agent_turn(thought: str, action: str, thoughts: bool = True) -> str:
    """One agent turn: ``Thought: ...`` then ``Action: ...`` (ETO's form), or the action line alone."""
    return f"Thought: {thought}\nAction: {action}" if thoughts else f"Action: {action}"


def _oracle_turns(env: WebShopEnv, thoughts: bool = True):
    goal = env.goal
    query = search_keywords(goal.instruction_text)
    yield agent_turn(f"I should search for {query}.", f"search[{query}]", thoughts)
    for _ in range(env.max_steps):
        if goal.asin.lower() in env.available_actions()["clickables"]:
            break
        if NEXT_PAGE.lower() not in env.available_actions()["clickables"]:
            # not in these results: search for the product's title instead
            yield agent_turn("It is not listed; I will search by name.", f"search[{goal.name}]", thoughts)
            continue
        yield agent_turn("The product is not on this page.", f"click[{NEXT_PAGE}]", thoughts)
    yield agent_turn(f"{goal.asin} matches the instruction.", f"click[{goal.asin}]", thoughts)
    for value in goal.goal_options.values() if isinstance(goal.goal_options, dict) else goal.goal_options:
        yield agent_turn(f"The instruction asks for {value}.", f"click[{value}]", thoughts)
    yield agent_turn("Everything matches; I buy it.", f"click[{BUY_NOW}]", thoughts)


def scripted_trajectories(
    tasks: Iterable[Task],
    *,
    env: WebShopEnv | None = None,
    policy: str | HeuristicShopper = "heuristic",
    source: str = "real",
    progress: bool = True,
    thoughts: bool = True,
) -> list[dict[str, Any]]:
    """Play ``tasks`` with a scripted shopper and return trajectory-schema rows.

    Rows hold the system prompt, the search page, one assistant turn per action and the pages
    that followed, one reward per assistant turn (the environment's rewards, so ``reward_mode``
    applies), ``success``, and ``metadata`` with the score, the purchase and the generator.

    Args:
        policy: ``"heuristic"`` (a :class:`HeuristicShopper`, text-only, imperfect), a configured
            ``HeuristicShopper``, or ``"oracle"`` (knows the target; successful demonstrations).
        source: the rows' ``source`` (default ``"real"``: these stand in for the paper's real
            offline episodes).
        thoughts: write a ``Thought: ...`` line before each action (ETO's form; default True);
            ``False`` gives ``Action: ...`` turns alone. A configured ``HeuristicShopper`` keeps its own.
    """
    env = env or WebShopEnv()
    if isinstance(policy, str) and policy not in ("heuristic", "oracle"):
        raise ValueError(f"policy must be 'heuristic', 'oracle' or a HeuristicShopper, got {policy!r}")
    shopper = HeuristicShopper(thoughts=thoughts) if policy == "heuristic" else policy
    tasks = list(tasks)
    rows = []
    for task in tqdm(tasks, desc="scripted WebShop episodes", disable=not progress or len(tasks) < 50):
        first = env.reset(task)
        messages = [{"role": "system", "content": env.system_prompt}, {"role": "user", "content": first}]
        rewards: list[float] = []
        info: dict[str, Any] = {}
        turns = _oracle_turns(env, thoughts) if policy == "oracle" else None
        done = False
        while not done:
            if turns is not None:
                content = next(turns, f"Action: click[{BUY_NOW}]")
            else:
                content = shopper.act(messages)
            observation, reward, done, info = env.step(content)
            messages.append({"role": "assistant", "content": content})
            rewards.append(float(reward))
            if not done:
                messages.append({"role": "user", "content": observation})
        score = float(info.get("score", 0.0))
        rows.append(
            make_trajectory(
                messages,
                rewards,
                id=f"webshop-{'oracle' if policy == 'oracle' else 'heuristic'}-{task.task_id}",
                task_id=task.task_id,
                category=task.category,
                source=source,
                done=True,
                success=bool(info.get("success", False)),
                metadata={
                    "env": "webshop",
                    "split": task.split,
                    "score": score,
                    "steps": len(rewards),
                    "purchased_asin": info.get("purchased_asin"),
                    "target_asin": info.get("target_asin"),
                    "truncated": bool(info.get("truncated", False)),
                    "reward_mode": env.config.reward_mode,
                    "generator": f"webshop scripted {'oracle' if policy == 'oracle' else 'heuristic'} shopper",
                    "catalog": env.catalog.source,
                },
            )
        )
    return rows


__all__ = [
    "HeuristicShopper",
    "instruction_of",
    "parse_item",
    "parse_results",
    "price_limit",
    "scripted_trajectories",
    "search_keywords",
]
