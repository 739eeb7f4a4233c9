"""Converters from the trajectory formats peers publish into the trajectory schema.

Supported formats (each converter returns schema rows, see :func:`to_dataset`):

* ``"eto"``: ETO / TraTree agent trajectories. A record is ``{"id", "conversations": [{"from":
  "human"|"gpt", "value"}...], "reward"}`` (golden SFT files) or ``{"meta": {"reward", "success",
  ...}, "conversations": [...]}`` (evaluation outputs), or the ``role``/``content`` variant (a bare
  list of messages, as in the example trajectories ETO publishes). The opening
  instruction turn (a human turn acknowledged by a ``gpt`` "OK") becomes the system message;
  in-context example episodes that precede the real task are recognised (see
  :func:`split_in_context_examples`) and dropped, or folded into the system message as text with
  ``in_context_examples="system"`` (never kept as actions: their rewards are unknown). The record's
  reward goes on the last assistant turn; the other ``meta`` fields (steps, terminate reason, ...)
  go into ``metadata``; the category is the task name of ScienceWorld-style ids (``boil_1`` ->
  ``boil``) unless the record has a ``category`` field.
* ``"twenty_questions"``: LMRL-Gym twenty questions, ``{"lines": ["Is it an animal? No.", ...],
  "correct": bool, "word": [variants]}``. The agent asks (assistant), the oracle answers (user).
* ``"car_dealer"``: LMRL-Gym car dealer, ``{"buyer_info": {...}, "lines": [{"role": "Seller" |
  "Buyer", "text"}...], "output": {"car_bought", "msrp", "buy_price"}}``. The agent is the seller.

Reward conventions (``reward=`` argument):

* twenty questions: ``"boost"`` (default, BOOST paper): the number of questions remaining on a
  correct guess (``max_questions - questions asked``), 0 otherwise, on the last turn;
  ``"lmrl"`` (LMRL-Gym original): -1 per question, 0 for the question that guesses the word.
* car dealer: ``"boost"`` (default, BOOST paper): the number of dialogue turns (lines, either
  speaker) remaining at agreement (``max_turns - len(lines)``, floored at 0), 0 when no car is
  bought; ``"lmrl"`` (LMRL-Gym "fancy" reward): ``buy_price / ((budget + msrp) / 2)`` on a sale,
  ``-(budget - msrp) / msrp`` otherwise; ``"lmrl_revenue"``: ``buy_price / 1000`` on a sale, else 0.

Malformed input raises :class:`ConversionError` naming the source, the record index and the
field; no record is ever dropped silently.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets

from .schema import TrajectoryValidationError, make_trajectory, to_dataset, validate_row
from .twenty_questions_words import TWENTY_QUESTIONS_CATEGORIES, twenty_questions_category  # noqa: F401 - re-exported


class ConversionError(ValueError):
    """A source record cannot be converted. The message names the source, record index and field."""

    def __init__(self, index: int, field: str, problem: str, source: str | None = None):
        self.index, self.field, self.problem, self.source = index, field, problem, source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}record {index}, field '{field}': {problem}")


# --------------------------------------------------------------------------------------------
# reading files


def read_json_records(path: str | Path) -> list[Any]:
    """Read records from a ``.json`` file (a list, or one record), a ``.jsonl`` file, or a folder
    of ``.json`` files (one record each, as ETO writes evaluation outputs; sorted by name)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".json")
        if not files:
            raise FileNotFoundError(f"{path}: folder holds no .json files")
        records = []
        for file in files:
            record = _load_json(file)
            if isinstance(record, dict):
                record.setdefault("_file", file.stem)
            records.append(record)
        return records
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.suffix == ".jsonl":
        from .hub_io import read_text_file

        records = []
        for number, line in enumerate(read_text_file(path).splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}, line {number}: not valid JSON ({error.msg})") from error
        return records
    data = _load_json(path)
    return data if isinstance(data, list) else [data]


def _load_json(file: Path) -> Any:
    from .hub_io import read_text_file

    try:
        return json.loads(read_text_file(file))
    except json.JSONDecodeError as error:
        raise ValueError(f"{file}, line {error.lineno}: not valid JSON ({error.msg})") from error


