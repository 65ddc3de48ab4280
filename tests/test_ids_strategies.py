"""Tests for t2t_jax.ids.strategies: content and integer IDs, the one build_ids interface."""

import numpy as np
import pytest

from t2t_jax.errors import UserInputError
from t2t_jax.ids import strategies
from t2t_jax.ids.table import IdTable


def _encode(text):
  """Toy text vocabulary: one token per word, id = 3 + stable hash, so ids avoid PAD/EOS/UNK."""
  return [3 + sum(ord(ch) * 31 ** i for i, ch in enumerate(w)) % 1000 for w in text.split()]


def test_content_ids_are_text_unique_and_disambiguated(tmp_path):
  ids = ["a", "b", "c", "d"]
  artists = ["Abba", "Abba", "Queen", "Abba"]
  titles = ["Waterloo", "SOS", "Bohemian Rhapsody", "Waterloo"]
  t = strategies.build_ids("content", track_ids=ids, artists=artists, titles=titles, encode_fn=_encode)
  assert t.is_text and t.level_sizes == () and t.num_id_tokens == 0
  assert t.num_duplicate_ids() == 0
  assert t.meta["num_disambiguated"] == 1
  np.testing.assert_array_equal(t.codes[0, :3], _encode("Abba - Waterloo"))
  np.testing.assert_array_equal(t.codes[3, :4], _encode("Abba - Waterloo #2"))
  np.testing.assert_array_equal(t.lengths, [3, 3, 4, 4])
  assert (t.token_ids(999)[0] == [*_encode("Abba - Waterloo"), 0]).all()  # 0-padded, offset-free.
  t.save(tmp_path / "c")
  assert IdTable.load(tmp_path / "c").is_text


def test_content_ids_truncation_and_bad_encoder():
  t = strategies.build_content_ids(["x", "y"], ["A B C D", "A B C D"], ["E", "F"], _encode, max_len=3)
  assert t.codes.shape[1] == 3 and t.meta["num_truncated"] == 2 and t.num_duplicate_ids() == 0
  with pytest.raises(UserInputError, match="reserved/negative ids \\[1\\]"):
    strategies.build_content_ids(["x"], ["a"], ["b"], lambda s: [5, 1])
  with pytest.raises(UserInputError, match="2 track ids, 1 artists"):
    strategies.build_content_ids(["x", "y"], ["a"], ["b", "c"], _encode)
  with pytest.raises(UserInputError, match="needs artists, titles and encode_fn"):
    strategies.build_ids("content", track_ids=["x"])


def test_integer_ids():
  ids = [f"t{i}" for i in range(11)]
  atomic = strategies.build_ids("integer", track_ids=ids)
  assert atomic.level_sizes == (11,) and atomic.codes[:, 0].tolist() == list(range(11))
  digits = strategies.build_ids("integer", track_ids=ids, base=3)
  assert digits.level_sizes == (3, 3, 3)  # 3**2 = 9 < 11 <= 27
  np.testing.assert_array_equal(digits.codes[10], [1, 0, 1])  # 10 = 101 in base 3
  rnd = strategies.build_ids("integer", track_ids=ids, order="random", base=3, seed=4)
  again = strategies.build_ids("integer", track_ids=ids, order="random", base=3, seed=4)
  np.testing.assert_array_equal(rnd.codes, again.codes)
  assert rnd.num_duplicate_ids() == 0 and not np.array_equal(rnd.codes, digits.codes)
  exact = strategies.build_ids("integer", track_ids=[f"t{i}" for i in range(9)], base=3)
  assert exact.level_sizes == (3, 3)
  tok = digits.token_ids(100)
  np.testing.assert_array_equal(tok[10], [101, 103, 107])
  assert strategies.id_token_names(digits)[:4] == ["<id_0_0>", "<id_0_1>", "<id_0_2>", "<id_1_0>"]
  with pytest.raises(UserInputError, match="base must be an integer >= 2"):
    strategies.build_ids("integer", track_ids=ids, base=1)
  with pytest.raises(UserInputError, match="order must be"):
    strategies.build_ids("integer", track_ids=ids, order="shuffled")


def test_semantic_through_build_ids_and_unknown():
  rng = np.random.default_rng(0)
  emb = rng.normal(size=(200, 6)).astype(np.float32)
  ids = [f"t{i}" for i in range(200)]
  for name in ("semantic_rq", "semantic_hkmeans"):
    t = strategies.build_ids(name, track_ids=ids, embeddings=emb, level_sizes=(4, 4), iterations=5)
    assert t.strategy == name and t.num_duplicate_ids() == 0
    assert len(strategies.id_token_names(t)) == t.num_id_tokens
  with pytest.raises(UserInputError, match="needs embeddings"):
    strategies.build_ids("semantic_rq", track_ids=ids)
  with pytest.raises(UserInputError, match="unknown ID strategy 'atomic'"):
    strategies.build_ids("atomic", track_ids=ids)
