"""Tests for t2t_jax.training.losses: T5X cross entropy (label smoothing, z-loss) and the loss normalisers."""

import numpy as np
import pytest

from t2t_jax.training import losses
from t2t_jax.errors import UserInputError


def _ref_logp(logits):
  return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def test_cross_entropy_matches_reference():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 3, 7)).astype(np.float32)
  targets = rng.integers(0, 7, size=(2, 3))
  weights = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
  got = losses.cross_entropy_sums(logits, targets, weights, z_loss=1e-2)
  nll = -np.take_along_axis(_ref_logp(logits), targets[..., None], -1)[..., 0]
  log_z = np.log(np.exp(logits).sum(-1))
  np.testing.assert_allclose(got["loss_sum"], ((nll + 1e-2 * log_z ** 2) * weights).sum(), rtol=1e-5)
  np.testing.assert_allclose(got["z_loss_sum"], (1e-2 * log_z ** 2 * weights).sum(), rtol=1e-5)
  assert got["weight_sum"] == 3
  assert got["correct"] == ((logits.argmax(-1) == targets) * weights).sum()


def test_label_smoothing_matches_soft_target_cross_entropy():
  rng = np.random.default_rng(1)
  v, ls = 6, 0.1
  logits = rng.normal(size=(1, 4, v)).astype(np.float32)
  targets = rng.integers(0, v, size=(1, 4))
  got = losses.cross_entropy_sums(logits, targets, np.ones((1, 4), np.float32), label_smoothing=ls)
  soft = np.full((1, 4, v), ls / (v - 1))
  np.put_along_axis(soft, targets[..., None], 1 - ls, -1)
  const = -((1 - ls) * np.log(1 - ls) + (v - 1) * (ls / (v - 1)) * np.log(ls / (v - 1)))
  np.testing.assert_allclose(got["loss_sum"], (-(soft * _ref_logp(logits)).sum(-1) - const).sum(),
                             rtol=1e-5)
  # A perfect model has loss ~0 with smoothing (the smoothed distribution's entropy is subtracted).
  perfect = np.log(soft)
  assert abs(float(losses.cross_entropy_sums(perfect, targets, np.ones((1, 4)),
                                             label_smoothing=ls)["loss_sum"])) < 1e-4


def test_normalizers():
  batch = {"decoder_target_tokens": np.array([[1, 2, 3, 4, 0], [5, 6, 0, 0, 0]], np.int32)}
  assert float(losses.normalizer_of(batch, "NUM_REAL_TARGET_TOKENS")) == 6.0  # T5X's test values
  assert float(losses.normalizer_of(batch, "NUM_TOTAL_TARGET_TOKENS")) == 10.0
  assert float(losses.normalizer_of(batch, "AVERAGE_PER_SEQUENCE")) == pytest.approx(2.0)
  assert float(losses.normalizer_of(batch, None)) == 1.0
  assert float(losses.normalizer_of(batch, 123.0)) == 123.0
  # Per-sequence weights: each sequence sums to 1 (packed: each segment).
  np.testing.assert_allclose(losses.per_sequence_weights(batch).sum(axis=1), [1.0, 1.0], rtol=1e-6)
  packed = dict(batch, decoder_segment_ids=np.array([[1, 1, 2, 2, 0], [1, 2, 0, 0, 0]], np.int32))
  w = np.asarray(losses.per_sequence_weights(packed))
  np.testing.assert_allclose(w, [[0.5, 0.5, 0.5, 0.5, 0], [1, 1, 0, 0, 0]], rtol=1e-6)
  assert float(losses.normalizer_of(packed, "AVERAGE_PER_SEQUENCE")) == pytest.approx(4.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(loss_normalizing_factor="tokens"), "LOSS_NORMALIZING_FACTOR='tokens'"),
    (dict(loss_normalizing_factor=-1.0), "LOSS_NORMALIZING_FACTOR=-1.0"),
    (dict(label_smoothing=1.0), "LABEL_SMOOTHING"),
    (dict(z_loss="big"), "Z_LOSS"),
])
def test_bad_loss_config(kwargs, match):
  with pytest.raises(UserInputError, match=match):
    losses.LossConfig(**kwargs)
