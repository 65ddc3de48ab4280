"""One writer per MODEL_DIR: an exclusive lock every writer (training, studies, quickstart) takes.

Two trainings on one MODEL_DIR would replace each other's checkpoints, metrics and config.gin
without an error, so the second writer is refused at once with one line naming the holder:

  MODEL_DIR /runs/x is in use by pid 4242 on host-a (training since 2026-12-04 21:30:02 UTC,
  `python -m t2t_jax.train ...`); wait for it, stop it, or use another MODEL_DIR

Mechanism (MODEL_DIR/.t2t_lock, a small JSON file that is never deleted, only emptied):
- `fcntl.flock` on the file: the kernel releases it when the holder exits in any way (kill -9
  included), so on one host a dead holder never blocks anyone; on NFS the Linux client maps flock to
  NFS byte-range locks, which other hosts see.
- The holder's identity (host, pid, the pid's start time, start time, job id, command) is written in
  the file, and a heartbeat thread touches its mtime every `lease / 4` seconds.  When the flock is
  free but the file still names a holder (flock not shared between hosts on some filesystems, or a
  holder that died without emptying the file), the lock is stale only if the holder is provably gone:
  a dead pid (or a reused one, by start time) on this host, or a heartbeat older than the lease for a
  holder on another host.  A stale lock is taken over with a warning; a live one refuses.
- Multi-host jobs: process 0 takes the lock, every process learns the outcome through a collective
  (all raise the same error, none hangs), and the other processes check that the file they see names
  this job (a MODEL_DIR that is not on storage every host shares is refused).
- Re-entrant within a process: the gin entry, `trainer.train` and the studies may each take it.

The lease (default 600 s; `T2T_LOCK_LEASE_SECONDS` or `acquire(lease_seconds=...)`) only matters
where flock is not shared between hosts: a holder on another host that stopped heartbeating longer
ago than the lease is presumed dead.  Object stores (gs://, s3://) have neither flock nor mtime
heartbeats: there the record object itself carries the heartbeat and the lock is that lease alone
(`RemoteModelDirLock`, docs/storage.md).

Hand-written because no maintained library combines a kernel lock with holder identity, stale-lock
takeover across hosts and a multi-host handshake (`filelock` gives the first only).
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid

from t2t_jax import storage
from t2t_jax.errors import UserInputError

log = logging.getLogger(__name__)

LOCK_FILE = ".t2t_lock"
DEFAULT_LEASE_SECONDS = 600.0
LEASE_ENV = "T2T_LOCK_LEASE_SECONDS"


class ModelDirBusyError(UserInputError):
  """Another live writer holds the MODEL_DIR lock; the message names it."""


def _pid_start(pid: int) -> str | None:
  """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22): tells a live
  holder from a new process that got the same pid.  None where /proc is unavailable."""
  try:
    with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
      stat = f.read()
  except OSError:
    return None
  return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, start: str | None) -> bool:
  """Whether `pid` (started at `start`, when known) is still running on this host."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # alive, another user's
  if start is None:
    return True
  now = _pid_start(pid)
  return now is None or now == start


def _lease_seconds(lease_seconds: float | None) -> float:
  if lease_seconds is not None:
    value = lease_seconds
    name = "lease_seconds"
  else:
    raw = os.environ.get(LEASE_ENV)
    if raw is None:
      return DEFAULT_LEASE_SECONDS
    name = LEASE_ENV
    try:
      value = float(raw)
    except ValueError:
      raise UserInputError(f"{LEASE_ENV}={raw!r} is not a number of seconds") from None
  if not value > 0:
    raise UserInputError(f"{name} must be > 0 seconds, got {value!r}")
  return float(value)


def _read_holder(fd: int) -> dict | None:
  """The holder recorded in the lock file; None when it is empty (free) or unreadable."""
  try:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 1 << 16)
  except OSError:
    return None
  if not raw.strip():
    return None
  try:
    holder = json.loads(raw)
  except ValueError:
    return None  # torn by a writer killed mid-write: names nobody
  return holder if isinstance(holder, dict) and "pid" in holder else None


