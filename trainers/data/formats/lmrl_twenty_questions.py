"""LMRL-Gym twenty questions -> trajectory-schema rows (format ``"twenty_questions"``).

A record is ``{"lines": ["Is it an animal? No.", ...], "correct": bool, "word": [variants]}``. The
agent asks (assistant), the oracle answers (user).

Reward conventions (``reward=``): ``"boost"`` (default, BOOST paper): the number of questions
remaining on a correct guess (``max_questions - questions asked``), 0 otherwise, on the last turn;
``"lmrl"`` (LMRL-Gym original): -1 per question, 0 for the question that guesses the word.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..schema import make_trajectory
from ..twenty_questions_words import twenty_questions_category
from .common import ConversionError, _finish

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


__all__ = [
    "TWENTY_QUESTIONS_FIRST_OBSERVATION",
    "TWENTY_QUESTIONS_SYSTEM_PROMPT",
    "convert_twenty_questions",
    "split_question_answer",
]
