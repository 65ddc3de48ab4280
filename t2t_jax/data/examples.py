"""Raw Text2Tracks examples from a dataset dir and an ID table, in pure Python (no TensorFlow).

`ExampleSource` is what the SeqIO tasks (tasks/t2t_tasks.py) wrap in a tf.data source and what
`t2t_jax.data.batches.numpy_batches` turns into model batches without TensorFlow (accelerator images
ship JAX but not TensorFlow/SeqIO).

Examples (prompts tokenised in Python with the dataset's SentencePiece model, once per playlist):
  train:             one element per playlist: `inputs` = prompt tokens (no EOS), `targets` = int32
                     [num_tracks, L] ID tokens of all its tracks (0-padded), `prompt`, `playlist_id`;
                     consumers expand it to one example per track.
  validation / test: one per held-out playlist: `inputs`, `targets` = its first track's ID tokens,
                     `relevant_rows` (int32 rows of all its tracks in the ID table, for metrics),
                     `prompt`, `playlist_id`.
Every catalog track must have an ID in the table (checked when the data is first loaded;
UserInputError names the count, the first tracks and the table dir), unless `missing_ids="skip"`.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from typing import Iterator, Sequence

import numpy as np

from t2t_jax.data import formats, prompts
from t2t_jax.data import vocab as t2t_vocab
from t2t_jax.data import wordpiece
from t2t_jax.errors import UserInputError
from t2t_jax.ids.table import IdTable

SPLITS = formats.SPLITS
MISSING_IDS = ("raise", "skip")


@dataclasses.dataclass
class SourceStats:
  """What an ExampleSource dropped under missing_ids="skip" (per pass over a split)."""
  tracks_without_id: int = 0
  playlists_without_id: int = 0


INDEXING = ("none", "tracks", "artists", "tracks_and_artists")


class ExampleSource:
  """Loads a dataset dir + ID table once and yields raw examples (prompts as strings).

  missing_ids: "raise" (default) stops at load time when a catalog track has no ID in the table,
  naming the count and the first such tracks; "skip" drops those tracks from training examples and
  relevance sets (and playlists left without any), counting them in `stats`.
  augment: wrap training prompts in `prompts.PROMPT_TEMPLATES` (a template drawn per playlist from
  the shuffle seed); evaluation prompts are never augmented.
  input_tokenizer: None (prompts are SentencePiece pieces of `spm_path`; the SeqIO feature appends
  EOS) or a pretrained encoder's Hugging Face tokenizer (WordPiece ids with [CLS] ... [SEP], no
  EOS); then the targets use an ID-only vocabulary unless the IDs are text.
  indexing: DSI-style indexing examples added to the training split, so that every catalog track's
  ID is learned, also for tracks in no training playlist: "tracks" (a track's metadata
  "artist - title (album)" -> its ID), "artists" (an artist's name -> the IDs of all its tracks),
  "tracks_and_artists", or "none".  `indexing_share` is the share of training examples they make
  up per epoch, reached by repeating the real playlists (or the indexing examples) whole times.
  """

  def __init__(self, dataset_dir: str, ids_dir: str, spm_path: str, prompt_field: str,
               max_prompt_chars: int = prompts.DEFAULT_MAX_CHARS, *, missing_ids: str = "raise",
               augment: bool = False, input_tokenizer: str | None = None,
               indexing: str = "none", indexing_share: float = 0.3):
    if missing_ids not in MISSING_IDS:
      raise UserInputError(f"missing_ids must be one of {MISSING_IDS}, got {missing_ids!r}")
    if indexing not in INDEXING:
      raise UserInputError(f"indexing must be one of {INDEXING}, got {indexing!r}")
    if not 0.0 < indexing_share < 1.0:
      raise UserInputError(f"indexing_share must be in (0, 1), got {indexing_share!r}")
    self.indexing, self.indexing_share = indexing, float(indexing_share)
    self.dataset_dir = dataset_dir
    self.ids_dir = ids_dir
    self.spm_path = spm_path
    self.prompt_field = prompt_field
    self.max_prompt_chars = max_prompt_chars
    self.missing_ids = missing_ids
    self.augment = augment
    self.input_tokenizer = input_tokenizer  # None: prompts use the SentencePiece model
    self.stats = SourceStats()
    self._lock = threading.Lock()
    self._loaded = None
    self._vocab = None
    self._train_index = None

  def _load(self):
    with self._lock:
      if self._loaded is None:
        dataset = load_dataset(self.dataset_dir)
        table = load_table(self.ids_dir)
        vocab = output_vocab(self.spm_path, table, self.input_tokenizer)
        check_table(table, vocab, dataset, self.ids_dir, missing_ids=self.missing_ids)
        self._vocab = vocab
        self._input_vocab = (text_and_id_vocab(self.spm_path) if self.input_tokenizer is None else
                             wordpiece_vocab(self.input_tokenizer))
        tokens_NxL = table.token_ids(vocab.id_token_offset)
        row_of = {t: r for r, t in enumerate(table.track_ids)}
        self._loaded = (dataset, row_of, tokens_NxL)
    return self._loaded

  @property
  def vocab(self) -> t2t_vocab.TextAndIdVocab:
    """The targets vocabulary (text pieces + ID tokens, or ID tokens only); loads the data on first use."""
    self._load()
    return self._vocab

  def _rows(self, row_of: dict, playlist: formats.Playlist) -> list[int]:
    rows = []
    for t in playlist.track_ids:
      r = row_of.get(t)
      if r is None:
        if self.missing_ids == "raise":
          raise UserInputError(
              f"track {t!r} of playlist {playlist.playlist_id!r} ({self.dataset_dir}) has no ID in the "
              f"ID table {self.ids_dir}; rebuild the table from this catalog")
        self.stats.tracks_without_id += 1
        continue
      rows.append(r)
    if not rows:
      self.stats.playlists_without_id += 1
    return rows

  def _prompt(self, playlist: formats.Playlist) -> str:
    return prompts.make_prompt(playlist, self.prompt_field, max_chars=self.max_prompt_chars)

  def _tokens(self, text: str) -> np.ndarray:
    """Prompt token ids: SentencePiece pieces (EOS is appended later) or the pretrained encoder's
    WordPiece ids with [CLS] ... [SEP] (no EOS).  Plain text only: a prompt that happens to
    contain "<id_l_c>" must not become ID tokens."""
    if self.input_tokenizer is not None:
      return np.asarray(self._input_vocab.encode(text), np.int32)
    return np.asarray(self._input_vocab.sp.EncodeAsIds(text), np.int32)

  def indexing_examples(self) -> list[tuple[str, list[int]]]:
    """(text, ID-table rows) of the indexing pseudo-playlists (`indexing`), in catalog order."""
    if self.indexing == "none":
      return []
    dataset, row_of, _ = self._load()
    out = []
    if self.indexing in ("tracks", "tracks_and_artists"):
      for t in dataset.tracks:
        if t.track_id in row_of:
          text = f"{t.artist} - {t.title}" + (f" ({t.album})" if t.album else "")
          out.append((prompts.normalize_text(text), [row_of[t.track_id]]))
    if self.indexing in ("artists", "tracks_and_artists"):
      by_artist: dict[str, list[int]] = {}
      for t in dataset.tracks:
        name = prompts.normalize_text(t.artist)
        if name and t.track_id in row_of:
          by_artist.setdefault(name, []).append(row_of[t.track_id])
      out.extend(by_artist.items())
    return [(text, rows) for text, rows in out if text]

  def retrieval_texts(self) -> tuple[list[np.ndarray], list[np.ndarray], list[list[int]]]:
    """Texts describing each ID-table row, tokenised for the model's encoder: (metadata
    "artist - title (album)" per row; training prompts; the rows of each training prompt)."""
    dataset, row_of, tokens_NxL = self._load()
    meta = [np.zeros(0, np.int32)] * len(tokens_NxL)
    for t in dataset.tracks:
      if t.track_id in row_of:
        text = f"{t.artist} - {t.title}" + (f" ({t.album})" if t.album else "")
        meta[row_of[t.track_id]] = self._tokens(prompts.normalize_text(text))
    prompt_tokens, prompt_rows = [], []
    for p in dataset.playlists("train"):
      rows = self._rows(row_of, p)
      if rows:
        prompt_tokens.append(self._tokens(self._prompt(p)))
        prompt_rows.append(rows)
    return meta, prompt_tokens, prompt_rows

  def _repeats(self, num_real: int, num_indexing: int) -> tuple[int, int]:
    """Whole-number repetitions (real, indexing) that bring indexing close to `indexing_share`."""
    if not num_indexing or not num_real:
      return 1, 1
    ratio = self.indexing_share / (1.0 - self.indexing_share) * num_real / num_indexing
    return (1, max(1, round(ratio))) if ratio >= 1 else (max(1, round(1 / ratio)), 1)

  def train_playlists(self, seed: int | None = None) -> Iterator[dict]:
    """One element per train playlist: its prompt tokens and the ID tokens of all its tracks.

    `targets` is int32 [num_tracks, L] (0-padded); consumers expand it to one example per track.
    Playlists come in a seeded random order when `seed` is given.
    """
    dataset, row_of, tokens_NxL = self._load()
    rng = np.random.default_rng([0 if seed is None else seed, 17])
    for p in dataset.playlists("train", shuffle_seed=seed):
      prompt = self._prompt(p)
      rows = self._rows(row_of, p)
      if not rows:
        continue
      inputs = prompts.augment_prompt(prompt, rng) if self.augment else prompt
      yield {"inputs": self._tokens(inputs), "prompt": prompt, "playlist_id": p.playlist_id,
             "targets": tokens_NxL[rows]}
    for i, (text, rows) in enumerate(self.indexing_examples()):
      yield {"inputs": self._tokens(text), "prompt": text, "playlist_id": f"indexing:{i}",
             "targets": tokens_NxL[rows]}

  def train_index(self) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Training examples addressable by index, for resumable readers (tasks.pipeline.indexed_batches).

    Returns (prompt tokens per kept train playlist, in file order; playlist_E and row_E: example e is
    ID-table row row_E[e] of playlist playlist_E[e]; ID tokens [N, L] 0-padded).  Computed once.
    Not for `augment` sources (their prompts change per pass).
    """
    assert not self.augment, "augmented prompts are drawn per pass; use the tf.data reader"
    if self._train_index is None:
      dataset, row_of, tokens_NxL = self._load()
      real = []
      for p in dataset.playlists("train"):
        rows = self._rows(row_of, p)
        if rows:
          real.append((self._tokens(self._prompt(p)), rows))
      indexing = [(self._tokens(text), rows) for text, rows in self.indexing_examples()]
      rep_real, rep_index = self._repeats(sum(len(r) for _, r in real),
                                          sum(len(r) for _, r in indexing))
      prompt_tokens, playlist_E, row_E = [], [], []
      for tokens, rows in real * rep_real + indexing * rep_index:
        playlist_E.extend([len(prompt_tokens)] * len(rows))
        row_E.extend(rows)
        prompt_tokens.append(tokens)
      self._train_index = (prompt_tokens, np.asarray(playlist_E, np.int64),
                           np.asarray(row_E, np.int64), tokens_NxL)
    return self._train_index

  def eval_examples(self, split: str) -> Iterator[dict]:
    dataset, row_of, tokens_NxL = self._load()
    for p in dataset.playlists(split):
      prompt = self._prompt(p)
      rows = np.asarray(self._rows(row_of, p), np.int32)
      if rows.size == 0:
        continue
      yield {"inputs": self._tokens(prompt), "prompt": prompt, "playlist_id": p.playlist_id,
             "targets": strip_padding(tokens_NxL[rows[0]]), "relevant_rows": rows}

  def examples(self, split: str, seed: int | None = None) -> Iterator[dict]:
    if split == "train":
      return self.train_playlists(seed)
    if split in ("validation", "test"):
      return self.eval_examples(split)
    raise UserInputError(f"unknown split {split!r}; expected one of {SPLITS}")


