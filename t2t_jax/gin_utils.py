"""Gin plumbing for the entry points (T5X conventions).

Configs use `from __gin__ import dynamic_registration` and import the modules they bind, so no code
needs `@gin.configurable`.  Flags:
  --gin_file=PATH            repeatable; resolved by `resolve_gin_file` (below)
  --gin.NAME=VALUE           one binding; NAME is a macro (MODEL_DIR) or a parameter
                             (train_script.train.seed); VALUE is a Python/gin literal
  --gin_bindings=BINDING     repeatable, same as --gin.
  --gin_search_paths=A,B     comma-separated directories for gin files and their includes.

Gin file paths (`--gin_file` and every `include` inside a gin file) resolve the same way, from any
working directory (`resolve_gin_file`): an absolute path as is; a relative path that names a bundled
file ("runs/finetune.gin" or "gin/runs/finetune.gin": models/, runs/, ids/, experiments/) is the
bundled file, so a local folder that happens to be called runs/ never shadows it; otherwise the
--gin_search_paths in order, then the working directory.  gin's own lookup (which also tries a
relative path as a Python package and fails on a local runs/ folder) is bypassed while parsing.

Every mistake a user can make here (missing file, unknown parameter or configurable, unknown macro,
unset %gin.REQUIRED, syntax error) raises `UserInputError` naming it, before any JAX work.
"""

import contextlib
import difflib
import io
import os
import re
from typing import Iterator, Sequence

import gin

from t2t_jax import io_utils, storage
from t2t_jax.errors import UserInputError

REPO_GIN_DIR = os.path.normpath(os.path.join(os.path.dirname(__file__), os.pardir, "gin"))
PACKAGE_GIN_DIR = os.path.join(os.path.dirname(__file__), "gin")  # when installed as package data
_MACRO_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=")


def rewrite_gin_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """Splits `--gin.X=Y` arguments (T5X style) from the rest; returns (bindings, other args)."""
  bindings, rest = [], []
  for arg in argv:
    if arg.startswith("--gin."):
      body = arg[len("--gin."):]
      if "=" not in body:
        raise UserInputError(f"flag {arg!r}: expected --gin.NAME=VALUE")
      name, value = body.split("=", 1)
      bindings.append(f"{name}={value}")
    else:
      rest.append(arg)
  return bindings, rest


def bundled_gin_dirs() -> list[str]:
  """The gin/ folders shipped with t2t_jax: the repo's (source checkout) and the package data's."""
  return [p for p in (REPO_GIN_DIR, PACKAGE_GIN_DIR) if os.path.isdir(p)]


def resolve_gin_file(path: str, search_paths: Sequence[str] = ()) -> str | None:
  """The file a gin path names (see the module docstring for the order), or None."""
  path = os.fspath(path)
  if os.path.isabs(path):
    return path if os.path.isfile(path) else None
  rel = os.path.normpath(path)
  names = [rel]
  if rel.startswith("gin" + os.sep):
    names.append(rel[len("gin" + os.sep):])
  for root in bundled_gin_dirs():
    for name in names:
      if not name.startswith(os.pardir) and os.path.isfile(os.path.join(root, name)):
        return os.path.join(root, name)
  for root in search_paths:
    candidate = os.path.join(os.path.abspath(root), rel)
    if os.path.isfile(candidate):
      return candidate
  return os.path.abspath(rel) if os.path.isfile(rel) else None


def _resolve(path: str, search_paths: Sequence[str]) -> str:
  found = resolve_gin_file(path, search_paths)
  if found is None:
    where_ = ", ".join(bundled_gin_dirs() + [os.path.abspath(p) for p in search_paths] + [os.getcwd()])
    raise UserInputError(f"gin file {path!r} not found (searched: {where_})")
  return found


# Modules that moved into t2t_jax/training/ (2026-12-05).  A MODEL_DIR/config.gin written before
# imports them by their old names; it still parses (its import lines are read as the new ones).
MOVED_TO_TRAINING = ("checkpoints", "hooks", "losses", "model_dir_lock", "optimizers", "partitioning",
                     "summaries", "train_state", "trainer")
_OLD_IMPORT_RE = re.compile(r"^from t2t_jax import (%s)\b" % "|".join(MOVED_TO_TRAINING), re.M)


