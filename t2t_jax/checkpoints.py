"""Orbax checkpoints in MODEL_DIR: async save, keep latest N plus best-by-metric, safe restore.

Layout:
  MODEL_DIR/model_config.json              T5Config fields (written once, atomically)
  MODEL_DIR/checkpoints/<step>/params      parameter tree (orbax StandardSave, sharded arrays)
  MODEL_DIR/checkpoints/<step>/state       {'step', 'rng', 'opt_state'}
  MODEL_DIR/checkpoints/<step>/meta        JSON: step, seed, data-iterator position/state, ...

Orbax writes each step to a temporary directory and renames it when complete, so a crash mid-save
leaves no half step behind (the temporary is cleaned up on the next start).  A latest step that
cannot be read anyway (disk corruption, deleted files) is skipped with a warning and the previous
step is restored instead; once an older step restores, the unreadable newer ones are moved to
MODEL_DIR/checkpoints.corrupt/<step>.<time>, so the retrained steps are saved again (not skipped as
"already saved") and later loads find them.  When no step restores (e.g. a changed model config),
nothing is moved and the error names every step.
"""

import contextlib
import json
import logging
import os
import re
import sys
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from t2t_jax import io_utils
from t2t_jax.errors import UserInputError
from t2t_jax import models

log = logging.getLogger(__name__)

CHECKPOINT_SUBDIR = "checkpoints"
CORRUPT_SUFFIX = ".corrupt"  # MODEL_DIR/checkpoints.corrupt/<step>.<time>: unreadable steps moved aside
MODEL_CONFIG_FILE = "model_config.json"


# --------------------------------------------------------------------------------- model config


def save_model_config(model_dir: str, config) -> None:
  """MODEL_DIR/model_config.json: the config's JSON form, with its "family"."""
  if jax.process_index() == 0:
    io_utils.write_json(os.path.join(model_dir, MODEL_CONFIG_FILE), config.to_json())


def load_model_config(model_dir: str):
  """The model config of a MODEL_DIR (any family; no "family" key means T5.1.1)."""
  path = os.path.join(model_dir, MODEL_CONFIG_FILE)
  if not os.path.exists(path):
    raise UserInputError(f"no model config at {path}: is {model_dir!r} a t2t_jax MODEL_DIR?")
  try:
    with open(path, encoding="utf-8") as f:
      fields = json.load(f)
  except json.JSONDecodeError as e:
    raise UserInputError(f"{path}:{e.lineno}: bad JSON ({e.msg})") from None
  except (OSError, UnicodeDecodeError) as e:
    raise UserInputError(f"{path}: unreadable ({e})") from None
  return models.config_from_json(fields, source=path)


# ---------------------------------------------------------------------------------- the manager


def _abstract(tree, shardings=None):
  """ShapeDtypeStructs (with shardings) for an array tree or its eval_shape."""
  if shardings is None:
    shardings = jax.tree.map(lambda x: getattr(x, "sharding", None), tree)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree,
                      shardings)


