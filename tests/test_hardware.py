"""Precision and thread policy (trainers.hardware): detection mocked both ways, overrides, launchers."""

from pathlib import Path

import pytest
import torch
import yaml

from trainers import hardware
from trainers.hardware import choose_num_threads, configure_threads, generation_model, pick_dtype

REPO = Path(__file__).resolve().parents[1]
AVX2_ONLY = {"sse4_2", "avx", "avx2", "fma", "f16c"}  # AMD EPYC / older Xeon cloud VMs
AMX = AVX2_ONLY | {"avx512f", "avx512bw", "amx_tile", "amx_bf16"}
AVX512_BF16 = AVX2_ONLY | {"avx512f", "avx512_bf16"}


@pytest.fixture
def cpu_with(monkeypatch):
    """Pretend to be a CPU-only machine with the given flags; no precision forced by the environment."""
    for use in ("", "_TRAINING", "_GENERATION", "_EMBEDDING"):
        monkeypatch.delenv(f"TRAINERS_PRECISION{use}", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for cap in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(cap, raising=False)

    def set_flags(flags):
        monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))

    return set_flags


@pytest.mark.parametrize("use", hardware.USES)
def test_avx2_only_cpu_picks_fp32_and_bf16_cpus_pick_bf16(cpu_with, use):
    cpu_with(AVX2_ONLY)
    assert pick_dtype(use) == torch.float32
    for flags in (AMX, AVX512_BF16):
        cpu_with(flags)
        assert pick_dtype(use) == torch.bfloat16


def test_override_wins_over_detection_both_ways(cpu_with, monkeypatch):
    cpu_with(AVX2_ONLY)
    assert pick_dtype("training", override="bf16") == torch.bfloat16
    monkeypatch.setenv("TRAINERS_PRECISION", "bf16")
    assert pick_dtype("training") == torch.bfloat16
    # a per-use variable beats the global one, an explicit argument beats both
    monkeypatch.setenv("TRAINERS_PRECISION_GENERATION", "fp32")
    assert pick_dtype("generation") == torch.float32 and pick_dtype("embedding") == torch.bfloat16
    assert pick_dtype("generation", override=torch.bfloat16) == torch.bfloat16
    cpu_with(AMX)
    monkeypatch.setenv("TRAINERS_PRECISION", "fp32")
    monkeypatch.delenv("TRAINERS_PRECISION_GENERATION")
    assert {pick_dtype(use) for use in hardware.USES} == {torch.float32}
    monkeypatch.setenv("TRAINERS_PRECISION", "auto")
    assert pick_dtype("training") == torch.bfloat16


def test_a_onednn_isa_cap_below_bf16_means_fp32(cpu_with, monkeypatch):
    # ONEDNN_MAX_CPU_ISA=AVX2 on an AMX CPU makes bf16 matmuls emulated (measured ~1.7 vs ~120 GFLOP/s)
    cpu_with(AMX)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setattr(hardware, "_onednn_bf16", lambda: False)
    assert pick_dtype("training") == torch.float32
    monkeypatch.setattr(hardware, "_onednn_bf16", lambda: True)  # a cap at or above AVX512_CORE_BF16
    assert pick_dtype("training") == torch.bfloat16


def test_bad_precision_names_the_variable(cpu_with, monkeypatch):
    cpu_with(AMX)
    monkeypatch.setenv("TRAINERS_PRECISION_TRAINING", "fp8")
    with pytest.raises(ValueError, match="TRAINERS_PRECISION_TRAINING='fp8'"):
        pick_dtype("training")
    with pytest.raises(ValueError, match="use must be one of"):
        pick_dtype("inference")


def test_cuda_follows_its_bf16_support(cpu_with, monkeypatch):
    cpu_with(AVX2_ONLY)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert pick_dtype("training", device="cuda") == torch.bfloat16
    assert pick_dtype("training", device="cpu") == torch.float32  # the CPU of a GPU box is asked separately
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a T4
    assert pick_dtype("training", device="cuda") == torch.float32


def test_training_config_bf16_follows_the_policy(cpu_with, monkeypatch, tmp_path):
    from trainers.models import default_dtype
    from trainers.offline_rl_config import OfflineRLConfig

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    cpu_with(AVX2_ONLY)
    config = OfflineRLConfig(output_dir=str(tmp_path), report_to=[])
    assert default_dtype() == torch.float32
    assert config.bf16 is False and config.mixed_precision == "no"
    cpu_with(AMX)
    config = OfflineRLConfig(output_dir=str(tmp_path), report_to=[])
    assert config.bf16 is True and config.use_cpu and config.mixed_precision == "bf16"


