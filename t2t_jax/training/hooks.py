"""Training-loop hooks (Levanter's TrainerHooks / clu's periodic actions): each concern in one place.

The loop (`t2t_jax.training.trainer.run_loop`) runs the train step and, after every step divisible by a
hook's `every`, calls `hook(ctx)`; after the last step (or a stop) it calls `hook.finish(ctx)` on
every hook, and `hook.close()` in any case.  A hook may set `ctx.stop_reason` to end training after
the current step.  Hooks with `needs_metrics` make the loop read the step's metrics from the device
first; the others keep dispatch asynchronous (metrics are read one step late).

  SummaryHook     averaged train metrics (+ the window's examples/s) every `every` steps ->
                  TensorBoard + metrics.jsonl
  ThroughputHook  steady-state examples/s (compilation and time inside other hooks excluded)
  ProgressHook    a tqdm bar with loss and examples/s
  PreemptionHook  SIGTERM -> save and stop; multi-host: the hosts agree through a collective
  EvalHook        eval_fn(params, step) every `every` steps and at the end
  CheckpointHook  orbax checkpoint every `every` steps, at the end and when stopped (best-by-metric)
  CurvesHook      at the end, MODEL_DIR/training_curves.png from metrics.jsonl (t2t_jax.plots)
"""

from __future__ import annotations

import dataclasses
import logging
import math
import signal
import threading
import time
from typing import Any, Callable

import jax
import numpy as np

from t2t_jax import plots
from t2t_jax.errors import UserInputError

log = logging.getLogger(__name__)


class TrainingDivergedError(RuntimeError):
  """The loss or gradient norm became NaN/inf; the message names the step."""


@dataclasses.dataclass
class LoopContext:
  """What hooks see.  `history` rows are host floats, read one step late unless a hook that
  `needs_metrics` is due."""
  start_step: int
  end_step: int
  batch_size: int
  state: Any = None
  step: int = 0
  is_chief: bool = True
  writer: Any = None  # summaries.MetricsWriter
  history: list = dataclasses.field(default_factory=list)
  eval_history: list = dataclasses.field(default_factory=list)
  last_eval: dict | None = None  # {'step': s, <metric>: value}
  last_checkpoint_step: int | None = None
  stop_reason: str | None = None  # None: running / completed; 'preempted'
  hook_seconds: float = 0.0  # wall time inside hooks (excluded from throughput)
  examples_per_second: float | None = None

  def record(self, step: int, metrics) -> None:
    """Reads one step's device metrics to the host; stops on a non-finite loss or gradient."""
    row = {k: float(v) for k, v in jax.device_get(metrics).items()}
    if not (math.isfinite(row["loss"]) and math.isfinite(row["grad_norm"])):
      what = "loss" if not math.isfinite(row["loss"]) else "gradient norm"
      raise TrainingDivergedError(
          f"non-finite {what} at step {step} (loss={row['loss']}, grad_norm={row['grad_norm']}); "
          f"last checkpoint: {self.last_checkpoint_step}")
    self.history.append({"step": step, **row})


class Hook:
  """Base hook: `every` (None: only `finish`), `needs_metrics`, `__call__`, `finish`, `close`."""
  every: int | None = None
  needs_metrics: bool = False

  def __call__(self, ctx: LoopContext) -> None:
    pass

  def finish(self, ctx: LoopContext) -> None:
    pass

  def close(self) -> None:
    pass