def describe(holder: dict | None, path: str) -> str:
  """'pid 4242 on host-a (training since ..., `cmd`)' for messages."""
  if not holder:
    return "another process (its details in " + path + " were unreadable)"
  since = holder.get("started_utc", "?")
  what = holder.get("what", "writing")
  cmd = str(holder.get("command") or "")
  cmd = f", `{cmd[:77] + '...' if len(cmd) > 80 else cmd}`" if cmd else ""
  return f"pid {holder.get('pid')} on {holder.get('host')} ({what} since {since}{cmd})"


def _busy(model_dir: str, holder: dict | None, path: str, extra: str = "") -> ModelDirBusyError:
  return ModelDirBusyError(
      f"MODEL_DIR {model_dir} is in use by {describe(holder, path)}{extra}; wait for it, stop it, "
      f"or use another MODEL_DIR")


@dataclasses.dataclass
class ModelDirLock:
  """A held lock (see `acquire`); `release()` or use as a context manager."""
  model_dir: str
  path: str
  holder: dict
  _fd: int
  _lease: float
  _refs: int = 1
  _stop: threading.Event = dataclasses.field(default_factory=threading.Event)
  _thread: threading.Thread | None = None

  @property
  def job(self) -> str:
    return self.holder["job"]

  def _heartbeat(self) -> None:
    period = max(0.5, self._lease / 4)
    while not self._stop.wait(period):
      try:
        os.utime(self._fd)
      except OSError as e:  # storage went away: the run will fail on its own writes
        log.warning("could not refresh the MODEL_DIR lock heartbeat on %s: %s", self.path, e)

  def release(self) -> None:
    """Drops one reference; the last one empties the file and unlocks it."""
    self._refs -= 1
    if self._refs > 0:
      return
    _HELD.pop(os.path.realpath(self.path), None)
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    try:
      os.ftruncate(self._fd, 0)  # empty = free: the next writer sees no holder to warn about
    except OSError:
      pass  # e.g. the MODEL_DIR was removed under us (a failed run's cleanup)
    finally:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)

  def __enter__(self) -> "ModelDirLock":
    return self

  def __exit__(self, *exc) -> None:
    self.release()


_HELD: dict[str, ModelDirLock] = {}
_HELD_GUARD = threading.Lock()


def _stale_reason(holder: dict, fd: int, lease: float) -> str | None:
  """Why a holder recorded in a file whose flock we got is gone; None if it may be alive."""
  if holder.get("host") == socket.gethostname():
    pid = holder.get("pid")
    if pid == os.getpid():
      return "it was this process, which no longer holds it"
    if not isinstance(pid, int) or not _alive(pid, holder.get("pid_start")):
      return f"pid {pid} on this host has exited"
    return None
  age = time.time() - os.fstat(fd).st_mtime
  if age > lease:
    return f"its heartbeat is {age:.0f} s old, past the {lease:.0f} s lease"
  return None


def acquire(model_dir: str, *, what: str = "training", lease_seconds: float | None = None
            ) -> ModelDirLock:
  """Takes MODEL_DIR's writer lock (creating MODEL_DIR), or raises ModelDirBusyError at once.

  Re-entrant: a process that holds it gets the same lock back (release it as often as acquired).
  """
  lease = _lease_seconds(lease_seconds)
  if storage.is_remote(model_dir):
    return _acquire_remote(model_dir, what=what, lease=lease)
  path = os.path.join(model_dir, LOCK_FILE)
  try:
    os.makedirs(model_dir, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
  except OSError as e:
    raise UserInputError(f"MODEL_DIR {model_dir}: cannot create its lock file ({e.strerror})") from None
  key = os.path.realpath(path)
  with _HELD_GUARD:
    held = _HELD.get(key)
    if held is not None:
      os.close(fd)
      held._refs += 1  # pylint: disable=protected-access
      return held
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read_holder(fd)
      os.close(fd)
      raise _busy(model_dir, holder, path) from None
    except OSError as e:  # a filesystem without flock: fall back on the holder record alone
      log.warning("flock is not supported on %s (%s); relying on the holder record and lease",
                  path, e.strerror)
    previous = _read_holder(fd)
    if previous is not None:
      reason = _stale_reason(previous, fd, lease)
      if reason is None:
        os.close(fd)
        raise _busy(model_dir, previous, path,
                    f"; its heartbeat is recent, so it is presumed alive for the {lease:.0f} s lease")
      log.warning("taking over the stale lock of MODEL_DIR %s held by %s: %s", model_dir,
                  describe(previous, path), reason)
    holder = _new_holder(what)
    data = json.dumps(holder).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)
    lock = ModelDirLock(model_dir=model_dir, path=path, holder=holder, _fd=fd, _lease=lease)
    lock._thread = threading.Thread(target=lock._heartbeat, daemon=True,  # pylint: disable=protected-access
                                    name="t2t-model-dir-lock")
    lock._thread.start()  # pylint: disable=protected-access
    _HELD[key] = lock
    return lock


