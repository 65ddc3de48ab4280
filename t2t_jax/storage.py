"""One path layer: local paths as plain files, `gs://` and `s3://` URLs through etils.epath.

Pod jobs keep MODEL_DIR and their data in a bucket (a TPU VM's disk is small and goes with the job,
and every host must see the same checkpoints).  Every reader and writer of t2t_jax that may meet a
URL goes through this module; local paths keep the os calls they always used (same speed, same
errors).  Remote paths use `etils.epath` (what orbax itself uses for checkpoint dirs), which hands
gs:// and s3:// to fsspec (gcsfs, s3fs) or, with TensorFlow installed and `EPATH_USE_TF` not set to
false, to `tf.io.gfile`: well-kept clients, none written here.  Array data of checkpoints goes
through tensorstore, which speaks gs:// and s3:// itself.

What object stores change (docs/storage.md):
  * A single object appears whole or not at all, so one file is written atomically by uploading it
    once complete (`io_utils.atomic_write`).  There is no rename: a directory is uploaded file by
    file and its commit marker `.t2t_output.json` is written LAST (`io_utils.atomic_dir`); a reader
    that finds no marker treats the directory as incomplete.
  * Nothing is appended in place: append-only logs (metrics.jsonl) are rewritten whole.
  * Credentials come from the environment (GOOGLE_APPLICATION_CREDENTIALS / gcloud ADC, AWS_*),
    never from this repository; STORAGE_EMULATOR_HOST (gcsfs) and TENSORSTORE_GCS_HTTP_URL
    (tensorstore) point both clients at a local GCS emulator, AWS_ENDPOINT_URL points s3fs (and,
    through training/checkpoints.py, tensorstore) at an S3-compatible server (the tests do both).

  is_remote(p)                   whether p is a URL (scheme://...)
  join(p, *names)                os.path.join that keeps a URL a URL
  abspath / dirname / basename   the os.path ones, URLs kept URLs
  exists / isdir / isfile / listdir / makedirs / remove / rmtree / getsize / walk_files
  open(p, mode)                  a file object ("r", "rb", "w", "wb")
  move_tree(src, dst)            rename a directory (object stores: copy, then delete)
  download_dir(url, local_dir)   a local copy of a prefix (small assets that libraries read by path)
  download_file(p, local)        a local copy of one file (streamed)
  fresh_listings()               no cached directory listings in fsspec's clients (orbax lists too)
  local_copy(p, cached=True)     p itself if local, else a local copy of the file or prefix
  read_text / read_bytes
  upload_file(local, url), upload_dir(local_dir, url, last=...)   object by object
"""

from __future__ import annotations

import atexit
import builtins
import functools
import io
import os
import re
import shutil
import tempfile
from typing import IO, Iterator

from t2t_jax.errors import UserInputError

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_remote(path: str | os.PathLike) -> bool:
  """Whether `path` is a URL such as gs://bucket/dir or s3://bucket/dir (not a local path)."""
  return bool(_URL_RE.match(os.fspath(path)))


@functools.lru_cache(maxsize=None)
def fresh_listings() -> None:
  """Once, before the first remote file system is made: fsspec's object-store clients (gcsfs, s3fs)
  cache directory listings for the life of the process by default, so a process would not see the
  checkpoints another process (a resumed job, another host, a trainer beside `t2t serve`) writes.
  Every listing here asks the store (a user's own fsspec config for a protocol wins)."""
  import fsspec  # pylint: disable=import-outside-toplevel
  for protocol in ("gs", "gcs", "s3", "s3a"):
    fsspec.config.conf.setdefault(protocol, {}).setdefault("use_listings_cache", False)


def _epath(path: str | os.PathLike):
  from etils import epath  # pylint: disable=import-outside-toplevel  (lazy: only remote paths need it)
  fresh_listings()
  return epath.Path(os.fspath(path))


def join(path: str | os.PathLike, *names: str) -> str:
  """`os.path.join` for local paths; '/'-joined for URLs."""
  path = os.fspath(path)
  if not is_remote(path):
    return os.path.join(path, *names)
  return "/".join([path.rstrip("/")] + [n.strip("/") for n in names if n])


def abspath(path: str | os.PathLike) -> str:
  """`os.path.abspath` for local paths; a URL unchanged."""
  path = os.fspath(path)
  return path if is_remote(path) else os.path.abspath(path)


def dirname(path: str | os.PathLike) -> str:
  path = os.fspath(path)
  if not is_remote(path):
    return os.path.dirname(path)
  scheme, rest = path.split("://", 1)
  rest = rest.rstrip("/")
  return f"{scheme}://{rest.rsplit('/', 1)[0]}" if "/" in rest else f"{scheme}://{rest}"


def basename(path: str | os.PathLike) -> str:
  path = os.fspath(path)
  return os.path.basename(path) if not is_remote(path) else path.rstrip("/").rsplit("/", 1)[-1]


def exists(path: str | os.PathLike) -> bool:
  return os.path.exists(path) if not is_remote(path) else _epath(path).exists()


def isdir(path: str | os.PathLike) -> bool:
  """A local directory, or a URL prefix holding at least one object."""
  return os.path.isdir(path) if not is_remote(path) else _epath(path).is_dir()


def isfile(path: str | os.PathLike) -> bool:
  return os.path.isfile(path) if not is_remote(path) else _epath(path).is_file()


