"""Atomic file and directory writes that never destroy what a user did not ask to replace.

Every output is written under a temporary name beside its target and renamed onto it only when
complete, so a failure midway (bad input found late, an exception, Ctrl-C, SIGTERM) leaves the
target untouched and no temporary behind.

Guards (`check_output_dir`, run by `atomic_dir` before anything is created):
  * an output dir may not be a file, nor be, contain or lie inside one of the writer's inputs;
  * it may never be the working directory, one of its ancestors, the home directory or `/`;
  * an existing non-empty dir is replaced only when it carries the marker file `.t2t_output.json`
    of the same kind (a previous output of the same writer) or when `overwrite=True`;
  * a read-only dir is never replaced.

Temporaries are named `.{target}.t2t-tmp.{host}_{pid}.{random}.tmp` (and a replaced dir is parked
as `.{target}.t2t-old.{host}_{pid}.{random}.tmp` for the instant of the swap).  While one is live,
SIGTERM/SIGHUP (when the process left them at their default action) remove every live temporary and
then terminate the process with the same signal, so its exit status is unchanged; SIGINT raises
KeyboardInterrupt, which the writers' cleanup handles.  What a SIGKILL or power loss leaves is
swept by the next write beside the same target: temporaries of our naming from this host whose
process is gone are removed (a parked old dir whose target is missing is put back), with a warning.
"""

import contextlib
import datetime
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import tempfile
import threading
from typing import Any, Iterator, Sequence

from t2t_jax import __version__, storage
from t2t_jax.errors import UserInputError

log = logging.getLogger(__name__)

MARKER_FILE = ".t2t_output.json"
_TMP_RE = re.compile(r"^\.(?P<base>.+)\.t2t-(?P<what>tmp|old)\.(?P<host>[A-Za-z0-9-]*)_(?P<pid>\d+)\."
                     r"(?P<rand>[A-Za-z0-9_]+)\.tmp$")


def is_temp_name(name: str) -> bool:
  """Whether a file name is one of our atomic-write temporaries (live or left by a killed run)."""
  return _TMP_RE.match(name) is not None


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def file_mode() -> int:
  """The permissions a plain open() gives a new file (0o666 less the umask)."""
  return 0o666 & ~_umask()


def _host() -> str:
  return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40]


def _tag() -> str:
  return f"{_host()}_{os.getpid()}"


# ---------------------------------------------------------------------------- output-dir guard


def _inside(child: str, parent: str) -> bool:
  """Whether real path `child` is `parent` or lies below it."""
  return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def read_marker(path: str | os.PathLike) -> dict | None:
  """The `.t2t_output.json` of dir `path` ({"kind", "created", "tool"}), or None."""
  try:
    with storage.open(storage.join(path, MARKER_FILE)) as f:
      marker = json.load(f)
  except (OSError, ValueError):
    return None
  return marker if isinstance(marker, dict) else None


def _marker(kind: str) -> dict:
  return {"kind": kind, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "tool": f"t2t_jax {__version__}"}


def _write_local_marker(directory: str, kind: str) -> None:
  """The marker of a dir being built (a temporary dir of ours: written in place)."""
  with open(os.path.join(directory, MARKER_FILE), "w", encoding="utf-8") as f:
    json.dump(_marker(kind), f)
    f.write("\n")


def write_marker(path: str | os.PathLike, *, kind: str) -> None:
  """Creates dir `path` if needed and marks it as an output of `kind` (atomically)."""
  storage.makedirs(path)
  write_json(storage.join(path, MARKER_FILE), _marker(kind))


def _protected(real: str) -> str | None:
  """Why replacing real path `real` would be a disaster, or None."""
  if real == os.path.realpath(os.sep):
    return "is the filesystem root"
  if real == os.path.realpath(os.path.expanduser("~")):
    return "is the home directory"
  try:
    cwd = os.path.realpath(os.getcwd())
  except OSError:  # the working directory was deleted
    return None
  if real == cwd:
    return "is the current working directory"
  if _inside(cwd, real):
    return "contains the current working directory"
  return None


