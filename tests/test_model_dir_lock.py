"""One writer per MODEL_DIR (issue 23, item 1): a second writer is refused at once naming the holder,
stale locks are taken over with a warning, multi-host jobs take it once and every process agrees."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from t2t_jax.training import model_dir_lock
from t2t_jax.training.model_dir_lock import LOCK_FILE, ModelDirBusyError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")

HOLD = textwrap.dedent("""
    import sys, time
    from t2t_jax.training import model_dir_lock
    lock = model_dir_lock.acquire(sys.argv[1], what="testing")
    print("HELD", flush=True)
    time.sleep(600)
""")


def _holder(model_dir):
  """A child process holding MODEL_DIR's lock (started and holding when this returns)."""
  p = subprocess.Popen([sys.executable, "-c", HOLD, model_dir], env=ENV, stdout=subprocess.PIPE, text=True)
  assert p.stdout.readline().strip() == "HELD"
  return p


def _train_args(model_dir, seed, steps):
  return ["--gin_file=models/t5_1_1_micro.gin", "--gin_file=runs/finetune.gin",
          "--gin.MIXTURE_OR_TASK_NAME='copy'", "--gin.VOCAB_SIZE=128", "--gin.PACK=False",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 10, 'targets': 5}",
          "--gin.train_script.DataConfig.data_fn=@train_script.copy_task_batches",
          "--gin.BATCH_SIZE=8", f"--gin.TRAIN_STEPS={steps}", "--gin.CHECKPOINT_PERIOD=10",
          "--gin.EVAL_PERIOD=None", "--gin.LOG_PERIOD=10", f"--gin.RANDOM_SEED={seed}",
          f"--gin.MODEL_DIR='{model_dir}'"]


