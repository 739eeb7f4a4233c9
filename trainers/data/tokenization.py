"""Tokenization of trajectories for token-level RL.

Each trajectory becomes one token sequence rendered with the tokenizer's chat template. Every
message is rendered as the difference between the template applied to the conversation up to
that message and up to the one before, so the tokens of each turn are known exactly:

* the tokens of an assistant turn's *content and end-of-turn marker* are actions
  (``action_mask == 1``); the template's role header (``<|im_start|>assistant\\n``) is not, and
  neither is what a template prints *after* the end-of-turn marker (ChatML's trailing newline):
  the policy stops generating at the marker, so later text is context;
* a turn's reward sits on its last action token, i.e. the end-of-turn marker (``token_rewards``);
* ``token_dones`` is 1 on the last action token of a finished trajectory;
* ``turn_ids`` gives the assistant turn index of every action token (-1 elsewhere; indices count
  turns of the *original* trajectory, also after truncation).

Each piece is tokenized on its own, which is exactly how a policy sees it at generation time (the
prompt is rendered with the generation header and encoded, then the answer is generated).

Base models without a chat template can use :data:`PLAIN_CHAT_TEMPLATE` (``chat_template="plain"``):
``Environment: ...`` / ``Agent: ...`` lines, the agent's turns ending in the EOS token.

Truncation policy (``max_length``): the turn that carries the final reward is never cut, and no
turn is ever cut in the middle. When a trajectory is longer than ``max_length`` tokens:

1. observations after the last assistant turn (they carry no action and no reward) are dropped;
2. then whole (action, observation) turn pairs are dropped from the *oldest* end, keeping the
   system prompt and the first observation (which states the task), until the rest fits.

Rewards-to-go of the kept turns are unaffected because they only depend on later rewards; the
number of dropped assistant turns is returned as ``dropped_turns``. The first kept assistant turn
now follows the first observation instead of the observation it answered (dropped with the turn
before it), so it stays as context but is not an action to learn (``action_mask`` 0, ``turn_ids``
-1): trained, it would teach the policy to answer the task's first page with a later page's action
(on WebShop, to click instead of searching). A rollout that trims its prompt the same way
(:class:`~trainers.envs.lm_policy.LMPolicy`) shows the same context before each generated action.
When that turn is the only one kept, it carries the final reward and stays an action. If even the system prompt, the
first observation and the last turn do not fit, :class:`TrajectoryTooLongError` names the row.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import torch

logger = logging.getLogger(__name__)

#: A documented template for base models: labelled plain-text turns, the agent's turns end in EOS.
PLAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}Environment: {{ message['content'] }}\n"
    "{% else %}Agent: {{ message['content'] }}{{ eos_token }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Agent:{% endif %}"
)

TOKENIZED_COLUMNS = ("input_ids", "attention_mask", "action_mask", "token_rewards", "token_dones", "turn_ids")


class TrajectoryTooLongError(ValueError):
    """Even after dropping old turns, a trajectory's final reward-bearing turn does not fit."""


def prepare_tokenizer(tokenizer, chat_template: str | None = None):
    """Make sure ``tokenizer`` has a pad token and a chat template; return it.

    ``chat_template="plain"`` installs :data:`PLAIN_CHAT_TEMPLATE`; any other string is used as a
    Jinja template. Without either, a tokenizer lacking a chat template is an error.
    """
    if chat_template == "plain":
        tokenizer.chat_template = PLAIN_CHAT_TEMPLATE
    elif chat_template is not None:
        tokenizer.chat_template = chat_template
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; pass "
            "chat_template='plain' to use the documented plain-text template for base models"
        )
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _render(tokenizer, messages, add_generation_prompt=False) -> str:
    return _renderer(tokenizer)(list(messages), add_generation_prompt)


_RENDERERS: dict[int, tuple[Any, str, Any]] = {}

_PROBE = [
    {"role": "system", "content": "s"},
    {"role": "user", "content": "u1"},
    {"role": "assistant", "content": "a1"},
    {"role": "user", "content": "u2"},
]


