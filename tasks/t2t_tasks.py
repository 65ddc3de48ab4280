"""SeqIO Tasks: prompt -> ID tokens of a track, for every (dataset, ID strategy, prompt field).

Data root layout (docs/CONTRACTS.md):
  {root}/{dataset}/catalog.jsonl, playlists.jsonl, splits.json, meta.json   a dataset dir
  {root}/{dataset}/vocab/spm.model                                          its SentencePiece model
  {root}/{dataset}/ids/{strategy}/                                          ID tables (IdTable.save)
`register_tasks(root)` registers `t2t.{dataset}.{strategy}.{prompt_field}` for each of them (names
are sanitised to seqio's [\\w.:#] alphabet; '-' becomes '_').  The root comes from the argument or
the T2T_DATA_DIR environment variable.

Prompts are tokenized in Python with the task's SentencePiece model, once per playlist, by
`t2t_jax.data.examples.ExampleSource` (pure Python: `t2t_jax.data.batches.numpy_batches` makes the
same unpacked batches without TensorFlow).

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

import functools
import itertools
import os
import re
from typing import Iterator, Sequence

import seqio
import tensorflow as tf

from t2t_jax import storage
from t2t_jax.data import formats, prompts
from t2t_jax.data import vocab as t2t_vocab
from t2t_jax.data.examples import MISSING_IDS, ExampleSource, SourceStats, check_table  # noqa: F401
from t2t_jax.data.examples import load_table as _load_table
from t2t_jax.errors import UserInputError
from t2t_jax.ids.table import IdTable
from t2t_jax.models import pretrained
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


def task_name(dataset: str, strategy: str, prompt_field: str, input_vocab: str | None = None) -> str:
  """t2t.{dataset}.{strategy}.{prompt_field}[.{input_vocab}] (the suffix names a pretrained
  encoder's vocabulary, e.g. 'minilm')."""
  parts = (TASK_PREFIX, dataset, strategy, prompt_field) + ((input_vocab,) if input_vocab else ())
  return ".".join(_INVALID.sub("_", x) for x in parts)


def data_root(root: str | os.PathLike | None = None) -> str:
  root = root if root is not None else os.environ.get(ENV_DATA_DIR)
  if not root:
    raise UserInputError(f"no data root: pass data_root or set {ENV_DATA_DIR}")
  root = os.fspath(root)
  if not storage.isdir(root):
    raise UserInputError(f"data root {root} is not a directory ({ENV_DATA_DIR} or data_root)")
  return root


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


@functools.lru_cache(maxsize=64)
def get_vocabulary(spm_path: str, id_level_sizes: Sequence[int] = ()) -> vocabularies.TextAndIdVocabulary:
  return vocabularies.TextAndIdVocabulary(spm_path, tuple(id_level_sizes))


@functools.lru_cache(maxsize=8)
def get_wordpiece_vocabulary(tokenizer: str) -> vocabularies.WordPieceVocabulary:
  return vocabularies.WordPieceVocabulary(tokenizer)


@functools.lru_cache(maxsize=64)
def _id_only_vocabulary(id_level_sizes: tuple[int, ...]) -> vocabularies.IdOnlyVocabulary:
  return vocabularies.IdOnlyVocabulary(id_level_sizes)


def output_vocabulary(spm_path: str, table: IdTable, input_tokenizer: str | None = None):
  """The targets vocabulary: SentencePiece + ID tokens (shared with T5's inputs), or ID tokens only
  when the encoder has its own vocabulary and the IDs are not text."""
  if input_tokenizer is not None and not table.is_text:
    return _id_only_vocabulary(tuple(table.level_sizes))
  return get_vocabulary(spm_path, table.level_sizes)


# `input_vocab` values that name a pip-installed pretrained encoder's tokenizer.
INPUT_VOCAB_ALIASES = {"minilm": lambda: _minilm_dir(), "mpnet": lambda: _mpnet_dir()}


def _minilm_dir() -> str:
  return pretrained.minilm_dir()


def _mpnet_dir() -> str:
  return pretrained.mpnet_dir()


def resolve_input_vocab(input_vocab: str | None) -> str | None:
  """None (SentencePiece prompts) or the path of a Hugging Face tokenizer (dir / tokenizer.json)."""
  if input_vocab is None:
    return None
  if input_vocab in INPUT_VOCAB_ALIASES:
    return INPUT_VOCAB_ALIASES[input_vocab]()
  if not storage.exists(input_vocab):
    raise UserInputError(f"input_vocab {input_vocab!r}: neither a known alias "
                         f"({sorted(INPUT_VOCAB_ALIASES)}) nor a tokenizer path")
  return storage.local_copy(storage.abspath(input_vocab))  # opened by path: a URL is copied


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
  """Yields (dataset name, dataset dir, spm path, ids dir) for every complete setup under root
  (a local dir or a gs:// / s3:// prefix)."""
  for name in storage.listdir(root):
    ds_dir = storage.join(root, name)
    if name.startswith(".") or not storage.isfile(storage.join(ds_dir, formats.CATALOG_FILE)):
      continue
    spm_path = spm_override or storage.join(ds_dir, VOCAB_SUBDIR, SPM_FILE)
    ids_root = storage.join(ds_dir, IDS_SUBDIR)
    if not storage.isfile(spm_path) or not storage.isdir(ids_root):
      continue
    for strategy in storage.listdir(ids_root):
      ids_dir = storage.join(ids_root, strategy)
      if not strategy.startswith(".") and storage.isfile(storage.join(ids_dir, "meta.json")):
        yield name, ds_dir, spm_path, ids_dir


# Moved to t2t_jax.data.formats (the TensorFlow-free studies need it too); the name stays here.
dataset_prompt_max_chars = formats.dataset_prompt_max_chars


def register_task(name: str, dataset_dir: str, ids_dir: str, spm_path: str, prompt_field: str, *,
                  max_prompt_chars: int | None = None,
                  shuffle_buffer_size: int = SHUFFLE_BUFFER_SIZE, missing_ids: str = "raise",
                  augment: bool = False, input_vocab: str | None = None, indexing: str = "none",
                  indexing_share: float = 0.3) -> seqio.Task:
  """Registers (replacing) one task.

  The vocabulary is `spm_path`'s pieces plus the ID table's level sizes, for inputs and targets.
  With `input_vocab` (a pretrained encoder's tokenizer: an alias such as 'minilm' or a path) the
  inputs use that WordPiece vocabulary ([CLS] ... [SEP], no EOS) and the targets an ID-only
  vocabulary (or SentencePiece + IDs for text-valued IDs).  `indexing` / `indexing_share` add
  indexing examples to the training split (see `t2t_jax.data.examples.ExampleSource`).
  `max_prompt_chars` None: the dataset's meta.json `prompt_max_chars` (long conversational prompts,
  e.g. CPCD's 2048), else `prompts.DEFAULT_MAX_CHARS`.  Validation/test examples
  are scored by `postprocessors.ranking_metric_fn` (Hits/Recall/MAP/NDCG@K, MRR) after
  `postprocessors.postprocess_rows` maps decoded outputs (one or top-K beams) to ID-table rows.
  """
  if prompt_field not in PROMPT_FIELDS:
    raise UserInputError(f"prompt field must be one of {PROMPT_FIELDS}, got {prompt_field!r}")
  # Dataset and ID table stream from a bucket; SentencePiece opens its model by path (copied once).
  dataset_dir, ids_dir = storage.abspath(dataset_dir), storage.abspath(ids_dir)
  spm_path = storage.local_copy(storage.abspath(spm_path))
  table = _load_table(ids_dir)
  tokenizer = resolve_input_vocab(input_vocab)
  vocab = output_vocabulary(spm_path, table, tokenizer)
  if max_prompt_chars is None:
    max_prompt_chars = dataset_prompt_max_chars(dataset_dir)
  source = ExampleSource(dataset_dir, ids_dir, spm_path, prompt_field, max_prompt_chars,
                         missing_ids=missing_ids, augment=augment, input_tokenizer=tokenizer,
                         indexing=indexing, indexing_share=indexing_share)
  inputs_feature = (seqio.Feature(vocab, add_eos=True, dtype=tf.int32) if tokenizer is None else
                    seqio.Feature(get_wordpiece_vocabulary(tokenizer), add_eos=False, dtype=tf.int32))
  output_features = {
      "inputs": inputs_feature,
      "targets": seqio.Feature(vocab, add_eos=True, dtype=tf.int32),
  }
  seqio.TaskRegistry.remove(name)
  _SOURCES[name] = source
  return seqio.TaskRegistry.add(
      name,
      source=seqio.FunctionDataSource(functools.partial(_dataset_fn, source=source), splits=SPLITS),
      preprocessors=[seqio.CacheDatasetPlaceholder(), seqio.preprocessors.append_eos_after_trim],
      output_features=output_features,
      postprocess_fn=functools.partial(postprocessors.postprocess_rows, spm_path=spm_path, ids_dir=ids_dir,
                                       ids_only=isinstance(vocab, vocabularies.IdOnlyVocabulary)),
      metric_fns=[postprocessors.ranking_metric_fn],
      shuffle_buffer_size=shuffle_buffer_size,
  )


def register_tasks(data_root_dir: str | os.PathLike | None = None, *,
                   prompt_fields: Sequence[str] = PROMPT_FIELDS,
                   max_prompt_chars: int | None = None,
                   shuffle_buffer_size: int = SHUFFLE_BUFFER_SIZE,
                   spm_path: str | os.PathLike | None = None,
                   missing_ids: str = "raise", augment: bool = False,
                   input_vocab: str | None = None, indexing: str = "none",
                   indexing_share: float = 0.3) -> list[str]:
  """Registers every (dataset, strategy, prompt field) task under the data root; returns names.

  `input_vocab` (e.g. 'minilm'): tasks for a pretrained encoder's vocabulary, named
  `t2t.{dataset}.{strategy}.{field}.{input_vocab}`; `indexing`, `indexing_share` and
  `max_prompt_chars` (None: each dataset's meta.json) as in `register_task`.

  Also registers one Mixture per (dataset, strategy), `t2t.{dataset}.{strategy}.all`, mixing the
  prompt fields in equal rates.  `spm_path` replaces every dataset's vocab/spm.model with a user's
  SentencePiece model (e.g. flan-T5's spiece.model; PAD/EOS/UNK must be 0/1/2); ID tokens are
  appended after its pieces.  `augment` also registers `t2t.{dataset}.{strategy}.{field}_aug` whose
  training prompts are wrapped in request templates (evaluation identical to the plain task).
  """
  root = data_root(data_root_dir)
  if spm_path is not None:
    spm_path = storage.local_copy(storage.abspath(spm_path))
    t2t_vocab.load_sentencepiece(spm_path)  # Checked once, with a clear error, before registering.
  names = []
  for dataset, ds_dir, spm, ids_dir in _discover(root, spm_path):
    strategy = storage.basename(ids_dir)
    field_names = []
    for field in prompt_fields:
      name = task_name(dataset, strategy, field, input_vocab)
      register_task(name, ds_dir, ids_dir, spm, field, max_prompt_chars=max_prompt_chars,
                    shuffle_buffer_size=shuffle_buffer_size, missing_ids=missing_ids,
                    input_vocab=input_vocab, indexing=indexing, indexing_share=indexing_share)
      field_names.append(name)
    names.extend(field_names)
    if augment:
      for field in prompt_fields:
        name = task_name(dataset, strategy, field + "_aug", input_vocab)
        register_task(name, ds_dir, ids_dir, spm, field, max_prompt_chars=max_prompt_chars,
                      shuffle_buffer_size=shuffle_buffer_size, missing_ids=missing_ids, augment=True,
                      input_vocab=input_vocab)
        names.append(name)
    if len(field_names) > 1:
      mix = task_name(dataset, strategy, "all", input_vocab)
      seqio.MixtureRegistry.remove(mix)
      seqio.MixtureRegistry.add(mix, [(n, 1.0) for n in field_names])
      names.append(mix)
  if not names:
    raise UserInputError(
        f"no tasks under data root {root}: expected {{dataset}}/{formats.CATALOG_FILE}, "
        f"{{dataset}}/{VOCAB_SUBDIR}/{SPM_FILE} and {{dataset}}/{IDS_SUBDIR}/{{strategy}}/meta.json")
  return names