def _finish(rows: list[dict], index: int, source: str | None) -> None:
    """Validate the row just built so that errors name the source record, not a later row number."""
    try:
        validate_row(rows[-1], index)
    except TrajectoryValidationError as error:
        raise ConversionError(index, error.field, error.problem, source) from error


# --------------------------------------------------------------------------------------------
# ETO / TraTree

_ROLE_OF = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}

#: Regular expressions recognising the first observation of an episode (WebShop, ScienceWorld,
#: ALFWorld as ETO / TraTree phrase them). Two or more matches in one record mean the earlier
#: episodes are in-context examples.
EPISODE_START_PATTERNS = (
    r"^(Observation:\s*)?WebShop \[SEP\] Instruction:",
    r"^(Observation:\s*)?Task Description:",
    r"^(Observation:\s*)?Your task is to",
    r"^(Observation:\s*)?You are in the middle of a room",
    r"Now, it's your turn",
)
_ICL_SEPARATOR = "\n---\n"
_YOUR_TURN = re.compile(r"^\s*Now, it's your turn[^\n]*\n?")


def _eto_turns(record: Any, index: int, source: str | None) -> list[dict[str, str]]:
    if isinstance(record, Mapping):
        for key in ("conversations", "messages", "conversation"):
            if key in record:
                turns, field = record[key], key
                break
        else:
            raise ConversionError(index, "conversations", "missing (expected 'conversations' or 'messages')", source)
    else:
        turns, field = record, "conversations"
    if not isinstance(turns, list) or not turns:
        raise ConversionError(index, field, "empty trajectory: no turns", source)
    messages = []
    for position, turn in enumerate(turns):
        if not isinstance(turn, Mapping):
            raise ConversionError(
                index, f"{field}[{position}]", f"expected an object, got {type(turn).__name__}", source
            )
        if "from" in turn:
            speaker, text, keys = turn["from"], turn.get("value"), ("from", "value")
        elif "role" in turn:
            speaker, text, keys = turn["role"], turn.get("content"), ("role", "content")
        else:
            raise ConversionError(index, f"{field}[{position}]", "needs 'from'/'value' or 'role'/'content'", source)
        role = _ROLE_OF.get(str(speaker).lower())
        if role is None:
            raise ConversionError(
                index,
                f"{field}[{position}].{keys[0]}",
                f"unknown speaker {speaker!r} (expected human/gpt or user/assistant)",
                source,
            )
        if not isinstance(text, str):
            raise ConversionError(
                index, f"{field}[{position}].{keys[1]}", f"expected a string, got {type(text).__name__}", source
            )
        messages.append({"role": role, "content": text})
    return messages


