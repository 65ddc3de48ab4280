"""Recommend tracks for prompts from a model dir (TF-free: usable on serving images).

A model dir holds everything needed: the checkpoint and config (written by the trainer), and
`assets/`: the SentencePiece model, the ID table, the catalog metadata and `recommend.json`
(input length, default beam size).  `Recommender.load(DIR).recommend(prompts, k=10)` encodes each
prompt once and runs constrained beam search, so every returned track is a catalog track.
"""

import dataclasses
import json
import os
import shutil
import sys
from typing import Sequence

import jax
import numpy as np

from t2t_jax import io_utils
from t2t_jax.data import prompts as prompts_lib
from t2t_jax.errors import UserInputError

ASSETS = "assets"
SPM_FILE = "spm.model"
IDS_DIR = "ids"
CATALOG_FILE = "catalog.jsonl"
SETTINGS_FILE = "recommend.json"


@dataclasses.dataclass(frozen=True)
class Recommendation:
  rank: int
  track_id: str
  artist: str
  title: str
  score: float

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


TOKENIZER_FILE = "tokenizer.json"
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
  from t2t_jax.data import wordpiece  # pylint: disable=g-import-not-at-top
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
  with io_utils.atomic_dir(os.path.join(model_dir, ASSETS), kind="model_assets",
                           inputs=inputs) as tmp:
    if spm_path is not None:
      shutil.copyfile(spm_path, os.path.join(tmp, SPM_FILE))
    if input_tokenizer is not None:
      shutil.copyfile(wordpiece.WordPieceVocab(input_tokenizer).path, os.path.join(tmp, TOKENIZER_FILE))
      settings["input_vocab"] = {"kind": "wordpiece", "file": TOKENIZER_FILE}
    id_table.save(os.path.join(tmp, IDS_DIR))
    shutil.copyfile(catalog_path, os.path.join(tmp, CATALOG_FILE))
    io_utils.write_json(os.path.join(tmp, SETTINGS_FILE), settings)


def load_vocabs(assets_dir: str, settings: dict, id_table):
  """(input vocab with `encode_prompt`, output vocab with `id_token_offset` / `vocab_size`)."""
  from t2t_jax.data import vocab as vocab_lib, wordpiece  # pylint: disable=g-import-not-at-top
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


