"""Trainer: sharded, jitted T5 train step and the training loop.

`train(...)` is the Python API (the quickstart and `python -m t2t_jax.train` both call it). It
consumes numpy batches (CONTRACTS.md EncDecFeatureConverter keys) from any iterator, so it never
touches TensorFlow.

The train step `train_step(state, batch) -> (state, metrics)` is pure; it is compiled once, ahead of
time, with explicit in/out shardings and donated state.  The loop reads each step's metrics one step
late so dispatch stays asynchronous.

Loss (T5X `compute_weighted_cross_entropy`): cross entropy with optional label smoothing (the
smoothed distribution's entropy subtracted, so a perfect model has loss 0) plus z-loss
`z_loss * logsumexp(logits)^2`, weighted by decoder_loss_weights, summed and divided by
`loss_normalizing_factor`:
  'NUM_REAL_TARGET_TOKENS'  number of weighted target tokens in the global batch (default),
  'NUM_TOTAL_TARGET_TOKENS' batch_size * target length,
  a number                  that constant (T5X style),
  None                      no division (sum).
Gradient accumulation over `num_microbatches` sums microbatch gradients of the same objective, so
it yields the full-batch gradient.
"""

import dataclasses
import logging
import math
import os
import signal
import threading
import time
from typing import Any, Callable, Iterator

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from t2t_jax import checkpoints as ckpt_lib
from t2t_jax import optimizers
from t2t_jax import partitioning
from t2t_jax import summaries
from t2t_jax.errors import UserInputError
from t2t_jax import models
from t2t_jax.models import t5

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens")
OPTIONAL_KEYS = ("decoder_loss_weights", "encoder_segment_ids", "decoder_segment_ids",
                 "encoder_positions", "decoder_positions", "encoder_outputs")
NORMALIZERS = ("NUM_REAL_TARGET_TOKENS", "NUM_TOTAL_TARGET_TOKENS")


