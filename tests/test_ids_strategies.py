"""Tests for t2t_jax.ids.strategies: content and integer IDs, the one build_ids interface."""

import json

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


def _chars(text):
  """Toy text vocabulary: one token per character (3 + code point), so decoding is exact."""
  return [3 + ord(ch) for ch in text]


def _unchars(codes):
  return "".join(chr(c - 3) for c in codes if c >= 0)


def test_artist_iid_track_seq_hand_computed():
  ids = [f"t{i}" for i in range(6)]
  artists = ["B", "A", "B", "C", "A", "B"]
  pop = [1, 5, 3, 0, 5, 3]  # artist popularity: A 10, B 7, C 0
  t = strategies.build_ids("artist_iid_track_seq", track_ids=ids, artists=artists, popularity=pop, max_artists=2)
  # A -> 0, B -> 1, C shares the one "other" token 2; rank inside the token by popularity, ties by row.
  np.testing.assert_array_equal(t.codes, [[1, 2], [0, 0], [1, 0], [2, 0], [0, 1], [1, 1]])
  assert t.level_sizes == (3, 3) and not t.is_text and t.num_duplicate_ids() == 0
  assert t.meta["artist_tokens"] == ["A", "B"] and t.meta["stats"]["num_other_artists"] == 1
  # max_seq=2: ranks 0..2 spill into two base-2 levels (first level sized ceil(3 / 2) = 2).
  s = strategies.build_ids("artist_iid_track_seq", track_ids=ids, artists=artists, popularity=pop, max_artists=2,
                           max_seq=2)
  np.testing.assert_array_equal(s.codes, [[1, 1, 0], [0, 0, 0], [1, 0, 0], [2, 0, 0], [0, 0, 1], [1, 0, 1]])
  assert s.level_sizes == (3, 2, 2)
  # No popularity: artists by number of tracks (B 3, A 2, C 1), tracks in catalog order.
  u = strategies.build_ids("artist_iid_track_seq", track_ids=ids, artists=artists)
  np.testing.assert_array_equal(u.codes, [[0, 0], [1, 0], [0, 1], [2, 0], [1, 1], [0, 2]])
  # Ties between artists go by name; rare artists hash into num_other_tokens tokens (CRC32 of the name).
  import zlib
  v = strategies.build_ids("artist_iid_track_seq", track_ids=["a", "b", "c", "d"], artists=["Zed", "Abe", "Kim", "Lou"],
                           popularity=[1, 1, 0, 0], max_artists=2, num_other_tokens=3)
  assert v.codes[:, 0].tolist() == [1, 0, 2 + zlib.crc32(b"Kim") % 3, 2 + zlib.crc32(b"Lou") % 3]
  assert v.level_sizes[0] == 5
  with pytest.raises(UserInputError, match="one artist per track"):
    strategies.build_ids("artist_iid_track_seq", track_ids=ids, artists=artists[:2])
  with pytest.raises(UserInputError, match="max_seq must be an integer >= 2"):
    strategies.build_ids("artist_iid_track_seq", track_ids=ids, artists=artists, max_seq=1)
  with pytest.raises(UserInputError, match="popularity must be 6 non-negative counts"):
    strategies.build_ids("artist_iid_track_seq", track_ids=ids, artists=artists, popularity=[1, 2])


def test_artist_int_track_seq_text_ids():
  ids = ["x", "y", "z", "w"]
  t = strategies.build_ids("artist_int_track_seq", track_ids=ids, artists=["B", "A", "B", "B"],
                           popularity=[1, 5, 3, 3], encode_fn=_chars, seed=3)
  assert t.is_text and t.level_sizes == () and t.num_id_tokens == 0 and t.num_duplicate_ids() == 0
  texts = [_unchars(row) for row in t.codes.tolist()]
  a_int = {texts[1].split("_")[0]}
  b_int = {s.split("_")[0] for s in (texts[0], texts[2], texts[3])}
  assert len(b_int) == 1 and sorted(a_int | b_int) == ["1000", "1001"]  # a random integer per artist
  # B's tracks by popularity (row 2 and 3 tie: lower row first): z 1000, w 1001, x 1002; A's y 1000.
  assert [s.split("_")[1] for s in texts] == ["1002", "1000", "1000", "1001"]
  again = strategies.build_ids("artist_int_track_seq", track_ids=ids, artists=["B", "A", "B", "B"],
                               popularity=[1, 5, 3, 3], encode_fn=_chars, seed=3)
  np.testing.assert_array_equal(t.codes, again.codes)
  with pytest.raises(UserInputError, match="encode to the same tokens"):  # a vocabulary without digits
    strategies.build_ids("artist_int_track_seq", track_ids=ids, artists=["B", "A", "B", "B"],
                         encode_fn=lambda s: [2 if c.isdigit() else 7 for c in s])
  with pytest.raises(UserInputError, match="needs encode_fn"):
    strategies.build_ids("artist_int_track_seq", track_ids=ids, artists=["B", "A", "B", "B"])