def test_second_training_on_the_same_model_dir_is_refused_at_once(tmp_path):
  """Issue 23: two trainings on one MODEL_DIR both exited 0, the second silently replacing the first's
  checkpoints, metrics and config.gin."""
  d = str(tmp_path / "m")
  first = subprocess.Popen([sys.executable, "-m", "t2t_jax.train", *_train_args(d, 1, 30)], cwd=REPO,
                           env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    deadline = time.time() + 120
    while not (os.path.exists(os.path.join(d, LOCK_FILE)) and os.path.getsize(os.path.join(d, LOCK_FILE))):
      assert first.poll() is None and time.time() < deadline, first.communicate()[0][-2000:]
      time.sleep(0.2)
    t0 = time.time()
    second = subprocess.run([sys.executable, "-m", "t2t_jax.train", *_train_args(d, 2, 30)], cwd=REPO,
                            env=ENV, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2 and time.time() - t0 < 30, second.stderr[-2000:]
    [line] = second.stderr.strip().splitlines()
    assert line.startswith(f"error: MODEL_DIR {d} is in use by pid {first.pid} on {socket.gethostname()} "
                           "(training since "), line
    assert line.endswith("; wait for it, stop it, or use another MODEL_DIR") and "`train.py --gin_file=" in line
    out = first.communicate(timeout=300)[0]
  finally:
    if first.poll() is None:
      first.kill()
  assert first.returncode == 0, out[-3000:]
  assert "RANDOM_SEED = 1" in open(os.path.join(d, "config.gin")).read()  # the first run's, not replaced
  assert os.path.getsize(os.path.join(d, LOCK_FILE)) == 0  # released: free for the next run


def test_lock_names_its_holder_and_is_reentrant_in_one_process(tmp_path):
  d = str(tmp_path / "m")
  p = _holder(d)
  try:
    with pytest.raises(ModelDirBusyError, match=rf"MODEL_DIR {d} is in use by pid {p.pid} on "
                                                rf"{socket.gethostname()} \(testing since .* UTC, `-c {d}`\)"):
      model_dir_lock.acquire(d)
  finally:
    p.kill()
    p.wait()
  # SIGKILL released the kernel lock; the record names a dead pid: taken over (warned), re-entrant.
  lock = model_dir_lock.acquire(d)
  assert model_dir_lock.acquire(d) is lock
  lock.release()
  assert json.loads(open(os.path.join(d, LOCK_FILE)).read())["pid"] == os.getpid()  # still held once
  lock.release()
  assert open(os.path.join(d, LOCK_FILE)).read() == ""


def _write_record(d, **fields):
  os.makedirs(d, exist_ok=True)
  record = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": None, "started_utc": "then",
            "what": "training", "job": "ab" * 16, **fields}
  with open(os.path.join(d, LOCK_FILE), "w") as f:
    json.dump(record, f)


def test_stale_locks_are_taken_over_with_a_warning(tmp_path, caplog):
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  d = str(tmp_path / "dead_pid")
  _write_record(d, pid=dead.pid)
  with caplog.at_level(logging.WARNING, logger="t2t_jax.training.model_dir_lock"):
    model_dir_lock.acquire(d).release()
  assert any(f"taking over the stale lock of MODEL_DIR {d} held by pid {dead.pid}" in r.message
             and "has exited" in r.message for r in caplog.records)
  # A holder on another host: alive while its heartbeat is within the lease, stale after it.
  d = str(tmp_path / "other_host")
  _write_record(d, host="another-host", pid=1)
  with pytest.raises(ModelDirBusyError, match="in use by pid 1 on another-host .*presumed alive for the 60 s lease"):
    model_dir_lock.acquire(d, lease_seconds=60)
  old = time.time() - 120
  os.utime(os.path.join(d, LOCK_FILE), (old, old))
  caplog.clear()
  with caplog.at_level(logging.WARNING, logger="t2t_jax.training.model_dir_lock"):
    lock = model_dir_lock.acquire(d, lease_seconds=60)
  assert any("heartbeat is 120 s old, past the 60 s lease" in r.message for r in caplog.records)
  lock.release()


def test_the_holder_heartbeats_and_bad_leases_are_named(tmp_path, monkeypatch):
  d = str(tmp_path / "m")
  lock = model_dir_lock.acquire(d, lease_seconds=2)
  path = os.path.join(d, LOCK_FILE)
  old = time.time() - 100
  os.utime(path, (old, old))
  time.sleep(1.5)  # the heartbeat runs every lease / 4 (>= 0.5 s)
  assert time.time() - os.path.getmtime(path) < 5
  lock.release()
  monkeypatch.setenv(model_dir_lock.LEASE_ENV, "soon")
  with pytest.raises(model_dir_lock.UserInputError, match="T2T_LOCK_LEASE_SECONDS='soon' is not a number"):
    model_dir_lock.acquire(d)
  with pytest.raises(model_dir_lock.UserInputError, match="lease_seconds must be > 0"):
    model_dir_lock.acquire(d, lease_seconds=0)


class _FakeJob:
  """Two processes of one job, run one after the other: broadcast returns process 0's value."""

  def __init__(self):
    self.token = None

  def broadcast(self, index):
    def fn(x):
      if index == 0:
        self.token = np.asarray(x)
      return self.token
    return fn


def test_multi_host_job_takes_the_lock_once_and_every_process_agrees(tmp_path):
  d = str(tmp_path / "m")
  job = _FakeJob()
  lock = model_dir_lock.acquire_for_job(d, process_index=0, process_count=2, broadcast=job.broadcast(0),
                                        all_agree=lambda ok: ok)
  assert lock is not None and lock.job == bytes(job.token.tolist()).hex()
  assert model_dir_lock.acquire_for_job(d, process_index=1, process_count=2, broadcast=job.broadcast(1),
                                        all_agree=lambda ok: ok) is None  # checked, not taken
  # A process that sees another job's lock (e.g. MODEL_DIR not shared between hosts): all refuse.
  job.token = np.frombuffer(bytes.fromhex("cd" * 16), np.uint8)
  with pytest.raises(ModelDirBusyError, match="process 1 does not see this job's lock .*every host must share"):
    model_dir_lock.acquire_for_job(d, process_index=1, process_count=2, broadcast=job.broadcast(1),
                                   all_agree=lambda ok: ok)
  lock.release()
  # Process 0 refused (another writer holds it): every process raises, none waits in a collective.
  p = _holder(d)
  try:
    job = _FakeJob()
    with pytest.raises(ModelDirBusyError, match=f"in use by pid {p.pid}"):
      model_dir_lock.acquire_for_job(d, process_index=0, process_count=2, broadcast=job.broadcast(0),
                                     all_agree=lambda ok: ok)
    with pytest.raises(ModelDirBusyError, match="process 0 of this job could not take its lock"):
      model_dir_lock.acquire_for_job(d, process_index=1, process_count=2, broadcast=job.broadcast(1),
                                     all_agree=lambda ok: ok)
  finally:
    p.send_signal(signal.SIGKILL)
    p.wait()
