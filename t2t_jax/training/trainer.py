"""Trainer: a short loop that runs the compiled train step and its hooks.

`train(...)` is the Python API (`python -m t2t_jax.train`, the quickstart and the studies all reach
it through the gin entry).  It consumes numpy batches (CONTRACTS.md EncDecFeatureConverter keys)
from any iterator, so it never touches TensorFlow.  Hyper-parameters travel as a few typed configs
(bound by gin in gin/runs/*.gin):

  TrainConfig       steps, batch size, microbatches, seed, periods, progress / SIGTERM / TensorBoard
  CheckpointConfig  period, how many to keep, best-by-metric, async, restore
  OptimizerConfig   (t2t_jax.training.optimizers)  optimizer, learning rate, schedule, ...
  LossConfig        (t2t_jax.training.losses)      label smoothing, z-loss, loss normaliser

The step (t2t_jax.training.train_state) is pure and compiled ahead of time with explicit shardings and
donated state; the loop reads each step's metrics one step late so dispatch stays asynchronous, and
everything else (summaries, throughput, progress, preemption, evaluation, checkpoints) is a hook
(t2t_jax.training.hooks).  The model is only seen through `t2t_jax.models` (EncoderDecoderModel).

Data position: when the training iterator has `get_state()` / `set_state(state)` (the index-based
iterators of tasks.pipeline and train.copy_task_batches), its state is saved with every checkpoint
and a resumed run continues from it in O(1); a plain iterator is replayed past the batches already
consumed (logged, since it costs a pass over them).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import time
from typing import Any, Callable, Iterator, Sequence

import jax
import numpy as np

from t2t_jax import models, storage
from t2t_jax.training import checkpoints as ckpt_lib
from t2t_jax.training import hooks as hooks_lib
from t2t_jax.training import model_dir_lock, partitioning, summaries, train_state
from t2t_jax.errors import UserInputError
from t2t_jax.training.hooks import TrainingDivergedError  # noqa: F401  (re-exported)
from t2t_jax.training.losses import LossConfig
from t2t_jax.training.optimizers import OptimizerConfig
from t2t_jax.training.train_state import TrainState, build  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


def _check_int(name: str, value, *, minimum: int, optional: bool = False) -> None:
  if optional and value is None:
    return
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise UserInputError(f"{name} must be an integer >= {minimum}{' or None' if optional else ''}, "
                         f"got {value!r}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The loop's settings (gin: TRAIN_STEPS, BATCH_SIZE, NUM_MICROBATCHES, RANDOM_SEED, ...).

  seed None: a new seed each run (T5X RANDOM_SEED = None), logged and stored in checkpoints.
  preemption_sync_period: multi-host only, how often the hosts agree on SIGTERM.
  """
  train_steps: int
  batch_size: int
  num_microbatches: int = 1
  seed: int | None = 0
  log_period: int = 100
  eval_period: int | None = None
  progress: bool = True
  handle_sigterm: bool = True
  tensorboard: bool = True
  preemption_sync_period: int = 10

  def __post_init__(self):
    if self.num_microbatches is None:  # T5X: None means no accumulation
      object.__setattr__(self, "num_microbatches", 1)
    _check_int("TRAIN_STEPS", self.train_steps, minimum=0)
    _check_int("BATCH_SIZE", self.batch_size, minimum=1)
    _check_int("NUM_MICROBATCHES", self.num_microbatches, minimum=1)
    _check_int("RANDOM_SEED", self.seed, minimum=0, optional=True)
    _check_int("LOG_PERIOD", self.log_period, minimum=1)
    _check_int("EVAL_PERIOD", self.eval_period, minimum=1, optional=True)
    _check_int("preemption_sync_period", self.preemption_sync_period, minimum=1)


