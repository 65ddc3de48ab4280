"""Tests for t2t_jax.ids.kmeans: against a numpy reference, determinism, streaming, 8-device mesh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from t2t_jax.errors import UserInputError
from t2t_jax.ids import kmeans as km


def _blobs(n=3000, d=8, k=12, seed=0, spread=6.0):
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(k, d)) * spread
  labels = rng.integers(k, size=n)
  return (centers[labels] + rng.normal(size=(n, d))).astype(np.float32), labels


def _numpy_lloyd(x, c, iterations):
  """Plain float64 Lloyd (sklearn's algorithm without its init), empty clusters keep their centre."""
  x64, c = x.astype(np.float64), c.astype(np.float64).copy()
  for _ in range(iterations):
    d = ((x64[:, None, :] - c[None]) ** 2).sum(-1)
    lab = d.argmin(1)
    for j in range(c.shape[0]):
      if (lab == j).any():
        c[j] = x64[lab == j].mean(0)
  return c


def test_lloyd_matches_numpy_reference():
  x, _ = _blobs()
  c0 = km.kmeans_plusplus(x, 12, seed=3)
  res = km.kmeans(x, 12, iterations=10, tol=0, init_centroids_KxD=c0, chunk_size=512, block_size=128)
  ref = _numpy_lloyd(x, c0, 10)
  np.testing.assert_allclose(res.centroids_KxD, ref, rtol=1e-4, atol=1e-4)
  ref_inertia = km.inertia_numpy(x, ref)
  assert res.inertia == pytest.approx(ref_inertia, rel=1e-5)
  # Blobs with unit noise: inertia ~ n * d (higher when two blobs share a centroid).
  assert 3000 * 8 * 0.9 < res.inertia < 3000 * 8 * 1.5
  assert res.iterations == 10 and len(res.inertia_history) == 10
  assert all(a >= b - 1e-3 * a for a, b in zip(res.inertia_history, res.inertia_history[1:]))


def test_onehot_and_segment_sum_and_bf16_agree():
  x, _ = _blobs(n=2000, seed=1)
  c0 = km.kmeans_plusplus(x, 12, seed=0)
  a = km.kmeans(x, 12, iterations=5, tol=0, init_centroids_KxD=c0, update="onehot")
  b = km.kmeans(x, 12, iterations=5, tol=0, init_centroids_KxD=c0, update="segment_sum")
  c = km.kmeans(x, 12, iterations=5, tol=0, init_centroids_KxD=c0, precision="bf16")
  np.testing.assert_allclose(a.centroids_KxD, b.centroids_KxD, rtol=1e-5, atol=1e-5)
  assert c.inertia <= a.inertia * 1.01


def test_deterministic_by_seed_and_kmeanspp_beats_random():
  x, _ = _blobs(seed=2)
  a = km.kmeans(x, 12, seed=5, iterations=3, tol=0)
  b = km.kmeans(x, 12, seed=5, iterations=3, tol=0)
  np.testing.assert_array_equal(a.centroids_KxD, b.centroids_KxD)
  np.testing.assert_array_equal(a.labels_N, b.labels_N)
  pp = [km.inertia_numpy(x, km.kmeans_plusplus(x, 12, seed=s)) for s in range(3)]
  rnd = [km.inertia_numpy(x, x[np.random.default_rng(s).choice(len(x), 12, replace=False)]) for s in range(3)]
  assert np.median(pp) < np.median(rnd)


def test_tolerance_stops_early():
  x, _ = _blobs(seed=3)
  res = km.kmeans(x, 12, iterations=50, tol=1e-3, seed=0)
  assert res.iterations < 50


def test_streamed_memmap_equals_in_memory(tmp_path):
  x, _ = _blobs(n=2500, seed=4)
  path = tmp_path / "x.npy"
  np.save(path, x)
  mm = np.load(path, mmap_mode="r")
  c0 = km.kmeans_plusplus(x, 12, seed=0)
  a = km.kmeans(x, 12, iterations=4, tol=0, init_centroids_KxD=c0, chunk_size=256, block_size=64)
  b = km.kmeans(mm, 12, iterations=4, tol=0, init_centroids_KxD=c0, chunk_size=256, block_size=64)
  assert isinstance(mm, np.memmap)
  np.testing.assert_allclose(a.centroids_KxD, b.centroids_KxD, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(a.labels_N, b.labels_N)


def test_kmeans_parallel_init_streamed(tmp_path):
  x, _ = _blobs(n=4000, seed=5)
  np.save(tmp_path / "x.npy", x)
  mm = np.load(tmp_path / "x.npy", mmap_mode="r")
  c = km.kmeans_parallel_init(mm, 12, seed=0, chunk_size=512, block_size=128)
  assert c.shape == (12, 8)
  # Any single k-means run may merge two blobs; the best of 3 seeds finds the blobs (inertia ~ n*d).
  best = min(km.kmeans(mm, 12, init="k-means||", iterations=10, seed=s, chunk_size=512, block_size=128).inertia for s in range(3))
  assert 4000 * 8 * 0.9 < best < 4000 * 8 * 1.1


def test_eight_device_mesh_matches_one_device():
  assert len(jax.devices()) == 8
  x, _ = _blobs(n=3001, seed=6)  # Not a multiple of 8: padding rows must carry no weight.
  c0 = km.kmeans_plusplus(x, 12, seed=0)
  mesh = Mesh(np.array(jax.devices()), ("data",))
  one = km.kmeans(x, 12, iterations=6, tol=0, init_centroids_KxD=c0, chunk_size=512, block_size=128)
  eight = km.kmeans(x, 12, iterations=6, tol=0, init_centroids_KxD=c0, chunk_size=512, block_size=128, mesh=mesh)
  eight_stream = km.kmeans(x, 12, iterations=6, tol=0, init_centroids_KxD=c0, chunk_size=512, block_size=128,
                           mesh=mesh, stream=True)
  for r in (eight, eight_stream):
    np.testing.assert_allclose(r.centroids_KxD, one.centroids_KxD, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(r.labels_N, one.labels_N)
    assert r.inertia == pytest.approx(one.inertia, rel=1e-5)  # Summation order differs.


def test_empty_cluster_repair():
  x, _ = _blobs(n=600, k=3, seed=7)
  c0 = np.concatenate([x[:5], np.full((1, 8), 1e4, np.float32)])  # The far centre gets no points.
  res = km.kmeans(x, 6, iterations=5, tol=0, init_centroids_KxD=c0)
  assert res.num_empty_repaired >= 1
  assert np.bincount(res.labels_N, minlength=6).min() > 0


def test_bad_input():
  x, _ = _blobs(n=50)
  with pytest.raises(UserInputError, match="K=51 is larger than the number of points N=50"):
    km.kmeans(x, 51)
  bad = x.copy()
  bad[7, 2] = np.nan
  with pytest.raises(UserInputError, match="row 7 has NaN or inf"):
    km.kmeans(bad, 4)
  bad[7, 2] = np.inf
  with pytest.raises(UserInputError, match="row 7"):
    km.kmeans(bad, 4)
  with pytest.raises(UserInputError, match="2-D"):
    km.kmeans(x[0], 4)
  with pytest.raises(UserInputError, match="init_centroids shape"):
    km.kmeans(x, 4, init_centroids_KxD=np.zeros((3, 8)))
  with pytest.raises(UserInputError, match="unknown init"):
    km.kmeans(x, 4, init="kmeans+++")


def test_rowfile_reads_writes_and_feeds_kmeans(tmp_path):
  x, _ = _blobs(n=1000, seed=8)
  np.save(tmp_path / "x.npy", x)
  rf = km.RowFile.open_npy(str(tmp_path / "x.npy"))
  assert rf.shape == (1000, 8) and km.is_streamed(rf)
  np.testing.assert_array_equal(rf[10:20], x[10:20])
  np.testing.assert_array_equal(rf[np.array([7, 3, 4, 999])], x[[7, 3, 4, 999]])
  np.testing.assert_array_equal(rf[5], x[5])
  out = km.RowFile.create(str(tmp_path / "y.f32"), (1000, 8))
  out.write(500, x[:10] * 2)
  np.testing.assert_array_equal(out[500:510], x[:10] * 2)
  np.testing.assert_array_equal(out[0:2], 0)
  c0 = km.kmeans_plusplus(x, 6, seed=0)
  a = km.kmeans(x, 6, iterations=3, tol=0, init_centroids_KxD=c0, block_size=128)
  b = km.kmeans(rf, 6, iterations=3, tol=0, init_centroids_KxD=c0, chunk_size=300, block_size=128)
  np.testing.assert_array_equal(a.labels_N, b.labels_N)
  np.testing.assert_allclose(a.centroids_KxD, b.centroids_KxD, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("update", ["segment_sum", "onehot"])
def test_one_lloyd_step_equals_numpy(update):
  """One stats pass over several blocks (the first starts the carry, the rest are looped over in
  place) and the assignment pass: labels, sums, counts and inertia equal a plain numpy step, ties go
  to the lowest centroid index, and zero-weight padding rows count for nothing."""
  x, _ = _blobs(n=1000, d=8, k=6, seed=9)
  c = km.kmeans_plusplus(x, 6, seed=0)
  c[4] = c[1]  # A duplicate centroid: every point nearest to it must take index 1, not 4.
  eng = km._engine(None, "data", "fp32", update)
  src = km._Source(x, 1 << 16, eng, stream=False, block_size=128)  # 8 blocks, the last one padded.
  assert src.stacked[0].shape[0] == 8
  sums, counts, inertia = jax.device_get(src.stats(jnp.asarray(c)))
  labels, dist = src.assign(jnp.asarray(c))
  d = ((x.astype(np.float64)[:, None, :] - c.astype(np.float64)[None]) ** 2).sum(-1)
  ref_labels = d.argmin(1)
  np.testing.assert_array_equal(labels, ref_labels)
  assert not (labels == 4).any() and (labels == 1).any()
  np.testing.assert_allclose(dist, d.min(1), rtol=1e-4, atol=1e-3)
  np.testing.assert_array_equal(counts, np.bincount(ref_labels, minlength=6))
  ref_sums = np.zeros((6, 8))
  np.add.at(ref_sums, ref_labels, x.astype(np.float64))
  np.testing.assert_allclose(sums, ref_sums, rtol=1e-5, atol=1e-3)
  assert float(inertia) == pytest.approx(d.min(1).sum(), rel=1e-5)
