"""Tests for t2t_jax.data.convert: CSV/Parquet catalogs and importing user files."""

import json
import os

import pytest

from t2t_jax.data import convert, formats
from t2t_jax.errors import UserInputError

GOOD = os.path.join(os.path.dirname(__file__), "data", "good")
TRACKS = [formats.Track("t1", "Ärtist, Inc.", 'Song "1"', "X", ("rock", "70s")),
          formats.Track("t2", "B", "タイトル", "", ()),
          formats.Track("t3", "C", "multi\nline", "Z", ("jazz",))]


@pytest.mark.parametrize("ext", ["csv", "parquet", "jsonl"])
def test_catalog_roundtrip(tmp_path, ext):
  path = tmp_path / f"cat.{ext}"
  writer = {"csv": convert.write_catalog_csv, "parquet": convert.write_catalog_parquet,
            "jsonl": formats.write_catalog}[ext]
  assert writer(path, TRACKS) == 3
  stats = formats.ReadStats()
  assert list(convert.read_any_catalog(path, stats=stats)) == TRACKS
  assert stats.read == 3


def test_csv_without_optional_columns(tmp_path):
  path = tmp_path / "c.tsv"
  path.write_text("track_id\tartist\ttitle\nt1\tA\tx\n", encoding="utf-8")
  assert list(convert.read_any_catalog(path)) == [formats.Track("t1", "A", "x", "", ())]


def test_unknown_format(tmp_path):
  (tmp_path / "c.xlsx").write_text("x")
  with pytest.raises(UserInputError, match="unknown catalog format '.xlsx'"):
    convert.read_any_catalog(tmp_path / "c.xlsx")


def test_import_dataset(tmp_path):
  cat = tmp_path / "cat.parquet"
  convert.write_catalog_parquet(cat, formats.read_catalog(os.path.join(GOOD, "catalog.jsonl")))
  meta = convert.import_dataset(cat, os.path.join(GOOD, "playlists.jsonl"), tmp_path / "ds",
                                validation_fraction=0.34, test_fraction=0.0)
  ds = formats.Dataset.load(tmp_path / "ds")
  assert [t.track_id for t in ds.tracks] == ["t1", "t2", "t3", "t4"]
  assert [p.playlist_id for p in ds.playlists()] == ["p1", "p2", "p3"]
  assert meta["split_sizes"] == {"train": 2, "validation": 1, "test": 0}
  splits = tmp_path / "splits.json"
  splits.write_text(json.dumps({"train": ["p1", "p3"], "test": ["p2"]}))
  convert.import_dataset(os.path.join(GOOD, "catalog.jsonl"), os.path.join(GOOD, "playlists.jsonl"),
                         tmp_path / "ds2", splits_path=splits)
  assert formats.Dataset.load(tmp_path / "ds2").split_ids("test") == ["p2"]
