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
an animal?") are answered as their positive form.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..embeddings import DEFAULT_ENCODER, EmbeddingCache
from .base import StepResult, Task, extract_action

DEFAULT_KB_PATH = Path(__file__).with_name("data") / "twenty_questions_kb.json"
FIRST_OBSERVATION = "Questions:"
YES, NO = "Yes.", "No."
REWARD_MODES = ("boost", "lmrl")

#: Cosine similarity (all-MiniLM-L6-v2, unit vectors) below which a question is "unclear".
#: Measured on this bank: 29 paraphrases of bank questions matched the right attribute at 0.69-0.98
#: (most above 0.8); off-topic text ("What is your name?", "asdf qwerty", "Tell me a joke.") scored
#: 0.23-0.55; the wrong nearest matches seen ("Does it run on gasoline?" -> electricity 0.64,
#: "Is the sky blue?" -> "found in the sky" 0.62) fall below 0.65.
DEFAULT_SIMILARITY_FLOOR = 0.65
#: rapidfuzz ratio (0-100) for a guess to name an object; names of 5 letters or fewer need 90 so
#: that "brush" does not name "bush" and "plant" does not name "pant".
DEFAULT_GUESS_THRESHOLD = 85.0
_SHORT_NAME_THRESHOLD = 90.0
#: LMRL-Gym's asker post-processing treats questions of more than 40 words as invalid.
MAX_QUESTION_WORDS = 40

SYSTEM_PROMPT = (
    "Let's play Twenty Questions. I am thinking of an object; it belongs to one of these categories: "
    "sports, animals, fruits, vehicles, clothes, electronics, musical instruments, furniture, office "
    "supplies, vegetables, art, kitchen tools, nature, toys, jewelry, garden supplies, tools. "
    'Each turn, ask one question that can be answered with yes or no; I answer "Yes." or "No.". '
    'To win, name the object in a question, for example "Is it a cat?". You have at most 20 '
    "questions, and the game ends as soon as you name the object. Guessing it with fewer questions "
    "is better."
)


class KnowledgeBaseError(ValueError):
    """The knowledge-base file is malformed; the message names the file and the entry."""


# ----------------------------------------------------------------------------------------------
# knowledge base


@dataclass(frozen=True)
class TwentyQuestionsObject:
    name: str
    category: str
    variants: tuple[str, ...]  # the name first, then accepted synonyms / plural forms
    attributes: frozenset[str]  # attribute ids (and "cat:<Category>" memberships) that are true


@dataclass(frozen=True)
class BankQuestion:
    text: str
    attribute: str
    negated: bool


@dataclass
class KnowledgeBase:
    path: str
    categories: dict[str, list[TwentyQuestionsObject]]
    objects: dict[str, TwentyQuestionsObject]
    attribute_ids: tuple[str, ...]
    bank: tuple[BankQuestion, ...]
    keywords: dict[str, str]  # normalised keyword -> "cat:<Category>"

    def truth(self, obj: TwentyQuestionsObject | str, attribute: str) -> bool:
        obj = self.objects[obj] if isinstance(obj, str) else obj
        return attribute in obj.attributes

    def category_of(self, word: str) -> str | None:
        """The category of an object name or synonym (case-insensitive), or ``None``."""
        key = _normalise_name(word)
        for obj in self.objects.values():
            if key in (_normalise_name(v) for v in obj.variants):
                return obj.category
        return None

    @classmethod
    def load(cls, path: str | Path | None = None) -> KnowledgeBase:
        """Load and validate a knowledge-base JSON file (the built-in one by default); cached."""
        return _load_kb(str(Path(path) if path is not None else DEFAULT_KB_PATH))


def _expand(spec: Sequence[str], kb_categories: dict[str, list[str]], where: str) -> set[str]:
    everything = {name for names in kb_categories.values() for name in names}
    chosen: set[str] = set()
    for entry in spec:
        remove = entry.startswith("-")
        token = entry[1:] if remove else entry
        if token == "@*":
            names = everything
        elif token.startswith("@"):
            if token[1:] not in kb_categories:
                raise KnowledgeBaseError(f"{where}: unknown category {token[1:]!r}")
            names = set(kb_categories[token[1:]])
        else:
            if token not in everything:
                raise KnowledgeBaseError(f"{where}: unknown object {token!r}")
            names = {token}
        chosen = chosen - names if remove else chosen | names
    return chosen


