"""Per-environment rules for simulator-free self-play (BOOST appendix F).

For each environment this module holds

* the **agent prompt** (the environment's rules and action grammar) and the **environment prompt**
  (how to play the other side: the oracle, the buyer, the shop website), both written for this
  project; one example trajectory is appended to each at generation time;
* the **goal** that the simulated environment is told (hidden object, buyer profile, shopping
  instruction), read from the seed trajectory;
* **termination and reward** of a synthetic episode, decided only from what the generated
  environment said (there is no simulator). Rewards follow the BOOST paper's definitions, the same
  ones the converters and built-in environments use, so real and synthetic returns are on one scale:

  - ``twenty_questions``: the episode ends when the oracle answers "yes" to a question that names the
    hidden object (or, with no known object, when the oracle says the guess is correct). Reward on
    that turn = questions remaining (``max_steps - questions asked``); a run that reaches the step
    cap gets 0.
  - ``car_dealer``: the episode ends when the buyer agrees to a deal that names a price (reward =
    dialogue lines remaining, ``max_lines - lines so far``, floored at 0, lines counting both
    speakers as in LMRL-Gym) or walks away (reward 0). The step cap gives 0.
  - ``webshop``: the episode ends with the agent's ``click[Buy Now]``. The score is rule based, in
    WebShop's spirit: the fraction of the instruction's attribute words found on the last product
    page the simulated site showed plus the options the agent clicked, and one more term for the
    price (1 if the page's price is within the instruction's budget). The score is the reward of the
    buy turn; success means a score of 1. No purchase by the step cap gives 0.

Every other turn gets reward 0.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..data.schema import metadata_of


@dataclass
class Outcome:
    """What the rules read from one exchange: did the episode end, with which final reward."""

    done: bool = False
    reward: float = 0.0
    success: bool = False
    reason: str = ""
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class SelfPlaySpec:
    """Everything self-play needs to know about one environment."""

    name: str
    agent_prompt: str
    env_prompt: str
    default_max_steps: int
    example: list[dict[str, str]]
    goal: Callable[[Mapping[str, Any]], str]
    #: judged right after the agent acts: (action, state) -> Outcome
    after_action: Callable[[str, dict[str, Any]], Outcome]
    #: judged right after the environment answers: (action, observation, state) -> Outcome
    after_observation: Callable[[str, str, dict[str, Any]], Outcome]


# ----------------------------------------------------------------------------- twenty questions
TWENTY_QUESTIONS_AGENT = (
    "You are playing Twenty Questions. The oracle has picked a hidden object and you must find it. "
    "On each turn ask one question that can be answered with yes or no. When you think you know the "
    'object, guess it with a question such as "Is it a violin?". You have at most twenty questions '
    "and you score more the fewer you use. Write only your question."
)
TWENTY_QUESTIONS_ENV = (
    "You are the oracle in a game of Twenty Questions. The hidden object is: {goal}. The player asks "
    'yes/no questions. Answer each one truthfully about the hidden object with "Yes." or "No." only. '
    'Never name the object and never add explanations. If the player guesses the object itself, answer "Yes.".'
)
TWENTY_QUESTIONS_EXAMPLE = [
    {"role": "user", "content": "Questions:"},
    {"role": "assistant", "content": "Is it alive?"},
    {"role": "user", "content": "No."},
    {"role": "assistant", "content": "Is it used in a kitchen?"},
    {"role": "user", "content": "Yes."},
    {"role": "assistant", "content": "Is it used for cutting?"},
    {"role": "user", "content": "No."},
    {"role": "assistant", "content": "Is it a whisk?"},
    {"role": "user", "content": "Yes."},
]


def _twenty_questions_goal(row: Mapping[str, Any]) -> str:
    meta = metadata_of(row)
    task = meta.get("task") if isinstance(meta.get("task"), dict) else {}
    spec = task.get("spec") if isinstance(task.get("spec"), dict) else {}
    word = meta.get("word") or meta.get("object") or task.get("word") or spec.get("word") or spec.get("object")
    if isinstance(word, list):
        word = word[0] if word else ""
    return str(word or row.get("task_id") or "")


def _names_object(question: str, goal: str) -> bool:
    if not goal:
        return False
    variants = {goal.lower(), goal.lower().rstrip("s")}
    text = question.lower()
    return any(re.search(rf"\b{re.escape(v)}s?\b", text) for v in variants if v)


def _starts_yes(text: str) -> bool:
    return bool(re.match(r"\W*(yes|yeah|yep|correct)\b", text.strip().lower()))


def _twenty_questions_after_action(action: str, state: dict[str, Any]) -> Outcome:
    return Outcome()


def _twenty_questions_after_observation(action: str, observation: str, state: dict[str, Any]) -> Outcome:
    goal, asked, cap = state["goal"], state["actions"], state["max_steps"]
    confirmed = _starts_yes(observation) and _names_object(action, goal)
    if not goal:  # object unknown: accept the oracle's explicit confirmation of a guess
        confirmed = bool(re.search(r"\b(you (got|guessed) it|that's (it|right|correct)|correct!)", observation.lower()))
    if confirmed:
        return Outcome(True, float(max(cap - asked, 0)), True, "oracle confirmed the guess")
    return Outcome()


# ----------------------------------------------------------------------------- car dealer
CAR_DEALER_AGENT = (
    "You are a car salesperson negotiating with a buyer. Sell the buyer a car at the best price you can "
    "while keeping them interested: describe features, make offers and counteroffers, and close the deal "
    "quickly, because a deal reached in fewer turns is worth more. Write only your next line of dialogue."
)
CAR_DEALER_ENV = (
    "You are a car buyer negotiating with a salesperson. Your profile: {goal}. Reply to the salesperson "
    "with the buyer's next line only. Counteroffer while the price is above your budget; when the price "
    'is at or below your budget say "Deal, I\'ll buy it for $<price>."; if the talks go nowhere say '
    '"No deal, I\'m walking away."'
)
CAR_DEALER_EXAMPLE = [
    {"role": "user", "content": "Hi, I'm looking for a reliable sedan, ideally a Honda."},
    {
        "role": "assistant",
        "content": "Welcome! The Honda Accord is a great fit: safe, efficient and roomy. It is listed at $28,000.",
    },
    {"role": "user", "content": "That's more than I hoped to spend. Could you do $24,000?"},
    {"role": "assistant", "content": "I can include free maintenance for a year and meet you at $25,500."},
    {"role": "user", "content": "Deal, I'll buy it for $25,500."},
]

_AGREE = re.compile(r"\b(deal|i'?ll (take|buy) it|i accept|accepted|agreed?|sounds good|let'?s do it)\b", re.I)
_WALK = re.compile(r"\b(no deal|walk(ing)? away|not interested|i'?ll pass|goodbye|leave)\b", re.I)
_PRICE = re.compile(r"\$\s?(\d[\d,]*(?:\.\d+)?)|\b(\d{1,3}(?:,\d{3})+|\d{4,6})\b")


def _car_dealer_goal(row: Mapping[str, Any]) -> str:
    meta = metadata_of(row)
    task = meta.get("task") if isinstance(meta.get("task"), dict) else {}
    spec = task.get("spec") if isinstance(task.get("spec"), dict) else {}
    buyer = (
        meta.get("buyer_info") or meta.get("buyer") or spec.get("buyer_info") or spec.get("buyer") or task.get("buyer")
    )
    if isinstance(buyer, Mapping):
        return ", ".join(f"{k}: {v}" for k, v in buyer.items())
    return str(buyer or row.get("task_id") or row.get("category") or "a buyer looking for a car")


def _parse_price(text: str) -> float | None:
    match = _PRICE.search(text)
    if not match:
        return None
    return float((match.group(1) or match.group(2)).replace(",", ""))


def _car_dealer_after_action(action: str, state: dict[str, Any]) -> Outcome:
    return Outcome()


def _car_dealer_after_observation(action: str, observation: str, state: dict[str, Any]) -> Outcome:
    # Lines of dialogue so far, both speakers (the buyer's opening line counts as one).
    lines = 2 * state["actions"] + 1
    price = _parse_price(observation)
    if _AGREE.search(observation) and price is not None and not re.search(r"\bno deal\b", observation, re.I):
        remaining = float(max(state["max_lines"] - lines, 0))
        return Outcome(True, remaining, True, "buyer agreed", {"price": price})
    if _WALK.search(observation):
        return Outcome(True, 0.0, False, "buyer walked away")
    return Outcome()


# ----------------------------------------------------------------------------- webshop
WEBSHOP_AGENT = (
    "You are shopping on the WebShop website for the item described in the instruction. Each turn you see "
    "the current page as text and you write exactly one action:\n"
    "- search[keywords]: search with a short query of the instruction's key words (only on the search page);\n"
    "- click[button or option]: click a product id on a results page, an option (size, color...) on a product "
    "page, or [Buy Now], [Back to Search], [< Prev], [Next >].\n"
    "Pick the product that best matches the instruction, select the requested options, then click[Buy Now]. "
    'Write "Thought: ..." on one line if you like, then "Action: <action>".'
)
WEBSHOP_ENV = (
    "You are the WebShop website. The shopper's instruction is: {goal}. After each shopper action write the "
    'next page as plain text, items separated by " [SEP] ", exactly like the example:\n'
    "- after search[...]: [Back to Search] [SEP] Page 1 (Total results: 3) [SEP] [Next >] then three results, "
    "each as <product id> [SEP] <product name> [SEP] $<price>; one of them fits the instruction;\n"
    "- after click[<product id>]: the product page with [Back to Search] [SEP] [< Prev], the option groups "
    "and their values, the product name, Price: $<price>, Rating, [Description], [Features], [Reviews], [Buy Now];\n"
    "- after click[<option>]: the same product page again, with that option selected;\n"
    "- after click[< Prev]: the last results page.\n"
    "Write only the page."
)
WEBSHOP_EXAMPLE = [
    {
        "role": "user",
        "content": (
            "WebShop [SEP] Instruction: [SEP] "
            "i need a blue yoga mat that is extra thick, and price lower than 40.00 dollars [SEP] Search"
        ),
    },
    {
        "role": "assistant",
        "content": "Thought: I should search for the key words.\nAction: search[blue extra thick yoga mat]",
    },
    {
        "role": "user",
        "content": (
            "Instruction: [SEP] "
            "i need a blue yoga mat that is extra thick, and price lower than 40.00 dollars [SEP] "
            "[Back to Search] [SEP] Page 1 (Total results: 3) [SEP] [Next >] [SEP] B07K4Q2LMN [SEP] "
            "Extra Thick Yoga Mat, Non Slip, 1/2 Inch [SEP] $25.99 [SEP] B01N0Z9XQA [SEP] "
            "Travel Yoga Mat Foldable [SEP] $18.50 [SEP] B08HZ3D1PL [SEP] Cork Yoga Block Set [SEP] $22.00"
        ),
    },
    {
        "role": "assistant",
        "content": "Thought: The first result is an extra thick yoga mat under budget.\nAction: click[B07K4Q2LMN]",
    },
    {
        "role": "user",
        "content": (
            "Instruction: [SEP] "
            "i need a blue yoga mat that is extra thick, and price lower than 40.00 dollars [SEP] "
            "[Back to Search] [SEP] [< Prev] [SEP] color [SEP] blue [SEP] purple [SEP] black [SEP] "
            "Extra Thick Yoga Mat, Non Slip, 1/2 Inch [SEP] Price: $25.99 [SEP] Rating: N.A. [SEP] "
            "Description [SEP] Features [SEP] Reviews [SEP] Buy Now"
        ),
    },
    {"role": "assistant", "content": "Thought: Select blue.\nAction: click[blue]"},
    {"role": "user", "content": "You have clicked blue."},
    {"role": "assistant", "content": "Action: click[Buy Now]"},
]

_STOP_WORDS = set(
    "a an and are as at be by for from i im in is it looking me my need of on or please price than that the "
    "this to want with would lower dollars dollar under less buy find get some one ounce pack".split()
)


def _webshop_instruction(text: str) -> str:
    match = re.search(r"Instruction:\s*(?:\[SEP\])?\s*(.*?)(?:\[SEP\]|$)", text, re.S)
    return (match.group(1) if match else text).strip()


def _webshop_goal(row: Mapping[str, Any]) -> str:
    meta = metadata_of(row)
    if isinstance(meta.get("instruction"), str):
        return meta["instruction"]
    first_obs = next((m["content"] for m in row["messages"] if m["role"] == "user"), "")
    return _webshop_instruction(first_obs)


def webshop_rule_score(instruction: str, page: str, clicked_options: list[str]) -> float:
    """Rule-based score of a purchase: matched attribute words + price term, over their count."""
    words = [
        w
        for w in re.findall(r"[a-z0-9]+(?:[.-][a-z0-9]+)*", instruction.lower())
        if w not in _STOP_WORDS and not re.fullmatch(r"\d+(\.\d+)?", w)
    ]
    words = list(dict.fromkeys(words))
    haystack = (page + " " + " ".join(clicked_options)).lower()
    matched = sum(1 for w in words if re.search(rf"\b{re.escape(w)}", haystack))
    budget = re.search(r"(?:lower|less) than \$?(\d+(?:\.\d+)?)", instruction.lower())
    price = re.search(r"price:\s*\$\s?(\d+(?:\.\d+)?)", page.lower()) or re.search(r"\$\s?(\d+(?:\.\d+)?)", page)
    terms = len(words)
    if budget:
        terms += 1
        if price and float(price.group(1)) <= float(budget.group(1)):
            matched += 1
    return matched / terms if terms else 0.0


def _click_target(action: str) -> str | None:
    match = re.search(r"click\[(.*?)\]", action, re.I)
    return match.group(1).strip() if match else None


def _webshop_after_action(action: str, state: dict[str, Any]) -> Outcome:
    target = _click_target(action)
    if target is None or target.lower() != "buy now":
        return Outcome()
    score = webshop_rule_score(state["goal"], state.get("product_page", ""), state.get("clicked_options", []))
    return Outcome(True, round(score, 4), score >= 1.0, "bought", {"score": score})


def _webshop_after_observation(action: str, observation: str, state: dict[str, Any]) -> Outcome:
    # Track the last product page shown and the options clicked on it (inputs of the rule score).
    target = _click_target(action)
    is_product = bool(target) and re.fullmatch(r"[A-Z0-9]{10}", target or "") is not None
    if "buy now" in observation.lower():
        if is_product or not state.get("product_page"):
            state["clicked_options"] = []
        state["product_page"] = observation
    if target and not is_product and target.lower() not in ("buy now", "< prev", "next >", "back to search"):
        state.setdefault("clicked_options", []).append(target)
    return Outcome()


SPECS: dict[str, SelfPlaySpec] = {
    "twenty_questions": SelfPlaySpec(
        "twenty_questions",
        TWENTY_QUESTIONS_AGENT,
        TWENTY_QUESTIONS_ENV,
        20,
        TWENTY_QUESTIONS_EXAMPLE,
        _twenty_questions_goal,
        _twenty_questions_after_action,
        _twenty_questions_after_observation,
    ),
    "car_dealer": SelfPlaySpec(
        "car_dealer",
        CAR_DEALER_AGENT,
        CAR_DEALER_ENV,
        25,
        CAR_DEALER_EXAMPLE,
        _car_dealer_goal,
        _car_dealer_after_action,
        _car_dealer_after_observation,
    ),
    "webshop": SelfPlaySpec(
        "webshop",
        WEBSHOP_AGENT,
        WEBSHOP_ENV,
        15,
        WEBSHOP_EXAMPLE,
        _webshop_goal,
        _webshop_after_action,
        _webshop_after_observation,
    ),
}


def get_spec(env_name: str) -> SelfPlaySpec:
    if env_name not in SPECS:
        raise ValueError(f"no self-play prompts for environment {env_name!r}; known: {', '.join(sorted(SPECS))}")
    return SPECS[env_name]


def format_example(messages: list[dict[str, str]]) -> str:
    """An example trajectory as a labelled transcript (appended to both roles' prompts)."""
    lines = []
    for message in messages:
        if message["role"] == "system":
            continue
        who = "Agent" if message["role"] == "assistant" else "Environment"
        lines.append(f"{who}: {message['content']}")
    return "\n".join(lines)


__all__ = ["Outcome", "SPECS", "SelfPlaySpec", "format_example", "get_spec", "webshop_rule_score"]