class TrainingDivergedError(RuntimeError):
  """The loss or gradient norm became NaN/inf; the message names the step."""


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training (saved in checkpoints)."""
  step: jax.Array  # int32 scalar: number of updates applied
  params: Any
  opt_state: Any
  rng: jax.Array  # uint32[2] raw PRNG key; the dropout key of step s is fold_in(rng, s)


@dataclasses.dataclass
class TrainResult:
  """What `train` returns.

  params: final parameters (global jax.Arrays on the mesh).
  history: per-step training metrics, [{'step', 'loss', 'accuracy', ...}], steps run in this call.
  eval_history: [{'step', <eval metric>: ...}] from eval_fn.
  step: the final step.  stopped: 'completed' or 'preempted' (SIGTERM; a checkpoint was saved).
  """
  params: Any
  history: list[dict]
  eval_history: list[dict]
  step: int
  stopped: str = "completed"
  config: t5.T5Config | None = None
  examples_per_second: float | None = None  # steady-state training throughput (no eval/compile)


# -------------------------------------------------------------------------------------- loss


def cross_entropy_loss(logits_BxLxV, targets_BxL, weights_BxL, *, label_smoothing: float = 0.0,
                       z_loss: float = 0.0):
  """Weighted sums: (loss_sum, z_loss_sum, correct_sum, weight_sum), all float32 scalars."""
  logits = logits_BxLxV.astype(jnp.float32)
  vocab = logits.shape[-1]
  confidence = 1.0 - label_smoothing
  low = label_smoothing / (vocab - 1)
  normalizing_constant = -(confidence * math.log(confidence) +
                           (vocab - 1) * low * math.log(low + 1e-20)) if label_smoothing else 0.0
  log_z_BxL = jax.nn.logsumexp(logits, axis=-1)
  target_logit_BxL = jnp.take_along_axis(logits, targets_BxL[..., None].astype(jnp.int32),
                                         axis=-1)[..., 0]
  nll_BxL = log_z_BxL - target_logit_BxL
  if label_smoothing:
    # -sum_v q_v log p_v with q = low everywhere, confidence at the target.
    sum_logp_BxL = jnp.sum(logits, axis=-1) - vocab * log_z_BxL
    ce_BxL = (confidence - low) * nll_BxL - low * sum_logp_BxL - normalizing_constant
  else:
    ce_BxL = nll_BxL
  z_BxL = z_loss * jnp.square(log_z_BxL)
  w = weights_BxL.astype(jnp.float32)
  correct = (jnp.argmax(logits, axis=-1) == targets_BxL).astype(jnp.float32)
  return (jnp.sum((ce_BxL + z_BxL) * w), jnp.sum(z_BxL * w), jnp.sum(correct * w), jnp.sum(w))


def loss_weights(batch):
  if "decoder_loss_weights" in batch:
    return batch["decoder_loss_weights"]
  return (batch["decoder_target_tokens"] > 0).astype(jnp.float32)


def normalizer_of(batch, loss_normalizing_factor):
  if loss_normalizing_factor is None:
    return jnp.float32(1.0)
  if loss_normalizing_factor == "NUM_REAL_TARGET_TOKENS":
    return jnp.maximum(jnp.sum(loss_weights(batch).astype(jnp.float32)), 1.0)
  if loss_normalizing_factor == "NUM_TOTAL_TARGET_TOKENS":
    return jnp.float32(np.prod(batch["decoder_target_tokens"].shape))
  return jnp.float32(loss_normalizing_factor)


def _check_normalizer(value):
  if value is None or value in NORMALIZERS:
    return
  try:
    if float(value) > 0:
      return
  except (TypeError, ValueError):
    pass
  raise UserInputError(f"loss_normalizing_factor={value!r}: use None, a positive number or one of "
                       f"{NORMALIZERS}")


# -------------------------------------------------------------------------------- train step


def make_loss_fn(model, *, label_smoothing=0.0, z_loss=0.0):
  """loss_fn(params, batch, dropout_rng, normalizer, enable_dropout) -> (objective, aux sums).

  `model`: an `EncoderDecoderModel` (or its config)."""
  model = models.get_model(model)

  def loss_fn(params, batch, dropout_rng, normalizer, enable_dropout):
    logits = model.logits(params, batch, dropout_rng=dropout_rng, enable_dropout=enable_dropout)
    loss_sum, z_sum, correct, weight_sum = cross_entropy_loss(
        logits, batch["decoder_target_tokens"], loss_weights(batch),
        label_smoothing=label_smoothing, z_loss=z_loss)
    aux = {"loss_sum": loss_sum, "z_loss_sum": z_sum, "correct": correct,
           "weight_sum": weight_sum}
    return loss_sum / normalizer, aux

  return loss_fn


def _split_microbatches(batch, num_microbatches, batch_axes):
  """[B, ...] -> [M, B/M, ...]; microbatch m takes rows m, m+M, ... so each stays spread over the
  data-parallel devices (each device holds B/(D*M) rows of every microbatch)."""

  def split(x):
    b = x.shape[0]
    y = x.reshape((b // num_microbatches, num_microbatches) + x.shape[1:]).swapaxes(0, 1)
    spec = jax.sharding.PartitionSpec(None, batch_axes, *([None] * (x.ndim - 1)))
    if jax.sharding.get_abstract_mesh().empty:
      return y
    return jax.lax.with_sharding_constraint(y, spec)

  return jax.tree.map(split, batch)


def make_train_step(model, optimizer: optax.GradientTransformation,
                    schedule: Callable, *, num_microbatches: int = 1, label_smoothing: float = 0.0,
                    z_loss: float = 0.0, loss_normalizing_factor="NUM_REAL_TARGET_TOKENS",
                    batch_axes=("data",)):
  """Returns the pure `train_step(state, batch) -> (state, metrics)`."""
  model = models.get_model(model)
  loss_fn = make_loss_fn(model, label_smoothing=label_smoothing, z_loss=z_loss)
  enable_dropout = model.config.dropout_rate > 0
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state: TrainState, batch):
    step_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng, impl="threefry2x32"),
                                  state.step)
    normalizer = normalizer_of(batch, loss_normalizing_factor)
    if num_microbatches == 1:
      (_, aux), grads = grad_fn(state.params, batch, step_rng, normalizer, enable_dropout)
    else:
      micro = _split_microbatches(batch, num_microbatches, batch_axes)
      zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
      zero_aux = {k: jnp.float32(0) for k in ("loss_sum", "z_loss_sum", "correct", "weight_sum")}

      def body(carry, xs):
        grads_acc, aux_acc = carry
        mb, m = xs
        (_, aux), g = grad_fn(state.params, mb, jax.random.fold_in(step_rng, m), normalizer,
                              enable_dropout)
        grads_acc = jax.tree.map(lambda a, b: a + b.astype(jnp.float32), grads_acc, g)
        aux_acc = jax.tree.map(jnp.add, aux_acc, aux)
        return (grads_acc, aux_acc), None

      (grads, aux), _ = jax.lax.scan(body, (zeros, zero_aux),
                                     (micro, jnp.arange(num_microbatches)))
      grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, state.params)
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
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics

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


# ------------------------------------------------------------------------------------ setup


@dataclasses.dataclass
class CompiledTrainer:
  """A model + optimizer compiled for a mesh: init, step and their shardings."""
  config: t5.T5Config
  partitioner: partitioning.Partitioner
  model: t5.Transformer
  optimizer: optax.GradientTransformation
  schedule: Callable
  state_shardings: Any
  abstract_state: Any
  batch_shardings: dict
  step_fn: Any  # compiled train step
  init_fn: Callable  # (seed, params or None) -> TrainState on the mesh


def _batch_spec(batch_size, feature_shapes):
  return {k: jax.ShapeDtypeStruct((batch_size,) + tuple(s[1:]), d)
          for k, (s, d) in feature_shapes.items()}


_BUILD_CACHE: dict = {}
_BUILD_CACHE_SIZE = 4


def build(config: t5.T5Config, *, partitioner: partitioning.Partitioner, batch_size: int,
          feature_shapes: dict[str, tuple[tuple[int, ...], Any]], **hyper) -> CompiledTrainer:
  """Builds shardings and compiles the train step ahead of time (no data or params needed).

  `feature_shapes` maps batch keys to (per-host shape, dtype); the leading dim is replaced by the
  global `batch_size`. `hyper`: optimizer, learning_rate, schedule, warmup_steps, total_steps,
  final_learning_rate_fraction, weight_decay, max_grad_norm, num_microbatches, label_smoothing,
  z_loss, loss_normalizing_factor (see `train`). The result is cached per process, so a second
  `train` call with the same model, mesh, shapes and hyper-parameters (a resumed run, a sweep over
  seeds) does not compile again.
  """
  key = (config, partitioner.mesh, tuple(partitioner.logical_axis_rules),
         partitioner.activation_constraints, batch_size,
         tuple(sorted((k, tuple(s), np.dtype(d).str) for k, (s, d) in feature_shapes.items())),
         tuple(sorted(hyper.items())))
  try:
    hit = _BUILD_CACHE.get(key)
  except TypeError:  # unhashable hyper-parameter value: no caching
    return _build(config, partitioner=partitioner, batch_size=batch_size,
                  feature_shapes=feature_shapes, **hyper)
  if hit is None:
    hit = _build(config, partitioner=partitioner, batch_size=batch_size,
                 feature_shapes=feature_shapes, **hyper)
    if len(_BUILD_CACHE) >= _BUILD_CACHE_SIZE:
      _BUILD_CACHE.pop(next(iter(_BUILD_CACHE)))
    _BUILD_CACHE[key] = hit
  return hit


def _build(config: t5.T5Config, *, partitioner: partitioning.Partitioner, batch_size: int,
           feature_shapes: dict[str, tuple[tuple[int, ...], Any]], optimizer="adafactor",
           learning_rate=1e-3, schedule="constant", warmup_steps=0, total_steps=None,
           final_learning_rate_fraction=0.0, weight_decay=0.0, max_grad_norm=None,
           num_microbatches=1, label_smoothing=0.0, z_loss=1e-4,
           loss_normalizing_factor="NUM_REAL_TARGET_TOKENS") -> CompiledTrainer:
  _check_normalizer(loss_normalizing_factor)
  if num_microbatches < 1:
    raise UserInputError(f"num_microbatches must be >= 1, got {num_microbatches}")
  partitioner.check_batch_size(batch_size, num_microbatches)
  sched = optimizers.make_schedule(schedule, learning_rate=learning_rate,
                                   warmup_steps=warmup_steps, total_steps=total_steps,
                                   final_learning_rate_fraction=final_learning_rate_fraction)
  opt = optimizers.make_optimizer(optimizer, schedule=sched, weight_decay=weight_decay,
                                  max_grad_norm=max_grad_norm)
  model = models.get_model(config)
  replicated = partitioner.replicated

  boxed = model.abstract_params()
  param_shardings = partitioner.shardings_of(boxed)
  params_abstract = nn.unbox(boxed)
  opt = optimizers.mask_frozen(opt, model.trainable_mask(params_abstract))
  opt_abstract = jax.eval_shape(opt.init, params_abstract)
  opt_shardings = opt_state_shardings(opt_abstract, params_abstract, param_shardings, replicated)
  state_shardings = TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings,
                               rng=replicated)
  abstract_state = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params_abstract,
                 opt_state=opt_abstract, rng=jax.ShapeDtypeStruct((2,), jnp.uint32)),
      state_shardings)

  batch_abstract = _batch_spec(batch_size, feature_shapes)
  batch_shardings = {k: partitioner.data_sharding(len(v.shape)) for k, v in batch_abstract.items()}
  batch_abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_shardings[k])
                    for k, v in batch_abstract.items()}

  step = make_train_step(model, opt, sched, num_microbatches=num_microbatches,
                         label_smoothing=label_smoothing, z_loss=z_loss,
                         loss_normalizing_factor=loss_normalizing_factor,
                         batch_axes=partitioner.batch_axes)
  jitted = jax.jit(step, in_shardings=(state_shardings, batch_shardings),
                   out_shardings=(state_shardings, replicated), donate_argnums=(0,))
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
    params = jax.tree.map(lambda p, s: jax.device_put(p, s), params, param_shardings)
    return init_from(key_data, params)

  return CompiledTrainer(config, partitioner, model, opt, sched, state_shardings, abstract_state,
                         batch_shardings, compiled, init_state)


# ----------------------------------------------------------------------------------- the loop


class _SigtermFlag:
  """SIGTERM -> stop after the current step, save a checkpoint, return cleanly."""

  def __init__(self, enabled: bool):
    self.flag = False
    self._old = None
    self._enabled = enabled and threading.current_thread() is threading.main_thread()

  def __enter__(self):
    if self._enabled:
      self._old = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    log.warning("SIGTERM received: saving a checkpoint after this step and stopping")
    self.flag = True

  def __exit__(self, *exc):
    if self._enabled:
      signal.signal(signal.SIGTERM, self._old)

  def should_stop(self, step: int) -> bool:
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      try:
        return bool(multihost_utils.reached_preemption_sync_point(step)) or self.flag
      except Exception:  # pylint: disable=broad-except
        return self.flag
    return self.flag


def _validate_batch(batch, config: t5.T5Config, per_host_batch: int):
  if not isinstance(batch, dict):
    raise UserInputError(f"train_iter must yield dicts of numpy arrays, got {type(batch).__name__}")
  missing = [k for k in REQUIRED_KEYS if k not in batch]
  if missing:
    raise UserInputError(f"training batch lacks {missing}; has {sorted(batch)}")
  for k, v in batch.items():
    v = np.asarray(v)
    if v.shape[0] != per_host_batch:
      raise UserInputError(f"batch feature {k!r} has {v.shape[0]} rows; expected the per-host "
                           f"batch {per_host_batch} (BATCH_SIZE / number of processes)")
  for k in REQUIRED_KEYS:
    limit = config.input_vocab_size if k == "encoder_input_tokens" else config.output_vocab_size
    hi = int(np.max(batch[k]))
    if hi >= limit:
      raise UserInputError(f"batch feature {k!r} holds token id {hi} >= the model's "
                           f"{'input' if k == 'encoder_input_tokens' else 'output'} vocabulary size "
                           f"{limit}: the model's vocabulary is too small for the task")


def _feature_shapes(batch):
  keys = [k for k in batch if k in REQUIRED_KEYS + OPTIONAL_KEYS]
  return {k: (np.asarray(batch[k]).shape, np.asarray(batch[k]).dtype) for k in keys}


def _to_float(tree):
  return {k: float(v) for k, v in jax.device_get(tree).items()}


def train(*, model_config: t5.T5Config, train_iter: Iterator[dict], model_dir: str,
          train_steps: int, batch_size: int, learning_rate: float = 1e-3,
          schedule: str = "constant", warmup_steps: int = 0,
          final_learning_rate_fraction: float = 0.0, optimizer: str = "adafactor",
          weight_decay: float = 0.0, max_grad_norm: float | None = None,
          num_microbatches: int = 1, label_smoothing: float = 0.0, z_loss: float = 1e-4,
          loss_normalizing_factor="NUM_REAL_TARGET_TOKENS",
          partitioner: partitioning.Partitioner | None = None, checkpoint_period: int = 1000,
          keep_checkpoints: int | None = 3, best_metric: str | None = None,
          best_mode: str = "max", async_checkpointing: bool = True,
          eval_fn: Callable[[Any, int], dict] | None = None, eval_period: int | None = None,
          log_period: int = 100, init_params=None, seed: int = 0, progress: bool = True,
          restore: bool = True, handle_sigterm: bool = True,
          tensorboard: bool = True) -> TrainResult:
  """Trains `Transformer(model_config)` for `train_steps` updates of global batch `batch_size`.

  Args:
    train_iter: yields this process's share of each batch (batch_size / process_count rows) as
      numpy dicts with CONTRACTS.md keys. On resume it is advanced past the batches already used
      (by `set_state` when it has get_state/set_state, else by skipping them).
    model_dir: MODEL_DIR: checkpoints, model_config.json, metrics.jsonl, TensorBoard events.
    schedule / learning_rate / warmup_steps: see `t2t_jax.optimizers.make_schedule`.
    optimizer: 'adafactor' (T5X defaults) or 'adamw'.
    num_microbatches: gradient accumulation steps inside one update.
    checkpoint_period: save every N steps (and at the end / on SIGTERM); keep_checkpoints latest
      ones are kept, plus the best one by `best_metric` (an eval_fn metric) when set.
    eval_fn: `eval_fn(params, step) -> {name: float}` run every `eval_period` steps and at the end.
    init_params: warm-start parameters (e.g. `hf_convert.load_hf_t5`), used when MODEL_DIR has no
      checkpoint yet.
    restore: resume from the newest readable checkpoint in MODEL_DIR.
  Returns:
    TrainResult.
  Raises:
    UserInputError for bad arguments or batches (before compiling), TrainingDivergedError when the
    loss or gradient norm is not finite (naming the step).
  """
  if train_steps < 0:
    raise UserInputError(f"train_steps must be >= 0, got {train_steps}")
  if eval_period is not None and eval_period <= 0:
    raise UserInputError(f"eval_period must be positive, got {eval_period}")
  if checkpoint_period is not None and checkpoint_period <= 0:
    raise UserInputError(f"checkpoint_period must be positive, got {checkpoint_period}")
  if best_metric and eval_fn is None:
    raise UserInputError(f"best_metric={best_metric!r} needs an eval_fn")
  partitioner = partitioner or partitioning.Partitioner()
  nproc = jax.process_count()
  if batch_size % nproc:
    raise UserInputError(f"BATCH_SIZE={batch_size} must be a multiple of the {nproc} processes")
  per_host_batch = batch_size // nproc
  is_chief = jax.process_index() == 0

  train_iter = iter(train_iter)
  try:
    first = next(train_iter)
  except StopIteration:
    raise UserInputError("train_iter yielded no batch") from None
  _validate_batch(first, model_config, per_host_batch)

  trainer = build(model_config, partitioner=partitioner, batch_size=batch_size,
                  feature_shapes=_feature_shapes(first), optimizer=optimizer,
                  learning_rate=learning_rate, schedule=schedule, warmup_steps=warmup_steps,
                  total_steps=train_steps,
                  final_learning_rate_fraction=final_learning_rate_fraction,
                  weight_decay=weight_decay, max_grad_norm=max_grad_norm,
                  num_microbatches=num_microbatches, label_smoothing=label_smoothing,
                  z_loss=z_loss, loss_normalizing_factor=loss_normalizing_factor)
  log.info("%s; %d parameters", partitioner.describe(), model_config.num_params())

  os.makedirs(model_dir, exist_ok=True)
  ckpt_lib.save_model_config(model_dir, model_config)
  manager = ckpt_lib.CheckpointManager(model_dir, keep=keep_checkpoints, best_metric=best_metric,
                                       best_mode=best_mode, async_save=async_checkpointing)

  # ---- state: restore, warm start or fresh init.
  state = None
  consumed = 0  # batches of train_iter used by previous runs
  if restore and manager.latest_step() is not None:
    abstract = trainer.abstract_state
    got = manager.restore(abstract.params, {"step": abstract.step, "rng": abstract.rng,
                                             "opt_state": abstract.opt_state})
    if got is not None:
      step0, params, rest, meta = got
      state = TrainState(step=rest["step"], params=params, opt_state=rest["opt_state"],
                         rng=rest["rng"])
      consumed = int(meta.get("batches_consumed", step0))
      if "data_iterator_state" in meta and hasattr(train_iter, "set_state"):
        train_iter.set_state(meta["data_iterator_state"])
        consumed = 0  # the iterator is positioned; `first` was drawn before set_state
        first = None
      log.info("restored checkpoint step %d from %s", step0, manager.directory)
  if state is None:
    state = trainer.init_fn(seed, init_params)
  start_step = int(jax.device_get(state.step))

  pending_batches = [] if first is None else [first]
  for _ in range(consumed):  # fast-forward a plain iterator past the batches already trained on
    if pending_batches:
      pending_batches.pop()
    else:
      next(train_iter)

  def next_batch():
    if pending_batches:
      return pending_batches.pop()
    return next(train_iter)

  writer = summaries.MetricsWriter(model_dir, enabled=is_chief, start_step=start_step,
                                   tensorboard=tensorboard)
  history, eval_history = [], []
  window = []
  stopped = "completed"

  def meta_for(step):
    meta = {"step": int(step), "seed": seed, "batches_consumed": int(step),
            "batch_size": batch_size}
    if hasattr(train_iter, "get_state"):
      meta["data_iterator_state"] = train_iter.get_state()
    return meta

  paused = [0.0]  # seconds spent in eval and checkpoint starts, excluded from throughput

  def save(step, metrics=None):
    t0 = time.time()
    _save(step, metrics)
    paused[0] += time.time() - t0

  def _save(step, metrics=None):
    manager.save(step, state.params, {"step": state.step, "rng": state.rng,
                                      "opt_state": state.opt_state}, meta_for(step), metrics)

  def record(step, metrics):
    """Host side of one step's metrics (read one step late)."""
    if not (math.isfinite(metrics["loss"]) and math.isfinite(metrics["grad_norm"])):
      raise TrainingDivergedError(
          f"non-finite {'loss' if not math.isfinite(metrics['loss']) else 'gradient norm'} at "
          f"step {step} (loss={metrics['loss']}, grad_norm={metrics['grad_norm']}); last "
          f"checkpoint: {manager.latest_step()}")
    row = {"step": step, **metrics}
    history.append(row)
    window.append(metrics)
    if step % log_period == 0 or step == train_steps:
      avg = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
      writer.write_scalars(step, avg, "train")
      window.clear()

  def run_eval(step):
    if eval_fn is None:
      return None
    t0 = time.time()
    metrics = {k: float(v) for k, v in eval_fn(state.params, step).items()}
    metrics["eval_seconds"] = time.time() - t0
    paused[0] += metrics["eval_seconds"]
    eval_history.append({"step": step, **metrics})
    writer.write_scalars(step, metrics, "eval")
    log.info("eval at step %d: %s", step, metrics)
    return metrics

  bar = None
  if progress and is_chief:
    from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
    bar = tqdm(total=train_steps, initial=start_step, unit="step", dynamic_ncols=True,
               desc="train")
  t_start, n_timed = None, 0
  prev = None  # (step, metrics on device) awaiting host read
  step = start_step
  try:
    with _SigtermFlag(handle_sigterm) as sigterm:
      while step < train_steps:
        batch = next_batch()
        if step == start_step and step != 0:
          _validate_batch(batch, model_config, per_host_batch)
        global_batch = partitioner.shard_batch(
            {k: batch[k] for k in trainer.batch_shardings}, batch_size)
        state, metrics = trainer.step_fn(state, global_batch)
        step += 1
        if prev is not None:
          record(prev[0], _to_float(prev[1]))
        prev = (step, metrics)
        if t_start is None:  # exclude compilation/first step from throughput
          t_start = time.time()
          paused[0] = 0.0
        else:
          n_timed += 1
        if bar is not None:
          bar.update(1)
          if n_timed and step % max(1, min(log_period, 10)) == 0:
            rate = n_timed / max(time.time() - t_start - paused[0], 1e-9)
            last = history[-1] if history else {}
            bar.set_postfix(loss=f"{last.get('loss', float('nan')):.4f}",
                            ex_per_s=f"{rate * batch_size:.1f}", refresh=False)
        eval_now = bool(eval_fn is not None and eval_period and step % eval_period == 0)
        ckpt_now = bool(checkpoint_period and step % checkpoint_period == 0)
        stop_now = step != train_steps and sigterm.should_stop(step)
        if eval_now or ckpt_now or stop_now or step == train_steps:
          record(prev[0], _to_float(prev[1]))
          prev = None
        if eval_now and step != train_steps:
          m = run_eval(step)
          save(step, {best_metric: m[best_metric]} if best_metric else None)
        elif ckpt_now and step != train_steps:
          save(step)
        if stop_now:
          save(step)
          stopped = "preempted"
          log.warning("stopped by SIGTERM at step %d; checkpoint saved", step)
          break
      if prev is not None:
        record(prev[0], _to_float(prev[1]))
        prev = None
      if stopped == "completed":
        final_metrics = run_eval(step) if eval_fn is not None and step > start_step else None
        save(step, {best_metric: final_metrics[best_metric]}
             if best_metric and final_metrics else None)
  finally:
    if bar is not None:
      bar.close()
    manager.close()
    writer.close()
  throughput = None
  if n_timed:
    elapsed = max(time.time() - t_start - paused[0], 1e-9)
    throughput = n_timed * batch_size / elapsed
    if is_chief:
      log.info("%.2f steps/s, %.1f examples/s", n_timed / elapsed, throughput)
  return TrainResult(params=state.params, history=history, eval_history=eval_history, step=step,
                     stopped=stopped, config=model_config, examples_per_second=throughput)


