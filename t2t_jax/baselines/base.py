"""The baseline seam: `Baseline`, a `t2t_jax.serving.protocols.Retriever` fitted on the catalog and the
training playlists (`catalog.CatalogTexts`, `catalog.Train`; the signature catalog.py describes).

Baselines: bm25.BM25Retriever, popularity.MostPopular, dual_encoder.DualEncoderRetriever,
bi_encoder.BiEncoderRetriever.  hybrid.HybridRetriever fuses two fitted ones: a Retriever, not a
Baseline (nothing to fit).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from t2t_jax.serving import protocols
from t2t_jax.baselines import catalog as catalog_lib


@runtime_checkable
class Baseline(protocols.Retriever, Protocol):
  """fit(catalog, train) -> the fitted baseline (itself); then `recommend(prompts, k)`."""

  def fit(self, catalog: catalog_lib.CatalogTexts, train: catalog_lib.Train) -> "Baseline":
    """Fits on the catalog's texts and the training (prompt, catalog rows) pairs."""
