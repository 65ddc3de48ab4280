"""MODEL_DIR/assets: what recommending needs besides the checkpoint (TF-free).

The train entry writes them (`write_assets`) before training, so a model dir alone is servable:
the SentencePiece model (and a pretrained encoder's tokenizer.json), the ID table, the catalog
metadata and `recommend.json` (input length, default beam size, prompt field, vocabularies).
`add_lexical_prior` adds a BM25 index over the ID table's rows (lexical/) and the weight beam search
gives it (recommend.json "lexical_prior_weight"); `add_dense_prior` adds one embedding per ID-table row
(dense_tracks.npy, e.g. the tuned bi-encoder's track vectors, whose query side is the model's own
frozen encoder) and its weight ("dense_prior_weight").  `GenerativeRetriever.from_model_dir` reads them
back (`read_settings`, `load_vocabs`, `load_lexical`, `load_dense`).
"""

from __future__ import annotations

import os
import shutil

import numpy as np

from t2t_jax import io_utils, storage
from t2t_jax.data import formats, vocab as vocab_lib, wordpiece
from t2t_jax.decoding.beam_search import SCORINGS
from t2t_jax.errors import UserInputError
from t2t_jax.ids.table import IdTable
from t2t_jax.serving import lexical as lexical_lib

ASSETS = "assets"
SPM_FILE = "spm.model"
IDS_DIR = "ids"
CATALOG_FILE = "catalog.jsonl"
SETTINGS_FILE = "recommend.json"
TOKENIZER_FILE = "tokenizer.json"
LEXICAL_DIR = "lexical"
DENSE_FILE = "dense_tracks.npy"
OUTPUT_VOCABS = ("text_and_ids", "ids_only")


def write_assets(model_dir: str, *, spm_path: str | None, id_table, catalog_path: str,
                 inputs_length: int, beam_size: int, prompt_field: str,
                 input_tokenizer: str | None = None, output_vocab: str = "text_and_ids",
                 max_prompt_chars: int | None = None) -> None:
  """Copies what recommending needs into MODEL_DIR/assets (atomically, as one directory).

  input_tokenizer: a Hugging Face tokenizer (dir or tokenizer.json) for models whose encoder has its
  own WordPiece vocabulary (bert_t5); None: prompts use the SentencePiece model `spm_path`.
  output_vocab: "text_and_ids" (SentencePiece pieces + ID tokens, shared with the encoder for T5) or
  "ids_only" (PAD/EOS/UNK + ID tokens: a decoder with its own vocabulary).
  max_prompt_chars: prompts are cut there as in training (None: prompts.DEFAULT_MAX_CHARS).
  """
  if output_vocab not in OUTPUT_VOCABS:
    raise UserInputError(f"output_vocab must be one of {OUTPUT_VOCABS}, got {output_vocab!r}")
  if spm_path is None and (input_tokenizer is None or output_vocab != "ids_only" or id_table.is_text):
    raise UserInputError("write_assets: a SentencePiece model is needed for text prompts or text IDs")
  settings = {"inputs_length": int(inputs_length), "beam_size": int(beam_size),
              "prompt_field": prompt_field, "output_vocab": output_vocab,
              "input_vocab": {"kind": "sentencepiece", "file": SPM_FILE}}
  if max_prompt_chars:
    settings["max_prompt_chars"] = int(max_prompt_chars)
  inputs = [p for p in (spm_path, catalog_path, input_tokenizer) if p]
  with io_utils.atomic_dir(storage.join(model_dir, ASSETS), kind="model_assets",
                           inputs=inputs) as tmp:
    if spm_path is not None:
      storage.download_file(spm_path, os.path.join(tmp, SPM_FILE))
    if input_tokenizer is not None:
      shutil.copyfile(wordpiece.WordPieceVocab(input_tokenizer).path, os.path.join(tmp, TOKENIZER_FILE))
      settings["input_vocab"] = {"kind": "wordpiece", "file": TOKENIZER_FILE}
    id_table.save(os.path.join(tmp, IDS_DIR))
    storage.download_file(catalog_path, os.path.join(tmp, CATALOG_FILE))
    io_utils.write_json(os.path.join(tmp, SETTINGS_FILE), settings)


def _check_positive_int(value, what: str) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise UserInputError(f"{what} must be a positive integer, got {value!r}")


