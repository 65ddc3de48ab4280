"""Entry-point tests: `python -m t2t_jax.train` with the real gin files on a tiny config."""

import json
import os
import subprocess
import sys

import pytest

from t2t_jax import gin_utils
from t2t_jax.errors import UserInputError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = ["--gin_file=models/t5_1_1_tiny.gin", "--gin_file=runs/finetune.gin",
        "--gin.MIXTURE_OR_TASK_NAME='copy'",
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 10, 'targets': 5}",
        "--gin.train_script.train.data_fn=@train_script.copy_task_batches", "--gin.VOCAB_SIZE=128",
        "--gin.BATCH_SIZE=8", "--gin.LOG_PERIOD=5", "--gin.EVAL_STEPS=2"]


def _run(args, timeout=300):
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.run([sys.executable, "-m", "t2t_jax.train", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.mark.entry
def test_train_entry_point_runs_and_writes_model_dir(tmp_path):
  model_dir = tmp_path / "m"
  proc = _run(BASE + [f"--gin.MODEL_DIR='{model_dir}'", "--gin.TRAIN_STEPS=10",
                      "--gin.EVAL_PERIOD=5", "--gin.CHECKPOINT_PERIOD=5",
                      "--gin.LEARNING_RATE=0.01"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  config = (model_dir / "config.gin").read_text()
  assert "TRAIN_STEPS = 10" in config and f"MODEL_DIR = '{model_dir}'" in config
  rows = [json.loads(l) for l in (model_dir / "metrics.jsonl").read_text().splitlines()]
  assert [(r["step"], r["split"]) for r in rows] == [(5, "train"), (5, "eval"), (10, "train"),
                                                      (10, "eval")]
  assert rows[-1]["loss"] < rows[1]["loss"]
  assert json.loads((model_dir / "model_config.json").read_text())["vocab_size"] == 128
  assert sorted(os.listdir(model_dir / "checkpoints")) == ["10", "5"]

  # runs/eval.gin and runs/export.gin through the same entry point.
  proc = _run(["--gin_file=runs/eval.gin", f"--gin.MODEL_DIR='{model_dir}'",
               "--gin.MIXTURE_OR_TASK_NAME='copy'", "--gin.BATCH_SIZE=8", "--gin.EVAL_STEPS=2",
               "--gin.TASK_FEATURE_LENGTHS={'inputs': 10, 'targets': 5}",
               "--gin.train_script.evaluate.data_fn=@train_script.copy_task_batches"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads((model_dir / "eval_results" / "validation_step10.json").read_text())
  assert result["step"] == 10 and result["num_tokens"] > 0 and 0 < result["loss"] < 6
  assert not (model_dir / "config.gin").read_text().count("RUN = 'evaluate'")
  export_dir = tmp_path / "hf"
  proc = _run(["--gin_file=runs/export.gin", f"--gin.MODEL_DIR='{model_dir}'",
               f"--gin.EXPORT_DIR='{export_dir}'"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert json.loads((export_dir / "config.json").read_text())["vocab_size"] == 128
  assert (export_dir / "model.safetensors").stat().st_size > 4 * 50000


@pytest.mark.entry
@pytest.mark.parametrize("flag, message", [
    ("--gin.TRIAN_STEPS=5", "unknown gin macro 'TRIAN_STEPS'.*did you mean TRAIN_STEPS"),
    ("--gin.train_script.train.lerning_rate=0.1",
     "doesn't have a parameter named 'lerning_rate'"),
    ("--gin.BATCH_SIZE=(", "bad gin binding 'BATCH_SIZE=\\('"),
])
def test_entry_point_rejects_bad_gin_before_compiling(tmp_path, flag, message):
  proc = _run(BASE + [f"--gin.MODEL_DIR='{tmp_path}'", flag], timeout=60)
  assert proc.returncode == 2
  import re
  assert re.search(message, proc.stderr), proc.stderr
  assert "Traceback" not in proc.stderr
  assert not os.path.exists(tmp_path / "checkpoints")


@pytest.mark.parametrize("files, bindings", [
    (["models/t5_1_1_base.gin", "runs/pretrain.gin"], ["MODEL_DIR='m'",
                                                         "MIXTURE_OR_TASK_NAME='t'"]),
    (["models/t5_1_1_xl.gin", "runs/finetune.gin"], ["MODEL_DIR='m'", "MIXTURE_OR_TASK_NAME='t'",
                                                       "INITIAL_CHECKPOINT_PATH='/hf/flan'"]),
    (["runs/eval.gin"], ["MODEL_DIR='m'", "MIXTURE_OR_TASK_NAME='t'"]),
    (["runs/infer.gin"], ["MODEL_DIR='m'", "INFER_INPUT_FILE='p.txt'",
                          "INFER_OUTPUT_FILE='o.jsonl'"]),
    (["runs/export.gin"], ["MODEL_DIR='m'", "EXPORT_DIR='e'"]),
])
def test_every_run_gin_parses(files, bindings):
  import gin
  gin_utils.parse_gin(files, bindings)
  if "runs/pretrain.gin" in files:
    assert gin.query_parameter("LR_SCHEDULE/macro.value") == "rsqrt"
    assert gin.query_parameter("MODEL_CONFIG/macro.value").selector == "t5.T5Config"
  gin.clear_config()


def test_missing_required_macro_and_file():
  with pytest.raises(UserInputError, match="gin macro MODEL_DIR is required"):
    gin_utils.parse_gin(["models/t5_1_1_tiny.gin", "runs/finetune.gin"],
                        ["MIXTURE_OR_TASK_NAME='x'"])
  with pytest.raises(UserInputError, match="gin file 'runs/nope.gin' not found"):
    gin_utils.parse_gin(["runs/nope.gin"])
  bindings, rest = gin_utils.rewrite_gin_args(["--gin.A=1", "--x", "--gin.b.c='s'"])
  assert bindings == ["A=1", "b.c='s'"] and rest == ["--x"]


def test_gin_search_paths_resolve_files_and_includes(tmp_path):
  import gin
  exp = tmp_path / "experiments"
  exp.mkdir()
  (exp / "mine.gin").write_text("include 'models/t5_1_1_small.gin'\n"
                                "include 'runs/finetune.gin'\n"
                                "TRAIN_STEPS = 77\n")
  gin_utils.parse_gin(["experiments/mine.gin"], ["MODEL_DIR='m'", "MIXTURE_OR_TASK_NAME='t'"],
                      gin_search_paths=[str(tmp_path)])
  assert gin.query_parameter("TRAIN_STEPS/macro.value") == 77
  assert gin.query_parameter("t5.T5Config.emb_dim") == 512
  gin.clear_config()
