"""Checkpoint tests: exact resume after SIGTERM and SIGKILL, corrupt-latest fallback, keep policy."""

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from t2t_jax.training import checkpoints, trainer
from t2t_jax.errors import UserInputError
from t2t_jax.models import t5
from t2t_jax.training.optimizers import OptimizerConfig
from t2t_jax.train import copy_task_batches

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = t5.T5Config.micro(num_encoder_layers=1, num_decoder_layers=1, dropout_rate=0.1)
LENGTHS = {"inputs": 10, "targets": 5}
STEPS = 12
KW = dict(model=CFG,
          config=trainer.TrainConfig(train_steps=STEPS, batch_size=8, log_period=4, progress=False,
                                     seed=3),
          optimizer=OptimizerConfig(learning_rate=1e-2), checkpoint=trainer.CheckpointConfig(period=4))


class _Batches:
  """The copy task's checkpointable batches, calling on_batch(i) before batch i of this run."""

  def __init__(self, on_batch=None):
    self._it = copy_task_batches(task_feature_lengths=LENGTHS, batch_size=8, seed=1,
                                 num_examples=256)
    self._on_batch, self._i = on_batch, 0

  def __iter__(self):
    return self

  def __next__(self):
    if self._on_batch:
      self._on_batch(self._i)
    self._i += 1
    return next(self._it)

  def get_state(self):
    return self._it.get_state()

  def set_state(self, state):
    self._it.set_state(state)


def _batches(on_batch=None, resumable=True):
  it = _Batches(on_batch)
  return it if resumable else (b for b in it)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  d = tmp_path_factory.mktemp("full")
  r = trainer.train(train_iter=_batches(), model_dir=str(d), **KW)
  return jax.tree.map(np.asarray, r.params), r.history


def _assert_same(a, b):
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("resumable", [True, False])
def test_sigterm_saves_and_resume_is_exact(tmp_path, uninterrupted, resumable):
  """Resumed from the iterator's saved position (get_state/set_state) or, for a plain iterator, by
  replaying the consumed batches: either way bit-identical to the uninterrupted run."""
  def term_at_6(i):
    if i == 6:
      os.kill(os.getpid(), signal.SIGTERM)

  first = trainer.train(train_iter=_batches(term_at_6, resumable), model_dir=str(tmp_path), **KW)
  assert first.stopped == "preempted"
  assert first.step in (6, 7)
  assert checkpoints.CheckpointManager(str(tmp_path)).latest_step() == first.step
  second = trainer.train(train_iter=_batches(None, resumable), model_dir=str(tmp_path), **KW)
  assert second.stopped == "completed" and second.step == STEPS
  assert [h["step"] for h in second.history] == list(range(first.step + 1, STEPS + 1))
  # Same data, same dropout masks, same optimizer state: bit-identical parameters and losses.
  _assert_same(second.params, uninterrupted[0])
  full_losses = {h["step"]: h["loss"] for h in uninterrupted[1]}
  assert all(h["loss"] == full_losses[h["step"]] for h in first.history + second.history)


WORKER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {repo!r})
    from t2t_jax.training import trainer
    from tests.test_checkpoints import KW, _batches
    kill_at = int(sys.argv[2])
    def maybe_kill(i):
      if i == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    r = trainer.train(train_iter=_batches(maybe_kill), model_dir=sys.argv[1], **KW)
    print("DONE", r.step)