def read_settings(model_dir: str, *, beam_size: int | None = None) -> dict:
  """MODEL_DIR/assets/recommend.json, checked; `beam_size` (when given) replaces the stored one."""
  if not storage.isdir(model_dir):
    raise UserInputError(f"--model_dir {model_dir}: no such directory")
  path = storage.join(model_dir, ASSETS, SETTINGS_FILE)
  if not storage.isfile(path):
    raise UserInputError(f"--model_dir {model_dir}: missing {ASSETS}/{SETTINGS_FILE} (not a t2t model dir)")
  settings = formats.read_json_file(path, "settings file")
  if not isinstance(settings, dict):
    raise UserInputError(f"{path}: expected a JSON object")
  missing = [key for key in ("inputs_length", "beam_size") if key not in settings]
  if missing:
    raise UserInputError(f"{path}: missing {missing}")
  for key in ("inputs_length", "beam_size"):
    _check_positive_int(settings[key], f"{path}: {key}")
  if beam_size is not None:
    _check_positive_int(beam_size, "beam_size")
    settings["beam_size"] = beam_size
  if settings.get("beam_scoring", "log_prob") not in SCORINGS:
    raise UserInputError(f"{path}: beam_scoring {settings['beam_scoring']!r} is not one of {SCORINGS}")
  for key in ("lexical_prior_weight", "dense_prior_weight"):
    check_prior_weight(settings.get(key, 0.0), f"{path}: {key}")
  return settings


def check_prior_weight(weight, what: str) -> float:
  """`weight` as a float: a finite number >= 0 (0: no prior)."""
  if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < float("inf"):
    raise UserInputError(f"{what} must be a finite number >= 0, got {weight!r}")
  return float(weight)


def _num_rows(assets_dir: str) -> int:
  return IdTable.load(os.path.join(assets_dir, IDS_DIR)).num_tracks


def _rewrite_with(model_dir: str, src: str, settings: dict, replaced: str, write) -> None:
  """MODEL_DIR/assets rewritten whole, atomically, as `write_assets` writes it: every file of `src`
  (its local copy) but `replaced` (a file or dir name) and recommend.json copied,
  `write(tmp_path_of_replaced)` called, `settings` written."""
  with io_utils.atomic_dir(storage.join(model_dir, ASSETS), kind="model_assets") as tmp:
    for name in os.listdir(src):
      if name in (replaced, SETTINGS_FILE, io_utils.MARKER_FILE):
        continue
      (shutil.copytree if os.path.isdir(os.path.join(src, name)) else shutil.copyfile)(
          os.path.join(src, name), os.path.join(tmp, name))
    write(os.path.join(tmp, replaced))
    io_utils.write_json(os.path.join(tmp, SETTINGS_FILE), settings)


def add_lexical_prior(model_dir: str, index: lexical_lib.LexicalIndex, weight: float, *,
                      evidence: dict | None = None) -> None:
  """Adds `index` (a BM25 index over one document per ID-table row, in row order) to MODEL_DIR/assets
  and sets recommend.json's "lexical_prior_weight" (with `evidence`, e.g. the validation figures the
  weight was chosen on, as "lexical_prior"): the assets dir is rewritten whole, atomically, as
  `write_assets` writes it (a model dir's earlier index is replaced)."""
  weight = check_prior_weight(weight, "lexical prior weight")
  settings = read_settings(model_dir)
  src = local_assets(model_dir)
  num_rows = _num_rows(src)
  if index.num_docs != num_rows:
    raise UserInputError(f"lexical prior: {index.num_docs} documents for an ID table of {num_rows} rows")
  settings["lexical_prior_weight"] = weight
  if evidence is not None:
    settings["lexical_prior"] = evidence
  _rewrite_with(model_dir, src, settings, LEXICAL_DIR, index.save)


def check_dense_table(emb, num_rows: int, what: str) -> np.ndarray:
  """`emb` as float32 [num_rows, E]: finite, one row per ID-table row."""
  emb = np.asarray(emb)
  if emb.ndim != 2 or emb.shape[0] != num_rows or not emb.shape[1] or not np.issubdtype(emb.dtype, np.floating):
    raise UserInputError(f"{what}: expected float [{num_rows}, E] (one vector per ID-table row), "
                         f"got {emb.dtype} {tuple(emb.shape)}")
  emb = emb.astype(np.float32)
  if not np.isfinite(emb).all():
    raise UserInputError(f"{what}: holds NaN or infinite values")
  return emb