def _renderer(tokenizer):
    """A ``(messages, add_generation_prompt) -> str`` function for ``tokenizer``'s chat template.

    ``apply_chat_template`` deep-copies and sanitises its inputs on every call, which dominates
    tokenization time for the many prefix renders a trajectory needs. Our messages are plain
    ``{"role", "content"}`` strings, so the compiled template is rendered directly, with the same
    special-token variables. The fast path is used only after it reproduced ``apply_chat_template``
    on probe conversations; otherwise (or if the private helper moves) we fall back to it.
    """
    template = tokenizer.chat_template
    cached = _RENDERERS.get(id(tokenizer))
    if cached is not None and cached[0] is tokenizer and cached[1] == template:
        return cached[2]

    def slow(messages, add_generation_prompt):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    render = slow
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template

        compiled = _compile_jinja_template(template)
        variables = {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}

        def fast(messages, add_generation_prompt):
            return compiled.render(messages=messages, add_generation_prompt=add_generation_prompt, **variables)

        probes = [(_PROBE[:2], True), (_PROBE[:3], False), (_PROBE, True), (_PROBE[1:], False)]
        if all(fast(m, g) == slow(m, g) for m, g in probes):
            render = fast
    except Exception:  # noqa: BLE001 - any failure of the fast path means: use the public API
        render = slow
    if len(_RENDERERS) > 32:
        _RENDERERS.clear()
    # kept outside the tokenizer so that pickling it for worker processes is unaffected
    _RENDERERS[id(tokenizer)] = (tokenizer, template, render)
    return render


#: End-of-turn markers of common chat templates, tried after the tokenizer's own EOS token.
END_OF_TURN_MARKERS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "</s>")


def _end_of_turn_markers(tokenizer) -> tuple[str, ...]:
    eos = getattr(tokenizer, "eos_token", None)
    return tuple(dict.fromkeys(([eos] if eos else []) + list(END_OF_TURN_MARKERS)))


def _split_action(text: str, content: str, markers: Sequence[str]) -> tuple[str, str]:
    """Split an assistant turn's rendering into (action, trailing context) after its end-of-turn marker."""
    start = text.find(content) if content else 0
    search_from = start + len(content) if start >= 0 else 0
    best = None
    for marker in markers:
        position = text.find(marker, search_from)
        if position >= 0 and (best is None or position < best[0]):
            best = (position, marker)
    if best is None:
        return text, ""
    cut = best[0] + len(best[1])
    return text[:cut], text[cut:]


def _segments(tokenizer, messages: Sequence[Mapping[str, str]]) -> list[tuple[str, str, int]]:
    """Split the rendered conversation into (text, kind, message_index) pieces.

    kind is ``"context"`` (system, observations, role headers, text after an end-of-turn
    marker) or ``"action"`` (an assistant turn's content up to and including its end-of-turn marker).
    """
    pieces: list[tuple[str, str, int]] = []
    rendered = ""
    markers = _end_of_turn_markers(tokenizer)
    for index, message in enumerate(messages):
        if message["role"] == "assistant":
            with_header = _render(tokenizer, messages[:index], add_generation_prompt=True)
            full = _render(tokenizer, messages[: index + 1])
            if not (with_header.startswith(rendered) and full.startswith(with_header)):
                raise ValueError(
                    "the chat template does not render conversations as prefixes of each other "
                    f"(at message {index}); use a template without history-dependent rewriting or chat_template='plain'"
                )
            action, trailing = _split_action(full[len(with_header) :], message["content"], markers)
            pieces.append((with_header[len(rendered) :], "context", index))
            pieces.append((action, "action", index))
            if trailing:
                pieces.append((trailing, "context", index))
        else:
            full = _render(tokenizer, messages[: index + 1])
            if not full.startswith(rendered):
                raise ValueError(
                    "the chat template does not render conversations as prefixes of each other "
                    f"(at message {index}); use a template without history-dependent rewriting or chat_template='plain'"
                )
            pieces.append((full[len(rendered) :], "context", index))
        rendered = full
    return pieces


def _encode(tokenizer, messages, row) -> tuple[list[int], list[int], list[int]]:
    """Token ids, action mask and per-token local assistant-turn index (-1 on context)."""
    input_ids: list[int] = []
    action_mask: list[int] = []
    turns: list[int] = []
    turn = -1
    pieces = [(text, kind) for text, kind, _ in _segments(tokenizer, messages) if text]
    # one batched call: each piece is still encoded on its own, without per-call overhead
    encoded = tokenizer([text for text, _ in pieces], add_special_tokens=False)["input_ids"] if pieces else []
    for (_text, kind), ids in zip(pieces, encoded):
        if kind == "action":
            turn += 1
            if not ids:
                raise ValueError(f"row {row}: assistant turn {turn} renders to no tokens")
        input_ids += ids
        action_mask += [1 if kind == "action" else 0] * len(ids)
        turns += [turn if kind == "action" else -1] * len(ids)
    return input_ids, action_mask, turns


