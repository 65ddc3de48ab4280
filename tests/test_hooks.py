"""Tests for t2t_jax.training.hooks and the trainer's loop (`trainer.run_loop`) with a fake train step."""

import os
import signal
import time

import numpy as np
import pytest

from t2t_jax.training import hooks, trainer


def _step(state, batch):
  """A fake train step: state counts steps; the loss is the batch value."""
  return state + 1, {"loss": np.float32(batch["x"]), "grad_norm": np.float32(1.0)}


def _batches(values):
  return iter([{"x": v} for v in values])


class Recorder(hooks.Hook):
  def __init__(self, every, needs_metrics=False):
    self.every, self.needs_metrics = every, needs_metrics
    self.calls, self.seen_history, self.finished, self.closed = [], [], [], False

  def __call__(self, ctx):
    self.calls.append(ctx.step)
    self.seen_history.append(len(ctx.history))

  def finish(self, ctx):
    self.finished.append((ctx.step, ctx.stop_reason))


def _ctx(start=0, end=10):
  return hooks.LoopContext(start_step=start, end_step=end, batch_size=4)


def test_loop_runs_hooks_every_n_and_finish_once():
  every3, every1 = Recorder(3, needs_metrics=True), Recorder(1)
  ctx = _ctx()
  state = trainer.run_loop(0, _batches(range(10)), _step, [every3, every1], ctx, lambda b: b)
  assert state == 10 and ctx.step == 10
  assert every3.calls == [3, 6, 9] and every1.calls == list(range(1, 11))
  # needs_metrics: the step's own metrics are on the host when the hook runs ...
  assert every3.seen_history == [3, 6, 9]
  # ... the others see them one step late (dispatch stays asynchronous).
  assert every1.seen_history[:3] == [0, 1, 3]
  assert every3.finished == [(10, None)] and every1.finished == [(10, None)]
  assert [h["step"] for h in ctx.history] == list(range(1, 11))
  assert [h["loss"] for h in ctx.history] == list(range(10))


def test_a_hook_can_stop_the_loop():
  class StopAt4(hooks.Hook):
    every = 2

    def __call__(self, ctx):
      if ctx.step == 4:
        ctx.stop_reason = "preempted"
  rec = Recorder(1)
  ctx = _ctx()
  trainer.run_loop(0, _batches(range(10)), _step, [StopAt4(), rec], ctx, lambda b: b)
  assert ctx.step == 4 and rec.finished == [(4, "preempted")]
  assert len(ctx.history) == 4  # the pending step is read before finish


def test_non_finite_loss_names_the_step():
  ctx = _ctx()
  ctx.last_checkpoint_step = 2
  with pytest.raises(hooks.TrainingDivergedError, match="non-finite loss at step 3.*last checkpoint: 2"):
    trainer.run_loop(0, _batches([1.0, 2.0, float("nan"), 4.0]), _step, [], ctx, lambda b: b)


def test_resume_from_the_last_step_runs_finish_only():
  rec = Recorder(1)
  ctx = _ctx(start=10, end=10)
  trainer.run_loop(10, _batches([]), _step, [rec], ctx, lambda b: b)
  assert rec.calls == [] and rec.finished == [(10, None)]


class FakeWriter:
  def __init__(self):
    self.rows = []

  def write_scalars(self, step, scalars, split):
    self.rows.append((step, split, dict(scalars)))


def test_summary_hook_writes_window_means():
  ctx = _ctx(end=7)
  ctx.writer = FakeWriter()
  trainer.run_loop(0, _batches(range(7)), _step, [hooks.SummaryHook(3)], ctx, lambda b: b)
  assert [(s, split, r["loss"]) for s, split, r in ctx.writer.rows] == [
      (3, "train", 1.0), (6, "train", 4.0), (7, "train", 6.0)]


class FakeManager:
  def __init__(self):
    self.saved = []

  def save(self, step, params, state, meta, metrics=None):
    self.saved.append((step, meta["step"], metrics))


class FakeState:
  params = step = rng = opt_state = None


def test_eval_and_checkpoint_hooks_best_metric_and_final_save():
  evals = []

  def eval_fn(params, step):
    evals.append(step)
    return {"acc": step / 10}
  manager = FakeManager()
  ctx = _ctx(end=7)
  hook_list = [hooks.EvalHook(eval_fn, every=3),
               hooks.CheckpointHook(manager, every=2, meta_fn=lambda s: {"step": s},
                                    best_metric="acc")]
  trainer.run_loop(FakeState(), _batches(range(7)), lambda s, b: (s, _step(0, b)[1]), hook_list,
                   ctx, lambda b: b)
  assert evals == [3, 6, 7]  # every 3 steps and once more at the end
  # Saves every 2 steps; a save at an evaluated step carries the metric; the final step is saved.
  assert manager.saved == [(2, 2, None), (4, 4, None), (6, 6, {"acc": 0.6}), (7, 7, {"acc": 0.7})]
  assert [e["step"] for e in ctx.eval_history] == [3, 6, 7] and ctx.last_checkpoint_step == 7


def test_checkpoint_hook_rejects_an_unknown_best_metric():
  from t2t_jax.errors import UserInputError
  ctx = _ctx(end=2)
  hook_list = [hooks.EvalHook(lambda p, s: {"acc": 1.0}, every=1),
               hooks.CheckpointHook(FakeManager(), every=1, meta_fn=lambda s: {"step": s},
                                    best_metric="hits")]
  with pytest.raises(UserInputError, match="BEST_METRIC 'hits' is not an eval metric"):
    trainer.run_loop(FakeState(), _batches([0, 1]), lambda s, b: (s, _step(0, b)[1]), hook_list,
                     ctx, lambda b: b)


def test_preemption_hook_stops_after_sigterm_and_restores_the_handler():
  before = signal.getsignal(signal.SIGTERM)
  hook = hooks.PreemptionHook(enabled=True)
  ctx = _ctx()

  def step(state, batch):
    if batch["x"] == 3:
      os.kill(os.getpid(), signal.SIGTERM)
    return _step(state, batch)
  try:
    trainer.run_loop(0, _batches(range(10)), step, [hook], ctx, lambda b: b)
  finally:
    hook.close()
  assert ctx.stop_reason == "preempted" and ctx.step == 4
  assert signal.getsignal(signal.SIGTERM) is before


def test_throughput_excludes_compilation_and_time_inside_hooks():
  class Slow(hooks.Hook):
    every = 2

    def __call__(self, ctx):
      time.sleep(0.2)
  tp = hooks.ThroughputHook()
  ctx = _ctx(end=6)
  t0 = time.perf_counter()
  trainer.run_loop(0, _batches(range(6)), _step, [tp, Slow()], ctx, lambda b: b)
  wall = time.perf_counter() - t0
  assert ctx.hook_seconds >= 0.6 and wall >= 0.6
  # 5 timed steps of a trivial step function: far faster than the 0.2 s sleeps would suggest.
  assert ctx.examples_per_second > 5 * 4 / 0.1