def unit_rows(emb: np.ndarray) -> np.ndarray:
  """Rows scaled to unit L2 norm (zero rows stay zero)."""
  return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def add_dense_prior(model_dir: str, track_emb_RxE, weight: float, *, evidence: dict | None = None) -> None:
  """Adds one vector per ID-table row (in row order: e.g. the tuned bi-encoder's track embeddings,
  which the model's frozen encoder shares) as MODEL_DIR/assets/dense_tracks.npy and sets recommend.json's
  "dense_prior_weight" (with `evidence` as "dense_prior"); beam search then adds weight x the cosine
  of the prompt's mean-pooled encoder states with each row (`GenerativeRetriever.dense_prior`).  The
  assets dir is rewritten whole, atomically (a model dir's earlier table is replaced)."""
  weight = check_prior_weight(weight, "dense prior weight")
  settings = read_settings(model_dir)
  src = local_assets(model_dir)
  emb = check_dense_table(track_emb_RxE, _num_rows(src), "dense prior")
  emb = unit_rows(emb)  # the prior is a cosine
  settings["dense_prior_weight"] = weight
  if evidence is not None:
    settings["dense_prior"] = evidence
  _rewrite_with(model_dir, src, settings, DENSE_FILE, lambda path: np.save(path, emb, allow_pickle=False))


def load_lexical(assets_dir: str, settings: dict) -> lexical_lib.LexicalIndex | None:
  """The model dir's BM25 index when recommend.json gives it a weight > 0 (None otherwise)."""
  if not settings.get("lexical_prior_weight"):
    return None
  path = os.path.join(assets_dir, LEXICAL_DIR)
  if not os.path.isdir(path):
    raise UserInputError(f"{assets_dir}: recommend.json sets lexical_prior_weight but {LEXICAL_DIR}/ is missing")
  return lexical_lib.LexicalIndex.load(path)


def load_dense(assets_dir: str, settings: dict, num_rows: int) -> np.ndarray | None:
  """The model dir's dense track table [num_rows, E] when recommend.json gives it a weight > 0."""
  if not settings.get("dense_prior_weight"):
    return None
  path = os.path.join(assets_dir, DENSE_FILE)
  if not os.path.isfile(path):
    raise UserInputError(f"{assets_dir}: recommend.json sets dense_prior_weight but {DENSE_FILE} is missing")
  try:
    emb = np.load(path, allow_pickle=False)
  except (ValueError, OSError, EOFError) as e:
    raise UserInputError(f"{path}: not a readable .npy table ({e})") from None
  return check_dense_table(emb, num_rows, path)


def load_vocabs(assets_dir: str, settings: dict, id_table):
  """(input vocab with `encode_prompt`, output vocab with `id_token_offset` / `vocab_size`)."""
  spm_path = os.path.join(assets_dir, SPM_FILE)
  if settings.get("output_vocab", "text_and_ids") == "ids_only" and not id_table.is_text:
    output = vocab_lib.IdOnlyVocab(id_table.level_sizes)
  else:
    output = vocab_lib.TextAndIdVocab(spm_path, id_table.level_sizes)
  spec = settings.get("input_vocab") or {"kind": "sentencepiece"}
  if spec.get("kind") == "wordpiece":
    inputs = wordpiece.WordPieceVocab(os.path.join(assets_dir, spec.get("file", TOKENIZER_FILE)))
  elif spec.get("kind") == "sentencepiece":
    inputs = output if isinstance(output, vocab_lib.TextAndIdVocab) and not isinstance(
        output, vocab_lib.IdOnlyVocab) else vocab_lib.TextAndIdVocab(spm_path)
  else:
    raise UserInputError(f"{assets_dir}/{SETTINGS_FILE}: unknown input_vocab kind {spec.get('kind')!r}")
  return inputs, output


def read_catalog(assets_dir: str) -> dict:
  """track_id -> catalog Track of ASSETS_DIR/catalog.jsonl (a model dir's `local_assets`)."""
  return {t.track_id: t for t in formats.read_catalog(os.path.join(assets_dir, CATALOG_FILE))}


def local_assets(model_dir: str) -> str:
  """MODEL_DIR/assets as a local dir: itself, or for a gs:// / s3:// MODEL_DIR a copy in a fresh
  temporary dir (tokenizers load their files by path; the assets are small), removed at exit."""
  return storage.local_copy(storage.join(model_dir, ASSETS), cached=False)