def _can_run_on_cpu(config: dict) -> bool:
    # use_cpu configs always do; a one-process config without GPU ids runs on the CPU of a machine without GPU
    return bool(config.get("use_cpu")) or (str(config.get("distributed_type")) == "NO" and "gpu_ids" not in config)


def test_no_shipped_cpu_accelerate_config_forces_bf16():
    configs = sorted((REPO / "examples" / "accelerate_configs").glob("*.yaml"))
    cpu_configs = []
    for path in configs:
        config = yaml.safe_load(path.read_text())
        if _can_run_on_cpu(config):
            cpu_configs.append(path.name)
            assert str(config.get("mixed_precision", "no")) == "no", f"{path.name} forces {config['mixed_precision']}"
    # the main job's config is among those checked
    makefile = (REPO / "Makefile").read_text()
    assert "single_process.yaml" in makefile and "single_process.yaml" in cpu_configs
    assert len(cpu_configs) >= 4


def test_bf16_generation_copy_only_where_bf16_is_fast(cpu_with, tiny_llama):
    model = tiny_llama.float()
    cpu_with(AVX2_ONLY)
    assert generation_model(model) is model
    cpu_with(AMX)
    copy = generation_model(model)
    assert copy is not model and next(copy.parameters()).dtype == torch.bfloat16
    assert next(model.parameters()).dtype == torch.float32  # training weights untouched
    assert generation_model(model, override="fp32") is model
    assert generation_model(copy) is copy  # already bf16


# ---------------------------------------------------------------------------------------- threads
ACCELERATE_ENV = {"ACCELERATE_DYNAMO_BACKEND": "NO", "ACCELERATE_MIXED_PRECISION": "no", "OMP_NUM_THREADS": "1"}


def test_accelerate_default_of_one_thread_becomes_all_cores():
    threads, reason = choose_num_threads(ACCELERATE_ENV, cores=8, launcher_environ={"PATH": "/usr/bin"})
    assert threads == 8 and "accelerate" in reason
    # where the launcher's environment cannot be read, 1 under accelerate still counts as its default
    assert choose_num_threads(ACCELERATE_ENV, cores=8, launcher_environ=None)[0] == 8


def test_user_choice_before_accelerate_launch_is_kept():
    threads, _ = choose_num_threads(ACCELERATE_ENV, cores=8, launcher_environ={"OMP_NUM_THREADS": "1"})
    assert threads == 1
    assert choose_num_threads({**ACCELERATE_ENV, "OMP_NUM_THREADS": "3"}, cores=8, launcher_environ={})[0] == 3
    assert choose_num_threads({**ACCELERATE_ENV, "TRAINERS_NUM_THREADS": "1"}, cores=8, launcher_environ={})[0] == 1


def test_cores_are_shared_between_local_processes():
    torchrun = {**ACCELERATE_ENV, "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "2"}
    assert choose_num_threads(torchrun, cores=8, launcher_environ={})[0] == 4
    assert choose_num_threads({"LOCAL_WORLD_SIZE": "4"}, cores=2)[0] == 1
    assert choose_num_threads({}, cores=6)[0] == 6  # plain `python script.py`
    assert choose_num_threads({"OMP_NUM_THREADS": "1"}, cores=6)[0] == 1  # a user's own 1 outside a launcher
    with pytest.raises(ValueError, match="TRAINERS_NUM_THREADS"):
        choose_num_threads({"TRAINERS_NUM_THREADS": "many"}, cores=2)


def test_configure_threads_sets_torch_under_a_simulated_launcher(monkeypatch):
    before = torch.get_num_threads()
    for name, value in ACCELERATE_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TRAINERS_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(hardware, "available_cores", lambda: 3)
    monkeypatch.setattr(hardware, "_launcher_environ", lambda: {"HOME": "/root"})
    try:
        assert configure_threads() == 3 and torch.get_num_threads() == 3
        monkeypatch.setattr(hardware, "_launcher_environ", lambda: {"OMP_NUM_THREADS": "1"})
        assert configure_threads() == 1 and torch.get_num_threads() == 1
        assert configure_threads(2) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_describe_reports_flags_and_picks(cpu_with):
    cpu_with(AVX2_ONLY)
    info = hardware.describe("cpu")
    assert info["cpu_bf16_flags"] == ["none"] and info["picked"]["training"] == "float32"
    assert "avx2" in info["cpu_avx"]
