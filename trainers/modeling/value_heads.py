"""Q and V heads for offline RL on a causal LM's final hidden states (BOOST appendix G.2).

:class:`ValueHeads` is a standalone Hub artifact (``nn.Module`` + ``PyTorchModelHubMixin``): it
stores no reference to the LM, only the shapes and the id of the base model it was trained on, so
it can be saved, pushed and loaded on its own and checked against a base model before use.

Layout by ``loss_type``:

* ``"mc"``: one Q head ``h -> Q(s, .)`` over the vocabulary;
* ``"ilql"``: two Q heads (double-Q), their Polyak-averaged target copies (frozen parameters,
  updated by :meth:`ValueHeads.polyak_update`) and a V head ``h -> V(s)``.

Q head type ``"linear"`` is the paper's ``W_Q h + b_Q`` with ``W_Q`` of shape ``[|V|, d]``;
``"mlp"`` puts one ReLU hidden layer (``mlp_hidden_size``, default ``2 d``) before the vocabulary
projection. In both cases the vocabulary projection is a plain ``nn.Linear`` reached through
:meth:`ValueHeads.q_features` / :meth:`ValueHeads.q_projection`, which is what lets the losses gather
``Q(s, a)`` at the taken token without computing all ``|V|`` logits, and compute the vocabulary-wide
CQL term chunk by chunk.

The target heads are ``nn.Parameter`` with ``requires_grad=False`` (not buffers) so that they live
in the state dict: checkpoints, ``save_pretrained`` and exact resume carry them.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from ..hub import HubCardMixin

LOSS_TYPES = ("mc", "ilql")
Q_HEAD_TYPES = ("linear", "mlp")

#: Filename of the weights inside a value-heads folder (the ``PyTorchModelHubMixin`` default).
WEIGHTS_NAME = "model.safetensors"


class CorruptFileError(ValueError):
    """A saved file cannot be read (truncated, corrupt, not JSON, wrong fields). The message names the file."""


#: The ``config.json`` fields of a value-heads folder and the types they must have.
CONFIG_FIELDS: dict[str, tuple[type, ...]] = {
    "hidden_size": (int,),
    "vocab_size": (int,),
    "loss_type": (str,),
    "q_head_type": (str,),
    "mlp_hidden_size": (int, type(None)),
    "base_model_name": (str,),
}


def load_safetensors_file(path: str | os.PathLike, device: str = "cpu", *, header_only: bool = False) -> dict:
    """``safetensors.torch.load_file`` whose errors name the file (a truncated file fails at its header)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        if header_only:
            with safe_open(str(path), "pt") as handle:
                handle.keys()
            return {}
        return load_file(str(path), device=device)
    except (SafetensorError, OSError) as error:
        raise CorruptFileError(
            f"{str(path)!r} is not a readable safetensors file ({error}); it is truncated or corrupt: save it again "
            "or restore a complete copy"
        ) from error


def read_heads_config(path: str | os.PathLike) -> dict[str, Any]:
    """A value-heads ``config.json``, checked: valid JSON, known field names, the right types."""
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise CorruptFileError(f"{str(path)!r} is not valid JSON ({error})") from error
    if not isinstance(config, dict):
        raise CorruptFileError(f"{str(path)!r}: expected a JSON object, got {type(config).__name__}")
    unknown = sorted(set(config) - set(CONFIG_FIELDS))
    if unknown:
        raise CorruptFileError(f"{str(path)!r}: unknown field(s) {unknown}; the fields are {sorted(CONFIG_FIELDS)}")
    for field in ("hidden_size", "vocab_size"):
        if field not in config:
            raise CorruptFileError(f"{str(path)!r}: field {field!r} is missing")
    for field, value in config.items():
        types = CONFIG_FIELDS[field]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise CorruptFileError(f"{str(path)!r}: field {field!r} must be {expected}, got {value!r}")
    return config


class IncompatibleHeadsError(ValueError):
    """Value heads were trained for another base model (hidden size, vocabulary or model id)."""


