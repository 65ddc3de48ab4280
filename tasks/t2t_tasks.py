"""SeqIO Tasks: prompt -> ID tokens of a track, for every (dataset, ID strategy, prompt field).

Data root layout (docs/CONTRACTS.md):
  {root}/{dataset}/catalog.jsonl, playlists.jsonl, splits.json, meta.json   a dataset dir
  {root}/{dataset}/vocab/spm.model                                          its SentencePiece model
  {root}/{dataset}/ids/{strategy}/                                          ID tables (IdTable.save)
`register_tasks(root)` registers `t2t.{dataset}.{strategy}.{prompt_field}` for each of them (names
are sanitised to seqio's [\\w.:#] alphabet; '-' becomes '_').  The root comes from the argument or
the T2T_DATA_DIR environment variable.

Prompts are tokenized in Python with the task's SentencePiece model, once per playlist.

Examples
  train:             one per (playlist, track): inputs = prompt tokens + EOS, targets = the track's
                     ID tokens + EOS; also `prompt` (str) and `playlist_id` (str).
  validation / test: one per held-out playlist: inputs, targets = its first track's ID tokens + EOS,
                     `relevant_rows` (int32 rows of all its tracks in the ID table, for metrics),
                     `prompt`, `playlist_id`.
Every catalog track must have an ID in the table (checked when the task's data is first loaded;
UserInputError names the count, the first tracks and the table dir), unless `missing_ids="skip"`.
Output features share one `TextAndIdVocabulary` (text pieces + ID tokens).  Validation/test
predictions are scored by `postprocessors.ranking_metric_fn` (Hits/Recall/MAP/NDCG@K, MRR).
Mixtures `t2t.{dataset}.{strategy}.all` mix the prompt fields; `augment=True` adds `..._aug` tasks.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import re
import threading
from typing import Iterator, Sequence

import numpy as np
import seqio
import tensorflow as tf

from t2t_jax.data import formats, prompts
from t2t_jax.data import vocab as t2t_vocab
from t2t_jax.errors import UserInputError
from t2t_jax.ids.table import IdTable
from tasks import postprocessors, vocabularies

ENV_DATA_DIR = "T2T_DATA_DIR"
TASK_PREFIX = "t2t"
VOCAB_SUBDIR = "vocab"
SPM_FILE = "spm.model"
IDS_SUBDIR = "ids"
PROMPT_FIELDS = prompts.FIELDS
SPLITS = formats.SPLITS
SHUFFLE_BUFFER_SIZE = 10_000
_INVALID = re.compile(r"[^\w.:#]")


def task_name(dataset: str, strategy: str, prompt_field: str) -> str:
  return ".".join(_INVALID.sub("_", x) for x in (TASK_PREFIX, dataset, strategy, prompt_field))


def mixture_name(dataset: str, strategy: str) -> str:
  """Mixture of all prompt fields of one (dataset, strategy)."""
  return task_name(dataset, strategy, "all")


def data_root(root: str | os.PathLike | None = None) -> str:
  root = root if root is not None else os.environ.get(ENV_DATA_DIR)
  if not root:
    raise UserInputError(f"no data root: pass data_root or set {ENV_DATA_DIR}")
  root = os.fspath(root)
  if not os.path.isdir(root):
    raise UserInputError(f"data root {root} is not a directory ({ENV_DATA_DIR} or data_root)")
  return root


MISSING_IDS = ("raise", "skip")


@dataclasses.dataclass
class SourceStats:
  """What an ExampleSource dropped under missing_ids="skip" (per pass over a split)."""
  tracks_without_id: int = 0
  playlists_without_id: int = 0


class ExampleSource:
  """Loads a dataset dir + ID table once and yields raw examples (prompts as strings).

  missing_ids: "raise" (default) stops at load time when a catalog track has no ID in the table,
  naming the count and the first such tracks; "skip" drops those tracks from training examples and
  relevance sets (and playlists left without any), counting them in `stats`.
  augment: wrap training prompts in `prompts.PROMPT_TEMPLATES` (a template drawn per playlist from
  the shuffle seed); evaluation prompts are never augmented.
  """

  def __init__(self, dataset_dir: str, ids_dir: str, spm_path: str, prompt_field: str,
               max_prompt_chars: int = prompts.DEFAULT_MAX_CHARS, *, missing_ids: str = "raise",
               augment: bool = False):
    if missing_ids not in MISSING_IDS:
      raise UserInputError(f"missing_ids must be one of {MISSING_IDS}, got {missing_ids!r}")
    self.dataset_dir = dataset_dir
    self.ids_dir = ids_dir
    self.spm_path = spm_path
    self.prompt_field = prompt_field
    self.max_prompt_chars = max_prompt_chars
    self.missing_ids = missing_ids
    self.augment = augment
    self.stats = SourceStats()
    self._lock = threading.Lock()
    self._loaded = None
    self._vocab = None
    self._train_index = None

  def _load(self):
    with self._lock:
      if self._loaded is None:
        dataset = _load_dataset(self.dataset_dir)
        table = _load_table(self.ids_dir)
        vocab = get_vocabulary(self.spm_path, table.level_sizes)
        check_table(table, vocab, dataset, self.ids_dir, missing_ids=self.missing_ids)
        self._vocab = vocab
        tokens_NxL = table.token_ids(vocab.id_token_offset)
        row_of = {t: r for r, t in enumerate(table.track_ids)}
        self._loaded = (dataset, row_of, tokens_NxL)
    return self._loaded

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
    # Text pieces only: a prompt that happens to contain "<id_l_c>" must not become ID tokens.
    return np.asarray(self._vocab.py_vocab.sp.EncodeAsIds(text), np.int32)

  def train_playlists(self, seed: int | None = None) -> Iterator[dict]:
    """One element per train playlist: its prompt tokens and the ID tokens of all its tracks.

    `targets` is int32 [num_tracks, L] (0-padded); tf.data expands it to one example per track.
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

  def train_index(self) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Training examples addressable by index, for resumable readers (tasks.pipeline.indexed_batches).

    Returns (prompt tokens per kept train playlist, in file order; playlist_E and row_E: example e is
    ID-table row row_E[e] of playlist playlist_E[e]; ID tokens [N, L] 0-padded).  Computed once.
    Not for `augment` sources (their prompts change per pass).
    """
    assert not self.augment, "augmented prompts are drawn per pass; use the tf.data reader"
    if self._train_index is None:
      dataset, row_of, tokens_NxL = self._load()
      prompt_tokens, playlist_E, row_E = [], [], []
      for p in dataset.playlists("train"):
        rows = self._rows(row_of, p)
        if rows:
          playlist_E.extend([len(prompt_tokens)] * len(rows))
          row_E.extend(rows)
          prompt_tokens.append(self._tokens(self._prompt(p)))
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
             "targets": _strip(tokens_NxL[rows[0]]), "relevant_rows": rows}

  def examples(self, split: str, seed: int | None = None) -> Iterator[dict]:
    if split == "train":
      return self.train_playlists(seed)
    if split in ("validation", "test"):
      return self.eval_examples(split)
    raise UserInputError(f"unknown split {split!r}; expected one of {SPLITS}")


_SOURCES: dict[str, ExampleSource] = {}


def prepare(mixture_or_task_name: str) -> None:
  """Loads and checks the data behind a task or mixture eagerly, in Python.

  Errors raised inside a tf.data generator reach the caller wrapped in TensorFlow errors; calling
  this first (pipeline.py does) surfaces a bad dataset or ID table as a plain UserInputError.
  """
  provider = seqio.get_mixture_or_task(mixture_or_task_name)
  tasks = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
  for task in tasks:
    source = _SOURCES.get(task.name)
    if source is not None:
      source._load()  # pylint: disable=protected-access


def task_source(task_name: str) -> ExampleSource:
  """The ExampleSource behind a registered t2t task (its dataset dir, ID table dir, SentencePiece)."""
  source = _SOURCES.get(task_name)
  if source is None:
    raise UserInputError(f"{task_name!r} is not a registered t2t task (known: {sorted(_SOURCES)[:10]})")
  return source


def check_table(table: IdTable, vocab: vocabularies.TextAndIdVocabulary, dataset: formats.Dataset,
                ids_dir: str, *, missing_ids: str = "raise") -> None:
  """Checks that an ID table fits a dataset and vocabulary; UserInputError naming what is wrong.

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


