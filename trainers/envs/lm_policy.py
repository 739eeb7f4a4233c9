"""Generation side of the rollout harness: an HF causal LM acting on batches of chat histories.

:class:`LMPolicy` renders each history with the tokenizer's chat template, left-pads the batch and
calls ``generate`` once per turn for all running episodes. Given a
:class:`~trainers.envs.rollout_cache.RolloutKVCache` and one key per episode, it prefills only the
tokens that are new since that episode's previous turn. :func:`trainers.envs.rollout.rollout`
drives it; the names here are re-exported from :mod:`trainers.envs.rollout`.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from .rollout_cache import RolloutKVCache, unsupported_reason

Messages = list[dict[str, str]]
PolicyFn = Callable[[list[Messages]], list[str]]

#: Text after which a generated turn is cut: models trained on ETO-style data sometimes go on to
#: write the environment's next observation themselves.
DEFAULT_STOP_SEQUENCES = ("\nObservation:",)


def window_history(messages: Messages, max_history_turns: int | None) -> Messages:
    """Keep the system prompt, the first observation and the last ``max_history_turns`` exchanges.

    An exchange is an (assistant action, next observation) pair. The task statement (the first
    user message) always stays; the oldest exchanges after it are dropped. ``None`` keeps
    everything. Training examples built with the same window show a model exactly the prompts
    it will see in a rollout with ``max_history_turns`` (see :class:`LMPolicy`).
    """
    if max_history_turns is None:
        return list(messages)
    if max_history_turns < 0:
        raise ValueError(f"max_history_turns must be >= 0 or None, got {max_history_turns}")
    head = 1 if messages and messages[0]["role"] == "system" else 0
    head += 1  # the first observation (task statement)
    rest = list(messages[head:])
    # rest alternates assistant, user, assistant, user, ...; a trailing assistant turn (the
    # target of a training example) is kept on top of the window its prompt had
    keep = 2 * max_history_turns + (len(rest) % 2)
    if len(rest) <= keep:
        return list(messages)
    return list(messages[:head]) + (rest[len(rest) - keep :] if keep > 0 else [])


@dataclass(frozen=True)
class GenerationSettings:
    """How an :class:`LMPolicy` samples one turn (recorded in every row's ``metadata``).

    Attributes:
        do_sample: sample (True) or greedy decoding (False, default; evaluation in both papers is
            greedy). Exploration samples.
        temperature: softmax temperature when sampling (default 1.0; W2SG varies it per
            exploration sample).
        top_p: nucleus sampling mass (default 1.0 = off; W2SG varies it per sample).
        top_k: keep the k most likely tokens (default 0 = off).
        max_new_tokens: cap on the tokens of one turn (default 128; a ``Thought: ... Action: ...``
            turn of ETO data is ~30-80 tokens).
    """

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 128

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.do_sample and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bf16_available(device: torch.device) -> bool:
    """Whether bf16 is the fast generation precision on ``device`` (see :mod:`trainers.hardware`)."""
    from ..hardware import pick_dtype

    return device.type in ("cpu", "cuda") and pick_dtype("generation", device=device) == torch.bfloat16


def _model_device_dtype(model) -> tuple[torch.device, torch.dtype]:
    try:
        parameter = next(model.parameters())
        return parameter.device, parameter.dtype
    except (StopIteration, AttributeError):
        return torch.device(getattr(model, "device", "cpu")), torch.float32


class LMPolicy:
    """An HF causal LM acting by generation on chat histories, batched.

    Args:
        model: anything with ``generate(input_ids=, attention_mask=, ...)``.
        tokenizer: its tokenizer; needs a chat template (see
            :func:`trainers.data.tokenization.prepare_tokenizer`). Without a pad token the EOS
            token pads (only attention-masked positions are padded, so this is safe).
        settings: :class:`GenerationSettings`.
        logits_processor: extra ``LogitsProcessor`` objects for ``generate`` (e.g. value guidance).
        max_prompt_tokens: when a rendered history is longer, the oldest (action, observation)
            pairs after the first observation are dropped until it fits, then tokens are cut
            from the left as a last resort (default None: never truncate).
        max_history_turns: show the model only the system prompt, the first observation and
            the last ``max_history_turns`` (action, observation) exchanges
            (:func:`window_history`; default None: the whole history). Applied before
            ``max_prompt_tokens``.
        autocast: run generation under bf16 autocast; ``None`` (default) = when the hardware
            has bf16 and the model is fp32. Pass False where exact fp32 values matter.
        stop_sequences: a turn is cut at the first of these strings.
        generate_kwargs: passed to every ``generate`` call (e.g. ``{"beta": 4.0}`` for a
            ``ValueHeadPolicy``).
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        settings: GenerationSettings | None = None,
        logits_processor: Sequence[Any] | None = None,
        max_prompt_tokens: int | None = None,
        autocast: bool | None = None,
        stop_sequences: Sequence[str] = DEFAULT_STOP_SEQUENCES,
        generate_kwargs: Mapping[str, Any] | None = None,
        max_history_turns: int | None = None,
    ):
        if tokenizer is None:
            raise ValueError("an LM policy needs its tokenizer: pass tokenizer=")
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"tokenizer {getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__!r} has no chat "
                "template; set tokenizer.chat_template or use trainers.data.tokenization.prepare_tokenizer"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings or GenerationSettings()
        self.logits_processor = list(logits_processor or [])
        self.max_prompt_tokens = max_prompt_tokens
        if max_history_turns is not None and max_history_turns < 0:
            raise ValueError(f"max_history_turns must be >= 0 or None, got {max_history_turns}")
        self.max_history_turns = max_history_turns
        self.stop_sequences = tuple(stop_sequences)
        self.generate_kwargs = dict(generate_kwargs or {})
        self.device, dtype = _model_device_dtype(model)
        if autocast is None:
            autocast = dtype == torch.float32 and _bf16_available(self.device)
        self.autocast = bool(autocast)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_token_id is None:
            raise ValueError("the tokenizer has neither a pad token nor an EOS token to pad with")
        eos = set()
        generation_config = getattr(model, "generation_config", None)
        for source in (tokenizer.eos_token_id, getattr(generation_config, "eos_token_id", None)):
            if isinstance(source, int):
                eos.add(source)
            elif isinstance(source, (list, tuple)):
                eos.update(int(t) for t in source)
        self.eos_token_ids = sorted(eos)

    def with_settings(self, **changes) -> LMPolicy:
        """A copy of this policy with some :class:`GenerationSettings` fields changed."""
        clone = copy.copy(self)
        clone.settings = replace(self.settings, **changes)
        return clone

    def describe(self) -> dict[str, Any]:
        name = getattr(getattr(self.model, "config", None), "_name_or_path", "") or type(self.model).__name__
        return {
            "policy": str(name),
            "sampling": self.settings.to_dict(),
            "logits_processor": [type(p).__name__ for p in self.logits_processor],
            "autocast_bf16": self.autocast,
        }

    # -- prompts -----------------------------------------------------------------------------

    def _render(self, messages: Messages) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode(self, messages: Messages) -> list[int]:
        """Token ids of the generation prompt for one history, windowed and truncated to ``max_prompt_tokens``."""
        messages = window_history(messages, self.max_history_turns)
        ids = self._render(messages)
        limit = self.max_prompt_tokens
        if limit is None or len(ids) <= limit:
            return ids
        head = 1 if messages and messages[0]["role"] == "system" else 0
        head += 1  # the first observation (task instruction) always stays
        trimmed = list(messages)
        while len(ids) > limit and len(trimmed) > head + 2:
            del trimmed[head : head + 2]  # the oldest (action, observation) pair
            ids = self._render(trimmed)
        return ids[-limit:]

    # -- generation --------------------------------------------------------------------------

    def _cut(self, text: str) -> str:
        for stop in self.stop_sequences:
            position = text.find(stop)
            if position >= 0:
                text = text[:position]
        return text.strip()

    @torch.no_grad()
    def __call__(
        self,
        histories: list[Messages],
        *,
        kv_cache: RolloutKVCache | None = None,
        keys: Sequence[Hashable] | None = None,
    ) -> list[str]:
        """One action per history. With ``kv_cache`` and one key per history (an episode id), the
        keys/values computed for an episode at its earlier turns are reused instead of re-prefilling
        its whole history (:mod:`trainers.envs.rollout_cache`); greedy outputs stay the same."""
        if not histories:
            return []
        from transformers import GenerationConfig, LogitsProcessorList

        prompts = [self.encode(messages) for messages in histories]
        if kv_cache is not None and kv_cache.enabled:
            if keys is None or len(keys) != len(prompts):
                raise ValueError("kv_cache needs one key (episode id) per history")
            reason = unsupported_reason(self.model)
            if reason is not None:
                kv_cache.disable(reason)
        use_cache = kv_cache is not None and kv_cache.enabled
        reuse = kv_cache.reusable_lengths(keys, prompts) if use_cache else [0] * len(prompts)
        if use_cache:
            input_ids, attention_mask, past, _ = kv_cache.build_inputs(
                keys, prompts, reuse, self.pad_token_id, self.device
            )
        else:
            width = max(len(p) for p in prompts)
            input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
            attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
            for row, prompt in enumerate(prompts):
                input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
                attention_mask[row, width - len(prompt) :] = 1
            input_ids, attention_mask, past = input_ids.to(self.device), attention_mask.to(self.device), None
        width = input_ids.shape[1]
        s = self.settings
        config = GenerationConfig(
            max_new_tokens=s.max_new_tokens,
            do_sample=s.do_sample,
            temperature=s.temperature if s.do_sample else None,
            top_p=s.top_p if s.do_sample else None,
            top_k=(s.top_k or None) if s.do_sample else None,
            pad_token_id=self.pad_token_id,
            eos_token_id=self.eos_token_ids or None,
            # the cache of this call is what the next turn reuses
            **({"return_dict_in_generate": True, "use_cache": True} if use_cache else {}),
        )
        kwargs = dict(self.generate_kwargs)
        if self.logits_processor:
            kwargs["logits_processor"] = LogitsProcessorList(self.logits_processor)
        if past is not None:
            kwargs["past_key_values"] = past
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()
        with autocast:
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                generation_config=config,
                **kwargs,
            )
        sequences = output.sequences if hasattr(output, "sequences") else output
        new_tokens = sequences[:, width:].tolist()
        actions = []
        for tokens in new_tokens:
            # everything after the first end-of-turn token is padding
            for position, token in enumerate(tokens):
                if token in self.eos_token_ids:
                    tokens = tokens[: position + 1]
                    break
            actions.append(tokens)
        if use_cache:
            cache = getattr(output, "past_key_values", None)
            if cache is None:
                kv_cache.disable(f"{type(self.model).__name__}.generate returned no past_key_values")
            else:
                kv_cache.store(keys, prompts, sequences, width, attention_mask, actions, cache)
        texts = []
        for tokens in actions:
            if tokens and tokens[-1] in self.eos_token_ids:
                tokens = tokens[:-1]
            texts.append(self._cut(self.tokenizer.decode(tokens, skip_special_tokens=True)))
        return texts


def as_policy(
    policy: Any,
    tokenizer=None,
    *,
    settings: GenerationSettings | None = None,
    logits_processor: Sequence[Any] | None = None,
    **lm_kwargs,
) -> LMPolicy | PolicyFn:
    """Return ``policy`` as something callable on a batch of histories.

    An :class:`LMPolicy` is re-configured when ``settings`` / ``logits_processor`` are given; a
    model (anything with ``generate``) is wrapped in an :class:`LMPolicy`; any other callable is
    used as it is (and cannot take generation settings).
    """
    if isinstance(policy, LMPolicy):
        if settings is not None:
            policy = policy.with_settings(**settings.to_dict())
        if logits_processor is not None:
            policy = copy.copy(policy)
            policy.logits_processor = list(logits_processor)
        return policy
    if hasattr(policy, "generate"):
        return LMPolicy(policy, tokenizer, settings=settings, logits_processor=logits_processor, **lm_kwargs)
    if callable(policy):
        if logits_processor:
            raise ValueError("logits_processor needs a model policy; a plain callable policy cannot use it")
        return policy
    raise TypeError(f"policy must be a model with generate(), an LMPolicy or a callable, got {type(policy).__name__}")
