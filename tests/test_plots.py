"""Tests for t2t_jax.plots: the training-curve PNG at the end of training, `t2t plot`, result charts
embedded in reports."""

import os
import struct

import numpy as np
import pytest

from t2t_jax import cli, plots, report
from t2t_jax.training import hooks, summaries, trainer
from t2t_jax.models import t5
from t2t_jax.train import copy_task_batches

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CURVES_SIZE = (800, 512)  # figsize (10, 6.4) at 80 dpi


def _png_size(path) -> tuple[int, int]:
  """(width, height) of a PNG file; fails unless it is one and decodes to a non-blank image."""
  with open(path, "rb") as f:
    data = f.read()
  assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", path
  import matplotlib.image  # pylint: disable=g-import-not-at-top  (decodes the file)
  pixels = matplotlib.image.imread(path)
  assert float(np.std(pixels)) > 0.01  # something is drawn
  return struct.unpack(">II", data[16:24])


def _write_metrics(model_dir, train_keys=("loss", "accuracy", "learning_rate"), eval_rows=True):
  w = summaries.MetricsWriter(str(model_dir), tensorboard=False)
  for step in (10, 20, 30):
    w.write_scalars(step, {k: 1.0 / step for k in train_keys}, "train")
    if eval_rows:
      w.write_scalars(step, {"loss": 2.0 / step, "accuracy": step / 100}, "eval")
  w.close()


def test_training_writes_the_curves_png_at_the_end(tmp_path):
  """A tiny training leaves MODEL_DIR/training_curves.png beside the TensorBoard events, drawn from
  metrics.jsonl, whose train rows carry examples/s."""
  batches = copy_task_batches(task_feature_lengths={"inputs": 10, "targets": 5}, batch_size=8,
                              seed=0, num_examples=64)
  trainer.train(model=t5.T5Config.micro(), train_iter=batches, model_dir=str(tmp_path / "m"),
                config=trainer.TrainConfig(train_steps=6, batch_size=8, log_period=2, progress=False),
                checkpoint=trainer.CheckpointConfig(period=None, async_save=False))
  path = tmp_path / "m" / plots.CURVES_FILE
  assert os.path.isdir(tmp_path / "m" / "train")  # TensorBoard events beside it
  assert _png_size(path) == CURVES_SIZE and path.stat().st_size > 10_000
  rows = summaries.read_metrics(str(tmp_path / "m"), "train")
  assert [r["step"] for r in rows] == [2, 4, 6]
  assert all(r["examples_per_second"] > 0 for r in rows)
  assert not [f for f in os.listdir(tmp_path / "m") if f.endswith(".tmp")]
  _, _, notes = plots.read_curves(tmp_path / "m")
  assert notes == []  # loss, token accuracy, learning rate and examples/s all logged


@pytest.mark.parametrize("tensorboard, chief, drawn", [(True, True, True), (False, True, False),
                                                        (True, False, False)])
def test_curves_hook_runs_on_process_0_when_summaries_are_on(tensorboard, chief, drawn):
  config = trainer.TrainConfig(train_steps=2, batch_size=8, progress=False, handle_sigterm=False,
                               tensorboard=tensorboard)
  ctx = hooks.LoopContext(start_step=0, end_step=2, batch_size=8, is_chief=chief)
  default_hooks = trainer._default_hooks  # pylint: disable=protected-access
  got = default_hooks(config, trainer.CheckpointConfig(), ctx, None, dict, None)
  assert any(isinstance(h, hooks.CurvesHook) for h in got) == drawn
  assert isinstance(got[-1], hooks.CurvesHook) == drawn  # after the summaries and the checkpoint
  for h in got:
    h.close()


