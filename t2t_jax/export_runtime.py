"""Runs an exported Text2Tracks recommender (`t2t export` output) with only numpy, jax and sentencepiece.

This module is the whole runtime: it imports the standard library, numpy, jax and sentencepiece,
never flax/optax/orbax/TensorFlow or the t2t_jax model code, and `t2t export` copies it into the
export dir, so an export dir is usable on a machine without t2t_jax installed:

  import sys; sys.path.insert(0, EXPORT_DIR); import export_runtime
  rec = export_runtime.load(EXPORT_DIR)
  rec.recommend(["old classics for slow dancing"], k=10)  # [[{"rank", "track_id", "artist", ...}]]

or from a shell: `python EXPORT_DIR/export_runtime.py EXPORT_DIR "old classics" -k 5 --json`.

Export dir layout (format_version 2):
  manifest.json         shapes, settings, file names, vocabulary layout, jax version, platforms,
                        size and sha256 of every other file (checked at load)
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

This file is also the package's single home of what both sides need (it imports only the standard
library, numpy, jax, sentencepiece and t2t_jax.errors, so the lowest import layer may use it): prompt
normalisation (`t2t_jax.data.prompts` imports `normalize_text`, `truncate` and `normalize_prompt` from
here), the WordPiece pad-id swap (`t2t_jax.data.wordpiece` imports `wordpiece_pad_id` and
`swap_pad`), file hashing (`t2t export` writes the manifest's sha256 with `file_sha256`) and the trie
check (`t2t_jax.decoding.index` validates with `validate_index_arrays`).  Tokenisation repeats
`t2t_jax.data.vocab.TextAndIdVocab.encode` exactly (tests/test_export.py checks they agree).
"""

import hashlib
import json
import os
import re
import sys
import unicodedata
from typing import Sequence

import numpy as np

# jax and sentencepiece are imported where they are used: the package's prompt normalisation, trie
# check and hashing come from this module (their one home), and `t2t import` must not load JAX.

try:  # Inside t2t_jax, errors are the package's own (the CLI prints them as one line).
  from t2t_jax.errors import UserInputError
except ImportError:  # standalone copy in an export dir
  class UserInputError(ValueError):
    """Bad input from a user; the message names the file/flag/value."""

FORMAT = "t2t_jax.export"
FORMAT_VERSION = 2  # 2: manifest.sha256 (checked at load)
MANIFEST_FILE = "manifest.json"
FUNCTION_FILE = "recommend.jaxexport"
ARRAYS_FILE = "arrays.safetensors"
SPM_FILE = "spm.model"
TOKENIZER_FILE = "tokenizer.json"
TRACKS_FILE = "tracks.jsonl"
PARAMS_PREFIX = "params/"
INDEX_PREFIX = "index/"
EOS_ID = 1

# ---- prompt normalisation (t2t_jax.data.prompts imports it from here) ---------------------------

DEFAULT_MAX_CHARS = 512
_WS = re.compile(r"\s+")
_SURROGATE = re.compile("[\ud800-\udfff]")  # a lone surrogate: a "\ud800" JSON escape, undecodable argv bytes