@lru_cache(maxsize=8)
def _load_kb(path: str) -> KnowledgeBase:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise KnowledgeBaseError(f"{path}: knowledge-base file not found") from error
    except json.JSONDecodeError as error:
        raise KnowledgeBaseError(f"{path}: not valid JSON ({error})") from error
    for key in ("categories", "attributes"):
        if not isinstance(raw.get(key), dict) or not raw[key]:
            raise KnowledgeBaseError(f"{path}: missing or empty '{key}'")

    names_by_category: dict[str, list[str]] = {}
    variants: dict[str, tuple[str, ...]] = {}
    keywords: dict[str, str] = {}
    seen: dict[str, str] = {}
    for category, entry in raw["categories"].items():
        objects = entry.get("objects")
        if not isinstance(objects, dict) or not objects:
            raise KnowledgeBaseError(f"{path}: category {category!r} has no 'objects'")
        names_by_category[category] = list(objects)
        for name, synonyms in objects.items():
            if name in seen:
                raise KnowledgeBaseError(f"{path}: object {name!r} appears in {seen[name]!r} and {category!r}")
            if not isinstance(synonyms, list) or not all(isinstance(s, str) and s for s in synonyms):
                raise KnowledgeBaseError(
                    f"{path}: category {category!r}, object {name!r}: synonyms must be a list of strings"
                )
            seen[name] = category
            variants[name] = (name, *synonyms)
        for keyword in entry.get("keywords", []):
            keywords[_normalise_name(keyword)] = f"cat:{category}"
        keywords.setdefault(_normalise_name(category), f"cat:{category}")

    true_sets: dict[str, set[str]] = {}
    bank: list[BankQuestion] = []
    for attribute, entry in raw["attributes"].items():
        where = f"{path}: attribute {attribute!r}"
        questions = entry.get("questions")
        if not isinstance(questions, list) or not questions:
            raise KnowledgeBaseError(f"{where}: needs a non-empty 'questions' list")
        if "true_for" not in entry:
            raise KnowledgeBaseError(f"{where}: missing 'true_for'")
        true_sets[attribute] = _expand(entry["true_for"], names_by_category, where)
        bank += [BankQuestion(q, attribute, False) for q in questions]
        bank += [BankQuestion(q, attribute, True) for q in entry.get("negated", [])]

    for category, entry in raw["categories"].items():
        where = f"{path}: category {category!r}"
        members = set(names_by_category[category])
        members |= _expand(entry.get("also_member", []), names_by_category, where)
        members -= _expand(entry.get("not_member", []), names_by_category, where)
        true_sets[f"cat:{category}"] = members
        for keyword in [category, *entry.get("keywords", [])]:
            for template in ("Is it a {}?", "Is it a type of {}?", "Is it some kind of {}?"):
                bank.append(BankQuestion(template.format(keyword.lower()), f"cat:{category}", False))

    categories = {
        category: [
            TwentyQuestionsObject(
                name=name,
                category=category,
                variants=variants[name],
                attributes=frozenset(a for a, members in true_sets.items() if name in members),
            )
            for name in names
        ]
        for category, names in names_by_category.items()
    }
    objects = {obj.name: obj for objs in categories.values() for obj in objs}
    return KnowledgeBase(
        path=path,
        categories=categories,
        objects=objects,
        attribute_ids=tuple(true_sets),
        bank=tuple(bank),
        keywords=keywords,
    )


# ----------------------------------------------------------------------------------------------
# question parsing

