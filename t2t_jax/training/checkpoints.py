"""Orbax checkpoints in MODEL_DIR: async save, keep latest N plus best-by-metric, safe restore.

Layout:
  MODEL_DIR/model_config.json              T5Config fields (written once, atomically)
  MODEL_DIR/checkpoints/<step>/params      parameter tree (orbax StandardSave, sharded arrays)
  MODEL_DIR/checkpoints/<step>/state       {'step', 'rng', 'opt_state'}
  MODEL_DIR/checkpoints/<step>/meta        JSON: step, seed, data-iterator position/state, ...

Orbax writes each step to a temporary directory and renames it when complete, so a crash mid-save
leaves no half step behind (the temporary is cleaned up on the next start); in a gs:// or s3://
bucket (no rename) it writes the step in place and commits it with commit_success.txt.  A latest step that
cannot be read anyway (disk corruption, deleted files) is skipped with a warning and the previous
step is restored instead; once an older step restores, the unreadable newer ones are moved to
MODEL_DIR/checkpoints.corrupt/<step>.<time>, so the retrained steps are saved again (not skipped as
"already saved") and later loads find them.  When no step restores (e.g. a changed model config),
nothing is moved and the error names every step.

Integrity: once a step is committed, MODEL_DIR/checkpoints/<step>/t2t_manifest.json records each of
its files' sha256 and size (written atomically by process 0 before the next save starts, and at the
end).  Orbax detects truncated or missing files but not a flipped byte inside a data file, which would
restore as a silently wrong weight; with the manifest, a step that fails verification is treated
like an unreadable one when training resumes (moved aside, the previous good step used) and is
refused with exit 2 (the file named) when a model dir is loaded for recommend / export / serve.
Steps written before manifests existed (or by a run killed between commit and manifest) load with a
warning and get their manifest when training resumes from them.  Opt out on trusted storage with
`T2T_VERIFY_CHECKPOINTS=0` (or `verify=False`, `--no_verify` on the CLI).
"""

import concurrent.futures
import contextlib
import hashlib
import logging
import os
import posixpath
import re
import sys
import time
from typing import Any

import jax
import orbax.checkpoint as ocp

from t2t_jax import io_utils, models, storage
from t2t_jax.data import formats
from t2t_jax.errors import UserInputError

log = logging.getLogger(__name__)

CHECKPOINT_SUBDIR = "checkpoints"
CORRUPT_SUFFIX = ".corrupt"  # MODEL_DIR/checkpoints.corrupt/<step>.<time>: unreadable steps moved aside
MODEL_CONFIG_FILE = "model_config.json"
MANIFEST_FILE = "t2t_manifest.json"  # in each committed step dir: {relative path: sha256, size}
VERIFY_ENV = "T2T_VERIFY_CHECKPOINTS"


class CheckpointIntegrityError(UserInputError):
  """A checkpoint file differs from the manifest written when its step was committed."""


# ----------------------------------------------------------------------------- step manifests


def verify_enabled(verify: bool | None = None) -> bool:
  """`verify`, or $T2T_VERIFY_CHECKPOINTS (default on; 0/false/no/off turns it off)."""
  if verify is not None:
    return bool(verify)
  raw = os.environ.get(VERIFY_ENV, "1").strip().lower()
  if raw in ("1", "true", "yes", "on", ""):
    return True
  if raw in ("0", "false", "no", "off"):
    return False
  raise UserInputError(f"{VERIFY_ENV}={raw!r}: use 1 or 0")


def _step_files(step_dir: str) -> list[str]:
  """Relative paths of a step's files (the manifest and atomic-write temps excluded), sorted."""
  return sorted(rel for rel in storage.walk_files(step_dir)
                if rel != MANIFEST_FILE and not io_utils.is_temp_name(rel.rsplit("/", 1)[-1]))


def _digest(path: str) -> tuple[str, int]:
  if not storage.is_remote(path):
    with open(path, "rb") as f:
      return hashlib.file_digest(f, "sha256").hexdigest(), os.fstat(f.fileno()).st_size
  h, size = hashlib.sha256(), 0
  with storage.open(path, "rb") as f:
    while chunk := f.read(1 << 22):
      h.update(chunk)
      size += len(chunk)
  return h.hexdigest(), size