def check_table(table: IdTable, vocab, dataset: formats.Dataset, ids_dir: str, *,
                missing_ids: str = "raise") -> None:
  """Checks that an ID table fits a dataset and vocabulary; UserInputError naming what is wrong.

  `vocab`: anything with `text_vocab_size` and `spm_path` (TextAndIdVocab, or the SeqIO vocabulary).
  Every catalog track needs an ID (unless missing_ids="skip"); content-ID tokens must be text pieces
  of this SentencePiece model (a table built with another vocabulary is caught here).
  """
  if missing_ids == "raise":
    in_table = set(table.track_ids)
    missing = [t.track_id for t in dataset.tracks if t.track_id not in in_table]
    if missing:
      raise UserInputError(
          f"{len(missing)} of {len(dataset.tracks)} catalog tracks of {dataset.directory} have no ID in the "
          f"ID table {ids_dir} (e.g. {missing[:3]}); rebuild the table from this catalog")
  if table.is_text and table.codes.size:
    hi = int(table.codes.max())
    if hi >= vocab.text_vocab_size:
      raise UserInputError(
          f"content ID table {ids_dir} uses token {hi}, but the text vocabulary {vocab.spm_path} has "
          f"{vocab.text_vocab_size} pieces: the table was built with another SentencePiece model")


