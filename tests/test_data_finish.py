"""Tests for t2t_jax.data.finish: default split sizes (issue 12: 250 playlists left 12 test ones)."""

import pytest

from t2t_jax.data import finish
from t2t_jax.errors import UserInputError


def _sizes(n, **kw):
  splits, rule, warnings = finish.draw_splits([f"p{i}" for i in range(n)], finish.SplitSpec(**kw))
  return tuple(len(splits[k]) for k in ("train", "validation", "test")), rule, warnings


def test_default_rule_gives_a_useful_test_set():
  assert _sizes(250)[0] == (150, 50, 50)        # max(10%, 50) each, 60% left for training
  assert _sizes(1000)[0] == (800, 100, 100)     # 10% each
  assert _sizes(100_000)[0] == (80_000, 10_000, 10_000)
  sizes, rule, warnings = _sizes(200)           # 50 each would leave 50%: fall back to 10%
  assert sizes == (160, 20, 20) and "10% each" in rule and "only 200 playlists" in warnings[0]
  assert _sizes(250)[2] == []


def test_explicit_sizes_and_fractions():
  assert _sizes(250, test_size=100)[0] == (100, 50, 100)
  assert _sizes(250, validation_fraction=0.02, test_fraction=0.3)[0] == (170, 5, 75)
  assert _sizes(10, validation_size=0, test_size=3)[0] == (7, 0, 3)
  with pytest.raises(UserInputError, match="both given"):
    _sizes(250, test_size=10, test_fraction=0.1)
  with pytest.raises(UserInputError, match="leave none for training"):
    _sizes(250, validation_size=125, test_size=125)
  with pytest.raises(UserInputError, match="--test_fraction must be in"):
    _sizes(250, test_fraction=1.5)


def test_deterministic_and_disjoint():
  a, _, _ = finish.draw_splits([f"p{i}" for i in range(300)], finish.SplitSpec(seed=4))
  b, _, _ = finish.draw_splits([f"p{i}" for i in reversed(range(300))], finish.SplitSpec(seed=4))
  assert a == b
  assert not (set(a["train"]) & set(a["test"]) or set(a["validation"]) & set(a["test"]))
