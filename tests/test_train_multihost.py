"""Two processes on localhost (CPU, gloo collectives over loopback) train like one process, and
stop together when only one of them gets SIGTERM."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from t2t_jax.training import checkpoints, summaries, trainer
from t2t_jax.models import t5
from t2t_jax.training.optimizers import OptimizerConfig
from t2t_jax.train import copy_task_batches

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 4


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _args(model_dir, port, steps):
  return ["--gin_file=models/t5_1_1_micro.gin", "--gin_file=runs/finetune.gin",
          "--gin.MIXTURE_OR_TASK_NAME='copy'", "--gin.VOCAB_SIZE=128", "--gin.PACK=False",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 10, 'targets': 5}",
          "--gin.train_script.DataConfig.data_fn=@train_script.copy_task_batches",
          "--gin.BATCH_SIZE=8", f"--gin.TRAIN_STEPS={steps}", "--gin.CHECKPOINT_PERIOD=2",
          "--gin.EVAL_PERIOD=None", "--gin.LOG_PERIOD=1", "--gin.LEARNING_RATE=0.01",
          f"--gin.MODEL_DIR='{model_dir}'", f"--coordinator_address=localhost:{port}",
          "--num_processes=2"]


def _start(args):
  # 4 CPU devices per process: the global mesh has 8, like a single process in the tests.
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=4")
  return [subprocess.Popen([sys.executable, "-m", "t2t_jax.train", *args, f"--process_id={i}"],
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True) for i in range(2)]


def _finish(procs, timeout):
  """Outputs of both processes; kills them (the test fails) if either runs past `timeout` s."""
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=timeout)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  return outs


@pytest.mark.multiprocess
@pytest.mark.parametrize("where", ["local", pytest.param("bucket", marks=pytest.mark.slow)])
def test_two_processes_match_single_process(tmp_path, where, request):
  """Also with MODEL_DIR in a bucket (gs:// on the tests' local GCS server): both hosts see the same
  checkpoints; process 0 writes the shared files, each writes its own OCDBT shard of the step."""
  multi_dir = tmp_path / "multi" if where == "local" else f"{request.getfixturevalue('gcs_bucket')}/multi"
  outs = _finish(_start(_args(multi_dir, _free_port(), STEPS)), timeout=240)
  assert "process 1 of 2, 4 local / 8 global devices" in outs[1], outs[1][-3000:]

  # The same training in this process (8 local devices), same data and hyper-parameters.
  single_dir = tmp_path / "single"
  result = trainer.train(
      model=t5.T5Config.micro(), model_dir=str(single_dir),
      train_iter=copy_task_batches(task_feature_lengths={"inputs": 10, "targets": 5},
                                   batch_size=8),
      config=trainer.TrainConfig(train_steps=STEPS, batch_size=8, log_period=1, progress=False),
      optimizer=OptimizerConfig(learning_rate=0.01), checkpoint=trainer.CheckpointConfig(period=2))
  assert jax.device_count() == 8 and jax.process_count() == 1

  multi_losses = [r["loss"] for r in summaries.read_metrics(str(multi_dir), "train")]
  single_losses = [h["loss"] for h in result.history]
  assert len(multi_losses) == STEPS
  np.testing.assert_allclose(multi_losses, single_losses, rtol=1e-5)
  _, multi_params = checkpoints.load_params(str(multi_dir))
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(multi_params)[0],
                          jax.tree.leaves(result.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=1e-5,
                               err_msg=jax.tree_util.keystr(path))


@pytest.mark.multiprocess
def test_sigterm_on_one_host_stops_both_at_the_same_step(tmp_path):
  """Only process 1 gets SIGTERM: the hosts agree through a collective (every
  preemption_sync_period steps), both save the same step and exit 0; nobody hangs."""
  model_dir = tmp_path / "m"
  args = _args(model_dir, _free_port(), 100_000) + ["--gin.trainer.Trainer.preemption_sync_period=2"]
  procs = _start(args)
  metrics = model_dir / summaries.METRICS_FILE
  deadline = time.time() + 240
  while time.time() < deadline and all(p.poll() is None for p in procs):
    if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
      break
    time.sleep(0.5)
  assert all(p.poll() is None for p in procs), "a process ended before SIGTERM"
  procs[1].send_signal(signal.SIGTERM)  # process 0 (the chief) is not told
  outs = _finish(procs, timeout=180)
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  stopped = [int(out.split("stopping at step ")[1].split()[0]) for out in outs]
  assert stopped[0] == stopped[1] and stopped[0] % 2 == 0, outs[0][-2000:]
  assert checkpoints.CheckpointManager(str(model_dir)).latest_step() == stopped[0]
  rows = [json.loads(l) for l in metrics.read_text().splitlines()]
  assert max(r["step"] for r in rows) <= stopped[0]
