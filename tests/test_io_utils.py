"""Atomic writers: all-or-nothing, normal permissions."""

import os
import stat

import pytest

from t2t_jax import io_utils


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
  target = tmp_path / "out.json"
  with pytest.raises(RuntimeError):
    with io_utils.atomic_write(target) as f:
      f.write("partial")
      raise RuntimeError("boom")
  assert os.listdir(tmp_path) == []


def test_atomic_write_replaces_and_uses_umask_permissions(tmp_path):
  target = tmp_path / "out.txt"
  target.write_text("old")
  with io_utils.atomic_write(target) as f:
    f.write("new")
  assert target.read_text() == "new"
  mask = os.umask(0)
  os.umask(mask)
  assert stat.S_IMODE(os.stat(target).st_mode) == 0o666 & ~mask
  assert os.listdir(tmp_path) == ["out.txt"]


def test_atomic_dir_all_or_nothing(tmp_path):
  target = tmp_path / "d"
  with pytest.raises(ValueError):
    with io_utils.atomic_dir(target) as tmp:
      open(os.path.join(tmp, "a"), "w").close()
      raise ValueError("bad input found midway")
  assert not target.exists() and os.listdir(tmp_path) == []
  with io_utils.atomic_dir(target) as tmp:
    open(os.path.join(tmp, "a"), "w").close()
  with io_utils.atomic_dir(target) as tmp:  # Replaces the old dir whole.
    open(os.path.join(tmp, "b"), "w").close()
  assert sorted(os.listdir(target)) == ["b"]
  assert sorted(os.listdir(tmp_path)) == ["d"]
  mask = os.umask(0)
  os.umask(mask)
  assert stat.S_IMODE(os.stat(target).st_mode) == 0o777 & ~mask
