"""Reading a trajectory row the way the tree does: its execution steps and its outcome G(e).

A :class:`Step` is one assistant turn ``(previous observation, thought, action)``: the observation
is the user message just before it, the action is what :func:`trainers.envs.extract_action` reads
and the thought is the text before ``Action:`` (without a ``Thought:`` label).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trainers.data.schema import metadata_of
from trainers.envs.base import extract_action


@dataclass(slots=True)
class Step:
    """One assistant turn of a trajectory, as the tree sees it."""

    observation: str
    thought: str
    action: str
    content: str  # the assistant message verbatim, so training text reproduces what the agent said


def _split_thought(content: str) -> str:
    marker = content.rfind("Action:")
    thought = content[:marker] if marker >= 0 else ""
    thought = thought.strip()
    if thought.startswith("Thought:"):
        thought = thought[len("Thought:") :].strip()
    return thought


def parse_steps(messages: Sequence[Mapping[str, str]]) -> tuple[str, str, list[Step]]:
    """Return ``(system, instruction, steps)`` of a trajectory's messages.

    ``instruction`` is the first user message; each step's observation is the user message before
    its assistant turn (the instruction for the first step).
    """
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    instruction = next((m["content"] for m in messages if m["role"] == "user"), "")
    steps: list[Step] = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        previous = messages[index - 1] if index > 0 else None
        observation = previous["content"] if previous is not None and previous["role"] == "user" else ""
        content = message["content"]
        steps.append(Step(observation, _split_thought(content), extract_action(content), content))
    return system, instruction, steps


def trajectory_outcome(row: Mapping[str, Any], score_key: str = "final_score", index: int | None = None) -> float:
    """G(e) of a trajectory row, read from its metadata.

    In order: ``metadata[score_key]`` (exploration rows store G(e) in [0, 1] as
    ``"final_score"``); the environment's ``"normalized_score"``; its ``"score"`` when that lies in
    [0, 1] (ScienceWorld's raw ``score`` is 0-100 and is skipped); else the sum of the rewards.
    """
    meta = metadata_of(row)
    where = f"row {index}" if index is not None else "row"
    if row.get("id"):
        where += f" (id={row['id']!r})"
    field_name, value = score_key, meta.get(score_key)
    if value is None and meta.get("normalized_score") is not None:
        field_name, value = "normalized_score", meta["normalized_score"]
    if value is None and isinstance(meta.get("score"), (int, float)) and 0.0 <= float(meta["score"]) <= 1.0:
        field_name, value = "score", meta["score"]
    if value is None:
        return float(sum(row["rewards"]))
    try:
        value = float(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}, field 'metadata.{field_name}': outcome must be a number, got {value!r}") from error
    if not math.isfinite(value):
        raise ValueError(f"{where}, field 'metadata.{field_name}': outcome must be finite, got {value!r}")
    return value


__all__ = ["Step", "parse_steps", "trajectory_outcome"]
