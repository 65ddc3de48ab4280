"""Tests for t2t_jax.trainer / optimizers / summaries (tiny model, CPU)."""

import os

import jax
import numpy as np
import pytest

from t2t_jax import optimizers, partitioning, summaries, trainer
from t2t_jax.errors import UserInputError
from t2t_jax.models import t5
from t2t_jax.train import copy_task_batches

TINY = t5.T5Config.tiny()
LENGTHS = {"inputs": 10, "targets": 5}


def _batches(batch_size=8, seed=0, **kw):
  return copy_task_batches(task_feature_lengths=LENGTHS, batch_size=batch_size, seed=seed,
                           num_examples=512, **kw)


def test_cross_entropy_matches_reference():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 3, 7)).astype(np.float32)
  targets = rng.integers(0, 7, size=(2, 3))
  weights = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
  loss_sum, z_sum, correct, wsum = trainer.cross_entropy_loss(logits, targets, weights, z_loss=1e-2)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
  log_z = np.log(np.exp(logits).sum(-1))
  expect = ((nll + 1e-2 * log_z ** 2) * weights).sum()
  np.testing.assert_allclose(loss_sum, expect, rtol=1e-5)
  np.testing.assert_allclose(z_sum, (1e-2 * log_z ** 2 * weights).sum(), rtol=1e-5)
  assert wsum == 3
  assert correct == ((logits.argmax(-1) == targets) * weights).sum()


def test_label_smoothing_matches_soft_target_cross_entropy():
  rng = np.random.default_rng(1)
  v, ls = 6, 0.1
  logits = rng.normal(size=(1, 4, v)).astype(np.float32)
  targets = rng.integers(0, v, size=(1, 4))
  weights = np.ones((1, 4), np.float32)
  got, _, _, _ = trainer.cross_entropy_loss(logits, targets, weights, label_smoothing=ls)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  soft = np.full((1, 4, v), ls / (v - 1))
  np.put_along_axis(soft, targets[..., None], 1 - ls, -1)
  const = -((1 - ls) * np.log(1 - ls) + (v - 1) * (ls / (v - 1)) * np.log(ls / (v - 1)))
  expect = (-(soft * logp).sum(-1) - const).sum()
  np.testing.assert_allclose(got, expect, rtol=1e-5)


def test_schedules():
  const = optimizers.make_schedule("constant", learning_rate=0.1, warmup_steps=10)
  np.testing.assert_allclose([const(0), const(5), const(10), const(1000)], [0, 0.05, 0.1, 0.1],
                             rtol=1e-6)
  rsqrt = optimizers.make_schedule("rsqrt", learning_rate=0.01, warmup_steps=100)
  np.testing.assert_allclose([rsqrt(50), rsqrt(100), rsqrt(400)], [0.005, 0.01, 0.005], rtol=1e-6)
  cos = optimizers.make_schedule("cosine", learning_rate=1.0, warmup_steps=10, total_steps=110,
                                 final_learning_rate_fraction=0.1)
  np.testing.assert_allclose([cos(10), cos(60), cos(110), cos(500)], [1.0, 0.55, 0.1, 0.1],
                             rtol=1e-5)
  with pytest.raises(UserInputError, match="unknown learning-rate schedule 'linear'"):
    optimizers.make_schedule("linear", learning_rate=1.0)
  with pytest.raises(UserInputError, match="unknown optimizer 'sgd'"):
    optimizers.make_optimizer("sgd", schedule=const)


@pytest.mark.parametrize("optimizer", ["adafactor", "adamw"])
def test_train_learns_copy_task_and_checkpoints(tmp_path, optimizer):
  result = trainer.train(model_config=TINY, train_iter=_batches(), model_dir=str(tmp_path),
                         train_steps=40, batch_size=8, learning_rate=1e-2, optimizer=optimizer,
                         checkpoint_period=20, log_period=10, progress=False)
  losses = [h["loss"] for h in result.history]
  assert len(losses) == 40 and [h["step"] for h in result.history] == list(range(1, 41))
  assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3, losses
  config, params = trainer.load_params(str(tmp_path))
  assert config == TINY
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(result.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  rows = summaries.read_metrics(str(tmp_path), "train")
  assert [r["step"] for r in rows] == [10, 20, 30, 40]
  np.testing.assert_allclose(rows[-1]["loss"], np.mean(losses[30:]), rtol=1e-5)
  assert sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit()) == [20, 40]


def test_bad_batch_fails_before_compiling(tmp_path):
  small = TINY.replace(vocab_size=50)
  with pytest.raises(UserInputError, match="token id .* >= the model's input vocabulary size 50"):
    trainer.train(model_config=small, train_iter=_batches(), model_dir=str(tmp_path),
                  train_steps=2, batch_size=8, progress=False)
  with pytest.raises(UserInputError, match="expected the per-host batch 16"):
    trainer.train(model_config=TINY, train_iter=_batches(), model_dir=str(tmp_path),
                  train_steps=2, batch_size=16, progress=False)
  with pytest.raises(UserInputError, match="multiple of data-parallel devices"):
    trainer.train(model_config=TINY, train_iter=_batches(batch_size=6), model_dir=str(tmp_path),
                  train_steps=2, batch_size=6, progress=False,
                  partitioner=partitioning.Partitioner())
