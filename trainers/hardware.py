"""Precision and thread count chosen by the machine the code runs on, with overrides a user can force.

Precision. A CPU with native bf16 matmuls (AVX512-BF16 or AMX) runs bf16 several times faster than
fp32; a CPU without them (AVX2-only laptops and many cloud VMs) emulates bf16 and runs it tens of
times *slower* than fp32. A CUDA GPU runs bf16 fast when it supports it (Ampere and newer). So no
precision is right everywhere: :func:`pick_dtype` decides per use (``"training"``, ``"generation"``,
``"embedding"``) from what the hardware runs fast.

* ``TRAINERS_PRECISION=fp32|bf16|auto`` forces every use; ``TRAINERS_PRECISION_TRAINING``,
  ``TRAINERS_PRECISION_GENERATION`` and ``TRAINERS_PRECISION_EMBEDDING`` force one use and win over
  the global variable. An explicit ``override=`` argument wins over both.
* :func:`generation_model` makes the bf16 generation copy of fp32 weights only where bf16 is the
  fast generation precision (bf16 weights prefill ~3x faster on an AMX CPU than fp32 weights under
  bf16 autocast, which casts every weight again on every forward).

Threads. ``accelerate launch`` exports ``OMP_NUM_THREADS=1`` to its processes when the variable is
unset (and ``use_cpu`` is false in the config, as in a single-process config), so a single-process
CPU job would use one core of many. :func:`configure_threads` tells that launcher default apart from
a user's own choice and gives each process ``cores / processes on this machine`` threads.

``benchmarks/precision.py`` measures fp32 against bf16 on the machine it runs on and prints what this
module picks next to what was fastest.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import torch

USES = ("training", "generation", "embedding")
PRECISION_ENV = "TRAINERS_PRECISION"
THREADS_ENV = "TRAINERS_NUM_THREADS"
_NAMES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
    "no": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}
#: CPU feature flags (``/proc/cpuinfo`` names) that give native bf16 matmuls.
FAST_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
#: oneDNN's ISA caps: with one set to an ISA below AVX512-BF16, bf16 matmuls run emulated (slow).
_ONEDNN_ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
#: Environment variables every ``accelerate launch`` exports to the processes it starts.
_ACCELERATE_LAUNCH_MARKERS = ("ACCELERATE_DYNAMO_BACKEND", "ACCELERATE_MIXED_PRECISION")


# ------------------------------------------------------------------------------------- detection
@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags from ``/proc/cpuinfo`` (empty where that file does not exist)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _onednn_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_has_fast_bf16(flags: frozenset[str] | set[str] | None = None) -> bool:
    """True when the CPU runs bf16 matmuls natively (AVX512-BF16 or AMX-BF16).

    A oneDNN ISA cap (``ONEDNN_MAX_CPU_ISA`` / ``DNNL_MAX_CPU_ISA``, e.g. ``AVX2``) switches the native
    kernels off whatever the CPU has, so with a cap oneDNN itself is asked (it answers under the cap).
    """
    if any(os.environ.get(name, "").strip() for name in _ONEDNN_ISA_CAPS):
        return _onednn_bf16()
    flags = cpu_flags() if flags is None else flags
    if flags:
        return bool(set(flags) & FAST_BF16_CPU_FLAGS)
    # No /proc/cpuinfo (macOS, Windows): oneDNN checks the same ISA features.
    return _onednn_bf16()


def _device(device: torch.device | str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def device_has_fast_bf16(device: torch.device | str | None = None) -> bool:
    """True when ``device`` (default: the GPU if there is one, else the CPU) runs bf16 fast."""
    device = _device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return cpu_has_fast_bf16()
    return False


# ------------------------------------------------------------------------------------- precision
def parse_precision(value: str | torch.dtype | None, *, source: str = "precision") -> torch.dtype | None:
    """``"fp32"``/``"bf16"`` (and aliases) or a dtype -> dtype; ``None``/``""``/``"auto"`` -> None."""
    if value is None or isinstance(value, torch.dtype):
        if isinstance(value, torch.dtype) and value not in (torch.float32, torch.bfloat16):
            raise ValueError(f"{source}: only float32 and bfloat16 are chosen here, got {value}")
        return value
    text = str(value).strip().lower()
    if text in ("", "auto"):
        return None
    if text not in _NAMES:
        raise ValueError(f"{source}={value!r}: expected one of fp32, bf16, auto")
    return _NAMES[text]


def forced_dtype(use: str = "training", environ: Mapping[str, str] | None = None) -> torch.dtype | None:
    """The precision the environment forces for ``use`` (``TRAINERS_PRECISION_<USE>`` then
    ``TRAINERS_PRECISION``), or None when it leaves the choice to the hardware."""
    _check_use(use)
    environ = os.environ if environ is None else environ
    for name in (f"{PRECISION_ENV}_{use.upper()}", PRECISION_ENV):
        dtype = parse_precision(environ.get(name), source=name)
        if dtype is not None:
            return dtype
    return None


def _check_use(use: str) -> None:
    if use not in USES:
        raise ValueError(f"use must be one of {', '.join(USES)}, got {use!r}")


def pick_dtype(
    use: str = "training",
    *,
    device: torch.device | str | None = None,
    override: str | torch.dtype | None = None,
) -> torch.dtype:
    """``torch.bfloat16`` or ``torch.float32`` for ``use`` on ``device``.

    Order: ``override`` (``"fp32"``, ``"bf16"``, a dtype; ``None``/``"auto"`` = no override), then
    the environment (:func:`forced_dtype`), then the hardware: bf16 where the device runs it natively
    (CUDA with bf16 support; CPUs with AVX512-BF16 or AMX), fp32 everywhere else. The same detection
    serves every use today because ``benchmarks/precision.py`` measured bf16 faster for training,
    generation and matmuls on native-bf16 CPUs and much slower on CPUs without it; ``use`` keeps the
    door open for one that differs and lets a user force one use alone.
    """
    _check_use(use)
    dtype = parse_precision(override, source="override")
    if dtype is not None:
        return dtype
    dtype = forced_dtype(use)
    if dtype is not None:
        return dtype
    return torch.bfloat16 if device_has_fast_bf16(device) else torch.float32


def use_bf16(use: str = "training", **kwargs) -> bool:
    """``pick_dtype(use, ...) == torch.bfloat16`` (what ``TrainingArguments(bf16=...)`` wants)."""
    return pick_dtype(use, **kwargs) == torch.bfloat16


def mixed_precision(use: str = "training", **kwargs) -> str:
    """:func:`pick_dtype` as accelerate's ``mixed_precision`` string (``"bf16"`` or ``"no"``)."""
    return "bf16" if use_bf16(use, **kwargs) else "no"