class SummaryHook(Hook):
  """Writes the mean of the train metrics since the last write (every `every` steps and at the end)."""
  needs_metrics = True

  def __init__(self, every: int):
    self.every = every
    self._written = 0  # rows of ctx.history already summarised
    self._mark = None  # (step, time, ctx.hook_seconds) at the previous write

  def _examples_per_second(self, ctx, step: int) -> float | None:
    """Throughput over the window since the previous write, time inside hooks excluded; the first
    window (compilation) gets ThroughputHook's steady-state rate, None without one."""
    now = time.perf_counter()
    mark, self._mark = self._mark, (step, now, ctx.hook_seconds)
    if mark is None:
      return ctx.examples_per_second
    elapsed = (now - mark[1]) - (ctx.hook_seconds - mark[2])
    return (step - mark[0]) * ctx.batch_size / elapsed if step > mark[0] and elapsed > 0 else None

  def __call__(self, ctx):
    rows = ctx.history[self._written:]
    if not rows:
      return
    keys = [k for k in rows[0] if k != "step"]
    avg = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    rate = self._examples_per_second(ctx, rows[-1]["step"])
    if rate:
      avg["examples_per_second"] = float(rate)
    if ctx.writer is not None:
      ctx.writer.write_scalars(rows[-1]["step"], avg, "train")
    self._written = len(ctx.history)

  def finish(self, ctx):
    if ctx.stop_reason is None:  # a stopped run's partial window is logged by the resumed run
      self(ctx)


class ThroughputHook(Hook):
  """Steady-state throughput: the first step (compilation) and time inside hooks are excluded."""
  every = 1

  def __init__(self):
    self._t0 = self._t_last = None
    self._hooks0 = self._hooks_last = 0.0
    self._steps = 0

  def __call__(self, ctx):
    now = time.perf_counter()
    if self._t0 is None:
      self._t0, self._hooks0 = now, ctx.hook_seconds
    else:
      self._steps += 1
    self._t_last, self._hooks_last = now, ctx.hook_seconds
    ctx.examples_per_second = self.rate(ctx.batch_size)

  def rate(self, batch_size: int) -> float | None:
    if not self._steps:
      return None
    elapsed = (self._t_last - self._t0) - (self._hooks_last - self._hooks0)
    return self._steps * batch_size / max(elapsed, 1e-9)

  def finish(self, ctx):
    ctx.examples_per_second = self.rate(ctx.batch_size)
    if ctx.is_chief and ctx.examples_per_second:
      log.info("%.2f steps/s, %.1f examples/s", ctx.examples_per_second / ctx.batch_size,
               ctx.examples_per_second)


class ProgressHook(Hook):
  """tqdm progress bar (chief only) with the latest loss and the steady-state examples/s."""
  every = 1

  def __init__(self, *, total: int, initial: int, refresh_every: int = 10):
    from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
    self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, desc="train")
    self._refresh_every = max(1, refresh_every)

  def __call__(self, ctx):
    self._bar.update(1)
    if ctx.step % self._refresh_every == 0 and ctx.examples_per_second:
      loss = ctx.history[-1]["loss"] if ctx.history else float("nan")
      self._bar.set_postfix(loss=f"{loss:.4f}", ex_per_s=f"{ctx.examples_per_second:.1f}",
                            refresh=False)

  def close(self):
    self._bar.close()


class PreemptionHook(Hook):
  """SIGTERM -> the loop stops after the current step and CheckpointHook saves.

  One process: checks its flag after every step.  Several processes (hosts): every
  `sync_period` steps all processes all-gather their flags and stop together when any host got
  SIGTERM, so a host that got none never waits forever on a collective its peers left.  (JAX's
  `reached_preemption_sync_point` is not used: it needs a call at every step on every host and sees
  only notices delivered to the coordination service's own SIGTERM handler, which this Python
  handler replaces.)
  """

  def __init__(self, *, enabled: bool = True, sync_period: int = 10):
    self.flag = False
    self._old = None
    self._multi = jax.process_count() > 1
    self.every = max(1, int(sync_period)) if self._multi else 1
    self._installed = enabled and threading.current_thread() is threading.main_thread()
    if self._installed:
      self._old = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    log.warning("SIGTERM received: saving a checkpoint and stopping")
    self.flag = True

  def agreed(self) -> bool:
    """True when this or (multi-host) any process received SIGTERM; every process gets the same."""
    if not self._multi:
      return self.flag
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    flags = multihost_utils.process_allgather(np.asarray([int(self.flag)], np.int32))
    return bool(np.asarray(flags).any())

  def __call__(self, ctx):
    if ctx.step < ctx.end_step and ctx.stop_reason is None and self.agreed():
      ctx.stop_reason = "preempted"
      log.warning("stopping at step %d (SIGTERM); a checkpoint is saved", ctx.step)

  def close(self):
    if self._installed:
      signal.signal(signal.SIGTERM, self._old)
      self._installed = False


