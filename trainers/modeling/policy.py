"""A causal LM (optionally a PEFT/LoRA model, optionally 4-bit) plus its value heads, as one module.

:class:`ValueHeadPolicy` is what :class:`trainers.OfflineRLTrainer` trains: the backbone, the LM head
and the :class:`~trainers.modeling.ValueHeads` are all submodules, so the optimizer, DDP, checkpoints
and exact resume see the heads (and the ILQL target heads) like any other weights.

``forward(**batch, loss_config=...)`` runs the backbone once and, when a loss config is given,
returns the per-trajectory offline RL losses computed inside ``forward`` (so DDP / DeepSpeed wrap
the whole computation). Other heads can be evaluated on the same backbone pass with ``heads=``.

Saved folder layout (:meth:`ValueHeadPolicy.save_pretrained`, also what the trainer's
``save_model`` and checkpoints write)::

    offline_rl_policy.json     format marker: base model id, adapter or full, heads subfolder, beta
    adapter_config.json, adapter_model.safetensors      (LoRA / QLoRA runs)
    or config.json, model.safetensors                   (full fine-tuning)
    value_heads/               ValueHeads.from_pretrained folder (config.json, safetensors, README.md)
    tokenizer files            (when a tokenizer is given)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpointing import fsync_dir
from .value_heads import CorruptFileError, ValueHeads, load_safetensors_file

POLICY_FILE = "offline_rl_policy.json"
HEADS_SUBFOLDER = "value_heads"
#: where a save stages the base weights inside the target folder before moving them in
BASE_STAGING_PREFIX = ".policy-base-"
POLICY_FORMAT = "trainers.offline_rl_policy"


def is_peft_model(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a pinned dependency
        return False
    return isinstance(model, PeftModel)


def unwrap_base(model):
    """The ``PreTrainedModel`` under a PEFT wrapper (LoRA layers stay injected)."""
    return model.get_base_model() if is_peft_model(model) else model


def base_model_name(model) -> str:
    """The id or path the base model was loaded from (PEFT adapters record it too)."""
    if is_peft_model(model):
        config = model.peft_config.get(model.active_adapter) if hasattr(model, "peft_config") else None
        name = getattr(config, "base_model_name_or_path", None)
        if name:
            return str(name)
    return str(getattr(getattr(unwrap_base(model), "config", None), "_name_or_path", "") or "")


class ValueHeadPolicy(nn.Module):
    """``base`` (causal LM or PEFT model) + ``heads`` (:class:`ValueHeads`)."""

    # the loss is a weighted mean per batch; Trainer must divide it by the accumulation steps itself
    accepts_loss_kwargs = False

    def __init__(self, base: nn.Module, heads: ValueHeads, *, check: bool = True):
        super().__init__()
        if check:
            heads.check_compatible(unwrap_base(base), check_name=False)
        self.base = base
        self.heads = heads

    # ------------------------------------------------------------------ what Trainer looks at
    @property
    def config(self):
        return unwrap_base(self.base).config

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def is_peft(self) -> bool:
        return is_peft_model(self.base)

    def activation_checkpointing_enable(
        self, activation_checkpointing_kwargs: dict | None = None, every_n_layers: int = 1, offload: bool = False
    ):
        """Checkpoint the backbone's layers (the heads are cheap and their CE is chunked already)."""
        kwargs = activation_checkpointing_kwargs or {"use_reentrant": False}
        base = unwrap_base(self.base)
        if hasattr(base, "activation_checkpointing_enable"):
            base.activation_checkpointing_enable(
                activation_checkpointing_kwargs=kwargs, every_n_layers=every_n_layers, offload=offload
            )
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if self.is_peft and hasattr(self.base, "enable_input_require_grads"):
            # frozen embeddings + reentrant checkpointing would otherwise cut the graph to the adapters
            self.base.enable_input_require_grads()

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None, **kwargs):
        """Deprecated-name alias of :meth:`activation_checkpointing_enable` (transformers < 6 callers)."""
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs, **kwargs)

    def gradient_checkpointing_disable(self):
        unwrap_base(self.base).gradient_checkpointing_disable()

    @property
    def lm_head(self) -> nn.Module:
        return unwrap_base(self.base).get_output_embeddings()

    @property
    def decoder(self) -> nn.Module:
        return unwrap_base(self.base).get_decoder()

    # ------------------------------------------------------------------ forward
    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden states ``[B, T, d]`` (after the final norm: what the LM head reads)."""
        decoder = self.decoder
        if decoder is unwrap_base(self.base):
            # the CausalLM is its own decoder (rare): fall back to output_hidden_states, 1 logit row only
            out = self.base(
                input_ids=input_ids,
                attention_mask=attention_mask,
                output_hidden_states=True,
                logits_to_keep=1,
                use_cache=False,
            )
            return out.hidden_states[-1]
        out = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        heads: ValueHeads | None = None,
        loss_config: Any = None,
        **batch: Any,
    ) -> dict[str, Any]:
        """Backbone pass; with ``loss_config``, also ``losses [B]`` and ``metrics`` for ``heads`` (default: own)."""
        hidden = self.hidden_states(input_ids, attention_mask)
        output: dict[str, Any] = {"hidden_states": hidden}
        if loss_config is not None:
            from ..losses.offline_rl import OfflineRLLossConfig, per_trajectory_losses

            config = OfflineRLLossConfig.from_any(loss_config)
            full_batch = {"input_ids": input_ids, **batch}
            if attention_mask is not None:
                full_batch["attention_mask"] = attention_mask
            losses, metrics = per_trajectory_losses(
                hidden,
                heads if heads is not None else self.heads,
                full_batch,
                config,
                lm_head=self.lm_head if config.bc_weight > 0 else None,
            )
            output["losses"] = losses
            output["metrics"] = metrics
        return output

    # ------------------------------------------------------------------ generation
    def generate(self, *args, beta: float | None = None, **kwargs):
        """``base.generate`` with value guidance (``beta`` 0 or ``None`` = the unguided base policy)."""
        if beta:
            from transformers import LogitsProcessorList

            from .guidance import ValueGuidedLogitsProcessor

            processor = ValueGuidedLogitsProcessor(self.heads, beta, model=self.base)
            processors = LogitsProcessorList(kwargs.pop("logits_processor", None) or [])
            processors.append(processor)
            try:
                return self.base.generate(*args, logits_processor=processors, **kwargs)
            finally:
                processor.detach()
        return self.base.generate(*args, **kwargs)

    # ------------------------------------------------------------------ saving / loading
    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        tokenizer=None,
        beta: float = 1.0,
        base_model: str | None = None,
        state_dict: dict | None = None,
        extra: dict | None = None,
        extra_artifacts: Callable[[Path], None] | None = None,
    ) -> None:
        """Write the folder layout of the module docstring; ``offline_rl_policy.json`` marks it complete.

        The folder may hold other things (a trainer's ``output_dir`` holds its checkpoints), so it is
        rewritten in place: the old marker goes first, every piece is written through a staging
        folder, ``extra_artifacts(directory)`` adds what a subclass saves beside the policy, and the
        new marker goes in last. A save that fails or is killed part-way leaves a folder without a
        marker, which every loader refuses, never new base weights beside old heads.
        """
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        marker = directory / POLICY_FILE
        if marker.exists():
            os.remove(marker)
            fsync_dir(directory)
        name = base_model or base_model_name(self.base) or self.heads.base_model_name
        # a save killed part-way (SIGKILL skips the cleanup below) leaves its staging folder behind;
        # this save rewrites everything such a folder was meant to hold
        for stale in directory.glob(f"{BASE_STAGING_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
        # Base weights (adapter or full model): written to a staging folder, then moved in file by file.
        staging = Path(tempfile.mkdtemp(prefix=BASE_STAGING_PREFIX, dir=directory))
        try:
            base_state = None
            if state_dict is not None:
                prefix = "base."
                base_state = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
            if self.is_peft:
                self.base.save_pretrained(
                    staging, state_dict=_peft_state(self.base, base_state) if base_state else None
                )
            else:
                self.base.save_pretrained(staging, state_dict=base_state)
            if tokenizer is not None:
                tokenizer.save_pretrained(staging)
            for entry in staging.iterdir():
                target = directory / entry.name
                if target.is_dir() and not entry.is_dir():
                    shutil.rmtree(target)
                os.replace(entry, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if not self.heads.base_model_name and name:
            self.heads.base_model_name = name
        heads_state = None
        if state_dict is not None:
            heads_state = {k[len("heads.") :]: v for k, v in state_dict.items() if k.startswith("heads.")} or None
        self.heads.save_pretrained(directory / HEADS_SUBFOLDER, state_dict=heads_state)
        if extra_artifacts is not None:
            extra_artifacts(directory)
        record = {
            "format": POLICY_FORMAT,
            "version": 1,
            "base_model": name,
            "adapter": self.is_peft,
            "value_heads": HEADS_SUBFOLDER,
            "loss_type": self.heads.loss_type,
            "beta": float(beta),
            **(extra or {}),
        }
        # written last: its presence marks a complete folder
        temporary = directory / f".{POLICY_FILE}.tmp"
        temporary.write_text(json.dumps(record, indent=2, sort_keys=True))
        os.replace(temporary, marker)

    def load_weights_from(self, directory: str | os.PathLike) -> None:
        """Load adapter / model weights and all heads (incl. targets) from a saved folder, in place (resume)."""
        directory = Path(directory)
        heads_file = directory / HEADS_SUBFOLDER / "model.safetensors"
        if not heads_file.is_file():
            raise FileNotFoundError(
                f"{str(heads_file)!r} not found: {str(directory)!r} is not an offline RL policy folder"
            )
        read_policy_record(directory)
        heads_state = load_safetensors_file(heads_file, device=str(self.device))
        self.heads.load_state_dict(heads_state, strict=True)
        if self.is_peft:
            from peft import set_peft_model_state_dict

            adapter_file = directory / "adapter_model.safetensors"
            if not adapter_file.is_file():
                raise FileNotFoundError(f"{str(adapter_file)!r} not found: the checkpoint has no LoRA adapter")
            result = set_peft_model_state_dict(self.base, load_safetensors_file(adapter_file, device=str(self.device)))
            unexpected = getattr(result, "unexpected_keys", [])
            if unexpected:
                raise ValueError(f"{str(adapter_file)!r} has tensors this adapter does not: {unexpected[:5]}")
        else:
            state = _load_full_state(directory, str(self.device))
            missing, unexpected = self.base.load_state_dict(state, strict=False)
            tied = _tied_names(self.base)
            missing = [k for k in missing if k not in tied]
            if missing or unexpected:
                raise ValueError(
                    f"{str(directory)!r} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
                )

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo: str | os.PathLike,
        *,
        base_model: str | nn.Module | None = None,
        dtype: torch.dtype | str | None = None,
        device: str | torch.device | None = None,
        quantization_config: Any = None,
        is_trainable: bool = False,
        check_name: bool = True,
        revision: str | None = None,
        token: str | None = None,
    ) -> ValueHeadPolicy:
        """Restore base model (+ LoRA adapter) + value heads from a saved folder or Hub repo id.

        ``base_model`` overrides the recorded base (an id/path, or an already-loaded model, e.g. to
        load it 4-bit yourself). The heads are checked against the base: hidden size, vocabulary and
        (with ``check_name``, the default) the base model id recorded at training time; pass
        ``check_name=False`` to load onto a copy of the same base stored under another name.
        """
        from transformers import AutoModelForCausalLM

        directory = resolve_folder(path_or_repo, revision=revision, token=token)
        record_file = directory / POLICY_FILE
        record = read_policy_record(directory)
        load_kwargs: dict[str, Any] = {}
        if dtype is not None:
            load_kwargs["dtype"] = dtype
        if quantization_config is not None:
            load_kwargs["quantization_config"] = quantization_config
        heads = ValueHeads.from_pretrained(str(directory / record.get("value_heads", HEADS_SUBFOLDER)))
        recorded = record.get("base_model") or ""
        if isinstance(base_model, nn.Module):
            base, base_name = (
                base_model,
                str(getattr(getattr(unwrap_base(base_model), "config", None), "_name_or_path", "")),
            )
        elif record.get("adapter"):
            base_name = str(base_model or recorded)
            if not base_name:
                raise ValueError(f"{str(record_file)!r} records no base model; pass base_model=...")
            base = AutoModelForCausalLM.from_pretrained(base_name, **load_kwargs)
        else:
            # a full fine-tune: the folder holds the trained base itself
            if base_model is not None:
                _check_full_fine_tune_base(directory, base_model, heads)
            _check_base_config(directory, heads)
            check_weight_files(directory)
            try:
                base = AutoModelForCausalLM.from_pretrained(str(directory), **load_kwargs)
            except (OSError, ValueError, TypeError) as error:
                raise CorruptFileError(
                    f"{str(directory)!r}: cannot load the fine-tuned model ({type(error).__name__}: {error})"
                ) from error
            base_name = recorded
        # check before attaching the adapter, so that a wrong base fails with the heads' clear message
        heads.check_compatible(unwrap_base(base), base_model_name=base_name, check_name=check_name)
        if record.get("adapter") and not is_peft_model(base):
            from peft import PeftModel

            model = PeftModel.from_pretrained(base, str(directory), is_trainable=is_trainable)
        else:
            model = base
        policy = cls(model, heads, check=False)
        policy.saved_beta = float(record.get("beta", 1.0))
        if device is not None:
            policy.to(device)
        policy.eval()
        return policy


def resolve_folder(path_or_repo: str | os.PathLike, revision: str | None = None, token: str | None = None) -> Path:
    """A local folder as is; anything else is a Hub repo id fetched with ``snapshot_download``."""
    path = Path(path_or_repo)
    if path.is_dir():
        return path
    if os.path.isabs(str(path_or_repo)) or str(path_or_repo).startswith("."):
        raise FileNotFoundError(f"{str(path_or_repo)!r} is not a folder")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(path_or_repo), revision=revision, token=token))


def _peft_state(peft_model, base_state: dict) -> dict:
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(peft_model, state_dict=base_state)


def _load_full_state(directory: Path, device: str) -> dict:
    single = directory / "model.safetensors"
    if single.is_file():
        return load_safetensors_file(single, device=device)
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        state = {}
        for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            state.update(load_safetensors_file(directory / shard, device=device))
        return state
    raise FileNotFoundError(f"no model.safetensors (or index) in {str(directory)!r}")


def read_policy_record(directory: Path) -> dict[str, Any]:
    """The folder's ``offline_rl_policy.json``; a clear error when it is missing, not JSON or not ours."""
    record_file = directory / POLICY_FILE
    if not record_file.is_file():
        interrupted = (directory / HEADS_SUBFOLDER).is_dir() or any(directory.glob(f"{BASE_STAGING_PREFIX}*"))
        raise FileNotFoundError(
            f"{str(record_file)!r} not found: "
            + (
                f"{str(directory)!r} holds an incomplete save (it was interrupted or failed before the marker "
                "was written); save again or use an earlier copy"
                if interrupted
                else f"{str(directory)!r} is not a folder saved by OfflineRLTrainer / ValueHeadPolicy.save_pretrained"
            )
        )
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{str(record_file)!r} is not valid JSON ({error})") from error
    if not isinstance(record, dict) or record.get("format") != POLICY_FORMAT:
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise ValueError(f"{str(record_file)!r}: unknown format {found!r} (expected {POLICY_FORMAT!r})")
    return record


def _check_base_config(directory: Path, heads: ValueHeads) -> None:
    """The fine-tuned model's ``config.json``: JSON, loadable, and sized like the heads trained on it.

    Transformers keeps an unknown (misspelled) field as an extra attribute and falls back to the
    default of the field it was meant to be, so a typo shows up as a size that disagrees with the heads.
    """
    from transformers import AutoConfig

    path = directory / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} not found: the folder is a full fine-tune and needs its model config")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise CorruptFileError(f"{str(path)!r} is not valid JSON ({error})") from error
    try:
        config = AutoConfig.from_pretrained(str(directory))
    except Exception as error:  # noqa: BLE001 - transformers raises many types here; all are a bad file
        raise CorruptFileError(f"{str(path)!r}: {type(error).__name__}: {error}") from error
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    problems = [
        f"{field} {getattr(text_config, field, None)} != {expected} recorded in the value heads"
        for field, expected in (("hidden_size", heads.hidden_size), ("vocab_size", heads.vocab_size))
        if getattr(text_config, field, expected) != expected
    ]
    if problems:
        try:
            unknown = sorted(set(raw) - set(type(config)().to_dict()))
        except Exception:  # noqa: BLE001 - a config class without defaults: skip the hint
            unknown = []
        hint = f"; unknown field(s) {unknown} (misspelled?)" if unknown else ""
        raise CorruptFileError(f"{str(path)!r}: " + "; ".join(problems) + hint)


