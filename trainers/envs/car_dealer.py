"""Car Dealer negotiation (LMRL-Gym, BOOST appendix E.2) with a rule-based buyer.

The agent is the seller. Each task is one buyer: a preferred brand (the task category, one of the
13 brands of BOOST appendix E.2), a car type, 1-4 wanted features, a personality, a budget and the
sticker price (MSRP) of the car it wants; the value sets are LMRL-Gym's. LMRL-Gym's buyer is a
fine-tuned language model; this buyer follows the rules the BOOST paper gives its buyer prompt,
with template text:

* it states its preferences (brand, type, features) in its first reply;
* a price in the seller's message is an offer. At or below the buyer's target price (its budget)
  the buyer accepts and the episode ends in a sale at that price. Above it, the round fails and the
  buyer counter-offers: its counter starts at an opening anchor below the target and moves toward
  the target over the failed rounds (never down, never above the target). After
  ``max_failed_rounds`` failed rounds the buyer walks away;
* the seller can also accept the buyer's standing counter-offer ("Deal.", "Agreed", or by naming it);
* pitching another brand or body style (sedan, SUV, truck, convertible; without the wanted one)
  is a mismatch (a luxury or electric car can have any body style); after
  ``max_mismatches`` of them the buyer walks away;
* the dialogue is capped at ``max_turns`` lines (both speakers; LMRL-Gym's conversation length of
  50), so the seller has at most 25 turns.

Prices are read from free text: "$32,500", "32500", "32.5k", "$33K", "32 grand", "32 thousand",
"thirty two thousand five hundred". Numbers followed by units (miles, mpg, hp, years, months, %)
or by "off" / "discount" / "a month" / "down", and bare years such as 2024, are not offers. When a
message names several prices, the buyer takes the lowest plausible one (at least 20% of the MSRP):
"MSRP is $40,000 but for you $36,000" offers $36,000.

Rewards: ``reward_mode="boost"`` (BOOST paper): on a sale, the dialogue turns remaining,
``max_turns - lines so far`` (the buyer's accepting line included), 0 otherwise.
``"lmrl"`` (LMRL-Gym's "fancy" reward, on the last step): ``price / ((budget + msrp) / 2)`` on a
sale, ``-(budget - msrp) / msrp`` without one. ``"lmrl_revenue"``: ``price / 1000`` on a sale.
Not modelled: the LLM buyer's free-form replies and its occasional irrational decisions; features
change the buyer's replies, not its price.

Where things live: the value sets (brands, car types, features, personalities), buyer generation
(:func:`make_buyer`) and the environment are here; reading prices from the seller's text is in
:mod:`.car_dealer_prices`; what the buyer recognises in the seller's text and its reply templates
are in :mod:`.car_dealer_dialogue`. This module re-exports ``parse_prices``, ``parse_offer`` and
``is_acceptance``.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

from .base import StepResult, Task, extract_action
from .car_dealer_dialogue import (
    _BODY_TYPES,
    _BRAND_PATTERNS,
    _FEATURE_ARTICLES,
    _FEATURE_PATTERNS,
    _TEMPLATES,
    _TYPE_PATTERNS,
    _article,
    _join,
    _money,
    is_acceptance,
    mentioned,
)
from .car_dealer_prices import parse_offer, parse_prices

FIRST_OBSERVATION = "Beginning of Conversation"
REWARD_MODES = ("boost", "lmrl", "lmrl_revenue")

#: BOOST appendix E.2 (LMRL-Gym's ``DEFAULT_BRANDS``), with a typical sedan price in US dollars
#: (our estimate; sets each brand's price range).
BRANDS: dict[str, int] = {
    "Volkswagen": 29_000,
    "Lexus": 48_000,
    "Ford": 30_000,
    "Mazda": 27_000,
    "Hyundai": 24_000,
    "Toyota": 28_000,
    "Mercedes-Benz": 55_000,
    "BMW": 52_000,
    "Audi": 47_000,
    "Subaru": 29_000,
    "Honda": 27_000,
    "Porsche": 95_000,
    "Tesla": 45_000,
}
#: LMRL-Gym's car types with a price factor relative to a sedan (our estimate).
CAR_TYPES: dict[str, float] = {
    "sedan": 1.0,
    "SUV": 1.25,
    "truck": 1.3,
    "convertible": 1.35,
    "electric": 1.4,
    "luxury": 1.6,
}
#: LMRL-Gym's feature list.
FEATURES = (
    "backup camera",
    "navigation system",
    "heated seats",
    "leather seats",
    "third-row seating",
    "blind spot monitoring",
    "sunroof",
    "Apple CarPlay",
)
#: LMRL-Gym's personalities, and the tone of the templates used for each (the generated text stays
#: civil for every personality).
PERSONALITIES: dict[str, str] = {
    "abusive": "blunt",
    "angry": "irritated",
    "insulting": "blunt",
    "polite": "polite",
    "respectful": "polite",
    "rude": "blunt",
    "sarcastic": "sarcastic",
    "talkative": "talkative",
    "toxic": "blunt",
    "uncommunicative": "terse",
}

SYSTEM_PROMPT = (
    "You are a car salesperson at a dealership that sells every brand and type of car. A buyer "
    "has come in. Each turn, write one message to the buyer. Find out what they want, present the "
    'car and name your price in dollars (for example "$32,500"). The buyer accepts an offer at or '
    "below what they are willing to pay, makes counter-offers otherwise, and may accept or reject "
    'yours; you can accept a counter-offer by saying "Deal". The buyer leaves after too many '
    "failed offers or if you keep pushing a brand or type they did not ask for. The conversation "
    "lasts at most 50 lines (25 of yours). A sale reached in fewer turns is better."
)


# ----------------------------------------------------------------------------------------------
# tasks


def make_buyer(brand: str, rng: random.Random) -> dict[str, Any]:
    """A buyer for ``brand``: LMRL-Gym's ``buyer_info`` fields plus the MSRP and negotiation targets."""
    car_type = rng.choice(list(CAR_TYPES))
    features = rng.sample(FEATURES, k=rng.randint(1, 4))
    personality = rng.choice(list(PERSONALITIES))
    msrp = round(BRANDS[brand] * CAR_TYPES[car_type] * rng.uniform(0.9, 1.15), -2)
    budget = round(msrp * rng.uniform(0.8, 1.02) / 500) * 500
    opening = round(budget * rng.uniform(0.78, 0.9) / 500) * 500
    return {
        "brand": brand,
        "preferred_brands": _article(brand),
        "preferred_type": car_type,
        "preferred_features": features,
        "personality": personality,
        "budget": int(budget),
        "target_price": int(budget),
        "opening_offer": int(opening),
        "msrp": int(msrp),
        "reveals_budget": personality in ("polite", "respectful", "talkative", "rude", "toxic", "abusive"),
    }


