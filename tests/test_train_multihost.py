"""Two processes on localhost (CPU, gloo collectives over loopback) train like one process."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from t2t_jax import checkpoints, summaries
from t2t_jax import train as train_script
from t2t_jax.models import t5

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 4


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.multiprocess
def test_two_processes_match_single_process(tmp_path):
  port = _free_port()
  multi_dir = tmp_path / "multi"
  args = ["--gin_file=models/t5_1_1_tiny.gin", "--gin_file=runs/finetune.gin",
          "--gin.MIXTURE_OR_TASK_NAME='copy'",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 10, 'targets': 5}",
          "--gin.train_script.train.data_fn=@train_script.copy_task_batches", "--gin.VOCAB_SIZE=128",
          "--gin.BATCH_SIZE=8", f"--gin.TRAIN_STEPS={STEPS}", "--gin.CHECKPOINT_PERIOD=2",
          "--gin.EVAL_PERIOD=None", "--gin.LOG_PERIOD=1", "--gin.LEARNING_RATE=0.01",
          f"--gin.MODEL_DIR='{multi_dir}'", f"--coordinator_address=localhost:{port}",
          "--num_processes=2"]
  # 4 CPU devices per process: the global mesh has 8, like the single-process run below.
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=4")
  procs = [subprocess.Popen([sys.executable, "-m", "t2t_jax.train", *args, f"--process_id={i}"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True) for i in range(2)]
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=240)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  assert "process 1 of 2, 4 local / 8 global devices" in outs[1]

  # The same training in this process (8 local devices), same data and hyper-parameters.
  single_dir = tmp_path / "single"
  result = train_script.train(
      model_dir=str(single_dir), mixture_or_task_name="copy",
      task_feature_lengths={"inputs": 10, "targets": 5}, train_steps=STEPS, batch_size=8,
      model_config=t5.T5Config.tiny(), learning_rate=0.01, checkpoint_period=2, eval_period=None,
      log_period=1, data_fn=train_script.copy_task_batches, progress=False)
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
