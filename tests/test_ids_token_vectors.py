"""Tests for t2t_jax.ids.token_vectors: ID-token vectors from the vectors of their tracks."""

import numpy as np
import pytest

from t2t_jax.errors import UserInputError
from t2t_jax.ids import token_vectors
from t2t_jax.ids.table import IdTable


def test_token_vector_is_the_normalised_mean_of_its_tracks():
  table = IdTable("artist", ["a", "b", "c"], np.array([[0, 0], [0, 1], [1, 0]]), (2, 2))
  tracks = np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]], np.float32)
  vec, mask = token_vectors.id_token_vectors(table, tracks, id_token_offset=3, vocab_size=9)
  # Level 0: token 3 = mean of a, b (unit vectors (1,0), (0,1)); token 4 = c.
  np.testing.assert_allclose(vec[3], [2 ** -0.5, 2 ** -0.5], atol=1e-6)
  np.testing.assert_allclose(vec[4], [2 ** -0.5, 2 ** -0.5], atol=1e-6)
  # Level 1 (offset 3 + 2): token 5 = code 0 = a, c; token 6 = code 1 = b.
  want5 = np.array([1.0, 0.0]) + np.array([2 ** -0.5, 2 ** -0.5])
  np.testing.assert_allclose(vec[5], want5 / np.linalg.norm(want5), atol=1e-6)
  np.testing.assert_allclose(vec[6], [0.0, 1.0], atol=1e-6)
  assert mask.tolist() == [False, False, False, True, True, True, True, False, False]


def test_residual_token_vectors_sum_to_their_tracks():
  """residual=True: level 0 = mean of its tracks' unit vectors, level 1 = mean of what level 0 left;
  a track whose (prefix, code) is its own gets exactly its vector back as the sum of its tokens."""
  table = IdTable("semantic_rq", ["a", "b", "c"], np.array([[0, 0], [0, 1], [1, 0]]), (2, 2))
  tracks = np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]], np.float32)
  vec, mask = token_vectors.id_token_vectors(table, tracks, id_token_offset=3, vocab_size=9, residual=True)
  unit = tracks / np.linalg.norm(tracks, axis=1, keepdims=True)
  np.testing.assert_allclose(vec[3], (unit[0] + unit[1]) / 2, atol=1e-6)  # a, b
  np.testing.assert_allclose(vec[4], unit[2], atol=1e-6)  # c
  left = unit - vec[[3, 3, 4]]
  np.testing.assert_allclose(vec[5], (left[0] + left[2]) / 2, atol=1e-6)  # code 0 at level 1: a, c
  np.testing.assert_allclose(vec[6], left[1], atol=1e-6)  # b
  np.testing.assert_allclose(vec[3] + vec[6], unit[1], atol=1e-6)  # b's tokens add up to b
  assert mask.tolist() == [False, False, False, True, True, True, True, False, False]
  # One level (per-track tokens): each token is its track's unit vector, as without `residual`.
  one = IdTable("integer", ["a", "b", "c"], np.array([[0], [1], [2]]), (3,))
  np.testing.assert_allclose(token_vectors.id_token_vectors(one, tracks, id_token_offset=3, vocab_size=6,
                                                            residual=True)[0][3:], unit, atol=1e-6)


def test_text_ids_are_refused():
  table = IdTable("content", ["a"], np.array([[5, 6]]), (), is_text=True)
  with pytest.raises(UserInputError, match="need non-text IDs"):
    token_vectors.id_token_vectors(table, np.ones((1, 2)), id_token_offset=3, vocab_size=9)