def test_curves_hook_warns_instead_of_failing_the_run(tmp_path, caplog):
  ctx = hooks.LoopContext(start_step=0, end_step=2, batch_size=8)
  ctx.step = 2
  ctx.writer = summaries.MetricsWriter(str(tmp_path), tensorboard=False)  # nothing logged
  hooks.CurvesHook().finish(ctx)
  ctx.writer.close()
  assert "training curves not drawn" in caplog.text and "no loss" in caplog.text
  assert not (tmp_path / plots.CURVES_FILE).exists()


def test_plot_command_writes_png_and_names_series_not_logged(tmp_path, capsys):
  _write_metrics(tmp_path / "m")  # no examples/s
  out = tmp_path / "figs" / "curves.png"
  assert cli.main(["plot", str(tmp_path / "m"), "--out", str(out)]) == 0
  assert capsys.readouterr().out.strip() == (f"Training curves: {out} (examples/s: not logged)")
  assert _png_size(out) == CURVES_SIZE
  assert cli.main(["--verbose", "plot", str(tmp_path / "m")]) == 0  # default: MODEL_DIR/...
  assert _png_size(tmp_path / "m" / plots.CURVES_FILE) == CURVES_SIZE
  # Eval rows alone still draw (loss and accuracy panels); the train-only panels say so.
  _write_metrics(tmp_path / "e", train_keys=())
  _, _, notes = plots.read_curves(tmp_path / "e")
  assert notes == ["learning rate: not logged", "examples/s: not logged"]


@pytest.mark.parametrize("setup, needle", [
    (lambda d: None, "no such model dir"),
    (lambda d: os.makedirs(d), "metrics.jsonl: not found"),
    (lambda d: _write_metrics(d, train_keys=("grad_norm",), eval_rows=False), "no loss, accuracy"),
    (lambda d: (os.makedirs(d), open(os.path.join(d, "metrics.jsonl"), "wb").write(b"\xff\xfe\n")),
     "cannot read the training metrics"),
])
def test_plot_command_on_a_bad_dir_exits_2_with_one_line(tmp_path, capsys, setup, needle):
  model_dir = str(tmp_path / "m")
  setup(model_dir)
  assert cli.main(["plot", model_dir]) == 2
  captured = capsys.readouterr()
  err = captured.err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("t2t: error: ") and needle in err[0], err
  assert model_dir in err[0] and captured.out == ""
  assert not os.path.exists(os.path.join(model_dir, plots.CURVES_FILE))


def test_plot_command_refuses_a_directory_as_out(tmp_path, capsys):
  _write_metrics(tmp_path / "m")
  os.makedirs(tmp_path / "d")
  assert cli.main(["plot", str(tmp_path / "m"), "--out", str(tmp_path / "d")]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and str(tmp_path / "d") in err[0]


def test_metrics_chart_is_embedded_in_reports(tmp_path):
  rows = [{"method": "Text2Tracks", "hits@10": 0.9, "map@10": 0.3, "ndcg@10": 0.4},
          {"method": "BM25", "hits@10": 0.7, "map@10": 0.2, "ndcg@10": None},
          {"method": "no metrics"}]
  figures = plots.chart_figures(tmp_path / "r", rows, caption="per method")
  assert figures == [("per method", plots.METRICS_FILE)]
  width, height = _png_size(tmp_path / "r" / plots.METRICS_FILE)
  assert width == 640 and height > 100
  report.write_report(str(tmp_path / "r"), title="t", rows=rows, examples=[], seconds=1.0,
                      figures=figures)
  md = (tmp_path / "r" / "report.md").read_text()
  assert "![per method](metrics.png)" in md
  report.write_results(str(tmp_path / "s"), rows, columns=("method", "hits@10"), title="t",
                       machine={}, config={}, figures=plots.chart_figures(
                           tmp_path / "s", rows, caption="c", metrics=("hits@10",)))
  assert "![c](metrics.png)" in (tmp_path / "s" / "results.md").read_text()
  assert plots.chart_figures(tmp_path / "n", rows[2:], caption="c") == []
  assert not (tmp_path / "n").exists()
