"""Baselines: the shared fit(catalog, train) inputs and track texts; BM25 finds tracks by metadata and
training prompts per text mode; popularity ranks by counts."""

import numpy as np
import pytest

from t2t_jax.baselines import bm25, catalog as catalog_lib, popularity
from t2t_jax.baselines.catalog import CatalogTexts
from t2t_jax.errors import UserInputError

TEXTS = ["Miles Davis So What jazz", "Metallica One metal", "Enya Orinoco Flow ambient", "Daft Punk Around the World"]
CATALOG = CatalogTexts(metadata=TEXTS, artists=["Miles Davis", "Metallica", "Enya", "Daft Punk"])
TRAIN = [("late night jazz lounge", [0]), ("gym rage workout", [1]), ("sleep calm", [2])]  # row 3 is cold


def test_most_popular_ranks_by_count_with_stable_ties():
  cat = CatalogTexts(metadata=["t"] * 5, artists=["a"] * 5)
  pop = popularity.MostPopular().fit(cat, [("p", [3, 1]), ("q", [3]), ("r", [1, 3, 3]), ("s", [4])])
  # Counts: 3 -> 3 playlists (duplicates within a playlist count once), 1 -> 2, 4 -> 1, 0, 2 -> 0.
  np.testing.assert_array_equal(pop.recommend(["x", "y"], 4), [[3, 1, 4, 0], [3, 1, 4, 0]])
  np.testing.assert_array_equal(pop.recommend(["x"], 7), [[3, 1, 4, 0, 2, -1, -1]])


def test_bm25_uses_metadata_and_training_prompts():
  r = bm25.BM25Retriever().fit(CATALOG, TRAIN)
  out = r.recommend(["workout", "metallica", "calm sleep music", "zzzunknownzzz"], k=2)
  assert out[0, 0] == 1  # From the training prompt only.
  assert out[1, 0] == 1  # From metadata.
  assert out[2, 0] == 2
  assert (out[3] == -1).all()  # No known word: nothing retrieved, not a random guess.
  assert out.shape == (4, 2)


def test_bm25_scores_and_prior_agree_with_its_ranking():
  r = bm25.BM25Retriever().fit(CATALOG, TRAIN)
  prompts = ["workout", "calm sleep music", "zzzunknownzzz"]
  raw = r.scores(prompts)
  assert raw.shape == (3, 4) and raw.dtype == np.float32
  ranked = r.recommend(prompts, k=4)
  for i in range(2):  # the full score vector ranks as bm25s' own retrieval
    hits = ranked[i][ranked[i] >= 0]
    assert int(np.argmax(raw[i])) == hits[0] and (raw[i, hits] > 0).all()
    assert np.count_nonzero(raw[i]) == len(hits)
  assert (raw[2] == 0).all()
  prior = r.prior(prompts)
  np.testing.assert_allclose(prior[:2].max(axis=1), 1.0)  # each prompt's best row is 1
  np.testing.assert_allclose(prior[0], raw[0] / raw[0].max())
  assert (prior[2] == 0).all()  # no known word: no prior, not a division by zero


def test_bm25_text_modes():
  meta = bm25.BM25Retriever(track_text="metadata").fit(CATALOG, TRAIN)
  assert (meta.recommend(["workout"], 2) == -1).all()  # only a training prompt says "workout"
  assert meta.recommend(["metallica"], 1)[0, 0] == 1
  titles = bm25.BM25Retriever(track_text="playlist_titles").fit(CATALOG, TRAIN)
  assert titles.recommend(["workout"], 1)[0, 0] == 1
  assert (titles.recommend(["metallica"], 2) == -1).all()  # track 1's metadata is not in its document
  assert titles.recommend(["daft punk"], 1)[0, 0] == 3  # the cold track falls back to its metadata
  assert titles.num_cold_tracks == 1
  with pytest.raises(UserInputError, match="track_text='prompt_mean'"):
    bm25.BM25Retriever(track_text="prompt_mean")


def test_track_documents_per_mode():
  train = catalog_lib.checked_train(TRAIN + [("jazz again", [0, 0])], 4, "t")
  docs, cold = catalog_lib.track_documents(CATALOG, train, "playlist_titles")
  assert docs == ["late night jazz lounge jazz again", "gym rage workout", "sleep calm", TEXTS[3]] and cold == 1
  docs, _ = catalog_lib.track_documents(CATALOG, train, "metadata_and_titles")
  assert docs[0] == "Miles Davis So What jazz late night jazz lounge jazz again" and docs[3] == TEXTS[3]
  assert catalog_lib.track_documents(CATALOG, train, "metadata") == (TEXTS, 0)
  # Capped: a seeded subset of prompts, kept in playlist order.
  many = catalog_lib.checked_train([(f"p{i}", [0]) for i in range(10)], 4, "t")
  a, _ = catalog_lib.track_documents(CATALOG, many, "playlist_titles", max_prompts_per_track=3, seed=5)
  b, _ = catalog_lib.track_documents(CATALOG, many, "playlist_titles", max_prompts_per_track=3, seed=5)
  words = a[0].split()
  assert a == b and len(words) == 3 and words == sorted(words, key=lambda w: int(w[1:]))


def test_fit_inputs_are_checked():
  with pytest.raises(UserInputError, match="2 metadata texts but 1 artists"):
    CatalogTexts(metadata=["a", "b"], artists=["x"])
  with pytest.raises(UserInputError, match="outside \\[0, 4\\)"):
    bm25.BM25Retriever().fit(CATALOG, [("p", [4])])
  with pytest.raises(UserInputError, match="empty catalog"):
    popularity.MostPopular().fit(CatalogTexts(metadata=[], artists=[]), [])
  rows = catalog_lib.checked_train([("p", [2, 0, 2])], 4, "t")[0][1]
  np.testing.assert_array_equal(rows, [0, 2])
