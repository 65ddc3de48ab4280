"""Runs an exported Text2Tracks recommender (`t2t export` output) with only numpy, jax and sentencepiece.

This module is the whole runtime: it imports the standard library, numpy, jax and sentencepiece,
never flax/optax/orbax/TensorFlow or the t2t_jax model code, and `t2t export` copies it into the
export dir, so an export dir is usable on a machine without t2t_jax installed:

  import sys; sys.path.insert(0, EXPORT_DIR); import export_runtime
  rec = export_runtime.load(EXPORT_DIR)
  rec.recommend(["old classics for slow dancing"], k=10)  # [[{"rank", "track_id", "artist", ...}]]

or from a shell: `python EXPORT_DIR/export_runtime.py EXPORT_DIR "old classics" -k 5 --json`.

Export dir layout (format_version 1):
  manifest.json         shapes, settings, file names, vocabulary layout, jax version, platforms
  recommend.jaxexport   `jax.export` serialization of
                          fn(params: {path: array}, index: {name: array}, tokens_Bx{L} int32)
                            -> (rows_BxK int32, scores_BxK float32)
                        with a symbolic batch dimension B: the T5 encoder, constrained beam search
                        over the catalog trie, top-K ID-table rows and their log-prob sums.
  arrays.safetensors    the arguments: "params/<flax path>" weights and "index/<name>" trie arrays
  spm.model             SentencePiece text vocabulary (T5 conventions: PAD=0, EOS=1, UNK=2)
  tracks.jsonl          one line per ID-table row: {"track_id", "artist", "title"}
  ids/                  the ID table (codes.npy, track_ids.txt, meta.json)
  hf/                   the weights in Hugging Face T5 naming (model.safetensors + config.json)
  export_runtime.py     this file

Prompt normalisation and tokenisation repeat `t2t_jax.data.prompts.normalize_prompt` and
`t2t_jax.data.vocab.TextAndIdVocab.encode` exactly (tests/test_export.py checks they agree).
"""

import json
import os
import re
import sys
import unicodedata
from typing import Sequence

import jax
import numpy as np
import sentencepiece as spm

try:  # Inside t2t_jax, errors are the package's own (the CLI prints them as one line).
  from t2t_jax.errors import UserInputError
except ImportError:  # standalone copy in an export dir
  class UserInputError(ValueError):
    """Bad input from a user; the message names the file/flag/value."""

FORMAT = "t2t_jax.export"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
FUNCTION_FILE = "recommend.jaxexport"
ARRAYS_FILE = "arrays.safetensors"
SPM_FILE = "spm.model"
TRACKS_FILE = "tracks.jsonl"
PARAMS_PREFIX = "params/"
INDEX_PREFIX = "index/"
EOS_ID = 1

# ---- prompt normalisation and tokenisation (same rules as t2t_jax.data.prompts / vocab) -----------

_WS = re.compile(r"\s+")