def _strip(tokens_L: np.ndarray) -> np.ndarray:
  return tokens_L[tokens_L > 0].astype(np.int32)


@functools.lru_cache(maxsize=8)
def _load_dataset(dataset_dir: str) -> formats.Dataset:
  return formats.Dataset.load(dataset_dir)


@functools.lru_cache(maxsize=32)
def _load_table(ids_dir: str) -> IdTable:
  return IdTable.load(ids_dir)


@functools.lru_cache(maxsize=64)
def get_vocabulary(spm_path: str, id_level_sizes: Sequence[int] = ()) -> vocabularies.TextAndIdVocabulary:
  return vocabularies.TextAndIdVocabulary(spm_path, tuple(id_level_sizes))


PLAYLIST_SIGNATURE = {
    "inputs": tf.TensorSpec([None], tf.int32),
    "prompt": tf.TensorSpec([], tf.string),
    "playlist_id": tf.TensorSpec([], tf.string),
    "targets": tf.TensorSpec([None, None], tf.int32),
}
EVAL_SIGNATURE = dict(PLAYLIST_SIGNATURE, targets=tf.TensorSpec([None], tf.int32),
                      relevant_rows=tf.TensorSpec([None], tf.int32))


def _explode(ex: dict) -> dict:
  """One playlist element -> a batch of its per-track examples (unbatched by the caller)."""
  n = tf.shape(ex["targets"])[0]
  return {"inputs": tf.tile(ex["inputs"][tf.newaxis], [n, 1]), "prompt": tf.fill([n], ex["prompt"]),
          "playlist_id": tf.fill([n], ex["playlist_id"]), "targets": ex["targets"]}


