"""The BOOST reweighting head: trajectory embedding -> scalar logit -> softmax weight per minibatch.

The head is a small MLP with ReLU activations (BOOST appendix G.4: depth 2 for Twenty Questions and
Car Dealer, depth 4 for WebShop). Its last layer starts at zero, so every trajectory gets the same
logit and the first weights are exactly uniform; training moves them away from uniform only as far
as the validation signal asks.

The head can centre and scale its input with statistics of the training set's embeddings
(:meth:`ReweightingHead.fit_input_normalization`, kept in the saved weights). A frozen LM's pooled
hidden states share one large direction (SmolLM2-135M's action means on WebShop: norm ~38, of which
~98% is the mean over trajectories, one channel alone near 27, while a channel varies by ~0.2
between trajectories): on raw input every hidden unit of the MLP sees nearly the same value for every
trajectory, and a few φ steps cannot tell them apart.

The head stores the identity of the embedding model it was trained on (model id, a fingerprint of
its weights and the embedding width) and refuses to load for another one, because embeddings from a
different model live in a different space and would give meaningless weights without any error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from ..hub import HubCardMixin

#: ``fit_input_normalization`` modes, after "none" (the raw embeddings, as in the paper)
INPUT_NORMALIZATIONS = ("none", "center", "standardize")


class ReweightingHeadMismatchError(ValueError):
    """A saved reweighting head was loaded for embeddings from another model (or another width)."""


class ReweightingHead(
    HubCardMixin,
    nn.Module,
    PyTorchModelHubMixin,
    library_name="trainers",
    tags=["trainers", "boost", "data-reweighting"],
):
    """MLP ``embedding_dim -> hidden_dim -> ... -> 1`` with ReLU between layers.

    Args:
        embedding_dim: width of the trajectory embeddings (the embedding model's hidden size).
        depth: number of linear layers (default 2; paper: 2 for Twenty Questions / Car Dealer, 4 for WebShop).
        hidden_dim: width of the hidden layers (default 256; the paper does not state it).
        base_model_id: id or path of the frozen model that produced the embeddings (checked on load).
        embedding_fingerprint: fingerprint of that model's weights (see ``trainers.embedding_cache``).
        zero_init_last: start with a zero last layer so the first weights are uniform (default True).
        training_details: free text shown in the saved card (method, data, hyperparameters).

    The input normalisation starts as the identity (mean 0, scale 1) until
    :meth:`fit_input_normalization` is called; a saved head keeps the fitted values.

    ``save_pretrained`` writes ``model.safetensors`` + ``config.json`` + a card from
    ``hub_cards/reweighting_head_card.md`` atomically (``trainers.hub.HubCardMixin``);
    ``push_to_hub`` pushes through ``trainers.hub.push_folder``.
    """

    card_template_name = "reweighting_head_card"

    def __init__(
        self,
        embedding_dim: int,
        depth: int = 2,
        hidden_dim: int = 256,
        base_model_id: str = "",
        embedding_fingerprint: str = "",
        zero_init_last: bool = True,
        training_details: str = "",
    ):
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be positive, got {embedding_dim}")
        if depth < 1:
            raise ValueError(f"depth must be at least 1 (a single linear layer), got {depth}")
        self.embedding_dim = int(embedding_dim)
        self.depth = int(depth)
        self.hidden_dim = int(hidden_dim)
        self.base_model_id = base_model_id
        self.embedding_fingerprint = embedding_fingerprint
        self.training_details = training_details
        # buffers: saved and loaded with the weights, moved by .to(), never trained
        self.register_buffer("input_mean", torch.zeros(self.embedding_dim))
        self.register_buffer("input_scale", torch.ones(self.embedding_dim))
        layers: list[nn.Module] = []
        width = self.embedding_dim
        for _ in range(self.depth - 1):
            layers += [nn.Linear(width, self.hidden_dim), nn.ReLU()]
            width = self.hidden_dim
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)
        if zero_init_last:
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Return one logit per row of ``embeddings`` (shape ``[batch]``)."""
        if embeddings.dim() != 2 or embeddings.shape[-1] != self.embedding_dim:
            raise ReweightingHeadMismatchError(
                f"reweighting head expects embeddings of shape [batch, {self.embedding_dim}] "
                f"(from {self.base_model_id or 'its embedding model'}), got {tuple(embeddings.shape)}"
            )
        standardized = (embeddings.float() - self.input_mean.float()) / self.input_scale.float()
        return self.mlp(standardized.to(self.mlp[0].weight.dtype)).squeeze(-1)

    @torch.no_grad()
    def fit_input_normalization(self, embeddings: torch.Tensor, mode: str = "center") -> None:
        """Fit the input standardisation on ``embeddings`` (the training set's, ``[N, embedding_dim]``).

        ``mode="center"`` subtracts the mean embedding and divides every channel by one scale, the root
        mean square of the channels' standard deviations: the shared direction goes, and channels keep
        their relative spread (a pooling's few NLL channels, which vary far more than a hidden channel,
        stay as visible to the head as before). ``mode="standardize"`` divides each channel by its own
        standard deviation (floored at 1e-3 of the mean one, so a channel that hardly varies in training
        cannot blow a small deviation up to many units at inference).
        """
        if mode not in INPUT_NORMALIZATIONS[1:]:
            raise ValueError(f"mode must be one of {INPUT_NORMALIZATIONS[1:]}, got {mode!r}")
        if embeddings.dim() != 2 or embeddings.shape[-1] != self.embedding_dim or embeddings.shape[0] < 2:
            raise ReweightingHeadMismatchError(
                f"fit_input_normalization needs at least 2 embeddings of width {self.embedding_dim}, "
                f"got shape {tuple(embeddings.shape)}"
            )
        values = embeddings.detach().float()
        std = values.std(dim=0)
        if mode == "center":
            std = std.pow(2).mean().sqrt().expand_as(std)
        floor = max(1e-3 * float(std.mean()), 1e-8)
        self.input_mean.copy_(values.mean(dim=0).to(self.input_mean))
        self.input_scale.copy_(std.clamp_min(floor).to(self.input_scale))

    def normalized_weights(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Softmax of the logits over the rows (the minibatch): non-negative, summing to 1."""
        return torch.softmax(self(embeddings).float(), dim=0)

    # ------------------------------------------------------------------ Hub
    def check_compatible(
        self,
        *,
        base_model_id: str | None = None,
        embedding_dim: int | None = None,
        embedding_fingerprint: str | None = None,
    ) -> None:
        """Raise :class:`ReweightingHeadMismatchError` if the head was trained on other embeddings."""
        if embedding_dim is not None and int(embedding_dim) != self.embedding_dim:
            raise ReweightingHeadMismatchError(
                f"this reweighting head was trained on {self.embedding_dim}-dim embeddings from "
                f"{self.base_model_id!r}, but the embeddings given are {embedding_dim}-dim"
            )
        if base_model_id is not None and self.base_model_id and base_model_id != self.base_model_id:
            raise ReweightingHeadMismatchError(
                f"this reweighting head was trained on embeddings from {self.base_model_id!r}, not "
                f"{base_model_id!r}; recompute the embeddings with {self.base_model_id!r} or train a new head"
            )
        if embedding_fingerprint and self.embedding_fingerprint and embedding_fingerprint != self.embedding_fingerprint:
            raise ReweightingHeadMismatchError(
                f"the embedding model's weights differ from the ones this head was trained on "
                f"(fingerprint {embedding_fingerprint} vs {self.embedding_fingerprint}, model {self.base_model_id!r})"
            )

    def card_fields(self) -> dict[str, Any]:
        """Variables for ``hub_cards/reweighting_head_card.md`` (used by ``HubCardMixin``)."""
        fields: dict[str, Any] = {
            "embedding_model": self.base_model_id,
            "embedding_fingerprint": self.embedding_fingerprint,
            "embedding_dim": self.embedding_dim,
            "depth": self.depth,
            "hidden_dim": self.hidden_dim,
            "num_parameters": sum(p.numel() for p in self.parameters()),
            "training_details": self.training_details,
            "library_name": "trainers",
            "tags": ["trainers", "boost", "data-reweighting", "bilevel-optimization"],
        }
        if self.base_model_id and not os.path.isabs(self.base_model_id):
            fields["base_model"] = self.base_model_id
        return fields

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        expected_base_model: str | None = None,
        expected_embedding_dim: int | None = None,
        expected_fingerprint: str | None = None,
        **kwargs,
    ) -> ReweightingHead:
        """Load a saved head; with ``expected_*`` set, refuse a head trained on other embeddings."""
        head = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        try:
            head.check_compatible(
                base_model_id=expected_base_model,
                embedding_dim=expected_embedding_dim,
                embedding_fingerprint=expected_fingerprint,
            )
        except ReweightingHeadMismatchError as error:
            raise ReweightingHeadMismatchError(f"{pretrained_model_name_or_path}: {error}") from None
        return head


def effective_sample_size(weights: torch.Tensor) -> float:
    """``1 / sum(w^2)`` of normalised weights (BOOST section 4); equals the batch size when uniform."""
    weights = weights.detach().float()
    return float(1.0 / (weights.pow(2).sum() + 1e-30))


__all__ = ["INPUT_NORMALIZATIONS", "ReweightingHead", "ReweightingHeadMismatchError", "effective_sample_size"]
