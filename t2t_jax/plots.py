"""Figures a user looks at rather than reads, drawn with matplotlib's Agg canvas (headless).

  training_curves  MODEL_DIR/metrics.jsonl -> MODEL_DIR/training_curves.png: loss, token accuracy,
                   learning rate and examples/s against the step (eval loss / accuracy overlaid when
                   logged).  Drawn by the trainer's CurvesHook at the end of training (process 0)
                   and by `t2t plot MODEL_DIR`.
  metrics_chart    result rows -> a bar chart of Hits@10 / MAP@10 / NDCG@10 per method (the figure
                   the quickstart report and the study results embed).

matplotlib is imported inside the drawing functions (an optional heavy dependency: training and the
CLI import this module whether or not they draw); figures are built on a `Figure` with an explicit
Agg canvas, so no pyplot state or display backend is involved.  Files are written atomically.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

from t2t_jax import report, storage
from t2t_jax.training import summaries
from t2t_jax.errors import UserInputError

CURVES_FILE = "training_curves.png"
METRICS_FILE = "metrics.png"
# (metrics.jsonl key, panel title): the train metrics of t2t_jax.training.train_state and the throughput
# logged by hooks.SummaryHook.
PANELS = (("loss", "loss (per target token)"), ("accuracy", "token accuracy"),
          ("learning_rate", "learning rate"), ("examples_per_second", "examples/s"))
EVAL_OVERLAY = ("loss", "accuracy")
CHART_METRICS = ("hits@10", "map@10", "ndcg@10")


def _number(v) -> float | None:
  if isinstance(v, bool) or not isinstance(v, (int, float)):
    return None
  return float(v) if math.isfinite(v) else None


def _series(rows: Sequence[dict], key: str) -> tuple[list[int], list[float]]:
  points = sorted((int(r["step"]), _number(r.get(key))) for r in rows
                  if isinstance(r.get("step"), int) and _number(r.get(key)) is not None)
  return [s for s, _ in points], [v for _, v in points]


def _figure(width: float, height: float):
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(width, height))
  FigureCanvasAgg(fig)
  return fig


def _save(fig, path: str, dpi: int) -> str:
  try:
    report.save_figure(fig, path, dpi=dpi)
  except OSError as e:
    raise UserInputError(f"{path}: cannot write the figure ({e.strerror or e})") from None
  return path


def read_curves(model_dir: str | os.PathLike) -> tuple[dict, dict, list[str]]:
  """({key: (steps, values)} of the train panels, {key: (steps, values)} of the eval overlay,
  notes on the panels with nothing logged).  UserInputError naming the file when MODEL_DIR holds no
  readable training metrics."""
  model_dir = os.fspath(model_dir)
  path = storage.join(model_dir, summaries.METRICS_FILE)
  if not storage.isdir(model_dir):
    raise UserInputError(f"{model_dir}: no such model dir")
  if not storage.isfile(path):
    raise UserInputError(f"{path}: not found (MODEL_DIR must be a dir written by training: "
                         "t2t quickstart, python -m t2t_jax.train)")
  try:
    rows = [r for r in summaries.read_metrics(model_dir) if isinstance(r, dict)]
  except (OSError, ValueError) as e:
    raise UserInputError(f"{path}: cannot read the training metrics ({e})") from None
  train = [r for r in rows if r.get("split") == "train"]
  evals = [r for r in rows if r.get("split") == "eval"]
  curves = {key: _series(train, key) for key, _ in PANELS}
  overlay = {key: _series(evals, key) for key in EVAL_OVERLAY}
  if not any(steps for steps, _ in curves.values()) and not any(s for s, _ in overlay.values()):
    raise UserInputError(f"{path}: no {', '.join(k for k, _ in PANELS)} logged (no training curves "
                         "to draw)")
  notes = [f"{title}: not logged" for key, title in PANELS
           if not curves[key][0] and not (key in overlay and overlay[key][0])]
  return curves, overlay, notes


def training_curves(model_dir: str | os.PathLike, out: str | os.PathLike | None = None,
                    dpi: int = 80) -> tuple[str, list[str]]:
  """Draws the training curves of MODEL_DIR (module docstring) to `out` (default
  MODEL_DIR/training_curves.png).  Returns (path written, notes on series not logged, whose panels
  say so).  Raises UserInputError naming the file for a dir without training metrics."""
  curves, overlay, notes = read_curves(model_dir)
  out = os.fspath(out) if out is not None else os.path.join(os.fspath(model_dir), CURVES_FILE)
  fig = _figure(10, 6.4)
  axes = fig.subplots(2, 2, sharex=True).ravel()
  for ax, (key, title) in zip(axes, PANELS):
    steps, values = curves[key]
    marker = "o" if 0 < len(steps) <= 30 else None
    if steps:
      ax.plot(steps, values, marker=marker, markersize=3, label="train")
    if key in overlay and overlay[key][0]:
      e_steps, e_values = overlay[key]
      ax.plot(e_steps, e_values, marker="s", markersize=4, linestyle="--", label="eval")
      ax.legend(loc="best", fontsize=8)
    if not steps and not (key in overlay and overlay[key][0]):
      ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
  for ax in axes[2:]:
    ax.set_xlabel("step")
  last = max((s[-1] for s, _ in list(curves.values()) + list(overlay.values()) if s), default=0)
  fig.suptitle(f"{os.path.basename(os.path.abspath(os.fspath(model_dir)))}: training to step {last}",
               fontsize=11)
  return _save(fig, out, dpi), notes


def _label(row: dict, label_keys: Sequence[str]) -> str:
  text = " | ".join(str(row[k]) for k in label_keys if row.get(k) not in (None, ""))
  return text if len(text) <= 60 else text[:57] + "..."


def metrics_chart(rows: Sequence[dict], out: str | os.PathLike, *,
                  metrics: Sequence[str] = CHART_METRICS, label_keys: Sequence[str] = ("method",),
                  title: str | None = None, dpi: int = 80) -> str | None:
  """A horizontal bar chart of `metrics` per row (error bars from `{metric}_std` when the rows
  carry it), written to `out`.  Returns the path, or None when no row has any of the metrics."""
  metrics = [m for m in metrics if any(_number(r.get(m)) is not None for r in rows)]
  rows = [r for r in rows if any(_number(r.get(m)) is not None for m in metrics)]
  if not metrics or not rows:
    return None
  import numpy as np  # pylint: disable=g-import-not-at-top
  n, k = len(rows), len(metrics)
  fig = _figure(8, 1.2 + 0.22 * n * k + 0.15 * n)
  ax = fig.subplots()
  height = 0.8 / k
  y = np.arange(n)
  for j, m in enumerate(metrics):
    vals = [_number(r.get(m)) or 0.0 for r in rows]
    errs = [_number(r.get(f"{m}_std")) or 0.0 for r in rows]
    pos = y - 0.4 + height * (j + 0.5)
    ax.barh(pos, vals, height=height, xerr=errs if any(errs) else None, label=m, capsize=2)
    for p, v, e in zip(pos, vals, errs):
      ax.text(v + e, p, f" {v:.3f}", va="center", fontsize=7)
  ax.set_yticks(y)
  ax.set_yticklabels([_label(r, label_keys) for r in rows], fontsize=8)
  ax.invert_yaxis()
  ax.set_xlim(0, max(1.0, max(_number(r.get(m)) or 0.0 for r in rows for m in metrics) * 1.15))
  ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.6 / fig.get_figheight()), ncol=k, fontsize=8,
            frameon=False)
  ax.grid(True, axis="x", alpha=0.3)
  if title:
    ax.set_title(title, fontsize=10)
  return _save(fig, os.fspath(out), dpi)


def chart_figures(out_dir: str | os.PathLike, rows: Sequence[dict], *, caption: str,
                  **kwargs) -> list[tuple[str, str]]:
  """`metrics_chart` of `rows` as out_dir/metrics.png; [(caption, 'metrics.png')] for
  `report.write_report` / `write_results` to embed, or [] when the rows carry no metric."""
  path = metrics_chart(rows, os.path.join(os.fspath(out_dir), METRICS_FILE), **kwargs)
  return [(caption, METRICS_FILE)] if path else []