def normalize_text(text: str) -> str:
  """NFKC, drop control/format characters (keeps ZWJ for emoji sequences), collapse whitespace."""
  text = unicodedata.normalize("NFKC", text)
  text = "".join(
      ch for ch in text
      if ch in "\t\n\r " or ch == "\u200d" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs"))
  return _WS.sub(" ", text).strip()


def truncate(text: str, max_chars: int) -> str:
  """Cuts `text` to at most `max_chars`, at the last space when there is one in the second half."""
  if len(text) <= max_chars:
    return text
  cut = text[:max_chars]
  space = cut.rfind(" ")
  if space >= max_chars // 2:
    cut = cut[:space]
  return cut.rstrip()


def normalize_prompt(text: str, max_chars: int = DEFAULT_MAX_CHARS, *, on_overlong: str = "truncate") -> str:
  """A user's prompt as the model saw prompts in training (same rules): long prompts are cut at a
  word boundary (`on_overlong="truncate"`) or refused (`"raise"`)."""
  if not isinstance(text, str):
    raise UserInputError(f"prompt must be a string, got {type(text).__name__}")
  bad = _SURROGATE.search(text)
  if bad:
    raise UserInputError(f"prompt is not valid text: lone surrogate {bad.group()!r} at position {bad.start()} "
                         "(not Unicode: a bad JSON escape, or bytes that are not UTF-8)")
  norm = normalize_text(text)
  if not norm:
    raise UserInputError("empty prompt")
  if len(norm) > max_chars:
    if on_overlong == "raise":
      raise UserInputError(f"prompt is {len(norm)} characters (max_chars={max_chars})")
    norm = truncate(norm, max_chars)
  return norm


# ---- WordPiece pad id (t2t_jax.data.wordpiece imports it from here) ------------------------------


def wordpiece_pad_id(tokenizer):
  """The pad id of a `tokenizers.Tokenizer` (its padding setting, else [PAD] / <pad>); None if none.
  Model inputs pad with 0, so a tokenizer padding with another id (MPNet's <pad> = 1, <s> = 0) has
  the two ids swapped (`swap_pad`)."""
  padding = tokenizer.padding
  if padding and padding.get("pad_id") is not None:
    return int(padding["pad_id"])
  for token in ("[PAD]", "<pad>"):
    if tokenizer.token_to_id(token) is not None:
      return int(tokenizer.token_to_id(token))
  return None


def swap_pad(ids, pad_id: int) -> list:
  """`ids` with `pad_id` and 0 exchanged (its own inverse; the identity for pad_id 0)."""
  if not pad_id:
    return [int(i) for i in ids]
  return [pad_id if i == 0 else 0 if i == pad_id else int(i) for i in ids]


def read_safetensors(path: str) -> dict:
  """name -> numpy array from a .safetensors file.

  Written here (16 lines of numpy on the documented format: u64 header length, JSON header, raw
  little-endian bytes) so the runtime needs no package beyond numpy/jax/sentencepiece; tests check
  it against `safetensors.numpy.load_file`.
  """
  dtypes = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
            "I32": np.int32, "I16": np.int16, "I8": np.int8, "U64": np.uint64, "U32": np.uint32,
            "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_}
  import ml_dtypes  # pylint: disable=import-outside-toplevel  (ships with jax; numpy's bfloat16)
  dtypes["BF16"] = ml_dtypes.bfloat16
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


# ---- integrity: file hashes, argument shapes, trie structure ------------------------------------


def file_sha256(path: str) -> str:
  """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def verify_files(export_dir: str, manifest: dict) -> None:
  """Every file the manifest lists exists with its recorded size and sha256 (UserInputError if not)."""
  hashes = manifest.get("sha256")
  sizes = manifest.get("file_bytes", {})
  if not isinstance(hashes, dict) or not isinstance(sizes, dict):
    raise UserInputError(f"{os.path.join(export_dir, MANIFEST_FILE)}: no file hashes (re-export)")
  for name in (FUNCTION_FILE, ARRAYS_FILE, SPM_FILE, TRACKS_FILE):
    if name not in hashes:
      raise UserInputError(f"{os.path.join(export_dir, MANIFEST_FILE)}: no sha256 for {name} (re-export)")
  for name, digest in sorted(hashes.items()):
    path = os.path.join(export_dir, name)
    if os.path.isabs(name) or ".." in name.split("/") or not os.path.isfile(path):
      raise UserInputError(f"{path}: missing (the export dir is incomplete; re-export)")
    if name in sizes and os.path.getsize(path) != sizes[name]:
      raise UserInputError(f"{path}: {os.path.getsize(path)} bytes, the manifest says {sizes[name]} "
                           "(truncated or modified; re-export)")
    if file_sha256(path) != digest:
      raise UserInputError(f"{path}: sha256 differs from the manifest (corrupted or modified; re-export)")


def validate_index_arrays(child_start, token, terminal_row, *, num_rows: int, vocab_size: int,
                          eos_id: int = 1, max_depth: int | None = None) -> None:
  """Checks a trie's arrays (`t2t_jax.decoding.index.ConstraintIndex` layout); raises UserInputError
  naming the first fault.  The package's one trie check: decoding/index.py imports it from here.

  Checked: 1-D integer arrays; child_start starts at 1, never decreases, ends at num_nodes and puts
  every node's children after it (so each node but the root has exactly one parent, in level
  order); edge tokens in [1, vocab_size) (the root's is PAD, 0), strictly increasing among siblings;
  terminal rows in [-1, num_rows), every row ending at one node at most (rows without their own ID,
  under a collision policy, at none), every leaf ending a row, and only EOS nodes both ending a row
  and having children; depth <= max_depth when given.
  """
  for name, a in (("child_start", child_start), ("token", token), ("terminal_row", terminal_row)):
    a = np.asarray(a)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
      raise UserInputError(f"trie: {name} must be a 1-D integer array, got {a.dtype}{list(a.shape)}")
  cs = np.asarray(child_start).astype(np.int64)
  tok = np.asarray(token).astype(np.int64)
  term = np.asarray(terminal_row).astype(np.int64)
  num_nodes, num_internal = tok.shape[0], cs.shape[0] - 1
  if num_nodes < 2 or num_internal < 1 or num_internal > num_nodes:
    raise UserInputError(f"trie: {num_nodes} nodes and {num_internal} internal nodes")
  if cs[0] != 1 or cs[-1] != num_nodes:
    raise UserInputError(f"trie: child_start must run from 1 to {num_nodes}, got {cs[0]} .. {cs[-1]}")
  deg = np.diff(cs)
  if (deg < 0).any():
    raise UserInputError(f"trie: child_start decreases after node {int(np.flatnonzero(deg < 0)[0])}")
  early = (cs[:-1] <= np.arange(num_internal)) & (deg > 0)
  if early.any():
    raise UserInputError(f"trie: node {int(np.flatnonzero(early)[0])} has a child before it")
  bad_tok = (tok[1:] < 1) | (tok[1:] >= vocab_size)
  if tok[0] != 0 or bad_tok.any():
    bad = 0 if tok[0] != 0 else 1 + int(np.flatnonzero(bad_tok)[0])
    raise UserInputError(f"trie: node {bad} has token {tok[bad]} (vocabulary [1, {vocab_size}))")
  parent = np.repeat(np.arange(num_internal), deg)  # parent of nodes 1 .. num_nodes-1
  unsorted = (parent[1:] == parent[:-1]) & (tok[2:] <= tok[1:-1])
  if unsorted.any():
    raise UserInputError(f"trie: children of node {int(parent[1:][unsorted][0])} are not in "
                         "strictly increasing token order")
  row_base = num_nodes - term.shape[0]
  if not 1 <= row_base <= num_nodes:
    raise UserInputError(f"trie: terminal_row has {term.shape[0]} entries for {num_nodes} nodes")
  out_of_range = (term < -1) | (term >= num_rows)
  if out_of_range.any():
    bad = int(np.flatnonzero(out_of_range)[0])
    raise UserInputError(f"trie: node {row_base + bad} ends row {term[bad]} (rows [0, {num_rows}))")
  counts = np.bincount(term[term >= 0], minlength=num_rows)
  if (counts > 1).any():  # rows may be absent: under a collision policy only IDs' owners decode
    r = int(np.flatnonzero(counts > 1)[0])
    raise UserInputError(f"trie: row {r} ends at {counts[r]} nodes (must be at most 1)")
  full_deg = np.zeros(num_nodes, np.int64)
  full_deg[:num_internal] = deg
  ends = np.zeros(num_nodes, bool)
  ends[row_base:] = term >= 0
  dead = (full_deg == 0) & ~ends
  if dead.any():
    raise UserInputError(f"trie: leaf node {int(np.flatnonzero(dead)[0])} ends no row")
  inner = ends & (full_deg > 0) & (tok != eos_id)
  if inner.any():
    raise UserInputError(f"trie: node {int(np.flatnonzero(inner)[0])} ends a row and has children "
                         "but is not EOS (IDs must be prefix-free)")
  if max_depth is not None:
    depth, lo, hi = 0, 0, 1  # nodes of one depth are the contiguous range [lo, hi)
    while lo < hi:
      lo, hi = int(cs[min(lo, num_internal)]), int(cs[min(hi, num_internal)])
      depth += lo < hi
    if depth > max_depth:
      raise UserInputError(f"trie: depth {depth} exceeds the decode length {max_depth}")


def _check_arguments(path: str, exported, params: dict, index: dict, inputs_length: int) -> None:
  """The arrays match the exported function's argument tree, shapes and dtypes."""
  import jax  # pylint: disable=import-outside-toplevel  (see the imports)
  tokens = jax.ShapeDtypeStruct((1, inputs_length), np.int32)
  leaves, tree = jax.tree_util.tree_flatten(((params, index, tokens), {}))
  if tree != exported.in_tree:
    want = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(
        jax.tree_util.tree_unflatten(exported.in_tree, exported.in_avals))[0]}
    got = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(((params, index, tokens), {}))[0]}
    raise UserInputError(f"{path}: arrays do not match the exported function (missing "
                         f"{sorted(want - got)[:3]}, unexpected {sorted(got - want)[:3]})")
  for i, (leaf, aval) in enumerate(zip(leaves[:-1], exported.in_avals[:-1])):
    if tuple(leaf.shape) != tuple(aval.shape) or np.dtype(leaf.dtype) != np.dtype(aval.dtype):
      raise UserInputError(f"{path}: array #{i} is {leaf.dtype}{list(leaf.shape)}, the exported function "
                           f"takes {aval.dtype}{list(aval.shape)}")


