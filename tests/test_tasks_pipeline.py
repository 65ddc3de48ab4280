"""Tests for tasks/pipeline.py: numpy batches (determinism, sharding, packing, mixtures)."""

import itertools

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
seqio = pytest.importorskip("seqio")

from t2t_jax.errors import UserInputError  # noqa: E402
from t2t_jax.data import examples as examples_lib  # noqa: E402
from tasks import pipeline, t2t_tasks  # noqa: E402

LEN = {"inputs": 24, "targets": 4}


@pytest.fixture(scope="module")
def root(tiny_data_root):
  root, ds = tiny_data_root
  names = t2t_tasks.register_tasks(root, shuffle_buffer_size=32)
  return root, ds, names


def test_numpy_batches(root):
  kw = dict(split="train", task_feature_lengths=LEN, batch_size=4)
  a = next(pipeline.get_numpy_batches("t2t.tiny_syn.sem.title", seed=3, **kw))
  b = next(pipeline.get_numpy_batches("t2t.tiny_syn.sem.title", seed=3, **kw))
  c = next(pipeline.get_numpy_batches("t2t.tiny_syn.sem.title", seed=4, **kw))
  assert set(a) == {"encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens",
                    "decoder_loss_weights"}
  assert a["encoder_input_tokens"].shape == (4, 24) and a["decoder_target_tokens"].shape == (4, 4)
  assert all(v.dtype == np.int32 for v in a.values())
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(a["encoder_input_tokens"], c["encoder_input_tokens"])
  np.testing.assert_array_equal(a["decoder_input_tokens"][:, 1:], a["decoder_target_tokens"][:, :-1])
  assert (a["decoder_target_tokens"][:, -1] == 1).all()  # 3 ID tokens + EOS




def test_shards_partition_examples(root):
  kw = dict(split="train", task_feature_lengths=LEN, shuffle=False, num_epochs=1)
  whole = [tuple(r) for b in pipeline.get_numpy_batches("t2t.tiny_syn.sem.title", batch_size=1, **kw)
           for r in b["encoder_input_tokens"].tolist()]
  parts = []
  for i in range(2):
    got = list(pipeline.get_numpy_batches("t2t.tiny_syn.sem.title", batch_size=2, shard_index=i,
                                          num_shards=2, **kw))
    assert all(g["encoder_input_tokens"].shape == (1, 24) for g in got)
    parts.append([tuple(r) for g in got for r in g["encoder_input_tokens"].tolist()])
  assert sorted(parts[0] + parts[1]) == sorted(whole)
  with pytest.raises(UserInputError, match="multiple of num_shards"):
    next(pipeline.get_numpy_batches("t2t.tiny_syn.sem.title", batch_size=3, num_shards=2, **kw))




def test_packed_mixture(root):
  b = next(pipeline.get_numpy_batches("t2t.tiny_syn.sem.all", split="train", task_feature_lengths=LEN,
                                      batch_size=2, pack=True, seed=0))
  assert {"encoder_segment_ids", "encoder_positions", "decoder_segment_ids", "decoder_positions"} <= set(b)
  assert b["encoder_segment_ids"].max() >= 1




@pytest.mark.parametrize("name, pack", [
    ("t2t.tiny_syn.title.both", True),  # variable-length content IDs, trimmed inputs: the hard case
    pytest.param("t2t.tiny_syn.sem.title", True, marks=pytest.mark.slow),
    pytest.param("t2t.tiny_syn.title.both", False, marks=pytest.mark.slow)])
def test_numpy_converter_equals_seqio(root, name, pack):
  """The numpy feature converter reproduces seqio.EncDecFeatureConverter exactly (packed too)."""
  lengths = {"inputs": 12, "targets": 6} if "title.both" in name else LEN
  kw = dict(split="train", task_feature_lengths=lengths, batch_size=4, shuffle=True, seed=5, pack=pack,
            num_epochs=1)
  ours = list(itertools.islice(pipeline.get_numpy_batches(name, **kw), 12))
  ref = list(itertools.islice(pipeline.get_numpy_batches(name, feature_converter="seqio", **kw), 12))
  assert len(ours) == len(ref) > 3
  for a, b in zip(ours, ref):
    assert set(a) == set(b)
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("pack", [False, True])
def test_indexed_batches_equal_the_seqio_task_in_file_order(root, pack):
  """The index-ordered reader gives the task's own examples: unshuffled, exactly its batches."""
  kw = dict(split="train", task_feature_lengths=LEN, batch_size=4, shuffle=False, num_epochs=1, pack=pack)
  ref = list(pipeline.get_numpy_batches("t2t.tiny_syn.sem.title", **kw))
  ours = pipeline.indexed_batches("t2t.tiny_syn.sem.title", **kw)
  got = list(ours)
  assert len(got) == len(ref) > 5
  for a, b in zip(got, ref):
    assert set(a) == set(b)
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  assert pipeline.indexed_batches("t2t.tiny_syn.sem.all", **kw) is None  # mixtures: get_numpy_batches
  val = list(pipeline.indexed_batches("t2t.tiny_syn.sem.title", split="validation", task_feature_lengths=LEN,
                                      batch_size=64, shuffle=False, num_epochs=1, pad_final=True))
  n = len(pipeline.get_eval_examples("t2t.tiny_syn.sem.title", "validation"))
  assert len(val) == 1 and int((val[0]["decoder_loss_weights"].sum(1) > 0).sum()) == n < 64


def test_multi_target_batches_group_each_playlists_tracks(root):
  """TARGETS_PER_PROMPT: one encoder row per (playlist, up to T tracks) group, T decoder rows each;
  over an epoch every (playlist, track) example appears exactly once."""
  r, ds, _ = root
  t = 4
  it = pipeline.indexed_batches("t2t.tiny_syn.sem.title", split="train", task_feature_lengths=LEN,
                                batch_size=8, shuffle=True, seed=1, num_epochs=1,
                                targets_per_prompt=t)
  source = t2t_tasks.task_source("t2t.tiny_syn.sem.title")
  prompt_tokens, playlist_E, row_E, tokens_NxL = source.train_index()
  want = {}
  for p, rr in zip(playlist_E, row_E):
    key = tuple(prompt_tokens[p].tolist()) + (1,)
    want.setdefault(key, []).append(tuple(examples_lib.strip_padding(tokens_NxL[rr]).tolist()))
  got = {}
  for batch in it:
    assert batch["encoder_input_tokens"].shape == (2, LEN["inputs"])
    assert batch["decoder_target_tokens"].shape == (8, LEN["targets"])
    for g in range(2):
      enc = batch["encoder_input_tokens"][g]
      key = tuple(enc[enc > 0].tolist())
      for row in batch["decoder_target_tokens"][g * t:(g + 1) * t]:
        if row.any():
          got.setdefault(key, []).append(tuple(row[row > 1].tolist()))
  assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v) for k, v in want.items()}
  with pytest.raises(UserInputError, match="multiple of TARGETS_PER_PROMPT"):
    pipeline.indexed_batches("t2t.tiny_syn.sem.title", split="train", task_feature_lengths=LEN,
                             batch_size=6, targets_per_prompt=4)
