"""The train state and the jitted train step, compiled ahead of time for a mesh.

  TrainState       step, params, opt_state, rng (what a checkpoint holds)
  make_train_step  the pure `train_step(state, batch) -> (state, metrics)` (gradient accumulation
                   over microbatches sums microbatch gradients of the same objective, so it yields
                   the full-batch gradient)
  build            shardings + `jit(...).lower(abstract).compile()` from shapes alone (no data, no
                   parameters): a `CompiledTrainer` with the step, its shardings and an init function
  batch_spec       the per-host feature shapes of a task's batches from its feature lengths

The model is seen only through `t2t_jax.models` (`EncoderDecoderModel`): `abstract_params`,
`init_params`, `logits` (in the loss) and `trainable_mask` (frozen parameters get no update and no
optimizer state).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from t2t_jax import models
from t2t_jax.training import losses, optimizers, partitioning
from t2t_jax.errors import UserInputError

REQUIRED_KEYS = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens")
OPTIONAL_KEYS = ("decoder_loss_weights", "encoder_segment_ids", "decoder_segment_ids",
                 "encoder_positions", "decoder_positions", "encoder_outputs")
PACKED_KEYS = ("encoder_segment_ids", "encoder_positions", "decoder_segment_ids", "decoder_positions")


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training (saved in checkpoints)."""
  step: jax.Array  # int32 scalar: number of updates applied
  params: Any
  opt_state: Any
  rng: jax.Array  # uint32[2] raw PRNG key; the dropout key of step s is fold_in(rng, s)


def batch_spec(task_feature_lengths: Mapping[str, int], *, batch_size: int, pack: bool = False,
               encoder_outputs_dim: int | None = None,
               targets_per_prompt: int = 1) -> dict[str, tuple[tuple[int, ...], Any]]:
  """{feature: (shape, dtype)} of batches of `batch_size` examples (EncDecFeatureConverter keys).

  `encoder_outputs_dim`: the batches also carry cached encoder outputs [B, inputs, E] (frozen
  encoders, `models.base.FrozenEncoderCache`).  `targets_per_prompt` T > 1: multi-target batches,
  `batch_size / T` prompts (encoder rows) with T target rows each (decoder rows, prompt-major).
  """
  lin, lt = int(task_feature_lengths["inputs"]), int(task_feature_lengths["targets"])
  if targets_per_prompt < 1 or batch_size % targets_per_prompt:
    raise UserInputError(f"BATCH_SIZE={batch_size} must be a multiple of TARGETS_PER_PROMPT="
                         f"{targets_per_prompt}")
  prompts = batch_size // targets_per_prompt
  spec = {"encoder_input_tokens": ((prompts, lin), np.int32),
          "decoder_input_tokens": ((batch_size, lt), np.int32),
          "decoder_target_tokens": ((batch_size, lt), np.int32),
          "decoder_loss_weights": ((batch_size, lt), np.int32)}
  if pack:
    if targets_per_prompt > 1:
      raise UserInputError("PACK and TARGETS_PER_PROMPT > 1 do not combine (multi-target batches "
                           "already share each prompt's encoding)")
    for k in PACKED_KEYS:
      spec[k] = ((batch_size, lin if k.startswith("encoder") else lt), np.int32)
  if encoder_outputs_dim:
    spec["encoder_outputs"] = ((prompts, lin, int(encoder_outputs_dim)), np.float32)
  return spec


def targets_per_prompt_of(feature_shapes: Mapping[str, Any]) -> int:
  """T of a (multi-target) batch spec or batch: decoder rows / encoder rows (1 for plain batches)."""
  def rows(v):
    return (v[0] if isinstance(v, tuple) else np.shape(v))[0]
  return rows(feature_shapes["decoder_target_tokens"]) // rows(feature_shapes["encoder_input_tokens"])


def global_rows(key: str, batch_size: int, targets_per_prompt: int) -> int:
  """Global leading dim of feature `key` in a batch of `batch_size` examples."""
  return batch_size // targets_per_prompt if key.startswith("encoder") else batch_size


def spec_of(batch: Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], Any]]:
  """The (shape, dtype) spec of one numpy batch (model features only)."""
  return {k: (np.shape(v), np.asarray(v).dtype) for k, v in batch.items()
          if k in REQUIRED_KEYS + OPTIONAL_KEYS}