def make_eval_loss_fn(config: t5.T5Config, partitioner: partitioning.Partitioner,
                      batches: list[dict], batch_size: int):
  """eval_fn(params, step) -> {'loss', 'accuracy', 'num_tokens'}: teacher-forced, no dropout,
  per target token over a fixed list of this process's batches (jitted once)."""
  loss_fn = make_loss_fn(models.get_model(config))

  def sums(params, batch):
    _, aux = loss_fn(params, batch, jax.random.PRNGKey(0), 1.0, False)
    return aux

  keys = [k for k in batches[0] if k in REQUIRED_KEYS + OPTIONAL_KEYS]
  jitted = jax.jit(sums, out_shardings=partitioner.replicated)

  def eval_fn(params, step):  # pylint: disable=unused-argument
    total = {"loss_sum": 0.0, "correct": 0.0, "weight_sum": 0.0}
    with partitioner.activation_context():
      for b in batches:
        aux = jax.device_get(jitted(params, partitioner.shard_batch({k: b[k] for k in keys},
                                                                    batch_size)))
        for k in total:
          total[k] += float(aux[k])
    tokens = max(total["weight_sum"], 1.0)
    return {"loss": total["loss_sum"] / tokens, "accuracy": total["correct"] / tokens,
            "num_tokens": total["weight_sum"]}

  return eval_fn


def load_params(model_dir: str, **kwargs):
  """(T5Config, params) of the newest readable checkpoint in MODEL_DIR."""
  return ckpt_lib.load_params(model_dir, **kwargs)