def generation_model(model, *, override: str | torch.dtype | None = None):
    """The model to generate with: a bf16 copy of fp32 weights where bf16 is the fast generation
    precision on the model's device, else ``model`` itself (no copy, no extra memory).

    Models that are not fp32 (already bf16, quantized) are returned unchanged.
    """
    import copy

    try:
        parameter = next(model.parameters())
    except (StopIteration, AttributeError):
        return model
    if parameter.dtype != torch.float32:
        return model
    if pick_dtype("generation", device=parameter.device, override=override) != torch.bfloat16:
        return model
    return copy.deepcopy(model).to(torch.bfloat16)


# --------------------------------------------------------------------------------------- threads
def _int_env(environ: Mapping[str, str], *names: str) -> int | None:
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            try:
                return int(value)
            except ValueError as error:
                raise ValueError(f"{name}={value!r} is not an integer") from error
    return None


def launched_by_accelerate(environ: Mapping[str, str] | None = None) -> bool:
    """True inside a process started by ``accelerate launch`` (it exports these variables)."""
    environ = os.environ if environ is None else environ
    return any(name in environ for name in _ACCELERATE_LAUNCH_MARKERS)


def _launcher_environ() -> dict[str, str] | None:
    """The environment the launching process itself started with (Linux: ``/proc/<ppid>/environ``).

    ``accelerate launch`` runs the script (or torchrun's agent, in process) as its child, so the
    parent's initial environment is the user's shell environment: whether ``OMP_NUM_THREADS`` was
    set there tells a user's choice apart from the launcher's default. None where unreadable.
    """
    try:
        with open(f"/proc/{os.getppid()}/environ", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, value in pairs}


