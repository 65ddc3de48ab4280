"""Significance and spread of metric differences: paired bootstrap over queries, mean and spread over
folds or seeds.

`paired_bootstrap(a_Q, b_Q)` compares two methods scored on the SAME queries (e.g. the per-query
Hits@10 vectors from `metrics.ranking_metrics(..., per_query=True)`): it resamples queries with
replacement, keeping each query's pair together, and reports the mean of a - b with a percentile
confidence interval and a two-sided bootstrap p-value.

Across folds there are two readings, both supported:
- concatenate the queries of all folds and pass `groups=None`: every query is one draw from one
  population (right when the folds partition one query set, as k-fold cross-validation does);
- pass `groups` = fold index per query: each bootstrap sample redraws n_g queries within every fold
  g (a stratified bootstrap), so the fold sizes stay fixed and between-fold differences (e.g. a fold
  with harder queries) add no spurious variance.  The statistic is still the mean over all queries.

numpy only; resampling is vectorised in chunks of samples so memory stays bounded.  scipy.stats.
bootstrap does not take paired strata, which is why this is written out here.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

_CHUNK_ELEMENTS = 1 << 22  # indices per resampling chunk (32 MiB of int64)


def _bootstrap_means(d_Q: np.ndarray, groups_Q: np.ndarray | None, num_samples: int,
                     rng: np.random.Generator) -> np.ndarray:
  """float64 [num_samples]: the mean of d over each resample (within groups when given)."""
  q = d_Q.size
  strata = [np.arange(q)] if groups_Q is None else [np.nonzero(groups_Q == g)[0] for g in np.unique(groups_Q)]
  per_chunk = max(1, _CHUNK_ELEMENTS // q)
  out = np.empty(num_samples, np.float64)
  for s in range(0, num_samples, per_chunk):
    n = min(per_chunk, num_samples - s)
    total = np.zeros(n, np.float64)
    for idx in strata:
      pick = idx[rng.integers(idx.size, size=(n, idx.size))]
      total += d_Q[pick].sum(axis=1)
    out[s:s + n] = total / q
  return out


def paired_bootstrap(a_Q: Sequence[float], b_Q: Sequence[float], *, num_samples: int = 10000, seed: int = 0,
                     ci: float = 0.95, groups: Sequence | None = None) -> dict:
  """Paired bootstrap of mean(a - b) over queries.

  Returns {"mean_diff", "low", "high", "p_value", "num_queries", "num_samples", "ci"}:
  - mean_diff: mean over queries of a - b (the observed statistic, not a bootstrap estimate);
  - low / high: the (1 - ci) / 2 and (1 + ci) / 2 quantiles of the bootstrap means (percentile CI,
    numpy's linear interpolation);
  - p_value: two-sided, for "mean difference is 0", from the bootstrap distribution shifted to the
    null (Efron & Tibshirani 1993, sec. 16.4): (1 + #{|m* - mean_diff| >= |mean_diff|}) /
    (1 + num_samples), so it is never 0 and equals 1 when mean_diff is 0.
  Seeded: the same inputs and seed give the same numbers.
  """
  a_Q, b_Q = np.asarray(a_Q, np.float64), np.asarray(b_Q, np.float64)
  if a_Q.ndim != 1 or a_Q.shape != b_Q.shape:
    raise ValueError(f"paired_bootstrap: a and b must be vectors of equal length, got {a_Q.shape} and {b_Q.shape}")
  if a_Q.size == 0:
    raise ValueError("paired_bootstrap: no queries")
  if not (np.isfinite(a_Q).all() and np.isfinite(b_Q).all()):
    raise ValueError("paired_bootstrap: non-finite metric values")
  if num_samples < 1 or not 0 < ci < 1:
    raise ValueError(f"paired_bootstrap: need num_samples >= 1 and 0 < ci < 1, got {num_samples}, {ci}")
  groups_Q = None
  if groups is not None:
    groups_Q = np.asarray(groups)
    if groups_Q.shape != a_Q.shape:
      raise ValueError(f"paired_bootstrap: groups has shape {groups_Q.shape}, queries {a_Q.shape}")
  d_Q = a_Q - b_Q
  mean_diff = float(d_Q.mean())
  means = _bootstrap_means(d_Q, groups_Q, int(num_samples), np.random.default_rng(seed))
  low, high = np.quantile(means, [(1 - ci) / 2, (1 + ci) / 2])
  # Rounding guard: resamples of a constant vector may differ from its mean in the last bit.
  tol = 1e-12 * max(1.0, float(np.abs(d_Q).max()))
  extreme = np.abs(means - mean_diff) >= abs(mean_diff) - tol
  return {"mean_diff": mean_diff, "low": float(low), "high": float(high),
          "p_value": float((1 + extreme.sum()) / (1 + num_samples)), "num_queries": int(a_Q.size),
          "num_samples": int(num_samples), "ci": float(ci)}


def mean_and_spread(values: Sequence[float]) -> dict:
  """{"mean", "std", "min", "max", "n"} of per-fold or per-seed results; std is the sample standard
  deviation (ddof=1), None for a single value."""
  v = np.asarray(values, np.float64).ravel()
  if v.size == 0:
    raise ValueError("mean_and_spread: no values")
  return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else None,
          "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}