@dataclasses.dataclass(frozen=True)
class Trainer(TrainConfig):
  """`TrainConfig` under T5X's name: the one runs/finetune.gin builds, so T5X bindings such as
  `--gin.trainer.Trainer.num_microbatches=4` work unchanged."""


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """Checkpointing (gin: CHECKPOINT_PERIOD, KEEP_CHECKPOINTS, BEST_METRIC, ...).

  keep: the latest N are kept (None: all), plus the best by `best_metric` (an eval metric) when set.
  restore: resume from the newest readable checkpoint in MODEL_DIR.
  """
  period: int | None = 1000
  keep: int | None = 3
  best_metric: str | None = None
  best_mode: str = "max"
  async_save: bool = True
  restore: bool = True

  def __post_init__(self):
    _check_int("CHECKPOINT_PERIOD", self.period, minimum=1, optional=True)
    _check_int("KEEP_CHECKPOINTS", self.keep, minimum=1, optional=True)
    if self.best_mode not in ("max", "min"):
      raise UserInputError(f"best_mode must be 'max' or 'min', got {self.best_mode!r}")


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
  config: Any = None  # the model config
  examples_per_second: float | None = None  # steady-state training throughput (no eval/compile)


# ------------------------------------------------------------------------------------- batches


def validate_batch(batch, model_config, per_host_batch: int, spec: dict | None = None) -> None:
  """UserInputError naming what is wrong with a training batch (keys, rows, shapes, token ids)."""
  if not isinstance(batch, dict):
    raise UserInputError(f"train_iter must yield dicts of numpy arrays, got {type(batch).__name__}")
  need = list(spec) if spec else list(train_state.REQUIRED_KEYS)
  missing = [k for k in need if k not in batch]
  if missing:
    raise UserInputError(f"training batch lacks {missing}; has {sorted(batch)}")
  t = train_state.targets_per_prompt_of(spec or batch)
  for k in need:
    shape = np.shape(batch[k])
    rows = train_state.global_rows(k, per_host_batch, t)
    if shape[:1] != (rows,):
      raise UserInputError(f"batch feature {k!r} has {shape[0] if shape else 0} rows; expected "
                           f"{rows} (the per-host batch {per_host_batch} = BATCH_SIZE / number of "
                           f"processes{f', / TARGETS_PER_PROMPT {t}' if rows != per_host_batch else ''})")
    if spec and tuple(shape[1:]) != tuple(spec[k][0][1:]):
      raise UserInputError(f"batch feature {k!r} has shape {shape}; expected [{rows}, "
                           f"{', '.join(map(str, spec[k][0][1:]))}] (TASK_FEATURE_LENGTHS)")
  for k in train_state.REQUIRED_KEYS:
    side = "input" if k == "encoder_input_tokens" else "output"
    limit = getattr(model_config, f"{side}_vocab_size")
    hi = int(np.max(batch[k]))
    if hi >= limit:
      raise UserInputError(f"batch feature {k!r} holds token id {hi} >= the model's {side} "
                           f"vocabulary size {limit}: the model's vocabulary is too small for the task")


def _peek_spec(train_iter):
  """(feature spec of the next batch, iterator still positioned before it, first batch)."""
  if hasattr(train_iter, "get_state") and hasattr(train_iter, "set_state"):
    state = train_iter.get_state()
    first = next(train_iter)
    train_iter.set_state(state)
    return train_state.spec_of(first), train_iter, first
  try:
    first = next(train_iter)
  except StopIteration:
    raise UserInputError("train_iter yielded no batch") from None
  return train_state.spec_of(first), itertools.chain([first], train_iter), first


def _skip(train_iter, n: int):
  """Replays a plain iterator past `n` batches (resume without get_state/set_state)."""
  if n:
    log.warning("replaying %d training batches to resume (the iterator has no get_state/set_state)",
                n)
  for _ in range(n):
    next(train_iter)


def resolve_seed(seed: int | None) -> int:
  """T5X RANDOM_SEED: None draws one (the same on every host)."""
  if seed is not None:
    return int(seed)
  drawn = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    drawn = int(multihost_utils.broadcast_one_to_all(np.int32(drawn)))
  log.info("RANDOM_SEED=None: using seed %d", drawn)
  return drawn


# --------------------------------------------------------------------------------------- the loop


def run_loop(state, batches: Iterator[dict], step_fn: Callable, hooks: Sequence[hooks_lib.Hook],
             ctx: hooks_lib.LoopContext, shard: Callable[[dict], dict]):
  """Steps from ctx.start_step to ctx.end_step (or a hook's stop); returns the final state."""
  ctx.state, ctx.step = state, ctx.start_step
  pending = None  # (step, device metrics) not yet read to the host
  for step in range(ctx.start_step + 1, ctx.end_step + 1):
    state, metrics = step_fn(state, shard(next(batches)))
    if pending is not None:
      ctx.record(*pending)
    pending, ctx.state, ctx.step = (step, metrics), state, step
    due = [h for h in hooks if h.every and step % h.every == 0]
    if any(h.needs_metrics for h in due):
      ctx.record(*pending)
      pending = None
    _call(due, ctx, lambda h: h(ctx))
    if ctx.stop_reason is not None:
      break
  if pending is not None:
    ctx.record(*pending)
  _call(hooks, ctx, lambda h: h.finish(ctx))
  return ctx.state