def _split_microbatches(batch, num_microbatches, batch_axes):
  """[B, ...] -> [M, B/M, ...]; microbatch m takes rows m, m+M, ... so each stays spread over the
  data-parallel devices (each device holds B/(D*M) rows of every microbatch).  In multi-target
  batches the unit is a prompt's group of T decoder rows, so every group stays with its prompt."""
  t = targets_per_prompt_of(batch)
  m = num_microbatches

  def split(key, x):
    group = 1 if key.startswith("encoder") else t
    b = x.shape[0]
    y = x.reshape((b // (m * group), m, group) + x.shape[1:]).swapaxes(0, 1)
    y = y.reshape((m, b // m) + x.shape[1:])
    spec = jax.sharding.PartitionSpec(None, batch_axes, *([None] * (x.ndim - 1)))
    if jax.sharding.get_abstract_mesh().empty:
      return y
    return jax.lax.with_sharding_constraint(y, spec)

  return {k: split(k, v) for k, v in batch.items()}


def make_train_step(model, optimizer: optax.GradientTransformation, schedule: Callable, *,
                    loss: losses.LossConfig = losses.LossConfig(), num_microbatches: int = 1,
                    batch_axes=("data",)):
  """Returns the pure `train_step(state, batch) -> (state, metrics)`."""
  model = models.build_model(model)
  grad_fn = jax.value_and_grad(losses.make_loss_fn(model, loss), has_aux=True)
  enable_dropout = model.config.dropout_rate > 0

  def gradients(state, batch, step_rng, normalizer):
    if num_microbatches == 1:
      (_, aux), grads = grad_fn(state.params, batch, step_rng, normalizer, enable_dropout)
      return grads, aux
    micro = _split_microbatches(batch, num_microbatches, batch_axes)
    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
    zero_aux = {k: jnp.float32(0) for k in losses.AUX_KEYS}

    def body(carry, xs):
      grads_acc, aux_acc = carry
      mb, m = xs
      (_, aux), g = grad_fn(state.params, mb, jax.random.fold_in(step_rng, m), normalizer,
                            enable_dropout)
      grads_acc = jax.tree.map(lambda a, b: a + b.astype(jnp.float32), grads_acc, g)
      return (grads_acc, jax.tree.map(jnp.add, aux_acc, aux)), None

    (grads, aux), _ = jax.lax.scan(body, (zeros, zero_aux), (micro, jnp.arange(num_microbatches)))
    return jax.tree.map(lambda g, p: g.astype(p.dtype), grads, state.params), aux

  def train_step(state: TrainState, batch):
    step_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng, impl="threefry2x32"),
                                  state.step)
    normalizer = losses.normalizer_of(batch, loss.loss_normalizing_factor)
    grads, aux = gradients(state, batch, step_rng, normalizer)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    tokens = jnp.maximum(aux["weight_sum"], 1.0)
    metrics = {
        "loss": aux["loss_sum"] / tokens,  # per target token, whatever the normalizer
        "z_loss": aux["z_loss_sum"] / tokens,
        "accuracy": aux["correct"] / tokens,
        "num_tokens": aux["weight_sum"],
        "grad_norm": optax.global_norm(grads),
        "learning_rate": schedule(state.step),
    }
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step


def opt_state_shardings(opt_state_abstract, params_abstract, param_shardings, replicated):
  """Optimizer-state leaves shaped like their parameter get its sharding; the rest are replicated.

  Optimizer states mirror the parameter tree below their own containers, so the dict keys on a
  leaf's path name its parameter. Adafactor's factored row/column statistics (vectors) are
  replicated: they are tiny.
  """
  by_path = {}
  flat_p = jax.tree_util.tree_flatten_with_path(params_abstract)[0]
  flat_s = jax.tree.leaves(param_shardings)
  for (path, leaf), sh in zip(flat_p, flat_s):
    key = tuple(p.key for p in path if isinstance(p, jax.tree_util.DictKey))
    by_path[key] = (leaf.shape, sh)

  def pick(path, leaf):
    key = tuple(p.key for p in path if isinstance(p, jax.tree_util.DictKey))
    for start in range(len(key)):
      hit = by_path.get(key[start:])
      if hit is not None:
        return hit[1] if hit[0] == leaf.shape else replicated
    return replicated

  return jax.tree_util.tree_map_with_path(pick, opt_state_abstract)


@dataclasses.dataclass
class CompiledTrainer:
  """A model + optimizer compiled for a mesh: init, step and their shardings."""
  config: Any  # the model's config (models.base.ModelConfig)
  partitioner: partitioning.Partitioner
  model: Any  # models.base.EncoderDecoderModel
  optimizer: optax.GradientTransformation
  schedule: Callable
  state_shardings: Any
  abstract_state: Any
  batch_shardings: dict
  step_fn: Any  # compiled train step
  init_fn: Callable  # (seed, params or None) -> TrainState on the mesh


_BUILD_CACHE: dict = {}
_BUILD_CACHE_SIZE = 4


def build(model, *, partitioner: partitioning.Partitioner, batch_size: int,
          feature_shapes: Mapping[str, tuple[tuple[int, ...], Any]],
          optimizer: optimizers.OptimizerConfig = optimizers.OptimizerConfig(),
          loss: losses.LossConfig = losses.LossConfig(), num_microbatches: int = 1,
          total_steps: int | None = None) -> CompiledTrainer:
  """Builds shardings and compiles the train step ahead of time (no data or params needed).

  `feature_shapes` maps batch keys to (per-host shape, dtype); the leading dim is replaced by the
  global `batch_size`.  `model`: the run's `EncoderDecoderModel` (or its config).  The result is
  cached per process by the model's family and config, so a second `train` call with an equal
  model, mesh, shapes and hyper-parameters (a resumed run, a sweep over seeds) does not compile
  again.
  """
  model = models.build_model(model)
  key = (type(model), model.config, partitioner.mesh, tuple(partitioner.logical_axis_rules),
         partitioner.activation_constraints, batch_size,
         tuple(sorted((k, tuple(s), np.dtype(d).str) for k, (s, d) in feature_shapes.items())),
         optimizer, loss, num_microbatches, total_steps)
  try:
    hit = _BUILD_CACHE.get(key)
  except TypeError:  # unhashable value (e.g. a list as loss_normalizing_factor): no caching
    key, hit = None, None
  if hit is None:
    hit = _build(model, partitioner=partitioner, batch_size=batch_size,
                 feature_shapes=feature_shapes, optimizer=optimizer, loss=loss,
                 num_microbatches=num_microbatches, total_steps=total_steps)
    if key is not None:
      if len(_BUILD_CACHE) >= _BUILD_CACHE_SIZE:
        _BUILD_CACHE.pop(next(iter(_BUILD_CACHE)))
      _BUILD_CACHE[key] = hit
  return hit


def _abstract_state(model, opt, partitioner):
  """(abstract TrainState with shardings, state shardings, param shardings)."""
  boxed = model.abstract_params()
  param_shardings = partitioner.shardings_of(boxed)
  params_abstract = nn.unbox(boxed)
  opt_abstract = jax.eval_shape(opt.init, params_abstract)
  replicated = partitioner.replicated
  opt_shardings = opt_state_shardings(opt_abstract, params_abstract, param_shardings, replicated)
  state_shardings = TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings,
                               rng=replicated)
  abstract = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params_abstract,
                 opt_state=opt_abstract, rng=jax.ShapeDtypeStruct((2,), jnp.uint32)),
      state_shardings)
  return abstract, state_shardings, param_shardings


