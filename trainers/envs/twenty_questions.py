"""Twenty Questions (LMRL-Gym, BOOST appendix E.1) with a knowledge-base oracle.

The agent asks yes/no questions about a hidden object and wins by naming it. LMRL-Gym answers with
a fine-tuned T5; offline, the oracle here answers from a hand-written knowledge base
(``data/twenty_questions_kb.json``): 17 categories (BOOST table 3) of 10-14 objects each and a bank
of ~170 attributes (~900 question phrasings, category questions included) with, for every object, a
truthful yes/no. A free-form question is answered by, in order:

1. **guess**: "Is it a dog?", "Is it dogs?", "Is the object a puppy?", "Dog?" - the noun phrase is
   compared with every object's names and synonyms (rapidfuzz ratio after dropping articles and a
   plural ending). Naming the hidden object ends the episode; naming another object answers "No.";
2. **category membership**: "Is it a fruit?", "Is it a type of kitchen utensil?" for every category
   keyword, including "or" questions ("Is it a fruit or a vegetable?" is Yes if either is true);
3. **attribute bank**: the question is embedded with all-MiniLM-L6-v2 and matched to the closest
   bank question by cosine similarity; at or above ``similarity_floor`` the object's answer for
   that attribute is returned (flipped for negated phrasings such as "Is it natural?");
4. below the floor the question is unclear and the oracle answers "No.", which is what LMRL-Gym's
   oracle does for an answer it cannot read as yes/no and for invalid (e.g. empty) questions.

Rewards: ``reward_mode="boost"`` (BOOST paper): on the correct guess, the number of questions
remaining, ``max_questions - questions asked`` (the guess counts as a question), 0 on every other
step and on failure. ``reward_mode="lmrl"`` (LMRL-Gym): -1 per question, 0 for the question that
guesses the object; the return is minus the hitting time, as in BOOST section 2.1.

Observations follow LMRL-Gym's ``lines`` format: the first is ``"Questions:"``, then each answer is
``"Yes."`` or ``"No."``. Not modelled: the T5 oracle's own mistakes; negated questions ("Is it not

Where things live: the knowledge base (objects, attribute bank, loading and validation) is in
:mod:`.twenty_questions_kb`; question parsing, the embedding caches and the oracle are in
:mod:`.twenty_questions_oracle`; the environment is here, and this module re-exports the public
names of both.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..embeddings import DEFAULT_ENCODER
from .base import StepResult, Task, extract_action
from .twenty_questions_kb import (
    DEFAULT_KB_PATH,
    BankQuestion,  # noqa: F401 - re-exported
    KnowledgeBase,
    KnowledgeBaseError,
    TwentyQuestionsObject,
    _normalise_name,
)
from .twenty_questions_oracle import (
    _BANK_VECTORS,  # noqa: F401 - re-exported
    _EMBEDDING_CACHES,  # noqa: F401 - re-exported
    DEFAULT_GUESS_THRESHOLD,
    DEFAULT_SIMILARITY_FLOOR,
    MAX_QUESTION_WORDS,  # noqa: F401 - re-exported
    NO,  # noqa: F401 - re-exported
    YES,  # noqa: F401 - re-exported
    OracleAnswer,
    TwentyQuestionsOracle,
    _bank_vectors,  # noqa: F401 - re-exported
    bank_cache_dir,  # noqa: F401 - re-exported
    shared_embedding_cache,
)

FIRST_OBSERVATION = "Questions:"
REWARD_MODES = ("boost", "lmrl")

SYSTEM_PROMPT = (
    "Let's play Twenty Questions. I am thinking of an object; it belongs to one of these categories: "
    "sports, animals, fruits, vehicles, clothes, electronics, musical instruments, furniture, office "
    "supplies, vegetables, art, kitchen tools, nature, toys, jewelry, garden supplies, tools. "
    'Each turn, ask one question that can be answered with yes or no; I answer "Yes." or "No.". '
    'To win, name the object in a question, for example "Is it a cat?". You have at most 20 '
    "questions, and the game ends as soon as you name the object. Guessing it with fewer questions "
    "is better."
)


#: what LMRL-Gym records for a question its post-processing rejects
LMRL_INVALID_QUESTION = "Is this a valid question?"


def _lmrl_question(question: str) -> str:
    question = re.sub(r"\s+", " ", question).strip().rstrip("?").strip()
    return f"{question}?" if question else LMRL_INVALID_QUESTION


# ----------------------------------------------------------------------------------------------
# environment


@dataclass
class _Episode:
    task: Task
    obj: TwentyQuestionsObject
    seed: int | None
    questions: int = 0
    done: bool = False
    won: bool = False
    history: list[tuple[str, str]] = field(default_factory=list)


class TwentyQuestionsEnv:
    """Twenty Questions as a :class:`~trainers.envs.TextEnv` (module docstring for the oracle).

    Args:
        max_questions: the question budget; default 20 (LMRL-Gym and BOOST).
        reward_mode: ``"boost"`` (default; BOOST paper: questions remaining on the correct guess,
            else 0) or ``"lmrl"`` (LMRL-Gym: -1 per question, 0 on the correct guess).
        similarity_floor: cosine similarity below which a question is unclear and answered
            "No."; default 0.65 (no paper value: LMRL-Gym uses a T5 oracle).
        guess_threshold: rapidfuzz ratio for a noun phrase to name an object; default 85.
        kb_path: a knowledge-base JSON file in the built-in file's format; default the built-in.
        encoder: sentence-embedding model; default all-MiniLM-L6-v2 (shipped in a PyPI package).
    """

    name = "twenty_questions"

    def __init__(
        self,
        max_questions: int = 20,
        reward_mode: str = "boost",
        similarity_floor: float = DEFAULT_SIMILARITY_FLOOR,
        guess_threshold: float = DEFAULT_GUESS_THRESHOLD,
        kb_path: str | Path | None = None,
        encoder: str = DEFAULT_ENCODER,
    ):
        if reward_mode not in REWARD_MODES:
            raise ValueError(f"reward_mode must be one of {REWARD_MODES}, got {reward_mode!r}")
        if max_questions < 1:
            raise ValueError(f"max_questions must be at least 1, got {max_questions}")
        self.max_questions = self.max_steps = int(max_questions)
        self.reward_mode = reward_mode
        self.kb = KnowledgeBase.load(kb_path)
        self.oracle = TwentyQuestionsOracle(self.kb, similarity_floor, guess_threshold, encoder)
        self.system_prompt = SYSTEM_PROMPT.replace("at most 20", f"at most {self.max_questions}")
        self._episode: _Episode | None = None

    # -- tasks ---------------------------------------------------------------------------------
    def tasks(self, split: str | None = None) -> list[Task]:
        """One task per object, in knowledge-base order: ``task_id`` is the object's name (as
        LMRL-Gym data names it), ``category`` its BOOST category. The game has no split of its own:
        ``split`` must be ``None`` or ``"train"`` (BOOST splits by category, see ``trainers.data``)."""
        if split not in (None, "train"):
            raise ValueError(
                f"twenty_questions has no {split!r} split; split tasks by category instead "
                "(every task has split='train')"
            )
        return [
            Task(task_id=obj.name, category=obj.category, spec={"object": obj.name, "variants": list(obj.variants)})
            for objs in self.kb.categories.values()
            for obj in objs
        ]

    def _resolve(self, task: Task | str | None, seed: int | None) -> TwentyQuestionsObject:
        if task is None:
            # like LMRL-Gym's reset: the seed picks the word
            return random.Random(seed).choice(list(self.kb.objects.values()))
        name = task if isinstance(task, str) else (task.spec.get("object") or task.task_id)
        if name in self.kb.objects:
            return self.kb.objects[name]
        category = self.kb.category_of(name)
        if category is not None:
            key = _normalise_name(name)
            return next(o for o in self.kb.categories[category] if key in map(_normalise_name, o.variants))
        raise ValueError(f"unknown twenty-questions object {name!r} (task {getattr(task, 'task_id', task)!r})")

    # -- episode -------------------------------------------------------------------------------
    def reset(self, task: Task | str | None = None, seed: int | None = None) -> str:
        obj = self._resolve(task, seed)
        if not isinstance(task, Task):
            task = Task(task_id=obj.name, category=obj.category, spec={"object": obj.name})
        self._episode = _Episode(task=task, obj=obj, seed=seed)
        return FIRST_OBSERVATION

    def step(self, action: str) -> StepResult:
        episode = self._episode
        if episode is None:
            raise RuntimeError("call reset(task) before step()")
        if episode.done:
            raise RuntimeError(f"the episode for {episode.task.task_id!r} is over; call reset() to start another")
        question = extract_action(action if isinstance(action, str) else "")
        result = self.oracle.answer(episode.obj, question)
        return self._advance(episode, question, result)

    @staticmethod
    def step_batch(envs: Sequence[TwentyQuestionsEnv], actions: Sequence[str]) -> list[StepResult]:
        """``[env.step(a) for env, a in zip(envs, actions)]``, with one embedding call for all the
        questions that need the model (environments sharing the oracle settings are batched)."""
        if len(envs) != len(actions):
            raise ValueError(f"{len(envs)} environments but {len(actions)} actions")
        questions, groups = [], {}
        for index, (env, action) in enumerate(zip(envs, actions)):
            episode = env._episode
            if episode is None:
                raise RuntimeError(f"environment {index}: call reset(task) before step_batch()")
            if episode.done:
                raise RuntimeError(f"environment {index}: the episode for {episode.task.task_id!r} is over")
            questions.append(extract_action(action if isinstance(action, str) else ""))
            oracle = env.oracle
            key = (oracle.kb.path, oracle.encoder, oracle.similarity_floor, oracle.guess_threshold)
            groups.setdefault(key, []).append(index)
        answers: list[OracleAnswer | None] = [None] * len(envs)
        for indices in groups.values():
            oracle = envs[indices[0]].oracle
            batch = oracle.answer_batch([envs[i]._episode.obj for i in indices], [questions[i] for i in indices])
            for i, answer in zip(indices, batch):
                answers[i] = answer
        return [env._advance(env._episode, q, a) for env, q, a in zip(envs, questions, answers)]

    def _advance(self, episode: _Episode, question: str, result: OracleAnswer) -> StepResult:
        episode.questions += 1
        episode.history.append((question, result.answer))
        won = episode.won = result.correct_guess
        episode.done = won or episode.questions >= self.max_questions
        if self.reward_mode == "boost":
            reward = float(self.max_questions - episode.questions) if won else 0.0
        else:
            reward = 0.0 if won else -1.0
        info: dict[str, Any] = {
            "questions_asked": episode.questions,
            "questions_remaining": self.max_questions - episode.questions,
            "kind": result.kind,
            "attribute": result.attribute,
            "similarity": result.similarity,
            "matched": result.matched,
        }
        if episode.done:
            info.update(success=won, object=episode.obj.name, score=float(won))
        return StepResult(result.answer, reward, episode.done, info)

    @property
    def history(self) -> list[tuple[str, str]]:
        """``(question, answer)`` pairs of the current episode (LMRL-Gym's ``lines``)."""
        return list(self._episode.history) if self._episode else []

    def lmrl_record(self) -> dict[str, Any]:
        """The current episode in LMRL-Gym's JSON format (``lines``, ``correct``, ``word``)."""
        if self._episode is None:
            raise RuntimeError("no episode: call reset() first")
        episode = self._episode
        return {
            "lines": [f"{_lmrl_question(q)} {a}" for q, a in episode.history],
            "correct": episode.won,
            "word": list(episode.obj.variants),
        }


__all__ = [
    "DEFAULT_KB_PATH",
    "DEFAULT_SIMILARITY_FLOOR",
    "FIRST_OBSERVATION",
    "KnowledgeBase",
    "KnowledgeBaseError",
    "OracleAnswer",
    "SYSTEM_PROMPT",
    "TwentyQuestionsEnv",
    "TwentyQuestionsObject",
    "TwentyQuestionsOracle",
    "shared_embedding_cache",
]
