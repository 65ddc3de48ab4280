"""From a SeqIO task or mixture to numpy batches (training) and example lists (evaluation).

`get_numpy_batches` is the seam the trainer codes against (docs/CONTRACTS.md): the task's examples
as seqio.get_dataset gives them (trimmed, shuffled with the seed, this host's seqio.ShardInfo shard),
converted to EncDecFeatureConverter's features (optionally packed; computed in numpy by default,
see feature_converter.py), in per-host batches of `batch_size // num_shards` rows.
`get_eval_examples` returns the held-out playlists of a task, one dict each, for the evaluation loop.
`indexed_batches` gives the same features from a single t2t task without tf.data: a checkpointable
iterator (`get_state` / `set_state`, t2t_jax.data.resumable) over a seeded permutation of the task's
examples per epoch, so training resumes at any step in O(1) instead of replaying the stream.  The
train entry uses it whenever it can (not for mixtures, augmented or cached tasks).

Task names not yet registered are looked up after `t2t_tasks.register_tasks()` on T2T_DATA_DIR.
"""

from __future__ import annotations

import os
from typing import Iterator, Mapping

import numpy as np
import seqio
import tensorflow as tf

from t2t_jax.data import batches as batches_lib
from t2t_jax.data import examples as examples_lib
from t2t_jax.data import resumable
from t2t_jax.errors import UserInputError
from tasks import feature_converter as feature_converter_lib
from tasks import t2t_tasks


_USER_ERROR = "UserInputError: "
ENV_CACHE_DIR = "T2T_SEQIO_CACHE_DIR"


def add_cache_dir(path: str) -> None:
  """Makes the output of SeqIO's cache job (cache_tasks_main --output_cache_dir) visible to tasks."""
  if not os.path.isdir(path):
    raise UserInputError(f"SeqIO cache dir {path} does not exist")
  if path not in seqio.get_global_cache_dirs():
    seqio.add_global_cache_dirs([path])


def _numpy_iter(ds: tf.data.Dataset):
  """ds.as_numpy_iterator(), turning a UserInputError raised inside a generator back into one."""
  it = ds.as_numpy_iterator()
  while True:
    try:
      yield next(it)
    except StopIteration:
      return
    except tf.errors.OpError as e:
      message = e.message or ""
      if _USER_ERROR in message:
        raise UserInputError(message.split(_USER_ERROR, 1)[1].split("\n", 1)[0]) from None
      raise


def _provider(name: str):
  provider = _lookup(name)
  t2t_tasks.prepare(provider.name)
  return provider


def _lookup(name: str):
  try:
    return seqio.get_mixture_or_task(name)
  except ValueError:
    pass
  try:
    t2t_tasks.register_tasks()
  except UserInputError as e:
    raise UserInputError(f"unknown task or mixture {name!r}; registering from the data root failed: {e}") from None
  try:
    return seqio.get_mixture_or_task(name)
  except ValueError:
    known = sorted(n for n in seqio.TaskRegistry.names() if n.startswith(t2t_tasks.TASK_PREFIX + "."))
    raise UserInputError(f"unknown task or mixture {name!r}; registered: {known}") from None


def vocab_size(mixture_or_task_name: str, feature: str = "targets") -> int:
  """The vocabulary size of a task's (or mixture's) output feature `feature`."""
  return int(_lookup(mixture_or_task_name).output_features[feature].vocabulary.vocab_size)