class EvalHook(Hook):
  """Runs `eval_fn(params, step) -> {name: value}` every `every` steps and after the last step."""
  needs_metrics = True

  def __init__(self, eval_fn: Callable[[Any, int], dict], every: int | None):
    self.eval_fn = eval_fn
    self.every = every

  def __call__(self, ctx):
    if ctx.stop_reason is not None:
      return
    t0 = time.perf_counter()
    metrics = {k: float(v) for k, v in self.eval_fn(ctx.state.params, ctx.step).items()}
    metrics["eval_seconds"] = time.perf_counter() - t0
    ctx.last_eval = {"step": ctx.step, **metrics}
    ctx.eval_history.append(ctx.last_eval)
    if ctx.writer is not None:
      ctx.writer.write_scalars(ctx.step, metrics, "eval")
    log.info("eval at step %d: %s", ctx.step, metrics)

  def finish(self, ctx):
    if ctx.step > ctx.start_step and (ctx.last_eval or {}).get("step") != ctx.step:
      self(ctx)


class CheckpointHook(Hook):
  """Saves TrainState + `meta_fn(step)` every `every` steps and at the end (completed or stopped).

  With `best_metric`, a save at an evaluated step carries that metric (the manager keeps the best).
  """
  needs_metrics = True  # a diverged step raises before its state is saved

  def __init__(self, manager, *, every: int | None, meta_fn: Callable[[int], dict],
               best_metric: str | None = None):
    self.manager = manager
    self.every = every
    self.meta_fn = meta_fn
    self.best_metric = best_metric

  def __call__(self, ctx):
    metrics = None
    if self.best_metric and (ctx.last_eval or {}).get("step") == ctx.step:
      if self.best_metric not in ctx.last_eval:
        raise UserInputError(f"BEST_METRIC {self.best_metric!r} is not an eval metric; eval gives "
                             f"{sorted(k for k in ctx.last_eval if k != 'step')}")
      metrics = {self.best_metric: ctx.last_eval[self.best_metric]}
    s = ctx.state
    self.manager.save(ctx.step, s.params, {"step": s.step, "rng": s.rng, "opt_state": s.opt_state},
                      self.meta_fn(ctx.step), metrics)
    ctx.last_checkpoint_step = ctx.step

  def finish(self, ctx):
    if ctx.last_checkpoint_step != ctx.step:
      self(ctx)
    if ctx.stop_reason == "preempted":
      log.warning("stopped by SIGTERM at step %d; checkpoint saved", ctx.step)


class CurvesHook(Hook):
  """After a completed run, process 0 draws MODEL_DIR/training_curves.png (loss, token accuracy,
  learning rate, examples/s) from the metrics the SummaryHook and EvalHook logged, beside the
  TensorBoard events; `t2t plot MODEL_DIR` redraws it.  Run it after those hooks and the
  CheckpointHook: a figure that cannot be drawn is a warning, never a lost run."""

  def finish(self, ctx):
    if not ctx.is_chief or ctx.writer is None or not ctx.writer.enabled:
      return
    if ctx.stop_reason is not None or ctx.step <= ctx.start_step:
      return
    ctx.writer.flush()
    try:
      path, notes = plots.training_curves(ctx.writer.model_dir)
    except Exception as e:  # pylint: disable=broad-except  (matplotlib, the file system, ...)
      log.warning("training curves not drawn: %s", e)
      return
    log.info("training curves: %s%s", path, f" ({'; '.join(notes)})" if notes else "")
