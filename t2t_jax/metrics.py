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

MAP@K divides by min(|relevant|, K) (the usual recommender AP@K: a perfect top K scores 1 even when
more than K items are relevant).  ranx and trec_eval divide by |relevant|, so theirs = ours *
min(|relevant|, K) / |relevant| (equal whenever |relevant| <= K); tests/test_metrics.py checks both
conventions against ranx.

Artist level (the paper's: "a hit when a recommended track's artist is among the relevant tracks'
artists"), keys prefixed "artist_": after the track-level dedup above, each ranked position holds the
artist of its track; the relevant set is the distinct artists of the relevant tracks.  A position is
relevant when its artist is relevant and not already credited at an earlier position (a second
track by the same artist takes a slot but earns nothing), so
- artist_hits@K   = 1 if any top-K track is by a relevant artist;
- artist_recall@K = distinct relevant artists in the top K / distinct relevant artists;
- artist_map@K    = (sum over positions i <= K that credit a new relevant artist of
                    (artists credited in the top i) / i) / min(distinct relevant artists, K);
- artist_ndcg@K, artist_mrr likewise on those per-position gains.
"""

from typing import Collection, Hashable, Sequence

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


def artist_query_metrics(ranked: Sequence[int], relevant: Collection[int], artist_of_row: Sequence[Hashable],
                         ks: Sequence[int]) -> dict[str, float]:
  """Artist-level metrics of one query (module docstring), keys prefixed "artist_"."""
  rel_artists = {artist_of_row[int(r)] for r in relevant}
  if not rel_artists:
    raise ValueError("a query needs at least one relevant item")
  # Per position: the artist's index among the relevant artists when credited first here, else a
  # unique non-relevant placeholder (len + position), so query_metrics' dedup keeps the slot.
  code = {a: i for i, a in enumerate(rel_artists)}
  credited, seq = set(), []
  for pos, r in enumerate(_dedup(ranked)):
    a = artist_of_row[r]
    if a in code and a not in credited:
      credited.add(a)
      seq.append(code[a])
    else:
      seq.append(len(code) + pos)
  m = query_metrics(seq, range(len(code)), ks)
  return {f"artist_{key}": v for key, v in m.items()}


def per_query_metrics(
    ranked_rows: Sequence[Sequence[int]],
    relevant_rows: Sequence[Collection[int]],
    ks: Sequence[int] = (1, 5, 10, 20),
    *,
    artist_of_row: Sequence[Hashable] | None = None,
) -> dict[str, np.ndarray]:
  """Every metric as a float64 vector [Q] over queries (in order): paired tests need the pairs."""
  if len(ranked_rows) != len(relevant_rows):
    raise ValueError(f"{len(ranked_rows)} ranked lists but {len(relevant_rows)} relevant sets")
  if not len(ranked_rows):
    raise ValueError("no queries to evaluate")
  per_query = []
  for r, rel in zip(ranked_rows, relevant_rows):
    q = query_metrics(r, rel, ks)
    if artist_of_row is not None:
      q.update(artist_query_metrics(r, rel, artist_of_row, ks))
    per_query.append(q)
  return {key: np.array([q[key] for q in per_query], np.float64) for key in per_query[0]}


def ranking_metrics(
    ranked_rows: Sequence[Sequence[int]],
    relevant_rows: Sequence[Collection[int]],
    ks: Sequence[int] = (1, 5, 10, 20),
    *,
    artist_of_row: Sequence[Hashable] | None = None,
    per_query: bool = False,
) -> dict:
  """Averages over queries; returns keys like 'hits@10', 'ndcg@10', 'mrr', 'num_queries'.

  With `artist_of_row` (the artist of every catalog row) also 'artist_hits@10', 'artist_map@10', ...;
  with `per_query=True` also 'per_query': {metric: float64 [Q]} (see `per_query_metrics`).
  """
  vectors = per_query_metrics(ranked_rows, relevant_rows, ks, artist_of_row=artist_of_row)
  out: dict = {key: float(v.mean()) for key, v in vectors.items()}
  out["num_queries"] = len(ranked_rows)
  if per_query:
    out["per_query"] = vectors
  return out
