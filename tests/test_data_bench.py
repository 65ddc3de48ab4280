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
