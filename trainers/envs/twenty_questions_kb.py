"""Twenty Questions: the knowledge base the oracle answers from.

The built-in file is ``data/twenty_questions_kb.json``: 17 categories (BOOST table 3) of 10-14
objects each and a bank of ~170 attributes (~900 question phrasings, category questions
included) with, for every object, a truthful yes/no. :meth:`KnowledgeBase.load` reads and
validates such a file (cached per path); malformed files raise :class:`KnowledgeBaseError`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DEFAULT_KB_PATH = Path(__file__).with_name("data") / "twenty_questions_kb.json"


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


def _normalise_name(text: str) -> str:
    text = text.lower().replace("’", "'")
    text = re.sub(r"[^a-z0-9' -]+", " ", text)
    text = re.sub(r"[-\s]+", " ", text).strip()
    return text


__all__ = ["DEFAULT_KB_PATH", "BankQuestion", "KnowledgeBase", "KnowledgeBaseError", "TwentyQuestionsObject"]
