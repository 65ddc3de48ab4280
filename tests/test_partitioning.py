"""Partitioning tests on 8 fake CPU devices: every mesh gives the one-device loss and gradients."""

import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from t2t_jax.training import losses, partitioning, train_state, trainer
from t2t_jax.training.optimizers import OptimizerConfig
from t2t_jax.errors import UserInputError
from t2t_jax.models import t5
from t2t_jax.train import copy_task_batches

CFG = t5.T5Config.micro(num_encoder_layers=1, num_decoder_layers=1)  # small graphs compile fast
LENGTHS = {"inputs": 10, "targets": 5}
BATCH = 16


def _batch():
  return next(copy_task_batches(task_feature_lengths=LENGTHS, batch_size=BATCH, seed=3,
                                num_examples=64))


@pytest.fixture(scope="module")
def params_np():
  return jax.tree.map(np.asarray, nn.unbox(t5.init_params(CFG, jax.random.PRNGKey(0))))


def _loss_and_grads(partitioner, params_np, batch, cfg=CFG):
  model = t5.Transformer(cfg)
  loss_fn = losses.make_loss_fn(model, losses.LossConfig(z_loss=1e-4))
  boxed = jax.eval_shape(lambda: t5.init_params(cfg, jax.random.PRNGKey(0)))
  shardings = partitioner.shardings_of(boxed)
  params = jax.tree.map(jax.device_put, params_np, shardings)
  gbatch = partitioner.shard_batch(batch, BATCH)

  def f(p, b):
    (obj, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(
        p, b, jax.random.PRNGKey(0), losses.normalizer_of(b, "NUM_REAL_TARGET_TOKENS"), False)
    return obj, g

  with partitioner.activation_context():
    obj, grads = jax.jit(f, out_shardings=(partitioner.replicated, shardings))(params, gbatch)
  return float(obj), grads


ONE_DEVICE = dict(num_partitions=1, devices=1)
MESHES = [
    dict(num_partitions=1),  # 8x1
    dict(num_partitions=2),  # 4x2
    dict(num_partitions=4),  # 2x4
    dict(num_partitions=1, fsdp=True),  # FSDP over 8
]
SLOW_MESHES = [
    dict(num_partitions=2, fsdp=True),  # FSDP 4 x model 2
    dict(num_partitions=2, num_replicas=2),  # replica 2 x data 2 x model 2
]


def _partitioner(spec):
  spec = dict(spec)
  n = spec.pop("devices", None)
  return partitioning.Partitioner(devices=jax.devices()[:n] if n else None, **spec)


@pytest.fixture(scope="module")
def reference(params_np):
  return _loss_and_grads(_partitioner(ONE_DEVICE), params_np, _batch())


def _check_meshes(specs, params_np, reference, cfg=CFG):
  batch = _batch()
  ref_loss, ref_grads = reference
  assert 4.0 < ref_loss < 6.0  # ~log(128) at init
  for spec in specs:
    part = _partitioner(spec)
    loss, grads = _loss_and_grads(part, params_np, batch, cfg)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, err_msg=str(spec))
    for (path, g), r in zip(jax.tree_util.tree_flatten_with_path(grads)[0],
                            jax.tree.leaves(ref_grads)):
      np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=2e-5, rtol=1e-4,
                                 err_msg=f"{spec} {jax.tree_util.keystr(path)}")


def test_meshes_8x1_4x2_2x4_and_fsdp_match_one_device(params_np, reference):
  _check_meshes(MESHES, params_np, reference)


@pytest.mark.slow
def test_more_meshes_match_one_device(params_np, reference):
  _check_meshes(SLOW_MESHES, params_np, reference)


@pytest.mark.slow
def test_all_model_parallel_matches_one_device_when_the_heads_divide():
  cfg = CFG.replace(num_heads=8, head_dim=4)  # 8 heads over 8-way model parallelism
  params = jax.tree.map(np.asarray, nn.unbox(t5.init_params(cfg, jax.random.PRNGKey(0))))
  reference = _loss_and_grads(_partitioner(ONE_DEVICE), params, _batch(), cfg)
  _check_meshes([dict(num_partitions=8)], params, reference, cfg)