# ----------------------------------------------------------------------------------------------
# environment


@dataclass
class _Episode:
    task: Task
    spec: dict[str, Any]
    rng: random.Random
    steps: int = 0
    lines: list[dict[str, str]] = field(default_factory=list)
    failed_rounds: int = 0
    mismatches: int = 0
    counter: float | None = None
    lowest_offer: float | None = None
    introduced: bool = False
    features_confirmed: set[str] = field(default_factory=set)
    done: bool = False
    sale_price: float | None = None
    outcome: str | None = None


class CarDealerEnv:
    """Car Dealer negotiation as a :class:`~trainers.envs.TextEnv` (module docstring for the buyer).

    Args:
        max_turns: dialogue horizon in lines, either speaker; default 50 (LMRL-Gym's
            ``max_conversation_length``; the BOOST paper's returns of ~30-41 turns remaining fit it).
            The seller gets ``max_turns // 2`` actions (``max_steps``).
        reward_mode: ``"boost"`` (default; BOOST: turns remaining at agreement, 0 on failure),
            ``"lmrl"`` (LMRL-Gym "fancy": sale price over the budget/MSRP midpoint) or
            ``"lmrl_revenue"`` (sale price / 1000).
        max_failed_rounds: offers above the buyer's target before it walks away; default 6 (the
            paper says "a fixed number of failed rounds" without the number).
        max_mismatches: turns pitching another brand or type before the buyer walks away; default 3.
        tasks_per_brand: buyers generated per brand (13 brands); default 10.
        task_seed: seed of the generated buyers; default 0.
    """

    name = "car_dealer"

    def __init__(
        self,
        max_turns: int = 50,
        reward_mode: str = "boost",
        max_failed_rounds: int = 6,
        max_mismatches: int = 3,
        tasks_per_brand: int = 10,
        task_seed: int = 0,
    ):
        if reward_mode not in REWARD_MODES:
            raise ValueError(f"reward_mode must be one of {REWARD_MODES}, got {reward_mode!r}")
        if max_turns < 2:
            raise ValueError(f"max_turns must be at least 2 (one seller and one buyer line), got {max_turns}")
        for name, value in (
            ("max_failed_rounds", max_failed_rounds),
            ("max_mismatches", max_mismatches),
            ("tasks_per_brand", tasks_per_brand),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        self.max_turns = int(max_turns)
        self.max_steps = self.max_turns // 2
        self.reward_mode = reward_mode
        self.max_failed_rounds = max_failed_rounds
        self.max_mismatches = max_mismatches
        self.tasks_per_brand = tasks_per_brand
        self.task_seed = task_seed
        self.system_prompt = SYSTEM_PROMPT.replace(
            "at most 50 lines (25 of yours)", f"at most {self.max_turns} lines ({self.max_steps} of yours)"
        )
        self._tasks = self._make_tasks()
        self._by_id = {task.task_id: task for task in self._tasks}
        self._episode: _Episode | None = None

    def _make_tasks(self) -> list[Task]:
        tasks = []
        for brand in BRANDS:
            for index in range(self.tasks_per_brand):
                # string seeds are hashed deterministically by `random` (not by PYTHONHASHSEED)
                spec = make_buyer(brand, random.Random(f"car_dealer:{self.task_seed}:{brand}:{index}"))
                task_id = f"{brand}|{spec['preferred_type']}|{spec['budget']}|{index}"
                tasks.append(Task(task_id=task_id, category=brand, spec=spec))
        return tasks

    def tasks(self, split: str | None = None) -> list[Task]:
        """``tasks_per_brand`` buyers per brand, brand by brand; ``category`` is the brand. No split
        of its own: ``split`` must be ``None`` or ``"train"`` (BOOST splits by category)."""
        if split not in (None, "train"):
            raise ValueError(f"car_dealer has no {split!r} split; split tasks by category (brand) instead")
        return list(self._tasks)

    # -- episode -------------------------------------------------------------------------------
    def reset(self, task: Task | str | None = None, seed: int | None = None) -> str:
        if task is None:
            task = random.Random(seed).choice(self._tasks)
        elif isinstance(task, str):
            if task not in self._by_id:
                raise ValueError(f"unknown car_dealer task {task!r}")
            task = self._by_id[task]
        spec = dict(task.spec)
        missing = [
            k
            for k in ("brand", "preferred_type", "preferred_features", "personality", "budget", "msrp")
            if k not in spec
        ]
        if missing:
            raise ValueError(f"car_dealer task {task.task_id!r}: spec is missing {', '.join(missing)}")
        spec.setdefault("preferred_brands", _article(spec["brand"]))
        spec.setdefault("target_price", spec["budget"])
        spec.setdefault("opening_offer", round(spec["target_price"] * 0.85 / 500) * 500)
        spec.setdefault("reveals_budget", False)
        self._episode = _Episode(task=task, spec=spec, rng=random.Random(f"{task.task_id}:{seed}"))
        return FIRST_OBSERVATION

    def _say(self, key: str, **values: Any) -> str:
        episode = self._episode
        spec = episode.spec
        tone = PERSONALITIES.get(spec["personality"], "polite")
        brand_a = spec["preferred_brands"]
        if spec["preferred_type"] in _BODY_TYPES:
            car = f"{brand_a} {spec['preferred_type']}"
        else:  # "a luxury Audi", "an electric Ford"
            car = f"{_article(spec['preferred_type'])} {spec['brand']}"
        features = [_FEATURE_ARTICLES.get(f, f) for f in spec["preferred_features"]]
        fields = {
            "car": car,
            "brand_a": brand_a,
            "brand_cap": spec["brand"],
            "type": spec["preferred_type"],
            "type_a": _article(spec["preferred_type"]),
            "type_a_cap": _article(spec["preferred_type"]).capitalize(),
            "features": _join(features),
            "features_cap": _join(features)[:1].upper() + _join(features)[1:],
            "anchor": _money(spec["opening_offer"]),
        }
        fields.update(values)
        if "feature" in fields:
            fields["feature"] = _FEATURE_ARTICLES.get(fields["feature"], fields["feature"])
            fields["feature_cap"] = fields["feature"][:1].upper() + fields["feature"][1:]
        text = episode.rng.choice(_TEMPLATES[tone][key]).format(**fields)
        return text[:1].upper() + text[1:]

    def step(self, action: str) -> StepResult:
        episode = self._episode
        if episode is None:
            raise RuntimeError("call reset(task) before step()")
        if episode.done:
            raise RuntimeError(f"the negotiation for {episode.task.task_id!r} is over; call reset() to start another")
        seller = extract_action(action if isinstance(action, str) else "")
        episode.steps += 1
        episode.lines.append({"role": "Seller", "text": seller})
        reply = self._buyer_reply(episode, seller)
        episode.lines.append({"role": "Buyer", "text": reply})
        if not episode.done and len(episode.lines) >= self.max_turns:
            episode.done, episode.outcome = True, "max_turns"
            episode.lines[-1]["text"] = reply = reply + " " + self._say("timeout")
        return StepResult(reply, self._reward(episode), episode.done, self._info(episode))

    def _buyer_reply(self, episode: _Episode, seller: str) -> str:
        spec = episode.spec
        target = float(spec["target_price"])
        if not re.search(r"[A-Za-z0-9]", seller):
            return self._say("unclear")

        prefix = ""
        first = not episode.introduced
        if first:
            episode.introduced = True
            prefix = self._say("intro") + (self._say("budget") if spec["reveals_budget"] else "")

        # another brand or type pitched instead of the wanted one
        brands, types = mentioned(_BRAND_PATTERNS, seller), mentioned(_TYPE_PATTERNS, seller)
        wrong_brand = bool(brands) and spec["brand"] not in brands
        # body styles exclude each other; any of them can be a luxury or an electric car
        bodies = types & _BODY_TYPES
        wrong_type = spec["preferred_type"] in _BODY_TYPES and bool(bodies) and spec["preferred_type"] not in bodies
        if wrong_brand or wrong_type:
            episode.mismatches += 1
            if episode.mismatches >= self.max_mismatches:
                episode.done, episode.outcome = True, "walk_away_mismatch"
                return _join_text(prefix, self._say("walk_mismatch"))
            return _join_text(prefix, self._say("brand_mismatch" if wrong_brand else "type_mismatch"))

        new_features = (
            mentioned(_FEATURE_PATTERNS, seller) & set(spec["preferred_features"]) - episode.features_confirmed
        )
        episode.features_confirmed |= new_features

        offer = parse_offer(seller, minimum=max(1_000.0, 0.2 * spec["msrp"]))
        if offer is None and episode.counter is not None and is_acceptance(seller):
            return self._close(episode, episode.counter, prefix, "accept_counter")
        if offer is not None:
            episode.lowest_offer = offer if episode.lowest_offer is None else min(episode.lowest_offer, offer)
            if offer <= target:
                if first and not brands:
                    # the buyer has not said what it wants yet: it asks before agreeing
                    return _join_text(prefix, self._say("premature").strip())
                key = "accept_counter" if episode.counter is not None and offer == episode.counter else "accept"
                return self._close(episode, offer, prefix, key)
            episode.failed_rounds += 1
            if episode.failed_rounds >= self.max_failed_rounds:
                episode.done, episode.outcome = True, "walk_away_price"
                return _join_text(prefix, self._say("walk_price"))
            # concede linearly from the opening anchor toward the target over the allowed rounds
            anchor = float(spec["opening_offer"])
            fraction = (episode.failed_rounds - 1) / max(self.max_failed_rounds - 1, 1)
            counter = round((anchor + (target - anchor) * fraction) / 100) * 100
            counter = min(max(counter, episode.counter or 0.0), target)
            episode.counter = counter
            key = "over_budget" if offer > 1.3 * target else "counter"
            return _join_text(prefix, self._say(key, offer=_money(offer), counter=_money(counter)))

        if new_features:
            reply = self._say("feature_ack", feature=sorted(new_features)[0])
        elif first:
            reply = ""
        elif (
            re.search(r"[A-Za-z]{2,}", seller) is None
            or len(re.findall(r"[A-Za-z]+", seller)) < 2
            and not is_acceptance(seller)
        ):
            reply = self._say("unclear")
        else:
            reply = self._say("ask_price")
        missing = [f for f in spec["preferred_features"] if f not in episode.features_confirmed]
        if missing and not first and episode.rng.random() < 0.5:
            reply += self._say("ask_feature", feature=missing[0])
        if first:
            reply = _join_text(reply, self._say("ask_price"))
        return _join_text(prefix, reply)

    def _close(self, episode: _Episode, price: float, prefix: str, key: str) -> str:
        episode.done, episode.outcome, episode.sale_price = True, "sale", float(price)
        return _join_text(prefix, self._say(key, offer=_money(price), counter=_money(price)))

    def _reward(self, episode: _Episode) -> float:
        if not episode.done:
            return 0.0
        sold = episode.outcome == "sale"
        spec = episode.spec
        if self.reward_mode == "boost":
            return float(max(self.max_turns - len(episode.lines), 0)) if sold else 0.0
        if self.reward_mode == "lmrl_revenue":
            return episode.sale_price / 1000.0 if sold else 0.0
        budget, msrp = float(spec["budget"]), float(spec["msrp"])
        return episode.sale_price / ((budget + msrp) * 0.5) if sold else -(budget - msrp) / msrp

    def _info(self, episode: _Episode) -> dict[str, Any]:
        info: dict[str, Any] = {
            "turns": len(episode.lines),
            "turns_remaining": self.max_turns - len(episode.lines),
            "failed_rounds": episode.failed_rounds,
            "mismatches": episode.mismatches,
            "counter_offer": episode.counter,
            "lowest_offer": episode.lowest_offer,
        }
        if episode.done:
            sold = episode.outcome == "sale"
            info.update(
                success=sold,
                outcome=episode.outcome,
                sale_price=episode.sale_price,
                msrp=episode.spec["msrp"],
                budget=episode.spec["budget"],
                score=float(sold),
                features_confirmed=sorted(episode.features_confirmed),
            )
        return info

    def lmrl_record(self) -> dict[str, Any]:
        """The current episode in LMRL-Gym's car-dealer JSON format (``buyer_info``, ``lines``,
        ``output``), readable by ``trainers.data.converters.convert_car_dealer``."""
        if self._episode is None:
            raise RuntimeError("no episode: call reset() first")
        episode, spec = self._episode, self._episode.spec
        record: dict[str, Any] = {
            "buyer_info": {
                "personality": spec["personality"],
                "preferred_brands": spec["preferred_brands"],
                "preferred_type": spec["preferred_type"],
                "preferred_features": list(spec["preferred_features"]),
                "budget": spec["budget"],
            },
            "lines": [dict(line) for line in episode.lines],
        }
        if episode.done:
            sold = episode.outcome == "sale"
            record["output"] = {
                "car_bought": sold,
                "msrp": spec["msrp"],
                "buy_price": int(episode.sale_price) if sold else None,
            }
        return record


def _join_text(*parts: str) -> str:
    return " ".join(p.strip() for p in parts if p and p.strip())


__all__ = [
    "BRANDS",
    "CAR_TYPES",
    "FEATURES",
    "FIRST_OBSERVATION",
    "PERSONALITIES",
    "SYSTEM_PROMPT",
    "CarDealerEnv",
    "is_acceptance",
    "make_buyer",
    "parse_offer",
    "parse_prices",
]
