"""benchmarks/gpu_check.py: its CPU mode runs every check on a tiny model and writes the report."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_without_cuda_it_says_so_and_exits_zero(gpu_check, monkeypatch, capsys):
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 0
    assert "no CUDA device" in capsys.readouterr().out


def test_cpu_tiny_mode_runs_every_check(gpu_check, tmp_path):
    out = tmp_path / "report.md"
    results = {r.name: r for r in gpu_check.run_checks("cpu", True, out, budget=600)}
    assert list(results) == list(gpu_check.CHECKS)
    failed = {name: r.details for name, r in results.items() if r.status == "FAILED"}
    assert not failed
    # CUDA-only checks are skipped with their reason; everything else ran
    for name in ("QLoRA 4-bit (bitsandbytes)", "DeepSpeed ZeRO-2, one GPU"):
        assert results[name].status == "skipped" and "CUDA" in results[name].details["reason"]
    assert sum(r.status == "ok" for r in results.values()) == len(results) - 2
    assert results["value-guided generation"].details["beta0_equals_greedy"] is True
    assert "peak_memory" in results["chunked CQL vs naive"].details
    assert results["tokens/s offline RL vs SFT"].details["sft_tokens_per_s"] > 0
    text = out.read_text()
    assert "| Tree-DPO bf16 step | ok |" in text and "skipped" in text


def test_a_failing_check_is_reported_and_the_rest_continue(gpu_check, tmp_path, monkeypatch):
    def broken(ctx):
        raise RuntimeError("simulated failure")

    checks = {"broken": broken, "chunked CQL vs naive": gpu_check.CHECKS["chunked CQL vs naive"]}
    monkeypatch.setattr(gpu_check, "CHECKS", checks)
    results = gpu_check.run_checks("cpu", True, tmp_path / "r.md", budget=600)
    assert [r.status for r in results] == ["FAILED", "ok"]
    assert "simulated failure" in results[0].details["error"]
    assert "| broken | FAILED |" in (tmp_path / "r.md").read_text()
