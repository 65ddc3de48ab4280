"""Atomic file and directory writes: write to a temporary name, then rename.

No writer in t2t_jax leaves half-written output behind: if anything fails (bad input discovered
midway, a crash, SIGTERM) the temporary is removed and the destination is untouched.
"""

import contextlib
import json
import os
import shutil
import tempfile
from typing import Any, Iterator


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


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = True) -> Iterator[str]:
  """Yields a temporary directory beside `path`; it replaces `path` only on success."""
  path = os.path.abspath(os.fspath(path))
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=parent)
  try:
    yield tmp
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