def test_a_split_that_does_not_divide_a_parameter_is_named():
  # CFG has 4 heads: 8-way model parallelism cannot split them (jax would raise IndivisibleError later).
  boxed = jax.eval_shape(lambda: t5.init_params(CFG, jax.random.PRNGKey(0)))
  with pytest.raises(UserInputError, match=r"of shape \(4, 32\): its axis 0 \('heads', 4\) would be split 8 ways"):
    _partitioner(dict(num_partitions=8)).shardings_of(boxed)


def test_parameters_are_sharded_as_the_rules_say():
  boxed = jax.eval_shape(lambda: t5.init_params(CFG, jax.random.PRNGKey(0)))
  part = partitioning.Partitioner(num_partitions=2)
  sh = part.shardings_of(boxed)
  assert part.mesh.shape == {"data": 4, "model": 2}
  assert sh["encoder"]["layers_0"]["attention"]["query"]["kernel"].spec == P(None, "model")
  assert sh["encoder"]["layers_0"]["mlp"]["wo"]["kernel"].spec == P("model", None)
  assert sh["token_embedder"]["embedding"].spec == P("model", None)
  fsdp = partitioning.Partitioner(num_partitions=2, fsdp=True)
  sh = fsdp.shardings_of(boxed)
  assert sh["encoder"]["layers_0"]["attention"]["query"]["kernel"].spec == P("data", "model")
  assert sh["token_embedder"]["embedding"].spec == P("model", "data")
  assert sh["encoder"]["encoder_norm"]["scale"].spec == P("data")
  rep = partitioning.Partitioner(num_partitions=2, num_replicas=2)
  assert rep.mesh.axis_names == ("replica", "data", "model")
  assert rep.data_sharding(2).spec == P(("replica", "data"), None)
  assert rep.data_parallel_size == 4


@pytest.mark.slow
def test_train_steps_match_across_meshes_with_fsdp_and_microbatches(params_np):
  """Two full optimizer steps (Adafactor, 2 microbatches): same params on 1 device and on 2x4 FSDP."""
  batch = _batch()
  feature_shapes = {k: (v.shape, v.dtype) for k, v in batch.items()}
  results = []
  for spec in (ONE_DEVICE, dict(num_partitions=4, fsdp=True)):
    part = _partitioner(spec)
    tr = trainer.build(CFG, partitioner=part, batch_size=BATCH, feature_shapes=feature_shapes,
                       optimizer=OptimizerConfig(learning_rate=1e-2), num_microbatches=2)
    state = tr.init_fn(0, params_np)
    for _ in range(2):
      state, metrics = tr.step_fn(state, part.shard_batch(batch, BATCH))
    results.append((jax.tree.map(np.asarray, state.params), jax.device_get(metrics)))
  (p0, m0), (p1, m1) = results
  np.testing.assert_allclose(m0["loss"], m1["loss"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(p0), jax.tree.leaves(p1)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


def test_mesh_errors_name_the_problem():
  with pytest.raises(UserInputError, match="num_partitions=3 does not divide the 8 devices"):
    partitioning.Partitioner(num_partitions=3)
  with pytest.raises(UserInputError, match="num_replicas=3"):
    partitioning.Partitioner(num_replicas=3)
  one = partitioning.Partitioner(devices=jax.devices()[:1])
  assert one.mesh.shape == {"data": 1, "model": 1} and one.host_shard() == (0, 1)


def test_mesh_fallback_on_accelerators_warns_with_the_reason(caplog):
  """CPU meshes are a plain reshape; accelerator devices that mesh_utils cannot lay out on the
  topology fall back to it with a warning that says why (never silently)."""
  import logging
  import types
  fake = [types.SimpleNamespace(platform="gpu", id=i, process_index=0) for i in range(4)]
  with caplog.at_level(logging.WARNING, logger="t2t_jax.training.partitioning"):
    grid = partitioning._topology_grid(fake, 2, 2)  # pylint: disable=protected-access
  assert grid.shape == (2, 2) and [d.id for d in grid.ravel()] == [0, 1, 2, 3]
  assert "ignores the physical topology" in caplog.text and "create_device_mesh failed" in caplog.text
  caplog.clear()
  with caplog.at_level(logging.WARNING, logger="t2t_jax.training.partitioning"):
    partitioning._topology_grid(jax.devices()[:4], 2, 2)  # pylint: disable=protected-access
  assert caplog.text == ""