_ARTICLES = re.compile(
    r"^(?:(?:a|an|the|some|one|any|just|really|actually|maybe|perhaps|possibly)\s+)*"
    r"(?:(?:kind|type|sort|piece|form|item|article|variety|pair|set|pack|bottle|sheet|example|member|part)\s+of\s+)?"
    r"(?:(?:a|an|the|some)\s+)?",
)
# "Is it a dog", "Is your object a dog", "Are you thinking of a dog", "My guess is a dog", ...
_NOUN_PHRASE = re.compile(
    r"^(?:so\s+|then\s+|ok(?:ay)?\s*,?\s+|well\s*,?\s+|hmm+\s*,?\s+)?"
    r"(?:is|are|was)\s+(?:it|this|that|they|the\s+(?:object|thing|item|answer|word|hidden\s+object|secret\s+object)|your\s+(?:object|thing|item|word))\s+(?P<rest>.+)$"
    r"|^(?:are\s+you\s+thinking\s+(?:of|about)|my\s+(?:final\s+)?guess\s+is|i\s+guess|i\s+think\s+it\s*(?:is|'s)|guess\s*:?|final\s+guess\s*:?|answer\s*:?|it\s*(?:is|'s))\s+(?P<rest2>.+)$"
)
_ADJECTIVES = frozenset(
    "big small large little tiny huge giant real regular normal ordinary common typical standard wild "
    "young old new red green yellow black white brown blue wooden metal plastic fresh ripe cute".split()
)
_TRAILING = re.compile(r"\s*(?:,?\s*(?:right|then|perhaps|maybe|by any chance|or not))+$")


def _normalise_name(text: str) -> str:
    text = text.lower().replace("’", "'")
    text = re.sub(r"[^a-z0-9' -]+", " ", text)
    text = re.sub(r"[-\s]+", " ", text).strip()
    return text


def _singular(text: str) -> str:
    if len(text) > 4 and text.endswith("ies"):
        return text[:-3] + "y"
    if len(text) > 4 and text.endswith(("ches", "shes", "xes", "sses", "oes")):
        return text[:-2]
    if len(text) > 3 and text.endswith("s") and not text.endswith("ss"):
        return text[:-1]
    return text


def _noun_phrase(question: str) -> str | None:
    """The noun phrase a membership question or guess is about, or ``None`` for other questions."""
    text = question.lower().strip().replace("’", "'")
    text = re.sub(r"[?!.]+$", "", text).strip()
    match = _NOUN_PHRASE.match(text)
    if match:
        rest = match.group("rest") or match.group("rest2")
    elif len(text.split()) <= 3 and not re.match(
        r"^(?:is|are|does|do|can|could|would|will|has|have|was|did|should)\b", text
    ):
        rest = text  # a bare "Dog?" / "a tennis racket?"
    else:
        return None
    rest = _TRAILING.sub("", rest.strip(" ,"))
    rest = _ARTICLES.sub("", rest).strip(" ,")
    return _normalise_name(rest) or None


@dataclass
class OracleAnswer:
    answer: str  # "Yes." or "No."
    kind: str  # "guess", "category", "attribute", "unclear" or "invalid"
    correct_guess: bool = False
    attribute: str | None = None
    similarity: float | None = None
    matched: str | None = None  # the object / keyword / bank question the question was matched to


# ----------------------------------------------------------------------------------------------
# embeddings: one cache per encoder per process, bank vectors computed once

_EMBEDDING_CACHES: dict[str, EmbeddingCache] = {}
_BANK_VECTORS: dict[tuple[str, str], np.ndarray] = {}


def shared_embedding_cache(encoder: str = DEFAULT_ENCODER) -> EmbeddingCache:
    """The process-wide :class:`EmbeddingCache` for ``encoder`` (the model loads on first encode)."""
    if encoder not in _EMBEDDING_CACHES:
        _EMBEDDING_CACHES[encoder] = EmbeddingCache(encoder)
    return _EMBEDDING_CACHES[encoder]


def bank_cache_dir() -> Path:
    """Where bank embeddings are kept between processes: ``$TRAINERS_CACHE`` or ``~/.cache/trainers``."""
    return Path(os.environ.get("TRAINERS_CACHE", Path.home() / ".cache" / "trainers")) / "twenty_questions"


