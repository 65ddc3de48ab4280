"""EncDecFeatureConverter's output, computed in numpy on padded chunks of examples.

Why not seqio.EncDecFeatureConverter directly: measured on this repo's tasks (tools/bench_data.py,
2-core CPU), the seqio converter runs per example in tf.data and its packing is a tf.while_loop
(seqio calls it "Slow"; the fast custom ops need tensor2tensor): 2.4k examples per CPU-second
packed, 4.5k unpacked, against 6.5k for the same task padded-batched without it.  Here the task's
examples are padded-batched in tf.data (one op per chunk) and the model features are built in numpy
with seqio's exact algorithm: greedy packing in chunks of max(feature lengths) examples, an
example's length = its count of non-zero tokens, segment ids from positions, decoder inputs shifted
right within segments.  tests/test_tasks_pipeline.py checks the output equals seqio's, packed and
unpacked.

Input: dicts with "inputs" [C, Lin] and "targets" [C, Lt] int32, 0-padded (already trimmed).
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

# Unpacked features have one home, the TensorFlow-free data path (re-exported: `unpacked_features`).
from t2t_jax.data.batches import unpacked_features

ENC, DEC = "inputs", "targets"


def _pack_rows(inputs_CxL: np.ndarray, targets_CxT: np.ndarray, lin: int, lt: int) -> list[list[int]]:
  """seqio's greedy packing of one chunk: lists of example indices, one list per packed row."""
  len_in = (inputs_CxL != 0).sum(axis=1).tolist()
  len_t = (targets_CxT != 0).sum(axis=1).tolist()
  rows, current, used_in, used_t = [], [], 0, 0
  for i, (a, b) in enumerate(zip(len_in, len_t)):
    if used_in + a > lin or used_t + b > lt:
      rows.append(current)
      current, used_in, used_t = [], 0, 0
    current.append(i)
    used_in += min(a, lin)
    used_t += min(b, lt)
  rows.append(current)
  return rows


def packed_features(inputs_CxL: np.ndarray, targets_CxT: np.ndarray) -> dict[str, np.ndarray]:
  """EncDecFeatureConverter(pack=True) features of a chunk (seqio packs max(Lin, Lt) examples at a time)."""
  lin, lt = inputs_CxL.shape[1], targets_CxT.shape[1]
  group = max(lin, lt)
  out_rows = []
  for start in range(0, inputs_CxL.shape[0], group):
    x, y = inputs_CxL[start:start + group], targets_CxT[start:start + group]
    for idx in _pack_rows(x, y, lin, lt):
      out_rows.append((x, y, idx))
  n = len(out_rows)
  f = {k: np.zeros((n, lin), np.int32) for k in ("encoder_input_tokens", "encoder_positions", "encoder_segment_ids")}
  f.update({k: np.zeros((n, lt), np.int32) for k in ("decoder_target_tokens", "decoder_positions",
                                                    "decoder_segment_ids", "decoder_input_tokens")})
  for r, (x, y, idx) in enumerate(out_rows):
    pin = pt = 0
    for seg, i in enumerate(idx, start=1):
      # Like seqio: an example's length is its number of non-zero tokens, taken as a prefix.
      a = int((x[i] != 0).sum())
      b = int((y[i] != 0).sum())
      f["encoder_input_tokens"][r, pin:pin + a] = x[i, :a]
      f["encoder_positions"][r, pin:pin + a] = np.arange(a)
      f["encoder_segment_ids"][r, pin:pin + a] = seg
      f["decoder_target_tokens"][r, pt:pt + b] = y[i, :b]
      f["decoder_positions"][r, pt:pt + b] = np.arange(b)
      f["decoder_segment_ids"][r, pt:pt + b] = seg
      if b > 1:
        f["decoder_input_tokens"][r, pt + 1:pt + b] = y[i, :b - 1]
      pin += a
      pt += b
  # seqio: segment ids are zero wherever the token is padding (even inside a row).
  f["encoder_segment_ids"] *= f["encoder_input_tokens"] != 0
  f["decoder_segment_ids"] *= f["decoder_target_tokens"] != 0
  f["decoder_loss_weights"] = (f["decoder_target_tokens"] != 0).astype(np.int32)
  return f


def batches(chunks: Iterable[dict[str, np.ndarray]], batch_size: int, pack: bool) -> Iterator[dict[str, np.ndarray]]:
  """Model-feature batches of exactly `batch_size` rows from padded chunks (the remainder is dropped)."""
  pending: list[dict[str, np.ndarray]] = []
  have = 0
  for chunk in chunks:
    feats = (packed_features if pack else unpacked_features)(chunk[ENC], chunk[DEC])
    pending.append(feats)
    have += next(iter(feats.values())).shape[0]
    if have < batch_size:
      continue
    merged = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
    total = have
    start = 0
    while total - start >= batch_size:
      yield {k: v[start:start + batch_size] for k, v in merged.items()}
      start += batch_size
    pending = [{k: v[start:] for k, v in merged.items()}] if start < total else []
    have = total - start