def split_in_context_examples(
    messages: list[dict[str, str]],
    *,
    in_context_turns: int | None = None,
    patterns: Sequence[str] = EPISODE_START_PATTERNS,
) -> tuple[str | None, list[dict[str, str]], list[dict[str, str]]]:
    """Split ETO-style turns into ``(instruction, in_context_example_turns, task_turns)``.

    * The instruction is a leading ``system`` turn, or a leading user turn answered by an
      assistant "OK" (ETO's instruction part).
    * ETO's single-message layout ``instruction\\n---\\nexamples\\n---\\nNow, it's your turn...``
      is split on its ``---`` separators.
    * Otherwise in-context examples are the turns before the *last* turn that starts an episode
      (:data:`EPISODE_START_PATTERNS`), or exactly ``in_context_turns`` turns when given.
    """
    rest = list(messages)
    instruction = None
    if rest and rest[0]["role"] == "system":
        instruction = rest.pop(0)["content"]
    elif (
        len(rest) >= 2
        and rest[0]["role"] == "user"
        and rest[1]["role"] == "assistant"
        and rest[1]["content"].strip().rstrip(".!").lower() == "ok"
    ):
        instruction = rest[0]["content"]
        rest = rest[2:]
    if (
        rest
        and rest[0]["role"] == "user"
        and rest[0]["content"].count(_ICL_SEPARATOR) >= 2
        and _YOUR_TURN.search(rest[0]["content"].rsplit(_ICL_SEPARATOR, 1)[-1])
    ):
        head, *examples, task = rest[0]["content"].split(_ICL_SEPARATOR)
        instruction = head if instruction is None else instruction + "\n\n" + head
        example_text = _ICL_SEPARATOR.join(examples).strip()
        task = _YOUR_TURN.sub("", task, count=1).strip()
        icl = [{"role": "user", "content": example_text}] if example_text else []
        return instruction, icl, [{"role": "user", "content": task}] + rest[1:]
    if in_context_turns is not None:
        if in_context_turns < 0 or in_context_turns > len(rest):
            raise ValueError(f"in_context_turns={in_context_turns} but only {len(rest)} turns follow the instruction")
        return instruction, rest[:in_context_turns], rest[in_context_turns:]
    compiled = [re.compile(p) for p in patterns]
    starts: list[int] = []
    seen: set[str] = set()
    for i, message in enumerate(rest):
        if message["role"] != "user" or not any(p.search(message["content"].lstrip()) for p in compiled):
            continue
        # A page that repeats an episode's opening (WebShop's "Back to Search", ScienceWorld's "task"
        # action) belongs to the same episode; only a *different* opening starts a new one.
        key = _normalise_start(message["content"])
        if key not in seen:
            seen.add(key)
            starts.append(i)
    if len(starts) >= 2 and starts[-1] > 0:
        return instruction, rest[: starts[-1]], rest[starts[-1] :]
    return instruction, [], rest


def _normalise_start(text: str) -> str:
    text = re.sub(r"^\s*(Observation:\s*)?(Task Description:\s*)?", "", text)
    return " ".join(text.split()).lower()


def _icl_as_text(turns: list[dict[str, str]]) -> str:
    return "\n".join(turn["content"] for turn in turns).strip()


def _dig(record: Any, dotted: str) -> Any:
    value = record
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


#: ``meta`` fields that become columns (``rewards``, ``success``, ``done``) rather than metadata.
_ETO_META_COLUMNS = ("reward", "success", "finished")
_TASK_ID = re.compile(r"^([A-Za-z][A-Za-z0-9-]*?)[_-]\d+$")


def eto_task_category(record_id: Any) -> str:
    """The task name of a ScienceWorld-style id (``"boil_1"`` -> ``"boil"``); ``""`` for other ids."""
    match = _TASK_ID.match(str(record_id or ""))
    return match.group(1) if match else ""


