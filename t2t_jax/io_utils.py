"""Atomic file and directory writes: write to a temporary name, then rename.

No writer in t2t_jax leaves half-written output behind: if anything fails (bad input discovered
midway, a crash, SIGTERM) the temporary is removed and the destination is untouched.

`atomic_dir(path, kind=...)` also refuses to replace what it did not write: a file, a folder that
is, holds or lies inside one of the command's inputs, or a non-empty folder without a
`.t2t_output.json` marker of the same kind (unless `overwrite`); the marker is written into the
new folder.
"""

import contextlib
import json
import os
import shutil
import tempfile
from typing import Any, Iterator, Sequence

MARKER_FILE = ".t2t_output.json"


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
  """Opens a temporary file beside `path`; renames it onto `path` only on success."""
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
  os.close(fd)
  try:
    kwargs = {} if "b" in mode else {"encoding": encoding}
    with open(tmp, mode, **kwargs) as f:
      yield f
    # mkstemp creates 0600; give the result the permissions a plain open() would.
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def _inside(child: str, parent: str) -> bool:
  return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def check_output_dir(path: str | os.PathLike, *, kind: str, inputs: Sequence = (),
                     overwrite: bool = False) -> str:
  """The absolute `path` if a `kind` output dir may be written there; UserInputError otherwise."""
  from t2t_jax.errors import UserInputError  # pylint: disable=import-outside-toplevel
  path = os.path.abspath(os.fspath(path))
  if os.path.lexists(path) and not os.path.isdir(path):
    raise UserInputError(f"output {path}: exists and is not a folder")
  real = os.path.realpath(path)
  for inp in inputs:
    if inp is None:
      continue
    rin = os.path.realpath(os.fspath(inp))
    if _inside(rin, real) or _inside(real, rin):
      raise UserInputError(f"output {path}: overlaps the input {os.fspath(inp)} (choose another folder)")
  if os.path.isdir(path) and os.listdir(path) and not overwrite:
    found = None
    try:
      with open(os.path.join(path, MARKER_FILE), encoding="utf-8") as f:
        found = json.load(f).get("kind")
    except (OSError, ValueError, AttributeError):
      pass
    if found != kind:
      what = f"a {found!r} output" if found else f"not a t2t output (no {MARKER_FILE})"
      raise UserInputError(f"output {path}: folder is not empty and is {what}; pass --overwrite to "
                           f"replace it with a {kind!r} output")
  return path


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool | None = None, *, kind: str | None = None,
               inputs: Sequence = ()) -> Iterator[str]:
  """Yields a temporary directory beside `path`; it replaces `path` only on success.

  With `kind`, `check_output_dir` runs first (nothing is created when it refuses) and the marker
  {"kind": kind} is written; `overwrite` then defaults to False.  Without `kind` (older callers),
  an existing `path` is replaced unless overwrite=False.
  """
  if kind is not None:
    path = check_output_dir(path, kind=kind, inputs=inputs, overwrite=bool(overwrite))
    overwrite = True
  elif overwrite is None:
    overwrite = True
  path = os.path.abspath(os.fspath(path))
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=parent)
  try:
    yield tmp
    if kind is not None:
      write_json(os.path.join(tmp, MARKER_FILE), {"kind": kind})
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700.
    if os.path.exists(path):
      if not overwrite:
        raise FileExistsError(path)
      old = path + ".old." + os.path.basename(tmp)
      os.replace(path, old)
      os.replace(tmp, path)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
  """Writes JSON atomically."""
  with atomic_write(path) as f:
    json.dump(obj, f, indent=indent, ensure_ascii=False)
    f.write("\n")
