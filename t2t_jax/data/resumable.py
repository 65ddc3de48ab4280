"""Checkpointable batch iterators over an index-addressable example set (resume without replay).

`IndexedBatches` reads examples 0..N-1 through `examples_fn(indices) -> (inputs_CxL, targets_CxT)`
(0-padded, EOS-terminated token arrays) in a deterministic order: the stream position p is example
`permutation(seed, epoch)[p % N]` of epoch `p // N` (the identity order when shuffle=False), so the
order is already a uniform shuffle and needs no shuffle buffer.  `get_state()` is a small JSON dict
and `set_state(state)` jumps there at once, whatever the step: a resumed run costs the same at step
10,000 as at step 100 (tools/: see docs/performance.md's resume figures).

Unpacked: global batch b is stream positions [b * B, (b + 1) * B); process `shard_index` takes its
`B / num_shards` rows of it.  Packed (`features_fn` packs): the stream is cut into chunks of
`chunk_size` examples, each packed greedily (seqio's algorithm, tasks/feature_converter.py) into
rows; global batch b is the next B packed rows and each process takes its share.  Every process
packs the whole chunk, so all processes agree on the rows without talking to each other; the state
is (oldest chunk with rows left, rows of it already used).

`pad_final=True` (evaluation, finite `num_epochs`): the last, partial batch is completed with
all-zero rows (zero loss weight) instead of being dropped, so a split smaller than one batch is
still evaluated.
"""

from __future__ import annotations

import collections
from typing import Callable

import numpy as np

from t2t_jax.errors import UserInputError

ExamplesFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
FeaturesFn = Callable[[np.ndarray, np.ndarray], dict]


class IndexedBatches:
  """Iterator of per-host feature batches with `get_state()` / `set_state(state)`."""

  def __init__(self, num_examples: int, examples_fn: ExamplesFn, features_fn: FeaturesFn, *,
               batch_size: int, seed: int = 0, shuffle: bool = True, shard_index: int = 0,
               num_shards: int = 1, num_epochs: int | None = None, packed: bool = False,
               chunk_size: int = 256, pad_final: bool = False):
    if num_examples < 1:
      raise UserInputError("no examples to read")
    if num_shards < 1 or not 0 <= shard_index < num_shards:
      raise UserInputError(f"bad shard: shard_index={shard_index}, num_shards={num_shards}")
    if batch_size < 1 or batch_size % num_shards:
      raise UserInputError(f"batch_size={batch_size} must be a positive multiple of "
                           f"num_shards={num_shards}")
    self.num_examples, self.batch_size = int(num_examples), int(batch_size)
    self.examples_fn, self.features_fn = examples_fn, features_fn
    self.seed, self.shuffle, self.num_epochs = int(seed or 0), shuffle, num_epochs
    self.shard_index, self.num_shards = shard_index, num_shards
    self.per_host = self.batch_size // num_shards
    self.packed, self.chunk_size, self.pad_final = packed, max(1, int(chunk_size)), pad_final
    self._perm_epoch, self._perm = None, None
    self.set_state({"position": 0} if not packed else {"chunk": 0, "skip": 0})

  # ---- order ----------------------------------------------------------------------------------

  @property
  def end(self) -> float:
    return float("inf") if self.num_epochs is None else self.num_epochs * self.num_examples

  def example_ids(self, start: int, stop: int) -> np.ndarray:
    """Example indices of stream positions [start, stop)."""
    pos = np.arange(start, stop, dtype=np.int64)
    out = np.empty(len(pos), np.int64)
    for epoch in np.unique(pos // self.num_examples):
      sel = pos // self.num_examples == epoch
      out[sel] = self._order(int(epoch))[pos[sel] % self.num_examples]
    return out

  def _order(self, epoch: int) -> np.ndarray:
    if not self.shuffle:
      return np.arange(self.num_examples, dtype=np.int64)
    if self._perm_epoch != epoch:
      self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
      self._perm_epoch = epoch
    return self._perm

  # ---- state ----------------------------------------------------------------------------------

  def get_state(self) -> dict:
    if not self.packed:
      return {"position": int(self._position)}
    if self._chunks:
      chunk, _, used = self._chunks[0]
      return {"chunk": int(chunk), "skip": int(used)}
    return {"chunk": int(self._next_chunk), "skip": 0}

  def set_state(self, state: dict) -> None:
    if not isinstance(state, dict) or ("position" in state) == self.packed:
      raise UserInputError(f"data iterator state {state!r} does not fit this "
                           f"{'packed' if self.packed else 'unpacked'} iterator")
    if not self.packed:
      self._position = int(state["position"])
      return
    self._chunks = collections.deque()
    self._next_chunk = int(state["chunk"])
    if state.get("skip"):
      if not self._load_chunk():
        raise UserInputError(f"data iterator state {state!r} is past the end of the data")
      self._chunks[0][2] = int(state["skip"])

  # ---- batches --------------------------------------------------------------------------------

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    return self._next_packed() if self.packed else self._next_unpacked()

  def _pad(self, feats: dict) -> dict:
    """Completes a partial (pad_final) batch with zero rows: zero tokens, zero loss weight."""
    got = _rows(feats)
    if got == self.per_host:
      return feats
    return {k: np.concatenate([v, np.zeros((self.per_host - got,) + v.shape[1:], v.dtype)])
            for k, v in feats.items()}

  def _next_unpacked(self) -> dict:
    start = self._position
    stop = start + self.batch_size
    if stop > self.end:
      if not self.pad_final or start >= self.end:
        raise StopIteration
      stop = int(self.end)
    lo = start + self.shard_index * self.per_host
    ids = self.example_ids(lo, max(lo, min(lo + self.per_host, stop)))
    self._position = start + self.batch_size
    if not len(ids):  # this host's rows of the final batch are all padding
      feats = self.features_fn(*self.examples_fn(self.example_ids(0, 1)))
      return {k: np.zeros((self.per_host,) + v.shape[1:], v.dtype) for k, v in feats.items()}
    return self._pad(self.features_fn(*self.examples_fn(ids)))

  def _load_chunk(self) -> bool:
    start = self._next_chunk * self.chunk_size
    if start >= self.end:
      return False
    stop = int(min(start + self.chunk_size, self.end))
    feats = self.features_fn(*self.examples_fn(self.example_ids(start, stop)))
    self._chunks.append([self._next_chunk, feats, 0])
    self._next_chunk += 1
    return True

  def _next_packed(self) -> dict:
    while sum(_rows(f) - used for _, f, used in self._chunks) < self.batch_size:
      if not self._load_chunk():
        break
    have = sum(_rows(f) - used for _, f, used in self._chunks)
    if have == 0 or (have < self.batch_size and not self.pad_final):
      raise StopIteration
    parts, need = [], self.batch_size
    while need and self._chunks:
      entry = self._chunks[0]
      take = min(need, _rows(entry[1]) - entry[2])
      parts.append({k: v[entry[2]:entry[2] + take] for k, v in entry[1].items()})
      entry[2] += take
      need -= take
      if entry[2] == _rows(entry[1]):
        self._chunks.popleft()
    lo = self.shard_index * self.per_host
    return self._pad({k: np.concatenate([p[k] for p in parts])[lo:lo + self.per_host]
                      for k in parts[0]})


def _rows(feats: dict) -> int:
  return next(iter(feats.values())).shape[0]