def _call(hooks, ctx, fn) -> None:
  for h in hooks:
    t0 = _now()
    fn(h)
    if not isinstance(h, (hooks_lib.ThroughputHook, hooks_lib.ProgressHook)):
      ctx.hook_seconds += _now() - t0


def _now() -> float:
  return time.perf_counter()


# -------------------------------------------------------------------------------------- train()


def train(*, model, train_iter: Iterator[dict], model_dir: str, config: TrainConfig,
          optimizer: OptimizerConfig = OptimizerConfig(), loss: LossConfig = LossConfig(),
          checkpoint: CheckpointConfig = CheckpointConfig(),
          partitioner: partitioning.Partitioner | None = None,
          eval_fn: Callable[[Any, int], dict] | None = None, init_params=None,
          feature_spec: dict | None = None, extra_hooks: Sequence[hooks_lib.Hook] = ()
          ) -> TrainResult:
  """Trains `model` for config.train_steps updates of config.batch_size.

  Args:
    model: the run's `EncoderDecoderModel` (a model config is built into one here).
    train_iter: yields this process's share of each batch (batch_size / process_count rows) as
      numpy dicts with CONTRACTS.md keys (see the module doc for resuming).
    model_dir: MODEL_DIR: checkpoints, model_config.json, metrics.jsonl, TensorBoard events.
    eval_fn: `eval_fn(params, step) -> {name: float}`, every config.eval_period steps and at the end.
    init_params: warm-start parameters, used when MODEL_DIR has no checkpoint yet.
    feature_spec: {key: (per-host shape, dtype)} of the batches (`train_state.batch_spec`); None:
      taken from the first batch (without consuming it when the iterator has get_state/set_state).
    extra_hooks: more hooks, run after the built-in ones.
  Raises:
    UserInputError for bad arguments or batches, TrainingDivergedError when the loss or gradient
    norm is not finite (naming the step).
  """
  model = models.build_model(model)
  model_config = model.config
  partitioner = partitioner or partitioning.Partitioner()
  if checkpoint.best_metric and eval_fn is None:
    raise UserInputError(f"BEST_METRIC={checkpoint.best_metric!r} needs an evaluation (eval_fn)")
  nproc = jax.process_count()
  if config.batch_size % nproc:
    raise UserInputError(f"BATCH_SIZE={config.batch_size} must be a multiple of the {nproc} processes")
  per_host = config.batch_size // nproc
  lock = model_dir_lock.acquire_for_job(model_dir)  # one writer per MODEL_DIR (re-entrant)
  try:
    train_iter = iter(train_iter)
    if feature_spec is None:
      feature_spec, train_iter, first = _peek_spec(train_iter)
      validate_batch(first, model_config, per_host)
    compiled = train_state.build(model, partitioner=partitioner, batch_size=config.batch_size,
                                 feature_shapes=feature_spec, optimizer=optimizer, loss=loss,
                                 num_microbatches=config.num_microbatches,
                                 total_steps=config.train_steps)
    log.info("%s; %d parameters", partitioner.describe(), model_config.num_params())
    storage.makedirs(model_dir)
    ckpt_lib.save_model_config(model_dir, model_config)
    manager = ckpt_lib.CheckpointManager(model_dir, keep=checkpoint.keep,
                                         best_metric=checkpoint.best_metric,
                                         best_mode=checkpoint.best_mode,
                                         async_save=checkpoint.async_save)
    seed = resolve_seed(config.seed)
    state = _restore_or_init(compiled, manager, checkpoint.restore, train_iter, init_params, seed)
    ctx = _loop_context(config, model_dir, int(jax.device_get(state.step)), manager)
    meta_fn = _checkpoint_meta_fn(train_iter, seed, config.batch_size)
    hooks = _default_hooks(config, checkpoint, ctx, manager, meta_fn, eval_fn) + list(extra_hooks)
    batches = _validated(train_iter, model_config, per_host, feature_spec)
    keys = list(compiled.batch_shardings)

    def shard(batch):
      return partitioner.shard_batch({k: batch[k] for k in keys}, config.batch_size)

    state = _run_then_close(state, batches, compiled.step_fn, hooks, ctx, shard, manager)
    return TrainResult(params=state.params, history=ctx.history, eval_history=ctx.eval_history,
                       step=ctx.step, stopped=ctx.stop_reason or "completed", config=model_config,
                       examples_per_second=ctx.examples_per_second)
  finally:
    if lock is not None:
      lock.release()


