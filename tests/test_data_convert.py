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


def test_csv_with_excel_bom_and_crlf():
  tracks = list(convert.read_any_catalog(os.path.join(GOOD, "catalog_bom.csv")))
  assert [t.track_id for t in tracks] == ["t1", "t2", "t3", "t4"]
  assert tracks[0] == formats.Track("t1", "Artist 1", "Song 1", "A", ("x",))


def test_import_dataset_is_complete_for_training(tmp_path):
  """Real-data shapes: HTML descriptions, a repeated track, <MISSING> titles; the dir has a vocab."""
  cat = tmp_path / "cat.csv"
  convert.write_catalog_csv(cat, [formats.Track(f"t{i}", f"Artist {i}", f"Song {i}") for i in range(30)])
  recs = [{"playlist_id": f"p{i}", "title": f"mix {i}",
           "description": f'Hits by <a href="spotify:artist:{i}">Artist {i}</a> &amp; more &#x2F; {i}',
           "track_ids": [f"t{i % 30}", f"t{(i + 1) % 30}", f"t{i % 30}"]} for i in range(60)]
  recs.append({"playlist_id": "blank", "title": "<MISSING>", "description": "", "track_ids": ["t1"]})
  pl = tmp_path / "pl.jsonl"
  pl.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
  out = tmp_path / "ds"
  meta = convert.import_dataset(cat, pl, out, vocab_size=300)
  stats = meta["read_stats"]["playlists"]
  assert stats["duplicate_tracks_in_playlists"] == 60 and stats["empty_prompt_playlists"] == 1
  assert meta["num_playlists"] == 60 and meta["split_sizes"] == {"train": 48, "validation": 6, "test": 6}
  assert meta["warnings"] and "only 60 playlists" in meta["warnings"][0]
  ds = formats.Dataset.load(out)
  p = next(ds.playlists())
  assert p.track_ids == ("t0", "t1")
  from t2t_jax.data import prompts  # pylint: disable=import-outside-toplevel
  assert prompts.make_prompt(p, "both") == "mix 0 | Hits by Artist 0 & more / 0"
  assert (out / "vocab" / "spm.model").exists() and meta["vocab"]["source"] == "trained"
  assert meta["vocab"]["trained_on"] == {"train_prompts": 48, "tracks": 30}
  # A user's SentencePiece model is checked and copied instead.
  meta2 = convert.import_dataset(cat, pl, tmp_path / "ds2", spm_path=out / "vocab" / "spm.model",
                                 validation_size=10, test_fraction=0.25)
  assert meta2["vocab"]["source"] == "user" and meta2["split_sizes"] == {"train": 35, "validation": 10, "test": 15}
  assert (tmp_path / "ds2" / "vocab" / "spm.model").read_bytes() == (out / "vocab" / "spm.model").read_bytes()
  with pytest.raises(UserInputError, match="not a SentencePiece model"):
    convert.import_dataset(cat, pl, tmp_path / "ds3", spm_path=cat)
  assert not (tmp_path / "ds3").exists()
  # A user's splits may name the playlist skipped for its empty prompt; a truly unknown one is an error.
  splits = tmp_path / "splits.json"
  splits.write_text(json.dumps({"train": [f"p{i}" for i in range(50)], "test": ["p50", "blank"]}))
  meta3 = convert.import_dataset(cat, pl, tmp_path / "ds3", splits_path=splits, vocab_size=None)
  assert meta3["split_sizes"] == {"train": 50, "validation": 0, "test": 1}
  splits.write_text(json.dumps({"train": ["p1"], "test": ["p77"]}))
  with pytest.raises(UserInputError, match="split 'test' names unknown playlist 'p77'"):
    convert.import_dataset(cat, pl, tmp_path / "ds4", splits_path=splits, vocab_size=None)
