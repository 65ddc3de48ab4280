"""Tests for t2t_jax.data.resumable.IndexedBatches: deterministic index order, O(1) resume (packed
and unpacked), sharding, padded final batches."""

import itertools

import numpy as np
import pytest

from t2t_jax.data.resumable import IndexedBatches
from t2t_jax.errors import UserInputError
from tasks import feature_converter

N, LIN, LT = 37, 6, 4


def _examples(ids):
  """Example i: inputs [i+3, ..., EOS], targets [i+3, EOS] (distinct, variable length)."""
  inputs = np.zeros((len(ids), LIN), np.int32)
  targets = np.zeros((len(ids), LT), np.int32)
  for r, i in enumerate(ids):
    n = 1 + int(i) % (LIN - 1)
    inputs[r, :n] = int(i) + 3
    inputs[r, n] = 1
    targets[r, :2] = [int(i) + 3, 1]
  return inputs, targets


def _make(packed=False, **kw):
  features = feature_converter.packed_features if packed else feature_converter.unpacked_features
  kw.setdefault("batch_size", 4)
  return IndexedBatches(N, _examples, features, packed=packed, chunk_size=8, **kw)


def _ids(batch):
  return (batch["decoder_target_tokens"][:, 0] - 3).tolist()


def test_each_epoch_is_a_seeded_permutation():
  it = _make(seed=5)
  first = [i for b in itertools.islice(it, N // 4) for i in _ids(b)]
  assert len(set(first)) == len(first) == 36  # no example twice within an epoch
  again = [i for b in itertools.islice(_make(seed=5), N // 4) for i in _ids(b)]
  other = [i for b in itertools.islice(_make(seed=6), N // 4) for i in _ids(b)]
  assert first == again and first != other
  ordered = [i for b in itertools.islice(_make(shuffle=False), 3) for i in _ids(b)]
  assert ordered == list(range(12))


@pytest.mark.parametrize("packed", [False, True])
def test_set_state_resumes_exactly_where_the_stream_was(packed):
  it = _make(packed=packed, seed=1)
  for _ in range(23):  # several epochs in
    next(it)
  state = it.get_state()
  want = [next(it) for _ in range(5)]
  fresh = _make(packed=packed, seed=1)
  fresh.set_state(state)
  for a, b in zip(want, [next(fresh) for _ in range(5)]):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  if not packed:
    assert state == {"position": 23 * 4}
  with pytest.raises(UserInputError, match="does not fit"):
    _make(packed=not packed).set_state(state)


@pytest.mark.parametrize("packed", [False, True])
def test_shards_split_each_global_batch(packed):
  whole = _make(packed=packed, batch_size=8, seed=2)
  parts = [_make(packed=packed, batch_size=8, seed=2, shard_index=i, num_shards=2) for i in range(2)]
  for _ in range(6):
    full = next(whole)
    got = [next(p) for p in parts]
    for k in full:
      np.testing.assert_array_equal(full[k], np.concatenate([g[k] for g in got]), err_msg=k)


def test_pad_final_completes_the_last_batch_with_zero_weight_rows():
  batches = list(_make(shuffle=False, num_epochs=1, pad_final=True, batch_size=8))
  assert len(batches) == 5 and all(b["encoder_input_tokens"].shape == (8, LIN) for b in batches)
  last = batches[-1]
  assert _ids(last)[:5] == [32, 33, 34, 35, 36]
  assert (last["decoder_loss_weights"][5:] == 0).all() and (last["encoder_input_tokens"][5:] == 0).all()
  assert len(list(_make(shuffle=False, num_epochs=1, batch_size=8))) == 4  # dropped without it
  # A host whose rows of the final batch are all padding still yields a full (zero) batch.
  tail = list(_make(shuffle=False, num_epochs=1, pad_final=True, batch_size=16, shard_index=1,
                    num_shards=2))
  assert len(tail) == 3 and (tail[-1]["decoder_loss_weights"] == 0).all()