def _read_manifest(export_dir: str) -> dict:
  path = os.path.join(export_dir, MANIFEST_FILE)
  if not os.path.isfile(path):
    raise UserInputError(f"{export_dir}: missing {MANIFEST_FILE} (not a t2t export dir)")
  try:
    with open(path, encoding="utf-8") as f:
      m = json.load(f)
  except (ValueError, OSError) as e:
    raise UserInputError(f"{path}: unreadable ({e})") from None
  if not isinstance(m, dict) or m.get("format") != FORMAT or m.get("format_version") != FORMAT_VERSION:
    got = (m.get("format"), m.get("format_version")) if isinstance(m, dict) else (None, None)
    raise UserInputError(f"{path}: format {got[0]!r} version {got[1]!r}, "
                         f"this runtime reads {FORMAT!r} version {FORMAT_VERSION} (re-export)")
  return m


class ExportedRecommender:
  """Prompt -> ranked catalog tracks from an export dir (no model code needed).

  Loading checks every file against the manifest's sha256 (`verify=False` skips only that), the
  arrays against the exported function's arguments and the trie's structure, so a damaged export
  fails with one UserInputError naming the file instead of recommending wrong tracks.
  """

  def __init__(self, export_dir: str, *, verify: bool = True):
    import jax  # pylint: disable=import-outside-toplevel  (see the imports)
    self.export_dir = export_dir
    self.manifest = m = _read_manifest(export_dir)
    manifest_path = os.path.join(export_dir, MANIFEST_FILE)
    backend = jax.default_backend()
    if backend not in m.get("platforms", ()):
      raise UserInputError(f"{export_dir} was exported for {m.get('platforms')}, this machine runs {backend!r} "
                           f"(re-export with --platforms {backend})")
    if verify:
      verify_files(export_dir, m)
    try:
      vocab = m["vocab"]
      self.text_vocab_size = int(vocab["text_vocab_size"])
      self.id_level_sizes = tuple(int(s) for s in vocab["id_level_sizes"])
      self.inputs_length = int(m["inputs_length"])
      self.top_k = int(m["top_k"])
      self.max_prompt_chars = int(m.get("max_prompt_chars", 512))
      num_tracks, vocab_size = int(m["num_tracks"]), int(vocab["vocab_size"])
      eos_id, max_decode_len = int(vocab.get("eos_id", EOS_ID)), int(m["max_decode_len"])
    except (KeyError, TypeError, ValueError) as e:
      raise UserInputError(f"{manifest_path}: bad or missing field ({type(e).__name__}: {e})") from None
    self._level_offsets = [sum(self.id_level_sizes[:l]) for l in range(len(self.id_level_sizes))]
    path = os.path.join(export_dir, FUNCTION_FILE)
    try:
      with open(path, "rb") as f:
        self.exported = jax.export.deserialize(bytearray(f.read()))
    except Exception as e:  # pylint: disable=broad-except  (any parse failure of a damaged file)
      raise UserInputError(f"{path}: not a jax.export serialization ({type(e).__name__})") from None
    path = os.path.join(export_dir, ARRAYS_FILE)
    try:
      arrays = read_safetensors(path)
    except (KeyError, TypeError, ValueError) as e:
      raise UserInputError(f"{path}: malformed ({type(e).__name__}: {e})") from None
    params = {k[len(PARAMS_PREFIX):]: v for k, v in arrays.items() if k.startswith(PARAMS_PREFIX)}
    index = {k[len(INDEX_PREFIX):]: v for k, v in arrays.items() if k.startswith(INDEX_PREFIX)}
    _check_arguments(path, self.exported, params, index, self.inputs_length)
    try:
      validate_index_arrays(index["child_start"], index["token"], index["terminal_row"], num_rows=num_tracks,
                            vocab_size=vocab_size, eos_id=eos_id, max_depth=max_decode_len)
    except UserInputError as e:
      raise UserInputError(f"{path}: {e}") from None
    self.params = jax.device_put(params)  # flat {"encoder/layers_0/...": array}, as exported
    self.index = jax.device_put(index)
    self.input_kind = m.get("input_vocab", {}).get("kind", "sentencepiece")
    if self.input_kind == "wordpiece":  # a pretrained encoder's own tokenizer (bert_t5 models)
      path = os.path.join(export_dir, m["input_vocab"].get("file", TOKENIZER_FILE))
      try:
        from tokenizers import Tokenizer  # pylint: disable=import-outside-toplevel
      except ImportError:
        raise UserInputError(f"{export_dir}: this export tokenises with WordPiece; "
                             "pip install tokenizers") from None
      try:
        self.wordpiece = Tokenizer.from_file(path)
      except Exception as e:  # pylint: disable=broad-except  (tokenizers raises plain Exception)
        raise UserInputError(f"{path}: not a tokenizers file ({e})") from None
      self.wordpiece_pad_id = wordpiece_pad_id(self.wordpiece)
      self.wordpiece.no_padding()
      self.wordpiece.no_truncation()
    else:
      import sentencepiece as spm  # pylint: disable=import-outside-toplevel  (see the imports)
      self.sp = spm.SentencePieceProcessor()
      path = os.path.join(export_dir, SPM_FILE)
      try:
        self.sp.Load(path)
      except (OSError, RuntimeError) as e:
        raise UserInputError(f"{path}: not a SentencePiece model ({e})") from None
      if self.sp.GetPieceSize() != self.text_vocab_size:
        raise UserInputError(f"{path}: {self.sp.GetPieceSize()} pieces, the manifest says "
                             f"{self.text_vocab_size}")
    self.tracks = _read_tracks(os.path.join(export_dir, m["tracks"]), num_tracks)
    self._call = jax.jit(self.exported.call)

  # ---- tokenisation ------------------------------------------------------------------------------

  def tokenize(self, text: str) -> list:
    """Prompt text -> text-token ids (no EOS), exactly as training prompts are tokenised.

    Prompts are plain text: "<id_l_c>" typed by a user stays text and never becomes an ID token.
    """
    if self.input_kind == "wordpiece":
      return swap_pad(self.wordpiece.encode(text).ids, self.wordpiece_pad_id)  # [CLS] ... [SEP]
    return list(self.sp.EncodeAsIds(text))

  def encode(self, prompts: Sequence[str]) -> np.ndarray:
    """Normalised, tokenised prompts (+EOS, or [CLS] ... [SEP] for WordPiece) as
    [B, inputs_length] int32 (long ones keep their last token)."""
    out = np.zeros((len(prompts), self.inputs_length), np.int32)
    end = [] if self.input_kind == "wordpiece" else [EOS_ID]
    for i, p in enumerate(prompts):
      try:
        toks = self.tokenize(normalize_prompt(p, self.max_prompt_chars)) + end
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
    import jax  # pylint: disable=import-outside-toplevel  (see the imports)
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


def _read_tracks(path: str, num_tracks: int) -> list:
  tracks = []
  with open(path, encoding="utf-8") as f:
    for i, line in enumerate(f, 1):
      try:
        t = json.loads(line)
      except ValueError as e:
        raise UserInputError(f"{path}:{i}: bad JSON ({e})") from None
      if not isinstance(t, dict) or not isinstance(t.get("track_id"), str):
        raise UserInputError(f"{path}:{i}: expected an object with a string track_id")
      tracks.append(t)
  if len(tracks) != num_tracks:
    raise UserInputError(f"{path}: {len(tracks)} tracks, the manifest says {num_tracks}")
  return tracks


def load(export_dir: str, *, verify: bool = True) -> ExportedRecommender:
  """Loads an export dir written by `t2t export` (verify: check the files' sha256)."""
  return ExportedRecommender(export_dir, verify=verify)


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
