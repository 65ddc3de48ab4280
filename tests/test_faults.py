"""Fault injection for issue 14 ("no command destroys user data, training never silently loses steps").

One scenario per item, each of which failed before its fix: outputs that would replace inputs, the
working directory, a user's folder or a file (1); temporaries left by SIGTERM/SIGKILL (2); a corrupt
latest checkpoint whose retrained step was never saved (3); damaged model dirs and quickstart
outputs (8); damaged exports giving wrong tracks with exit 0 (9); prefix IDs without EOS (10).
The focused tests live in test_io_utils, test_checkpoints, test_export and test_index.
"""

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from t2t_jax import cli
from t2t_jax.data import convert
from t2t_jax.errors import UserInputError

from test_recommend import build_model_dir  # pylint: disable=g-bad-import-order

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOOD = os.path.join(REPO, "tests", "data", "good")
ENV = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  return build_model_dir(str(tmp_path_factory.mktemp("faults")))


def _tree(path):
  """{relative path: bytes} of every file under `path` (what must survive untouched)."""
  out = {}
  for d, _, names in os.walk(path):
    for n in names:
      with open(os.path.join(d, n), "rb") as f:
        out[os.path.relpath(os.path.join(d, n), path)] = f.read()
  return out


def _dataset_inputs(d):
  os.makedirs(d, exist_ok=True)
  for name in ("catalog.jsonl", "playlists.jsonl"):
    shutil.copyfile(os.path.join(GOOD, name), os.path.join(d, name))
  return os.path.join(d, "catalog.jsonl"), os.path.join(d, "playlists.jsonl")


# ---- 1. no output replaces an input, a user's folder, a file, or the working directory ------------