def test_integer_text_digits():
  ids = [f"t{i}" for i in range(13)]
  t = strategies.build_ids("integer", track_ids=ids, text_digits=True, encode_fn=_chars)
  assert t.is_text and t.level_sizes == () and t.num_id_tokens == 0
  assert [_unchars(r) for r in t.codes.tolist()] == [str(i) for i in range(13)]
  np.testing.assert_array_equal(t.lengths, [1] * 10 + [2] * 3)
  r = strategies.build_ids("integer", track_ids=ids, order="random", seed=1, text_digits=True, encode_fn=_chars)
  values = sorted(int(_unchars(x)) for x in r.codes.tolist())
  assert values == list(range(13)) and r.num_duplicate_ids() == 0
  with pytest.raises(UserInputError, match="drop base=10"):
    strategies.build_ids("integer", track_ids=ids, text_digits=True, base=10, encode_fn=_chars)
  with pytest.raises(UserInputError, match="need encode_fn"):
    strategies.build_ids("integer", track_ids=ids, text_digits=True)


def test_semantic_most_popular_policy_and_embedding_info(tmp_path):
  rng = np.random.default_rng(0)
  base = rng.normal(size=(20, 4)).astype(np.float32)
  emb = np.concatenate([base, base[:5]])  # rows 20..24 duplicate rows 0..4: same ID whatever the codebooks
  ids = [f"t{i}" for i in range(25)]
  pop = np.zeros(25, np.int64)
  pop[[20, 21]] = 3  # the duplicates of rows 0 and 1 are more popular
  t = strategies.build_ids("semantic_rq", track_ids=ids, embeddings=emb, level_sizes=(4, 4), iterations=5,
                           collisions="most_popular", popularity=pop,
                           embedding_info={"source": "svd", "cold_start": {"num_cold": 2}})
  assert t.level_sizes == (4, 4) and t.collision_policy == "most_popular"
  unreachable = set(t.meta["unreachable_rows"])
  assert {0, 1, 22, 23, 24} <= unreachable and not {20, 21, 2, 3, 4} & unreachable
  assert set(t.decodable_rows().tolist()) == set(range(25)) - unreachable
  inverse = t.row_of_codes()
  assert inverse[tuple(t.codes[0])] == 20 and inverse[tuple(t.codes[2])] == 2
  t.save(tmp_path / "t")
  stats = json.loads((tmp_path / "t" / "stats.json").read_text())
  assert stats["num_unreachable_tracks"] == len(unreachable) and stats["tracks_per_id"]["max"] >= 2
  assert stats["cold_start"] == {"num_cold": 2} and IdTable.load(tmp_path / "t").meta["embedding"]["source"] == "svd"
  with pytest.raises(UserInputError, match="adds no disambiguation level"):
    strategies.build_ids("semantic_rq", track_ids=ids, embeddings=emb, level_sizes=(4, 4),
                         collisions="most_popular", disambiguation=True)
  with pytest.raises(UserInputError, match="collisions must be one of"):
    strategies.build_ids("semantic_rq", track_ids=ids, embeddings=emb, level_sizes=(4, 4), collisions="first")


def test_semantic_dict_through_build_ids():
  rng = np.random.default_rng(1)
  emb = rng.normal(size=(120, 6)).astype(np.float32)
  ids = [f"t{i}" for i in range(120)]
  t = strategies.build_ids("semantic_dict", track_ids=ids, embeddings=emb, dict_size=8, num_nonzero=3, max_iter=2,
                           disambiguation="auto")
  assert t.strategy == "semantic_dict" and t.level_sizes[:3] == (16, 16, 16) and t.num_duplicate_ids() == 0
  atoms = t.codes[:, :3] % 8
  assert all(len(set(row)) == 3 for row in atoms.tolist())  # distinct atoms per ID
  again = strategies.build_ids("semantic_dict", track_ids=ids, embeddings=emb, dict_size=8, num_nonzero=3,
                               max_iter=2, disambiguation="auto")
  np.testing.assert_array_equal(t.codes, again.codes)
