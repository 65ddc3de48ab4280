"""Tests for t2t_jax.data.vocab: SentencePiece training (T5 ids) and the text + ID token layout."""

import os

import pytest

from t2t_jax.data import vocab
from t2t_jax.errors import UserInputError

TEXTS = ["chill vibes for studying", "rock classics", "sad songs 😢", "workout hype", "jazz for dinner",
         "케이팝 party", "90s hip hop", "relaxing piano"] * 20


@pytest.fixture(scope="module")
def spm_path(tmp_path_factory):
  path = tmp_path_factory.mktemp("vocab") / "spm.model"
  vocab.train_sentencepiece(iter(TEXTS), path, vocab_size=320)
  return str(path)


def test_t5_special_ids(spm_path):
  sp = vocab.load_sentencepiece(spm_path)
  assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)


def test_training_is_deterministic(spm_path, tmp_path):
  other = tmp_path / "again.model"
  vocab.train_sentencepiece(iter(TEXTS), other, vocab_size=320)
  assert open(spm_path, "rb").read() == other.read_bytes()


def test_layout(spm_path):
  v = vocab.TextAndIdVocab(spm_path, (8, 16, 4))
  V = v.text_vocab_size
  assert v.id_token_offset == V and v.vocab_size == V + 28 and v.num_id_tokens == 28
  assert v.id_token(0, 0) == V and v.id_token(0, 7) == V + 7
  assert v.id_token(1, 0) == V + 8 and v.id_token(2, 3) == V + 8 + 16 + 3
  assert v.level_and_code(V + 8 + 16 + 3) == (2, 3) and v.level_and_code(V + 9) == (1, 1)
  with pytest.raises(UserInputError, match="out of range"):
    v.id_token(1, 16)
  with pytest.raises(UserInputError, match="level 3"):
    v.id_token(3, 0)


def test_encode_decode(spm_path):
  v = vocab.TextAndIdVocab(spm_path, (8, 16))
  toks = v.encode("chill vibes for studying")
  assert toks and all(3 <= t < v.text_vocab_size for t in toks)
  assert v.decode(toks) == "chill vibes for studying"
  assert v.decode(v.encode("케이팝 😢 Ünïcode")) == "케이팝 😢 Ünïcode"  # byte fallback, no UNK
  ids = [v.id_token(0, 3), v.id_token(1, 15)]
  assert v.decode(ids + [1, 5, 6]) == "<id_0_3><id_1_15>"  # stops at EOS
  assert v.encode("<id_0_3><id_1_15>") == ids
  assert v.decode([0] + toks + [0]) == "chill vibes for studying"  # PAD dropped
  mixed = v.encode("rock <id_0_1>")
  assert mixed[-1] == v.id_token(0, 1) and v.decode(mixed) == "rock<id_0_1>"
  assert v.encode("") == []


def test_content_ids_add_no_tokens(spm_path):
  v = vocab.TextAndIdVocab(spm_path, ())
  assert v.vocab_size == v.text_vocab_size


def test_errors(tmp_path, spm_path):
  with pytest.raises(UserInputError, match="not found"):
    vocab.TextAndIdVocab(tmp_path / "missing.model")
  bad = tmp_path / "bad.model"
  bad.write_bytes(b"not a model")
  with pytest.raises(UserInputError, match="not a SentencePiece model"):
    vocab.TextAndIdVocab(bad)
  with pytest.raises(UserInputError, match="no non-empty texts"):
    vocab.train_sentencepiece(["", "  "], tmp_path / "e.model", vocab_size=300)
  with pytest.raises(UserInputError, match="too small"):
    vocab.train_sentencepiece(TEXTS, tmp_path / "s.model", vocab_size=100)
  assert not os.path.exists(tmp_path / "e.model")
  with pytest.raises(UserInputError, match="positive"):
    vocab.TextAndIdVocab(spm_path, (8, 0))


def test_wrong_special_ids(tmp_path):
  import sentencepiece as spm
  path = tmp_path / "bos.model"
  spm.SentencePieceTrainer.train(sentence_iterator=iter(TEXTS), model_prefix=str(tmp_path / "bos"),
                                 vocab_size=60, hard_vocab_limit=False, minloglevel=2)
  with pytest.raises(UserInputError, match="expected 0/1/2"):
    vocab.TextAndIdVocab(path)
