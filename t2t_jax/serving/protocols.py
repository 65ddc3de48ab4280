"""The retriever seams: prompts in, ranked catalog rows out.

  Retriever         recommend(prompts, k) -> int rows [Q, k] (-1 past the end): every retrieval
                    baseline, fitted (`t2t_jax.baselines.base.Baseline`: BM25Retriever, MostPopular,
                    DualEncoderRetriever, BiEncoderRetriever) or fused (HybridRetriever, over two
                    fitted Retrievers); the studies score them with `t2t_jax.metrics`.
  TrackRecommender  a trained Text2Tracks model: encode(prompts), recommend_rows(prompts, k) ->
                    (ID-table rows [Q, k], scores [Q, k]) and recommend(prompts, k) -> ranked tracks
                    per prompt; `t2t_jax.serving.retriever.GenerativeRetriever` (a MODEL_DIR, what `t2t serve` serves)
                    and `t2t_jax.export_runtime.ExportedRecommender` (an export dir).
Rows index the catalog (the ID table's rows for a TrackRecommender), best first.  A single string
is not a sequence of prompts for a Retriever; a TrackRecommender reads it as one prompt.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class Retriever(Protocol):
  """Ranks catalog rows for prompts."""

  def recommend(self, prompts: Sequence[str], k: int) -> np.ndarray:
    """Catalog rows int [len(prompts), k], best first, -1 where fewer than k were found."""


@runtime_checkable
class TrackRecommender(Protocol):
  """A trained model's recommender: constrained decoding over its ID table."""

  def encode(self, prompts: Sequence[str]) -> np.ndarray:
    """Normalised, tokenised prompts as the model reads them: int32 [len(prompts), inputs_length]."""

  def recommend_rows(self, prompts: Sequence[str], k: Any) -> tuple[np.ndarray, np.ndarray]:
    """ID-table rows int [B, k] and their scores float [B, k] (row -1 where fewer than k)."""

  def recommend(self, prompts: Sequence[str], k: Any) -> list:
    """Ranked tracks per prompt (track id, artist, title, score), best first."""
