"""Tests for t2t_jax.decoding.generate with a tiny random T5 (the real KV cache and beam reordering)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2t_jax.decoding.beam_search import invalid_share
from t2t_jax.decoding.generate import make_recommend_fn, score_rows
from t2t_jax.decoding.index import build_index, subtree_max
from t2t_jax.models import build_model
from t2t_jax.models.bert import mean_pool

t5 = pytest.importorskip("t2t_jax.models.t5")


@pytest.fixture(scope="module")
def tiny():
  config = t5.T5Config.micro(vocab_size=40)
  model = t5.Transformer(config)
  params = jax.jit(lambda key: t5.init_params(config, key, input_length=5, target_length=3))(
      jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  # Semantic-style catalog: 3 levels of 4 codes at token offsets 20, 24, 28 (48 of the 64 IDs).
  codes = np.array([(a, b, c) for a in range(4) for b in range(4) for c in range(4)])
  codes = codes[rng.permutation(64)[:48]]
  seqs = codes + np.array([20, 24, 28])
  prompts = jnp.asarray(rng.integers(3, 20, (3, 5)), jnp.int32).at[0, 3:].set(0)
  return model, params, seqs, prompts


def test_recommend_full_beam_equals_teacher_forced_brute_force(tiny):
  model, params, seqs, prompts = tiny
  index = build_index(seqs, 40)
  fn = jax.jit(make_recommend_fn(model, index, beam_size=48, top_k=10))
  rows, scores = fn(params, prompts, index)
  ref_BxN = np.asarray(score_rows(model, params, prompts,
                                  jnp.broadcast_to(jnp.asarray(seqs), (3,) + seqs.shape)))
  order = np.argsort(-ref_BxN, axis=1)[:, :10]
  np.testing.assert_array_equal(np.asarray(rows), order)
  np.testing.assert_allclose(np.asarray(scores), np.take_along_axis(ref_BxN, order, 1),
                             rtol=1e-4, atol=1e-4)


def test_in_function_priors_equal_the_host_node_prior_and_brute_force(tiny):
  """A row prior and a dense table passed in are the host-built node prior of their sum: the full beam
  returns the brute-force order of model + prior, the encoder's cosine computed inside."""
  model, params, seqs, prompts = tiny
  index = build_index(seqs, 40)
  rng = np.random.default_rng(1)
  row_BxR = 3.0 * rng.random((3, 48)).astype(np.float32)
  dense_RxE = 5.0 * rng.normal(size=(48, model.config.emb_dim)).astype(np.float32)
  query_BxE = np.asarray(mean_pool(build_model(model).encode(params, prompts), prompts))
  total_BxR = row_BxR + query_BxE @ dense_RxE.T
  fn = jax.jit(make_recommend_fn(model, index, beam_size=48, top_k=10))
  rows, scores = fn(params, prompts, index, None, row_BxR, dense_RxE)
  host_rows, host_scores = fn(params, prompts, index, subtree_max(index, total_BxR))
  np.testing.assert_array_equal(np.asarray(rows), np.asarray(host_rows))
  np.testing.assert_allclose(np.asarray(scores), np.asarray(host_scores), rtol=1e-5, atol=1e-4)
  ref_BxN = np.asarray(score_rows(model, params, prompts, jnp.broadcast_to(jnp.asarray(seqs), (3,) + seqs.shape)))
  ref_BxN = ref_BxN + total_BxR - total_BxR.max(axis=1, keepdims=True)
  order = np.argsort(-ref_BxN, axis=1)[:, :10]
  np.testing.assert_array_equal(np.asarray(rows), order)
  # The dense table alone, and both priors refused beside a node prior.
  dense_rows, _ = fn(params, prompts, index, None, None, dense_RxE)
  alone = np.asarray(score_rows(model, params, prompts, jnp.broadcast_to(jnp.asarray(seqs), (3,) + seqs.shape)))
  np.testing.assert_array_equal(np.asarray(dense_rows), np.argsort(-(alone + query_BxE @ dense_RxE.T), axis=1)[:, :10])
  with pytest.raises(ValueError, match="not both"):
    fn(params, prompts, index, subtree_max(index, total_BxR), row_BxR)


@pytest.mark.slow
def test_recommend_small_beam_and_free_mode(tiny):
  model, params, seqs, prompts = tiny
  index = build_index(seqs, 40)
  rows, scores = jax.jit(make_recommend_fn(model, index, beam_size=3, top_k=6))(params, prompts)
  rows, scores = np.asarray(rows), np.asarray(scores)
  assert (rows >= 0).all() and all(len(set(r)) == 6 for r in rows.tolist())
  ref = np.asarray(score_rows(model, params, prompts, jnp.asarray(seqs)[rows]))
  np.testing.assert_allclose(scores, ref, rtol=1e-4, atol=1e-4)

  free_rows, free_scores = jax.jit(make_recommend_fn(
      model, index, beam_size=3, top_k=6, constrained=False))(params, prompts)
  share = float(invalid_share(free_rows, free_scores))
  # An untrained model almost never emits an ID-token sequence by chance.
  assert share > 0.5
  assert np.isfinite(np.asarray(free_scores)).all()
  # Free search ignores the catalog, so its best score is at least the constrained best.
  assert (np.asarray(free_scores)[:, 0] >= scores[:, 0] - 1e-4).all()