def _truncation_candidates(messages):
    """Yield shorter and shorter message lists following the truncation policy (module docstring)."""
    yield messages
    last_action = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
    if last_action < len(messages) - 1:
        messages = messages[: last_action + 1]  # trailing observations carry no action or reward
        yield messages
    head = 2 if messages and messages[0]["role"] == "system" else 1  # system prompt + first observation
    prefix, rest = messages[:head], messages[head:]
    # rest starts with the first assistant turn; drop the oldest action with the observation after it
    starts = [i for i, m in enumerate(rest) if m["role"] == "assistant"]
    for start in starts[1:]:
        yield prefix + rest[start:]


def tokenize_trajectory(
    messages: Sequence[Mapping[str, str]],
    rewards: Sequence[float],
    tokenizer,
    *,
    done: bool = True,
    max_length: int | None = None,
    row: int | str | None = None,
) -> dict[str, list[int] | list[float] | int]:
    """Tokenize one trajectory (see the module docstring for the fields and truncation policy)."""
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    n_assistant = sum(m["role"] == "assistant" for m in messages)
    if len(rewards) != n_assistant:
        raise ValueError(f"row {row}: {len(rewards)} rewards for {n_assistant} assistant turns")
    encoded = None
    for candidate in _truncation_candidates(messages):
        encoded = _encode(tokenizer, candidate, row)
        if max_length is None or len(encoded[0]) <= max_length:
            kept = candidate
            break
    else:
        raise TrajectoryTooLongError(
            f"row {row}: {len(encoded[0])} tokens even with only the system prompt, the first observation and the "
            f"last (reward-bearing) turn, more than max_length={max_length}; "
            "raise max_length or shorten the observations"
        )
    input_ids, action_mask, local_turns = encoded
    n_kept = sum(m["role"] == "assistant" for m in kept)
    n_dropped = n_assistant - n_kept
    if n_dropped and n_kept > 1:
        # its own observation was dropped: context, not an action to learn (module docstring)
        action_mask = [0 if turn == 0 else mask for mask, turn in zip(action_mask, local_turns)]
        local_turns = [-1 if turn == 0 else turn for turn in local_turns]
    kept_rewards = [float(r) for r in list(rewards)[n_dropped:]]
    token_rewards = [0.0] * len(input_ids)
    token_dones = [0] * len(input_ids)
    last_token_of_turn: dict[int, int] = {}
    for position, turn in enumerate(local_turns):
        if turn >= 0:
            last_token_of_turn[turn] = position
    for turn, position in last_token_of_turn.items():
        token_rewards[position] = kept_rewards[turn]
    if done and last_token_of_turn:
        token_dones[last_token_of_turn[max(last_token_of_turn)]] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": [1] * len(input_ids),
        "action_mask": action_mask,
        "token_rewards": token_rewards,
        "token_dones": token_dones,
        "turn_ids": [t + n_dropped if t >= 0 else -1 for t in local_turns],
        "dropped_turns": n_dropped,
    }


def tokenize_dataset(
    dataset: datasets.Dataset,
    tokenizer,
    *,
    max_length: int | None = None,
    num_proc: int | None = None,
    keep_columns: Sequence[str] = ("id", "source", "weight"),
    batch_size: int = 256,
) -> datasets.Dataset:
    """Tokenize a trajectory dataset with ``datasets.map(batched=True)`` (with a progress bar).

    Returns ``input_ids``, ``attention_mask``, ``action_mask``, ``token_rewards``, ``token_dones``,
    ``turn_ids`` and ``dropped_turns`` plus the ``keep_columns`` present. ``num_proc`` > 1
    tokenizes in worker processes. Trajectories shortened by the truncation policy are counted in
    a log warning; one that cannot fit raises :class:`TrajectoryTooLongError` naming the row.
    """
    prepare_tokenizer(tokenizer)
    missing = [c for c in ("messages", "rewards") if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"dataset lacks {missing}; tokenize_dataset needs trajectory-schema rows (trainers.data.schema)"
        )
    has_ids = "id" in dataset.column_names

    def tokenize_batch(batch, indices):
        out: dict[str, list[Any]] = {key: [] for key in (*TOKENIZED_COLUMNS, "dropped_turns")}
        dones = batch["done"] if "done" in batch else [True] * len(indices)
        for i, index in enumerate(indices):
            label = f"{index} (id={batch['id'][i]!r})" if has_ids else index
            encoded = tokenize_trajectory(
                batch["messages"][i], batch["rewards"][i], tokenizer, done=dones[i], max_length=max_length, row=label
            )
            for key in out:
                out[key].append(encoded[key])
        return out

    remove = [c for c in dataset.column_names if c not in keep_columns]
    tokenized = dataset.map(
        tokenize_batch,
        batched=True,
        batch_size=batch_size,
        with_indices=True,
        remove_columns=remove,
        num_proc=num_proc if num_proc and num_proc > 1 else None,
        desc="Tokenizing trajectories",
    )
    if max_length is not None and len(tokenized):
        dropped = [n for n in tokenized["dropped_turns"] if n]
        if dropped:
            logger.warning(
                "%d of %d trajectories exceeded max_length=%d: dropped %d of their oldest turns "
                "(final reward-bearing turns are always kept)",
                len(dropped),
                len(tokenized),
                max_length,
                sum(dropped),
            )
    return tokenized


