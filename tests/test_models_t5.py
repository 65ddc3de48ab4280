"""Tests for t2t_jax.models.t5 (tiny configs, CPU)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2t_jax.models import t5


def _tokens(rng, shape, vocab, pad_from=None):
  toks = rng.integers(3, vocab, size=shape).astype(np.int32)
  if pad_from is not None:
    toks[:, pad_from:] = 0
  return toks


@pytest.fixture(scope="module")
def tiny():
  cfg = t5.T5Config.micro()
  params = nn.unbox(t5.init_params(cfg, jax.random.PRNGKey(0)))
  return cfg, params


def test_param_names_shapes_and_logical_axes():
  cfg = t5.T5Config.micro()
  boxed = t5.init_params(cfg, jax.random.PRNGKey(0))
  flat = {"/".join(k.key for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(
              boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))[0]}
  hd = cfg.num_heads * cfg.head_dim
  expect = {
      "token_embedder/embedding": ((cfg.vocab_size, cfg.emb_dim), ("vocab", "embed")),
      "encoder/relpos_bias/rel_embedding": ((cfg.num_heads, 32), ("heads", "relpos_buckets")),
      "encoder/layers_0/attention/query/kernel": ((cfg.emb_dim, hd), ("embed", "joined_kv")),
      "encoder/layers_1/attention/out/kernel": ((hd, cfg.emb_dim), ("joined_kv", "embed")),
      "encoder/layers_0/mlp/wi_0/kernel": ((cfg.emb_dim, cfg.mlp_dim), ("embed", "mlp")),
      "encoder/layers_0/mlp/wo/kernel": ((cfg.mlp_dim, cfg.emb_dim), ("mlp", "embed")),
      "encoder/encoder_norm/scale": ((cfg.emb_dim,), ("embed",)),
      "decoder/layers_1/encoder_decoder_attention/key/kernel": ((cfg.emb_dim, hd),
                                                                ("embed", "joined_kv")),
      "decoder/layers_0/pre_cross_attention_layer_norm/scale": ((cfg.emb_dim,), ("embed",)),
      "decoder/logits_dense/kernel": ((cfg.emb_dim, cfg.vocab_size), ("embed", "vocab")),
  }
  for name, (shape, axes) in expect.items():
    assert flat[name].value.shape == shape, name
    assert flat[name].names == axes, name
  # Every parameter is named by logical axes.
  assert all(isinstance(v, nn.Partitioned) for v in flat.values())
  assert sum(v.value.size for v in flat.values()) == cfg.num_params()


def test_forward_shapes_and_float32_logits(tiny):
  cfg, params = tiny
  rng = np.random.default_rng(0)
  enc = _tokens(rng, (2, 7), cfg.vocab_size, pad_from=5)
  dec = _tokens(rng, (2, 4), cfg.vocab_size)
  logits = t5.Transformer(cfg).apply({"params": params}, enc, dec, dec, enable_dropout=False)
  assert logits.shape == (2, 4, cfg.vocab_size)
  assert logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))


def test_decode_with_cache_matches_full_sequence(tiny):
  cfg, params = tiny
  model = t5.Transformer(cfg)
  rng = np.random.default_rng(1)
  batch, length = 3, 6
  enc = _tokens(rng, (batch, 9), cfg.vocab_size, pad_from=7)
  dec_in = _tokens(rng, (batch, length), cfg.vocab_size)
  dec_in[:, 0] = 0  # BOS is PAD in T5
  full_BxLxV = model.apply({"params": params}, enc, dec_in, enable_dropout=False)

  state = t5.T5Model(cfg).init_decode_state(params, enc, beam_size=1, max_decode_len=length)
  cache = state.cache
  assert cache["decoder"]["cache_index"].shape == ()
  assert cache["decoder"]["layers_0"]["self_attention"]["cached_key"].shape == (
      batch, length, cfg.num_heads, cfg.head_dim)
  # Cross-attention keys/values are projected once, outside the per-step cache.
  assert state.context["cross_cache"]["decoder"]["layers_0"]["encoder_decoder_attention"][
      "key"].shape == (batch, 9, cfg.num_heads, cfg.head_dim)

  step = jax.jit(lambda cache, tokens_Bx1: t5.T5Model(cfg).decode_step(params, tokens_Bx1, cache,
                                                                       state.context))
  for i in range(length):
    logits_BxV, cache = step(cache, dec_in[:, i:i + 1])
    np.testing.assert_allclose(logits_BxV, full_BxLxV[:, i], atol=1e-5, rtol=1e-5)
  assert int(cache["decoder"]["cache_index"]) == length


def test_dropout_is_random_only_when_enabled():
  cfg = t5.T5Config.micro(dropout_rate=0.3)
  params = nn.unbox(t5.init_params(cfg, jax.random.PRNGKey(0)))
  model = t5.Transformer(cfg)
  enc = np.full((1, 5), 7, np.int32)
  dec = np.full((1, 3), 9, np.int32)
  a = model.apply({"params": params}, enc, dec, enable_dropout=True,
                  rngs={"dropout": jax.random.PRNGKey(1)})
  b = model.apply({"params": params}, enc, dec, enable_dropout=True,
                  rngs={"dropout": jax.random.PRNGKey(2)})
  c = model.apply({"params": params}, enc, dec, enable_dropout=False)
  d = model.apply({"params": params}, enc, dec, enable_dropout=False)
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(c, d)


def test_relative_position_bucket_pinned():
  rel = jnp.array([-200, -128, -20, -8, -1, 0, 1, 8, 20, 128, 200])
  bi = t5.relative_position_bucket(rel, True, 32, 128)
  uni = t5.relative_position_bucket(rel, False, 32, 128)
  # Values printed by transformers T5Attention._relative_position_bucket.
  np.testing.assert_array_equal(bi, [15, 15, 10, 8, 1, 0, 17, 24, 26, 31, 31])
  np.testing.assert_array_equal(uni, [31, 31, 17, 8, 1, 0, 0, 0, 0, 0, 0])


def test_padding_does_not_change_unpadded_logits(tiny):
  cfg, params = tiny
  model = t5.Transformer(cfg)
  rng = np.random.default_rng(2)
  enc = _tokens(rng, (1, 5), cfg.vocab_size)
  dec = _tokens(rng, (1, 3), cfg.vocab_size)
  a = model.apply({"params": params}, enc, dec, dec, enable_dropout=False)
  enc_p = np.concatenate([enc, np.zeros((1, 4), np.int32)], 1)
  dec_p = np.concatenate([dec, np.zeros((1, 2), np.int32)], 1)
  b = model.apply({"params": params}, enc_p, dec_p, dec_p, enable_dropout=False)
  np.testing.assert_allclose(a, b[:, :3], atol=1e-5)


@pytest.mark.parametrize("policy", ["full", "minimal"])
def test_remat_same_gradients(tiny, policy):
  cfg, params = tiny
  enc = np.arange(3, 9, dtype=np.int32)[None]
  dec = np.arange(4, 8, dtype=np.int32)[None]

  def loss(p, c):
    return t5.Transformer(c).apply({"params": p}, enc, dec, enable_dropout=False).sum()

  g_ref = jax.grad(loss)(params, cfg)
  g = jax.grad(loss)(params, cfg.replace(remat_policy=policy))
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