class CheckpointManager:
  """Thin policy layer over `orbax.checkpoint.CheckpointManager`.

  Args:
    model_dir: MODEL_DIR; checkpoints go to MODEL_DIR/checkpoints.
    keep: how many of the latest checkpoints to keep (None = all).
    best_metric: eval metric name; the best `keep_best` checkpoints by it are kept as well.
    best_mode: 'max' or 'min' for best_metric.
    async_save: write in a background thread while training continues.
    read_only: only restore (orbax's read-only manager: no directory created, nothing deleted).
  """

  def __init__(self, model_dir: str, *, keep: int | None = 3, best_metric: str | None = None,
               best_mode: str = "max", keep_best: int = 1, async_save: bool = True,
               read_only: bool = False):
    if best_mode not in ("max", "min"):
      raise UserInputError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
    self.directory = os.path.abspath(os.path.join(model_dir, CHECKPOINT_SUBDIR))
    self.best_metric = best_metric
    if read_only:
      self._manager = ocp.CheckpointManager(
          self.directory, options=ocp.CheckpointManagerOptions(read_only=True, create=False),
          item_names=("params", "state", "meta"))
      return
    policies = [ocp.checkpoint_managers.LatestN(n=keep)]
    if best_metric:
      policies.append(ocp.checkpoint_managers.BestN(
          get_metric_fn=lambda m: m[best_metric], reverse=(best_mode == "min"), n=keep_best,
          keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
        enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True,
        create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("params", "state", "meta"))

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, params, state, meta: dict, metrics: dict | None = None) -> None:
    """Starts saving `step` (returns before the write ends when async)."""
    if step in self._manager.all_steps():
      return
    metrics = {k: float(v) for k, v in (metrics or {}).items()} or None
    self._manager.save(
        step,
        args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                state=ocp.args.StandardSave(state),
                                meta=ocp.args.JsonSave(meta)),
        metrics=metrics, force=True)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def restore(self, abstract_params, abstract_state, step: int | None = None):
    """Restores (step, params, state, meta) from `step` or the newest readable step.

    `abstract_*` are ShapeDtypeStruct trees carrying the target shardings (any mesh).  Returns None
    when there is no checkpoint.  Unreadable steps are skipped with a warning.
    """
    steps = [step] if step is not None else sorted(self._manager.all_steps(), reverse=True)
    errors = []
    for s in steps:
      try:
        restored = self._manager.restore(
            s, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract_params),
                                       state=ocp.args.StandardRestore(abstract_state),
                                       meta=ocp.args.JsonRestore()))
      except Exception as e:  # pylint: disable=broad-except
        msg = f"checkpoint {self.directory}/{s} is unreadable ({_first_line(e, f'{self.directory}/{s}')})"
        if step is not None:
          raise UserInputError(msg) from e
        log.warning("%s; falling back to an earlier checkpoint", msg)
        errors.append(msg)
        continue
      if errors:
        log.warning("restored checkpoint step %d after skipping %d unreadable one(s)", s,
                    len(errors))
        # An older step restored with the same targets, so the newer ones are damaged, not
        # mismatched: move them aside so the steps retrained from here are saved again.
        self._move_aside([bad for bad in steps if bad > s])
      return s, restored["params"], restored["state"], restored["meta"]
    if errors:
      raise UserInputError(f"no readable checkpoint in {self.directory}: " + "; ".join(errors))
    return None

  def _move_aside(self, steps: list[int]) -> None:
    """Renames unreadable step dirs to MODEL_DIR/checkpoints.corrupt/<step>.<UTC time> (kept for
    inspection, outside the dir orbax manages) and reloads the step list."""
    if jax.process_index() == 0:
      aside = self.directory + CORRUPT_SUFFIX
      stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
      for s in steps:
        src = os.path.join(self.directory, str(s))
        if os.path.isdir(src):
          os.makedirs(aside, exist_ok=True)
          dst = os.path.join(aside, f"{s}.{stamp}")
          os.replace(src, dst)
          log.warning("moved unreadable checkpoint %s to %s; step %d will be trained and saved again",
                      src, dst, s)
    ocp.multihost.sync_global_processes("t2t_move_aside_corrupt_checkpoints")
    self._manager.reload()

  def restore_params(self, abstract_params, step: int | None = None):
    """(step, params) from `step` or the newest readable step; None when there is none.

    Skipped steps are logged only when an older one restores; when none does, the UserInputError
    names the first failure (so a CLI prints exactly one line).
    """
    steps = [step] if step is not None else sorted(self._manager.all_steps(), reverse=True)
    errors = []
    for s in steps:
      try:
        restored = self._manager.restore(
            s, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract_params)))
      except Exception as e:  # pylint: disable=broad-except
        reason = f"checkpoint {self.directory}/{s} is unreadable ({_first_line(e, f'{self.directory}/{s}')})"
        if step is not None:
          raise UserInputError(reason) from None
        errors.append(reason)
        continue
      for reason in errors:
        log.warning("%s; restored step %d instead", reason, s)
      return s, restored["params"]
    if errors:
      raise UserInputError(f"no readable checkpoint: {errors[0]}"
                           + (f" (and {len(errors) - 1} older)" if len(errors) > 1 else ""))
    return None