def strip_padding(tokens_L: np.ndarray) -> np.ndarray:
  """The non-zero tokens of a 0-padded ID row, as int32."""
  return tokens_L[tokens_L > 0].astype(np.int32)


@functools.lru_cache(maxsize=8)
def load_dataset(dataset_dir: str) -> formats.Dataset:
  return formats.Dataset.load(dataset_dir)


@functools.lru_cache(maxsize=32)
def load_table(ids_dir: str) -> IdTable:
  return IdTable.load(ids_dir)


@functools.lru_cache(maxsize=64)
def text_and_id_vocab(spm_path: str, id_level_sizes: Sequence[int] = ()) -> t2t_vocab.TextAndIdVocab:
  return t2t_vocab.TextAndIdVocab(spm_path, tuple(id_level_sizes))


@functools.lru_cache(maxsize=8)
def wordpiece_vocab(tokenizer: str):
  return wordpiece.WordPieceVocab(tokenizer)


@functools.lru_cache(maxsize=64)
def _id_only_vocab(id_level_sizes: tuple[int, ...]) -> t2t_vocab.IdOnlyVocab:
  return t2t_vocab.IdOnlyVocab(id_level_sizes)


def output_vocab(spm_path: str, table: IdTable, input_tokenizer: str | None = None) -> t2t_vocab.TextAndIdVocab:
  """The targets vocabulary: SentencePiece + ID tokens (shared with T5's inputs), or ID tokens only
  when the encoder has its own vocabulary and the IDs are not text."""
  if input_tokenizer is not None and not table.is_text:
    return _id_only_vocab(tuple(table.level_sizes))
  return text_and_id_vocab(spm_path, tuple(table.level_sizes))