def _digests(step_dir: str, rels: list[str]) -> dict[str, tuple[str, int] | None]:
  """{rel: (sha256, bytes)} hashed on a few threads (hashlib releases the GIL); None = missing."""
  def one(rel):
    try:
      return _digest(storage.join(step_dir, rel))
    except FileNotFoundError:
      return None
  workers = max(1, min(8, os.cpu_count() or 1, len(rels)))
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    return dict(zip(rels, pool.map(one, rels)))


def write_step_manifest(step_dir: str) -> dict:
  """Hashes a committed step's files into STEP/t2t_manifest.json (atomically); returns it."""
  rels = _step_files(step_dir)
  files = {rel: {"sha256": d[0], "bytes": d[1]} for rel, d in _digests(step_dir, rels).items()
           if d is not None}
  manifest = {"format": 1, "algorithm": "sha256", "files": files}
  io_utils.write_json(storage.join(step_dir, MANIFEST_FILE), manifest, indent=None)
  return manifest


def verify_step(step_dir: str, items: tuple[str, ...] | None = None) -> bool:
  """Checks a step's files against its manifest: True when verified, False when it has none.

  items: only files under these item dirs (e.g. ("params",) for inference loads) and the step's
  top-level files.  Raises CheckpointIntegrityError naming the first file that is missing, changed
  in size or in content, or an unreadable manifest.
  """
  path = storage.join(step_dir, MANIFEST_FILE)
  if not storage.exists(path):
    return False
  try:
    files = formats.read_json_file(path, MANIFEST_FILE)["files"]
    assert isinstance(files, dict)
  except (UserInputError, OSError, KeyError, TypeError, AssertionError) as e:
    raise CheckpointIntegrityError(f"checkpoint {step_dir} is damaged: unreadable {MANIFEST_FILE} ({e})"
                                   ) from None
  rels = sorted(rel for rel in files
                if items is None or "/" not in rel or rel.split("/", 1)[0] in items)
  for rel, got in _digests(step_dir, rels).items():
    want = files[rel]
    if got is None:
      reason = f"{rel} is missing (listed in {MANIFEST_FILE})"
    elif got[1] != want.get("bytes"):
      reason = f"{rel} is {got[1]} bytes, {want.get('bytes')} when written"
    elif got[0] != want.get("sha256"):
      reason = f"{rel} changed since it was written (sha256 mismatch)"
    else:
      continue
    raise CheckpointIntegrityError(f"checkpoint {step_dir} is damaged: {reason}")
  return True


# --------------------------------------------------------------------------------- model config


def save_model_config(model_dir: str, config) -> None:
  """MODEL_DIR/model_config.json: the config's JSON form, with its "family"."""
  if jax.process_index() == 0:
    io_utils.write_json(storage.join(model_dir, MODEL_CONFIG_FILE), config.to_json())


def load_model_config(model_dir: str):
  """The model config of a MODEL_DIR (any family; no "family" key means T5.1.1)."""
  path = storage.join(model_dir, MODEL_CONFIG_FILE)
  if not storage.exists(path):
    raise UserInputError(f"no model config at {path}: is {model_dir!r} a t2t_jax MODEL_DIR?")
  return models.config_from_json(formats.read_json_file(path, "model config"), source=path)


# ---------------------------------------------------------------------------------- the manager


def _abstract(tree, shardings=None):
  """ShapeDtypeStructs (with shardings) for an array tree or its eval_shape."""
  if shardings is None:
    shardings = jax.tree.map(lambda x: getattr(x, "sharding", None), tree)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree,
                      shardings)


# ------------------------------------------------------------------------- s3:// checkpoints


def s3_kvstore_spec(url: str) -> dict:
  """tensorstore's s3 kvstore spec for `url` (s3://bucket/path).  tensorstore reads credentials
  from the AWS_* variables but no endpoint variable: an S3-compatible store's endpoint (MinIO, Ceph,
  moto) is taken from AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, as boto3 / s3fs take it."""
  bucket, _, path = url[len("s3://"):].partition("/")
  spec = {"driver": "s3", "bucket": bucket, "path": path}
  endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
  if endpoint:
    spec["endpoint"] = endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
      spec["aws_region"] = region
  return spec


