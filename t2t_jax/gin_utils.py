"""Gin plumbing for the entry points (T5X conventions).

Configs use `from __gin__ import dynamic_registration` and import the modules they bind, so no code
needs `@gin.configurable`.  Flags:
  --gin_file=PATH            repeatable; resolved against --gin_search_paths, then the repo's gin/
  --gin.NAME=VALUE           one binding; NAME is a macro (MODEL_DIR) or a parameter
                             (train_script.train.seed); VALUE is a Python/gin literal
  --gin_bindings=BINDING     repeatable, same as --gin.
  --gin_search_paths=A,B     comma-separated directories for gin files and their includes.

Every mistake a user can make here (missing file, unknown parameter or configurable, unknown macro,
unset %gin.REQUIRED, syntax error) raises `UserInputError` naming it, before any JAX work.
"""

import difflib
import os
import re
from typing import Sequence

import gin

from t2t_jax import io_utils
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


def default_search_paths() -> list[str]:
  return [p for p in (os.getcwd(), REPO_GIN_DIR, PACKAGE_GIN_DIR) if os.path.isdir(p)]


def _resolve(path: str, search_paths: Sequence[str]) -> str:
  if os.path.exists(path):
    return path
  for root in search_paths:
    candidate = os.path.join(root, path)
    if os.path.exists(candidate):
      return candidate
  raise UserInputError(f"gin file {path!r} not found (searched: {', '.join(search_paths) or '.'})")


def _defined_macros() -> set[str]:
  return {str(scope) for scope, selector in gin.config._CONFIG  # pylint: disable=protected-access
          if selector == "gin.macro"}


def parse_gin(gin_files: Sequence[str], gin_bindings: Sequence[str] = (),
              gin_search_paths: Sequence[str] = (), *, finalize: bool = True) -> None:
  """Parses gin files then bindings; raises UserInputError naming whatever is wrong."""
  search = [os.path.abspath(p) for p in gin_search_paths] + default_search_paths()
  gin.clear_config()
  for p in search:
    gin.add_config_file_search_path(p)
  files = [_resolve(f, search) for f in gin_files]
  try:
    gin.parse_config_files_and_bindings(files, None, finalize_config=False)
  except Exception as e:  # pylint: disable=broad-except  (gin raises many types on bad input)
    raise UserInputError(f"bad gin config in {', '.join(files)}: {type(e).__name__}: {e}") from None
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
  path = os.path.join(model_dir, filename)
  with io_utils.atomic_write(path) as f:
    f.write(gin.config_str())
  return path
