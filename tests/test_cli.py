"""The `t2t` CLI: argument errors end with one clear line (no traceback); `t2t import` end to end."""

import os
import subprocess
import sys

import pytest

from t2t_jax import cli
from t2t_jax.data import formats


def test_quickstart_help_explains_knobs(capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(["quickstart", "--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  for knob in ("--train_steps", "--id_levels", "--beam_size", "--out", "--num_tracks"):
    assert knob in out


@pytest.mark.parametrize("argv, needle", [
    (["quickstart", "--id_levels", "64,x"], "--id_levels"),
    (["quickstart", "--id_levels", "1,64"], "--id_levels"),
    (["quickstart", "--train_steps", "0"], "--train_steps"),
])
def test_quickstart_bad_flags(argv, needle, capsys, tmp_path):
  assert cli.main(argv + ["--out", str(tmp_path / "r"), "--work_dir", str(tmp_path / "w")]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and needle in err[0]
  assert not (tmp_path / "r").exists()


def test_quickstart_beam_smaller_than_k(capsys, tmp_path):
  assert cli.main(["quickstart", "--beam_size", "5", "--k", "10", "--out", str(tmp_path / "r"),
                   "--work_dir", str(tmp_path / "w")]) == 2
  assert "--beam_size" in capsys.readouterr().err
  assert not (tmp_path / "r").exists()


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "tests", "data")


def _t2t(args, cwd):
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.run([sys.executable, "-m", "t2t_jax.cli", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


def test_import_jsonl_end_to_end(tmp_path):
  proc = _t2t(["import", "jsonl", os.path.join(DATA, "good", "catalog.jsonl"),
               os.path.join(DATA, "bad", "playlists_duplicate_track.jsonl"), "--out", "ds",
               "--vocab_size", "300", "--test_size", "1", "--validation_size", "1"], tmp_path)
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = proc.stdout.strip()
  assert out.startswith("Imported 4 tracks and 4 playlists into ds (train 2, validation 1, test 1;")
  assert "duplicate tracks in playlists 1" in out and "SentencePiece vocabulary:" in out
  ds = formats.Dataset.load(tmp_path / "ds")
  assert (tmp_path / "ds" / "vocab" / "spm.model").exists() and ds.meta["vocab"]["size"] <= 300
  again = _t2t(["import", "jsonl", os.path.join(DATA, "good", "catalog.jsonl"),
                os.path.join(DATA, "bad", "playlists_unknown_track.jsonl"), "--out", "ds"], tmp_path)
  assert again.returncode == 2 and again.stdout == ""
  assert again.stderr.strip().splitlines() == [
      f"t2t: error: {os.path.join(DATA, 'bad', 'playlists_unknown_track.jsonl')}:2: playlist 'p9': "
      "unknown track 'nope' (track_ids[1] not in the catalog)"]
  assert formats.Dataset.load(tmp_path / "ds").meta == ds.meta  # the old dir is untouched


def test_import_cpcd_end_to_end(tmp_path):
  proc = _t2t(["import", "cpcd", os.path.join(DATA, "cpcd"), "--out", str(tmp_path / "cpcd"),
               "--artists", "masked", "--num_folds", "3", "--vocab_size", "500"], tmp_path)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.startswith(f"Imported 1010 tracks and 45 playlists into {tmp_path / 'cpcd'} "
                                "(train 15, validation 20, test 10; canonical")
  assert "video ids merged 12" in proc.stdout and "masked replacements" in proc.stdout
  ds = formats.Dataset.load(tmp_path / "cpcd")
  assert ds.meta["artists"] == "masked" and ds.meta["prompt_max_chars"] == 2048
  assert len(formats.read_folds(tmp_path / "cpcd" / "folds.json")["folds"]) == 3


def test_import_help_lists_formats(capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(["import", "--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  for fmt in ("jsonl", "csv", "parquet", "mpd", "cpcd"):
    assert fmt in out
  with pytest.raises(SystemExit):
    cli.main(["import", "csv", "--help"])
  out = capsys.readouterr().out
  for flag in ("--validation_size", "--test_fraction", "--vocab_size", "--spm", "--on_error", "--overwrite"):
    assert flag in out


def test_import_help_prints_percent_signs_once(capsys):
  """Issue 23: the split-size group printed `max(10%%, 50)` and `60%%` (argparse formats only help=)."""
  with pytest.raises(SystemExit):
    cli.main(["import", "jsonl", "--help"])
  out = " ".join(capsys.readouterr().out.split())
  assert "max(10%, 50) playlists each, or 10% each when that would leave under 60% for training" in out
  assert "%%" not in out
