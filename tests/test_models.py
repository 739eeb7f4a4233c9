import os
import threading
import time
from pathlib import Path

import pytest
import torch

from trainers import models
from trainers.models import (
    DEFAULT_MODEL,
    default_dtype,
    embedded_smollm2_path,
    load_causal_lm,
    load_tokenizer,
    smollm2_gguf_file,
)


def test_default_dtype_is_the_training_pick(monkeypatch):
    # the precision policy itself is tested in tests/test_hardware.py
    from trainers import hardware

    for forced, expected in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        monkeypatch.setenv("TRAINERS_PRECISION", forced)
        assert default_dtype() == expected == hardware.pick_dtype("training")


def test_load_local_folder_with_dtypes(tiny_llama_path):
    model = load_causal_lm(tiny_llama_path, dtype=torch.float32)
    assert model.dtype == torch.float32 and model.config.num_hidden_layers == 2
    assert load_causal_lm(tiny_llama_path).dtype == default_dtype()
    assert load_tokenizer(tiny_llama_path).eos_token == "<|im_end|>"


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(
        OSError, match="could not load causal LM: 'no-such-org/no-such-model' is neither a local folder"
    ):
        load_causal_lm("no-such-org/no-such-model")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(OSError, match="is not a complete checkpoint"):
        load_causal_lm(str(empty))


def test_packaged_gguf_is_found():
    path = smollm2_gguf_file()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000


def _fake_convert(calls, delay=0.0, fail=False):
    def convert(gguf, out):
        calls.append(out)
        time.sleep(delay)
        if fail:
            (out / "config.json").write_text("{}")
            raise RuntimeError("disk full")
        (out / "config.json").write_text("{}")
        (out / models._MARKER).write_text("{}")

    return convert


def test_conversion_runs_once_under_concurrency(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(models, "_convert_gguf", _fake_convert(calls, delay=0.3))
    results = []
    threads = [threading.Thread(target=lambda: results.append(embedded_smollm2_path(tmp_path))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert len(set(results)) == 1 and Path(results[0]).name == "smollm2-135m-instruct-bf16"
    # no staging folders left behind, the folder is readable by others
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["smollm2-135m-instruct-bf16"]
    assert oct(os.stat(results[0]).st_mode & 0o777) == oct(0o755)


def test_failed_conversion_leaves_nothing_half_written(monkeypatch, tmp_path):
    monkeypatch.setattr(models, "_convert_gguf", _fake_convert([], fail=True))
    with pytest.raises(RuntimeError, match="disk full"):
        embedded_smollm2_path(tmp_path)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
    # an incomplete leftover (no completion marker) is replaced by a fresh conversion
    leftover = tmp_path / "smollm2-135m-instruct-bf16"
    leftover.mkdir()
    (leftover / "config.json").write_text("{}")
    calls = []
    monkeypatch.setattr(models, "_convert_gguf", _fake_convert(calls))
    assert embedded_smollm2_path(tmp_path) == str(leftover)
    assert len(calls) == 1 and (leftover / models._MARKER).exists()


@pytest.mark.slow
def test_real_conversion_matches_gguf_greedy_output(tmp_path):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    start = time.perf_counter()
    folder = embedded_smollm2_path(tmp_path)
    convert_seconds = time.perf_counter() - start
    files = {p.name for p in Path(folder).iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", models._MARKER} <= files
    start = time.perf_counter()
    assert embedded_smollm2_path(tmp_path) == folder  # cached: no second conversion
    assert time.perf_counter() - start < 1.0

    converted = load_causal_lm(DEFAULT_MODEL, cache_dir=tmp_path, dtype=torch.bfloat16)
    assert converted.config.quantization_config if hasattr(converted.config, "quantization_config") else True
    assert getattr(converted, "hf_quantizer", None) is None
    tokenizer = load_tokenizer(DEFAULT_MODEL, cache_dir=tmp_path)
    gguf = smollm2_gguf_file()
    reference = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    outputs = []
    for model in (converted, reference):
        model.eval()
        with torch.no_grad():
            outputs.append(model.generate(**prompt, max_new_tokens=8, do_sample=False)[0].tolist())
    assert outputs[0] == outputs[1]
    assert len(outputs[0]) > prompt["input_ids"].shape[1]
    print(
        f"conversion took {convert_seconds:.1f}s; "
        f"greedy: {tokenizer.decode(outputs[0][prompt['input_ids'].shape[1] :])!r}"
    )