def check_output_dir(path: str | os.PathLike, *, kind: str, inputs: Sequence[str | os.PathLike] = (),
                     overwrite: bool = False) -> str:
  """The absolute `path` if a `kind` writer may (re)place dir `path`; else UserInputError (one line).

  Args:
    path: the output dir.
    kind: what the writer produces ("dataset", "ids", "export", ...); an existing non-empty dir is
      replaced without `overwrite` only when its marker file names the same kind.
    inputs: files/dirs the writer reads; the output may not be, contain or lie inside any of them.
    overwrite: allow replacing a non-empty dir of another kind or without a marker.
  """
  if storage.is_remote(path):
    return _check_remote_output_dir(os.fspath(path), kind=kind, inputs=inputs, overwrite=overwrite)
  path = os.path.abspath(os.fspath(path))
  real = os.path.realpath(path)
  if os.path.lexists(path) and not os.path.isdir(path):
    what = "a broken symlink" if not os.path.exists(path) else "a file"
    raise UserInputError(f"output {path} exists and is not a folder ({what}); choose another output path")
  why = _protected(real)
  if why:
    raise UserInputError(f"output {path} {why}; refusing to replace it (choose a new directory)")
  for inp in inputs:
    if inp is None:
      continue
    rin = os.path.realpath(os.fspath(inp))
    if real == rin:
      rel = "is"
    elif _inside(rin, real):
      rel = "contains"
    elif _inside(real, rin):
      rel = "lies inside"
    else:
      continue
    raise UserInputError(f"output {path} overlaps the input {os.fspath(inp)} (it {rel} it); choose "
                         "an output outside the inputs")
  ancestor = os.path.dirname(path)
  while not os.path.isdir(ancestor):
    if os.path.lexists(ancestor):
      raise UserInputError(f"output {path}: {ancestor} is not a directory")
    ancestor = os.path.dirname(ancestor)
  if not os.path.isdir(path):
    if not os.access(ancestor, os.W_OK | os.X_OK):
      raise UserInputError(f"output {path}: cannot create it, {ancestor} is not writable")
    return path
  mode = stat.S_IMODE(os.stat(path).st_mode)
  if not mode & stat.S_IWUSR or not os.access(path, os.W_OK):
    raise UserInputError(f"output {path} is read-only; refusing to replace it")
  if not os.access(os.path.dirname(path), os.W_OK | os.X_OK):
    raise UserInputError(f"output {path}: cannot replace it, {os.path.dirname(path)} is not writable")
  try:
    empty = not os.listdir(path)
  except OSError as e:
    raise UserInputError(f"output {path}: cannot read it ({e.strerror})") from None
  if overwrite or empty:
    return path
  return _same_kind(path, kind, "a t2t output")


def _same_kind(path: str, kind: str, what: str) -> str:
  """`path` when its marker names `kind`; else UserInputError saying what the dir holds."""
  marker = read_marker(path)
  found = marker.get("kind") if marker else None
  if found == kind:
    return path
  held = f"holds a t2t_jax {found!r} output, not {kind!r}" if found else (
      f"is not empty and not {what} (no {MARKER_FILE})")
  raise UserInputError(f"output {path} {held}; pass --overwrite to replace it, or choose another path")


def _check_remote_output_dir(url: str, *, kind: str, inputs, overwrite: bool) -> str:
  """`check_output_dir` for a URL: no overlap with a remote input, and an existing prefix holding
  objects is replaced only when its marker names `kind` (or with `overwrite`)."""
  url = url.rstrip("/")
  for inp in inputs:
    if inp is None or not storage.is_remote(inp):
      continue
    rin = os.fspath(inp).rstrip("/")
    if url == rin or url.startswith(rin + "/") or rin.startswith(url + "/"):
      raise UserInputError(f"output {url} overlaps the input {rin}; choose an output outside the inputs")
  if storage.isfile(url):
    raise UserInputError(f"output {url} exists and is an object, not a folder; choose another output path")
  if overwrite or not storage.isdir(url):
    return url
  return _same_kind(url, kind, "a complete t2t output")


# ------------------------------------------------------------------- live temporaries, signals

