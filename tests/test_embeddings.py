"""Tests for t2t_jax.ids.embeddings: CF embeddings put co-occurring tracks together; embedding files."""

import collections

import numpy as np
import pytest

from t2t_jax.errors import UserInputError
from t2t_jax.ids import embeddings as E


def _intent_playlists(num_intents=12, per_intent=30, num_playlists=800, length=12, noise=2, seed=0):
  """Tiny generator: each playlist draws `length` tracks of one intent's block plus `noise` random ones."""
  rng = np.random.default_rng(seed)
  n = num_intents * per_intent
  out = []
  for _ in range(num_playlists):
    i = rng.integers(num_intents)
    block = rng.choice(np.arange(i * per_intent, (i + 1) * per_intent), length, replace=False)
    out.append(list(block) + list(rng.integers(n, size=noise)))
  return out, np.repeat(np.arange(num_intents), per_intent)


def _nn_agreement(emb, labels):
  sim = emb @ emb.T
  np.fill_diagonal(sim, -np.inf)
  return float((labels[sim.argmax(1)] == labels).mean())


def test_nearest_neighbours_share_intent_tiny_generator():
  playlists, intent = _intent_playlists()
  emb = E.cooccurrence_embeddings(playlists, len(intent) + 3, dim=16, seed=0)
  assert emb.shape == (len(intent) + 3, 16) and emb.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
  assert _nn_agreement(emb[:len(intent)], intent) >= 0.98  # chance: 1/12


def test_nearest_neighbours_share_intent_synthetic_dataset(tmp_path):
  from t2t_jax.data import formats, synthetic
  cfg = synthetic.SyntheticConfig(seed=1, num_artists=40, num_tracks=400, num_playlists=600, num_intents=15)
  synthetic.generate(cfg, tmp_path / "ds")
  ds = formats.Dataset.load(tmp_path / "ds")
  playlists = list(ds.playlists("train"))
  rows = [[ds.track_row[t] for t in p.track_ids] for p in playlists]
  emb, info = E.fit_embeddings(E.PlaylistMatrix.from_playlists(rows, len(ds.tracks)), 16, seed=0)
  # A track's dominant intent: the intent of most playlists that contain it.
  votes = collections.defaultdict(collections.Counter)
  for p, r in zip(playlists, rows):
    key = tuple(sorted(p.intent.items()))
    for t in r:
      votes[t][key] += 1
  tracks = np.array([t for t in range(len(ds.tracks)) if sum(votes[t].values()) >= 3])
  dominant = np.array([hash(votes[t].most_common(1)[0][0]) for t in tracks])
  agree = _nn_agreement(emb[tracks], dominant)
  _, counts = np.unique(dominant, return_counts=True)
  chance = float(((counts / counts.sum()) ** 2).sum())
  assert agree > 0.5 and agree > 4 * chance, (agree, chance)
  assert info.num_cold_tracks == int((E.PlaylistMatrix.from_playlists(rows, len(ds.tracks)).track_counts() == 0).sum())


def test_deterministic_and_cold_tracks():
  playlists, _ = _intent_playlists(num_playlists=300)
  m = E.PlaylistMatrix.from_playlists(playlists, 400)  # Rows 360..399 occur nowhere.
  a, info = E.fit_embeddings(m, 8, seed=3)
  b, _ = E.fit_embeddings(m, 8, seed=3)
  np.testing.assert_array_equal(a, b)
  assert info.num_cold_tracks == 40 and info.passes == 6
  assert np.all(np.isfinite(a)) and np.allclose(np.linalg.norm(a[360:], axis=1), 1.0)
  assert info.singular_values == sorted(info.singular_values, reverse=True)


def test_streamed_blocks_equal_one_block():
  playlists, _ = _intent_playlists(num_playlists=300)
  m = E.PlaylistMatrix.from_playlists(playlists, 360)
  one, _ = E.fit_embeddings(m, 8, seed=0)
  many, _ = E.fit_embeddings(m, 8, seed=0, block_nnz=500)  # ~9 blocks of playlists.
  np.testing.assert_allclose(np.abs(one @ many.T).diagonal(), 1.0, atol=1e-3)


def test_gram_operator_matches_dense():
  playlists = [[0, 1, 2], [1, 2], [2, 3, 3], [4]]
  m = E.PlaylistMatrix.from_playlists(playlists, 6)
  a = np.zeros((4, 6))
  for p, r in enumerate(playlists):
    a[p, sorted(set(r))] = 1
  lens, counts = a.sum(1), a.sum(0)
  a_hat = a / np.sqrt(lens)[:, None] / np.sqrt(np.maximum(counts, 1))[None, :]
  x = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
  op = E._GramOperator(m, block_nnz=2)
  np.testing.assert_allclose(np.asarray(op(x)), a_hat.T @ a_hat @ x, rtol=1e-5, atol=1e-6)


