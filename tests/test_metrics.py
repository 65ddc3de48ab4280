"""Metric values on hand-made cases, the artist level, and parity with trec_eval and ranx on random runs."""

import math

import numpy as np
import pytest

from t2t_jax import metrics


def test_perfect_ranking():
  m = metrics.ranking_metrics([[1, 2, 3]], [{1, 2, 3}], ks=(3,))
  assert m["hits@3"] == 1.0
  assert m["recall@3"] == 1.0
  assert m["map@3"] == pytest.approx(1.0)
  assert m["ndcg@3"] == pytest.approx(1.0)
  assert m["mrr"] == 1.0


def test_hand_computed_values():
  # Relevant {7, 9}; ranked [5, 7, 8, 9]: hits at ranks 2 and 4.
  m = metrics.query_metrics([5, 7, 8, 9], {7, 9}, ks=(1, 2, 4))
  assert m["hits@1"] == 0.0 and m["hits@2"] == 1.0
  assert m["recall@2"] == 0.5 and m["recall@4"] == 1.0
  assert m["map@4"] == pytest.approx((1 / 2 + 2 / 4) / 2)
  assert m["map@2"] == pytest.approx((1 / 2) / 2)
  dcg = 1 / math.log2(3) + 1 / math.log2(5)
  idcg = 1 + 1 / math.log2(3)
  assert m["ndcg@4"] == pytest.approx(dcg / idcg)
  assert m["mrr"] == pytest.approx(0.5)


def test_duplicates_and_padding_do_not_count():
  # A repeated hit must not count twice; -1 is padding.
  m = metrics.query_metrics([7, 7, 7, -1], {7, 9}, ks=(3,))
  assert m["recall@3"] == 0.5
  assert m["map@3"] == pytest.approx(0.5)
  # After dedup, 9 is at rank 2.
  m2 = metrics.query_metrics([7, 7, 9], {7, 9}, ks=(2,))
  assert m2["recall@2"] == 1.0


def test_average_over_queries_and_miss():
  m = metrics.ranking_metrics([[1], [2]], [{1}, {3}], ks=(1,))
  assert m["hits@1"] == 0.5
  assert m["mrr"] == 0.5
  assert m["num_queries"] == 2


def test_errors():
  with pytest.raises(ValueError):
    metrics.ranking_metrics([[1]], [set()])
  with pytest.raises(ValueError):
    metrics.ranking_metrics([[1]], [{1}, {2}])


def test_per_query_vectors_pair_queries_in_order():
  m = metrics.ranking_metrics([[1], [2], [3, 4]], [{1}, {3}, {4}], ks=(1, 2), per_query=True)
  np.testing.assert_array_equal(m["per_query"]["hits@1"], [1.0, 0.0, 0.0])
  np.testing.assert_array_equal(m["per_query"]["mrr"], [1.0, 0.0, 0.5])
  assert m["per_query"]["hits@2"].dtype == np.float64
  assert m["hits@2"] == pytest.approx(2 / 3) and m["num_queries"] == 3
  assert "per_query" not in metrics.ranking_metrics([[1]], [{1}], ks=(1,))


def test_artist_level_hand_computed():
  artist = ["A", "A", "B", "C", "D"]  # artist of catalog rows 0..4
  # Relevant tracks 0 (A) and 3 (C); ranked 1 (A: credited), 0 (A again: no credit), 2 (B), 3 (C).
  m = metrics.ranking_metrics([[1, 0, 2, 3]], [{0, 3}], ks=(1, 4), artist_of_row=artist)
  assert m["hits@1"] == 0.0 and m["artist_hits@1"] == 1.0  # track 1 is wrong, its artist is right
  assert m["map@4"] == pytest.approx((1 / 2 + 2 / 4) / 2)
  assert m["artist_map@4"] == pytest.approx((1 / 1 + 2 / 4) / 2)
  assert m["artist_recall@1"] == 0.5 and m["artist_recall@4"] == 1.0
  assert m["artist_ndcg@4"] == pytest.approx((1 + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))
  assert m["artist_mrr"] == 1.0
  # Track-level dedup and -1 padding come first: [1, 1, -1, 3] -> [1 (A), 3 (C)].
  m = metrics.ranking_metrics([[1, 1, -1, 3]], [{0, 3}], ks=(2,), artist_of_row=artist)
  assert m["artist_map@2"] == 1.0 and m["map@2"] == pytest.approx(0.5 / 2)
  # One relevant artist with several relevant tracks: only its first track in the list earns credit.
  m = metrics.ranking_metrics([[2, 0, 1]], [{0, 1}], ks=(3,), artist_of_row=artist)
  assert m["artist_map@3"] == pytest.approx(1 / 2) and m["artist_recall@3"] == 1.0
  assert m["artist_mrr"] == 0.5 and m["recall@3"] == 1.0