def _boot_id() -> str | None:
  """This machine's boot (Linux /proc/sys/kernel/random/boot_id): with the host name, tells that a
  recorded pid is one of this machine's processes since its last boot."""
  try:
    with open("/proc/sys/kernel/random/boot_id", encoding="utf-8") as f:
      return f.read().strip() or None
  except OSError:
    return None


def _new_holder(what: str) -> dict:
  return {"host": socket.gethostname(), "boot_id": _boot_id(), "pid": os.getpid(),
          "pid_start": _pid_start(os.getpid()),
          "started_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
          "what": what, "job": uuid.uuid4().hex,
          "command": " ".join([os.path.basename(sys.argv[0] or "python")] + sys.argv[1:])[:300]}


# ------------------------------------------------------------------ object stores: a lease


def _read_remote_holder(path: str) -> dict | None:
  try:
    raw = storage.read_text(path)
  except (OSError, UnicodeDecodeError):
    return None
  try:
    holder = json.loads(raw) if raw.strip() else None
  except ValueError:
    return None
  return holder if isinstance(holder, dict) and "pid" in holder else None


def _write_remote_holder(path: str, holder: dict | None) -> None:
  with storage.open(path, "w") as f:  # one object: it appears whole
    f.write(json.dumps(holder) if holder else "")


@dataclasses.dataclass
class RemoteModelDirLock(ModelDirLock):
  """The MODEL_DIR lock on an object store (gs://, s3://): a lease, not a kernel lock.  The record
  object carries `heartbeat` (epoch seconds), rewritten every lease / 4; a record whose heartbeat is
  older than the lease names a holder presumed dead."""

  def _heartbeat(self) -> None:
    period = max(0.5, self._lease / 4)
    while not self._stop.wait(period):
      try:
        self.holder["heartbeat"] = time.time()
        _write_remote_holder(self.path, self.holder)
      except OSError as e:
        log.warning("could not refresh the MODEL_DIR lease on %s: %s", self.path, e)

  def release(self) -> None:
    self._refs -= 1
    if self._refs > 0:
      return
    _HELD.pop(self.path, None)
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    try:
      if (_read_remote_holder(self.path) or {}).get("job") == self.job:
        _write_remote_holder(self.path, None)  # empty = free
    except OSError:
      pass


def _gone_from_this_machine(holder: dict) -> bool:
  """A lease recorded by a process of this machine (same host name and boot) that is no longer
  running: a job restarted where it was killed need not wait for the lease to run out."""
  boot = _boot_id()
  if boot is None or holder.get("boot_id") != boot or holder.get("host") != socket.gethostname():
    return False
  try:
    return not _alive(int(holder["pid"]), holder.get("pid_start"))
  except (TypeError, ValueError):
    return False