class Recommender:
  """Prompt -> ranked catalog tracks with a trained Text2Tracks model."""

  def __init__(self, *, model, params, vocab, id_table, tracks: dict, settings: dict,
               input_vocab=None):
    from t2t_jax.decoding import index as index_lib  # pylint: disable=g-import-not-at-top
    self.model, self.params, self.vocab, self.id_table = model, params, vocab, id_table
    self.input_vocab = input_vocab if input_vocab is not None else vocab
    self.tracks, self.settings = tracks, settings
    self.inputs_length = int(settings["inputs_length"])
    self.beam_size = int(settings["beam_size"])
    self.max_prompt_chars = int(settings.get("max_prompt_chars") or prompts_lib.DEFAULT_MAX_CHARS)
    self.index = index_lib.build_table_index(id_table, vocab.id_token_offset,
                                             vocab.vocab_size).to_device()
    self._fns = {}

  @classmethod
  def load(cls, model_dir: str, *, beam_size: int | None = None, verify: bool | None = None
           ) -> "Recommender":
    """Loads config, checkpoint, vocabulary, ID table and catalog from a model dir.

    verify: check the checkpoint's parameter files against their manifest first (None:
    $T2T_VERIFY_CHECKPOINTS, default on); a damaged file raises CheckpointIntegrityError naming it.
    """
    from t2t_jax.training import trainer  # pylint: disable=g-import-not-at-top
    from t2t_jax.data import formats  # pylint: disable=g-import-not-at-top
    from t2t_jax.ids.table import IdTable  # pylint: disable=g-import-not-at-top
    from t2t_jax import models  # pylint: disable=g-import-not-at-top
    assets = os.path.join(model_dir, ASSETS)
    if not os.path.isdir(model_dir):
      raise UserInputError(f"--model_dir {model_dir}: no such directory")
    if not os.path.isfile(os.path.join(assets, SETTINGS_FILE)):
      raise UserInputError(f"--model_dir {model_dir}: missing {ASSETS}/{SETTINGS_FILE} (not a t2t model dir)")
    settings_path = os.path.join(assets, SETTINGS_FILE)
    settings = formats.read_json_file(settings_path, "settings file")
    if not isinstance(settings, dict):
      raise UserInputError(f"{settings_path}: expected a JSON object")
    missing = [key for key in ("inputs_length", "beam_size") if key not in settings]
    if missing:
      raise UserInputError(f"{settings_path}: missing {missing}")
    for key in ("inputs_length", "beam_size"):
      if isinstance(settings[key], bool) or not isinstance(settings[key], int) or settings[key] < 1:
        raise UserInputError(f"{settings_path}: {key} must be a positive integer, got {settings[key]!r}")
    if beam_size is not None:
      if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
        raise UserInputError(f"beam_size must be a positive integer, got {beam_size!r}")
      settings["beam_size"] = beam_size
    id_table = IdTable.load(os.path.join(assets, IDS_DIR))
    input_vocab, vocab = load_vocabs(assets, settings, id_table)
    tracks = {t.track_id: t for t in formats.read_catalog(os.path.join(assets, CATALOG_FILE))}
    config, params = trainer.load_params(model_dir, verify=verify)
    if vocab.vocab_size > config.output_vocab_size:
      raise UserInputError(f"--model_dir {model_dir}: its ID table needs {vocab.vocab_size} output "
                           f"tokens but the model has {config.output_vocab_size}")
    return cls(model=models.get_model(config), params=params, vocab=vocab, id_table=id_table,
               tracks=tracks, settings=settings, input_vocab=input_vocab)

  def _fn(self, k: int):
    """Jitted recommend function for top-k (jit caches one executable per padded batch size)."""
    from t2t_jax import evaluation  # pylint: disable=g-import-not-at-top
    if k not in self._fns:
      self._fns[k] = evaluation.constrained_topk_fn(self.model, self.index,
                                                    beam_size=max(self.beam_size, k), k=k)
    return self._fns[k]

  def encode(self, prompts: Sequence[str]) -> np.ndarray:
    """Normalised, tokenised prompts (+EOS) as [B, inputs_length] int32."""
    from t2t_jax.data import prompts as prompts_lib  # pylint: disable=g-import-not-at-top
    from t2t_jax.evaluation import pad_inputs  # pylint: disable=g-import-not-at-top
    toks = []
    for i, p in enumerate(prompts):
      try:
        text = prompts_lib.normalize_prompt(p, max_chars=self.max_prompt_chars)
      except UserInputError as e:
        raise UserInputError(f"prompt #{i + 1}: {e}") from None
      # Plain text, as training prompts: user-typed "<id_l_c>" must not become ID tokens.
      toks.append(self.input_vocab.encode_prompt(text))
    return pad_inputs(toks, self.inputs_length)

  def recommend_rows(self, prompts: Sequence[str], k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Top-k ID-table rows and scores, [B, k] each (row -1 if fewer than k valid IDs).

    `prompts` is a sequence of strings (a single string is one prompt).
    """
    if isinstance(prompts, str):
      prompts = [prompts]
    if (isinstance(k, bool) or not isinstance(k, (int, np.integer))
        or not 1 <= k <= self.id_table.num_tracks):
      raise UserInputError(f"k must be an integer in [1, {self.id_table.num_tracks}], got {k!r}")
    if not prompts:
      raise UserInputError("no prompts given")
    inputs = self.encode(prompts)
    # Pad the batch to a power of two so a few compiled shapes serve every batch size.
    b = len(prompts)
    padded = 1 << (b - 1).bit_length()
    if padded > b:
      inputs = np.concatenate([inputs, np.repeat(inputs[:1], padded - b, axis=0)])
    rows, scores = jax.device_get(self._fn(int(k))(self.params, inputs))
    return np.asarray(rows)[:b], np.asarray(scores)[:b]

  def recommend(self, prompts: Sequence[str], k: int = 10) -> list[list[Recommendation]]:
    """Ranked recommendations per prompt (a single string is one prompt)."""
    rows, scores = self.recommend_rows(prompts, k)
    out = []
    for r_K, s_K in zip(rows, scores):
      recs = []
      for rank, (r, s) in enumerate(((r, s) for r, s in zip(r_K, s_K) if r >= 0), 1):
        tid = self.id_table.track_ids[int(r)]
        t = self.tracks.get(tid)
        recs.append(Recommendation(rank, tid, t.artist if t else "", t.title if t else "", float(s)))
      out.append(recs)
    return out


def read_prompts(args) -> list[str]:
  """The prompts of `t2t recommend` (arguments, then --input lines), normalised: what the model reads
  and what is echoed (no control characters or escape sequences reach the terminal raw).  Blank
  --input lines are skipped and counted on stderr; any other bad prompt is an error naming its
  argument number or file:line."""
  items = [(f"prompt #{i}", p) for i, p in enumerate(args.prompts, 1)]
  if args.input:
    blank = 0
    try:
      with open(args.input, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
          if line.strip():
            items.append((f"{args.input}:{lineno}", line.rstrip("\n")))
          else:
            blank += 1
    except (OSError, UnicodeDecodeError) as e:
      raise UserInputError(f"--input {args.input}: {e}") from None
    if blank:
      print(f"t2t recommend: skipped {blank} blank line(s) of {args.input}", file=sys.stderr)
  if not items:
    raise UserInputError("no prompts: pass them as arguments or with --input FILE")
  prompts = []
  for where, text in items:
    try:
      prompts.append(prompts_lib.normalize_prompt(text, max_chars=sys.maxsize))  # cut later, as trained
    except UserInputError as e:
      raise UserInputError(f"{where}: {e}") from None
  return prompts


def run_from_args(args) -> None:
  """`t2t recommend` entry."""
  prompts = read_prompts(args)
  rec = Recommender.load(args.model_dir, verify=False if getattr(args, "no_verify", False) else None)
  results = rec.recommend(prompts, k=args.k)
  for prompt, recs in zip(prompts, results):
    if args.json:
      print(json.dumps({"prompt": prompt, "tracks": [r.as_dict() for r in recs]}, ensure_ascii=False))
    else:
      print(f"# {prompt}")
      for r in recs:
        print(f"{r.rank:3d}. {r.artist} - {r.title}  [{r.track_id}]  {r.score:.3f}")
  sys.stdout.flush()
