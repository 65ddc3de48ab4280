"""Dense dual-encoder baseline: loss, exact chunked search, learning a toy prompt -> track mapping, errors."""

import numpy as np
import pytest

from t2t_jax import evaluation
from t2t_jax.baselines import dual_encoder
from t2t_jax.baselines.catalog import CatalogTexts
from t2t_jax.errors import UserInputError
from t2t_jax.models import t5

GENRES = ("jazz", "metal", "folk", "techno", "reggae", "opera")
WORDS = {w: i + 3 for i, w in enumerate(
    list(GENRES) + ["song", "track", "tune", "mix", "for", "me", "best", "of", "the", "a", "b", "c", "d", "e"])}


def _encode(text):
  return [WORDS.get(w, 2) for w in text.split()]


def _catalog(texts):
  return CatalogTexts(metadata=texts, artists=[t.split()[0] for t in texts])


def _micro(vocab_size):
  return t5.T5Config.preset("tiny", vocab_size=vocab_size, emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64,
                            num_encoder_layers=1, num_decoder_layers=1, dropout_rate=0.0)


@pytest.fixture(scope="module")
def toy():
  """60 tracks, 10 per genre; a playlist's prompt names a genre and holds tracks of that genre."""
  rng = np.random.default_rng(0)
  fillers = ["a", "b", "c", "d", "e"]
  texts = [f"{GENRES[i % 6]} {fillers[i % 5]} {fillers[(i // 5) % 5]} song" for i in range(60)]
  by_genre = {g: [i for i in range(60) if i % 6 == j] for j, g in enumerate(GENRES)}
  templates = ("{g}", "best of {g}", "{g} mix for me", "the {g} tune")

  def playlists(n, seed):
    r = np.random.default_rng(seed)
    out = []
    for _ in range(n):
      g = GENRES[r.integers(6)]
      out.append((templates[r.integers(4)].format(g=g), list(r.choice(by_genre[g], 5, replace=False))))
    return out
  del rng
  model = dual_encoder.DualEncoderRetriever(encode_fn=_encode, vocab_size=32, config=_micro(32), train_steps=60,
                                            batch_size=16, learning_rate=3e-3, warmup_steps=5, seed=0)
  model.fit(_catalog(texts), playlists(200, 1))
  return model, texts, by_genre, playlists(30, 2)


def test_in_batch_softmax_loss_matches_numpy_and_masks_duplicates():
  rng = np.random.default_rng(0)
  q = rng.normal(size=(4, 3)).astype(np.float32)
  d = rng.normal(size=(4, 3)).astype(np.float32)
  rows = np.array([5, 7, 5, 9], np.int32)  # rows 0 and 2 are the same track
  got = float(dual_encoder.in_batch_softmax_loss(q, d, rows, 0.5))
  logits = q @ d.T / 0.5
  logits[0, 2] = logits[2, 0] = -1e9
  mx = logits.max(1, keepdims=True)
  logp = logits - mx - np.log(np.exp(logits - mx).sum(1, keepdims=True))
  assert got == pytest.approx(-np.mean(np.diag(logp)), rel=1e-5)
  # Without duplicates nothing is masked: identical orthonormal q = d gives log(1 + 3 e^{-1/T}) per row.
  eye = np.eye(4, dtype=np.float32)
  got = float(dual_encoder.in_batch_softmax_loss(eye, eye, np.arange(4), 1.0))
  assert got == pytest.approx(np.log(1 + 3 * np.exp(-1.0)), rel=1e-5)


def test_learns_genre_retrieval(toy):
  model, _, by_genre, test = toy
  assert model.history[-1] < model.history[0] - 0.5  # the loss went down
  prompts = [p for p, _ in test]
  rows = model.recommend(prompts, 10)
  assert rows.shape == (30, 10)
  m = evaluation.evaluate_rankings(rows, [r for _, r in test], ks=(10,))
  # 10 tracks per genre, 5 relevant: a random ranking gets ~0.6 Hits@10 and ~0.08 MAP@10 here.
  assert m["hits@10"] == 1.0
  assert m["map@10"] > 0.5
  # Most of the top-10 share the prompt's genre.
  genre_of = {r: g for g, rs in by_genre.items() for r in rs}
  same = np.mean([[genre_of[int(r)] in p for r in row] for p, row in zip(prompts, rows)])
  assert same > 0.7


def test_chunked_search_is_exact(toy):
  model, _, _, test = toy
  q = model.embed_prompts([p for p, _ in test])
  full_rows, full_scores = model.search(q, 12)
  scores = np.asarray(q) @ np.asarray(model.track_emb_NxE).T
  want = np.argsort(-scores, axis=1, kind="stable")[:, :12]
  np.testing.assert_allclose(full_scores, np.take_along_axis(scores, want, 1), rtol=1e-5, atol=1e-5)
  old = model.search_chunk
  try:
    model.search_chunk = 7  # 60 tracks in 9 chunks, merged
    chunk_rows, chunk_scores = model.search(q, 12)
  finally:
    model.search_chunk = old
  np.testing.assert_array_equal(chunk_rows, full_rows)
  np.testing.assert_allclose(chunk_scores, full_scores, rtol=1e-6)
  # k larger than the catalog: every track once, then -1.
  rows, _ = model.search(q[:2], 70)
  assert sorted(rows[0, :60].tolist()) == list(range(60)) and (rows[:, 60:] == -1).all()


def test_deterministic_and_batch_independent(toy):
  model, _, _, test = toy
  prompts = [p for p, _ in test]
  a = model.recommend(prompts, 5)
  b = np.concatenate([model.recommend(prompts[:7], 5, query_batch=4), model.recommend(prompts[7:], 5)])
  np.testing.assert_array_equal(a, b)


def test_bad_inputs(toy):
  model, texts, _, _ = toy
  fresh = dual_encoder.DualEncoderRetriever(encode_fn=_encode, vocab_size=32, config=_micro(32), train_steps=1)
  with pytest.raises(UserInputError, match="fit"):
    fresh.recommend(["jazz"], 5)
  with pytest.raises(UserInputError, match="outside"):
    fresh.fit(_catalog(texts), [("jazz", [0, 99])])
  with pytest.raises(UserInputError, match="no \\(prompt, track\\)"):
    fresh.fit(_catalog(texts), [])
  with pytest.raises(UserInputError, match="k must be"):
    model.recommend(["jazz"], 0)
  with pytest.raises(UserInputError, match="vocab_size"):
    dual_encoder.DualEncoderRetriever(encode_fn=_encode, vocab_size=64, config=_micro(32))
  with pytest.raises(UserInputError, match="temperature"):
    dual_encoder.DualEncoderRetriever(encode_fn=_encode, vocab_size=32, temperature=0.0)
