"""Unpacked model batches from an `ExampleSource` in numpy: the TensorFlow-free data path.

`numpy_batches` gives what `tasks.pipeline.get_numpy_batches(..., pack=False)` gives (SeqIO task ->
EncDecFeatureConverter(pack=False)), computed in Python/numpy so that it runs where TensorFlow and
SeqIO are not installed (accelerator images): the same examples in the same order as the SeqIO
task with `shuffle=False` (tests/test_data_batches.py checks equality), the same trimming (inputs and
targets cut to length - 1, then EOS, as seqio's `append_eos_after_trim`; WordPiece inputs of a
pretrained encoder, which carry no EOS, are cut to length), the same example-level
sharding (example i of an epoch goes to shard i % num_shards, as seqio shards a FunctionDataSource)
and per-host batches of `batch_size // num_shards` rows; a last partial batch is dropped.

With a `seed`, each epoch reads the playlists in a seeded order (the one the SeqIO task uses for
that seed and pass) and mixes examples through a seeded shuffle buffer of `shuffle_buffer_size`;
that buffer is numpy's, so shuffled batches are not bit-identical to tf.data's.
Packing is not done here (use tasks/ for packed batches).
"""

from __future__ import annotations

import itertools
from typing import Iterator, Mapping

import numpy as np

from t2t_jax.data.examples import ExampleSource, strip_padding
from t2t_jax.data.vocab import EOS_ID
from t2t_jax.errors import UserInputError

SHUFFLE_BUFFER_SIZE = 10_000


def trim_eos(tokens, length: int) -> np.ndarray:
  """seqio append_eos_after_trim: the first length - 1 tokens (an array or a list), then EOS; int32."""
  return np.concatenate([np.asarray(tokens[:length - 1], np.int32), [EOS_ID]]).astype(np.int32)


def iter_examples(source: ExampleSource, split: str, *, seed: int | None = None,
                  epoch: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """(inputs, targets) token arrays of one pass over a split, before trimming and EOS.

  Train playlists are expanded to one example per track, in the playlist's track order.
  """
  pass_seed = None if seed is None else (int(seed) * 1_000_003 + epoch) % 2**63
  for ex in source.examples(split, seed=pass_seed):
    if split == "train":
      for row in ex["targets"]:
        yield ex["inputs"], strip_padding(row)
    else:
      yield ex["inputs"], ex["targets"]


def _shuffled(items, buffer_size: int, rng: np.random.Generator):
  """A shuffle buffer (tf.data.Dataset.shuffle's algorithm, numpy's random numbers)."""
  buffer = []
  for item in items:
    if len(buffer) < buffer_size:
      buffer.append(item)
      continue
    i = int(rng.integers(buffer_size))
    yield buffer[i]
    buffer[i] = item
  order = rng.permutation(len(buffer))
  for i in order:
    yield buffer[i]


def _examples(source, split, seed, shard_index, num_shards, num_epochs, shuffle_buffer_size):
  epochs = range(num_epochs) if num_epochs is not None else itertools.count()
  rng = np.random.default_rng([0 if seed is None else int(seed), 23])
  for epoch, _ in enumerate(epochs):
    it = (ex for i, ex in enumerate(iter_examples(source, split, seed=seed, epoch=epoch))
          if i % num_shards == shard_index)
    yield from (it if seed is None else _shuffled(it, shuffle_buffer_size, rng))


def check_batch_args(*, batch_size: int, shard_index: int, num_shards: int,
                     task_feature_lengths) -> None:
  """UserInputError for a bad shard, a batch that does not split over the shards, or feature lengths
  without 'inputs' and 'targets' (shared by every batch reader: here and tasks/pipeline.py)."""
  if num_shards < 1 or not 0 <= shard_index < num_shards:
    raise UserInputError(f"bad shard: shard_index={shard_index}, num_shards={num_shards}")
  if batch_size < 1 or batch_size % num_shards:
    raise UserInputError(f"batch_size={batch_size} must be a positive multiple of num_shards={num_shards}")
  missing = {"inputs", "targets"} - set(task_feature_lengths)
  if missing:
    raise UserInputError(f"task_feature_lengths needs 'inputs' and 'targets', missing {sorted(missing)}")


def numpy_batches(source: ExampleSource, *, split: str, task_feature_lengths: Mapping[str, int],
                  batch_size: int, seed: int | None = None, shard_index: int = 0, num_shards: int = 1,
                  num_epochs: int | None = None,
                  shuffle_buffer_size: int = SHUFFLE_BUFFER_SIZE) -> Iterator[dict[str, np.ndarray]]:
  """Yields dicts of int32 arrays [batch_size // num_shards, length] (EncDecFeatureConverter keys).

  Keys: encoder_input_tokens, decoder_input_tokens, decoder_target_tokens, decoder_loss_weights.
  `seed=None` reads the split in file order (= the SeqIO task with shuffle=False); `num_epochs=None`
  repeats forever.
  """
  check_batch_args(batch_size=batch_size, shard_index=shard_index, num_shards=num_shards,
                   task_feature_lengths=task_feature_lengths)
  lin, lt = int(task_feature_lengths["inputs"]), int(task_feature_lengths["targets"])
  if lin < 2 or lt < 2:
    raise UserInputError(f"task_feature_lengths must be >= 2 (room for EOS), got {dict(task_feature_lengths)}")
  per_host = batch_size // num_shards
  cut_inputs = trim_eos if source.input_tokenizer is None else (lambda t, n: t[:n].astype(np.int32))
  enc_BxL = np.zeros((per_host, lin), np.int32)
  tgt_BxT = np.zeros((per_host, lt), np.int32)
  n = 0
  for inputs, targets in _examples(source, split, seed, shard_index, num_shards, num_epochs,
                                   shuffle_buffer_size):
    x, y = cut_inputs(inputs, lin), trim_eos(targets, lt)
    enc_BxL[n, :x.size] = x
    tgt_BxT[n, :y.size] = y
    n += 1
    if n == per_host:
      yield unpacked_features(enc_BxL, tgt_BxT)
      enc_BxL = np.zeros_like(enc_BxL)
      tgt_BxT = np.zeros_like(tgt_BxT)
      n = 0


def unpacked_features(inputs_BxL: np.ndarray, targets_BxT: np.ndarray) -> dict[str, np.ndarray]:
  """EncDecFeatureConverter(pack=False) features of a 0-padded batch (tasks/feature_converter.py
  uses this one too)."""
  dec_in_BxT = np.zeros_like(targets_BxT)
  dec_in_BxT[:, 1:] = targets_BxT[:, :-1]
  return {"encoder_input_tokens": inputs_BxL.astype(np.int32, copy=False),
          "decoder_input_tokens": dec_in_BxT.astype(np.int32, copy=False),
          "decoder_target_tokens": targets_BxT.astype(np.int32, copy=False),
          "decoder_loss_weights": (targets_BxT != 0).astype(np.int32)}