def listdir(path: str | os.PathLike) -> list[str]:
  """Names directly below `path` (sorted)."""
  if not is_remote(path):
    return sorted(os.listdir(path))
  return sorted(p.name for p in _epath(path).iterdir())


def makedirs(path: str | os.PathLike) -> None:
  """Local: os.makedirs(exist_ok=True).  Object stores have no directories: nothing to do."""
  if not is_remote(path):
    os.makedirs(path, exist_ok=True)


def remove(path: str | os.PathLike) -> None:
  if not is_remote(path):
    os.remove(path)
  else:
    _epath(path).unlink()


def rmtree(path: str | os.PathLike) -> None:
  """Removes a directory (every object under a URL prefix); a missing one is not an error."""
  if not is_remote(path):
    shutil.rmtree(path, ignore_errors=True)
  elif _epath(path).exists():
    _epath(path).rmtree()


def getsize(path: str | os.PathLike) -> int:
  return os.path.getsize(path) if not is_remote(path) else int(_epath(path).stat().length)


def walk_files(path: str | os.PathLike) -> Iterator[str]:
  """Every file below `path` as a path relative to it ('/'-separated), sorted."""
  if not is_remote(path):
    for root, _, names in sorted(os.walk(path)):
      for name in sorted(names):
        yield os.path.relpath(os.path.join(root, name), path).replace(os.sep, "/")
    return
  import fsspec  # pylint: disable=import-outside-toplevel  (lazy: only remote paths need it)
  fresh_listings()
  fs, root = fsspec.core.url_to_fs(os.fspath(path))
  root = root.rstrip("/")
  for name in sorted(fs.find(root)):
    yield name[len(root):].lstrip("/")


def open(path: str | os.PathLike, mode: str = "r", encoding: str | None = "utf-8") -> IO:  # pylint: disable=redefined-builtin
  """A file object for `path`; a remote file opened for writing appears only when closed."""
  if mode not in ("r", "rb", "w", "wb"):
    raise ValueError(f"storage.open: mode {mode!r} not supported (r, rb, w, wb)")
  if not is_remote(path):
    return builtins.open(path, mode, **({} if "b" in mode else {"encoding": encoding}))
  f = _epath(path).open(mode.replace("b", "") + "b")
  return f if "b" in mode else io.TextIOWrapper(f, encoding=encoding)


def read_bytes(path: str | os.PathLike) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def read_text(path: str | os.PathLike, encoding: str = "utf-8") -> str:
  return read_bytes(path).decode(encoding)


def move_tree(src: str, dst: str) -> None:
  """Moves directory `src` to `dst` (a new path): a rename locally; on an object store (no rename)
  each object is copied, then `src` is removed."""
  if not is_remote(src):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    os.replace(src, dst)
    return
  for rel in list(walk_files(src)):
    with open(join(src, rel), "rb") as f_in, _epath(join(dst, rel)).open("wb") as f_out:
      shutil.copyfileobj(f_in, f_out, 1 << 22)
  rmtree(src)


def download_dir(url: str, local_dir: str) -> str:
  """Copies every object below prefix `url` into `local_dir` (for readers that need local files:
  SentencePiece and WordPiece load tokenizer files by path); returns `local_dir`."""
  for rel in list(walk_files(url)):
    download_file(join(url, rel), os.path.join(local_dir, *rel.split("/")))
  return local_dir


def download_file(path: str, local: str) -> str:
  """Copies file `path` (local or URL) to local path `local`, streamed; returns `local`."""
  os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
  with open(path, "rb") as f_in, builtins.open(local, "wb") as f_out:
    shutil.copyfileobj(f_in, f_out, 1 << 22)
  return local


def upload_file(local: str, url: str) -> None:
  """Copies local file `local` to `url` as one object (visible only once complete)."""
  with builtins.open(local, "rb") as src, _epath(url).open("wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 22)


def upload_dir(local_dir: str, url: str, *, last: tuple[str, ...] = ()) -> list[str]:
  """Uploads every file below `local_dir` to prefix `url`, the names in `last` after all others
  (commit markers); returns the relative paths written, in order."""
  rels = [r for r in walk_files(local_dir) if r not in last]
  rels += [r for r in last if os.path.isfile(os.path.join(local_dir, r))]
  for rel in rels:
    upload_file(os.path.join(local_dir, rel), join(url, rel))
  return rels


def _copy_url(url: str) -> str:
  local = tempfile.mkdtemp(prefix="t2t-local-copy.")
  atexit.register(shutil.rmtree, local, True)
  if isdir(url):
    return download_dir(url, local)
  return download_file(url, os.path.join(local, basename(url)))


_cached_copy = functools.lru_cache(maxsize=None)(_copy_url)


def local_copy(path: str | os.PathLike, *, cached: bool = True) -> str:
  """`path` itself when local; for a URL, a local copy of its file or prefix in a temporary dir
  removed at exit: made once per process (`cached`), or afresh (what may change while the process
  runs, e.g. a model dir's assets).  For the small files that libraries open by path only
  (SentencePiece models, tokenizer dirs, model assets); data is streamed, never copied."""
  path = os.fspath(path)
  if not is_remote(path):
    return path
  if not exists(path):
    raise UserInputError(f"no such file or directory: {path}")
  return _cached_copy(path) if cached else _copy_url(path)
