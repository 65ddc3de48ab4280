"""Tests for t2t_jax.ids.cold_start: exact filled vectors per method, determinism, counts."""

import numpy as np
import pytest

from t2t_jax.errors import UserInputError
from t2t_jax.ids import cold_start


def _cf():
  cf = np.array([[1, 0], [0, 1], [9, 9], [9, 9], [-1, 0]], np.float32)  # rows 2, 3 cold (values ignored)
  cold = np.array([False, False, True, True, False])
  return cf, cold


def test_artist_then_text_knn_values():
  cf, cold = _cf()
  text = np.array([[1, 0], [0, 1], [0, 0], [0.6, 0.8], [0, -1]], np.float32)
  out, info = cold_start.fill_cold_start(cf, cold, artists=["A", "A", "A", "B", "C"], text_NxE=text, k=2)
  # Row 2: mean of artist A's warm rows (1,0), (0,1) -> (0.5, 0.5), rescaled to their mean norm 1.
  np.testing.assert_allclose(out[2], [np.sqrt(0.5), np.sqrt(0.5)], rtol=1e-6)
  # Row 3 (artist B has no warm track): 2 nearest warm rows by cosine, rows 1 (0.8) and 0 (0.6):
  # weights 4/7, 3/7 -> (3/7, 4/7), rescaled to norm 1 -> (0.6, 0.8).
  np.testing.assert_allclose(out[3], [0.6, 0.8], rtol=1e-6)
  np.testing.assert_array_equal(out[[0, 1, 4]], cf[[0, 1, 4]])  # warm rows unchanged
  assert info == {"num_cold": 2, "by_artist": 1, "by_text_knn": 1, "fallback": 0}
  # Text first: every cold row has a text, so the artist is never used.
  out2, info2 = cold_start.fill_cold_start(cf, cold, artists=["A", "A", "A", "B", "C"], text_NxE=text, k=2,
                                           order=("text_knn", "artist"))
  assert info2 == {"num_cold": 2, "by_artist": 0, "by_text_knn": 2, "fallback": 0}
  np.testing.assert_allclose(out2[3], [0.6, 0.8], rtol=1e-6)


def test_negative_similarities_and_cancelling_artist_vectors():
  cf = np.array([[1, 0], [-1, 0], [0, 0], [0, 2]], np.float32)
  cold = np.array([False, False, True, False])
  text = np.array([[1, 0], [1, 0], [-1, 0], [0, 1]], np.float32)
  # Artist A's warm vectors cancel: left to the text step; cosine weights are all <= 0 -> uniform over
  # the k=3 neighbours: mean (0, 2/3), rescaled to their mean norm 4/3 -> (0, 4/3).
  out, info = cold_start.fill_cold_start(cf, cold, artists=["A", "A", "A", "B"], text_NxE=text, k=3)
  np.testing.assert_allclose(out[2], [0, 4 / 3], rtol=1e-6)
  assert info["by_artist"] == 0 and info["by_text_knn"] == 1


def test_fallback_is_deterministic_and_counted():
  cf, cold = _cf()
  a, info = cold_start.fill_cold_start(cf, cold)
  b, _ = cold_start.fill_cold_start(cf, cold)
  np.testing.assert_array_equal(a, b)
  assert info == {"num_cold": 2, "by_artist": 0, "by_text_knn": 0, "fallback": 2}
  mean = cf[[0, 1, 4]].mean(0)
  assert np.abs(a[2:4] - mean).max() < 0.05 and not np.array_equal(a[2], a[3])  # jitter: 1% of norm
  c, _ = cold_start.fill_cold_start(cf, cold, seed=1)
  assert not np.array_equal(a[2], c[2])


def test_no_cold_and_bad_input():
  cf, cold = _cf()
  out, info = cold_start.fill_cold_start(cf, np.zeros(5, bool))
  np.testing.assert_array_equal(out, cf)
  assert info["num_cold"] == 0
  with pytest.raises(UserInputError, match="every track is cold"):
    cold_start.fill_cold_start(cf, np.ones(5, bool))
  with pytest.raises(UserInputError, match="3 artists for 5 tracks"):
    cold_start.fill_cold_start(cf, cold, artists=["a", "b", "c"])
  with pytest.raises(UserInputError, match="order must name"):
    cold_start.fill_cold_start(cf, cold, order=("artist", "album"))
  with pytest.raises(UserInputError, match="do not match"):
    cold_start.fill_cold_start(cf, cold[:3])