def convert_eto(
    records: Iterable[Any],
    *,
    in_context_examples: str = "drop",
    in_context_turns: int | None = None,
    default_reward: float | None = None,
    category_of: Callable[[Any, list[dict[str, str]]], str] | None = None,
    source: str = "real",
    id_prefix: str = "eto",
    source_name: str | None = None,
) -> list[dict[str, Any]]:
    """Convert ETO / TraTree records (``from``/``value`` or ``role``/``content``) to schema rows.

    Args:
        in_context_examples: ``"drop"`` (default) removes in-context example turns; ``"system"``
            appends them as text to the system message (they stay context, never actions).
        in_context_turns: force the number of in-context example turns after the instruction
            (ETO's offsets: 8 for WebShop, 14 for ScienceWorld); ``None`` detects them.
        default_reward: reward for records with neither ``meta.reward`` nor ``reward`` (e.g. the
            in-context demonstrations, which are successful by construction: pass 1.0). ``None``
            makes a missing reward an error.
        category_of: ``(record, messages) -> category``; default: the record's ``category`` field, else
            the task name of a ScienceWorld-style id (:func:`eto_task_category`).
        source: value of the ``source`` column.
        source_name: file name used in error messages.
    """
    if in_context_examples not in ("drop", "system"):
        raise ValueError(f"in_context_examples must be 'drop' or 'system', got {in_context_examples!r}")
    rows: list[dict[str, Any]] = []
    for index, record in enumerate(records):
        turns = _eto_turns(record, index, source_name)
        try:
            instruction, icl, task = split_in_context_examples(turns, in_context_turns=in_context_turns)
        except ValueError as error:
            raise ConversionError(index, "conversations", str(error), source_name) from error
        meta = record if isinstance(record, Mapping) else {}
        reward = None
        for field in ("meta.reward", "reward"):
            value = _dig(meta, field)
            if value is not None:
                reward, reward_field = value, field
                break
        if reward is None:
            if default_reward is None:
                raise ConversionError(
                    index,
                    "reward",
                    "missing (neither 'meta.reward' nor 'reward'); pass default_reward= to fill it",
                    source_name,
                )
            reward, reward_field = default_reward, "default_reward"
        if isinstance(reward, bool):
            reward = float(reward)
        if not isinstance(reward, (int, float)):
            raise ConversionError(index, reward_field, f"expected a number, got {reward!r}", source_name)
        system = instruction
        if icl and in_context_examples == "system":
            examples = _icl_as_text(icl)
            system = f"{instruction}\n\nExample:\n{examples}" if instruction else f"Example:\n{examples}"
        messages = ([{"role": "system", "content": system}] if system else []) + task
        n_actions = sum(m["role"] == "assistant" for m in messages)
        if n_actions == 0:
            raise ConversionError(
                index,
                "conversations",
                "empty trajectory: no assistant (gpt) turn after the instruction and in-context examples",
                source_name,
            )
        rewards = [0.0] * (n_actions - 1) + [float(reward)]
        record_id = next(
            (v for v in (_dig(meta, k) for k in ("id", "meta.id", "game_file", "_file")) if v not in (None, "")), None
        )
        row_id = str(record_id) if record_id not in (None, "") else f"{id_prefix}-{index}"
        success = _dig(meta, "meta.success")
        if success is None:
            success = _dig(meta, "success")
        finished = _dig(meta, "meta.finished")
        if category_of is not None:
            category = category_of(record, messages)
        else:
            category = str(_dig(meta, "category") or "") or eto_task_category(record_id)
        recorded_meta = meta.get("meta") if isinstance(meta.get("meta"), Mapping) else {}
        rows.append(
            make_trajectory(
                messages,
                rewards,
                id=row_id,
                task_id=str(_dig(meta, "task_id") or row_id),
                category=category,
                source=source,
                done=True if finished is None else bool(finished),
                success=None if success is None else bool(success),
                metadata={
                    # the source's own fields first, so that they cannot overwrite the conversion's record
                    **{key: value for key, value in recorded_meta.items() if key not in _ETO_META_COLUMNS},
                    "format": "eto",
                    "reward_field": reward_field,
                    "in_context_turns": len(icl),
                    "in_context_examples": in_context_examples if icl else "none",
                },
            )
        )
        _finish(rows, index, source_name)
    return rows


# --------------------------------------------------------------------------------------------
# LMRL-Gym twenty questions

TWENTY_QUESTIONS_SYSTEM_PROMPT = (
    "You are playing Twenty Questions. A hidden object has been chosen. Each turn, ask one yes/no "
    "question; the oracle answers Yes or No. Identify the object in as few questions as possible "
    "(at most twenty); guess it by asking, e.g., 'Is it a cat?'."
)
TWENTY_QUESTIONS_FIRST_OBSERVATION = "Questions:"


def split_question_answer(line: str) -> tuple[str, str]:
    """``"Is it an animal? No."`` -> ``("Is it an animal?", "No.")`` (split at the last ``"? "``)."""
    question, separator, answer = line.rpartition("? ")
    if not separator or not question.strip() or not answer.strip():
        raise ValueError(f"expected 'Question? Answer.', got {line!r}")
    return question.strip() + "?", answer.strip()