def _bank_vectors(kb: KnowledgeBase, encoder: str) -> np.ndarray:
    """Embeddings of every bank question, computed once per process and kept on disk, keyed by a
    hash of the encoder name and the bank's texts (so an edited knowledge base is re-encoded)."""
    key = (kb.path, encoder)
    if key in _BANK_VECTORS:
        return _BANK_VECTORS[key]
    texts = [q.text for q in kb.bank]
    digest = hashlib.sha256("\n".join([encoder, *texts]).encode()).hexdigest()[:16]
    path = bank_cache_dir() / f"bank-{digest}.npy"
    vectors = None
    if path.is_file():
        try:
            vectors = np.load(path)
            if vectors.shape[0] != len(texts):
                vectors = None
        except (OSError, ValueError):
            vectors = None  # a damaged cache file is recomputed below
    if vectors is None:
        vectors = shared_embedding_cache(encoder).encode(texts)
        temporary = None
        try:  # atomic: write a temp file, then rename over the final name
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npy", delete=False) as handle:
                temporary = handle.name
                np.save(handle, vectors)
            os.replace(temporary, path)
        except OSError:
            # a read-only home only costs the re-encoding next time
            if temporary is not None and os.path.exists(temporary):
                os.unlink(temporary)
    _BANK_VECTORS[key] = vectors
    return vectors