def _strip_targets(ex: dict) -> dict:
  ex = dict(ex)
  ex["targets"] = tf.boolean_mask(ex["targets"], ex["targets"] > 0)
  return ex


def _dataset_fn(split: str, shuffle_files: bool, seed: int | None = None, *, source: ExampleSource):
  """Examples as a tf.data.Dataset.

  Train: Python yields one element per playlist (prompt tokenized once); tf.data expands it to one
  example per track (map + unbatch), so the Python generator runs once per playlist, not per
  example.  With shuffle_files the playlists come in a random order drawn from (seed, pass number):
  deterministic for a seed, new on every pass (epoch); seqio's shuffle buffer then mixes examples.
  """
  if split != "train":
    return tf.data.Dataset.from_generator(lambda: source.examples(split), output_signature=EVAL_SIGNATURE)
  if shuffle_files:
    base = 0 if seed is None else int(seed)
    passes = itertools.count()
    gen = lambda: source.examples(split, seed=(base * 1_000_003 + next(passes)) % 2**63)
  else:
    gen = lambda: source.examples(split)
  ds = tf.data.Dataset.from_generator(gen, output_signature=PLAYLIST_SIGNATURE)
  return ds.map(_explode).unbatch().map(_strip_targets)


def _discover(root: str, spm_override: str | None = None) -> Iterator[tuple[str, str, str, str]]:
  """Yields (dataset name, dataset dir, spm path, ids dir) for every complete setup under root."""
  for name in sorted(os.listdir(root)):
    ds_dir = os.path.join(root, name)
    if name.startswith(".") or not os.path.isfile(os.path.join(ds_dir, formats.CATALOG_FILE)):
      continue
    spm_path = spm_override or os.path.join(ds_dir, VOCAB_SUBDIR, SPM_FILE)
    ids_root = os.path.join(ds_dir, IDS_SUBDIR)
    if not os.path.isfile(spm_path) or not os.path.isdir(ids_root):
      continue
    for strategy in sorted(os.listdir(ids_root)):
      ids_dir = os.path.join(ids_root, strategy)
      if not strategy.startswith(".") and os.path.isfile(os.path.join(ids_dir, "meta.json")):
        yield name, ds_dir, spm_path, ids_dir