def test_playlist_matrix_bad_rows_and_save_load(tmp_path):
  with pytest.raises(UserInputError, match="playlist 1: track row 9 outside"):
    E.PlaylistMatrix.from_playlists([[0], [9]], 5)
  with pytest.raises(UserInputError, match="playlist 0: track row -1"):
    E.PlaylistMatrix.from_playlists([[-1]], 5)
  m = E.PlaylistMatrix.from_playlists([[0, 1, 1], [3]], 5)
  assert m.nnz == 3
  m.save(tmp_path / "m")
  m2 = E.PlaylistMatrix.load(tmp_path / "m")
  np.testing.assert_array_equal(m2.indices, [0, 1, 3])
  with pytest.raises(UserInputError, match="dim=8 needs at least 9 tracks"):
    E.fit_embeddings(m, 8)


def test_fewer_playlists_than_dim_is_an_error_not_nans():
  """15 playlists bound the co-occurrence rank: dim 16 was NaN (zero rows after normalising)."""
  rng = np.random.default_rng(0)
  playlists = [list(rng.choice(200, 20, replace=False)) for _ in range(15)]
  m = E.PlaylistMatrix.from_playlists(playlists, 200)
  with pytest.raises(UserInputError, match="dim=16 needs at least 17 playlists, got 15"):
    E.fit_embeddings(m, 16)
  emb, info = E.fit_embeddings(m, 8)  # the sketch (9 + 16 oversampling) is capped at 15
  assert np.all(np.isfinite(info.singular_values))
  warm = m.track_counts() > 0
  np.testing.assert_allclose(np.linalg.norm(emb[warm], axis=1), 1.0, rtol=1e-5)


def test_embedding_files(tmp_path):
  emb = np.arange(12, dtype=np.float32).reshape(4, 3)
  E.save_embeddings(tmp_path / "e", emb, ["a", "b", "c", "d"])
  got, ids = E.load_embeddings(tmp_path / "e")
  np.testing.assert_array_equal(got, emb)
  assert ids == ["a", "b", "c", "d"]
  got, _ = E.load_embeddings(tmp_path / "e" / "embeddings.npy", mmap=True)
  assert isinstance(got, np.memmap)
  # Bad inputs, each named.
  np.save(tmp_path / "e" / "bad.npy", np.ones((3, 3), np.float32))
  with pytest.raises(UserInputError, match="has 3 rows but .* has 4 track ids"):
    E.load_embeddings(tmp_path / "e" / "bad.npy")
  nan = emb.copy()
  nan[2, 1] = np.nan
  np.save(tmp_path / "e" / "nan.npy", nan)
  with pytest.raises(UserInputError, match="row 2 \\(track 'c'\\) has NaN"):
    E.load_embeddings(tmp_path / "e" / "nan.npy")
  (tmp_path / "e" / "dup.txt").write_text("a\nb\na\nd\n")
  with pytest.raises(UserInputError, match="duplicate track id 'a'"):
    E.load_embeddings(tmp_path / "e" / "embeddings.npy", tmp_path / "e" / "dup.txt")
  with pytest.raises(UserInputError, match="file not found"):
    E.load_embeddings(tmp_path / "nope.npy")
  with pytest.raises(UserInputError, match="does not match 3 track ids"):
    E.save_embeddings(tmp_path / "f", emb, ["a", "b", "c"])


def test_word2vec_embeddings_deterministic_and_cold_rows_zero():
  playlists, intent = _intent_playlists(num_intents=6, per_intent=20, num_playlists=300, length=10, noise=1)
  n = len(intent) + 2  # two tracks in no playlist
  a = E.word2vec_embeddings(playlists, n, 16, epochs=5, seed=3)
  b = E.word2vec_embeddings(playlists, n, 16, epochs=5, seed=3)
  c = E.word2vec_embeddings(playlists, n, 16, epochs=5, seed=4)
  assert a.shape == (n, 16) and a.dtype == np.float32
  np.testing.assert_array_equal(a, b)  # one worker + seed: reproducible
  assert np.abs(a - c).max() > 0.1
  np.testing.assert_array_equal(a[-2:], 0.0)
  np.testing.assert_allclose(np.linalg.norm(a[:-2], axis=1), 1.0, rtol=1e-5)
  assert _nn_agreement(a[:len(intent)], intent) >= 0.85  # chance: 1/6 (0.89 measured)
  with pytest.raises(UserInputError, match="outside"):
    E.word2vec_embeddings([[0, 5]], 3, 4)
  with pytest.raises(UserInputError, match="hold no tracks"):
    E.word2vec_embeddings([[]], 3, 4)
