"""Tests for t2t_jax.ids.text_embeddings: track texts per mode, prompts per track, encoder contract."""

import zlib

import numpy as np
import pytest

from t2t_jax.data.formats import Track
from t2t_jax.errors import UserInputError
from t2t_jax.ids import text_embeddings as T


class HashingEncoder:
  """A fake sentence encoder: L2-normalised hashed bag of words (no model needed)."""

  def __init__(self, dim=32):
    self.dim = dim
    self.calls = []

  def encode(self, texts, batch_size=64):
    self.calls.append(batch_size)
    out = np.zeros((len(texts), self.dim), np.float32)
    for i, t in enumerate(texts):
      for w in t.lower().replace(",", " ").replace(".", " ").split():
        out[i, zlib.crc32(w.encode()) % self.dim] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


TRACKS = [Track("a", "Abba", "Waterloo", "Waterloo", ("pop", "70s")),
          Track("b", "Queen", "Bohemian Rhapsody", "", ()),
          Track("c", "Abba", "SOS", "ABBA", ("pop",))]


def test_track_texts_modes():
  assert T.track_texts(TRACKS) == ["Waterloo by Abba, from Waterloo. pop, 70s", "Bohemian Rhapsody by Queen",
                                   "SOS by Abba, from ABBA. pop"]
  prompts = T.prompts_by_track([[0, 2, 0], [2], [2]], ["summer hits", "disco", "summer hits"], 3)
  assert prompts == [["summer hits"], [], ["summer hits", "disco", "summer hits"]]
  assert T.track_texts(TRACKS, prompts, mode="prompts") == [
      "summer hits", "Bohemian Rhapsody by Queen", "summer hits; disco"]  # no prompts: metadata
  both = T.track_texts(TRACKS, prompts, mode="metadata+prompts", max_prompts=1)
  assert both == ["Waterloo by Abba, from Waterloo. pop, 70s. summer hits", "Bohemian Rhapsody by Queen",
                  "SOS by Abba, from ABBA. pop. summer hits"]
  with pytest.raises(UserInputError, match="mode must be one of"):
    T.track_texts(TRACKS, mode="lyrics")
  with pytest.raises(UserInputError, match="needs the training prompts"):
    T.track_texts(TRACKS, mode="prompts")
  with pytest.raises(UserInputError, match="2 training playlists but 1 prompts"):
    T.prompts_by_track([[0], [1]], ["x"], 3)


def test_text_embeddings_with_a_fake_encoder():
  enc = HashingEncoder()
  emb = T.text_embeddings(T.track_texts(TRACKS), encoder=enc, batch_size=7)
  assert emb.shape == (3, 32) and emb.dtype == np.float32 and enc.calls == [7]
  sim = emb @ emb.T
  assert sim[0, 2] > sim[0, 1]  # the two Abba tracks share words
  with pytest.raises(UserInputError, match="returned shape"):
    T.text_embeddings(["x", "y"], encoder=type("E", (), {"encode": lambda self, t, batch_size: np.zeros((1, 4))})())
  with pytest.raises(UserInputError, match="no texts"):
    T.text_embeddings([], encoder=enc)