def _build(model, *, partitioner, batch_size, feature_shapes, optimizer, loss,
           num_microbatches, total_steps) -> CompiledTrainer:
  if isinstance(num_microbatches, bool) or not isinstance(num_microbatches, int) \
      or num_microbatches < 1:
    raise UserInputError(f"num_microbatches must be an integer >= 1, got {num_microbatches!r}")
  t = targets_per_prompt_of(feature_shapes)
  partitioner.check_batch_size(batch_size // t, num_microbatches)
  opt, sched = optimizers.from_config(optimizer, total_steps=total_steps)
  abstract = nn.unbox(model.abstract_params())
  opt = optimizers.mask_frozen(opt, model.trainable_mask(abstract))
  opt = optimizers.scale_learning_rates(opt, model.learning_rate_scales(abstract))
  abstract_state, state_shardings, param_shardings = _abstract_state(model, opt, partitioner)

  batch_shardings = {k: partitioner.data_sharding(len(s)) for k, (s, _) in feature_shapes.items()}
  batch_abstract = {k: jax.ShapeDtypeStruct((global_rows(k, batch_size, t),) + tuple(s[1:]), d,
                                            sharding=batch_shardings[k])
                    for k, (s, d) in feature_shapes.items()}
  step = make_train_step(model, opt, sched, loss=loss, num_microbatches=num_microbatches,
                         batch_axes=partitioner.batch_axes)
  jitted = jax.jit(step, in_shardings=(state_shardings, batch_shardings),
                   out_shardings=(state_shardings, partitioner.replicated), donate_argnums=(0,))
  with partitioner.activation_context():
    compiled = jitted.lower(abstract_state, batch_abstract).compile()

  def make(key_data, params):
    if params is None:
      params = nn.unbox(model.init_params(jax.random.fold_in(
          jax.random.wrap_key_data(key_data, impl="threefry2x32"), 1)))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt.init(params),
                      rng=key_data)

  init_fresh = jax.jit(lambda k: make(k, None), out_shardings=state_shardings)
  init_from = jax.jit(make, out_shardings=state_shardings)

  def init_state(seed: int, params=None) -> TrainState:
    """Fresh state (parameters from `seed`) or one around given (warm-start) parameters."""
    key_data = jax.random.key_data(jax.random.PRNGKey(seed))
    if params is None:
      with partitioner.activation_context():
        return init_fresh(key_data)
    params = jax.tree.map(lambda p, s: jax.device_put(p, s), nn.unbox(params), param_shardings)
    return init_from(key_data, params)

  return CompiledTrainer(model.config, partitioner, model, opt, sched, state_shardings,
                         abstract_state, batch_shardings, compiled, init_state)