def test_artist_level_equals_track_level_when_every_artist_has_one_track():
  rng = np.random.default_rng(3)
  ranked = [list(rng.permutation(30)[:12]) for _ in range(20)]
  relevant = [set(rng.choice(30, rng.integers(1, 8), replace=False).tolist()) for _ in range(20)]
  m = metrics.ranking_metrics(ranked, relevant, ks=(1, 5, 10), artist_of_row=[f"a{i}" for i in range(30)])
  for key in ("hits@10", "recall@5", "map@10", "ndcg@10", "mrr"):
    assert m[f"artist_{key}"] == pytest.approx(m[key])


def _random_runs(seed, num_queries=40, num_items=60, list_len=30):
  """Ranked lists of distinct items (strictly decreasing scores, so no ties) and relevant sets of 1
  to 25 items (more than K for some queries, so the MAP@K conventions differ there)."""
  rng = np.random.default_rng(seed)
  ranked = [rng.permutation(num_items)[:list_len].tolist() for _ in range(num_queries)]
  relevant = [set(rng.choice(num_items, rng.integers(1, 26), replace=False).tolist()) for _ in range(num_queries)]
  return ranked, relevant


def _check_parity(ours, theirs, relevant, ks):
  """theirs: {f"{metric}@{k}": [Q]} in the library's MAP convention (divided by |relevant|)."""
  num_rel = np.array([len(r) for r in relevant], np.float64)
  assert (num_rel > 10).any() and (num_rel <= 10).any()
  for k in ks:
    for key in (f"hits@{k}", f"recall@{k}", f"ndcg@{k}"):
      np.testing.assert_allclose(ours[key], theirs[key], atol=1e-12, err_msg=key)
    # MAP@K: the libraries divide by |relevant|, we divide by min(|relevant|, K) (module docstring).
    np.testing.assert_allclose(ours[f"map@{k}"] * np.minimum(num_rel, k) / num_rel, theirs[f"map@{k}"], atol=1e-12)
    small = num_rel <= k
    np.testing.assert_allclose(ours[f"map@{k}"][small], theirs[f"map@{k}"][small], atol=1e-12)
  np.testing.assert_allclose(ours["mrr"], theirs["mrr"], atol=1e-12)


def test_equal_to_trec_eval_on_random_runs():
  pytrec_eval = pytest.importorskip("pytrec_eval")  # pip install pytrec-eval-terrier (test extra)
  ranked, relevant = _random_runs(0)
  ks = (5, 10, 20)  # trec_eval's cutoffs (success has 1, 5, 10)
  qrels = {f"q{i:03d}": {f"d{d}": 1 for d in rel} for i, rel in enumerate(relevant)}
  run = {f"q{i:03d}": {f"d{d}": float(len(r) - j) for j, d in enumerate(r)} for i, r in enumerate(ranked)}
  res = pytrec_eval.RelevanceEvaluator(qrels, {"success", "recall", "map_cut", "ndcg_cut", "recip_rank"}).evaluate(run)
  names = {"hits": "success", "recall": "recall", "map": "map_cut", "ndcg": "ndcg_cut"}
  theirs = {f"{m}@{k}": np.array([res[q][f"{t}_{k}"] for q in sorted(qrels)]) for m, t in names.items()
            for k in ks if not (m == "hits" and k == 20)}
  theirs["hits@20"] = np.array([float(any(d in rel for d in r[:20])) for r, rel in zip(ranked, relevant)])
  theirs["mrr"] = np.array([res[q]["recip_rank"] for q in sorted(qrels)])
  _check_parity(metrics.per_query_metrics(ranked, relevant, ks), theirs, relevant, ks)


@pytest.mark.slow  # ranx's numba kernels compile on first use: 15-60 s on the shared 2-core machine
def test_equal_to_ranx_on_random_runs():
  ranx = pytest.importorskip("ranx")
  ranked, relevant = _random_runs(1)
  ks = (1, 5, 10, 20)
  qid = [f"q{i:03d}" for i in range(len(ranked))]
  qrels = ranx.Qrels({q: {f"d{d}": 1 for d in rel} for q, rel in zip(qid, relevant)})
  run = ranx.Run({q: {f"d{d}": float(len(r) - j) for j, d in enumerate(r)} for q, r in zip(qid, ranked)})
  names = [f"{m}@{k}" for k in ks for m in ("hit_rate", "recall", "map", "ndcg")] + ["mrr"]
  theirs = ranx.evaluate(qrels, run, names, return_mean=False)
  theirs = {key.replace("hit_rate", "hits"): np.asarray(v) for key, v in theirs.items()}
  _check_parity(metrics.per_query_metrics(ranked, relevant, ks), theirs, relevant, ks)