def _route_s3_to_tensorstore() -> None:
  """Lets orbax write and read array data under s3:// through tensorstore's s3 driver.

  orbax 0.12 builds tensorstore specs for gs:// only: an s3:// directory is normalized to
  's3:/bucket/...' and refused ("Checkpoint path should be absolute").  This wraps the three
  (private) orbax helpers involved so that s3:// paths keep their '//' and get `s3_kvstore_spec`;
  every other path goes to orbax's own code.  Idempotent; does nothing on an orbax that keeps
  s3:// paths itself or lacks these helpers (then orbax's own behaviour applies)."""
  from orbax.checkpoint._src.path import gcs_utils  # pylint: disable=import-outside-toplevel
  from orbax.checkpoint._src.serialization import tensorstore_utils  # pylint: disable=import-outside-toplevel
  names = ((tensorstore_utils, "_normalize_path"), (tensorstore_utils, "_use_gcs_driver"),
           (gcs_utils, "get_kvstore_for_gcs"))
  if not all(callable(getattr(module, name, None)) for module, name in names):
    return
  normalize, native, kvstore = (getattr(module, name) for module, name in names)
  if getattr(normalize, "t2t_s3", False) or normalize("s3://b/x/") == "s3://b/x":
    return

  def s3_normalize(path):
    return "s3://" + posixpath.normpath(path[5:]) if path.startswith("s3://") else normalize(path)

  s3_normalize.t2t_s3 = True
  tensorstore_utils._normalize_path = s3_normalize  # pylint: disable=protected-access
  tensorstore_utils._use_gcs_driver = lambda d: d.startswith("s3://") or native(d)  # pylint: disable=protected-access
  gcs_utils.get_kvstore_for_gcs = lambda p: s3_kvstore_spec(p) if p.startswith("s3://") else kvstore(p)


def _s3_options(directory: str) -> dict:
  """CheckpointManagerOptions for an s3:// directory (none for other paths): orbax's commit file,
  as it uses on gs://, instead of its default elsewhere (write to a temporary dir, then rename it: on
  S3 a rename copies every object, and fails against moto)."""
  if not directory.startswith("s3://"):
    return {}
  _route_s3_to_tensorstore()
  if hasattr(ocp, "options") and hasattr(ocp.options, "AtomicityOptions"):
    mode = ocp.options.AtomicityMode.COMMIT_FILE
    return {"atomicity_options": ocp.options.AtomicityOptions(mode=mode)}
  return {"temporary_path_class": ocp.path.atomicity.CommitFileTemporaryPath}  # older orbax


