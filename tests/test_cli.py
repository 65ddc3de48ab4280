"""CLI argument errors end with one clear line (no traceback)."""

import pytest

from t2t_jax import cli


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
