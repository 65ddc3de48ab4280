"""Ranking metrics for recommendation: Hits@K, Recall@K, MAP@K, NDCG@K and MRR.

All methods (Text2Tracks, BM25, popularity, dual encoder) are scored by this one function on the
same split, so their numbers are comparable.  Definitions (per query, then averaged over queries):

- hits@K   = 1 if any relevant item is in the top K, else 0.
- recall@K = |relevant ∩ top K| / |relevant|.
- map@K    = (sum over ranks i <= K that hold a relevant item of precision@i) / min(|relevant|, K).
- ndcg@K   = DCG@K / IDCG@K with binary gains and log2(rank + 1) discounts.
- mrr      = 1 / rank of the first relevant item in the whole ranked list (0 if none).

A ranked list may repeat an item; only its first occurrence counts (a repeat is neither a hit nor
a miss, so it cannot inflate any metric).
"""

from typing import Collection, Sequence

import numpy as np


def _dedup(ranked: Sequence[int]) -> list[int]:
  seen, out = set(), []
  for r in ranked:
    r = int(r)
    if r < 0 or r in seen:  # -1 marks "no item" (e.g. fewer valid beams than K).
      continue
    seen.add(r)
    out.append(r)
  return out


def query_metrics(ranked: Sequence[int], relevant: Collection[int], ks: Sequence[int]) -> dict[str, float]:
  """Metrics of one query; `relevant` must be non-empty."""
  rel = {int(r) for r in relevant}
  if not rel:
    raise ValueError("a query needs at least one relevant item")
  ranked = _dedup(ranked)
  hit = np.array([r in rel for r in ranked], dtype=bool)
  out = {}
  for k in ks:
    h = hit[:k]
    n_hit = int(h.sum())
    ranks = np.nonzero(h)[0] + 1  # 1-based ranks of hits.
    out[f"hits@{k}"] = float(n_hit > 0)
    out[f"recall@{k}"] = n_hit / len(rel)
    precisions = np.arange(1, n_hit + 1) / ranks
    out[f"map@{k}"] = float(precisions.sum() / min(len(rel), k))
    dcg = float((1.0 / np.log2(ranks + 1)).sum())
    idcg = float((1.0 / np.log2(np.arange(1, min(len(rel), k) + 1) + 1)).sum())
    out[f"ndcg@{k}"] = dcg / idcg
  first = np.nonzero(hit)[0]
  out["mrr"] = float(1.0 / (first[0] + 1)) if len(first) else 0.0
  return out


def ranking_metrics(
    ranked_rows: Sequence[Sequence[int]],
    relevant_rows: Sequence[Collection[int]],
    ks: Sequence[int] = (1, 5, 10, 20),
) -> dict[str, float]:
  """Averages `query_metrics` over queries; returns keys like 'hits@10', 'ndcg@10', 'mrr'."""
  if len(ranked_rows) != len(relevant_rows):
    raise ValueError(f"{len(ranked_rows)} ranked lists but {len(relevant_rows)} relevant sets")
  if not len(ranked_rows):
    raise ValueError("no queries to evaluate")
  per_query = [query_metrics(r, rel, ks) for r, rel in zip(ranked_rows, relevant_rows)]
  out = {key: float(np.mean([q[key] for q in per_query])) for key in per_query[0]}
  out["num_queries"] = len(per_query)
  return out
