"""Tests for t2t_jax.gin_utils: gin files (and includes) resolve from any working directory, and a
local runs/ folder never shadows the bundled gin/runs/ (issue 12)."""

import os
import subprocess
import sys

import gin
import pytest

from t2t_jax import gin_utils
from t2t_jax.errors import UserInputError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def foreign_cwd(tmp_path, monkeypatch):
  """A working directory outside the repo with its own runs/ and models/ folders."""
  (tmp_path / "runs").mkdir()
  (tmp_path / "runs" / "finetune.gin").write_text("TRAIN_STEPS = 'shadowed'\n")
  (tmp_path / "runs" / "mine.gin").write_text("include 'runs/finetune.gin'\nTRAIN_STEPS = 7\n")
  (tmp_path / "models").mkdir()
  monkeypatch.chdir(tmp_path)
  yield tmp_path
  gin.clear_config()


def test_bundled_files_win_over_a_local_runs_folder(foreign_cwd):
  readers = list(gin.config._FILE_READERS)  # pylint: disable=protected-access
  for files in (["models/t5_1_1_tiny.gin", "runs/pretrain.gin"],
                ["gin/models/t5_1_1_tiny.gin", "gin/runs/pretrain.gin"]):
    gin_utils.parse_gin(files, ["MODEL_DIR='m'", "MIXTURE_OR_TASK_NAME='t'"])
    assert gin.query_parameter("TRAIN_STEPS/macro.value") == 100000  # pretrain.gin, not the local file
    assert gin.query_parameter("LR_SCHEDULE/macro.value") == "rsqrt"
    assert gin.query_parameter("VOCAB_SIZE/macro.value") is None  # taken from the task
  assert gin.config._FILE_READERS == readers  # pylint: disable=protected-access
  assert gin_utils.resolve_gin_file("runs/finetune.gin") == os.path.join(gin_utils.REPO_GIN_DIR, "runs", "finetune.gin")


def test_local_files_and_search_paths(foreign_cwd, tmp_path_factory):
  # A file only the working directory has is found there; its include of a bundled name is bundled.
  gin_utils.parse_gin(["runs/mine.gin", "models/t5_1_1_tiny.gin"], ["MODEL_DIR='m'", "MIXTURE_OR_TASK_NAME='t'"])
  assert gin.query_parameter("TRAIN_STEPS/macro.value") == 7
  assert gin.query_parameter("LEARNING_RATE/macro.value") != "shadowed"
  other = tmp_path_factory.mktemp("conf")
  (other / "runs").mkdir()
  (other / "runs" / "mine.gin").write_text("TRAIN_STEPS = 8\n")
  assert gin_utils.resolve_gin_file("runs/mine.gin", [str(other)]) == str(other / "runs" / "mine.gin")
  assert gin_utils.resolve_gin_file("runs/mine.gin") == str(foreign_cwd / "runs" / "mine.gin")
  assert gin_utils.resolve_gin_file(str(other / "runs" / "mine.gin")) == str(other / "runs" / "mine.gin")
  assert gin_utils.resolve_gin_file("runs/none.gin") is None


def test_missing_files_are_one_line_errors(foreign_cwd):
  with pytest.raises(UserInputError, match=r"gin file 'runs/nope.gin' not found \(searched: .*gin"):
    gin_utils.parse_gin(["runs/nope.gin"])
  (foreign_cwd / "inc.gin").write_text("include 'runs/nope2.gin'\n")
  with pytest.raises(UserInputError) as info:
    gin_utils.parse_gin(["inc.gin"])
  assert "runs/nope2.gin" in str(info.value) and "inc.gin" in str(info.value) and "\n" not in str(info.value)
  assert "NoneType" not in str(info.value)


def test_build_ids_from_another_directory(tmp_path):
  """docs/ids.md's `tools/build_ids.py --gin_file gin/ids/...` works outside the repo, without gin's
  misleading "ERROR:root:Path not found" log."""
  cwd = tmp_path / "elsewhere"
  (cwd / "runs").mkdir(parents=True)
  (cwd / "cat.jsonl").write_text("".join(
      f'{{"track_id": "t{i}", "artist": "A", "title": "s{i}"}}\n' for i in range(5)))
  (cwd / "pl.jsonl").write_text('{"playlist_id": "p1", "title": "x", "track_ids": ["t1", "t2"]}\n')
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  code = ("import sys; from t2t_jax.data import convert; "
          "convert.import_dataset('cat.jsonl', 'pl.jsonl', 'ds', vocab_size=None, validation_size=0, test_size=0); "
          "sys.argv = ['build_ids.py', '--gin_file', 'gin/ids/integer_atomic.gin', '--dataset_dir', 'ds', "
          "'--out', 'ids', '--no_plots', '--no_progress']; "
          f"sys.path.insert(0, {os.path.join(REPO, 'tools')!r}); import build_ids; sys.exit(build_ids.main())")
  proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "Path not found" not in proc.stderr and "wrote ids: 5 tracks" in proc.stdout


def test_a_config_gin_written_before_the_training_package_still_parses(tmp_path):
  """MODEL_DIR/config.gin of a run trained before t2t_jax/training/ existed imports the moved modules
  by their old names; it parses as the same config."""
  old = tmp_path / "config.gin"
  text = open(os.path.join(gin_utils.REPO_GIN_DIR, "runs", "finetune.gin"), encoding="utf-8").read()
  legacy = text.replace("from t2t_jax.training import ", "from t2t_jax import ")
  assert legacy.count("from t2t_jax import ") >= 4  # losses, optimizers, partitioning, trainer, train
  old.write_text("include 'models/t5_1_1_tiny.gin'\n" + legacy, encoding="utf-8")
  try:
    gin_utils.parse_gin([str(old)], ["MODEL_DIR='m'", "MIXTURE_OR_TASK_NAME='t'"])
    assert gin.query_parameter("trainer.Trainer.num_microbatches") is not None
  finally:
    gin.clear_config()
  assert gin_utils.upgrade_imports("from t2t_jax import train as train_script\n") == (
      "from t2t_jax import train as train_script\n")  # train.py did not move
  assert gin_utils.upgrade_imports("from t2t_jax import trainer\n") == "from t2t_jax.training import trainer\n"