""")


@pytest.mark.multiprocess
def test_sigkill_mid_run_then_restart_is_bit_identical(tmp_path, uninterrupted):
  script = tmp_path / "worker.py"
  script.write_text(WORKER.format(repo=REPO))
  model_dir = tmp_path / "m"
  # The restarted process reuses the first one's compiled programs (persistent cache).
  env = dict(os.environ, PYTHONPATH=REPO, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  killed = subprocess.run([sys.executable, str(script), str(model_dir), "10"], env=env,
                          capture_output=True, text=True, timeout=180)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  steps = checkpoints.CheckpointManager(str(model_dir)).all_steps()
  assert steps and max(steps) <= 8, steps  # step 8 may or may not have finished writing
  resumed = subprocess.run([sys.executable, str(script), str(model_dir), "-1"], env=env,
                           capture_output=True, text=True, timeout=180)
  assert resumed.returncode == 0 and "DONE 12" in resumed.stdout, resumed.stderr[-2000:]
  _, params = checkpoints.load_params(str(model_dir))
  _assert_same(params, uninterrupted[0])


def _tree(v):
  return {"a": np.full((4, 3), v, np.float32), "b": {"c": np.arange(5, dtype=np.int32) + int(v)}}


def _abstract(tree):
  dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=dev), tree)


def test_corrupt_latest_checkpoint_falls_back_with_warning(tmp_path, caplog):
  m = checkpoints.CheckpointManager(str(tmp_path), keep=3, async_save=False)
  for s in (1, 2, 3):
    m.save(s, _tree(s), {"step": np.int32(s)}, {"step": s})
  m.close()
  # Corrupt step 3: truncate every data file of its params.
  for root, _, files in os.walk(tmp_path / "checkpoints" / "3" / "params"):
    for f in files:
      with open(os.path.join(root, f), "r+b") as fh:
        fh.truncate(3)
  m = checkpoints.CheckpointManager(str(tmp_path), keep=3)
  with pytest.raises(UserInputError, match="checkpoints/3 is damaged: params/.* bytes, .* when written"):
    m.restore(_abstract(_tree(0)), _abstract({"step": np.int32(0)}), step=3)
  with caplog.at_level(logging.WARNING, logger="t2t_jax.training.checkpoints"):
    step, params, state, meta = m.restore(_abstract(_tree(0)), _abstract({"step": np.int32(0)}))
  assert step == 2 and meta == {"step": 2}
  np.testing.assert_array_equal(params["a"], np.full((4, 3), 2, np.float32))
  assert any("checkpoints/3 is damaged" in r.message for r in caplog.records)
  # The damaged step is moved aside (kept for inspection), so saving step 3 again is not skipped.
  assert m.all_steps() == [1, 2]
  [aside] = os.listdir(tmp_path / "checkpoints.corrupt")
  assert aside.startswith("3.") and os.path.isdir(tmp_path / "checkpoints.corrupt" / aside / "params")
  m.save(3, _tree(33), {"step": np.int32(3)}, {"step": 3})
  m.close()
  caplog.clear()
  with caplog.at_level(logging.WARNING, logger="t2t_jax.training.checkpoints"):
    m = checkpoints.CheckpointManager(str(tmp_path))
    step, params, _, _ = m.restore(_abstract(_tree(0)), _abstract({"step": np.int32(0)}))
    m.close()
  assert step == 3 and params["a"][0, 0] == 33
  assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_truncated_array_file_is_named_without_reprs(tmp_path):
  """Issue 23: a truncated chunk file ended the message in "<bound method pybind11_detail_...spec of
  TensorStore({" (orbax's wrapper); the message names the step dir, the array and the file."""
  tree = {"a": np.random.default_rng(0).random((256, 256), np.float32), "b": {"c": np.arange(5, dtype=np.int32)}}
  m = checkpoints.CheckpointManager(str(tmp_path), async_save=False)
  m.save(1, tree, {"step": np.int32(1)}, {"step": 1})
  m.close()
  files = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path / "checkpoints" / "1" / "params") for f in fs]
  chunk = max(files, key=os.path.getsize)  # the data of "a"
  with open(chunk, "r+b") as fh:
    fh.truncate(os.path.getsize(chunk) // 2)
  # verify=False: orbax's own error (the manifest check names the file first; tested below).
  m = checkpoints.CheckpointManager(str(tmp_path), read_only=True, verify=False)
  params = _abstract(jax.tree.map(np.zeros_like, tree))
  for restore in (lambda: m.restore_params(params, 1),
                  lambda: m.restore(params, _abstract({"step": np.int32(0)}), step=1)):
    with checkpoints._quiet_orbax(), pytest.raises(UserInputError) as e:  # pylint: disable=protected-access
      restore()  # (as load_params: tensorstore's late callbacks into orbax's closed loop are dropped)
    msg = str(e.value)
    assert msg.startswith(f"checkpoint {tmp_path}/checkpoints/1 is unreadable (ValueError: "), msg
    assert 'Error reading "a/' in msg and 'local file "params/"' in msg and msg.endswith(")"), msg
    assert "bound method" not in msg and "TensorStore" not in msg and "\n" not in msg, msg
  m.close()


def test_no_readable_step_moves_nothing(tmp_path):
  """Every step failing (here: a changed model shape) is a mismatch, not damage: nothing is moved."""
  m = checkpoints.CheckpointManager(str(tmp_path), async_save=False)
  for s in (1, 2):
    m.save(s, _tree(s), {"step": np.int32(s)}, {"step": s})
  m.close()
  other = {"a": np.zeros((5, 3), np.float32), "b": {"c": np.zeros(5, np.int32)}}
  m = checkpoints.CheckpointManager(str(tmp_path))
  with pytest.raises(UserInputError, match="no readable checkpoint .*checkpoints/2 is unreadable.*checkpoints/1"):
    m.restore(_abstract(other), _abstract({"step": np.int32(0)}))
  assert m.all_steps() == [1, 2] and not (tmp_path / "checkpoints.corrupt").exists()
  m.close()


def test_half_written_checkpoint_is_ignored(tmp_path):
  m = checkpoints.CheckpointManager(str(tmp_path), keep=None, async_save=False)
  m.save(1, _tree(1), {"step": np.int32(1)}, {"step": 1})
  m.close()
  # What a crash during orbax's write leaves: a temporary directory that was never renamed.
  tmp = tmp_path / "checkpoints" / "2.orbax-checkpoint-tmp-123"
  (tmp / "params").mkdir(parents=True)
  (tmp / "params" / "junk").write_bytes(b"\0" * 10)
  m = checkpoints.CheckpointManager(str(tmp_path))
  assert m.all_steps() == [1]
  assert m.restore(_abstract(_tree(0)), _abstract({"step": np.int32(0)}))[0] == 1
  m.close()


def test_keep_latest_plus_best(tmp_path):
  m = checkpoints.CheckpointManager(str(tmp_path), keep=2, best_metric="hits@10",
                                    async_save=False)
  for s, hits in [(1, 0.2), (2, 0.9), (3, 0.1), (4, 0.3), (5, 0.4)]:
    m.save(s, _tree(s), {"step": np.int32(s)}, {"step": s}, metrics={"hits@10": hits})
  m.close()
  assert checkpoints.CheckpointManager(str(tmp_path)).all_steps() == [2, 4, 5]


def test_load_params_errors_name_the_path(tmp_path):
  with pytest.raises(UserInputError, match="no model config at .*model_config.json"):
    checkpoints.load_params(str(tmp_path))
  checkpoints.save_model_config(str(tmp_path), CFG)
  with pytest.raises(UserInputError, match="no checkpoints in"):
    checkpoints.load_params(str(tmp_path))
  assert checkpoints.load_model_config(str(tmp_path)) == CFG


# ---- integrity manifests (issue 23, item 2) ----------------------------------------------------


def _big_tree(s):
  return {"a": np.random.default_rng(s).random((128, 128), np.float32), "b": {"c": np.arange(5, dtype=np.int32) + s}}


def _step_files(step_dir):
  return sorted(os.path.relpath(os.path.join(r, f), step_dir) for r, _, fs in os.walk(step_dir) for f in fs
                if f != checkpoints.MANIFEST_FILE)


def _flip_a_byte_of_the_largest_params_file(step_dir):
  files = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(step_dir, "params")) for f in fs]
  path = max(files, key=os.path.getsize)
  with open(path, "r+b") as fh:
    fh.seek(os.path.getsize(path) // 2)
    byte = fh.read(1)
    fh.seek(-1, os.SEEK_CUR)
    fh.write(bytes([byte[0] ^ 0x80]))
  return os.path.relpath(path, step_dir)


@pytest.mark.parametrize("async_save", [False, True])
def test_every_committed_step_has_a_manifest_of_its_files(tmp_path, async_save):
  import hashlib  # pylint: disable=g-import-not-at-top
  m = checkpoints.CheckpointManager(str(tmp_path), keep=2, async_save=async_save)
  for s in (1, 2, 3):
    m.save(s, _big_tree(s), {"step": np.int32(s)}, {"step": s})
  m.close()
  assert m.all_steps() == [2, 3]
  for s in (2, 3):
    step_dir = tmp_path / "checkpoints" / str(s)
    manifest = json.loads((step_dir / checkpoints.MANIFEST_FILE).read_text())
    assert sorted(manifest["files"]) == _step_files(step_dir)  # every file, nothing else
    assert any(rel.startswith("params/") for rel in manifest["files"]) and any(
        rel.startswith("state/") for rel in manifest["files"])
    for rel, entry in manifest["files"].items():
      data = (step_dir / rel).read_bytes()
      assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert checkpoints.verify_step(str(step_dir)) is True
  assert not [f for f in os.listdir(tmp_path / "checkpoints" / "3") if ".t2t-tmp." in f]


def test_flipped_byte_in_a_params_file_is_caught(tmp_path, caplog, monkeypatch):
  """Issue 23: one flipped byte in a parameter data file restored as a silently wrong weight."""
  m = checkpoints.CheckpointManager(str(tmp_path), keep=3, async_save=False)
  for s in (1, 2):
    m.save(s, _big_tree(s), {"step": np.int32(s)}, {"step": s})
  m.close()
  rel = _flip_a_byte_of_the_largest_params_file(str(tmp_path / "checkpoints" / "2"))
  target = _abstract(jax.tree.map(np.zeros_like, _big_tree(0)))
  # What orbax alone does: it restores step 2 and the weights differ from what was saved.
  unverified = checkpoints.CheckpointManager(str(tmp_path), read_only=True, verify=False)
  step, params = unverified.restore_params(target)
  unverified.close()
  assert step == 2 and not np.array_equal(np.asarray(params["a"]), _big_tree(2)["a"])
  # Loads for recommend / export / serve refuse it, naming the file.
  m = checkpoints.CheckpointManager(str(tmp_path), read_only=True)
  with pytest.raises(checkpoints.CheckpointIntegrityError) as e:
    m.restore_params(target)
  m.close()
  assert str(e.value) == (f"checkpoint {tmp_path}/checkpoints/2 is damaged: {rel} changed since it was "
                          "written (sha256 mismatch)")
  # The opt-out for trusted storage restores it as orbax would.
  monkeypatch.setenv(checkpoints.VERIFY_ENV, "0")
  m = checkpoints.CheckpointManager(str(tmp_path), read_only=True)
  assert m.restore_params(target)[0] == 2
  m.close()
  monkeypatch.delenv(checkpoints.VERIFY_ENV)
  # Training resumes from the previous good step and moves the damaged one aside.
  m = checkpoints.CheckpointManager(str(tmp_path), keep=3)
  with caplog.at_level(logging.WARNING, logger="t2t_jax.training.checkpoints"):
    step, params, _, meta = m.restore(target, _abstract({"step": np.int32(0)}))
  m.close()
  assert step == 1 and meta == {"step": 1}
  np.testing.assert_array_equal(np.asarray(params["a"]), _big_tree(1)["a"])
  assert any("checkpoints/2 is damaged" in r.message for r in caplog.records)
  assert m.all_steps() == [1] and [n.split(".")[0] for n in os.listdir(tmp_path / "checkpoints.corrupt")] == ["2"]


def test_a_step_without_manifest_loads_with_a_warning_and_is_sealed_on_resume(tmp_path, caplog):
  m = checkpoints.CheckpointManager(str(tmp_path), async_save=False)
  m.save(1, _big_tree(1), {"step": np.int32(1)}, {"step": 1})
  m.close()
  manifest = tmp_path / "checkpoints" / "1" / checkpoints.MANIFEST_FILE
  manifest.unlink()  # as written before manifests existed, or killed between commit and manifest
  target = _abstract(jax.tree.map(np.zeros_like, _big_tree(0)))
  with caplog.at_level(logging.WARNING, logger="t2t_jax.training.checkpoints"):
    m = checkpoints.CheckpointManager(str(tmp_path), read_only=True)
    assert m.restore_params(target)[0] == 1
    m.close()
  assert any("has no integrity manifest" in r.message for r in caplog.records) and not manifest.exists()
  m = checkpoints.CheckpointManager(str(tmp_path))
  assert m.restore(target, _abstract({"step": np.int32(0)}))[0] == 1
  m.close()
  assert manifest.exists() and checkpoints.verify_step(str(manifest.parent)) is True


def test_manifest_damage_is_reported_not_ignored(tmp_path, monkeypatch):
  m = checkpoints.CheckpointManager(str(tmp_path), async_save=False)
  m.save(1, _big_tree(1), {"step": np.int32(1)}, {"step": 1})
  m.close()
  step_dir = tmp_path / "checkpoints" / "1"
  (step_dir / checkpoints.MANIFEST_FILE).write_text("{not json")
  with pytest.raises(checkpoints.CheckpointIntegrityError, match=f"checkpoint {step_dir} is damaged: unreadable"):
    checkpoints.verify_step(str(step_dir))
  checkpoints.write_step_manifest(str(step_dir))
  victim = sorted(p for p in _step_files(str(step_dir)) if p.startswith("state/"))[0]
  os.unlink(step_dir / victim)
  with pytest.raises(checkpoints.CheckpointIntegrityError, match=f"{victim} is missing"):
    checkpoints.verify_step(str(step_dir))
  assert checkpoints.verify_step(str(step_dir), ("params",)) is True  # inference loads read params only
  monkeypatch.setenv(checkpoints.VERIFY_ENV, "maybe")
  with pytest.raises(UserInputError, match="T2T_VERIFY_CHECKPOINTS='maybe': use 1 or 0"):
    checkpoints.CheckpointManager(str(tmp_path), read_only=True)
