"""No temp is left behind by a successful command (issue 23, item 4): after each `t2t` command and the
gin training entry, the outputs and their parent folders are walked for our atomic-write temporaries
(`.NAME.t2t-tmp.*` / `.NAME.t2t-old.*`) and orbax's unfinished step dirs."""

import os
import subprocess
import sys

import pytest

from t2t_jax import cli, io_utils

from test_recommend import build_model_dir  # pylint: disable=g-bad-import-order

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOOD = os.path.join(REPO, "tests", "data", "good")
ENV = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")


def _temps(*roots) -> list[str]:
  """Every temporary under (and beside) each root: ours and orbax's."""
  found = []
  for root in roots:
    for d, dirs, files in os.walk(root):
      for name in dirs + files:
        if io_utils.is_temp_name(name) or "orbax-checkpoint-tmp" in name:
          found.append(os.path.join(d, name))
  return found


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  return build_model_dir(str(tmp_path_factory.mktemp("no_temps")))


def test_import_export_and_overwrite_through_a_link_leave_no_temps(model_dir, tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  assert cli.main(["import", "jsonl", os.path.join(GOOD, "catalog.jsonl"), os.path.join(GOOD, "playlists.jsonl"),
                   "--out", str(out / "ds")]) == 0
  assert _temps(out) == [] and sorted(os.listdir(out)) == ["ds"]
  export = out / "export"
  argv = ["export", "--model_dir", model_dir, "--out", str(export), "-k", "5", "--no_hf", "--platforms", "cpu"]
  assert cli.main(argv) == 0
  assert cli.main(argv) == 0  # replacing its own previous export
  os.symlink(export, out / "link")
  assert cli.main(argv[:4] + [str(out / "link")] + argv[5:] + ["--overwrite"]) == 0
  assert _temps(out, model_dir) == [] and sorted(os.listdir(out)) == ["ds", "export", "link"]
  assert cli.main(["recommend", "--model_dir", model_dir, "jazz"]) == 0
  assert _temps(os.path.dirname(model_dir)) == []


def test_training_entry_and_plot_leave_no_temps(tmp_path):
  d = tmp_path / "runs" / "m"
  args = ["--gin_file=models/t5_1_1_micro.gin", "--gin_file=runs/finetune.gin",
          "--gin.MIXTURE_OR_TASK_NAME='copy'", "--gin.VOCAB_SIZE=128", "--gin.PACK=False",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 10, 'targets': 5}",
          "--gin.train_script.DataConfig.data_fn=@train_script.copy_task_batches",
          "--gin.BATCH_SIZE=8", "--gin.TRAIN_STEPS=6", "--gin.CHECKPOINT_PERIOD=2",
          "--gin.EVAL_PERIOD=None", "--gin.LOG_PERIOD=2", f"--gin.MODEL_DIR='{d}'"]
  for _ in range(2):  # a fresh run, then a resume that finds every step done
    res = subprocess.run([sys.executable, "-m", "t2t_jax.train", *args], cwd=REPO, env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _temps(tmp_path) == []
  assert cli.main(["plot", str(d), "--out", str(tmp_path / "curves.png")]) == 0
  assert _temps(tmp_path) == [] and (tmp_path / "curves.png").stat().st_size > 0
  # every committed step carries its manifest, and the lock is released (empty)
  steps = sorted(os.listdir(d / "checkpoints"))
  assert steps and all((d / "checkpoints" / s / "t2t_manifest.json").exists() for s in steps)
  assert (d / ".t2t_lock").stat().st_size == 0
