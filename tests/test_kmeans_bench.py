"""Entry test for tools/bench_kmeans.py on a tiny problem: the JSON has every documented key."""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import bench_kmeans  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.mark.entry
def test_bench_json(tmp_path):
  out = tmp_path / "b.json"
  assert bench_kmeans.main(["--n", "3000", "--d", "8", "--k", "8", "--iterations", "3", "--runs", "1",
                            "--blobs", "8", "--json", str(out)]) == 0
  r = json.loads(out.read_text())
  for key in ("jax_seconds", "faiss_seconds", "sklearn_seconds", "jax_inertia", "faiss_inertia",
              "sklearn_inertia", "n", "d", "k", "iterations", "machine"):
    assert key in r, key
  assert (r["n"], r["d"], r["k"], r["iterations"]) == (3000, 8, 8, 3)
  # Same data, same initial centroids, same iterations: the three agree on the inertia.
  assert r["jax_inertia"] == pytest.approx(r["faiss_inertia"], rel=1e-4)
  assert r["jax_inertia"] == pytest.approx(r["sklearn_inertia"], rel=1e-4)
  assert r["jax_inertia"] < r["init_inertia"]
  # faiss ran with the measured-best thread count; load and the memory-read roofline are recorded.
  assert r["faiss_threads"] == r["faiss_thread_choice"]["chosen"] >= 1
  assert len(r["faiss_thread_choice"]["seconds_by_threads"]) == os.cpu_count()
  assert r["jax_seconds_summary"]["n"] == 1 and r["jax_seconds_per_iteration"]["n"] == 2  # 3 iterations
  assert r["memory_read"]["bytes"] == 3000 * 8 * 4 and r["iteration_over_measured_read"] > 0
  assert r["load"]["cores"] == os.cpu_count() and r["machine"]["versions"]["numpy"]


@pytest.mark.entry
def test_scale_mode_small(tmp_path):
  out = tmp_path / "s.json"
  assert bench_kmeans.main(["--scale", "--n", "3000", "--d", "8", "--k", "8", "--levels", "2", "--iterations", "3",
                            "--blobs", "8", "--scratch", str(tmp_path), "--json", str(out)]) == 0
  r = json.loads(out.read_text())
  assert r["duplicate_ids"] == 0 and r["peak_rss_gib"] > 0 and len(r["levels_detail"]) == 2


def test_make_data_is_one_mixture_when_written_in_pieces():
  """Scale mode writes the file chunk by chunk: the pieces must be rows of the same mixture."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  step = 1 << 18
  whole = bench_kmeans.make_data(step + 1000, 4, 8, seed=3)
  parts = np.concatenate([bench_kmeans.make_data(step, 4, 8, seed=3),
                          bench_kmeans.make_data(1000, 4, 8, seed=3, start=step)])
  np.testing.assert_array_equal(whole, parts)
  # The seed, not the chunk offset, picks the mixture.
  other = bench_kmeans.make_data(1000, 4, 8, seed=4)
  assert not np.array_equal(other, whole[:1000])
  with pytest.raises(ValueError, match="multiple of"):
    bench_kmeans.make_data(10, 4, 8, seed=3, start=5)