class CheckpointManager:
  """Thin policy layer over `orbax.checkpoint.CheckpointManager`.

  Args:
    model_dir: MODEL_DIR; checkpoints go to MODEL_DIR/checkpoints.
    keep: how many of the latest checkpoints to keep (None = all).
    best_metric: eval metric name; the best `keep_best` checkpoints by it are kept as well.
    best_mode: 'max' or 'min' for best_metric.
    async_save: write in a background thread while training continues.
    read_only: only restore (orbax's read-only manager: no directory created, nothing deleted).
    verify: check each step against its manifest before restoring it (None: $T2T_VERIFY_CHECKPOINTS,
      default on); saved steps get their manifest either way.
  """

  def __init__(self, model_dir: str, *, keep: int | None = 3, best_metric: str | None = None,
               best_mode: str = "max", keep_best: int = 1, async_save: bool = True,
               read_only: bool = False, verify: bool | None = None):
    if best_mode not in ("max", "min"):
      raise UserInputError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
    self.directory = storage.join(storage.abspath(model_dir), CHECKPOINT_SUBDIR)
    if storage.is_remote(self.directory):
      storage.fresh_listings()  # orbax lists steps through epath -> fsspec: see what others wrote
    self.best_metric = best_metric
    self.verify = verify_enabled(verify)
    self.read_only = read_only
    self._unsealed: list[int] = []  # steps saved by this manager whose manifest is not written yet
    if read_only:
      self._manager = ocp.CheckpointManager(
          self.directory, options=ocp.CheckpointManagerOptions(
              read_only=True, create=False, **_s3_options(self.directory)),
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
        create=True,
        **_s3_options(self.directory))
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
    self._seal()  # the previous save is committed by now (orbax waits for it before a new one)
    metrics = {k: float(v) for k, v in (metrics or {}).items()} or None
    self._manager.save(
        step,
        args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                state=ocp.args.StandardSave(state),
                                meta=ocp.args.JsonSave(meta)),
        metrics=metrics, force=True)
    self._unsealed.append(step)

  def _step_dir(self, step: int) -> str:
    return storage.join(self.directory, str(step))

  def _seal(self) -> None:
    """Writes the manifest of every step this manager saved, once orbax has committed it (process
    0; the files of every host are in the shared step dir by then).  A step already deleted by the
    keep policy is skipped."""
    if not self._unsealed:
      return
    self._manager.wait_until_finished()
    if jax.process_index() == 0:
      for s in self._unsealed:
        if storage.isdir(self._step_dir(s)) and s in self._manager.all_steps():
          write_step_manifest(self._step_dir(s))
    self._unsealed = []

  def wait(self) -> None:
    self._manager.wait_until_finished()
    self._seal()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._seal()
    self._manager.close()

  def _verify(self, step: int, items: tuple[str, ...] | None = None) -> bool:
    """True when `step` matches its manifest, False when it has none (or verification is off);
    raises CheckpointIntegrityError otherwise."""
    if not self.verify:
      return False
    if verify_step(self._step_dir(step), items):
      return True
    if self._step_dir(step) not in _WARNED_UNSEALED:
      _WARNED_UNSEALED.add(self._step_dir(step))
      log.warning("checkpoint %s has no integrity manifest (written before manifests existed, or the "
                  "run stopped before writing it): restored without verification", self._step_dir(step))
    return False

  def restore(self, abstract_params, abstract_state, step: int | None = None):
    """Restores (step, params, state, meta) from `step` or the newest readable step.

    `abstract_*` are ShapeDtypeStruct trees carrying the target shardings (any mesh).  Returns None
    when there is no checkpoint.  Unreadable steps are skipped with a warning.
    """
    steps = [step] if step is not None else sorted(self._manager.all_steps(), reverse=True)
    errors = []
    for s in steps:
      try:
        verified = self._verify(s)
        restored = self._manager.restore(
            s, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract_params),
                                       state=ocp.args.StandardRestore(abstract_state),
                                       meta=ocp.args.JsonRestore()))
      except CheckpointIntegrityError as e:
        msg = str(e)
        if step is not None:
          raise
        log.warning("%s; falling back to an earlier checkpoint", msg)
        errors.append(msg)
        continue
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
      if not verified and not self.read_only and jax.process_index() == 0:
        write_step_manifest(self._step_dir(s))  # training goes on from it: later loads verify it
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
        src = storage.join(self.directory, str(s))
        if storage.isdir(src):
          dst = storage.join(aside, f"{s}.{stamp}")
          storage.move_tree(src, dst)
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
      self._verify(s, ("params",))  # a damaged step is refused, not skipped: exit 2 naming the file
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
_WARNED_UNSEALED: set = set()  # unverifiable steps already warned about in this process


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
  boxed = models.build_model(config).abstract_params()
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  unboxed = nn.unbox(boxed)
  if sharding_fn is None:
    dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shardings = jax.tree.map(lambda _: dev, unboxed)
  else:
    shardings = sharding_fn(boxed)
  return _abstract(unboxed, shardings)


def load_params(model_dir: str, *, step: int | None = None, partitioner=None,
                verify: bool | None = None) -> tuple[Any, Any]:
  """Loads (model config, params) from MODEL_DIR: the given step or the newest readable one.

  Params are placed on the first device, or sharded by `partitioner` when given.  The step's
  parameter files are checked against its manifest first (`verify`, default $T2T_VERIFY_CHECKPOINTS
  or on): a mismatch raises CheckpointIntegrityError naming the file.
  """
  config = load_model_config(model_dir)
  directory = storage.join(model_dir, CHECKPOINT_SUBDIR)
  if not storage.isdir(directory):
    raise UserInputError(f"no checkpoints in {directory}")
  target = abstract_params(config, partitioner.shardings_of if partitioner else None)
  with _quiet_orbax():
    manager = CheckpointManager(model_dir, read_only=True, verify=verify)
    try:
      if step is not None and step not in manager.all_steps():
        raise UserInputError(f"no checkpoint step {step} in {directory}; have {manager.all_steps()}")
      got = manager.restore_params(target, step)
    finally:
      manager.close()
  if got is None:
    raise UserInputError(f"no readable checkpoint in {directory}")
  return config, got[1]
