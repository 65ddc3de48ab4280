"""Tests for t2t_jax.data.mpd on the hand-made MPD slices in tests/data/mpd."""

import json
import os
import shutil

import pytest

from t2t_jax.data import formats, mpd
from t2t_jax.errors import UserInputError

MPD_DIR = os.path.join(os.path.dirname(__file__), "data", "mpd")


def test_slice_files_in_slice_order(tmp_path):
  for name in ("mpd.slice.1000-1999.json", "mpd.slice.0-999.json", "mpd.slice.20000-20999.json", "notes.txt"):
    (tmp_path / name).write_text("{}")
  assert [os.path.basename(p) for p in mpd.slice_files(tmp_path)] == [
      "mpd.slice.0-999.json", "mpd.slice.1000-1999.json", "mpd.slice.20000-20999.json"]
  with pytest.raises(UserInputError, match="no files named mpd.slice"):
    mpd.slice_files(tmp_path / "..")
  with pytest.raises(UserInputError, match="no such MPD"):
    mpd.slice_files(tmp_path / "missing")


def test_read_mpd_values():
  stats = mpd.MpdStats()
  got = list(mpd.read_mpd(MPD_DIR, stats=stats))
  assert [p.playlist_id for p, _ in got] == ["0", "1", "2", "3", "4"]
  p0, tracks0 = got[0]
  assert p0.title == "Throwbacks" and p0.description == ""
  assert p0.track_ids[0] == "spotify:track:4uLU6hMCjMI75M1A2tKUQC"
  assert tracks0[0] == formats.Track("spotify:track:4uLU6hMCjMI75M1A2tKUQC", "Rick Astley",
                                     "Never Gonna Give You Up", "Whenever You Need Somebody")
  assert got[1][0].description == "late night jazz" and got[1][0].title == "chill jazz 🎷"
  # Playlist 2 lists Mr. Brightside twice: the repeat is dropped and counted.
  assert len(got[2][0].track_ids) == 4
  assert (stats.files, stats.playlists_read, stats.rows_read, stats.duplicate_tracks_in_playlists) == (2, 5, 16, 1)


def test_single_file_and_pos_order(tmp_path):
  data = json.load(open(os.path.join(MPD_DIR, "mpd.slice.0-2.json"), encoding="utf-8"))
  data["playlists"][0]["tracks"].reverse()  # order comes from "pos", not list order
  path = tmp_path / "one.json"
  path.write_text(json.dumps(data))
  got = list(mpd.read_mpd(path))
  assert len(got) == 3
  assert got[0][0].track_ids == next(mpd.read_mpd(MPD_DIR))[0].track_ids


def test_convert_mpd(tmp_path):
  meta = mpd.convert_mpd(MPD_DIR, tmp_path / "ds", seed=0, validation_fraction=0.2, test_fraction=0.2)
  ds = formats.Dataset.load(tmp_path / "ds")
  assert len(ds.tracks) == 8 and meta["num_tracks"] == 8 and meta["num_playlists"] == 5
  assert ds.tracks[0].track_id == "spotify:track:4uLU6hMCjMI75M1A2tKUQC"  # first-seen order
  assert meta["split_sizes"] == {"train": 3, "validation": 1, "test": 1}
  assert meta["read_stats"]["duplicate_tracks_in_playlists"] == 1
  assert ds.meta["source"] == "mpd"
  again = mpd.convert_mpd(MPD_DIR, tmp_path / "ds2", seed=0, validation_fraction=0.2, test_fraction=0.2)
  for name in ("catalog.jsonl", "playlists.jsonl", "splits.json"):
    assert (tmp_path / "ds" / name).read_bytes() == (tmp_path / "ds2" / name).read_bytes()
  assert again["split_sizes"] == meta["split_sizes"]


def test_duplicate_pid_across_slices(tmp_path):
  d = tmp_path / "slices"
  shutil.copytree(MPD_DIR, d)
  shutil.copy(d / "mpd.slice.3-4.json", d / "mpd.slice.5-6.json")
  with pytest.raises(UserInputError, match=r"mpd.slice.5-6.json: playlists\[0\]: pid 3: duplicate pid"):
    mpd.convert_mpd(d, tmp_path / "out")
  assert not (tmp_path / "out").exists()
  meta = mpd.convert_mpd(d, tmp_path / "out", on_error="skip")
  assert meta["read_stats"]["playlists_skipped"] == 2 and meta["num_playlists"] == 5