_LIVE: dict[str, None] = {}  # temporaries of this process (ordered set)
_SWAPPING = [0]  # >0 while a target is being swapped (signals wait for the swap to end)
_PENDING: list[int] = []
_INSTALLED: dict[int, Any] = {}  # signal -> the handler ours replaced (always SIG_DFL)
_TERM_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


def _in_main_thread() -> bool:
  return threading.current_thread() is threading.main_thread()


def _remove(p: str) -> None:
  if os.path.isdir(p) and not os.path.islink(p):
    shutil.rmtree(p, ignore_errors=True)
  else:
    with contextlib.suppress(OSError):
      os.remove(p)


def _terminate(signum: int) -> None:
  """Removes every live temporary, then dies of `signum` as the default action would."""
  for p in list(_LIVE):
    _remove(p)
  _LIVE.clear()
  signal.signal(signum, _INSTALLED.pop(signum, signal.SIG_DFL))
  os.kill(os.getpid(), signum)
  os._exit(128 + signum)  # pylint: disable=protected-access  (not reached: the signal ends us)


def _on_signal(signum, frame):  # pylint: disable=unused-argument
  if _SWAPPING[0]:
    _PENDING.append(signum)
  else:
    _terminate(signum)


def _register(tmp: str) -> None:
  _LIVE[tmp] = None
  if not _in_main_thread():
    return  # signal handlers can only be set from the main thread; the next write sweeps instead
  for signum in _TERM_SIGNALS:
    if signum not in _INSTALLED and signal.getsignal(signum) == signal.SIG_DFL:
      _INSTALLED[signum] = signal.signal(signum, _on_signal)


def _unregister(tmp: str) -> None:
  _LIVE.pop(tmp, None)
  if _LIVE or _SWAPPING[0] or _PENDING or not _in_main_thread():
    return
  for signum, prev in list(_INSTALLED.items()):
    if signal.getsignal(signum) is _on_signal:
      signal.signal(signum, prev)
    del _INSTALLED[signum]


@contextlib.contextmanager
def _swapping() -> Iterator[None]:
  """Defers SIGTERM/SIGHUP (when ours) until the renames inside have finished."""
  _SWAPPING[0] += 1
  try:
    yield
  finally:
    _SWAPPING[0] -= 1
    if not _SWAPPING[0] and _PENDING:
      signum = _PENDING.pop()
      if _in_main_thread():
        _terminate(signum)
      else:
        os.kill(os.getpid(), signum)  # our handler, in the main thread, finishes the job


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def sweep_stale_temps(path: str | os.PathLike) -> list[str]:
  """Removes temporaries of our naming beside `path` left by dead processes of this host.

  A parked old dir (`.t2t-old.`) whose target is missing (killed mid-swap) is renamed back onto the
  target instead.  Returns the names removed or restored (each also logged as a warning).
  """
  path = os.path.abspath(os.fspath(path))
  parent, base = os.path.split(path)
  try:
    names = os.listdir(parent)
  except OSError:
    return []
  host, done = _host(), []
  for name in sorted(names):
    m = _TMP_RE.match(name)
    if not m or m["base"] != base or m["host"] != host:
      continue
    pid = int(m["pid"])
    if pid == os.getpid() or _pid_alive(pid):
      continue
    stale = os.path.join(parent, name)
    if m["what"] == "old" and not os.path.lexists(path):
      with contextlib.suppress(OSError):
        os.replace(stale, path)
        log.warning("restored %s from %s (its writer, pid %d, died mid-swap)", path, name, pid)
        done.append(name)
        continue
    _remove(stale)
    log.warning("removed stale temporary %s (left by pid %d, which is gone)", stale, pid)
    done.append(name)
  return done


