"""What a user sees on the terminal: dependencies' logs quiet by default, progress for slow stages.

  configure(verbose)  the entry points' log setup (`t2t [--verbose]`, `python -m t2t_jax.train
                      [--verbose]`).  Quiet (the default): the Python loggers of dependencies at
                      WARNING (bm25s logs DEBUG, orbax/absl INFO, jax warns of missing CUDA on a
                      CPU-only install), TF_CPP_MIN_LOG_LEVEL=3, and TensorFlow's C++ start-up lines
                      (NOISE) dropped from stderr while it is imported.  Verbose: all of it shown.
  progress(it, desc)  a tqdm bar on stderr that appears only once a stage has run PROGRESS_DELAY_S,
                      so quick runs (and tests) print nothing.
  run_main(body, prog)  the error boundary of the tools/ scripts' main(): a UserInputError becomes one
                      line on stderr ("prog: error: ...") and exit code 2.

TensorFlow >= 2.19 writes its start-up lines ("Could not find cuda drivers", the oneDNN banner)
through absl before absl's logging is initialised, which TF_CPP_MIN_LOG_LEVEL does not reach
(tensorflow/tensorflow#100442); the only way to keep them off a terminal is to filter the file
descriptor while `import tensorflow` runs, whoever imports it (seqio, tfds, tasks/): a meta-path
finder wraps that one import.  Unknown lines (real errors) are passed through.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import logging
import os
import sys
import tempfile
from typing import Callable, Iterable, Iterator, Sequence

from tqdm.auto import tqdm

from t2t_jax.errors import UserInputError

# Substrings of the stderr lines dropped while TensorFlow is imported (quiet mode only).
NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "Could not find cuda drivers",
    "cudart_stub.cc",
    "oneDNN custom operations are on",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "computation placer already registered",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions",
    "TF-TRT Warning",
)
QUIET_IMPORTS = ("tensorflow",)
# Dependencies' Python loggers held at WARNING (ERROR for jax's CUDA-plugin fallback notice).
QUIET_LOGGERS = {"absl": logging.WARNING, "bm25s": logging.WARNING, "orbax": logging.WARNING,
                 "tensorflow": logging.ERROR, "jax._src.xla_bridge": logging.ERROR,
                 "matplotlib": logging.WARNING, "PIL": logging.WARNING, "h5py": logging.WARNING}
PROGRESS_DELAY_S = 2.0
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _at_least(level: int):
  def keep(record: logging.LogRecord) -> bool:
    return record.levelno >= level
  return keep


def configure(verbose: bool = False, *, level: int | str | None = None) -> None:
  """Log setup of an entry point; call it before TensorFlow is imported.

  Quiet: dependencies' loggers (QUIET_LOGGERS) are held at WARNING/ERROR (a filter as well as a
  level: bm25s sets its logger to DEBUG when it is imported), TF_CPP_MIN_LOG_LEVEL=3 unless the
  environment sets it, TensorFlow's start-up lines are filtered (`quiet_imports`), and with `level`
  the root logger gets a handler at that level (our own INFO logs: `python -m t2t_jax.train`).
  Verbose: every logger at `level` (default INFO), TensorFlow unfiltered.
  """
  if verbose:
    logging.basicConfig(level=level or logging.INFO, format=LOG_FORMAT)
    logging.getLogger().setLevel(level or logging.INFO)
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  if level is not None:
    logging.basicConfig(level=level, format=LOG_FORMAT)
    logging.getLogger().setLevel(level)
  for name, quiet_level in QUIET_LOGGERS.items():
    logger = logging.getLogger(name)
    logger.setLevel(quiet_level)
    if not any(getattr(f, "t2t_quiet", False) for f in logger.filters):
      keep = _at_least(quiet_level)
      keep.t2t_quiet = True
      logger.addFilter(keep)
  quiet_imports()


@contextlib.contextmanager
def filtered_stderr(noise: Sequence[str] = NOISE) -> Iterator[None]:
  """Collects what is written to file descriptor 2 (C++ libraries included) and, on exit, writes
  back the lines that contain none of `noise`."""
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, AttributeError, ValueError):  # no usable stderr: nothing to filter
    yield
    return
  with tempfile.TemporaryFile() as tmp:
    os.dup2(tmp.fileno(), 2)
    try:
      yield
    finally:
      with contextlib.suppress(OSError, AttributeError, ValueError):
        sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      tmp.seek(0)
      lines = tmp.read().decode("utf-8", "replace").splitlines(keepends=True)
      kept = "".join(line for line in lines if not any(n in line for n in noise))
      if kept:
        sys.stderr.write(kept)
        sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
  """Runs the real loader of a QUIET_IMPORTS module inside `filtered_stderr`."""

  def __init__(self, loader):
    self.loader = loader

  def create_module(self, spec):
    return self.loader.create_module(spec)

  def exec_module(self, module):
    module.__loader__ = module.__spec__.loader = self.loader  # the real loader from here on
    with filtered_stderr():
      self.loader.exec_module(module)


class _QuietImportFinder(importlib.abc.MetaPathFinder):
  """Finds QUIET_IMPORTS modules with the other finders and wraps their loader."""

  def find_spec(self, name, path, target=None):
    if name not in QUIET_IMPORTS:
      return None
    for finder in sys.meta_path:
      if finder is self or not hasattr(finder, "find_spec"):
        continue
      spec = finder.find_spec(name, path, target)
      if spec is not None:
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
          spec.loader = _QuietLoader(spec.loader)
        return spec
    return None


def quiet_imports() -> None:
  """Filters TensorFlow's start-up lines from stderr when it is first imported (idempotent)."""
  if not any(isinstance(f, _QuietImportFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _QuietImportFinder())


def progress(iterable: Iterable, desc: str, *, total: int | None = None, unit: str = "items",
             enabled: bool = True) -> Iterable:
  """`iterable` with a tqdm bar on stderr ("playlists: 41.3k playlists [00:02, 20.6k playlists/s]"),
  shown once the stage has run PROGRESS_DELAY_S; `unit` is plural."""
  return tqdm(iterable, desc=desc, total=total, unit=f" {unit}", unit_scale=True, delay=PROGRESS_DELAY_S,
              mininterval=0.5, dynamic_ncols=True, leave=False, disable=not enabled)


def run_main(body: Callable[[], int | None], prog: str | None = None) -> int:
  """Calls `body()` and returns its exit code (None: 0).  A UserInputError it raises is printed as one
  line on stderr, "PROG: error: MESSAGE" ("error: MESSAGE" without `prog`), and gives exit code 2: the
  one error tail of the tools/ scripts' main()."""
  try:
    rc = body()
  except UserInputError as e:
    print(f"{prog}: error: {e}" if prog else f"error: {e}", file=sys.stderr)
    return 2
  assert rc is None or isinstance(rc, int), f"run_main: body returned {type(rc).__name__}, not an exit code"
  return 0 if rc is None else rc
