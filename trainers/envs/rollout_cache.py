"""Keep each live episode's KV cache between turns of a batched multi-turn rollout.

Without it every turn re-prefills the whole history (system prompt, task, all earlier actions and
observations) before generating the next action: turn ``t`` costs ``O(history)`` prefill tokens and
an episode ``O(turns^2)``. With it a turn prefills only what is new since the episode's last
``generate`` call: the end of the previous action and the new observation.

How the reuse stays exact. After each ``generate`` the harness stores, per episode, the token ids
whose keys/values the model computed (the prompt and the generated action up to its end-of-turn
token) and those keys/values. At the next turn the new prompt (the chat template applied to the
history plus the new turn) is compared token by token with the stored ids; the common prefix is
reused and everything after it is prefilled. A chat template that renders an old history as a
token prefix of the longer one (ChatML templates like SmolLM2's do) reuses everything; a history
window that dropped old turns, a prompt cut from the left, or an action re-tokenized differently
from how it was generated keeps only the prefix that still matches, and a template that changes
earlier text falls back to a full re-prefill of that episode (counted in :attr:`RolloutKVCache.stats`).

The batch is laid out as ``[left padding | reused prefix][left padding | new tokens]`` per row:
reused rows of different lengths share one ``DynamicCache`` whose padded slots are masked out, and
position ids come from the attention mask, so every real token keeps the position it had.

Memory: the stored keys/values of the running episodes, ``2 x layers x kv_heads x head_dim`` values per
token (SmolLM2-135M in bf16: ~23 KB per token, so 8 episodes of 4k tokens hold ~0.75 GB), plus one
batched copy while a turn is prefilled. Finished episodes free theirs at once.

Only caches made of full-attention layers are reused (sliding-window and recurrent layers drop or
fold tokens, so a stored prefix could not be cropped); other models fall back to re-prefilling.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch


@dataclass
class _EpisodeEntry:
    tokens: list[int]  # ids whose keys/values are stored, in order
    prompt_length: int  # how many of them were the last prompt (the rest: the generated action)
    layers: list[tuple[torch.Tensor, torch.Tensor]]  # per layer keys, values: [1, heads, len(tokens), head_dim]


@dataclass
class CacheStats:
    """Token counts over a rollout: how much prefill the cache saved."""

    reused_tokens: int = 0
    prefilled_tokens: int = 0
    #: turns whose previous prompt was not a token prefix of the new one (window, truncation, template)
    prefix_breaks: int = 0
    turns: int = 0
    disabled_reason: str | None = None

    @property
    def reuse_fraction(self) -> float:
        total = self.reused_tokens + self.prefilled_tokens
        return self.reused_tokens / total if total else 0.0

    def to_dict(self) -> dict:
        return {
            "reused_tokens": self.reused_tokens,
            "prefilled_tokens": self.prefilled_tokens,
            "prefix_breaks": self.prefix_breaks,
            "turns": self.turns,
            "disabled_reason": self.disabled_reason,
        }


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    length = min(len(a), len(b))
    for position in range(length):
        if a[position] != b[position]:
            return position
    return length


def unsupported_reason(model) -> str | None:
    """Why ``model``'s cache cannot be kept across turns, or None when it can."""
    config = getattr(model, "config", None)
    if config is None:
        return "the model has no config"
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    if getattr(text, "is_encoder_decoder", False):
        return "encoder-decoder models re-encode their input"
    layer_types = getattr(text, "layer_types", None)
    if layer_types and any(kind != "full_attention" for kind in layer_types):
        return f"layer types {sorted(set(layer_types))} include non-full-attention layers"
    if getattr(text, "sliding_window", None) and getattr(text, "use_sliding_window", True):
        return "sliding-window attention drops old keys"
    return None


def _layers_of(cache) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Per-layer (keys, values) of a ``generate`` cache, across transformers versions; None when
    the cache is not a plain full-attention key/value cache."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        out = []
        for layer in layers:
            if getattr(layer, "is_sliding", False) or not hasattr(layer, "keys"):
                return None
            out.append((layer.keys, layer.values))
        return out
    if hasattr(cache, "key_cache"):  # transformers 4.4x DynamicCache
        return list(zip(cache.key_cache, cache.value_cache))
    if isinstance(cache, (tuple, list)) and cache and isinstance(cache[0], (tuple, list)):
        return [(k, v) for k, v, *_ in cache]
    return None


def _dynamic_cache(layers: list[tuple[torch.Tensor, torch.Tensor]]):
    from transformers import DynamicCache

    cache = DynamicCache()
    for index, (keys, values) in enumerate(layers):
        cache.update(keys, values, index)
    return cache