def check_weight_files(directory: Path) -> None:
    """Open every safetensors file's header, so a truncated file is reported with its path."""
    for file in sorted(directory.glob("*.safetensors")):
        load_safetensors_file(file, header_only=True)


def _check_full_fine_tune_base(directory: Path, base_model: Any, heads: ValueHeads) -> None:
    """A full fine-tune folder holds its own weights: a ``base_model`` that does not even fit them is an error."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(base_model))
    label = repr(str(base_model))
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    problems = []
    for field, expected in (("hidden_size", heads.hidden_size), ("vocab_size", heads.vocab_size)):
        value = getattr(text_config, field, None)
        if value is not None and value != expected:
            problems.append(f"{field} {value} != {expected}")
    if problems:
        from .value_heads import IncompatibleHeadsError

        raise IncompatibleHeadsError(
            f"base_model={label} does not fit {str(directory)!r} (a full fine-tune, whose weights are the base): "
            + "; ".join(problems)
            + ". Drop base_model= to load the fine-tuned weights the folder holds."
        )
    import warnings

    warnings.warn(
        f"{str(directory)!r} is a full fine-tune: its own weights are loaded and base_model={label} is not used",
        stacklevel=3,
    )


def _tied_names(model) -> set[str]:
    names = set()
    tied = getattr(model, "all_tied_weights_keys", None) or getattr(model, "_tied_weights_keys", None) or {}
    if isinstance(tied, dict):
        names.update(tied.keys())
    else:
        names.update(tied)
    return names
