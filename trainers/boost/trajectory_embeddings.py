"""Trajectory embeddings from the frozen pretrained base model, computed once and cached on disk.

BOOST (appendix G.5) feeds its reweighting head the final-layer hidden state at a trajectory's last
token, computed by the *unmodified* pretrained model so that the head's input space stays fixed
while the policy trains. Those embeddings only depend on (model weights, trajectory text), so they
are computed once in batches and stored as safetensors under a key made of

* the model id and a fingerprint of its weights (config + a strided sample of every tensor), and
* a fingerprint of the data (every row's messages, in order) and of the rendering settings.

Every method and every run that embeds the same data with the same model reuses the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..data.tokenization import PLAIN_CHAT_TEMPLATE

CACHE_FORMAT_VERSION = "1"
POOLINGS = ("action_mean_nll", "action_context_nll", "action_mean", "mean", "last_token")


def default_cache_dir() -> Path:
    root = os.environ.get("TRAINERS_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface")), "trainers"
    )
    return Path(root) / "trajectory_embeddings"


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's config and weights.

    Hashing every byte of a large model is slow, so each tensor contributes its name, shape, dtype,
    a strided sample of up to 256 values and its sum: any training step changes the fingerprint.
    """
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_json_string"):
        digest.update(config.to_json_string(use_diff=False).encode())
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            flat = tensor.detach().reshape(-1)
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            if flat.numel() == 0:
                continue
            step = max(1, flat.numel() // 256)
            sample = flat[::step][:256].float().cpu()
            digest.update(sample.numpy().tobytes())
            digest.update(repr(float(flat.float().sum())).encode())
    return digest.hexdigest()[:16]


def data_fingerprint(rows: Iterable[Mapping[str, Any]]) -> str:
    """A hash of the rows' messages in order (ids and rewards do not change an embedding)."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(list(row["messages"]), sort_keys=True).encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


def _backbone(model):
    """The transformer without its LM head (for PEFT models: the base model, adapters disabled by caller)."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    base = getattr(model, "base_model", model)
    return base if base is not None else model


def render_trajectory(tokenizer, messages) -> str:
    template = getattr(tokenizer, "chat_template", None) or PLAIN_CHAT_TEMPLATE
    return tokenizer.apply_chat_template(list(messages), tokenize=False, chat_template=template)


class TrajectoryEmbeddingCache:
    """Compute (or load) one embedding per trajectory.

    Args:
        cache_dir: where the safetensors files live (default ``$TRAINERS_CACHE`` or
            ``$HF_HOME/trainers/trajectory_embeddings``).
        batch_size: trajectories per forward pass (default 8).
        max_length: trajectories longer than this keep their *last* ``max_length`` tokens, so the
            embedded token is always the true last token (default 1024).
        pooling: how a trajectory's token states become one vector: ``"last_token"`` (BOOST appendix
            G.5: the final token's state, which with a chat template is a template token such as the
            trailing newline), ``"action_mean"`` (mean over the agent's action tokens), ``"mean"`` (mean
            over every token) or ``"action_mean_nll"`` (the default of :class:`BilevelReweightConfig`:
            ``"action_mean"`` followed by two more numbers, the mean and the max negative
            log-likelihood of the action tokens under the frozen model: how implausible the agent's
            actions are, which a hidden-state average does not carry), or ``"action_context_nll"``
            (``"action_mean"``, then the mean over every token, then the two numbers: twice as wide;
            the every-token mean carries the observations and the order of the turns, which the
            action states alone barely reflect).
        dtype: ``torch.float32`` (default) or ``torch.bfloat16``: the forward runs under bf16
            autocast (about 3x faster on CPUs with AVX512-BF16/AMX, tens of times slower on AVX2-only
            ones: choose it with ``trainers.hardware.pick_dtype("embedding")``). The stored
            embeddings are float32 either way; bf16 ones are cached under their own key.
    """

    def __init__(
        self,
        cache_dir: str | Path | None = None,
        batch_size: int = 8,
        max_length: int = 1024,
        pooling: str = "last_token",
        dtype: torch.dtype = torch.float32,
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"dtype must be torch.float32 or torch.bfloat16, got {dtype}")
        self.pooling = pooling
        self.dtype = dtype
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.batch_size = batch_size
        self.max_length = max_length
        #: number of forward passes run by this object (0 when everything came from the cache)
        self.forward_passes = 0

    def key(self, model_id: str, fingerprint: str, data_key: str) -> str:
        raw = f"v{CACHE_FORMAT_VERSION}|{model_id}|{fingerprint}|{data_key}|{self.max_length}"
        if self.pooling != "last_token":  # keeps the keys of files written before pooling existed
            raw += f"|{self.pooling}"
        if self.dtype == torch.bfloat16:  # and fp32 keeps the keys written before precision was chosen
            raw += "|bf16"
        return hashlib.sha256(raw.encode()).hexdigest()[:24]

    def path_for(self, model_id: str, fingerprint: str, data_key: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_id)[-60:] or "model"
        return self.cache_dir / f"{safe}-{self.key(model_id, fingerprint, data_key)}.safetensors"

    def embed(
        self,
        model,
        tokenizer,
        rows,
        *,
        model_id: str | None = None,
        fingerprint: str | None = None,
        show_progress: bool = True,
    ) -> torch.Tensor:
        """Return a float32 ``[len(rows), hidden_size]`` tensor aligned with ``rows``.

        ``rows`` is a ``datasets.Dataset`` or a list of schema rows (only ``messages`` is read).
        """
        rows = list(rows) if not hasattr(rows, "column_names") else rows
        if len(rows) == 0:
            raise ValueError("no trajectories to embed (the dataset is empty)")
        messages = rows["messages"] if hasattr(rows, "column_names") else [row["messages"] for row in rows]
        model_id = model_id or getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
        fingerprint = fingerprint or model_fingerprint(model)
        data_key = data_fingerprint({"messages": m} for m in messages)
        path = self.path_for(model_id, fingerprint, data_key)
        if path.exists():
            cached = load_file(str(path))["embeddings"]
            if cached.shape[0] == len(messages):
                return cached
        embeddings = self._compute(model, tokenizer, messages, show_progress)
        self._write(
            path, embeddings, {"model_id": model_id, "model_fingerprint": fingerprint, "data_fingerprint": data_key}
        )
        return embeddings

    @torch.no_grad()
    def _compute(self, model, tokenizer, messages, show_progress) -> torch.Tensor:
        encoded, pooled = self._encode(tokenizer, messages)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # similar lengths share a batch
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        was_training = model.training
        model.eval()
        backbone = _backbone(model)
        device = next(model.parameters()).device
        disable = model.disable_adapter() if hasattr(model, "disable_adapter") else None
        bf16 = self.dtype == torch.bfloat16
        out: list[torch.Tensor | None] = [None] * len(encoded)
        try:
            if disable is not None:
                disable.__enter__()
            batches = range(0, len(order), self.batch_size)
            for start in tqdm(batches, desc="Embedding trajectories", disable=not show_progress):
                index = order[start : start + self.batch_size]
                length = max(len(encoded[i]) for i in index)
                ids = torch.full((len(index), length), pad_id, dtype=torch.long)
                mask = torch.zeros((len(index), length), dtype=torch.long)
                pool = torch.zeros((len(index), length), dtype=torch.float32)
                for row, i in enumerate(index):
                    ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
                    mask[row, : len(encoded[i])] = 1
                    pool[row, : len(encoded[i])] = torch.tensor(pooled[i], dtype=torch.float32)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    hidden = backbone(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
                    self.forward_passes += 1
                    pool = pool.to(device)
                    picked = ((hidden.float() * pool.unsqueeze(-1)).sum(1) / pool.sum(1, keepdim=True)).cpu()
                    if self.pooling == "action_context_nll":
                        every = mask.to(device).unsqueeze(-1).float()
                        context = ((hidden.float() * every).sum(1) / every.sum(1)).cpu()
                        picked = torch.cat([picked, context], dim=1)
                    if self.pooling.endswith("_nll"):
                        nll = _action_nll(model, hidden, ids.to(device), pool)
                        picked = torch.cat([picked, nll.cpu()], dim=1)
                for row, i in enumerate(index):
                    out[i] = picked[row]
        finally:
            if disable is not None:
                disable.__exit__(None, None, None)
            model.train(was_training)
        return torch.stack(out)  # type: ignore[arg-type]

    def _encode(self, tokenizer, messages) -> tuple[list[list[int]], list[list[float]]]:
        """Token ids (the last ``max_length``) and the pooling mask of each trajectory."""
        encoded, pooled = [], []
        for conversation in messages:
            if self.pooling.startswith("action_"):
                from ..data.tokenization import tokenize_trajectory

                n_actions = sum(m["role"] == "assistant" for m in conversation)
                tokens = tokenize_trajectory(conversation, [0.0] * n_actions, tokenizer)
                ids, mask = tokens["input_ids"][-self.max_length :], tokens["action_mask"][-self.max_length :]
                if not any(mask):  # no agent token survived the cut (or none at all): fall back to every token
                    mask = [1] * len(ids)
            else:
                ids = tokenizer(render_trajectory(tokenizer, conversation), add_special_tokens=False)["input_ids"]
                ids = ids[-self.max_length :]
                mask = [1] * len(ids) if self.pooling == "mean" else [0] * (len(ids) - 1) + [1]
            encoded.append(ids)
            pooled.append([float(m) for m in mask])
        return encoded, pooled

    def _write(self, path: Path, embeddings: torch.Tensor, metadata: dict[str, str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(handle)
        try:
            save_file({"embeddings": embeddings.contiguous()}, temp, metadata=metadata)
            os.replace(temp, path)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)


def _action_nll(
    model, hidden: torch.Tensor, ids: torch.Tensor, actions: torch.Tensor, chunk: int = 256
) -> torch.Tensor:
    """``[B, 2]``: mean and max negative log-likelihood of each row's action tokens under ``model``.

    Token ``t`` is predicted from the state at ``t - 1``; only action positions are projected onto
    the vocabulary, ``chunk`` at a time, so the ``[B, T, |V|]`` logits are never built.
    """
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    lm_head = model.get_output_embeddings()
    target = actions[:, 1:] > 0
    rows, positions = torch.nonzero(target, as_tuple=True)
    states = hidden[rows, positions]
    tokens = ids[rows, positions + 1]
    values = []
    for start in range(0, states.shape[0], chunk):
        logits = lm_head(states[start : start + chunk]).float()
        values.append(torch.logsumexp(logits, -1) - logits.gather(1, tokens[start : start + chunk, None])[:, 0])
    nll = torch.cat(values) if values else torch.zeros(0, device=hidden.device)
    out = torch.zeros(hidden.shape[0], 2, device=hidden.device)
    for row in range(hidden.shape[0]):
        mine = nll[rows == row]
        if mine.numel():
            out[row, 0], out[row, 1] = mine.mean(), mine.max()
    return out


def embed_trajectories(
    model,
    tokenizer,
    rows,
    *,
    cache_dir=None,
    batch_size: int = 8,
    max_length: int = 1024,
    model_id: str | None = None,
    pooling: str = "last_token",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """One call: :class:`TrajectoryEmbeddingCache` ``(cache_dir, ..., pooling, dtype).embed(...)``."""
    return TrajectoryEmbeddingCache(cache_dir, batch_size, max_length, pooling, dtype).embed(
        model, tokenizer, rows, model_id=model_id
    )


__all__ = [
    "POOLINGS",
    "TrajectoryEmbeddingCache",
    "data_fingerprint",
    "default_cache_dir",
    "embed_trajectories",
    "model_fingerprint",
    "render_trajectory",
]
