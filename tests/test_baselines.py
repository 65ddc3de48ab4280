"""Baselines: BM25 finds tracks by metadata and training prompts; popularity ranks by counts."""

import numpy as np

from t2t_jax.baselines import bm25, popularity


def test_most_popular_ranks_by_count_with_stable_ties():
  pop = popularity.MostPopular(5).fit([[3, 1], [3], [1, 3, 3], [4]])
  # Counts: 3 -> 3 playlists (duplicates within a playlist count once), 1 -> 2, 4 -> 1, 0, 2 -> 0.
  np.testing.assert_array_equal(pop.recommend(["x", "y"], 4), [[3, 1, 4, 0], [3, 1, 4, 0]])


def test_bm25_uses_metadata_and_training_prompts():
  texts = ["Miles Davis So What jazz", "Metallica One metal", "Enya Orinoco Flow ambient"]
  train = [("late night jazz lounge", [0]), ("gym rage workout", [1]), ("sleep calm", [2])]
  r = bm25.BM25Retriever().fit(texts, train)
  out = r.recommend(["workout", "metallica", "calm sleep music", "zzzunknownzzz"], k=2)
  assert out[0, 0] == 1  # From the training prompt only.
  assert out[1, 0] == 1  # From metadata.
  assert out[2, 0] == 2
  assert (out[3] == -1).all()  # No known word: nothing retrieved, not a random guess.
  assert out.shape == (4, 2)
