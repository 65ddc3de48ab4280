"""Training summaries: TensorBoard event files (tensorboardX's writer) and a JSONL metrics log.

Layout in MODEL_DIR:  train/ and eval/ (TensorBoard event files), metrics.jsonl (one JSON object a
line: {"step": int, "split": "train"|"eval", <metric>: float, ...}).

The JSONL log is appended line by line and flushed (a crash loses at most the current line); when a
run resumes from step S the lines after S, written by the interrupted run, are dropped (the file is
rewritten atomically) so the log shows each step once.  Only process 0 writes.

In a bucket (MODEL_DIR gs://... or s3://), where nothing is appended in place, both are rewritten
whole at each logged step: metrics.jsonl from its lines, and each event file from a local copy
that is appended to (one object upload per split; TensorBoard reads gs:// and s3:// logdirs).
tensorboardX's own GCS writer is not used: it has its own client (google-cloud-storage, no s3) and
retries for minutes when the bucket is unreachable as it is garbage-collected.
"""

import json
import math
import os
import shutil
import tempfile
import time

from t2t_jax import io_utils, storage

METRICS_FILE = "metrics.jsonl"


def _finite_or_str(v):
  v = float(v)
  return v if math.isfinite(v) else str(v)


def read_metrics(model_dir: str, split: str | None = None) -> list[dict]:
  """Reads MODEL_DIR/metrics.jsonl (optionally one split); [] if absent."""
  path = storage.join(model_dir, METRICS_FILE)
  if not storage.exists(path):
    return []
  rows = []
  with storage.open(path) as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError:  # a line cut by a crash
        continue
      if split is None or row.get("split") == split:
        rows.append(row)
  return rows


class _RewrittenLog:
  """metrics.jsonl on an object store, where nothing is appended in place: the lines are kept and
  the whole object is rewritten (one upload, atomic) at each flush, i.e. once per logged step."""

  def __init__(self, path: str, lines: list[str]):
    self.path, self.lines, self._dirty = path, list(lines), False

  def write(self, text: str) -> None:
    self.lines.append(text)
    self._dirty = True

  def flush(self) -> None:
    if self._dirty:
      with io_utils.atomic_write(self.path) as f:
        f.writelines(self.lines)
      self._dirty = False

  def close(self) -> None:
    self.flush()


class _EventFile:
  """One TensorBoard event file, written synchronously with tensorboardX's record writer and protos.

  Not tensorboardX's SummaryWriter: it hands events to a thread, and its flush() does not wait for
  that thread's queue, so a file copied to a bucket right after flush() could miss the last step."""

  def __init__(self, logdir: str, purge_step: int | None = None):
    from tensorboardX.event_file_writer import EventsWriter  # pylint: disable=import-outside-toplevel
    os.makedirs(logdir, exist_ok=True)
    self._events = EventsWriter(os.path.join(logdir, "events"))  # writes the file_version event
    if purge_step:  # TensorBoard hides the interrupted run's events from this step on
      from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
      self._events.write_event(event_pb2.Event(
          wall_time=time.time(), step=int(purge_step),
          session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
      self._events.flush()

  def add_scalars(self, step: int, scalars: dict) -> None:
    from tensorboardX.proto import event_pb2, summary_pb2  # pylint: disable=import-outside-toplevel
    values = [summary_pb2.Summary.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()]
    self._events.write_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                             summary=summary_pb2.Summary(value=values)))
    self._events.flush()

  def flush(self) -> None:
    self._events.flush()

  def close(self) -> None:
    self._events.close()


class MetricsWriter:
  """Writes scalars to TensorBoard (MODEL_DIR/{split}) and MODEL_DIR/metrics.jsonl."""

  def __init__(self, model_dir: str, *, enabled: bool = True, start_step: int = 0,
               tensorboard: bool = True):
    self.model_dir = model_dir
    self.enabled = enabled
    self._tb = {}
    self._mirrors = {}  # split -> (local logdir, its bucket logdir), MODEL_DIR in a bucket only
    self._tensorboard = tensorboard
    self._jsonl = None
    if not enabled:
      return
    storage.makedirs(model_dir)
    path = storage.join(model_dir, METRICS_FILE)
    kept = []
    if storage.exists(path):
      kept = [r for r in read_metrics(model_dir) if int(r.get("step", 0)) <= start_step]
      with io_utils.atomic_write(path) as f:
        for r in kept:
          f.write(json.dumps(r) + "\n")
    if storage.is_remote(path):
      self._jsonl = _RewrittenLog(path, [json.dumps(r) + "\n" for r in kept])
    else:
      self._jsonl = open(path, "a", encoding="utf-8")  # pylint: disable=consider-using-with
    self._start_step = start_step

  def _writer(self, split) -> "_EventFile":
    if split not in self._tb:
      logdir = storage.join(self.model_dir, split)
      if storage.is_remote(logdir):
        local = tempfile.mkdtemp(prefix=f"t2t_events_{split}.")
        self._mirrors[split] = (local, logdir)
        logdir = local
      self._tb[split] = _EventFile(logdir, purge_step=self._start_step + 1 if self._start_step else None)
    return self._tb[split]

  def write_scalars(self, step: int, scalars: dict, split: str = "train") -> None:
    if not self.enabled:
      return
    row = {"step": int(step), "split": split}
    row.update({k: _finite_or_str(v) for k, v in scalars.items()})
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()
    if self._tensorboard:
      self._writer(split).add_scalars(int(step), scalars)
      if split in self._mirrors:  # a bucket MODEL_DIR: the event file uploaded whole
        storage.upload_dir(*self._mirrors[split])

  def flush(self):
    if not self.enabled:
      return
    self._jsonl.flush()
    for w in self._tb.values():
      w.flush()

  def close(self):
    if not self.enabled:
      return
    self.flush()
    self._jsonl.close()
    for w in self._tb.values():
      w.close()
    for local, _ in self._mirrors.values():
      shutil.rmtree(local, ignore_errors=True)
    self._tb, self._mirrors = {}, {}
    self.enabled = False