# Tails that say nothing to a user: orbax's "... See full TensorStore details: <bound method ...spec
# of TensorStore({" (a method's repr, cut by the first line) and tensorstore's " [tensorstore_spec...".
_REPR_TAIL = re.compile(r"\s*(?:See full TensorStore details:\s*)?<bound method .*$|\s*\[tensorstore_spec.*$")


def _first_line(e: BaseException, step_dir: str = "", limit: int = 400) -> str:
  """One line for a failed restore of `step_dir`: the innermost cause (orbax wraps tensorstore's
  error, which names the array and the file, in one that names only an array index and ends in a
  repr), its first line, repr tails cut and paths inside `step_dir` made relative to it."""
  seen = {id(e)}
  while e.__cause__ is not None and id(e.__cause__) not in seen and str(e.__cause__).strip():
    e = e.__cause__
    seen.add(id(e))
  lines = str(e).strip().splitlines()
  text = _REPR_TAIL.sub("", lines[0] if lines else "").rstrip(" .:")
  if step_dir:
    text = text.replace(step_dir.rstrip(os.sep) + os.sep, "")
  text = f"{type(e).__name__}: {text}" if text else type(e).__name__
  return text if len(text) <= limit else text[:limit] + "..."


def _drop_closed_loop_callbacks(unraisable) -> None:
  """sys.unraisablehook that drops tensorstore's late callbacks into orbax's closed event loop.

  When a restore fails, orbax returns (closing its event loop) while tensorstore reads of the same
  restore are still finishing; each then reports `RuntimeError: Event loop is closed` from a
  tensorstore thread as an unraisable exception, a traceback per array, possibly after the CLI's
  error line; a read coroutine of the same restore that failed too (a damaged chunk) is collected
  later with its error ("Encountered error while reading array index ... <bound method ...").
  Those reads' results are unwanted anyway; anything else goes to the previous hook.
  """
  exc = unraisable.exc_value
  if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
    return
  if str(exc).startswith("Encountered error while reading array index"):
    return
  _PREVIOUS_UNRAISABLEHOOK[0](unraisable)


_PREVIOUS_UNRAISABLEHOOK = []


@contextlib.contextmanager
def _quiet_orbax():
  """Read-only loads report through UserInputError/warnings of ours, not orbax's absl chatter."""
  if not _PREVIOUS_UNRAISABLEHOOK:  # process-wide: the late callbacks outlive this block
    _PREVIOUS_UNRAISABLEHOOK.append(sys.unraisablehook)
    sys.unraisablehook = _drop_closed_loop_callbacks
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(logging.CRITICAL)
  try:
    yield
  finally:
    absl_logger.setLevel(level)


def abstract_params(config, sharding_fn=None):
  """ShapeDtypeStruct tree of the (unboxed) parameters; shardings from `sharding_fn(boxed)`.

  Without `sharding_fn` every array lands on the first local device.
  """
  boxed = models.get_model(config).abstract_params()
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  unboxed = nn.unbox(boxed)
  if sharding_fn is None:
    dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shardings = jax.tree.map(lambda _: dev, unboxed)
  else:
    shardings = sharding_fn(boxed)
  return _abstract(unboxed, shardings)


def load_params(model_dir: str, *, step: int | None = None, partitioner=None
                ) -> tuple[Any, Any]:
  """Loads (model config, params) from MODEL_DIR: the given step or the newest readable one.

  Params are placed on the first device, or sharded by `partitioner` when given.
  """
  config = load_model_config(model_dir)
  directory = os.path.join(model_dir, CHECKPOINT_SUBDIR)
  if not os.path.isdir(directory):
    raise UserInputError(f"no checkpoints in {directory}")
  target = abstract_params(config, partitioner.shardings_of if partitioner else None)
  with _quiet_orbax():
    manager = CheckpointManager(model_dir, read_only=True)
    try:
      if step is not None and step not in manager.all_steps():
        raise UserInputError(f"no checkpoint step {step} in {directory}; have {manager.all_steps()}")
      got = manager.restore_params(target, step)
    finally:
      manager.close()
  if got is None:
    raise UserInputError(f"no readable checkpoint in {directory}")
  return config, got[1]


def to_numpy(tree):
  """Fully-addressable jax arrays -> numpy (for tests/export)."""
  return jax.tree.map(np.asarray, tree)
