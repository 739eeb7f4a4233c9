"""ETO / TraTree agent trajectories -> trajectory-schema rows (format ``"eto"``).

A record is ``{"id", "conversations": [{"from": "human"|"gpt", "value"}...], "reward"}`` (golden
SFT files) or ``{"meta": {"reward", "success", ...}, "conversations": [...]}`` (evaluation
outputs), or the ``role``/``content`` variant (a bare list of messages, as in the example
trajectories ETO publishes). The opening instruction turn (a human turn acknowledged by a ``gpt``
"OK") becomes the system message; in-context example episodes that precede the real task are
recognised (see :func:`split_in_context_examples`) and dropped, or folded into the system message
as text with ``in_context_examples="system"`` (never kept as actions: their rewards are unknown).
The record's reward goes on the last assistant turn; the other ``meta`` fields (steps, terminate
reason, ...) go into ``metadata``; the category is the task name of ScienceWorld-style ids
(``boil_1`` -> ``boil``) unless the record has a ``category`` field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..schema import make_trajectory
from .common import ConversionError, _finish

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


__all__ = ["EPISODE_START_PATTERNS", "convert_eto", "eto_task_category", "split_in_context_examples"]
