"""LMRL-Gym car dealer -> trajectory-schema rows (format ``"car_dealer"``).

A record is ``{"buyer_info": {...}, "lines": [{"role": "Seller" | "Buyer", "text"}...], "output":
{"car_bought", "msrp", "buy_price"}}``. The agent is the seller.

Reward conventions (``reward=``): ``"boost"`` (default, BOOST paper): the number of dialogue turns
(lines, either speaker) remaining at agreement (``max_turns - len(lines)``, floored at 0), 0 when
no car is bought; ``"lmrl"`` (LMRL-Gym "fancy" reward): ``buy_price / ((budget + msrp) / 2)`` on a
sale, ``-(budget - msrp) / msrp`` otherwise; ``"lmrl_revenue"``: ``buy_price / 1000`` on a sale,
else 0.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..schema import make_trajectory
from .common import ConversionError, _finish

CAR_DEALER_SYSTEM_PROMPT = (
    "You are a car salesperson negotiating with a buyer. Each turn, say one thing to the buyer. "
    "Aim to close a sale at a good price, and as quickly as possible."
)
CAR_DEALER_FIRST_OBSERVATION = "Beginning of Conversation"
_AGENT_SPEAKERS = {"seller", "dealer"}
_OTHER_SPEAKERS = {"buyer"}


def car_dealer_brand(buyer_info: Mapping[str, Any]) -> str:
    """The buyer's preferred brand without its article (``"a Toyota"`` -> ``"Toyota"``)."""
    brand = str(buyer_info.get("preferred_brands", "")).strip()
    return re.sub(r"^(a|an)\s+", "", brand, flags=re.IGNORECASE)


def _car_dealer_reward(record, index, reward, max_turns, source_name) -> float:
    output, buyer = record["output"], record["buyer_info"]
    bought = output.get("car_bought")
    if not isinstance(bought, bool):
        raise ConversionError(index, "output.car_bought", f"expected true/false, got {bought!r}", source_name)
    if reward == "boost":
        return float(max(max_turns - len(record["lines"]), 0)) if bought else 0.0
    price = output.get("buy_price")
    if bought and not isinstance(price, (int, float)):
        raise ConversionError(
            index, "output.buy_price", f"a sale needs a numeric buy_price, got {price!r}", source_name
        )
    if reward == "lmrl_revenue":
        return float(price) / 1000.0 if bought else 0.0
    msrp, budget = output.get("msrp"), buyer.get("budget")
    if not isinstance(msrp, (int, float)) or msrp <= 0:
        raise ConversionError(index, "output.msrp", f"expected a positive number, got {msrp!r}", source_name)
    if not isinstance(budget, (int, float)):
        raise ConversionError(index, "buyer_info.budget", f"expected a number, got {budget!r}", source_name)
    return float(price) / ((budget + msrp) * 0.5) if bought else -(budget - msrp) / msrp


def convert_car_dealer(
    records: Iterable[Mapping[str, Any]],
    *,
    reward: str = "boost",
    max_turns: int = 50,
    system_prompt: str | None = CAR_DEALER_SYSTEM_PROMPT,
    first_observation: str = CAR_DEALER_FIRST_OBSERVATION,
    source: str = "real",
    id_prefix: str = "car-dealer",
    source_name: str | None = None,
) -> list[dict[str, Any]]:
    """Convert LMRL-Gym car-dealer conversations to schema rows, the agent being the seller.

    Consecutive lines of one speaker are joined with a space (as LMRL-Gym does). When the seller
    opens, ``first_observation`` precedes it as the first user message. A conversation without
    ``output`` is kept as an unfinished trajectory (``done=False``, reward 0).

    Args:
        reward: ``"boost"`` (turns remaining at agreement), ``"lmrl"`` or ``"lmrl_revenue"``.
        max_turns: the dialogue horizon in lines (either speaker) for the BOOST reward. The paper
            does not state it; 50 makes its reported returns (~30-41) consistent.
    """
    if reward not in ("boost", "lmrl", "lmrl_revenue"):
        raise ValueError(f"reward must be 'boost', 'lmrl' or 'lmrl_revenue', got {reward!r}")
    rows: list[dict[str, Any]] = []
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise ConversionError(index, "record", f"expected an object, got {type(record).__name__}", source_name)
        for field in ("buyer_info", "lines"):
            if field not in record:
                raise ConversionError(index, field, "missing", source_name)
        buyer, lines = record["buyer_info"], record["lines"]
        if not isinstance(buyer, Mapping):
            raise ConversionError(index, "buyer_info", f"expected an object, got {type(buyer).__name__}", source_name)
        if not isinstance(lines, list) or not lines:
            raise ConversionError(index, "lines", "empty trajectory: no dialogue lines", source_name)
        merged: list[dict[str, str]] = []
        for position, line in enumerate(lines):
            if not isinstance(line, Mapping) or "role" not in line or "text" not in line:
                raise ConversionError(index, f"lines[{position}]", "each line needs 'role' and 'text'", source_name)
            speaker = str(line["role"]).strip().lower()
            if speaker in _AGENT_SPEAKERS:
                role = "assistant"
            elif speaker in _OTHER_SPEAKERS:
                role = "user"
            else:
                raise ConversionError(
                    index,
                    f"lines[{position}].role",
                    f"unknown speaker {line['role']!r} (expected Seller or Buyer)",
                    source_name,
                )
            if not isinstance(line["text"], str):
                raise ConversionError(index, f"lines[{position}].text", "expected a string", source_name)
            text = line["text"].strip()
            if merged and merged[-1]["role"] == role:
                merged[-1]["content"] += " " + text
            else:
                merged.append({"role": role, "content": text})
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        if merged[0]["role"] == "assistant":
            messages.append({"role": "user", "content": first_observation})
        messages += merged
        n_actions = sum(m["role"] == "assistant" for m in messages)
        if n_actions == 0:
            raise ConversionError(index, "lines", "empty trajectory: the seller never speaks", source_name)
        done = "output" in record and record["output"] is not None
        if done:
            if not isinstance(record["output"], Mapping):
                raise ConversionError(index, "output", "expected an object", source_name)
            final = _car_dealer_reward(record, index, reward, max_turns, source_name)
            bought = record["output"]["car_bought"]
        else:
            final, bought = 0.0, False
        brand = car_dealer_brand(buyer)
        if not brand:
            raise ConversionError(
                index, "buyer_info.preferred_brands", "missing brand (the task category)", source_name
            )
        rows.append(
            make_trajectory(
                messages,
                [0.0] * (n_actions - 1) + [final],
                id=str(record["id"]) if record.get("id") not in (None, "") else f"{id_prefix}-{index}",
                task_id=f"{brand}|{buyer.get('preferred_type', '')}|{buyer.get('budget', '')}",
                category=brand,
                source=source,
                done=done,
                success=bool(bought),
                metadata={
                    "format": "lmrl_car_dealer",
                    "buyer_info": dict(buyer),
                    "output": dict(record["output"]) if done else None,
                    "reward_scheme": reward,
                    "max_turns": max_turns,
                    "dialogue_turns": len(lines),
                },
            )
        )
        _finish(rows, index, source_name)
    return rows


__all__ = ["CAR_DEALER_FIRST_OBSERVATION", "CAR_DEALER_SYSTEM_PROMPT", "car_dealer_brand", "convert_car_dealer"]
