"""Metric values on hand-made cases."""

import math

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
