"""`python -m t2t_jax.train` on a real SeqIO task: periodic Hits@K by constrained decoding, and a
MODEL_DIR that `t2t recommend` serves as it is (assets written by the train entry)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.entry
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK = "t2t.tiny_syn.sem.title"


def _build_root(root):
  from conftest import load_tiny_root  # pylint: disable=import-outside-toplevel
  return load_tiny_root().build(root)


def _run(args, data_root, timeout=420):
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
             T2T_DATA_DIR=str(data_root), XLA_FLAGS="", TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, "-m", "t2t_jax.train", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def test_finetune_on_task_logs_hits_and_the_model_dir_is_servable(tmp_path, capsys):
  from t2t_jax import cli, evaluation  # pylint: disable=import-outside-toplevel
  from t2t_jax.serving import retriever  # pylint: disable=import-outside-toplevel
  root = tmp_path / "root"
  _build_root(root)
  model_dir = tmp_path / "m"
  proc = _run(["--gin_file=models/t5_1_1_micro.gin", "--gin_file=runs/finetune_hits.gin",
               f"--gin.MODEL_DIR='{model_dir}'", f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'",
               "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}",
               "--gin.TRAIN_STEPS=4", "--gin.BATCH_SIZE=8", "--gin.EVAL_PERIOD=2", "--gin.EVAL_EXAMPLES=4",
               "--gin.EVAL_BEAM_SIZE=10", "--gin.BEAM_SIZE=10", "--gin.CHECKPOINT_PERIOD=4",
               "--gin.LOG_PERIOD=2", "--gin.LEARNING_RATE=0.01"], root)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "PACK = True" in (model_dir / "config.gin").read_text()  # T5X's default, from the model file
  with open(model_dir / "metrics.jsonl", encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  evals = [r for r in rows if "gen_hits@10" in r]
  assert [r["step"] for r in evals] == [2, 4]

  # The served model (assets written by the train entry) decodes the same IDs as the evaluation:
  # the step-4 Hits@10 / NDCG@10 recomputed through `Recommender` on the same 4 prompts are equal.
  assert sorted(f for f in os.listdir(model_dir / "assets") if not f.startswith(".")) == [
      "catalog.jsonl", "ids", "recommend.json", "spm.model"]
  settings = json.loads((model_dir / "assets" / "recommend.json").read_text())
  settings.pop("max_prompt_chars", None)  # the dataset's cut, when its meta.json has one
  assert settings == {"inputs_length": 16, "beam_size": 10, "prompt_field": "title",
                      "input_vocab": {"kind": "sentencepiece", "file": "spm.model"},
                      "output_vocab": "text_and_ids"}
  from tasks import pipeline, t2t_tasks  # pylint: disable=import-outside-toplevel
  t2t_tasks.register_tasks(root)
  examples = pipeline.get_eval_examples(TASK, "validation", max_examples=4)
  rec = retriever.GenerativeRetriever.from_model_dir(str(model_dir))
  np.testing.assert_array_equal(rec.encode([ex["prompt"] for ex in examples]),
                                evaluation.pad_inputs([ex["inputs"] for ex in examples], 16))
  rows_NxK, _ = rec.recommend_rows([ex["prompt"] for ex in examples], k=10)
  served = evaluation.evaluate_rankings(rows_NxK, [ex["relevant_rows"] for ex in examples],
                                        ks=(1, 5, 10))
  assert evals[-1]["gen_hits@10"] == pytest.approx(served["hits@10"])
  assert evals[-1]["gen_ndcg@10"] == pytest.approx(served["ndcg@10"])
  assert cli.main(["recommend", "--model_dir", str(model_dir), "--json", "-k", "3",
                   examples[0]["prompt"]]) == 0
  line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert len(line["tracks"]) == 3 and all(t["track_id"] in rec.tracks for t in line["tracks"])


def test_unknown_task_is_one_clear_line(tmp_path):
  _build_root(tmp_path / "root")
  proc = _run(["--gin_file=models/t5_1_1_micro.gin", "--gin_file=runs/finetune.gin",
               f"--gin.MODEL_DIR='{tmp_path / 'm'}'", "--gin.MIXTURE_OR_TASK_NAME='t2t.nope.sem.title'"],
              tmp_path / "root")
  assert proc.returncode == 2
  err = [l for l in proc.stderr.strip().splitlines() if l.strip()]
  assert "t2t.nope.sem.title" in err[-1] and "Traceback" not in proc.stderr
  assert not (tmp_path / "m").exists()