def test_1_export_onto_its_own_model_dir_is_refused(model_dir, capsys):
  before = _tree(model_dir)
  assert cli.main(["export", "--model_dir", model_dir, "--out", model_dir]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "overlaps the input" in err[0] and "(it is it)" in err[0]
  assert _tree(model_dir) == before  # was: the trained model deleted, exit 0


def test_1_import_never_destroys_its_inputs_or_a_users_folder(tmp_path, monkeypatch):
  d = tmp_path / "d"
  cat, pls = _dataset_inputs(d)
  before = _tree(d)
  with pytest.raises(UserInputError, match=r"overlaps the input .* \(it contains it\)"):
    convert.import_dataset(cat, pls, d)  # was: deleted its own inputs
  assert _tree(d) == before
  photos = tmp_path / "photos"
  photos.mkdir()
  (photos / "cat.jpg").write_bytes(b"\xff\xd8 not a dataset")
  with pytest.raises(UserInputError, match=r"is not empty and not a t2t output \(no .t2t_output.json\)"):
    convert.import_dataset(cat, pls, photos)  # was: replaced without a word
  assert (photos / "cat.jpg").read_bytes() == b"\xff\xd8 not a dataset"
  afile = tmp_path / "notes.txt"
  afile.write_text("mine")
  with pytest.raises(UserInputError, match=r"exists and is not a folder \(a file\)"):
    convert.import_dataset(cat, pls, afile)  # was: renamed to notes.txt.old..notes.txt.*.tmp
  assert afile.read_text() == "mine"
  work = tmp_path / "work"
  work.mkdir()
  (work / "thesis.tex").write_text("years of work")
  monkeypatch.chdir(work)
  with pytest.raises(UserInputError, match="is the current working directory"):
    convert.import_dataset(cat, pls, ".")  # a mistyped --out . would have wiped it
  assert (work / "thesis.tex").read_text() == "years of work"
  # A previous dataset is replaced (same kind), a read-only one is not.
  out = tmp_path / "ds"
  convert.import_dataset(cat, pls, out)
  assert convert.import_dataset(cat, pls, out)["num_tracks"] > 0
  os.chmod(out, 0o555)
  try:
    with pytest.raises(UserInputError, match="is read-only"):
      convert.import_dataset(cat, pls, out)
  finally:
    os.chmod(out, 0o755)
  assert sorted(os.listdir(tmp_path)) == ["d", "ds", "notes.txt", "photos", "work"]


# ---- 2. interrupted writers leave no temporaries ---------------------------------------------------

IMPORT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    from t2t_jax.data import convert
    convert.import_dataset(sys.argv[1], sys.argv[2], sys.argv[3])
    print("DONE", flush=True)
""")


def _import_blocked_on_a_fifo(tmp_path):
  """An import whose playlists file is a FIFO nobody writes: it blocks mid-write, temp dir live."""
  fifo = tmp_path / "playlists.fifo"
  os.mkfifo(fifo)
  script = tmp_path / "import.py"
  script.write_text(IMPORT.format(repo=REPO))
  proc = subprocess.Popen([sys.executable, str(script), os.path.join(GOOD, "catalog.jsonl"), str(fifo),
                           str(tmp_path / "out" / "ds")], env=ENV, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 120
  while time.time() < deadline:
    temps = os.listdir(tmp_path / "out") if (tmp_path / "out").exists() else []
    if temps and os.path.exists(tmp_path / "out" / temps[0] / "catalog.jsonl"):
      return proc, temps[0]
    assert proc.poll() is None, proc.stderr.read()
    time.sleep(0.1)
  proc.kill()
  raise AssertionError("the import never started writing")


def test_2_sigterm_mid_import_removes_the_temp(tmp_path):
  proc, temp = _import_blocked_on_a_fifo(tmp_path)
  assert temp.startswith(".ds.t2t-tmp.")
  proc.send_signal(signal.SIGTERM)
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGTERM, proc.stderr.read()
  assert os.listdir(tmp_path / "out") == []  # was: the temp dir stayed


def test_2_sigkill_mid_import_then_the_next_run_sweeps_the_temp(tmp_path):
  proc, temp = _import_blocked_on_a_fifo(tmp_path)
  proc.kill()
  proc.wait(timeout=60)
  assert os.listdir(tmp_path / "out") == [temp]  # SIGKILL cannot be caught
  rerun = subprocess.run([sys.executable, str(tmp_path / "import.py"), os.path.join(GOOD, "catalog.jsonl"),
                          os.path.join(GOOD, "playlists.jsonl"), str(tmp_path / "out" / "ds")],
                         env=ENV, capture_output=True, text=True, timeout=120)
  assert rerun.returncode == 0 and "DONE" in rerun.stdout, rerun.stderr
  assert f"removed stale temporary {tmp_path / 'out' / temp}" in rerun.stderr
  assert os.listdir(tmp_path / "out") == ["ds"]  # was: 20 MB of temp per killed import, forever


# ---- 3. a corrupt latest checkpoint is retrained and replaced --------------------------------------


@pytest.mark.slow
def test_3_corrupt_latest_checkpoint_is_retrained_and_saved_again(tmp_path, caplog):
  import jax  # pylint: disable=g-import-not-at-top
  from t2t_jax.training import checkpoints, trainer  # pylint: disable=g-import-not-at-top
  from t2t_jax.models import t5  # pylint: disable=g-import-not-at-top
  from t2t_jax.train import copy_task_batches  # pylint: disable=g-import-not-at-top
  from t2t_jax.training.optimizers import OptimizerConfig  # pylint: disable=g-import-not-at-top
  kw = dict(model=t5.T5Config.preset("tiny", vocab_size=128),
            config=trainer.TrainConfig(train_steps=40, batch_size=8, log_period=10, progress=False,
                                       seed=0, tensorboard=False),
            optimizer=OptimizerConfig(learning_rate=1e-2), checkpoint=trainer.CheckpointConfig(period=5))
  batches = lambda: copy_task_batches(task_feature_lengths={"inputs": 10, "targets": 5}, batch_size=8,
                                      seed=1, num_examples=256)
  model_dir = str(tmp_path / "m")
  uninterrupted = jax.tree.map(np.asarray, trainer.train(train_iter=batches(), model_dir=model_dir, **kw).params)
  for root, _, files in os.walk(os.path.join(model_dir, "checkpoints", "40", "params")):
    for f in files:
      with open(os.path.join(root, f), "r+b") as fh:
        fh.truncate(3)
  rerun = trainer.train(train_iter=batches(), model_dir=model_dir, **kw)
  assert rerun.stopped == "completed" and [h["step"] for h in rerun.history] == list(range(36, 41))
  caplog.clear()
  with caplog.at_level(logging.WARNING, logger="t2t_jax.training.checkpoints"):
    _, loaded = checkpoints.load_params(model_dir)
  assert not caplog.records  # the later load does not fall back (was: every load fell back to 35)
  for a, b in zip(jax.tree.leaves(uninterrupted), jax.tree.leaves(loaded)):
    np.testing.assert_allclose(np.asarray(b), a, atol=1e-6)  # was: off by up to 0.07
  assert [n.split(".")[0] for n in os.listdir(os.path.join(model_dir, "checkpoints.corrupt"))] == ["40"]


# ---- 8. damaged model dirs and quickstart outputs: one line, exit 2, before any work ---------------


def test_8_quickstart_checks_its_outputs_before_any_work(tmp_path, capsys):
  afile = tmp_path / "report.txt"
  afile.write_text("keep")
  t0 = time.time()
  assert cli.main(["quickstart", "--out", str(afile), "--work_dir", str(tmp_path / "w"), "--no_progress"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "--out" in err[0] and "exists and is not a folder (a file)" in err[0]
  assert time.time() - t0 < 60 and not (tmp_path / "w").exists()  # was: whole pipeline, then a crash
  assert afile.read_text() == "keep"


DAMAGES = {
    "garbage model_config.json": ("model_config.json", lambda p: p.write_text('{"vocab_size": 4')),
    "truncated codes.npy": ("assets/ids/codes.npy", lambda p: os.truncate(p, 100)),
    "bad ids meta": ("assets/ids/meta.json",
                     lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "level_sizes": "6,6,4"}))),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_8_damaged_model_dir_file_is_one_line_exit_2(model_dir, tmp_path, capsys, damage):
  d = tmp_path / "model"
  shutil.copytree(model_dir, d)
  name, corrupt = DAMAGES[damage]
  corrupt(d / name)
  assert cli.main(["recommend", "--model_dir", str(d), "jazz"]) == 2  # was: traceback, exit 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and str(d / name) in err[0], err


def test_8_corrupt_checkpoint_in_recommend_prints_exactly_one_line(model_dir, tmp_path):
  d = tmp_path / "model"
  shutil.copytree(model_dir, d)
  for root, _, files in os.walk(d / "checkpoints"):
    for f in files:
      if os.path.basename(root) == "d":  # the array data, not the metadata
        os.truncate(os.path.join(root, f), 10)
  res = subprocess.run([sys.executable, "-m", "t2t_jax.cli", "recommend", "--model_dir", str(d), "jazz"],
                       env=ENV, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
  assert res.returncode == 2, res.stderr
  lines = res.stderr.strip().splitlines()
  # was: orbax warnings and "RuntimeError: Event loop is closed" tracebacks around the error
  # the integrity manifest names the first truncated file before orbax reads anything
  assert len(lines) == 1 and re.match(r"t2t: error: checkpoint .*/checkpoints/\d+ is damaged: params/.* is 10 "
                                      r"bytes, \d+ when written$", lines[0]), res.stderr[-3000:]
  assert res.stdout == ""


def _flip_params_byte(model_dir):
  """(step dir, the flipped file relative to it)."""
  from test_checkpoints import _flip_a_byte_of_the_largest_params_file  # pylint: disable=g-import-not-at-top
  [step] = os.listdir(os.path.join(model_dir, "checkpoints"))
  step_dir = os.path.join(model_dir, "checkpoints", step)
  return step_dir, _flip_a_byte_of_the_largest_params_file(step_dir)


def test_8_flipped_weight_byte_is_refused_by_recommend_and_export(model_dir, tmp_path, capsys):
  """Issue 23: a flipped byte in an orbax data file was served, and export sealed it with fresh sha256s."""
  d = tmp_path / "model"
  shutil.copytree(model_dir, d)
  step_dir, rel = _flip_params_byte(str(d))
  want = f"t2t: error: checkpoint {step_dir} is damaged: {rel} changed since it was written (sha256 mismatch)"
  for argv in (["recommend", "--model_dir", str(d), "jazz"],
               ["export", "--model_dir", str(d), "--out", str(tmp_path / "export"), "--no_hf",
                "--platforms", "cpu"],
               ["serve", "--model_dir", str(d), "--port", "0", "--no_warmup"]):
    assert cli.main(argv) == 2, argv
    assert capsys.readouterr().err.strip().splitlines()[-1:] == [want]
  assert sorted(os.listdir(tmp_path)) == ["model"]  # no export, no temp
  # On trusted storage the check can be skipped (and then the damage goes unnoticed, as before).
  assert cli.main(["recommend", "--model_dir", str(d), "--no_verify", "jazz"]) == 0


# ---- 9. a damaged export fails at load (was: wrong tracks, exit 0) --------------------------------


@pytest.fixture(scope="module")
def export_dir(model_dir, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("faults_export") / "export")
  assert cli.main(["export", "--model_dir", model_dir, "--out", out, "-k", "5", "--no_hf",
                   "--platforms", "cpu"]) == 0
  return out


@pytest.mark.parametrize("damage", ["flipped weight", "one row five times", "child_start out of range"])
def test_9_damaged_export_exits_2_with_one_line(export_dir, tmp_path, damage):
  from test_export import DAMAGES as EXPORT_DAMAGES  # pylint: disable=g-import-not-at-top
  d = tmp_path / "export"
  shutil.copytree(export_dir, d)
  corrupt, message = EXPORT_DAMAGES[damage]
  corrupt(str(d))
  res = subprocess.run([sys.executable, str(d / "export_runtime.py"), str(d), "late night drive", "-k", "5"],
                       env={k: v for k, v in ENV.items() if k != "PYTHONPATH"}, capture_output=True,
                       text=True, timeout=300, cwd=str(tmp_path))
  assert res.returncode == 2 and res.stdout == "", (res.stdout, res.stderr[-2000:])
  lines = res.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("export_runtime: error: "), res.stderr[-2000:]
  assert re.search(message, lines[0]), lines[0]


# ---- 10. prefix IDs without EOS are rejected at build time ----------------------------------------


def test_10_prefix_id_without_eos_is_rejected(tmp_path):
  from t2t_jax.decoding.index import build_index  # pylint: disable=g-import-not-at-top
  with pytest.raises(UserInputError, match=r"ID row 1 \[5, 6\] is a prefix of row 0 \[5, 6, 7\]"):
    build_index(np.array([[5, 6, 7], [5, 6, 0]]), 10)  # was: accepted; [5, 6] outranked [5, 6, 7]
  build_index(np.array([[5, 6, 7], [5, 6, 1]]), 10).validate()  # EOS-terminated: fine