def convert_twenty_questions(
    records: Iterable[Mapping[str, Any]],
    *,
    reward: str = "boost",
    max_questions: int = 20,
    system_prompt: str | None = TWENTY_QUESTIONS_SYSTEM_PROMPT,
    first_observation: str = TWENTY_QUESTIONS_FIRST_OBSERVATION,
    source: str = "real",
    id_prefix: str = "20q",
    source_name: str | None = None,
) -> list[dict[str, Any]]:
    """Convert LMRL-Gym twenty-questions conversations to schema rows (see the module docstring).

    Args:
        reward: ``"boost"`` (questions remaining on a correct guess) or ``"lmrl"`` (-1 per question).
        max_questions: the question budget (20 in LMRL-Gym and BOOST).
        system_prompt: the game rules as the system message (``None`` for none).
        first_observation: the observation before the first question (LMRL-Gym's ``"Questions:"``).
    """
    if reward not in ("boost", "lmrl"):
        raise ValueError(f"reward must be 'boost' or 'lmrl', got {reward!r}")
    rows: list[dict[str, Any]] = []
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise ConversionError(index, "record", f"expected an object, got {type(record).__name__}", source_name)
        for field in ("lines", "correct", "word"):
            if field not in record:
                raise ConversionError(index, field, "missing", source_name)
        lines, correct, word = record["lines"], record["correct"], record["word"]
        if not isinstance(lines, list) or not lines:
            raise ConversionError(index, "lines", "empty trajectory: no questions", source_name)
        if len(lines) > max_questions:
            raise ConversionError(
                index, "lines", f"{len(lines)} questions exceed max_questions={max_questions}", source_name
            )
        if not isinstance(correct, bool):
            raise ConversionError(index, "correct", f"expected true/false, got {correct!r}", source_name)
        if isinstance(word, str):
            word = word.split(";")
        if not isinstance(word, list) or not word or not all(isinstance(w, str) and w for w in word):
            raise ConversionError(
                index, "word", f"expected a non-empty list of strings, got {record['word']!r}", source_name
            )
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages.append({"role": "user", "content": first_observation})
        for position, line in enumerate(lines):
            if not isinstance(line, str):
                raise ConversionError(
                    index, f"lines[{position}]", f"expected a string, got {type(line).__name__}", source_name
                )
            try:
                question, answer = split_question_answer(line)
            except ValueError as error:
                raise ConversionError(index, f"lines[{position}]", str(error), source_name) from error
            messages += [{"role": "assistant", "content": question}, {"role": "user", "content": answer}]
        n = len(lines)
        if reward == "boost":
            rewards = [0.0] * n
            rewards[-1] = float(max_questions - n) if correct else 0.0
        else:
            rewards = [-1.0] * n
            if correct:
                rewards[-1] = 0.0
        rows.append(
            make_trajectory(
                messages,
                rewards,
                id=str(record["id"]) if record.get("id") not in (None, "") else f"{id_prefix}-{index}",
                task_id=word[0],
                category=twenty_questions_category(word),
                source=source,
                # LMRL-Gym: an episode ends on the correct guess or when the budget is used up.
                done=correct or n >= max_questions,
                success=correct,
                metadata={
                    "format": "lmrl_twenty_questions",
                    "word": word,
                    "reward_scheme": reward,
                    "max_questions": max_questions,
                },
            )
        )
        _finish(rows, index, source_name)
    return rows


# --------------------------------------------------------------------------------------------
# LMRL-Gym car dealer

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


# --------------------------------------------------------------------------------------------
# one entry point

CONVERTERS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "eto": convert_eto,
    "twenty_questions": convert_twenty_questions,
    "car_dealer": convert_car_dealer,
}


def load_trajectories(path: str | Path, format: str, **kwargs) -> datasets.Dataset:
    """Read ``path`` (see :func:`read_json_records`), convert it with the ``format`` converter and
    return a validated :class:`datasets.Dataset` (keyword arguments go to the converter)."""
    if format not in CONVERTERS:
        raise ValueError(f"unknown format {format!r}; expected one of {sorted(CONVERTERS)}")
    records = read_json_records(path)
    if not records:
        raise ValueError(f"{path}: holds no records to convert")
    kwargs.setdefault("source_name", str(path))
    rows = CONVERTERS[format](records, **kwargs)
    try:
        return to_dataset(rows)
    except TrajectoryValidationError as error:  # e.g. a duplicate id, which no single record shows
        raise ConversionError(error.index, error.field, error.problem, str(path)) from error
