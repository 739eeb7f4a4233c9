"""Scripted "real" episodes for the BOOST recipe: an expert and a noisy player per built-in environment.

BOOST's real data are human or scripted demonstrations of mixed quality. Without a dataset, the
recipe plays the built-in environments with two scripted policies per environment, so every row
knows which one played it (``metadata.policy`` and the row id: ``expert`` / ``noisy``, or WebShop's
``oracle`` / ``heuristic`` shoppers) and the learned weights can be checked against that quality.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from ..data.schema import make_trajectory

GENERIC_QUESTIONS = [
    "Is it alive?",
    "Is it bigger than a bread box?",
    "Can you eat it?",
    "Is it made of metal?",
    "Is it found indoors?",
    "Is it used for work?",
    "Can you hold it in one hand?",
    "Does it use electricity?",
    "Is it soft?",
    "Is it man-made?",
]


def play_scripted(
    env, tasks, choose_policy: Callable, noise: float, seed: int, *, max_actions: int | None = None
) -> list[dict[str, Any]]:
    """Play ``tasks`` with scripted policies: ``choose_policy(task, noisy, rng)`` returns ``messages -> action``.

    A ``noise`` fraction of the episodes (chosen with ``seed``) gets the noisy policy. Rows carry the
    environment's rewards, the task spec in ``metadata["task"]`` and which policy played.
    """
    rng = random.Random(seed)
    noisy = set(rng.sample(range(len(tasks)), round(noise * len(tasks))))
    rows = []
    for index, task in enumerate(tasks):
        policy = choose_policy(task, index in noisy, random.Random(seed * 7919 + index))
        observation = env.reset(task, seed=seed + index)
        messages = [{"role": "system", "content": env.system_prompt}, {"role": "user", "content": observation}]
        rewards, done, info = [], False, {}
        while not done and len(rewards) < (max_actions or env.max_steps):
            action = policy(messages)
            observation, reward, done, info = env.step(action)
            messages.append({"role": "assistant", "content": action})
            rewards.append(float(reward))
            if not done:
                messages.append({"role": "user", "content": observation})
        who = "noisy" if index in noisy else "expert"
        rows.append(
            make_trajectory(
                messages,
                rewards,
                id=f"{env.name}-{who}-{index}",
                task_id=task.task_id,
                category=task.category,
                done=done,
                success=bool(info.get("success", False)),
                metadata={"env": env.name, "task": {"task_id": task.task_id, "spec": task.spec}, "policy": who},
            )
        )
    return rows


def webshop_rows(env, tasks, noise: float, seed: int, *, thoughts: bool = True) -> list[dict[str, Any]]:
    """WebShop: the oracle shopper (expert) on a ``1 - noise`` fraction, the text-only heuristic (noisy) on the rest.

    ``thoughts``: turns as ``Thought: ...`` + ``Action: ...`` (ETO's form) or the action line alone.
    """
    from ..envs.webshop.scripted import scripted_trajectories

    rng = random.Random(seed)
    noisy = set(rng.sample(range(len(tasks)), round(noise * len(tasks))))
    options = dict(env=env, progress=False, thoughts=thoughts)
    rows = scripted_trajectories([t for i, t in enumerate(tasks) if i not in noisy], policy="oracle", **options)
    rows += scripted_trajectories([t for i, t in enumerate(tasks) if i in noisy], policy="heuristic", **options)
    return rows


def car_dealer_rows(env, tasks, noise: float, seed: int) -> list[dict[str, Any]]:
    """Car Dealer: an expert seller (the requested brand and type at the buyer's budget) and a noisy one
    (far above list price, slow concessions, sometimes another car type)."""

    def choose(task, noisy, rng):
        spec = task.spec
        brand, kind = spec.get("brand", task.category), spec.get("preferred_type", "car")
        features = " and ".join(spec.get("preferred_features", [])[:2]) or "great features"
        if not noisy:
            price = int(spec.get("budget", 30000)) // 100 * 100
            plan = [f"Welcome! This {brand} {kind} has {features}. For you it is ${price:,}.", "Deal!"]
        else:
            price = int(spec.get("msrp", 35000) * rng.uniform(1.15, 1.35)) // 100 * 100
            other = rng.choice(["truck", "minivan", "coupe", "suv"])
            plan = [f"Hello. Have you considered a {other}? This one is ${price:,}."]
            for _ in range(8):
                price = int(price * rng.uniform(0.95, 0.99)) // 100 * 100
                plan.append(f"I can go down to ${price:,}, and that is a great price.")
        turns = iter(plan)
        return lambda messages: next(turns, "Deal!")

    return play_scripted(env, tasks, choose, noise, seed, max_actions=10)


#: the halving expert needs at most 12 questions and the guess on the built-in knowledge base; the
#: noisy asker stops at the same cap, so both kinds of episode fit the recipe's sequence length
TWENTY_QUESTIONS_MAX_ACTIONS = 14

# per oracle settings and object list: the oracle's answers do not change within a process
_YES_SETS: dict[tuple, dict[str, frozenset[str]]] = {}


def yes_sets(oracle, objects: Sequence[str]) -> dict[str, frozenset[str]]:
    """For one phrasing of every attribute in the oracle's question bank: the ``objects`` it answers "Yes." for.

    Asked of the oracle itself, so a player that filters by these sets stays consistent with the
    answers the environment gives (a category word that is also an object's name, say).
    """
    key = (oracle.kb.path, oracle.encoder, oracle.similarity_floor, oracle.guess_threshold, tuple(objects))
    if key not in _YES_SETS:
        questions = {}
        for entry in oracle.kb.bank:
            if not entry.negated:
                questions.setdefault(entry.attribute, entry.text)
        table = {}
        for question in questions.values():
            answers = oracle.answer_batch(list(objects), [question] * len(objects))
            table[question] = frozenset(o for o, a in zip(objects, answers) if a.answer.lower().startswith("yes"))
        _YES_SETS[key] = table
    return _YES_SETS[key]


def halving_asker(yes: dict[str, frozenset[str]], objects: Sequence[str]) -> Callable[[list[dict]], str]:
    """A Twenty Questions player that uses the answers: it keeps the objects consistent with every answer
    so far, asks the question that splits them most evenly (ties: bank order), and names the object
    once one is left (the next one if that guess was wrong).

    Its questions depend only on the answers, so the same answers always lead to the same question and
    the final guess follows from them: a policy can learn this play from its episodes.
    """
    candidates, asked = list(objects), []

    def act(messages: list[dict]) -> str:
        nonlocal candidates
        if asked:
            said_yes = messages[-1]["content"].strip().lower().startswith("yes")
            last = asked[-1]
            if last in yes:
                candidates = [c for c in candidates if (c in yes[last]) == said_yes]
            else:  # a wrong guess
                candidates = [c for c in candidates if last != _guess(c)]
            if not candidates:  # answers no object in the list fits: start over without the guesses made
                candidates = [o for o in objects if _guess(o) not in asked]
        question = None
        if len(candidates) > 1:
            split = {q: sum(c in s for c in candidates) for q, s in yes.items() if q not in asked}
            question = min(split, key=lambda q: max(split[q], len(candidates) - split[q]), default=None)
            if question is not None and split[question] in (0, len(candidates)):
                question = None  # nothing left tells them apart
        asked.append(question or _guess(candidates[0]))
        return asked[-1]

    return act


def _guess(name: str) -> str:
    return f"Is it a {name.lower()}?"


def twenty_questions_rows(env, tasks, noise: float, seed: int) -> list[dict[str, Any]]:
    """Twenty Questions: an expert asker that halves the objects still possible with every question
    (:func:`halving_asker`) and a noisy one (generic questions whose answers it ignores, then guesses
    of random objects)."""
    objects = [t.spec.get("object", t.task_id) for t in env.tasks()]
    yes = yes_sets(env.oracle, objects)

    def choose(task, noisy, rng):
        if not noisy:
            return halving_asker(yes, objects)
        plan = rng.sample(GENERIC_QUESTIONS, 4) + [_guess(o) for o in rng.sample(objects, 4)]
        turns = iter(plan)
        return lambda messages: next(turns, _guess(rng.choice(objects)))

    return play_scripted(env, tasks, choose, noise, seed, max_actions=TWENTY_QUESTIONS_MAX_ACTIONS)


REAL_BUILDERS: dict[str, Callable] = {
    "webshop": webshop_rows,
    "car_dealer": car_dealer_rows,
    "twenty_questions": twenty_questions_rows,
}


def scripted_quality(row_id: str) -> str | None:
    """``"expert"`` / ``"noisy"`` for a scripted row id (``None`` for other rows)."""
    if "-expert-" in row_id or "-oracle-" in row_id:
        return "expert"
    if "-noisy-" in row_id or "-heuristic-" in row_id:
        return "noisy"
    return None


__all__ = [
    "REAL_BUILDERS",
    "car_dealer_rows",
    "play_scripted",
    "scripted_quality",
    "twenty_questions_rows",
    "webshop_rows",
]