class TwentyQuestionsOracle:
    """Answers free-form yes/no questions about an object from the knowledge base (see module doc)."""

    def __init__(
        self,
        kb: KnowledgeBase | None = None,
        similarity_floor: float = DEFAULT_SIMILARITY_FLOOR,
        guess_threshold: float = DEFAULT_GUESS_THRESHOLD,
        encoder: str = DEFAULT_ENCODER,
    ):
        if not 0.0 <= similarity_floor <= 1.0:
            raise ValueError(f"similarity_floor must be in [0, 1], got {similarity_floor}")
        self.kb = kb or KnowledgeBase.load()
        self.similarity_floor = similarity_floor
        self.guess_threshold = guess_threshold
        self.encoder = encoder
        # questions asked exactly as a bank question need no embedding model at all
        self._exact = {}
        for index, entry in enumerate(self.kb.bank):
            self._exact.setdefault(_bank_key(entry.text), index)
        self._names = [
            (obj.name, _singular(_normalise_name(v))) for obj in self.kb.objects.values() for v in obj.variants
        ]

    def match_object(self, phrase: str) -> tuple[str | None, float]:
        """The object a noun phrase names (best rapidfuzz ratio over names and synonyms) and its score."""
        from rapidfuzz import fuzz

        phrase = _singular(_normalise_name(phrase))
        best, best_score = None, 0.0
        for name, variant in self._names:
            score = 100.0 if phrase == variant else fuzz.ratio(phrase, variant)
            if score > best_score:
                best, best_score = name, score
        needed = _SHORT_NAME_THRESHOLD if len(phrase) <= 5 else self.guess_threshold
        if best_score < needed:
            # LMRL-Gym ignores adjectives before the word ("Is it a big dog?"); without a POS tagger,
            # drop common ones and try again
            words = phrase.split()
            while len(words) > 1 and words[0] in _ADJECTIVES:
                words = words[1:]
            if len(words) < len(phrase.split()):
                return self.match_object(" ".join(words))
            return None, best_score
        return best, best_score

    def _symbolic(self, obj: TwentyQuestionsObject, question: str) -> OracleAnswer | None:
        phrase = _noun_phrase(question)
        if phrase is None:
            return None
        parts = [p.strip() for p in re.split(r"\s*,?\s+or\s+(?:an?\s+|the\s+)?", phrase) if p.strip()]
        resolved: list[tuple[str, str]] = []  # (kind, value)
        for part in parts:
            part = _ARTICLES.sub("", part).strip()
            keyword = self.kb.keywords.get(part) or self.kb.keywords.get(_singular(part))
            if keyword:
                resolved.append(("category", keyword))
                continue
            name, _ = self.match_object(part)
            if name is None:
                return None  # not purely about categories / objects: leave it to the attribute bank
            resolved.append(("guess", name))
        if len(resolved) == 1 and resolved[0][0] == "guess":
            hit = resolved[0][1] == obj.name
            return OracleAnswer(YES if hit else NO, "guess", correct_guess=hit, matched=resolved[0][1])
        # several alternatives: truthful "or" answer; naming the object among others is not a win
        truth = any(
            (value in obj.attributes) if kind == "category" else (value == obj.name) for kind, value in resolved
        )
        kinds = {kind for kind, _ in resolved}
        return OracleAnswer(
            YES if truth else NO,
            "category" if kinds == {"category"} else "guess",
            attribute=resolved[0][1] if kinds == {"category"} and len(resolved) == 1 else None,
            matched=" | ".join(value for _, value in resolved),
        )

    @staticmethod
    def is_valid(question: str) -> bool:
        words = question.split()
        return bool(words) and len(words) <= MAX_QUESTION_WORDS and re.search(r"[A-Za-z]", question) is not None

    def answer(self, obj: TwentyQuestionsObject | str, question: str) -> OracleAnswer:
        return self.answer_batch([obj], [question])[0]

    def answer_batch(self, objs: Sequence[TwentyQuestionsObject | str], questions: Sequence[str]) -> list[OracleAnswer]:
        """Answer many (object, question) pairs; the embedding model runs once for all of them."""
        if len(objs) != len(questions):
            raise ValueError(f"{len(objs)} objects but {len(questions)} questions")
        objs = [self.kb.objects[o] if isinstance(o, str) else o for o in objs]
        answers: list[OracleAnswer | None] = [None] * len(questions)
        pending: list[int] = []
        for i, (obj, question) in enumerate(zip(objs, questions)):
            question = question.strip()
            if not self.is_valid(question):
                answers[i] = OracleAnswer(NO, "invalid")
                continue
            answers[i] = self._symbolic(obj, question)
            if answers[i] is None:
                exact = self._exact.get(_bank_key(question))
                if exact is not None:
                    answers[i] = self._from_bank(obj, exact, 1.0)
                else:
                    pending.append(i)
        if pending:
            texts = [_embedding_text(questions[i]) for i in pending]
            unique = list(dict.fromkeys(texts))
            bank = _bank_vectors(self.kb, self.encoder)
            sims = shared_embedding_cache(self.encoder).encode(unique) @ bank.T
            position = {text: row for row, text in enumerate(unique)}
            sims = sims[[position[t] for t in texts]]
            for row, i in enumerate(pending):
                best = int(np.argmax(sims[row]))
                score = float(sims[row, best])
                entry = self.kb.bank[best]
                if score < self.similarity_floor:
                    answers[i] = OracleAnswer(NO, "unclear", similarity=score, matched=entry.text)
                    continue
                answers[i] = self._from_bank(objs[i], best, score)
        return answers  # type: ignore[return-value]

    def _from_bank(self, obj: TwentyQuestionsObject, index: int, score: float) -> OracleAnswer:
        entry = self.kb.bank[index]
        truth = (entry.attribute in obj.attributes) != entry.negated
        return OracleAnswer(
            YES if truth else NO,
            "category" if entry.attribute.startswith("cat:") else "attribute",
            attribute=entry.attribute,
            similarity=score,
            matched=entry.text,
        )


#: what LMRL-Gym records for a question its post-processing rejects
LMRL_INVALID_QUESTION = "Is this a valid question?"


def _lmrl_question(question: str) -> str:
    question = re.sub(r"\s+", " ", question).strip().rstrip("?").strip()
    return f"{question}?" if question else LMRL_INVALID_QUESTION


def _bank_key(question: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", question.lower()).strip()


def _embedding_text(question: str) -> str:
    # the bank is written as "Is it ...?" questions; a missing "?" should not change the match
    question = re.sub(r"\s+", " ", question.strip())
    return question if question.endswith("?") else question.rstrip(".!") + "?"


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