@dataclass
class RolloutKVCache:
    """Per-episode KV caches for one rollout, keyed by anything hashable (the harness uses episode
    indices). :class:`trainers.envs.rollout.LMPolicy` reads and writes it when given one."""

    entries: dict[Hashable, _EpisodeEntry] = field(default_factory=dict)
    stats: CacheStats = field(default_factory=CacheStats)

    def forget(self, key: Hashable) -> None:
        """Drop a finished episode's cache (frees its memory)."""
        self.entries.pop(key, None)

    def clear(self) -> None:
        self.entries.clear()

    def disable(self, reason: str) -> None:
        self.entries.clear()
        self.stats.disabled_reason = reason

    @property
    def enabled(self) -> bool:
        return self.stats.disabled_reason is None

    # -- one turn ---------------------------------------------------------------------------
    def reusable_lengths(self, keys: Sequence[Hashable], prompts: Sequence[Sequence[int]]) -> list[int]:
        """Tokens of each prompt whose keys/values are stored (at least one token is left to prefill:
        ``generate`` needs a new token to compute the next-token scores from)."""
        lengths = []
        for key, prompt in zip(keys, prompts):
            entry = self.entries.get(key) if self.enabled else None
            if entry is None:
                lengths.append(0)
                continue
            common = _common_prefix(entry.tokens, prompt)
            if common < entry.prompt_length:
                self.stats.prefix_breaks += 1
            lengths.append(min(common, len(prompt) - 1))
        return lengths

    def build_inputs(
        self,
        keys: Sequence[Hashable],
        prompts: Sequence[Sequence[int]],
        reuse: Sequence[int],
        pad_token_id: int,
        device: torch.device,
    ):
        """``(input_ids, attention_mask, past_key_values or None, new_width)`` for one generate call."""
        rows = len(prompts)
        cached_width = max(reuse, default=0)
        new_width = max(len(p) - r for p, r in zip(prompts, reuse))
        width = cached_width + new_width
        input_ids = torch.full((rows, width), pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((rows, width), dtype=torch.long)
        for row, (prompt, kept) in enumerate(zip(prompts, reuse)):
            if kept:
                input_ids[row, cached_width - kept : cached_width] = torch.tensor(prompt[:kept], dtype=torch.long)
                attention_mask[row, cached_width - kept : cached_width] = 1
            fresh = prompt[kept:]
            input_ids[row, width - len(fresh) :] = torch.tensor(fresh, dtype=torch.long)
            attention_mask[row, width - len(fresh) :] = 1
            self.stats.reused_tokens += kept
            self.stats.prefilled_tokens += len(fresh)
        self.stats.turns += rows
        past = None
        if cached_width:
            template = next(self.entries[k] for k, kept in zip(keys, reuse) if kept).layers
            batched = []
            for layer, (keys_0, _) in enumerate(template):
                shape = (rows, keys_0.shape[1], cached_width, keys_0.shape[3])
                layer_keys = keys_0.new_zeros(shape)
                layer_values = keys_0.new_zeros(shape[:3] + (template[layer][1].shape[3],))
                for row, (key, kept) in enumerate(zip(keys, reuse)):
                    if kept:
                        stored_keys, stored_values = self.entries[key].layers[layer]
                        layer_keys[row, :, cached_width - kept :] = stored_keys[0, :, :kept]
                        layer_values[row, :, cached_width - kept :] = stored_values[0, :, :kept]
                batched.append((layer_keys, layer_values))
            past = _dynamic_cache(batched)
        return input_ids.to(device), attention_mask.to(device), past, new_width

    def store(
        self,
        keys: Sequence[Hashable],
        prompts: Sequence[Sequence[int]],
        sequences: torch.Tensor,
        prompt_width: int,
        attention_mask: torch.Tensor,
        generated: Sequence[Sequence[int]],
        cache,
    ) -> None:
        """Keep each row's keys/values after a ``generate`` call.

        ``sequences``: generate's output (prompt width + new tokens); ``generated``: each row's new
        tokens up to and including its end-of-turn token (what follows is padding); ``cache``:
        generate's ``past_key_values``, which lacks the very last token (never fed back).
        """
        layers = _layers_of(cache)
        if layers is None:
            self.disable(f"generate returned a {type(cache).__name__}, not a plain key/value cache")
            return
        cached_length = layers[0][0].shape[-2]
        for row, key in enumerate(keys):
            positions = attention_mask[row, :prompt_width].nonzero().flatten().tolist()
            positions += [prompt_width + i for i in range(len(generated[row]))]
            positions = [p for p in positions if p < cached_length]
            index = torch.tensor(positions, dtype=torch.long, device=layers[0][0].device)
            tokens = sequences[row, index.to(sequences.device)].tolist()
            # a row's real prompt is exactly its prompt ids (left padding and reused slots masked)
            self.entries[key] = _EpisodeEntry(
                tokens=tokens,
                prompt_length=len(prompts[row]),
                layers=[
                    (k[row : row + 1].index_select(2, index), v[row : row + 1].index_select(2, index))
                    for k, v in layers
                ],
            )


__all__ = ["CacheStats", "RolloutKVCache", "unsupported_reason"]