def upgrade_imports(text: str) -> str:
  """A gin file's text with `from t2t_jax import <moved module>` lines naming its new package."""
  return _OLD_IMPORT_RE.sub(r"from t2t_jax.training import \1", text)


@contextlib.contextmanager
def gin_file_resolution(search_paths: Sequence[str] = ()) -> Iterator[None]:
  """While active, gin opens files (and includes) through `resolve_gin_file` only."""
  cfg = gin.config
  readers, prefixes = list(cfg._FILE_READERS), list(cfg._LOCATION_PREFIXES)  # pylint: disable=protected-access

  def exists(path):
    return resolve_gin_file(path, search_paths) is not None

  def reader(path):
    with open(resolve_gin_file(path, search_paths), encoding="utf-8") as f:
      return io.StringIO(upgrade_imports(f.read()))

  cfg._FILE_READERS[:] = [(reader, exists)]  # pylint: disable=protected-access
  cfg._LOCATION_PREFIXES[:] = [""]  # pylint: disable=protected-access
  try:
    yield
  finally:
    cfg._FILE_READERS[:] = readers  # pylint: disable=protected-access
    cfg._LOCATION_PREFIXES[:] = prefixes  # pylint: disable=protected-access


def _defined_macros() -> set[str]:
  return {str(scope) for scope, selector in gin.config._CONFIG  # pylint: disable=protected-access
          if selector == "gin.macro"}


def parse_gin(gin_files: Sequence[str], gin_bindings: Sequence[str] = (),
              gin_search_paths: Sequence[str] = (), *, finalize: bool = True) -> None:
  """Parses gin files then bindings; raises UserInputError naming whatever is wrong."""
  search = [os.path.abspath(p) for p in gin_search_paths]
  gin.clear_config()
  files = [_resolve(f, search) for f in gin_files]
  try:
    with gin_file_resolution(search):
      gin.parse_config_files_and_bindings(files, None, finalize_config=False)
  except Exception as e:  # pylint: disable=broad-except  (gin raises many types on bad input)
    first = " ".join(line.strip() for line in str(e).splitlines() if line.strip())  # one line, location kept
    first = first.replace(" Searched config paths: [''].", "")
    if isinstance(e, OSError) and "Unable to open file" in first:
      first += f" (looked in: {', '.join(bundled_gin_dirs() + search + [os.getcwd()])})"
    raise UserInputError(f"bad gin config in {', '.join(files)}: {type(e).__name__}: {first}") from None
  defined = _defined_macros()
  for binding in gin_bindings:
    m = _MACRO_RE.match(binding)
    name = binding.split("=", 1)[0].strip()
    if m and "." not in name and "/" not in name and name not in defined:
      close = difflib.get_close_matches(name, sorted(defined), n=3)
      hint = f"; did you mean {', '.join(close)}?" if close else ""
      raise UserInputError(f"unknown gin macro {name!r} in binding {binding!r}: no gin file defines "
                           f"it (defined: {', '.join(sorted(defined))}){hint}")
    try:
      gin.parse_config(binding)
    except Exception as e:  # pylint: disable=broad-except
      raise UserInputError(f"bad gin binding {binding!r}: {type(e).__name__}: {e}") from None
  if finalize:
    try:
      gin.finalize()
    except ValueError as e:
      msg = str(e).split("\n")[0]
      m = re.match(r"(\w+)/macro\.value set to `%gin\.REQUIRED`", msg)
      if m:
        msg = f"gin macro {m.group(1)} is required: pass --gin.{m.group(1)}=..."
      raise UserInputError(msg) from None


def call_configured(fn, **kwargs):
  """Calls the gin-configured `fn`; unresolved references/required values -> UserInputError."""
  configured = gin.get_configurable(fn)
  try:
    return configured(**kwargs)
  except (ValueError, TypeError) as e:
    text = str(e)
    if ("No bindings specified for" in text or "Required bindings" in text or
        "gin.REQUIRED" in text or "missing" in text and "required" in text):
      first = text.split("\n")[0]
      raise UserInputError(f"gin config: {first}") from None
    raise


def write_config(model_dir: str, filename: str = "config.gin") -> str:
  """Writes the full current gin config to MODEL_DIR/config.gin (atomically); returns the path."""
  path = storage.join(model_dir, filename)
  with io_utils.atomic_write(path) as f:
    f.write(gin.config_str())
  return path
