"""When two step texts count as the same state: exact match, else cosine of unit embeddings.

:class:`_Similarity` embeds each distinct string once (batched through ``ensure``) and compares by
dot product against ``similarity_threshold``; :func:`~trainers.tree.build_forest` shares one
instance across all trees of a forest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

EmbedFn = Callable[[list[str]], np.ndarray]


class _Similarity:
    """Similarity test with an exact-string shortcut and cached unit embeddings."""

    def __init__(self, embed: EmbedFn | Any | None, threshold: float):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"similarity_threshold must be in [0, 1], got {threshold}")
        self.threshold = threshold
        if embed is None:
            from trainers.embeddings import EmbeddingCache

            embed = EmbeddingCache()
        self._encode = embed.encode if hasattr(embed, "encode") else embed
        self.vectors: dict[str, np.ndarray] = {}
        self.encoded_strings = 0
        self.seconds = 0.0

    def ensure(self, texts: Iterable[str], show_progress_bar: bool = False) -> None:
        import time

        missing = list(dict.fromkeys(t for t in texts if t not in self.vectors))
        if not missing:
            return
        start = time.perf_counter()
        try:
            vectors = self._encode(missing, show_progress_bar=show_progress_bar)
        except TypeError:  # plain callables do not take the progress flag
            vectors = self._encode(missing)
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape[0] != len(missing):
            raise ValueError(f"the embedding function returned {vectors.shape[0]} vectors for {len(missing)} strings")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
        self.vectors.update(zip(missing, vectors))
        self.encoded_strings += len(missing)
        self.seconds += time.perf_counter() - start

    def score(self, a: str, b: str) -> float:
        if a == b:
            return 1.0
        return float(np.dot(self.vectors[a], self.vectors[b]))

    def similar(self, a: str, b: str) -> bool:
        # a tiny tolerance so that "cosine exactly at the threshold" is not lost to float rounding
        return a == b or self.score(a, b) >= self.threshold - 1e-6


__all__ = ["EmbedFn"]
