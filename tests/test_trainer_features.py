"""Trainer features: microbatching, NaN stop, bf16, dropout, label smoothing, schedules, eval hook."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2t_jax import evaluation
from t2t_jax.training import partitioning, summaries, train_state, trainer
from t2t_jax.training.losses import LossConfig
from t2t_jax.models import t5
from t2t_jax.training.optimizers import OptimizerConfig
from t2t_jax.train import copy_task_batches

TINY = t5.T5Config.micro()
LENGTHS = {"inputs": 10, "targets": 5}


def _batches(batch_size=8, seed=0, **kw):
  return copy_task_batches(task_feature_lengths=LENGTHS, batch_size=batch_size, seed=seed,
                           num_examples=512, **kw)


def test_microbatching_gives_the_full_batch_gradient():
  cfg = TINY.replace(num_encoder_layers=1, num_decoder_layers=1)
  batch = next(_batches(batch_size=16))
  from t2t_jax import models  # pylint: disable=import-outside-toplevel
  params_np = jax.tree.map(np.asarray,
                           nn.unbox(models.build_model(cfg).init_params(jax.random.PRNGKey(0))))
  feature_shapes = train_state.spec_of(batch)
  part = partitioning.Partitioner(num_partitions=2)
  out = []
  for m in (1, 4):
    tr = trainer.build(cfg, partitioner=part, batch_size=16, feature_shapes=feature_shapes,
                       optimizer=OptimizerConfig(optimizer="adamw", learning_rate=1e-3),
                       num_microbatches=m)
    state, metrics = tr.step_fn(tr.init_fn(0, params_np), part.shard_batch(batch, 16))
    out.append((jax.device_get(metrics), jax.tree.map(np.asarray, state.params)))
  np.testing.assert_allclose(out[0][0]["loss"], out[1][0]["loss"], rtol=1e-5)
  np.testing.assert_allclose(out[0][0]["grad_norm"], out[1][0]["grad_norm"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(out[0][1]), jax.tree.leaves(out[1][1])):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_non_finite_loss_stops_naming_the_step(tmp_path):
  # AdamW moves every weight by ~lr on step 1; with lr=1e30 step 2's logits overflow.
  with pytest.raises(trainer.TrainingDivergedError, match="non-finite loss at step 2"):
    trainer.train(model=TINY.replace(num_encoder_layers=1, num_decoder_layers=1),
                  train_iter=_batches(), model_dir=str(tmp_path),
                  config=trainer.TrainConfig(train_steps=5, batch_size=8, progress=False),
                  optimizer=OptimizerConfig(optimizer="adamw", learning_rate=1e30),
                  checkpoint=trainer.CheckpointConfig(period=100))


def test_bf16_dropout_smoothing_cosine_eval_hook_and_best_checkpoint(tmp_path):
  cfg = TINY.replace(num_encoder_layers=1, num_decoder_layers=1, dtype="bfloat16",
                     param_dtype="bfloat16", dropout_rate=0.1)
  part = partitioning.Partitioner(num_partitions=2)
  eval_batches = list(copy_task_batches(task_feature_lengths=LENGTHS, batch_size=8, seed=0,
                                        split="validation", num_examples=16, num_epochs=1))
  calls = []
  loss_fn = evaluation.make_eval_loss_fn(cfg, part, eval_batches, 8)

  def eval_fn(params, step):
    calls.append(step)
    return loss_fn(params, step)

  result = trainer.train(
      model=cfg, train_iter=_batches(), model_dir=str(tmp_path),
      config=trainer.TrainConfig(train_steps=30, batch_size=8, eval_period=10, log_period=10),
      optimizer=OptimizerConfig(learning_rate=2e-2, schedule="cosine", warmup_steps=5),
      loss=LossConfig(label_smoothing=0.1), partitioner=part, eval_fn=eval_fn,
      checkpoint=trainer.CheckpointConfig(period=10, keep=1, best_metric="accuracy"))
  assert calls == [10, 20, 30]
  assert [e["step"] for e in result.eval_history] == [10, 20, 30]
  assert jax.tree.leaves(result.params)[0].dtype == jnp.bfloat16
  lrs = [h["learning_rate"] for h in result.history]
  np.testing.assert_allclose(lrs[:6], [0.0, 0.004, 0.008, 0.012, 0.016, 0.02], rtol=1e-5)
  assert lrs[-1] < lrs[10]
  losses = [h["loss"] for h in result.history]
  assert np.mean(losses[-5:]) < np.mean(losses[:5])
  best = max(result.eval_history, key=lambda e: e["accuracy"])["step"]
  kept = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
  assert kept == sorted({best, 30})
  evals = summaries.read_metrics(str(tmp_path), "eval")
  assert [r["step"] for r in evals] == [10, 20, 30]
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "train"))
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "eval"))
  assert result.examples_per_second > 0


def test_decay_to_init_keeps_training_near_the_warm_start_and_resumes_toward_it(tmp_path):
  cfg = TINY.replace(num_encoder_layers=1, num_decoder_layers=1)
  from t2t_jax import models  # pylint: disable=import-outside-toplevel
  start = jax.tree.map(np.asarray, nn.unbox(models.build_model(cfg).init_params(jax.random.PRNGKey(3))))
  part = partitioning.Partitioner(num_partitions=2)

  def run(name, steps, decay):
    return trainer.train(
        model=cfg, train_iter=_batches(), model_dir=str(tmp_path / name), init_params=start,
        config=trainer.TrainConfig(train_steps=steps, batch_size=8, progress=False, seed=0),
        optimizer=OptimizerConfig(learning_rate=1e-2, decay_to_init=decay), partitioner=part,
        checkpoint=trainer.CheckpointConfig(period=10, keep=2))

  def distance(params):
    return float(sum(np.sum((np.asarray(p, np.float32) - s) ** 2)
                     for p, s in zip(jax.tree.leaves(params), jax.tree.leaves(start))))

  free = run("free", 20, 0.0)
  pulled = run("pulled", 20, 30.0)
  assert distance(pulled.params) < 0.5 * distance(free.params)
  assert pulled.history[-1]["loss"] < pulled.history[0]["loss"]  # still learns
  # A run stopped at step 10 and resumed decays toward the warm start kept in its checkpoint (not
  # toward the restored step-10 parameters): it ends where the uninterrupted run does.
  run("resumed", 10, 30.0)
  resumed = run("resumed", 20, 30.0)
  assert resumed.step == 20
  for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(pulled.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
