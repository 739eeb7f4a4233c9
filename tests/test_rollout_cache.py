"""Multi-turn rollouts that keep each episode's KV cache: same greedy outputs as re-prefilling."""

import pytest
import torch

from trainers.envs.base import StepResult, Task
from trainers.envs.rollout import LMPolicy, rollout
from trainers.envs.rollout_cache import RolloutKVCache, unsupported_reason


class TalkEnv:
    """Observations of task-dependent length; a task lasts ``spec["turns"]`` turns (differs per task)."""

    name = "talk"
    system_prompt = "Answer the shopkeeper in one line."
    max_steps = 50

    def tasks(self, split=None):
        return []

    def reset(self, task, seed=None):
        self.task, self.turn = task, 0
        return "welcome, the shelf holds " + "red apples and " * task.spec["width"] + "pears"

    def step(self, action):
        self.turn += 1
        repeats = 1 + (self.turn + self.task.spec["width"]) % 3
        observation = f"turn {self.turn}: " + "the price is ten coins " * repeats
        return StepResult(observation, 0.0, self.turn >= self.task.spec["turns"], {})


def talk_tasks():
    return [
        Task(f"t{i}", "c", {"width": width, "turns": turns})
        for i, (width, turns) in enumerate([(1, 4), (5, 3), (2, 5), (8, 2), (3, 4)])
    ]


def _roll(model, tokenizer, reuse, **kwargs):
    return rollout(
        model,
        TalkEnv,
        talk_tasks(),
        tokenizer=tokenizer,
        batch_size=3,
        max_new_tokens=6,
        autocast=False,
        progress=False,
        reuse_kv_cache=reuse,
        stop_sequences=(),
        **kwargs,
    )


def _actions(rows):
    return [[m["content"] for m in row["messages"] if m["role"] == "assistant"] for row in rows]


@pytest.fixture
def fp32_llama(tiny_llama):
    return tiny_llama.float().eval()


def test_cached_rollout_equals_re_prefilling(fp32_llama, tiny_tokenizer):
    cache = RolloutKVCache()
    cached = _roll(fp32_llama, tiny_tokenizer, cache)
    plain = _roll(fp32_llama, tiny_tokenizer, False)
    assert _actions(cached) == _actions(plain)
    assert [len(r["rewards"]) for r in cached] == [4, 3, 5, 2, 4]
    # the cache really was used: later turns prefilled only a small part of their prompts
    assert cache.enabled and cache.stats.turns == sum(len(r["rewards"]) for r in cached)
    assert cache.stats.reused_tokens > cache.stats.prefilled_tokens
    assert cache.entries == {}  # finished episodes free their cache


def test_chat_template_renders_old_history_as_token_prefix(fp32_llama, tiny_tokenizer):
    policy = LMPolicy(fp32_llama, tiny_tokenizer, autocast=False)
    history = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    before = policy.encode(history)
    longer = history + [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "buy a pear"}]
    assert policy.encode(longer)[: len(before)] == before


def test_window_and_truncation_fall_back_to_the_matching_prefix(fp32_llama, tiny_tokenizer):
    # a history window drops old exchanges: the prompt is no longer an extension of the cached one
    cache = RolloutKVCache()
    windowed = _roll(fp32_llama, tiny_tokenizer, cache, max_history_turns=1)
    assert _actions(windowed) == _actions(_roll(fp32_llama, tiny_tokenizer, False, max_history_turns=1))
    assert cache.stats.prefix_breaks > 0 and cache.stats.reused_tokens > 0
    cut = _roll(fp32_llama, tiny_tokenizer, True, max_prompt_tokens=60)
    assert _actions(cut) == _actions(_roll(fp32_llama, tiny_tokenizer, False, max_prompt_tokens=60))


def test_value_guided_cached_rollout_equals_re_prefilling(fp32_llama, tiny_tokenizer):
    from trainers.modeling import ValueGuidedLogitsProcessor, ValueHeads

    torch.manual_seed(0)
    heads = ValueHeads.for_model(fp32_llama, loss_type="mc")
    with torch.no_grad():
        for parameter in heads.parameters():
            parameter.normal_(0.0, 0.5)  # guidance that depends on the hidden state, strong enough to steer
    processor = ValueGuidedLogitsProcessor(heads, beta=2.0, model=fp32_llama)
    try:
        guided = _roll(fp32_llama, tiny_tokenizer, True, logits_processor=[processor])
        plain = _roll(fp32_llama, tiny_tokenizer, False, logits_processor=[processor])
        unguided = _roll(fp32_llama, tiny_tokenizer, False)
    finally:
        processor.detach()
    assert _actions(guided) == _actions(plain)
    assert _actions(guided) != _actions(unguided)  # the guidance did change the actions


def test_models_with_sliding_window_layers_re_prefill(fp32_llama, tiny_tokenizer, monkeypatch):
    from trainers.envs import lm_policy

    config = fp32_llama.config
    assert unsupported_reason(fp32_llama) is None
    monkeypatch.setattr(config, "layer_types", ["sliding_attention", "full_attention"], raising=False)
    assert "sliding" in unsupported_reason(fp32_llama)
    monkeypatch.undo()
    # the harness then re-prefills every turn (same actions, nothing reused)
    monkeypatch.setattr(lm_policy, "unsupported_reason", lambda model: "sliding-window attention")
    cache = RolloutKVCache()
    rows = _roll(fp32_llama, tiny_tokenizer, cache)
    assert cache.stats.disabled_reason == "sliding-window attention" and cache.stats.reused_tokens == 0
    assert _actions(rows) == _actions(_roll(fp32_llama, tiny_tokenizer, False))


def test_kv_cache_needs_one_key_per_history(fp32_llama, tiny_tokenizer):
    policy = LMPolicy(fp32_llama, tiny_tokenizer, autocast=False)
    with pytest.raises(ValueError, match="one key"):
        policy([[{"role": "user", "content": "hi"}]], kv_cache=RolloutKVCache(), keys=[])
