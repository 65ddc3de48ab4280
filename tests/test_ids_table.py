"""Tests for t2t_jax.ids.table (IdTable contract, save/load, stats)."""

import json
import os

import numpy as np
import pytest

from t2t_jax.errors import UserInputError
from t2t_jax.ids.table import IdTable, id_stats


def _table():
  codes = np.array([[0, 1, 0], [0, 1, 1], [2, 0, 0], [1, 3, 0]], np.int32)
  return IdTable(strategy="semantic_rq", track_ids=["a", "b", "c", "d"], codes=codes,
                 level_sizes=(3, 4, 2), meta={"num_disambiguated": 2})


def test_properties_and_token_ids():
  t = _table()
  assert (t.num_tracks, t.num_levels, t.num_id_tokens) == (4, 3, 9)
  tok = t.token_ids(100)
  # token(l, c) = offset + sum(level_sizes[:l]) + c
  np.testing.assert_array_equal(tok[0], [100, 104, 107])
  np.testing.assert_array_equal(tok[3], [101, 106, 107])
  assert tok.dtype == np.int32


def test_text_table_is_zero_padded_and_offset_free():
  t = IdTable(strategy="content", track_ids=["x", "y"], codes=np.array([[5, 6, -1], [7, -1, -1]]),
              is_text=True)
  np.testing.assert_array_equal(t.token_ids(1000), [[5, 6, 0], [7, 0, 0]])
  assert t.num_id_tokens == 0
  np.testing.assert_array_equal(t.lengths, [2, 1])


def test_round_trip_save_load_and_row_of(tmp_path):
  t = _table()
  d = tmp_path / "ids" / "semantic_rq"
  t.save(d)
  assert sorted(os.listdir(d)) == [".t2t_output.json", "codes.npy", "meta.json", "stats.json", "track_ids.txt"]
  u = IdTable.load(d)
  np.testing.assert_array_equal(u.codes, t.codes)
  assert u.track_ids == t.track_ids and u.level_sizes == (3, 4, 2) and u.meta["num_disambiguated"] == 2
  inverse = u.row_of_codes()
  for r, tid in enumerate(u.track_ids):
    assert u.row_of(tid) == r
    assert inverse[tuple(u.codes[r])] == r
  stats = json.loads((d / "stats.json").read_text())
  assert stats["duplicate_ids"] == 0
  assert stats["levels"][0]["used"] == 3 and stats["levels"][1]["used"] == 3
  # Level 0 codes 0,0,2,1 -> entropy 1.5 bits.
  assert stats["levels"][0]["entropy_bits"] == pytest.approx(1.5)
  assert stats["prefix"][1]["tracks_sharing_prefix"] == 2


def test_bad_input_is_named():
  with pytest.raises(UserInputError, match="duplicate track id 'a'"):
    IdTable("s", ["a", "a"], np.zeros((2, 1), np.int32), (2,))
  with pytest.raises(UserInputError, match="3 code rows but 2 track ids"):
    IdTable("s", ["a", "b"], np.zeros((3, 1), np.int32), (2,))
  with pytest.raises(UserInputError, match="code 5 of track 'b' at level 0"):
    IdTable("s", ["a", "b"], np.array([[0], [5]]), (2,))
  with pytest.raises(UserInputError, match="not in the ID table"):
    _table().row_of("zzz")


def test_load_missing_file(tmp_path):
  _table().save(tmp_path / "t")
  os.remove(tmp_path / "t" / "codes.npy")
  with pytest.raises(UserInputError, match="missing codes.npy"):
    IdTable.load(tmp_path / "t")


def test_id_stats_counts_duplicates():
  t = IdTable("s", ["a", "b", "c"], np.array([[0, 1], [0, 1], [1, 0]]), (2, 2))
  assert id_stats(t)["duplicate_ids"] == 1


def test_most_popular_owners_and_decodable_rows(tmp_path):
  from t2t_jax.ids.table import most_popular_owners
  codes = np.array([[0, 1], [0, 1], [1, 0], [0, 1]], np.int32)
  unreachable, stats = most_popular_owners(codes, [2, 5, 1, 5])
  assert unreachable.tolist() == [0, 3]  # rows 1 and 3 tie at 5: the lower row owns (0, 1)
  assert stats == {"tracks_per_id": {"mean": 2.0, "max": 3}, "num_unreachable_tracks": 2}
  assert most_popular_owners(codes)[0].tolist() == [1, 3]  # no popularity: the lowest row owns
  t = IdTable("s", ["a", "b", "c", "d"], codes, (2, 2),
              meta={"collision_policy": "most_popular", "unreachable_rows": [0, 3]})
  assert t.decodable_rows().tolist() == [1, 2]
  assert t.row_of_codes() == {(0, 1): 1, (1, 0): 2}
  t.save(tmp_path / "t")
  u = IdTable.load(tmp_path / "t")
  assert u.decodable_rows().tolist() == [1, 2]
  stats = json.loads((tmp_path / "t" / "stats.json").read_text())
  assert stats["num_unreachable_tracks"] == 2 and stats["tracks_per_id"] == {"mean": 2.0, "max": 3}
  assert stats["collision_policy"] == "most_popular"


def test_shared_ids_need_the_policy():
  codes = np.array([[0, 1], [0, 1], [1, 0]], np.int32)
  plain = IdTable("s", ["a", "b", "c"], codes, (2, 2))
  with pytest.raises(UserInputError, match="1 tracks share their ID"):
    plain.decodable_rows()
  assert _table().decodable_rows().tolist() == [0, 1, 2, 3]
  with pytest.raises(UserInputError, match="has 2 decodable rows, expected exactly 1"):
    IdTable("s", ["a", "b", "c"], codes, (2, 2), meta={"collision_policy": "most_popular", "unreachable_rows": []})
  with pytest.raises(UserInputError, match="has 0 decodable rows"):
    IdTable("s", ["a", "b", "c"], codes, (2, 2), meta={"collision_policy": "most_popular", "unreachable_rows": [0, 1]})
  with pytest.raises(UserInputError, match="unreachable_rows given but"):
    IdTable("s", ["a", "b", "c"], codes, (2, 2), meta={"unreachable_rows": [0]})
  with pytest.raises(UserInputError, match="collision_policy must be one of"):
    IdTable("s", ["a", "b", "c"], codes, (2, 2), meta={"collision_policy": "first"})
