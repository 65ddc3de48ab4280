"""Tests for t2t_jax.ids.catalog: catalog embeddings with cold tracks placed, popularity counts."""

import numpy as np
import pytest

from t2t_jax.data.formats import Track
from t2t_jax.errors import UserInputError
from t2t_jax.ids import catalog

from test_text_embeddings import HashingEncoder  # noqa: E402  pylint: disable=g-import-not-at-top


def _world(seed=0):
  """60 tracks of 6 artists; artist a plays in playlists of its group (a % 2); tracks 54..59 cold."""
  rng = np.random.default_rng(seed)
  tracks = [Track(f"t{i}", f"artist{i % 6}", f"song {i}", "", (f"group{i % 2}",)) for i in range(60)]
  rows = [list(rng.choice(np.arange(g, 54, 2), 8, replace=False)) for g in (0, 1) for _ in range(40)]
  return tracks, rows


def test_training_popularity():
  np.testing.assert_array_equal(catalog.training_popularity([[0, 2, 2], [2], []], 4), [1, 0, 2, 0])
  with pytest.raises(UserInputError, match="outside"):
    catalog.training_popularity([[5]], 4)


def test_svd_with_artist_and_text_cold_start():
  tracks, rows = _world()
  emb, info = catalog.catalog_embeddings(tracks=tracks, rows_train=rows, dim=4, cold_start="artist")
  assert emb.shape == (60, 4) and info["cold_start"] == {"num_cold": 6, "by_artist": 6, "by_text_knn": 0,
                                                         "fallback": 0}
  warm = np.arange(54)
  for r in range(54, 60):  # a cold track lands with its artist's warm tracks
    same = warm[warm % 6 == r % 6]
    np.testing.assert_allclose(emb[r], emb[same].mean(0) / np.linalg.norm(emb[same].mean(0)), atol=1e-5)
  rnd, info = catalog.catalog_embeddings(tracks=tracks, rows_train=rows, dim=4, cold_start="random")
  assert info["cold_start"]["random"] == 6
  np.testing.assert_array_equal(rnd[:54], emb[:54])
  txt, info = catalog.catalog_embeddings(tracks=tracks, rows_train=rows, dim=4, encoder=HashingEncoder())
  assert info["cold_start_method"] == "artist+text" and info["cold_start"]["by_artist"] == 6
  txt, info = catalog.catalog_embeddings(tracks=tracks, rows_train=rows, dim=4, encoder=HashingEncoder(),
                                         cold_start="text")
  assert info["cold_start"]["by_text_knn"] == 6 and info["cold_start"]["by_artist"] == 0
  w2v, info = catalog.catalog_embeddings(tracks=tracks, rows_train=rows, source="word2vec", dim=4,
                                         source_kwargs={"epochs": 2})
  assert w2v.shape == (60, 4) and info["cold_start"]["by_artist"] == 6 and np.isfinite(w2v).all()


def test_text_source_and_errors():
  tracks, rows = _world()
  emb, info = catalog.catalog_embeddings(tracks=tracks, rows_train=rows, source="text", encoder=HashingEncoder(16),
                                         text_mode="metadata+prompts", train_prompts=[f"p{i % 3}" for i in range(80)])
  assert emb.shape == (60, 16) and info["dim"] == 16 and info["text_mode"] == "metadata+prompts"
  with pytest.raises(UserInputError, match="needs train_prompts"):
    catalog.catalog_embeddings(tracks=tracks, rows_train=rows, source="text", encoder=HashingEncoder(),
                               text_mode="prompts")
  with pytest.raises(UserInputError, match="embedding source must be one of"):
    catalog.catalog_embeddings(tracks=tracks, rows_train=rows, source="als")
  with pytest.raises(UserInputError, match="cold_start must be one of"):
    catalog.catalog_embeddings(tracks=tracks, rows_train=rows, cold_start="zero")
