"""Hybrid retrieval: BM25 and a dense retriever fused by weighted reciprocal-rank fusion (RRF), as the
CPCD paper's hybrid baseline combines its sparse and dense systems.

  HybridRetriever(sparse, dense, weight=0.3, depth=100, k0=60).recommend(prompts, k)

Both retrievers are already fitted (any object with `recommend(prompts, n) -> int rows [Q, n]`, -1 =
none).  Each returns its top `depth` rows; a row's fused score is

  weight / (k0 + rank_sparse) + (1 - weight) / (k0 + rank_dense)      (ranks from 1; absent: 0)

so weight 0 is the dense retriever alone and 1 BM25 alone (Cormack et al. 2009, k0 = 60).  Ties go to
the better dense rank, then the lower row.  `fuse` is the pure function (the weight is chosen on
validation by `studies.tuning.tune_hybrid`, which fuses the same two rankings for every weight).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from t2t_jax.errors import UserInputError


def fuse(sparse_QxD: np.ndarray, dense_QxD: np.ndarray, k: int, *, weight: float, k0: float = 60.0) -> np.ndarray:
  """Weighted RRF of two rankings (rows, -1 = none) -> int32 [Q, k] rows, best first, -1 past the end."""
  if not 0.0 <= weight <= 1.0:
    raise UserInputError(f"hybrid: weight must be in [0, 1], got {weight}")
  if sparse_QxD.shape[0] != dense_QxD.shape[0]:
    raise UserInputError(f"hybrid: {sparse_QxD.shape[0]} sparse vs {dense_QxD.shape[0]} dense rankings")
  out = np.full((sparse_QxD.shape[0], k), -1, np.int32)
  for q, (s_row, d_row) in enumerate(zip(sparse_QxD, dense_QxD)):
    score: dict[int, float] = {}
    dense_rank: dict[int, int] = {}
    for rank, r in enumerate(s_row, 1):
      if r >= 0:
        score[int(r)] = score.get(int(r), 0.0) + weight / (k0 + rank)
    for rank, r in enumerate(d_row, 1):
      if r >= 0:
        score[int(r)] = score.get(int(r), 0.0) + (1.0 - weight) / (k0 + rank)
        dense_rank.setdefault(int(r), rank)
    best = sorted(score, key=lambda r: (-score[r], dense_rank.get(r, 1 << 30), r))[:k]
    out[q, :len(best)] = best
  return out


class HybridRetriever:
  """BM25 + dense retriever by weighted reciprocal-rank fusion (module docstring)."""

  def __init__(self, sparse, dense, *, weight: float = 0.3, depth: int = 100, k0: float = 60.0):
    if depth < 1:
      raise UserInputError(f"hybrid: depth must be >= 1, got {depth}")
    fuse(np.zeros((0, 1), np.int32), np.zeros((0, 1), np.int32), 1, weight=weight)  # checks the weight
    self.sparse, self.dense = sparse, dense
    self.weight, self.depth, self.k0 = float(weight), int(depth), float(k0)

  def rankings(self, prompts: Sequence[str], n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The two input rankings, `max(depth, n)` deep."""
    n = max(self.depth, n or 0)
    return (np.asarray(self.sparse.recommend(list(prompts), n)), np.asarray(self.dense.recommend(list(prompts), n)))

  def recommend(self, prompts: Sequence[str], k: int) -> np.ndarray:
    sparse, dense = self.rankings(prompts, k)
    return fuse(sparse, dense, k, weight=self.weight, k0=self.k0)