def _acquire_remote(model_dir: str, *, what: str, lease: float) -> ModelDirLock:
  """`acquire` on an object store: refused while the record's heartbeat is younger than the lease
  (unless its process is known dead: same machine and boot, pid gone); a free, empty or expired
  record is replaced by ours, then read back: of two writers that raced,
  the one whose record did not survive is refused.  (Two starts within one read-back interval can
  both pass; object-store conditional writes would close that window.)"""
  path = storage.join(model_dir, LOCK_FILE)
  with _HELD_GUARD:
    held = _HELD.get(path)
    if held is not None:
      held._refs += 1  # pylint: disable=protected-access
      return held
    previous = _read_remote_holder(path)
    if previous is not None and _gone_from_this_machine(previous):
      log.warning("taking over the lease of MODEL_DIR %s held by %s: that process no longer runs on "
                  "this machine (killed?)", model_dir, describe(previous, path))
    elif previous is not None:
      age = time.time() - float(previous.get("heartbeat", 0) or 0)
      if age <= lease:
        raise _busy(model_dir, previous, path, f"; its lease was renewed {age:.0f} s ago "
                    f"(presumed alive for the {lease:.0f} s lease)")
      log.warning("taking over the expired lease of MODEL_DIR %s held by %s: its heartbeat is %.0f s "
                  "old, past the %.0f s lease", model_dir, describe(previous, path), age, lease)
    holder = dict(_new_holder(what), heartbeat=time.time())
    _write_remote_holder(path, holder)
    time.sleep(0.2)
    seen = _read_remote_holder(path)
    if seen is None or seen.get("job") != holder["job"]:
      raise _busy(model_dir, seen, path, " (it took the lease at the same time)")
    lock = RemoteModelDirLock(model_dir=model_dir, path=path, holder=holder, _fd=-1, _lease=lease)
    lock._thread = threading.Thread(target=lock._heartbeat, daemon=True,  # pylint: disable=protected-access
                                    name="t2t-model-dir-lease")
    lock._thread.start()  # pylint: disable=protected-access
    _HELD[path] = lock
    return lock


def _job_token(job: str | None):
  import numpy as np  # pylint: disable=import-outside-toplevel
  return np.frombuffer(bytes.fromhex(job), np.uint8).copy() if job else np.zeros(16, np.uint8)


def acquire_for_job(model_dir: str, *, what: str = "training", lease_seconds: float | None = None,
                    process_index: int | None = None, process_count: int | None = None,
                    broadcast=None, all_agree=None) -> ModelDirLock | None:
  """`acquire` for a (possibly multi-host) job: process 0 takes the lock and the others check it.

  Every process returns (the lock on process 0, None elsewhere) or every process raises, so no
  process is left waiting in a collective its peers left.  `broadcast(np.uint8[16]) -> array`
  (process 0's value everywhere) and `all_agree(bool) -> bool` (True when every process passed
  True) default to JAX's multihost utilities; tests pass fakes.
  """
  import jax  # pylint: disable=import-outside-toplevel
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if count == 1:
    return acquire(model_dir, what=what, lease_seconds=lease_seconds)
  if broadcast is None or all_agree is None:
    import numpy as np  # pylint: disable=import-outside-toplevel
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    broadcast = broadcast or (lambda x: np.asarray(multihost_utils.broadcast_one_to_all(x)))
    all_agree = all_agree or (lambda ok: bool(np.all(multihost_utils.process_allgather(
        np.asarray([ok], np.int32)))))
  lock, error = None, None
  if index == 0:
    try:
      lock = acquire(model_dir, what=what, lease_seconds=lease_seconds)
    except UserInputError as e:
      error = e
  token = broadcast(_job_token(lock.job if lock else None))
  job = bytes(bytearray(token.tolist())).hex()
  if not any(token.tolist()):  # process 0 was refused: every process says why
    if error is not None:
      raise error
    raise ModelDirBusyError(f"MODEL_DIR {model_dir}: process 0 of this job could not take its lock "
                            "(its error names the holder)")
  problem = None
  if index != 0:
    path = storage.join(model_dir, LOCK_FILE)
    if storage.is_remote(path):
      seen = _read_remote_holder(path)
    else:
      try:
        fd = os.open(path, os.O_RDONLY)
        try:
          seen = _read_holder(fd)
        finally:
          os.close(fd)
      except OSError:
        seen = None
    if seen is None or seen.get("job") != job:
      problem = (f"process {index} does not see this job's lock in {path} (it names "
                 f"{describe(seen, path) if seen else 'nobody'}): every host must share MODEL_DIR")
  if not all_agree(problem is None):
    if lock is not None:
      lock.release()
    raise ModelDirBusyError(problem or f"MODEL_DIR {model_dir}: another process of this job does not "
                            "see the lock process 0 took (MODEL_DIR must be on storage every host "
                            "shares)")
  return lock
