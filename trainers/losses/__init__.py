"""Offline RL losses (MC returns, ILQL) with per-trajectory reduction, and chunked vocabulary CE."""

from .chunked import (
    chunked_linear_cross_entropy,
    chunked_linear_logsumexp,
    naive_linear_cross_entropy,
    naive_linear_logsumexp,
)
from .offline_rl import (
    CQL_IMPLEMENTATIONS,
    LOSS_FIELD_RANGES,
    LOSS_TYPES,
    OfflineRLLossConfig,
    Transitions,
    build_transitions,
    expectile_loss,
    ilql_loss_terms,
    mc_loss_terms,
    normalized_weights,
    per_trajectory_losses,
    weighted_loss,
)

__all__ = [
    "CQL_IMPLEMENTATIONS",
    "LOSS_FIELD_RANGES",
    "LOSS_TYPES",
    "OfflineRLLossConfig",
    "Transitions",
    "build_transitions",
    "chunked_linear_cross_entropy",
    "chunked_linear_logsumexp",
    "expectile_loss",
    "ilql_loss_terms",
    "mc_loss_terms",
    "naive_linear_cross_entropy",
    "naive_linear_logsumexp",
    "normalized_weights",
    "per_trajectory_losses",
    "weighted_loss",
]
