"""Controlled corruptions of trajectories with known labels, to check that learned weights track quality.

A reweighting head is only useful if it gives less weight to bad trajectories. These functions make
bad trajectories whose badness is known, from good ones (any schema rows), so a benchmark can
measure the AUC that a faithful trajectory outweighs a corrupted one. Five kinds, each a way that
self-play data goes wrong (BOOST section 3: synthetic episodes the same LLM plays for both roles):

* ``false_reward``: the agent fails (half its answers changed) but the episode claims the rewards of
  a success (``success_rewards``);
* ``rule_breaking``: the agent's actions are replaced by actions that break the environment's rules
  (``invalid_actions``), and the episode claims the rewards of a success;
* ``foreign_observation``: the environment's observations come from another task
  (``foreign_rows``), actions and rewards kept;
* ``shuffled``: the observations and the actions are each put in a new order (the roles still
  alternate, as the schema requires), so an action no longer answers the observation before it;
  rewards kept;
* ``truncated``: the episode stops early, at an agent turn that goes wrong (an answer changed, as
  when a simulated environment ends an episode at the agent's mistake), and that last kept turn
  carries the final reward of a success, as if the episode had been completed there (an episode of
  one agent turn has nothing to cut: :class:`UncorruptibleError`). A truncation
  that keeps the true return (e.g. the first exchange with the return that followed it) is not a
  corruption for an offline RL learner: that return *is* the kept action's return-to-go.

:func:`rule_task` builds the tiny controlled task the benchmark and the tests use: observations are
words, the rule maps each word to an answer, and success means every answer followed the rule.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from typing import Any

from ..data.schema import make_trajectory

CORRUPTIONS = ("false_reward", "rule_breaking", "foreign_observation", "shuffled", "truncated")

# the tiny rule task: words the tiny test tokenizer knows (trainers.testing), grouped by task
RULES: dict[str, dict[str, str]] = {
    "objects": {"animal": "yes", "plant": "no", "vehicle": "yes", "food": "no", "tool": "maybe"},
    "cars": {"honda": "accept", "toyota": "offer", "ford": "agree", "sedan": "accept", "truck": "offer"},
}
RULE_BREAKING_ACTIONS = ("buy now", "click", "search", "walk away", "next page")


class UncorruptibleError(ValueError):
    """A corruption kind cannot change any episode of a set (e.g. a shuffle of one-exchange episodes)."""


def _row(messages, rewards, *, id, task, source, parent=None, kind="faithful") -> dict[str, Any]:
    metadata = {"quality": kind}
    if parent is not None:
        metadata["parent_id"] = parent
    return make_trajectory(messages, rewards, id=id, task_id=task, category=task, source=source, metadata=metadata)


def rule_task(
    n: int,
    *,
    task: str = "objects",
    source: str = "real",
    seed: int = 0,
    turns: int = 3,
    error_rate: float = 0.15,
    id_prefix: str | None = None,
    parents: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """``n`` episodes of the rule task: each turn the user names a word, the agent answers by the rule.

    Each answer is wrong (another answer of the task) with probability ``error_rate``. Each right
    answer earns ``1 / turns`` (partial credit, as WebShop's graded reward), so an episode's return is
    the fraction it got right and success means all of them; the rows are faithful: their rewards
    tell the truth. ``parents`` gives each row's ``metadata.parent_id`` (synthetic rows).
    """
    rng = random.Random(seed)
    rule = RULES[task]
    words, answers = list(rule), sorted(set(rule.values()))
    rows = []
    for i in range(n):
        messages = [{"role": "system", "content": f"Answer each word by the {task} rule."}]
        rewards = []
        for _ in range(turns):
            word = rng.choice(words)
            answer = rule[word]
            if rng.random() < error_rate:
                answer = rng.choice([a for a in answers if a != rule[word]])
            rewards.append(1.0 / turns if answer == rule[word] else 0.0)
            messages += [{"role": "user", "content": f"the item is {word}"}, {"role": "assistant", "content": answer}]
        parent = parents[i % len(parents)] if parents else None
        rows.append(
            _row(
                messages,
                rewards,
                id=f"{id_prefix or source}-{task}-{seed}-{i}",
                task=task,
                source=source,
                parent=parent,
            )
        )
    return rows


def follows_rule(row: dict[str, Any]) -> bool:
    """Whether every answer of a rule-task row follows its task's rule (what makes a corruption vacuous)."""
    rule = RULES.get(row.get("task_id", ""), {})
    messages = row["messages"]
    for observation, action in zip(messages, messages[1:]):
        if observation["role"] == "user" and action["role"] == "assistant":
            word = observation["content"].rsplit(" ", 1)[-1]
            if rule.get(word) != action["content"]:
                return False
    return True


def rule_task_success_rewards(turns: int) -> list[float]:
    """The rewards a fully successful rule-task episode of ``turns`` answers claims."""
    return [1.0 / turns] * turns


def corrupt(
    row: dict[str, Any],
    kind: str,
    rng: random.Random,
    *,
    foreign_rows: Sequence[dict[str, Any]] = (),
    invalid_actions: Sequence[str] = RULE_BREAKING_ACTIONS,
    success_rewards: Callable[[int], list[float]] | None = None,
    wrong_actions: Sequence[str] = (),
) -> dict[str, Any]:
    """A corrupted copy of ``row`` (``metadata.quality`` = ``kind``; ``id`` gets ``-<kind>``).

    ``success_rewards(n)``: the rewards a successful episode with ``n`` agent turns gets (default:
    1 on the last turn, 0 before), which ``false_reward``, ``rule_breaking`` and ``truncated`` claim.
    ``wrong_actions``: valid but failing actions that ``false_reward`` and ``truncated`` substitute
    (e.g. a noisy policy's turns); default: the episode's other answers and the rule task's answers.
    Raises :class:`UncorruptibleError` for ``truncated`` on an episode of one agent turn.
    """
    if kind not in CORRUPTIONS:
        raise ValueError(f"kind must be one of {', '.join(CORRUPTIONS)}, got {kind!r}")
    messages = [dict(m) for m in row["messages"]]
    rewards = list(row["rewards"])
    claimed = success_rewards or (lambda n: [0.0] * (n - 1) + [1.0])
    if kind == "false_reward":
        # the agent breaks the rule at least once (so the episode really failed), yet claims success
        turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        for index in rng.sample(turns, max(1, len(turns) // 2)):
            messages[index]["content"] = _wrong_action(messages[index]["content"], messages, row, wrong_actions, rng)
        rewards = claimed(len(rewards))
    elif kind == "rule_breaking":
        for message in messages:
            if message["role"] == "assistant":
                message["content"] = rng.choice(list(invalid_actions))
        rewards = claimed(len(rewards))
    elif kind == "foreign_observation":
        if not foreign_rows:
            raise ValueError("kind='foreign_observation' needs foreign_rows (trajectories of another task)")
        foreign = rng.choice(list(foreign_rows))
        observations = [m["content"] for m in foreign["messages"] if m["role"] == "user"]
        users = [i for i, m in enumerate(messages) if m["role"] == "user"]
        for k, index in enumerate(users):
            messages[index]["content"] = observations[k % len(observations)]
    elif kind == "shuffled":
        # the observations and the actions each come in a new order (roles still alternate, as the schema
        # requires), so an action no longer answers the observation before it; a few tries find an order
        # that changes the episode unless every turn is the same
        original = [m["content"] for m in messages]
        for _ in range(20):
            for role in ("user", "assistant"):
                positions = [i for i, m in enumerate(messages) if m["role"] == role]
                contents = [messages[i]["content"] for i in positions]
                rng.shuffle(contents)
                for i, content in zip(positions, contents):
                    messages[i]["content"] = content
            if [m["content"] for m in messages] != original:
                break
    else:  # truncated
        # stop at a turn before the last and make it wrong
        turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        if len(turns) < 2:
            # nothing to cut: a wrong single turn that claims success is what false_reward already makes
            raise UncorruptibleError(
                f"kind='truncated' needs 2 or more agent turns; row {row.get('id', '')!r} has {len(turns)}"
            )
        cut = rng.choice(turns[:-1])
        kept = turns.index(cut) + 1
        messages[cut]["content"] = _wrong_action(messages[cut]["content"], messages, row, wrong_actions, rng)
        messages = messages[: cut + 1]
        # the whole successful episode's return, claimed on the last kept turn
        rewards = [0.0] * (kept - 1) + [float(sum(claimed(len(rewards))))]
    metadata = json.loads(row.get("metadata") or "{}")
    metadata["quality"] = kind
    return make_trajectory(
        messages,
        rewards,
        id=f"{row['id']}-{kind}",
        task_id=row.get("task_id", ""),
        category=row.get("category", ""),
        source=row.get("source", "synthetic"),
        done=True,
        metadata=metadata,
    )


def _wrong_action(action: str, messages, row, wrong_actions: Sequence[str], rng: random.Random) -> str:
    """Another action than ``action``: from ``wrong_actions``, else the episode's and its rule's answers."""
    if wrong_actions:
        pool = sorted(set(wrong_actions))
    else:
        task = row.get("task_id", "")
        rule_answers = set(RULES[task].values()) if task in RULES else set()
        pool = sorted({m["content"] for m in messages if m["role"] == "assistant"} | rule_answers)
    return rng.choice([a for a in pool if a != action] or pool)


def half_corrupted(
    rows: Sequence[dict[str, Any]],
    kind: str,
    seed: int,
    *,
    foreign_rows: Sequence[dict[str, Any]] = (),
    is_faithful: Callable[[dict[str, Any]], bool] | None = None,
    **kwargs,
) -> list[dict[str, Any]]:
    """Corrupt a random half of ``rows`` (the other half stays faithful); order kept.

    ``is_faithful``: a check that a corrupted row really is wrong (e.g. :func:`follows_rule`); a
    corruption that happens to leave a valid episode (a shuffle that keeps every answer right) or
    the row unchanged is drawn again, up to 20 times, so the labels are right; a row that still is
    not corrupted stays faithful (and says so). :class:`UncorruptibleError` when no row can be.
    """
    rng = random.Random(seed)
    chosen = set(rng.sample(range(len(rows)), len(rows) // 2))
    out = []
    for i, row in enumerate(rows):
        if i not in chosen:
            out.append(dict(row))
            continue
        bad = _draw_corruption(row, kind, rng, is_faithful, foreign_rows=foreign_rows, **kwargs)
        out.append(bad or dict(row))  # an episode that cannot be corrupted this way stays faithful, labelled so
    if chosen and all(quality_of(row) == "faithful" for row in out):
        raise UncorruptibleError(
            f"kind={kind!r} changes none of the {len(rows)} rows (e.g. a shuffle, another task's "
            "observations or a truncation cannot change episodes of one exchange)"
        )
    return out


def _draw_corruption(row, kind, rng, is_faithful, **kwargs) -> dict[str, Any] | None:
    """A corrupted copy of ``row`` that differs from it and is really wrong, in up to 21 draws; else None."""
    for _ in range(21):
        try:
            bad = corrupt(row, kind, rng, **kwargs)
        except UncorruptibleError:
            return None
        changed = bad["messages"] != row["messages"] or list(bad["rewards"]) != list(row["rewards"])
        if changed and (is_faithful is None or not is_faithful(bad)):
            return bad
    return None


def quality_of(row: dict[str, Any]) -> str:
    """``metadata.quality`` of a row (``"faithful"`` when absent)."""
    return json.loads(row.get("metadata") or "{}").get("quality", "faithful")


__all__ = [
    "CORRUPTIONS",
    "RULES",
    "UncorruptibleError",
    "corrupt",
    "follows_rule",
    "half_corrupted",
    "quality_of",
    "rule_task",
    "rule_task_success_rewards",
]
