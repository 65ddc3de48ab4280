"""Tests for tasks/vocabularies.py: the seqio vocabulary over text pieces + ID tokens."""


import pytest

tf = pytest.importorskip("tensorflow")
seqio = pytest.importorskip("seqio")

from t2t_jax.data import vocab  # noqa: E402
from tasks import vocabularies  # noqa: E402

@pytest.fixture(scope="module")
def root(tiny_data_root):
  root, ds = tiny_data_root
  return root, ds, None


def test_vocabulary_layout(root):
  r, _, _ = root
  spm_path = str(r / "tiny-syn" / "vocab" / "spm.model")
  v = vocabularies.TextAndIdVocabulary(spm_path, (8, 8, 2))
  py = vocab.TextAndIdVocab(spm_path, (8, 8, 2))
  assert v.vocab_size == py.vocab_size == py.text_vocab_size + 18
  assert (v.pad_id, v.eos_id, v.unk_id) == (0, 1, 2)
  text = "chill vibes"
  assert list(v.encode(text)) == py.encode(text) == v.encode_tf(tf.constant(text)).numpy().tolist()
  ids = [py.id_token(0, 1), py.id_token(2, 1), 1, 7]
  assert v.decode(ids) == "<id_0_1><id_2_1>"  # ID tokens are not UNK'd by seqio
  assert v.decode_tf(tf.constant(ids)).numpy().decode() == "<id_0_1><id_2_1>"
  row2 = py.encode(text) + [1]
  width = max(len(ids), len(row2))
  batch = v.decode_tf(tf.constant([ids + [0] * (width - len(ids)), row2 + [0] * (width - len(row2))]))
  batch = batch.numpy().tolist()
  assert [b.decode() for b in batch] == ["<id_0_1><id_2_1>", text]
  import pickle
  assert pickle.loads(pickle.dumps(v)) == v


