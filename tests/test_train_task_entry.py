"""`python -m t2t_jax.train` on a real SeqIO task, with periodic Hits@K by constrained decoding."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.entry
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _build_root(root):
  from conftest import load_tiny_root  # pylint: disable=import-outside-toplevel
  return load_tiny_root().build(root)


def _run(args, data_root, timeout=420):
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
             T2T_DATA_DIR=str(data_root), XLA_FLAGS="", TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, "-m", "t2t_jax.train", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def test_finetune_on_task_logs_generative_hits(tmp_path):
  _build_root(tmp_path / "root")
  model_dir = tmp_path / "m"
  proc = _run(["--gin_file=models/t5_1_1_tiny.gin", "--gin_file=runs/finetune_hits.gin",
               f"--gin.MODEL_DIR='{model_dir}'", "--gin.MIXTURE_OR_TASK_NAME='t2t.tiny_syn.sem.title'",
               "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}", "--gin.VOCAB_SIZE=None",
               "--gin.TRAIN_STEPS=4", "--gin.BATCH_SIZE=8", "--gin.EVAL_PERIOD=2", "--gin.EVAL_EXAMPLES=4",
               "--gin.EVAL_BEAM_SIZE=10", "--gin.CHECKPOINT_PERIOD=4", "--gin.LOG_PERIOD=2"],
              tmp_path / "root")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert os.path.exists(model_dir / "config.gin")
  with open(model_dir / "metrics.jsonl", encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  evals = [r for r in rows if "gen_hits@10" in r]
  assert [r["step"] for r in evals] == [2, 4]
  for r in evals:
    assert 0.0 <= r["gen_hits@10"] <= 1.0 and 0.0 <= r["gen_ndcg@10"] <= 1.0


def test_unknown_task_is_one_clear_line(tmp_path):
  _build_root(tmp_path / "root")
  proc = _run(["--gin_file=models/t5_1_1_tiny.gin", "--gin_file=runs/finetune.gin",
               f"--gin.MODEL_DIR='{tmp_path / 'm'}'", "--gin.MIXTURE_OR_TASK_NAME='t2t.nope.sem.title'",
               "--gin.VOCAB_SIZE=None"], tmp_path / "root")
  assert proc.returncode == 2
  err = [l for l in proc.stderr.strip().splitlines() if l.strip()]
  assert "t2t.nope.sem.title" in err[-1] and "Traceback" not in proc.stderr
  assert not (tmp_path / "m").exists() or not os.listdir(tmp_path / "m")