def _loop_context(config, model_dir: str, start: int, manager) -> hooks_lib.LoopContext:
  """The loop's shared state from step `start`, with its metrics writer (process 0 writes)."""
  ctx = hooks_lib.LoopContext(start_step=start, end_step=config.train_steps,
                              batch_size=config.batch_size, is_chief=jax.process_index() == 0)
  ctx.writer = summaries.MetricsWriter(model_dir, enabled=ctx.is_chief, start_step=start,
                                       tensorboard=config.tensorboard)
  ctx.last_checkpoint_step = manager.latest_step()
  return ctx


def _checkpoint_meta_fn(train_iter, seed: int, batch_size: int) -> Callable[[int], dict]:
  """meta_fn(step): what a checkpoint records beside the state, the data position among it."""

  def meta_fn(step):
    meta = {"step": int(step), "seed": seed, "batches_consumed": int(step), "batch_size": batch_size}
    if hasattr(train_iter, "get_state"):
      meta["data_iterator_state"] = train_iter.get_state()
    return meta

  return meta_fn


def _run_then_close(state, batches, step_fn, hooks, ctx, shard, manager):
  """`run_loop`, then the hooks, the checkpoint manager and the writer closed however it ended."""
  try:
    return run_loop(state, batches, step_fn, hooks, ctx, shard)
  finally:
    for h in hooks:
      h.close()
    manager.close()
    ctx.writer.close()


def _default_hooks(config, checkpoint, ctx, manager, meta_fn, eval_fn) -> list:
  hooks = [hooks_lib.ThroughputHook()]
  if config.progress and ctx.is_chief:
    hooks.append(hooks_lib.ProgressHook(total=config.train_steps, initial=ctx.start_step,
                                        refresh_every=min(config.log_period, 10)))
  hooks.append(hooks_lib.PreemptionHook(enabled=config.handle_sigterm,
                                        sync_period=config.preemption_sync_period))
  hooks.append(hooks_lib.SummaryHook(config.log_period))
  if eval_fn is not None:
    hooks.append(hooks_lib.EvalHook(eval_fn, config.eval_period))
  hooks.append(hooks_lib.CheckpointHook(manager, every=checkpoint.period, meta_fn=meta_fn,
                                        best_metric=checkpoint.best_metric))
  if config.tensorboard and ctx.is_chief:  # the PNG beside the TensorBoard events, process 0 only
    hooks.append(hooks_lib.CurvesHook())
  return hooks


def _validated(train_iter, model_config, per_host, spec):
  """The batches, the first one validated (shapes, keys, token ids) before it reaches the step."""
  first = True
  for batch in train_iter:
    if first:
      validate_batch(batch, model_config, per_host, spec)
      first = False
    yield batch


def _restore_or_init(compiled, manager, restore: bool, train_iter, init_params, seed: int):
  """The newest readable checkpoint (positioning the data iterator), else a fresh / warm state."""
  if restore and manager.latest_step() is not None:
    abstract = compiled.abstract_state
    got = manager.restore(abstract.params, {"step": abstract.step, "rng": abstract.rng,
                                             "opt_state": abstract.opt_state})
    if got is not None:
      step0, params, rest, meta = got
      if "data_iterator_state" in meta and hasattr(train_iter, "set_state"):
        train_iter.set_state(meta["data_iterator_state"])
      else:
        _skip(train_iter, int(meta.get("batches_consumed", step0)))
      log.info("restored checkpoint step %d from %s", step0, manager.directory)
      return TrainState(step=rest["step"], params=params, opt_state=rest["opt_state"],
                        rng=rest["rng"])
  return compiled.init_fn(seed, init_params)
