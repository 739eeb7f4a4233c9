"""Twenty Questions: the oracle that answers free-form yes/no questions from the knowledge base.

A question is answered by, in order: a guess (the noun phrase names an object), category
membership (category keywords, "or" questions included), the attribute bank (nearest bank
question by embedding cosine similarity, at or above ``similarity_floor``), else "No." (unclear).
The steps are described in :mod:`trainers.envs.twenty_questions`. Here: question parsing,
:class:`OracleAnswer`, the process-wide embedding caches and on-disk bank vectors, and
:class:`TwentyQuestionsOracle`.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..embeddings import DEFAULT_ENCODER, EmbeddingCache
from .twenty_questions_kb import KnowledgeBase, TwentyQuestionsObject, _normalise_name

YES, NO = "Yes.", "No."


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
    r"(?:is|are|was)\s+(?:it|this|that|they|the\s+(?:object|thing|item|answer|word|hidden\s+object|secret\s+object)|"
    r"your\s+(?:object|thing|item|word))\s+(?P<rest>.+)$"
    r"|^(?:are\s+you\s+thinking\s+(?:of|about)|my\s+(?:final\s+)?guess\s+is|i\s+guess|i\s+think\s+it\s*(?:is|'s)|"
    r"guess\s*:?|final\s+guess\s*:?|answer\s*:?|it\s*(?:is|'s))\s+(?P<rest2>.+)$"
)
_ADJECTIVES = frozenset(
    "big small large little tiny huge giant real regular normal ordinary common typical standard wild "
    "young old new red green yellow black white brown blue wooden metal plastic fresh ripe cute".split()
)
_TRAILING = re.compile(r"\s*(?:,?\s*(?:right|then|perhaps|maybe|by any chance|or not))+$")


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


def _bank_key(question: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", question.lower()).strip()


def _embedding_text(question: str) -> str:
    # the bank is written as "Is it ...?" questions; a missing "?" should not change the match
    question = re.sub(r"\s+", " ", question.strip())
    return question if question.endswith("?") else question.rstrip(".!") + "?"


__all__ = [
    "DEFAULT_GUESS_THRESHOLD",
    "DEFAULT_SIMILARITY_FLOOR",
    "MAX_QUESTION_WORDS",
    "NO",
    "YES",
    "OracleAnswer",
    "TwentyQuestionsOracle",
    "bank_cache_dir",
    "shared_embedding_cache",
]
