"""Paired bootstrap and fold/seed spread on inputs whose answers are known exactly."""

import numpy as np
import pytest

from t2t_jax import stats


def test_identical_methods_give_zero_difference_and_p_one():
  a = np.array([1.0, 0.0, 0.5, 1.0, 0.0])
  out = stats.paired_bootstrap(a, a, num_samples=500, seed=3)
  assert out == {"mean_diff": 0.0, "low": 0.0, "high": 0.0, "p_value": 1.0, "num_queries": 5,
                 "num_samples": 500, "ci": 0.95}


def test_constant_difference_has_a_point_interval_and_smallest_p():
  # a - b = 0.5 on every query: every resample has mean 0.5; none is as far from it as 0.
  a = np.array([1.0, 0.75, 0.5, 0.5])
  out = stats.paired_bootstrap(a, a - 0.5, num_samples=999, seed=0)
  assert out["mean_diff"] == 0.5 and out["low"] == 0.5 and out["high"] == 0.5
  assert out["p_value"] == pytest.approx(1 / 1000)
  # Negative direction: same interval, mirrored.
  neg = stats.paired_bootstrap(a - 0.5, a, num_samples=999)
  assert (neg["mean_diff"], neg["low"], neg["high"]) == (-0.5, -0.5, -0.5)


def test_two_query_distribution_is_the_binomial_one():
  # d = [1, 0]: resample means are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4, so the 95% interval
  # is [0, 1] and the p-value (|m - 0.5| >= 0.5, i.e. m in {0, 1}) is about 1/2.
  out = stats.paired_bootstrap([1.0, 0.0], [0.0, 0.0], num_samples=20000, seed=1)
  assert out["mean_diff"] == 0.5 and out["low"] == 0.0 and out["high"] == 1.0
  assert out["p_value"] == pytest.approx(0.5, abs=0.02)
  narrow = stats.paired_bootstrap([1.0, 0.0], [0.0, 0.0], num_samples=20000, seed=1, ci=0.4)
  assert narrow["low"] == 0.5 and narrow["high"] == 0.5  # the middle 40% is all 0.5


def test_interval_matches_normal_theory_and_is_seeded():
  rng = np.random.default_rng(0)
  a = rng.random(400)
  b = a - 0.1 + rng.normal(0, 0.3, 400)
  out = stats.paired_bootstrap(a, b, num_samples=4000, seed=7)
  d = a - b
  se = d.std() / np.sqrt(d.size)
  assert out["mean_diff"] == pytest.approx(d.mean())
  assert out["low"] == pytest.approx(d.mean() - 1.96 * se, abs=0.15 * se + 1e-3)
  assert out["high"] == pytest.approx(d.mean() + 1.96 * se, abs=0.15 * se + 1e-3)
  assert out == stats.paired_bootstrap(a, b, num_samples=4000, seed=7)
  assert out != stats.paired_bootstrap(a, b, num_samples=4000, seed=8)


def test_groups_resample_within_folds():
  # Fold 0: d = 1 on three queries; fold 1: d = 0 on one. Within-fold resampling cannot change
  # either fold, so the interval is the point 0.75; pooled resampling varies.
  a, b = [1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]
  strat = stats.paired_bootstrap(a, b, groups=[0, 0, 0, 1], num_samples=2000)
  assert strat["mean_diff"] == 0.75 and strat["low"] == 0.75 and strat["high"] == 0.75
  assert strat["p_value"] == pytest.approx(1 / 2001)
  pooled = stats.paired_bootstrap(a, b, num_samples=2000)
  assert pooled["low"] == 0.25 and pooled["high"] == 1.0


def test_chunked_resampling_equals_one_chunk(monkeypatch):
  # One stratum: numpy draws the same index stream whether it comes in one chunk or in many.
  rng = np.random.default_rng(2)
  a, b = rng.random(50), rng.random(50)
  whole = stats.paired_bootstrap(a, b, num_samples=300, seed=4)
  monkeypatch.setattr(stats, "_CHUNK_ELEMENTS", 50 * 7)  # 7 samples per chunk, the last one short
  assert stats.paired_bootstrap(a, b, num_samples=300, seed=4) == whole


def test_bad_inputs():
  with pytest.raises(ValueError, match="equal length"):
    stats.paired_bootstrap([1.0, 0.0], [1.0])
  with pytest.raises(ValueError, match="no queries"):
    stats.paired_bootstrap([], [])
  with pytest.raises(ValueError, match="non-finite"):
    stats.paired_bootstrap([np.nan], [0.0])
  with pytest.raises(ValueError, match="ci"):
    stats.paired_bootstrap([1.0], [0.0], ci=1.0)
  with pytest.raises(ValueError, match="groups"):
    stats.paired_bootstrap([1.0, 0.0], [0.0, 0.0], groups=[0])


def test_mean_and_spread():
  out = stats.mean_and_spread([0.2, 0.4, 0.6])
  assert out["mean"] == pytest.approx(0.4) and out["std"] == pytest.approx(0.2)  # sample std (ddof=1)
  assert out["min"] == 0.2 and out["max"] == 0.6 and out["n"] == 3
  assert stats.mean_and_spread([0.5]) == {"mean": 0.5, "std": None, "min": 0.5, "max": 0.5, "n": 1}
  with pytest.raises(ValueError):
    stats.mean_and_spread([])