# -------------------------------------------------------------------------------------- writers


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
  """Opens a temporary file beside `path`; renames it onto `path` only on success.

  A URL (gs://, s3://): the temporary is local and is uploaded as one object on success (an object
  appears whole or not at all)."""
  if storage.is_remote(path):
    with _remote_write(os.fspath(path), mode, encoding) as f:
      yield f
    return
  path = os.path.abspath(os.fspath(path))
  if os.path.isdir(path):
    raise UserInputError(f"output {path} is a directory, expected a file")
  directory, base = os.path.split(path)
  os.makedirs(directory, exist_ok=True)
  sweep_stale_temps(path)
  fd, tmp = tempfile.mkstemp(prefix=f".{base}.t2t-tmp.{_tag()}.", suffix=".tmp", dir=directory)
  os.close(fd)
  _register(tmp)
  try:
    kwargs = {} if "b" in mode else {"encoding": encoding}
    with open(tmp, mode, **kwargs) as f:
      yield f
    # mkstemp creates 0600; give the result the permissions a plain open() would.
    os.chmod(tmp, file_mode())
    with _swapping():
      os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise
  finally:
    _unregister(tmp)


@contextlib.contextmanager
def _remote_write(url: str, mode: str, encoding: str | None) -> Iterator[Any]:
  fd, tmp = tempfile.mkstemp(prefix=".t2t-upload.", suffix=".tmp")
  os.close(fd)
  _register(tmp)
  try:
    with open(tmp, mode, **({} if "b" in mode else {"encoding": encoding})) as f:
      yield f
    storage.upload_file(tmp, url)
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    _unregister(tmp)


def _swap_in(tmp: str, path: str) -> None:
  """Renames dir `tmp` onto `path`, parking and then deleting what was there."""
  parent, base = os.path.split(path)
  old = os.path.join(parent, f".{base}.t2t-old.{_tag()}.{secrets.token_hex(4)}.tmp")
  moved = False
  with _swapping():
    try:
      if os.path.lexists(path):
        os.replace(path, old)
        moved = True
      os.replace(tmp, path)
    except BaseException:
      if moved and not os.path.lexists(path):
        os.replace(old, path)
      raise
    if moved:
      _register(old)  # a signal pending since the swap removes it too
  if moved:
    try:
      _remove(old)  # a dir, or a symbolic link to one (its target is not ours to delete)
    finally:
      _unregister(old)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, kind: str, inputs: Sequence[str | os.PathLike] = (),
               overwrite: bool = False) -> Iterator[str]:
  """Yields a temporary dir beside `path`; on success it replaces `path` whole.

  Refuses (UserInputError, before anything is created) what `check_output_dir` refuses.  The dir
  gets the marker file `.t2t_output.json` naming `kind`, so the next write of the same kind may
  replace it.
  """
  if not isinstance(kind, str) or not kind:
    raise TypeError(f"atomic_dir needs a non-empty kind string, got {kind!r}")
  if storage.is_remote(path):
    with _remote_dir(os.fspath(path), kind=kind, inputs=inputs, overwrite=overwrite) as tmp:
      yield tmp
    return
  path = os.path.abspath(os.fspath(path))
  check_output_dir(path, kind=kind, inputs=inputs, overwrite=overwrite)
  parent, base = os.path.split(path)
  os.makedirs(parent, exist_ok=True)
  sweep_stale_temps(path)
  tmp = tempfile.mkdtemp(prefix=f".{base}.t2t-tmp.{_tag()}.", suffix=".tmp", dir=parent)
  _register(tmp)
  try:
    yield tmp
    _write_local_marker(tmp, kind)
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700.
    _swap_in(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  finally:
    _unregister(tmp)


@contextlib.contextmanager
def _remote_dir(url: str, *, kind: str, inputs, overwrite: bool) -> Iterator[str]:
  """`atomic_dir` for a URL: built in a local temporary dir, then uploaded object by object with
  the marker LAST (the commit: a dir without it is incomplete); a previous output there is removed
  first, so for the upload's duration the prefix holds no complete output."""
  url = check_output_dir(url, kind=kind, inputs=inputs, overwrite=overwrite)
  tmp = tempfile.mkdtemp(prefix=".t2t-upload.", suffix=".tmp")
  _register(tmp)
  try:
    yield tmp
    _write_local_marker(tmp, kind)
    storage.rmtree(url)
    storage.upload_dir(tmp, url, last=(MARKER_FILE,))
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
    _unregister(tmp)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
  """Writes JSON atomically."""
  with atomic_write(path) as f:
    json.dump(obj, f, indent=indent, ensure_ascii=False)
    f.write("\n")