def _row_label(dataset: datasets.Dataset, index: int) -> str:
    if "id" in dataset.column_names:
        return f"row {index} (id={dataset[index]['id']!r})"
    return f"row {index}"


def validate_tokenized(dataset: datasets.Dataset, where: str = "dataset") -> None:
    """Every per-token column of a pre-tokenized row must be as long as its ``input_ids``.

    A shorter ``action_mask`` (say) would be padded with zeros by the collator and train silently
    on the wrong tokens; this names the first such row and column instead.
    """
    import pyarrow.compute as pc

    present = [c for c in TOKENIZED_COLUMNS if c in dataset.column_names]
    table = dataset.select_columns(present).with_format("arrow")[:]
    reference = pc.list_value_length(table.column("input_ids")).to_numpy(zero_copy_only=False)
    empty = (reference == 0).nonzero()[0]
    if len(empty):
        raise ValueError(f"{where}: {_row_label(dataset, int(empty[0]))}, field 'input_ids': no tokens")
    for column in present[1:]:
        lengths = pc.list_value_length(table.column(column)).to_numpy(zero_copy_only=False)
        bad = (lengths != reference).nonzero()[0]
        if len(bad):
            index = int(bad[0])
            raise ValueError(
                f"{where}: {_row_label(dataset, index)}, field {column!r}: {int(lengths[index])} values for "
                f"{int(reference[index])} input_ids; every per-token column needs one value per token "
                "(re-tokenize with trainers.data.tokenization.tokenize_dataset)"
            )


def validate_weight_column(dataset: datasets.Dataset, where: str = "dataset") -> None:
    """A fixed ``weight`` column must be finite and ``>= 0`` on every row and not zero everywhere."""
    import math

    total = 0.0
    for index, weight in enumerate(dataset["weight"]):
        is_number = isinstance(weight, (int, float)) and not isinstance(weight, bool)
        if not is_number or not math.isfinite(weight) or weight < 0:
            raise ValueError(
                f"{where}: {_row_label(dataset, index)}, field 'weight': must be a finite number >= 0, got {weight!r}"
            )
        total += weight
    if total == 0:
        raise ValueError(
            f"{where}: field 'weight': every one of the {len(dataset)} rows has weight 0, so nothing would be learned"
        )


@dataclass
class TrajectoryCollator:
    """Pads tokenized trajectories to the longest in the batch (right padding).

    Produces tensors for every column of :data:`TOKENIZED_COLUMNS`, ``labels`` (actions only,
    -100 elsewhere, so the same batch also serves SFT), and ``weights`` from a ``weight`` column
    (1.0 when absent).
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        pad_values = {
            "input_ids": self.pad_token_id,
            "attention_mask": 0,
            "action_mask": 0,
            "token_rewards": 0.0,
            "token_dones": 0,
            "turn_ids": -1,
        }
        batch: dict[str, torch.Tensor] = {}
        for key, pad in pad_values.items():
            dtype = torch.float32 if key == "token_rewards" else torch.long
            batch[key] = torch.tensor([list(f[key]) + [pad] * (length - len(f[key])) for f in features], dtype=dtype)
        batch["labels"] = batch["input_ids"].masked_fill(batch["action_mask"] == 0, -100)
        batch["weights"] = torch.tensor([float(f.get("weight", 1.0)) for f in features], dtype=torch.float32)
        if all("traj_index" in f for f in features):
            batch["traj_index"] = torch.tensor([f["traj_index"] for f in features], dtype=torch.long)
        return batch
