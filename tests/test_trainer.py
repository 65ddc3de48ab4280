"""Tests for t2t_jax.training.trainer: training the copy task, checkpoints, resume without replay, bad batches."""

import os

import jax
import numpy as np
import pytest

from t2t_jax.training import checkpoints, partitioning, summaries, train_state, trainer
from t2t_jax.errors import UserInputError
from t2t_jax.models import t5
from t2t_jax.training.optimizers import OptimizerConfig
from t2t_jax.train import copy_task_batches

MICRO = t5.T5Config.micro()
LENGTHS = {"inputs": 10, "targets": 5}


def _batches(batch_size=8, seed=0, **kw):
  return copy_task_batches(task_feature_lengths=LENGTHS, batch_size=batch_size, seed=seed,
                           num_examples=512, **kw)


def _config(**kw):
  kw.setdefault("progress", False)
  return trainer.TrainConfig(**kw)


@pytest.mark.parametrize("optimizer", ["adafactor", "adamw"])
def test_train_learns_copy_task_and_checkpoints(tmp_path, optimizer):
  result = trainer.train(model=MICRO, train_iter=_batches(), model_dir=str(tmp_path),
                         config=_config(train_steps=40, batch_size=8, log_period=10),
                         optimizer=OptimizerConfig(optimizer=optimizer, learning_rate=1e-2),
                         checkpoint=trainer.CheckpointConfig(period=20))
  losses = [h["loss"] for h in result.history]
  assert len(losses) == 40 and [h["step"] for h in result.history] == list(range(1, 41))
  assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3, losses
  config, params = checkpoints.load_params(str(tmp_path))
  assert config == MICRO
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(result.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  rows = summaries.read_metrics(str(tmp_path), "train")
  assert [r["step"] for r in rows] == [10, 20, 30, 40]
  np.testing.assert_allclose(rows[-1]["loss"], np.mean(losses[30:]), rtol=1e-5)
  assert sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit()) == [20, 40]


class CountingIterator:
  """Wraps a checkpointable iterator and counts the batches drawn (get/set_state pass through)."""

  def __init__(self, it):
    self.it, self.drawn = it, 0

  def __iter__(self):
    return self

  def __next__(self):
    self.drawn += 1
    return next(self.it)

  def get_state(self):
    return self.it.get_state()

  def set_state(self, state):
    self.it.set_state(state)


def test_resume_restores_the_data_position_without_replay(tmp_path):
  kw = dict(model=MICRO, model_dir=str(tmp_path),
            optimizer=OptimizerConfig(learning_rate=1e-2),
            checkpoint=trainer.CheckpointConfig(period=4, async_save=False))
  spec = train_state.batch_spec(LENGTHS, batch_size=8)
  full = trainer.train(train_iter=_batches(), config=_config(train_steps=12, batch_size=8),
                       model_dir=str(tmp_path / "full"),
                       **{k: v for k, v in kw.items() if k != "model_dir"})
  first = trainer.train(train_iter=_batches(), config=_config(train_steps=8, batch_size=8), **kw)
  assert first.step == 8
  it = CountingIterator(_batches())
  second = trainer.train(train_iter=it, config=_config(train_steps=12, batch_size=8),
                         feature_spec=spec, **kw)
  assert it.drawn == 4  # steps 9..12: nothing replayed, no batch drawn to learn shapes
  assert [h["step"] for h in second.history] == [9, 10, 11, 12]
  want = {h["step"]: h["loss"] for h in full.history}
  assert all(h["loss"] == want[h["step"]] for h in first.history + second.history)
  for a, b in zip(jax.tree.leaves(second.params), jax.tree.leaves(full.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_batch_fails_with_a_clear_message(tmp_path):
  small = MICRO.replace(vocab_size=50)
  with pytest.raises(UserInputError, match="token id .* >= the model's input vocabulary size 50"):
    trainer.train(model=small, train_iter=_batches(), model_dir=str(tmp_path),
                  config=_config(train_steps=2, batch_size=8))
  with pytest.raises(UserInputError, match=r"expected 16 \(the per-host batch 16"):
    trainer.train(model=MICRO, train_iter=_batches(), model_dir=str(tmp_path),
                  config=_config(train_steps=2, batch_size=16))
  with pytest.raises(UserInputError, match="multiple of data-parallel devices"):
    trainer.train(model=MICRO, train_iter=_batches(batch_size=6), model_dir=str(tmp_path),
                  config=_config(train_steps=2, batch_size=6), partitioner=partitioning.Partitioner())
  spec = train_state.batch_spec({"inputs": 12, "targets": 5}, batch_size=8)
  with pytest.raises(UserInputError, match="encoder_input_tokens' has shape \\(8, 10\\); expected \\[8, 12\\]"):
    trainer.train(model=MICRO, train_iter=_batches(), model_dir=str(tmp_path),
                  config=_config(train_steps=2, batch_size=8), feature_spec=spec)


@pytest.mark.parametrize("kwargs, match", [
    (dict(train_steps="ten", batch_size=8), "TRAIN_STEPS must be an integer >= 0, got 'ten'"),
    (dict(train_steps=5, batch_size=0), "BATCH_SIZE must be an integer >= 1, got 0"),
    (dict(train_steps=5, batch_size=8, eval_period=0), "EVAL_PERIOD"),
    (dict(train_steps=5, batch_size=8, seed=-1), "RANDOM_SEED"),
])
def test_bad_train_config(kwargs, match):
  with pytest.raises(UserInputError, match=match):
    trainer.TrainConfig(**kwargs)
  assert trainer.TrainConfig(train_steps=1, batch_size=1, num_microbatches=None).num_microbatches == 1


def test_multi_target_step_equals_repeating_each_prompt():
  """A multi-target batch (G prompts x T targets) takes the same training step as the batch with
  every prompt repeated T times, sharded over 8 devices and split into 2 microbatches."""
  rng = np.random.default_rng(0)
  g, t = 16, 2
  enc = rng.integers(3, 128, (g, LENGTHS["inputs"])).astype(np.int32)
  tgt = rng.integers(3, 128, (g * t, LENGTHS["targets"])).astype(np.int32)
  tgt[::3, 2:] = 0  # some shorter targets
  dec_in = np.zeros_like(tgt)
  dec_in[:, 1:] = tgt[:, :-1]
  grouped = {"encoder_input_tokens": enc, "decoder_input_tokens": dec_in,
             "decoder_target_tokens": tgt, "decoder_loss_weights": (tgt > 0).astype(np.int32)}
  repeated = dict(grouped, encoder_input_tokens=np.repeat(enc, t, axis=0))
  part = partitioning.Partitioner()
  out = []
  for batch in (grouped, repeated):
    compiled = train_state.build(MICRO, partitioner=part, batch_size=g * t,
                                 feature_shapes=train_state.spec_of(batch), num_microbatches=2)
    state = compiled.init_fn(0)
    state, metrics = compiled.step_fn(state, part.shard_batch(batch, g * t))
    out.append((jax.device_get(state.params), float(metrics["loss"])))
  np.testing.assert_allclose(out[0][1], out[1][1], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(out[0][0]), jax.tree.leaves(out[1][0])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  assert train_state.targets_per_prompt_of(grouped) == 2
  spec = train_state.batch_spec(LENGTHS, batch_size=16, targets_per_prompt=4)
  assert spec["encoder_input_tokens"][0] == (4, 10) and spec["decoder_target_tokens"][0] == (16, 5)
  with pytest.raises(UserInputError, match="multiple of TARGETS_PER_PROMPT"):
    train_state.batch_spec(LENGTHS, batch_size=10, targets_per_prompt=4)
