"""Tests for t2t_jax.console: quiet logs by default (`--verbose` brings them back), progress bars for
slow import stages."""

import importlib.util
import os
import subprocess
import sys

import pytest

from t2t_jax import console
from t2t_jax.data import convert
from t2t_jax.errors import UserInputError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOOD = os.path.join(REPO, "tests", "data", "good")
# What issue 23 saw on every command, plus the other lines console.NOISE drops.
SEEN_NOISE = ("Could not find cuda drivers", "oneDNN custom operations", "absl::InitializeLog",
              "DEBUG:bm25s", "bm25s debug line", "orbax info line") + console.NOISE


def _env():
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user's shell has it
  return env


def _run(args, cwd, timeout=120):
  return subprocess.run([sys.executable, *args], cwd=cwd, env=_env(), capture_output=True, text=True,
                        timeout=timeout)


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="TensorFlow not installed")
def test_quiet_mode_drops_tensorflow_start_up_lines_and_library_logs(tmp_path):
  """TensorFlow's C++ start-up lines (past TF_CPP_MIN_LOG_LEVEL since TF 2.19), bm25s's DEBUG and
  absl/orbax INFO are gone; our own warnings still print."""
  code = ("from t2t_jax import console; console.configure()\n"
          "import logging, tensorflow, bm25s\n"
          "logging.warning('own warning')  # a root handler, as bm25s's own logging.warning makes one\n"
          "logging.getLogger('bm25s').debug('bm25s debug line')\n"
          "logging.getLogger('absl').info('orbax info line')\n"
          "print(tensorflow.__version__ and 'imported')\n")
  proc = _run(["-c", code], tmp_path)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip() == "imported"
  assert proc.stderr.strip() == "WARNING:root:own warning", proc.stderr[-2000:]


def test_cli_prints_no_library_noise_and_accepts_verbose(tmp_path):
  args = ["-m", "t2t_jax.cli", "import", "jsonl", os.path.join(GOOD, "catalog.jsonl"),
          os.path.join(GOOD, "playlists.jsonl"), "--vocab_size", "300", "--test_size", "1",
          "--validation_size", "1"]
  quiet = _run(args + ["--out", "a"], tmp_path)
  assert quiet.returncode == 0, quiet.stderr[-2000:]
  assert quiet.stdout.startswith("Imported 4 tracks and 3 playlists into a")
  assert all(line.startswith("t2t: ") for line in quiet.stderr.splitlines()), quiet.stderr
  assert not [n for n in SEEN_NOISE if n in quiet.stderr]
  for argv in (args[:2] + ["--verbose"] + args[2:] + ["--out", "b"], args + ["--out", "c", "--verbose"]):
    verbose = _run(argv, tmp_path)
    assert verbose.returncode == 0, verbose.stderr[-2000:]
    assert verbose.stdout.startswith("Imported 4 tracks")


def test_train_entry_accepts_verbose(capsys):
  from t2t_jax import train  # pylint: disable=g-import-not-at-top
  args = train.parse_args(["--gin_file=x.gin", "--verbose"])
  assert args.verbose and not train.parse_args(["--gin_file=x.gin"]).verbose


def test_import_stages_show_progress_only_when_slow(tmp_path, monkeypatch, capsys):
  kw = dict(vocab_size=300, test_size=1, validation_size=1)
  convert.import_dataset(os.path.join(GOOD, "catalog.jsonl"), os.path.join(GOOD, "playlists.jsonl"),
                         tmp_path / "fast", **kw)
  assert capsys.readouterr().err == ""  # a quick import prints no bar
  monkeypatch.setattr(console, "PROGRESS_DELAY_S", 0.0)  # every stage counts as slow
  convert.import_dataset(os.path.join(GOOD, "catalog.jsonl"), os.path.join(GOOD, "playlists.jsonl"),
                         tmp_path / "slow", **kw)
  err = capsys.readouterr().err
  for stage in ("catalog", "playlists", "check playlists", "vocabulary texts", "prompt lengths"):
    assert f"{stage}:" in err, err


def test_filtered_stderr_keeps_unknown_lines(capfd):
  with console.filtered_stderr():
    os.write(2, b"I0000 cudart_stub.cc:31] Could not find cuda drivers on your machine\n")
    os.write(2, b"a real error\n")
  assert capfd.readouterr().err == "a real error\n"


def test_run_main_prints_one_line_and_returns_2_on_user_errors(capsys):
  def bad():
    raise UserInputError("--flag x: no such file")
  assert console.run_main(bad, "tool") == 2
  assert capsys.readouterr().err == "tool: error: --flag x: no such file\n"
  assert console.run_main(bad) == 2
  assert capsys.readouterr().err == "error: --flag x: no such file\n"
  assert console.run_main(lambda: None) == 0 and console.run_main(lambda: 1) == 1
  with pytest.raises(KeyError):  # anything else is not the user's: a traceback
    console.run_main(lambda: {}["x"])