def register_task(name: str, dataset_dir: str, ids_dir: str, spm_path: str, prompt_field: str, *,
                  max_prompt_chars: int = prompts.DEFAULT_MAX_CHARS,
                  shuffle_buffer_size: int = SHUFFLE_BUFFER_SIZE, missing_ids: str = "raise",
                  augment: bool = False) -> seqio.Task:
  """Registers (replacing) one task.

  The vocabulary is `spm_path`'s pieces plus the ID table's level sizes.  Validation/test examples
  are scored by `postprocessors.ranking_metric_fn` (Hits/Recall/MAP/NDCG@K, MRR) after
  `postprocessors.postprocess_rows` maps decoded outputs (one or top-K beams) to ID-table rows.
  """
  if prompt_field not in PROMPT_FIELDS:
    raise UserInputError(f"prompt field must be one of {PROMPT_FIELDS}, got {prompt_field!r}")
  dataset_dir, ids_dir, spm_path = (os.path.abspath(os.fspath(x)) for x in (dataset_dir, ids_dir, spm_path))
  table = _load_table(ids_dir)
  vocab = get_vocabulary(spm_path, table.level_sizes)
  source = ExampleSource(dataset_dir, ids_dir, spm_path, prompt_field, max_prompt_chars,
                         missing_ids=missing_ids, augment=augment)
  output_features = {
      "inputs": seqio.Feature(vocab, add_eos=True, dtype=tf.int32),
      "targets": seqio.Feature(vocab, add_eos=True, dtype=tf.int32),
  }
  seqio.TaskRegistry.remove(name)
  _SOURCES[name] = source
  return seqio.TaskRegistry.add(
      name,
      source=seqio.FunctionDataSource(functools.partial(_dataset_fn, source=source), splits=SPLITS),
      preprocessors=[seqio.CacheDatasetPlaceholder(), seqio.preprocessors.append_eos_after_trim],
      output_features=output_features,
      postprocess_fn=functools.partial(postprocessors.postprocess_rows, spm_path=spm_path, ids_dir=ids_dir),
      metric_fns=[postprocessors.ranking_metric_fn],
      shuffle_buffer_size=shuffle_buffer_size,
  )


def register_tasks(data_root_dir: str | os.PathLike | None = None, *,
                   prompt_fields: Sequence[str] = PROMPT_FIELDS,
                   max_prompt_chars: int = prompts.DEFAULT_MAX_CHARS,
                   shuffle_buffer_size: int = SHUFFLE_BUFFER_SIZE,
                   spm_path: str | os.PathLike | None = None,
                   missing_ids: str = "raise", augment: bool = False) -> list[str]:
  """Registers every (dataset, strategy, prompt field) task under the data root; returns names.

  Also registers one Mixture per (dataset, strategy), `t2t.{dataset}.{strategy}.all`, mixing the
  prompt fields in equal rates.  `spm_path` replaces every dataset's vocab/spm.model with a user's
  SentencePiece model (e.g. flan-T5's spiece.model; PAD/EOS/UNK must be 0/1/2); ID tokens are
  appended after its pieces.  `augment` also registers `t2t.{dataset}.{strategy}.{field}_aug` whose
  training prompts are wrapped in request templates (evaluation identical to the plain task).
  """
  root = data_root(data_root_dir)
  if spm_path is not None:
    spm_path = os.path.abspath(os.fspath(spm_path))
    t2t_vocab.load_sentencepiece(spm_path)  # Checked once, with a clear error, before registering.
  names = []
  for dataset, ds_dir, spm, ids_dir in _discover(root, spm_path):
    strategy = os.path.basename(ids_dir)
    field_names = []
    for field in prompt_fields:
      name = task_name(dataset, strategy, field)
      register_task(name, ds_dir, ids_dir, spm, field, max_prompt_chars=max_prompt_chars,
                    shuffle_buffer_size=shuffle_buffer_size, missing_ids=missing_ids)
      field_names.append(name)
    names.extend(field_names)
    if augment:
      for field in prompt_fields:
        name = task_name(dataset, strategy, field + "_aug")
        register_task(name, ds_dir, ids_dir, spm, field, max_prompt_chars=max_prompt_chars,
                      shuffle_buffer_size=shuffle_buffer_size, missing_ids=missing_ids, augment=True)
        names.append(name)
    if len(field_names) > 1:
      mix = mixture_name(dataset, strategy)
      seqio.MixtureRegistry.remove(mix)
      seqio.MixtureRegistry.add(mix, [(n, 1.0) for n in field_names])
      names.append(mix)
  if not names:
    raise UserInputError(
        f"no tasks under data root {root}: expected {{dataset}}/{formats.CATALOG_FILE}, "
        f"{{dataset}}/{VOCAB_SUBDIR}/{SPM_FILE} and {{dataset}}/{IDS_SUBDIR}/{{strategy}}/meta.json")
  return names