def local_process_count(environ: Mapping[str, str] | None = None) -> int:
    """Processes of this job on this machine (torchrun / MPI variables; 1 when not distributed)."""
    environ = os.environ if environ is None else environ
    count = _int_env(
        environ, "LOCAL_WORLD_SIZE", "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE"
    )
    return max(1, count or 1)


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity (else ``os.cpu_count()``), capped at the
    physical core count where psutil knows it (a second hyper-thread per core adds no matmul speed)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
        if physical:
            cores = min(cores, physical)
    except ImportError:
        pass
    return max(1, cores)


def choose_num_threads(
    environ: Mapping[str, str] | None = None,
    *,
    cores: int | None = None,
    launcher_environ: Mapping[str, str] | None | str = "detect",
) -> tuple[int, str]:
    """The thread count for this process and why: ``(threads, reason)``.

    1. ``TRAINERS_NUM_THREADS`` wins (the way to force a count, 1 included, under any launcher).
    2. ``OMP_NUM_THREADS`` set by the user is kept. Under ``accelerate launch`` a value of 1 is the
       launcher's default unless the launching process's own environment had ``OMP_NUM_THREADS``
       (where that cannot be read, 1 under accelerate counts as the default: a user who wants one
       thread there sets ``TRAINERS_NUM_THREADS=1``).
    3. Otherwise ``cores // processes on this machine`` (at least 1).
    """
    environ = os.environ if environ is None else environ
    cores = available_cores() if cores is None else max(1, int(cores))
    forced = _int_env(environ, THREADS_ENV)
    if forced is not None:
        if forced < 1:
            raise ValueError(f"{THREADS_ENV}={forced} must be >= 1")
        return forced, f"{THREADS_ENV}={forced}"
    share = max(1, cores // local_process_count(environ))
    omp = _int_env(environ, "OMP_NUM_THREADS")
    if omp is not None and omp >= 1:
        if omp == 1 and launched_by_accelerate(environ):
            parent = _launcher_environ() if launcher_environ == "detect" else launcher_environ
            if parent is not None and "OMP_NUM_THREADS" in parent:
                return 1, "OMP_NUM_THREADS=1 set by the user before accelerate launch"
            return (
                share,
                f"accelerate launch's default OMP_NUM_THREADS=1 replaced by {cores} cores / "
                f"{local_process_count(environ)} process(es)",
            )
        return omp, f"OMP_NUM_THREADS={omp}"
    return share, f"{cores} cores / {local_process_count(environ)} process(es)"


def configure_threads(num_threads: int | None = None, *, verbose: bool = False) -> int:
    """Set torch's intra-op thread count by :func:`choose_num_threads` (or to ``num_threads``).

    Call it at the start of a script (the examples and the CLI do). Returns the count set.
    """
    if num_threads is not None:
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        threads, reason = int(num_threads), "requested"
    else:
        threads, reason = choose_num_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if verbose:
        print(f"[hardware] {threads} torch thread(s) ({reason})")
    return threads


def describe(device: torch.device | str | None = None) -> dict[str, Any]:
    """What was detected and picked: for logs, benchmarks and reports."""
    device = _device(device)
    info: dict[str, Any] = {"device": str(device), "threads": torch.get_num_threads(), "cores": available_cores()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        flags = cpu_flags()
        info["cpu_bf16_flags"] = sorted(flags & FAST_BF16_CPU_FLAGS) or ["none"]
        info["cpu_avx"] = sorted(f for f in flags if f.startswith("avx")) or ["none"]
    info["picked"] = {use: str(pick_dtype(use, device=device)).replace("torch.", "") for use in USES}
    return info


__all__ = [
    "FAST_BF16_CPU_FLAGS",
    "PRECISION_ENV",
    "THREADS_ENV",
    "USES",
    "available_cores",
    "choose_num_threads",
    "configure_threads",
    "cpu_flags",
    "cpu_has_fast_bf16",
    "describe",
    "device_has_fast_bf16",
    "forced_dtype",
    "generation_model",
    "launched_by_accelerate",
    "local_process_count",
    "mixed_precision",
    "parse_precision",
    "pick_dtype",
    "use_bf16",
]