class _Head(nn.Module):
    """``features(h)`` followed by a linear ``projection``; features are ``h`` itself for linear heads."""

    def __init__(self, hidden_size: int, out_size: int, head_type: str, mlp_hidden_size: int):
        super().__init__()
        if head_type == "linear":
            self.body = nn.Identity()
            in_size = hidden_size
        else:
            self.body = nn.Sequential(nn.Linear(hidden_size, mlp_hidden_size), nn.ReLU())
            in_size = mlp_hidden_size
        self.projection = nn.Linear(in_size, out_size)
        # Small initial values: with CQL weight 10 (BOOST) large random Q logits would dominate early steps.
        nn.init.normal_(self.projection.weight, std=0.02 / max(1.0, in_size**0.5 / 8))
        nn.init.zeros_(self.projection.bias)

    def features(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.body(hidden)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.projection(self.body(hidden))


class ValueHeads(
    HubCardMixin,
    nn.Module,
    PyTorchModelHubMixin,
    library_name="trainers",
    tags=["trainers", "offline-rl", "value-heads"],
):
    """Q (and for ILQL, target-Q and V) heads over a causal LM's final hidden states.

    Args:
        hidden_size: ``d``, the base model's final hidden size.
        vocab_size: ``|V|``, the base model's vocabulary size (rows of its LM head).
        loss_type: ``"mc"`` (one Q head) or ``"ilql"`` (two Q heads, two target Q heads, V head).
        q_head_type: ``"linear"`` (BOOST G.2) or ``"mlp"`` (one ReLU hidden layer).
        mlp_hidden_size: width of the MLP heads' hidden layer; ``None`` means ``2 * hidden_size``.
        base_model_name: id or path of the base model the heads were trained on ("" when unknown).
    """

    card_template_name = "value_heads_card"

    def __init__(
        self,
        hidden_size: int,
        vocab_size: int,
        loss_type: str = "mc",
        q_head_type: str = "linear",
        mlp_hidden_size: int | None = None,
        base_model_name: str = "",
    ):
        super().__init__()
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
        if q_head_type not in Q_HEAD_TYPES:
            raise ValueError(f"q_head_type must be one of {Q_HEAD_TYPES}, got {q_head_type!r}")
        if hidden_size <= 0 or vocab_size <= 0:
            raise ValueError(f"hidden_size and vocab_size must be positive, got {hidden_size} and {vocab_size}")
        self.hidden_size = int(hidden_size)
        self.vocab_size = int(vocab_size)
        self.loss_type = loss_type
        self.q_head_type = q_head_type
        self.mlp_hidden_size = int(mlp_hidden_size or 2 * hidden_size)
        self.base_model_name = base_model_name or ""
        n_q = 1 if loss_type == "mc" else 2
        self.q_heads = nn.ModuleList(
            _Head(hidden_size, vocab_size, q_head_type, self.mlp_hidden_size) for _ in range(n_q)
        )
        if loss_type == "ilql":
            self.target_q_heads = copy.deepcopy(self.q_heads)
            for parameter in self.target_q_heads.parameters():
                parameter.requires_grad_(False)
            self.v_head = _Head(hidden_size, 1, q_head_type, self.mlp_hidden_size)
        else:
            self.target_q_heads = None
            self.v_head = None

    # ------------------------------------------------------------------------------ properties
    @property
    def num_q_heads(self) -> int:
        return len(self.q_heads)

    @property
    def is_ilql(self) -> bool:
        return self.loss_type == "ilql"

    def config_dict(self) -> dict[str, Any]:
        return {
            "hidden_size": self.hidden_size,
            "vocab_size": self.vocab_size,
            "loss_type": self.loss_type,
            "q_head_type": self.q_head_type,
            "mlp_hidden_size": self.mlp_hidden_size,
            "base_model_name": self.base_model_name,
        }

    # ------------------------------------------------------------------------------ values
    def q_features(self, hidden: torch.Tensor, index: int = 0, target: bool = False) -> torch.Tensor:
        """Input of Q head ``index``'s vocabulary projection (``hidden`` itself for linear heads)."""
        return self._q_list(target)[index].features(hidden)

    def q_projection(self, index: int = 0, target: bool = False) -> nn.Linear:
        """The ``[|V|, k]`` vocabulary projection of Q head ``index``."""
        return self._q_list(target)[index].projection

    def q_values(self, hidden: torch.Tensor, index: int = 0, target: bool = False) -> torch.Tensor:
        """All vocabulary Q values ``[..., |V|]``. Use only on few positions (generation)."""
        return self._q_list(target)[index](hidden)

    def gather_q(
        self, hidden: torch.Tensor, actions: torch.Tensor, index: int = 0, target: bool = False
    ) -> torch.Tensor:
        """``Q(s, a)`` for states ``hidden [N, d]`` and actions ``[N]`` without the ``[N, |V|]`` logits."""
        features = self.q_features(hidden, index, target)
        projection = self.q_projection(index, target)
        rows = projection.weight[actions]  # [N, k]
        return (features * rows).sum(-1) + projection.bias[actions]

    def v_values(self, hidden: torch.Tensor) -> torch.Tensor:
        """``V(s)`` ``[...]`` (ILQL only)."""
        if self.v_head is None:
            raise ValueError("these are MC value heads: there is no V head (loss_type='mc')")
        return self.v_head(hidden).squeeze(-1)

    def _q_list(self, target: bool) -> nn.ModuleList:
        if target:
            if self.target_q_heads is None:
                raise ValueError("these are MC value heads: there are no target Q heads (loss_type='mc')")
            return self.target_q_heads
        return self.q_heads

    def guidance_scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """The value term added to the base log-probs: ``Q`` (MC) or ``min_i targetQ_i - V`` (ILQL)."""
        if not self.is_ilql:
            return self.q_values(hidden, 0)
        target_q = torch.stack([self.q_values(hidden, i, target=True) for i in range(self.num_q_heads)]).min(0).values
        return target_q - self.v_values(hidden).unsqueeze(-1)

    # ------------------------------------------------------------------------------ targets
    @torch.no_grad()
    def polyak_update(self, rate: float) -> None:
        """``target <- (1 - rate) * target + rate * online`` for every Q head (ILQL; no-op for MC)."""
        if self.target_q_heads is None:
            return
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"polyak rate must be in [0, 1], got {rate}")
        for target, online in zip(self.target_q_heads.parameters(), self.q_heads.parameters()):
            target.lerp_(online.detach().to(target.dtype), rate)

    @torch.no_grad()
    def sync_targets(self) -> None:
        """Copy the online Q heads into the targets (a Polyak update with rate 1)."""
        self.polyak_update(1.0)

    # ------------------------------------------------------------------------------ compatibility
    def check_compatible(self, model, base_model_name: str | None = None, *, check_name: bool = True) -> None:
        """Raise :class:`IncompatibleHeadsError` if ``model`` is not the base these heads were trained on.

        Checks the final hidden size, the vocabulary size (rows of the output embedding) and, when
        both sides know it, the base model id (``model.config._name_or_path`` or ``base_model_name``).
        """
        config = getattr(model, "config", None)
        problems = []
        hidden = _hidden_size_of(model)
        if hidden is not None and hidden != self.hidden_size:
            problems.append(f"hidden size {hidden} != {self.hidden_size} recorded in the heads")
        vocab = _vocab_size_of(model)
        if vocab is not None and vocab != self.vocab_size:
            problems.append(f"vocabulary size {vocab} != {self.vocab_size} recorded in the heads")
        name = base_model_name if base_model_name is not None else getattr(config, "_name_or_path", "")
        if check_name and self.base_model_name and name and _canonical(name) != _canonical(self.base_model_name):
            problems.append(f"base model {name!r} != {self.base_model_name!r} recorded in the heads")
        if problems:
            raise IncompatibleHeadsError(
                "value heads do not fit this base model: "
                + "; ".join(problems)
                + ". Load the base model the heads were trained on, or pass check_name=False if only the id differs "
                "(e.g. a local copy of the same model)."
            )

    # ------------------------------------------------------------------------------ hub
    def save_pretrained(self, save_directory, *, state_dict: dict[str, torch.Tensor] | None = None, **kwargs):
        """Atomic save (temp folder, then rename): ``model.safetensors`` + ``config.json`` + ``README.md``.

        ``state_dict`` replaces the module's own tensors (e.g. gathered from DeepSpeed ZeRO-3 shards).
        """
        # the resolved config, not the constructor's arguments (mlp width, base model set later)
        if kwargs.get("config") is None:
            kwargs["config"] = self.config_dict()
        self._state_dict_to_save = state_dict
        try:
            return super().save_pretrained(save_directory, **kwargs)
        finally:
            self._state_dict_to_save = None

    def _save_pretrained(self, save_directory) -> None:
        import safetensors.torch

        state = getattr(self, "_state_dict_to_save", None) or self.state_dict()
        # own contiguous copies: under DeepSpeed parameters are views into flat buffers, which
        # safetensors refuses to save as shared storage
        tensors = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in state.items()}
        expected = set(self.state_dict())
        if set(tensors) != expected:
            raise ValueError(
                f"value-heads state dict does not match the heads: missing {sorted(expected - set(tensors))[:5]}, "
                f"unexpected {sorted(set(tensors) - expected)[:5]}"
            )
        safetensors.torch.save_file(tensors, str(Path(save_directory) / WEIGHTS_NAME), metadata={"format": "pt"})

    def card_fields(self) -> dict[str, Any]:
        n_params = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {
            **self.config_dict(),
            "base_model": self.base_model_name if _looks_like_hub_id(self.base_model_name) else None,
            "base_model_id": self.base_model_name or "unknown",
            "num_q_heads": self.num_q_heads,
            "num_parameters": f"{n_params:,}",
            "has_targets": self.is_ilql,
            "library_name": "trainers",
            "tags": ["trainers", "offline-rl", "value-heads", self.loss_type],
            # set by the trainer before saving (a markdown list of the hyperparameters)
            "training_details": getattr(self, "training_details", None),
        }

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs) -> ValueHeads:
        """Load heads from a folder or Hub repo; a local ``config.json`` is checked first (JSON, fields, types)."""
        config_file = Path(os.fspath(pretrained_model_name_or_path)) / "config.json"
        if config_file.is_file():
            read_heads_config(config_file)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir,
        force_download: bool,
        local_files_only: bool,
        token,
        map_location: str = "cpu",
        strict: bool = True,
        **model_kwargs,
    ):
        # Safetensors only (never a pickle fallback) and strict: a head with missing tensors is an error.
        import os

        import safetensors.torch
        from huggingface_hub import hf_hub_download

        if os.path.isdir(model_id):
            model_file = os.path.join(model_id, WEIGHTS_NAME)
            for needed in (model_file, os.path.join(model_id, "config.json")):
                if not os.path.isfile(needed):
                    raise FileNotFoundError(f"{needed!r} not found: {model_id!r} is not a value-heads folder")
            load_safetensors_file(model_file, header_only=True)
        else:
            model_file = hf_hub_download(
                repo_id=model_id,
                filename=WEIGHTS_NAME,
                revision=revision,
                cache_dir=cache_dir,
                force_download=force_download,
                token=token,
                local_files_only=local_files_only,
            )
        model = cls(**model_kwargs)
        try:
            missing, unexpected = safetensors.torch.load_model(model, model_file, strict=False, device=map_location)
        except safetensors.SafetensorError as error:
            raise CorruptFileError(f"{model_file!r} is not a readable safetensors file ({error})") from error
        if missing or unexpected:
            raise ValueError(
                f"{model_file!r} does not match its config.json: missing tensors {sorted(missing)}, "
                f"unexpected tensors {sorted(unexpected)}"
            )
        for parameter in model.target_q_heads.parameters() if model.target_q_heads is not None else []:
            parameter.requires_grad_(False)
        model.eval()
        return model

    @classmethod
    def for_model(
        cls,
        model,
        loss_type: str = "mc",
        q_head_type: str = "linear",
        mlp_hidden_size: int | None = None,
        base_model_name: str | None = None,
    ) -> ValueHeads:
        """Build heads sized for ``model`` (its final hidden size and output vocabulary)."""
        hidden = _hidden_size_of(model)
        vocab = _vocab_size_of(model)
        if hidden is None or vocab is None:
            raise ValueError(f"cannot read the hidden size / vocabulary size of {type(model).__name__}")
        if base_model_name is None:
            base_model_name = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
        return cls(
            hidden,
            vocab,
            loss_type=loss_type,
            q_head_type=q_head_type,
            mlp_hidden_size=mlp_hidden_size,
            base_model_name=base_model_name,
        )


def _canonical(name: str) -> str:
    return str(name).rstrip("/")


def _looks_like_hub_id(name: str) -> bool:
    import os

    return bool(name) and name.count("/") == 1 and not os.path.isabs(name) and not name.startswith(".")


def _unwrap(model):
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _hidden_size_of(model) -> int | None:
    model = _unwrap(model)
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None and getattr(output, "weight", None) is not None:
        return int(output.weight.shape[1])
    config = getattr(model, "config", None)
    if config is None:
        return None
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text_config, "hidden_size", None)


def _vocab_size_of(model) -> int | None:
    model = _unwrap(model)
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None and getattr(output, "weight", None) is not None:
        return int(output.weight.shape[0])
    config = getattr(model, "config", None)
    if config is None:
        return None
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text_config, "vocab_size", None)
