"""Smoke test of tools/bench_data.py's MPD-format corpus writer (the benchmark itself runs by hand)."""

import os
import sys

import numpy as np

from t2t_jax.data import mpd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import bench_data  # noqa: E402


def test_corpus_is_valid_mpd(tmp_path):
  counts = bench_data.write_mpd_corpus(str(tmp_path), 2500, seed=1)
  assert sorted(os.listdir(tmp_path)) == ["mpd.slice.0-999.json", "mpd.slice.1000-1999.json",
                                          "mpd.slice.2000-2499.json"]
  stats = mpd.MpdStats()
  lengths = [len(p.track_ids) for p, _ in mpd.read_mpd(tmp_path, stats=stats)]
  assert stats.playlists_read == 2500 and stats.playlists_skipped == 0 and stats.duplicate_tracks_in_playlists == 0
  assert stats.rows_read == counts["rows"] == sum(lengths)
  assert 50 < np.mean(lengths) < 80 and min(lengths) >= 5
  assert bench_data.machine()["cores"] >= 1


def test_mpd_profile_has_mpd_statistics(tmp_path):
  """The MPD profile (tools/bench_mpd_scale.py's corpus): valid slices, MPD's length range and mean,
  repeated tracks as MPD has them, the top title among MPD's and its counts as read back."""
  counts = bench_data.write_mpd_corpus(str(tmp_path), 3000, seed=0, profile=bench_data.MpdProfile())
  stats = mpd.MpdStats()
  read = list(mpd.read_mpd(tmp_path, stats=stats))
  assert counts["profile"] == "mpd" and stats.playlists_read == 3000 and stats.rows_read == counts["rows"]
  assert 0.005 < stats.duplicate_tracks_in_playlists / stats.rows_read < 0.03  # MPD's 10% sample: 1.3%
  assert len({t for _, tracks in read for t in tracks}) == counts["unique_tracks"]
  lengths = [len(p.track_ids) for p, _ in read]  # distinct tracks: MPD's 5..250 less repeats
  assert min(lengths) >= 3 and max(lengths) <= 250 and 58 < counts["mean_length"] < 75
  titles = [bench_data.normalize_title(p.title) for p, _ in read]
  assert max(set(titles), key=titles.count) in bench_data.MPD_REPORTED["top_titles"]
  assert counts["unique_normalized_titles"] == len(set(titles)) < counts["unique_titles"]
  assert 0.02 < counts["top_track_playlists"] / 3000 < 0.08  # MPD: 4.7% of playlists hold the top track