def normalize_text(text: str) -> str:
  """NFKC, drop control/format characters (keeps ZWJ for emoji sequences), collapse whitespace."""
  text = unicodedata.normalize("NFKC", text)
  text = "".join(
      ch for ch in text
      if ch in "\t\n\r " or ch == "\u200d" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs"))
  return _WS.sub(" ", text).strip()


def normalize_prompt(text: str, max_chars: int = 512) -> str:
  """A user's prompt as the model saw prompts in training; long prompts are cut at a word boundary."""
  if not isinstance(text, str):
    raise UserInputError(f"prompt must be a string, got {type(text).__name__}")
  norm = normalize_text(text)
  if not norm:
    raise UserInputError("empty prompt")
  if len(norm) > max_chars:
    cut = norm[:max_chars]
    space = cut.rfind(" ")
    if space >= max_chars // 2:
      cut = cut[:space]
    norm = cut.rstrip()
  return norm


def read_safetensors(path: str) -> dict:
  """name -> numpy array from a .safetensors file.

  Written here (16 lines of numpy on the documented format: u64 header length, JSON header, raw
  little-endian bytes) so the runtime needs no package beyond numpy/jax/sentencepiece; tests check
  it against `safetensors.numpy.load_file`.
  """
  dtypes = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
            "I32": np.int32, "I16": np.int16, "I8": np.int8, "U64": np.uint64, "U32": np.uint32,
            "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_, "BF16": jax.numpy.bfloat16}
  with open(path, "rb") as f:
    data = f.read()
  n = int.from_bytes(data[:8], "little")
  try:
    header = json.loads(data[8:8 + n])
  except ValueError as e:
    raise UserInputError(f"{path}: not a safetensors file ({e})") from None
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    begin, end = info["data_offsets"]
    dtype = np.dtype(dtypes[info["dtype"]])
    arr = np.frombuffer(data, dtype=dtype, count=(end - begin) // dtype.itemsize, offset=8 + n + begin)
    out[name] = arr.reshape(info["shape"])
  return out


class ExportedRecommender:
  """Prompt -> ranked catalog tracks from an export dir (no model code needed)."""

  def __init__(self, export_dir: str):
    self.export_dir = export_dir
    manifest_path = os.path.join(export_dir, MANIFEST_FILE)
    if not os.path.isfile(manifest_path):
      raise UserInputError(f"{export_dir}: missing {MANIFEST_FILE} (not a t2t export dir)")
    with open(manifest_path, encoding="utf-8") as f:
      self.manifest = m = json.load(f)
    if m.get("format") != FORMAT or m.get("format_version") != FORMAT_VERSION:
      raise UserInputError(f"{manifest_path}: format {m.get('format')!r} version {m.get('format_version')!r}, "
                           f"this runtime reads {FORMAT!r} version {FORMAT_VERSION}")
    backend = jax.default_backend()
    if backend not in m["platforms"]:
      raise UserInputError(f"{export_dir} was exported for {m['platforms']}, this machine runs {backend!r} "
                           f"(re-export with --platforms {backend})")
    with open(os.path.join(export_dir, FUNCTION_FILE), "rb") as f:
      self.exported = jax.export.deserialize(bytearray(f.read()))
    arrays = read_safetensors(os.path.join(export_dir, ARRAYS_FILE))
    self.params = jax.device_put(  # flat {"encoder/layers_0/...": array}, as exported
        {k[len(PARAMS_PREFIX):]: v for k, v in arrays.items() if k.startswith(PARAMS_PREFIX)})
    self.index = jax.device_put(
        {k[len(INDEX_PREFIX):]: v for k, v in arrays.items() if k.startswith(INDEX_PREFIX)})
    self.sp = spm.SentencePieceProcessor()
    self.sp.Load(os.path.join(export_dir, SPM_FILE))
    vocab = m["vocab"]
    self.text_vocab_size = int(vocab["text_vocab_size"])
    self.id_level_sizes = tuple(int(s) for s in vocab["id_level_sizes"])
    assert self.sp.GetPieceSize() == self.text_vocab_size, (self.sp.GetPieceSize(), self.text_vocab_size)
    self._level_offsets = [sum(self.id_level_sizes[:l]) for l in range(len(self.id_level_sizes))]
    self.inputs_length = int(m["inputs_length"])
    self.top_k = int(m["top_k"])
    self.max_prompt_chars = int(m.get("max_prompt_chars", 512))
    with open(os.path.join(export_dir, m["tracks"]), encoding="utf-8") as f:
      self.tracks = [json.loads(line) for line in f]
    self._call = jax.jit(self.exported.call)

  # ---- tokenisation ------------------------------------------------------------------------------

  def tokenize(self, text: str) -> list:
    """Prompt text -> text-token ids (no EOS), exactly as training prompts are tokenised.

    Prompts are plain text: "<id_l_c>" typed by a user stays text and never becomes an ID token.
    """
    return list(self.sp.EncodeAsIds(text))

  def encode(self, prompts: Sequence[str]) -> np.ndarray:
    """Normalised, tokenised prompts (+EOS) as [B, inputs_length] int32 (long ones keep their EOS)."""
    out = np.zeros((len(prompts), self.inputs_length), np.int32)
    for i, p in enumerate(prompts):
      try:
        toks = self.tokenize(normalize_prompt(p, self.max_prompt_chars)) + [EOS_ID]
      except UserInputError as e:
        raise UserInputError(f"prompt #{i + 1}: {e}") from None
      if len(toks) > self.inputs_length:
        toks = toks[: self.inputs_length - 1] + [toks[-1]]
      out[i, : len(toks)] = toks
    return out

  # ---- recommending ------------------------------------------------------------------------------

  def recommend_rows(self, prompts: Sequence[str], k: int | None = None):
    """Top-k ID-table rows and scores, [B, k] each (row -1 where fewer than k were found)."""
    if isinstance(prompts, str):
      prompts = [prompts]
    k = self.top_k if k is None else k
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= self.top_k:
      raise UserInputError(f"k must be an integer in [1, {self.top_k}] (the export's top_k), got {k!r}")
    if not prompts:
      raise UserInputError("no prompts given")
    inputs = self.encode(prompts)
    b = len(prompts)
    padded = 1 << (b - 1).bit_length()  # a few compiled shapes serve every batch size
    if padded > b:
      inputs = np.concatenate([inputs, np.repeat(inputs[:1], padded - b, axis=0)])
    rows, scores = jax.device_get(self._call(self.params, self.index, inputs))
    return np.asarray(rows)[:b, :k], np.asarray(scores)[:b, :k]

  def recommend(self, prompts: Sequence[str], k: int | None = None) -> list:
    """Ranked tracks per prompt: [[{"rank", "track_id", "artist", "title", "score"}, ...], ...]."""
    rows, scores = self.recommend_rows(prompts, k)
    out = []
    for r_K, s_K in zip(rows, scores):
      recs = [r for r in r_K if r >= 0]
      out.append([{"rank": i + 1, "track_id": self.tracks[int(r)]["track_id"],
                   "artist": self.tracks[int(r)].get("artist", ""), "title": self.tracks[int(r)].get("title", ""),
                   "score": float(s)} for i, (r, s) in enumerate(zip(recs, s_K))])
    return out


def load(export_dir: str) -> ExportedRecommender:
  """Loads an export dir written by `t2t export`."""
  return ExportedRecommender(export_dir)


def main(argv=None) -> int:
  import argparse  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(description="recommend tracks with an exported Text2Tracks model")
  p.add_argument("export_dir")
  p.add_argument("prompts", nargs="+")
  p.add_argument("-k", type=int, default=None, help="tracks per prompt (default: the export's top_k)")
  p.add_argument("--json", action="store_true", help="JSON lines")
  args = p.parse_args(argv)
  try:
    rec = load(args.export_dir)
    results = rec.recommend(args.prompts, args.k)
  except UserInputError as e:
    print(f"export_runtime: error: {e}", file=sys.stderr)
    return 2
  for prompt, recs in zip(args.prompts, results):
    if args.json:
      print(json.dumps({"prompt": prompt, "tracks": recs}, ensure_ascii=False))
    else:
      print(f"# {prompt}")
      for r in recs:
        print(f"{r['rank']:3d}. {r['artist']} - {r['title']}  [{r['track_id']}]  {r['score']:.3f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
