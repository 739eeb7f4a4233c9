"""The BOOST reweighting head: trajectory embedding -> scalar logit -> softmax weight per minibatch.

The head is a small MLP with ReLU activations (BOOST appendix G.4: depth 2 for Twenty Questions and
Car Dealer, depth 4 for WebShop). Its last layer starts at zero, so every trajectory gets the same
logit and the first weights are exactly uniform; training moves them away from uniform only as far
as the validation signal asks.

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
        first = self.mlp[0]
        return self.mlp(embeddings.to(first.weight.dtype)).squeeze(-1)

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


__all__ = ["ReweightingHead", "ReweightingHeadMismatchError", "effective_sample_size"]
