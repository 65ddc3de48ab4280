"""MODEL_DIR/assets: what recommending needs besides the checkpoint (TF-free).

The train entry writes them (`write_assets`) before training, so a model dir alone is servable:
the SentencePiece model (and a pretrained encoder's tokenizer.json), the ID table, the catalog
metadata and `recommend.json` (input length, default beam size, prompt field, vocabularies).
`add_lexical_prior` adds a BM25 index over the ID table's rows (lexical/) and the weight beam search
gives it (recommend.json "lexical_prior_weight").  `GenerativeRetriever.from_model_dir` reads them back
(`read_settings`, `load_vocabs`, `load_lexical`).
"""

from __future__ import annotations

import os
import shutil

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
  check_prior_weight(settings.get("lexical_prior_weight", 0.0), f"{path}: lexical_prior_weight")
  return settings


def check_prior_weight(weight, what: str) -> float:
  """`weight` as a float: a finite number >= 0 (0: no lexical prior)."""
  if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < float("inf"):
    raise UserInputError(f"{what} must be a finite number >= 0, got {weight!r}")
  return float(weight)


def add_lexical_prior(model_dir: str, index: lexical_lib.LexicalIndex, weight: float, *,
                      evidence: dict | None = None) -> None:
  """Adds `index` (a BM25 index over one document per ID-table row, in row order) to MODEL_DIR/assets
  and sets recommend.json's "lexical_prior_weight" (with `evidence`, e.g. the validation figures the
  weight was chosen on, as "lexical_prior"): the assets dir is rewritten whole, atomically, as
  `write_assets` writes it (a model dir's earlier index is replaced)."""
  weight = check_prior_weight(weight, "lexical prior weight")
  settings = read_settings(model_dir)
  src = local_assets(model_dir)
  num_rows = IdTable.load(os.path.join(src, IDS_DIR)).num_tracks
  if index.num_docs != num_rows:
    raise UserInputError(f"lexical prior: {index.num_docs} documents for an ID table of {num_rows} rows")
  settings["lexical_prior_weight"] = weight
  if evidence is not None:
    settings["lexical_prior"] = evidence
  with io_utils.atomic_dir(storage.join(model_dir, ASSETS), kind="model_assets") as tmp:
    for name in os.listdir(src):
      if name in (LEXICAL_DIR, SETTINGS_FILE, io_utils.MARKER_FILE):
        continue
      (shutil.copytree if os.path.isdir(os.path.join(src, name)) else shutil.copyfile)(
          os.path.join(src, name), os.path.join(tmp, name))
    index.save(os.path.join(tmp, LEXICAL_DIR))
    io_utils.write_json(os.path.join(tmp, SETTINGS_FILE), settings)


def load_lexical(assets_dir: str, settings: dict) -> lexical_lib.LexicalIndex | None:
  """The model dir's BM25 index when recommend.json gives it a weight > 0 (None otherwise)."""
  if not settings.get("lexical_prior_weight"):
    return None
  path = os.path.join(assets_dir, LEXICAL_DIR)
  if not os.path.isdir(path):
    raise UserInputError(f"{assets_dir}: recommend.json sets lexical_prior_weight but {LEXICAL_DIR}/ is missing")
  return lexical_lib.LexicalIndex.load(path)


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