def get_numpy_batches(mixture_or_task_name: str, *, split: str, task_feature_lengths: Mapping[str, int],
                      batch_size: int, shuffle: bool = True, seed: int = 0, shard_index: int = 0,
                      num_shards: int = 1, pack: bool = False, num_epochs: int | None = None,
                      use_cached: bool = False,
                      feature_converter: str = "numpy") -> Iterator[dict[str, np.ndarray]]:
  """Yields dicts of int32 arrays [batch_size // num_shards, length].

  Keys: encoder_input_tokens, decoder_input_tokens, decoder_target_tokens, decoder_loss_weights
  (+ encoder/decoder _segment_ids and _positions when `pack`).  `num_epochs=None` repeats forever.
  `use_cached` reads the output of SeqIO's cache job (tools: seqio cache_tasks_main).
  `feature_converter`: "numpy" (default) builds seqio.EncDecFeatureConverter's exact output in numpy
  (tasks/feature_converter.py: ~2x faster packed on CPU); "seqio" runs seqio.get_dataset with
  seqio.EncDecFeatureConverter itself.  Both give the same batches for the same seed.
  """
  if feature_converter not in ("numpy", "seqio"):
    raise UserInputError(f"feature_converter must be 'numpy' or 'seqio', got {feature_converter!r}")
  batches_lib.check_batch_args(batch_size=batch_size, shard_index=shard_index, num_shards=num_shards,
                               task_feature_lengths=task_feature_lengths)
  provider = _provider(mixture_or_task_name)
  if use_cached:
    if os.environ.get(ENV_CACHE_DIR):
      add_cache_dir(os.environ[ENV_CACHE_DIR])
    tasks = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
    for task in tasks:
      if not task.cache_dir:
        raise UserInputError(f"use_cached=True but task {task.name!r} has no SeqIO cache in "
                             f"{seqio.get_global_cache_dirs()}; run seqio's cache_tasks_main (tasks/register_env.py)")
  lengths = {"inputs": int(task_feature_lengths["inputs"]), "targets": int(task_feature_lengths["targets"])}
  shard_info = seqio.ShardInfo(index=shard_index, num_shards=num_shards)
  per_host = batch_size // num_shards
  if feature_converter == "seqio":
    ds = seqio.get_dataset(
        provider, task_feature_lengths=lengths, feature_converter=seqio.EncDecFeatureConverter(pack=pack),
        dataset_split=split, use_cached=use_cached, shuffle=shuffle, num_epochs=num_epochs,
        shard_info=shard_info, verbose=False, seed=seed)
    ds = ds.batch(per_host, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    for batch in _numpy_iter(ds):
      yield {k: np.asarray(v, np.int32) for k, v in batch.items()}
    return
  # The same examples seqio.get_dataset would hand to the converter (trimmed, shuffled, sharded)...
  ds = provider.get_dataset(sequence_length=lengths, split=split, use_cached=use_cached, shuffle=shuffle,
                            seed=seed, shard_info=shard_info, num_epochs=num_epochs)
  # ...padded in chunks of whole packing groups (seqio packs max(lengths) examples at a time).
  chunk = max(lengths.values()) * max(1, -(-2 * per_host // max(lengths.values())))
  ds = ds.map(lambda ex: {"inputs": ex["inputs"], "targets": ex["targets"]}, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.padded_batch(chunk, padded_shapes={"inputs": [lengths["inputs"]], "targets": [lengths["targets"]]})
  ds = ds.prefetch(tf.data.AUTOTUNE)
  yield from feature_converter_lib.batches(_numpy_iter(ds), per_host, pack)


def _padded(token_lists, length: int, add_eos: bool = True) -> np.ndarray:
  """0-padded [N, length]; with add_eos seqio's append_eos_after_trim, else a plain cut (WordPiece
  inputs carry their own [CLS] ... [SEP], like the task's add_eos=False feature)."""
  out = np.zeros((len(token_lists), length), np.int32)
  for i, toks in enumerate(token_lists):
    t = batches_lib.trim_eos(toks, length) if add_eos else np.asarray(toks, np.int32)[:length]
    out[i, :t.size] = t
  return out


def indexed_batches(mixture_or_task_name: str, *, split: str, task_feature_lengths: Mapping[str, int],
                    batch_size: int, shuffle: bool = True, seed: int = 0, shard_index: int = 0,
                    num_shards: int = 1, pack: bool = False, num_epochs: int | None = None,
                    pad_final: bool = False,
                    targets_per_prompt: int = 1) -> resumable.IndexedBatches | None:
  """`get_numpy_batches`' features as a checkpointable, index-ordered iterator; None when the name
  is not a single t2t task with a fixed prompt per playlist (mixtures, `_aug` tasks): use
  `get_numpy_batches` then.

  Examples are those of the task (train: one per (playlist, track); validation/test: one per
  playlist, its first track), trimmed like seqio's append_eos_after_trim.  The order is a seeded
  permutation per epoch (not seqio's shuffle buffer); `pad_final` completes the last batch of a
  finite pass with zero-weight rows.  `targets_per_prompt` T > 1 (train split): multi-target
  batches of `batch_size / T` prompts, each with T target rows (a playlist's tracks in chunks of
  T; the last chunk padded with zero-weight rows): the encoder runs once per prompt.
  """
  missing = {"inputs", "targets"} - set(task_feature_lengths)
  if missing:
    raise UserInputError(f"task_feature_lengths needs 'inputs' and 'targets', missing {sorted(missing)}")
  provider = _provider(mixture_or_task_name)
  source = t2t_tasks._SOURCES.get(provider.name)  # pylint: disable=protected-access
  if isinstance(provider, seqio.Mixture) or source is None or source.augment:
    return None
  lin, lt = int(task_feature_lengths["inputs"]), int(task_feature_lengths["targets"])
  eos_inputs = source.input_tokenizer is None
  if split == "train" and targets_per_prompt > 1:
    return _grouped_batches(source, lin, lt, eos_inputs, batch_size=batch_size, seed=seed,
                            shuffle=shuffle, shard_index=shard_index, num_shards=num_shards,
                            num_epochs=num_epochs, targets_per_prompt=targets_per_prompt)
  if split == "train":
    prompt_tokens, playlist_E, row_E, tokens_NxL = source.train_index()
    num = len(row_E)

    def examples_fn(ids):
      return (_padded([prompt_tokens[playlist_E[i]] for i in ids], lin, eos_inputs),
              _padded([examples_lib.strip_padding(tokens_NxL[row_E[i]]) for i in ids], lt))
  else:
    examples = list(source.examples(split))
    num = len(examples)

    def examples_fn(ids):
      return (_padded([examples[i]["inputs"] for i in ids], lin, eos_inputs),
              _padded([examples[i]["targets"] for i in ids], lt))
  if num == 0:
    raise UserInputError(f"split {split!r} of {mixture_or_task_name} has no examples")
  features_fn = (feature_converter_lib.packed_features if pack
                 else feature_converter_lib.unpacked_features)
  group = max(lin, lt)
  return resumable.IndexedBatches(
      num, examples_fn, features_fn, batch_size=batch_size, seed=seed, shuffle=shuffle,
      shard_index=shard_index, num_shards=num_shards, num_epochs=num_epochs, packed=pack,
      chunk_size=group * max(1, -(-2 * batch_size // group)), pad_final=pad_final)


def _grouped_batches(source, lin: int, lt: int, eos_inputs: bool, *, batch_size: int, seed: int,
                     shuffle: bool, shard_index: int, num_shards: int, num_epochs: int | None,
                     targets_per_prompt: int) -> resumable.IndexedBatches:
  """Multi-target training batches: each index is one (prompt, up to T tracks) group."""
  t = int(targets_per_prompt)
  if batch_size % t:
    raise UserInputError(f"BATCH_SIZE={batch_size} must be a multiple of TARGETS_PER_PROMPT={t}")
  prompt_tokens, playlist_E, row_E, tokens_NxL = source.train_index()
  starts = np.flatnonzero(np.r_[True, playlist_E[1:] != playlist_E[:-1]])
  ends = np.r_[starts[1:], len(playlist_E)]
  groups = [(s, min(s + t, e)) for s, e in zip(starts, ends) for s in range(s, e, t)]
  target_tokens = [examples_lib.strip_padding(tokens_NxL[r]) for r in row_E]

  def examples_fn(ids):
    inputs = _padded([prompt_tokens[playlist_E[groups[g][0]]] for g in ids], lin, eos_inputs)
    targets = np.zeros((len(ids) * t, lt), np.int32)
    for i, g in enumerate(ids):
      a, b = groups[g]
      targets[i * t:i * t + b - a] = _padded(target_tokens[a:b], lt)
    return inputs, targets

  return resumable.IndexedBatches(
      len(groups), examples_fn, feature_converter_lib.unpacked_features, batch_size=batch_size // t,
      seed=seed, shuffle=shuffle, shard_index=shard_index, num_shards=num_shards,
      num_epochs=num_epochs)


def get_eval_examples(task_name: str, split: str, *, max_examples: int | None = None,
                      use_cached: bool = False) -> list[dict]:
  """Held-out examples of a task, in file order (`use_cached` with a cache of several shards: the
  cache's order, so `max_examples` then takes other playlists than uncached).

  Each dict: `inputs` (int32 prompt tokens, EOS-terminated), `targets` (int32 ID tokens of the first
  track + EOS), `prompt` (str), `playlist_id` (str), `relevant_rows` (int32 ID-table rows).
  """
  if split == "train":
    raise UserInputError("get_eval_examples: use split 'validation' or 'test'")
  task = _provider(task_name)
  if not isinstance(task, seqio.Task):
    raise UserInputError(f"{task_name!r} is a mixture; evaluate its tasks one at a time")
  if use_cached and os.environ.get(ENV_CACHE_DIR):
    add_cache_dir(os.environ[ENV_CACHE_DIR])
  ds = task.get_dataset(sequence_length=None, split=split, shuffle=False, num_epochs=1,
                        try_in_mem_cache=False, use_cached=use_cached)
  if max_examples is not None:
    ds = ds.take(max_examples)
  out = []
  for ex in _numpy_iter(ds):
    out.append({
        "inputs": np.asarray(ex["inputs"], np.int32),
        "targets": np.asarray(ex["targets"], np.int32),
        "prompt": ex["prompt"].decode("utf-8"),
        "playlist_id": ex["playlist_id"].decode("utf-8"),
        "relevant_rows": np.asarray(ex["relevant_rows"], np.int32),
    })
  return out
