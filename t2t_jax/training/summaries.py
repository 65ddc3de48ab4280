"""Training summaries: TensorBoard event files (tensorboardX) and a JSONL metrics log.

Layout in MODEL_DIR:  train/ and eval/ (TensorBoard event files), metrics.jsonl (one JSON object a
line: {"step": int, "split": "train"|"eval", <metric>: float, ...}).

The JSONL log is appended line by line and flushed (a crash loses at most the current line); when a
run resumes from step S the lines after S, written by the interrupted run, are dropped (the file is
rewritten atomically) so the log shows each step once.  Only process 0 writes.
"""

import json
import math

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


class MetricsWriter:
  """Writes scalars to TensorBoard (MODEL_DIR/{split}) and MODEL_DIR/metrics.jsonl."""

  def __init__(self, model_dir: str, *, enabled: bool = True, start_step: int = 0,
               tensorboard: bool = True):
    self.model_dir = model_dir
    self.enabled = enabled
    self._tb = {}
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

  def _writer(self, split):
    if split not in self._tb:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._tb[split] = SummaryWriter(logdir=storage.join(self.model_dir, split),
                                      purge_step=self._start_step + 1 if self._start_step else None)
    return self._tb[split]

  def write_scalars(self, step: int, scalars: dict, split: str = "train") -> None:
    if not self.enabled:
      return
    row = {"step": int(step), "split": split}
    row.update({k: _finite_or_str(v) for k, v in scalars.items()})
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()
    if self._tensorboard:
      w = self._writer(split)
      for k, v in scalars.items():
        w.add_scalar(k, float(v), int(step))

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
    self._tb = {}
    self.enabled = False
