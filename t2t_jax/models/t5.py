"""T5.1.1 encoder-decoder in flax.linen, T5X style.

T5 v1.1: pre-RMSNorm residual blocks without biases, gated-GELU MLP (wi_0 through GELU times wi_1),
relative position buckets shared by all layers of a stack (bidirectional in the encoder, causal in the
decoder), an input embedding shared by encoder and decoder, an untied LM head, dropout.

Parameters carry logical axis names only (T5X names: vocab, embed, mlp, heads, joined_kv,
relpos_buckets); `t2t_jax.training.partitioning` maps them to mesh axes. Kernels are 2-D `[in, out]` like the
T5X T5.1.1 checkpoints, so a Hugging Face `T5ForConditionalGeneration` weight is the transpose of ours
(see `t2t_jax.models.hf_convert`):

  token_embedder/embedding                          [V, E]      shared.weight
  encoder/relpos_bias/rel_embedding                 [H, 32]     encoder.block.0...relative_attention_bias
  encoder/layers_{i}/pre_attention_layer_norm/scale [E]
  encoder/layers_{i}/attention/{query,key,value}/kernel [E, H*D], out/kernel [H*D, E]
  encoder/layers_{i}/pre_mlp_layer_norm/scale, mlp/{wi_0,wi_1}/kernel [E, F], mlp/wo/kernel [F, E]
  encoder/encoder_norm/scale
  decoder/relpos_bias/rel_embedding
  decoder/layers_{i}/{pre_self_attention_layer_norm, self_attention, pre_cross_attention_layer_norm,
                      encoder_decoder_attention, pre_mlp_layer_norm, mlp}
  decoder/decoder_norm/scale, decoder/logits_dense/kernel [E, V]  lm_head.weight

Autoregressive decoding (`decode=True`, driven by `t2t_jax.models.base.EncoderDecoderModel`): the
self-attention key/value cache lives in the mutable 'cache' collection (array leaves with leading
dimension B * beam, scalar `cache_index` leaves); the cross-attention keys/values live in the
'cross_cache' collection, projected once per prompt (leading dimension B): the beams of a prompt are
folded into the query axis of its cross-attention instead of repeating the encoder output per beam.
`T5Model` is the family's implementation of the model interface.
"""

import functools
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t2t_jax.models import base, hf_convert
# T5Config is defined beside the named sizes (t5_config.py, which hf_convert shares); gin files and
# callers name it t5.T5Config and t5.PRESETS.
from t2t_jax.models.t5_config import PRESETS, T5Config  # pylint: disable=unused-import

Array = jax.Array
DType = Any
NEG_INF = -1e10


def _dt(name) -> DType:
  return jnp.dtype(name)


def _constrain(x, axes):
  """Activation sharding constraint by logical names (no-op without rules and a mesh)."""
  return nn.with_logical_constraint(x, axes)


# ----------------------------------------------------------------------------------------- layers


class RMSNorm(nn.Module):
  """T5 layer norm: scale only, no mean subtraction, statistics in float32."""
  epsilon: float = 1e-6
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  @nn.compact
  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    y = x32 * jax.lax.rsqrt(var + self.epsilon)
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                       (x.shape[-1],), self.param_dtype)
    return (y * scale.astype(jnp.float32)).astype(self.dtype)


class Dense(nn.Module):
  """Bias-free dense layer with a 2-D `[in, out]` kernel named by logical axes."""
  features: int
  kernel_axes: tuple[str, str]
  kernel_init: Callable = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.with_logical_partitioning(self.kernel_init, self.kernel_axes),
                        (x.shape[-1], self.features), self.param_dtype)
    return jnp.einsum("...i,io->...o", x.astype(self.dtype), kernel.astype(self.dtype))


def relative_position_bucket(relative_position, bidirectional: bool, num_buckets: int,
                             max_distance: int):
  """T5 bucketing of `key_pos - query_pos` (same arithmetic as Mesh TF / Hugging Face)."""
  ret = 0
  n = relative_position
  if bidirectional:
    num_buckets //= 2
    ret = (n > 0).astype(jnp.int32) * num_buckets
    n = jnp.abs(n)
  else:
    n = -jnp.minimum(n, 0)
  max_exact = num_buckets // 2
  is_small = n < max_exact
  n_safe = jnp.maximum(n, 1).astype(jnp.float32)
  val_if_large = max_exact + (jnp.log(n_safe / max_exact) / np.log(max_distance / max_exact) *
                              (num_buckets - max_exact)).astype(jnp.int32)
  val_if_large = jnp.minimum(val_if_large, num_buckets - 1)
  return ret + jnp.where(is_small, n, val_if_large)


class RelativePositionBiases(nn.Module):
  """Per-head learned bias for each relative-position bucket, shared across a stack's layers."""
  num_heads: int
  num_buckets: int
  max_distance: int
  bidirectional: bool
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  @nn.compact
  def __call__(self, query_pos_Q, key_pos_K):
    """Returns the bias `[1, H, Q, K]` for integer positions."""
    table_HxR = self.param(
        "rel_embedding",
        nn.with_logical_partitioning(nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
                                     ("heads", "relpos_buckets")),
        (self.num_heads, self.num_buckets), self.param_dtype)
    relpos_QxK = key_pos_K[None, :] - query_pos_Q[:, None]
    bucket_QxK = relative_position_bucket(relpos_QxK, self.bidirectional, self.num_buckets,
                                          self.max_distance)
    bias_HxQxK = jnp.take(table_HxR, bucket_QxK, axis=1)
    return bias_HxQxK[None].astype(self.dtype)


class MultiHeadAttention(nn.Module):
  """T5 attention: no biases, no 1/sqrt(d) scaling at run time (folded into the query init).

  cross_attention=True with decode=True: keys/values come from the 'cross_cache' collection when it
  holds them (projected once per prompt, leading dim B) and are computed and stored otherwise.
  Queries of M = B * W rows (W beams per prompt, batch-major) are folded to [B, W * Q] so every
  beam attends to its prompt's keys without copying them W times.
  """
  num_heads: int
  head_dim: int
  dropout_rate: float = 0.0
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32
  cross_attention: bool = False

  @nn.compact
  def __call__(self, x_q_BxQxE, x_kv_BxKxE, mask_Bx1xQxK=None, bias_1xHxQxK=None, *,
               enable_dropout=True, decode=False):
    h, d = self.num_heads, self.head_dim
    base_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal")

    def query_init(*args):
      return base_init(*args) / np.sqrt(d).astype(np.float32)

    dense = functools.partial(Dense, features=h * d, kernel_axes=("embed", "joined_kv"),
                              kernel_init=base_init, dtype=self.dtype,
                              param_dtype=self.param_dtype)
    m, q_len = x_q_BxQxE.shape[:2]
    q_MxQxHxD = dense(name="query", kernel_init=query_init)(x_q_BxQxE).reshape(m, q_len, h, d)
    q_MxQxHxD = _constrain(q_MxQxHxD, ("batch", "length", "heads", "kv"))
    if self.cross_attention and decode and self.has_variable("cross_cache", "key"):
      # Projected once per prompt by an earlier call; Dense modules still exist for the params.
      k_BxKxHxD = self.get_variable("cross_cache", "key")
      v_BxKxHxD = self.get_variable("cross_cache", "value")
    else:
      k_BxKxHxD = dense(name="key")(x_kv_BxKxE).reshape(x_kv_BxKxE.shape[0], -1, h, d)
      v_BxKxHxD = dense(name="value")(x_kv_BxKxE).reshape(x_kv_BxKxE.shape[0], -1, h, d)
      k_BxKxHxD = _constrain(k_BxKxHxD, ("batch", "length", "heads", "kv"))
      v_BxKxHxD = _constrain(v_BxKxHxD, ("batch", "length", "heads", "kv"))
      if self.cross_attention and decode and self.is_mutable_collection("cross_cache"):
        self.put_variable("cross_cache", "key", k_BxKxHxD)
        self.put_variable("cross_cache", "value", v_BxKxHxD)

    if decode and not self.cross_attention:
      # Autoregressive self-attention: write this step's key/value at cache_index, attend to <= index.
      is_initialized = self.has_variable("cache", "cached_key")
      cached_key = self.variable("cache", "cached_key", jnp.zeros, k_BxKxHxD.shape, k_BxKxHxD.dtype)
      cached_value = self.variable("cache", "cached_value", jnp.zeros, v_BxKxHxD.shape,
                                   v_BxKxHxD.dtype)
      cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
      if is_initialized:
        max_len = cached_key.value.shape[1]
        assert q_len == 1, f"decode=True takes one token per step, got {q_len}"
        idx = cache_index.value
        k_BxKxHxD = jax.lax.dynamic_update_slice(cached_key.value, k_BxKxHxD, (0, idx, 0, 0))
        v_BxKxHxD = jax.lax.dynamic_update_slice(cached_value.value, v_BxKxHxD, (0, idx, 0, 0))
        cached_key.value, cached_value.value = k_BxKxHxD, v_BxKxHxD
        cache_index.value = idx + 1
        step_mask = (jnp.arange(max_len) <= idx)[None, None, None, :]
        mask_Bx1xQxK = step_mask if mask_Bx1xQxK is None else jnp.logical_and(mask_Bx1xQxK,
                                                                              step_mask)

    b = k_BxKxHxD.shape[0]
    fold = m // b  # beams per prompt sharing these keys/values (1 outside decoding)
    assert fold * b == m, (m, b)
    q_BxQxHxD = q_MxQxHxD.reshape(b, fold * q_len, h, d)
    logits_BxHxQxK = jnp.einsum("bqhd,bkhd->bhqk", q_BxQxHxD, k_BxKxHxD,
                                preferred_element_type=jnp.float32)
    if bias_1xHxQxK is not None:
      logits_BxHxQxK = logits_BxHxQxK + bias_1xHxQxK.astype(jnp.float32)
    if mask_Bx1xQxK is not None:
      logits_BxHxQxK = jnp.where(mask_Bx1xQxK, logits_BxHxQxK, NEG_INF)
    weights_BxHxQxK = jax.nn.softmax(logits_BxHxQxK, axis=-1).astype(self.dtype)
    weights_BxHxQxK = nn.Dropout(self.dropout_rate)(weights_BxHxQxK,
                                                    deterministic=not enable_dropout)
    out_BxQxHxD = jnp.einsum("bhqk,bkhd->bqhd", weights_BxHxQxK, v_BxKxHxD)
    out_MxQxHxD = _constrain(out_BxQxHxD.reshape(m, q_len, h, d), ("batch", "length", "heads", "kv"))
    out = Dense(features=x_q_BxQxE.shape[-1], kernel_axes=("joined_kv", "embed"),
                kernel_init=base_init, dtype=self.dtype, param_dtype=self.param_dtype,
                name="out")(out_MxQxHxD.reshape(m, q_len, h * d))
    return out


class MlpBlock(nn.Module):
  """Gated-GELU MLP: wo(gelu(wi_0 x) * wi_1 x), dropout after the gate (as HF T5 v1.1)."""
  mlp_dim: int
  dropout_rate: float = 0.0
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  @nn.compact
  def __call__(self, x_BxLxE, *, enable_dropout=True):
    dense = functools.partial(Dense, dtype=self.dtype, param_dtype=self.param_dtype)
    gate = jax.nn.gelu(dense(self.mlp_dim, ("embed", "mlp"), name="wi_0")(x_BxLxE), approximate=True)
    linear = dense(self.mlp_dim, ("embed", "mlp"), name="wi_1")(x_BxLxE)
    h_BxLxF = _constrain(gate * linear, ("batch", "length", "mlp"))
    h_BxLxF = nn.Dropout(self.dropout_rate)(h_BxLxF, deterministic=not enable_dropout)
    return dense(x_BxLxE.shape[-1], ("mlp", "embed"), name="wo")(h_BxLxF)


# ------------------------------------------------------------------------------------------ stacks


class EncoderLayer(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, x_BxLxE, mask, bias, enable_dropout=True):
    cfg = self.config
    dt, pdt = _dt(cfg.dtype), _dt(cfg.param_dtype)
    drop = lambda y: nn.Dropout(cfg.dropout_rate)(y, deterministic=not enable_dropout)
    norm = functools.partial(RMSNorm, epsilon=cfg.layer_norm_epsilon, dtype=dt, param_dtype=pdt)
    y = norm(name="pre_attention_layer_norm")(x_BxLxE)
    y = MultiHeadAttention(cfg.num_heads, cfg.head_dim, cfg.dropout_rate, dt, pdt,
                           name="attention")(y, y, mask, bias, enable_dropout=enable_dropout)
    x_BxLxE = x_BxLxE + drop(y)
    y = norm(name="pre_mlp_layer_norm")(x_BxLxE)
    y = MlpBlock(cfg.mlp_dim, cfg.dropout_rate, dt, pdt, name="mlp")(y, enable_dropout=enable_dropout)
    x_BxLxE = x_BxLxE + drop(y)
    return _constrain(x_BxLxE, ("batch", "length", "embed"))


class DecoderLayer(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, x_BxLxE, encoded_BxSxE, self_mask, cross_mask, bias, enable_dropout=True,
               decode=False):
    cfg = self.config
    dt, pdt = _dt(cfg.dtype), _dt(cfg.param_dtype)
    drop = lambda y: nn.Dropout(cfg.dropout_rate)(y, deterministic=not enable_dropout)
    norm = functools.partial(RMSNorm, epsilon=cfg.layer_norm_epsilon, dtype=dt, param_dtype=pdt)
    attn = functools.partial(MultiHeadAttention, cfg.num_heads, cfg.head_dim, cfg.dropout_rate, dt,
                             pdt)
    y = norm(name="pre_self_attention_layer_norm")(x_BxLxE)
    y = attn(name="self_attention")(y, y, self_mask, bias, enable_dropout=enable_dropout,
                                    decode=decode)
    x_BxLxE = x_BxLxE + drop(y)
    y = norm(name="pre_cross_attention_layer_norm")(x_BxLxE)
    y = attn(name="encoder_decoder_attention", cross_attention=True)(
        y, encoded_BxSxE, cross_mask, None, enable_dropout=enable_dropout, decode=decode)
    x_BxLxE = x_BxLxE + drop(y)
    y = norm(name="pre_mlp_layer_norm")(x_BxLxE)
    y = MlpBlock(cfg.mlp_dim, cfg.dropout_rate, dt, pdt, name="mlp")(y, enable_dropout=enable_dropout)
    x_BxLxE = x_BxLxE + drop(y)
    return _constrain(x_BxLxE, ("batch", "length", "embed"))


def _maybe_remat(layer_cls, policy: str, static_argnums):
  if policy == "none":
    return layer_cls
  jax_policy = (None if policy == "full" else
                jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims)
  return nn.remat(layer_cls, policy=jax_policy, static_argnums=static_argnums)


def _attention_mask(q_valid_BxQ, k_valid_BxK, q_segment_BxQ=None, k_segment_BxK=None):
  mask = jnp.logical_and(q_valid_BxQ[:, :, None], k_valid_BxK[:, None, :])
  if q_segment_BxQ is not None:
    mask = jnp.logical_and(mask, q_segment_BxQ[:, :, None] == k_segment_BxK[:, None, :])
  return mask[:, None]  # [B, 1, Q, K]


class Encoder(nn.Module):
  config: T5Config
  shared_embedding: nn.Module

  @nn.compact
  def __call__(self, tokens_BxL, segment_ids_BxL=None, enable_dropout=True):
    cfg = self.config
    dt, pdt = _dt(cfg.dtype), _dt(cfg.param_dtype)
    x = self.shared_embedding(tokens_BxL.astype(jnp.int32)).astype(dt)
    x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not enable_dropout)
    x = _constrain(x, ("batch", "length", "embed"))
    length = tokens_BxL.shape[1]
    pos = jnp.arange(length)
    bias = RelativePositionBiases(cfg.num_heads, cfg.relative_attention_num_buckets,
                                  cfg.relative_attention_max_distance, True, dt, pdt,
                                  name="relpos_bias")(pos, pos)
    valid = tokens_BxL > 0
    mask = _attention_mask(valid, valid, segment_ids_BxL, segment_ids_BxL)
    layer_cls = _maybe_remat(EncoderLayer, cfg.remat_policy, static_argnums=(4,))
    for i in range(cfg.num_encoder_layers):
      x = layer_cls(cfg, name=f"layers_{i}")(x, mask, bias, enable_dropout)
    x = RMSNorm(cfg.layer_norm_epsilon, dt, pdt, name="encoder_norm")(x)
    return nn.Dropout(cfg.dropout_rate)(x, deterministic=not enable_dropout)


class Decoder(nn.Module):
  config: T5Config
  shared_embedding: nn.Module

  @nn.compact
  def __call__(self, encoded_BxSxE, encoder_tokens_BxS, decoder_input_tokens_BxL,
               decoder_target_tokens_BxL=None, encoder_segment_ids=None, decoder_segment_ids=None,
               enable_dropout=True, decode=False):
    cfg = self.config
    dt, pdt = _dt(cfg.dtype), _dt(cfg.param_dtype)
    length = decoder_input_tokens_BxL.shape[1]
    x = self.shared_embedding(decoder_input_tokens_BxL.astype(jnp.int32)).astype(dt)
    x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not enable_dropout)
    x = _constrain(x, ("batch", "length", "embed"))
    relpos = RelativePositionBiases(cfg.num_heads, cfg.relative_attention_num_buckets,
                                    cfg.relative_attention_max_distance, False, dt, pdt,
                                    name="relpos_bias")
    enc_valid = encoder_tokens_BxS > 0
    if decode:
      # Position of this step = number of tokens decoded so far (own scalar counter).
      initialized = self.has_variable("cache", "cache_index")
      index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
      if initialized:
        max_len = self.variables["cache"]["layers_0"]["self_attention"]["cached_key"].shape[1]
        bias = relpos(index.value[None], jnp.arange(max_len))
        index.value = index.value + 1
      else:  # cache creation pass over the full length
        pos = jnp.arange(length)
        bias = relpos(pos, pos)
      self_mask = None if initialized else _attention_mask(
          jnp.ones_like(decoder_input_tokens_BxL, bool), jnp.ones_like(decoder_input_tokens_BxL, bool))
      if not initialized:
        self_mask = jnp.logical_and(self_mask, jnp.tril(jnp.ones((length, length), bool)))
      # Query-independent [B, 1, 1, S]: broadcasts over the beams folded into the query axis.
      cross_mask = enc_valid[:, None, None, :]
    else:
      pos = jnp.arange(length)
      bias = relpos(pos, pos)
      q_valid = (decoder_target_tokens_BxL > 0 if decoder_target_tokens_BxL is not None else
                 jnp.ones(decoder_input_tokens_BxL.shape, bool))
      self_mask = _attention_mask(q_valid, q_valid, decoder_segment_ids, decoder_segment_ids)
      self_mask = jnp.logical_and(self_mask, jnp.tril(jnp.ones((length, length), bool)))
      if decoder_input_tokens_BxL.shape[0] != encoded_BxSxE.shape[0]:
        # Multi-target batches: T decoder rows per prompt (batch-major), folded into the query axis
        # of cross-attention like beams; padded target positions are masked by the loss weights.
        cross_mask = enc_valid[:, None, None, :]
      else:
        cross_mask = _attention_mask(q_valid, enc_valid, decoder_segment_ids, encoder_segment_ids)
    layer_cls = _maybe_remat(DecoderLayer, cfg.remat_policy, static_argnums=(6, 7))
    for i in range(cfg.num_decoder_layers):
      x = layer_cls(cfg, name=f"layers_{i}")(x, encoded_BxSxE, self_mask, cross_mask, bias,
                                             enable_dropout, decode)
    x = RMSNorm(cfg.layer_norm_epsilon, dt, pdt, name="decoder_norm")(x)
    x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not enable_dropout)
    logits_BxLxV = Dense(cfg.vocab_size, ("embed", "vocab"), dtype=dt, param_dtype=pdt,
                         name="logits_dense")(x)
    logits_BxLxV = _constrain(logits_BxLxV, ("batch", "length", "vocab"))
    return logits_BxLxV.astype(jnp.float32)


class Transformer(base.EncoderDecoderModule):
  """T5.1.1 encoder-decoder (a `base.FamilyModule`; `decode` and `__call__` from
  `base.EncoderDecoderModule`).

  Dropout needs the 'dropout' RNG stream when `enable_dropout=True` and `dropout_rate > 0`.
  Logits are returned in float32 whatever the compute dtype.
  """
  config: T5Config

  def setup(self):
    cfg = self.config
    self.token_embedder = nn.Embed(
        num_embeddings=cfg.vocab_size, features=cfg.emb_dim, dtype=_dt(cfg.dtype),
        param_dtype=_dt(cfg.param_dtype),
        embedding_init=nn.with_logical_partitioning(nn.initializers.normal(stddev=1.0),
                                                    ("vocab", "embed")))
    self.encoder = Encoder(cfg, self.token_embedder)
    self.decoder = Decoder(cfg, self.token_embedder)

  def encode(self, encoder_input_tokens, enable_dropout=True, encoder_segment_ids=None):
    """Returns `encoded_BxLxE` for `encoder_input_tokens` [B, L] (0 = padding)."""
    return self.encoder(encoder_input_tokens, encoder_segment_ids, enable_dropout)


class T5Model(base.EncoderDecoderModel):
  """T5.1.1 behind the model interface (`t2t_jax.models.base.EncoderDecoderModel`)."""

  config_class = T5Config
  module_class = Transformer

  def init_from_pretrained(self, path: str, *, seed: int = 0) -> dict | None:
    """A Hugging Face T5 v1.1 / flan-T5 dir (config.json + safetensors; vocabulary extended for
    ID tokens); None without config.json."""
    if os.path.exists(os.path.join(path, hf_convert.CONFIG_FILE)):
      return hf_convert.load_hf_t5(path, self.config, seed=seed)
    return super().init_from_pretrained(path, seed=seed)


def init_params(config: T5Config, rng, batch_size: int = 1, input_length: int = 8,
                target_length: int = 8):
  """Boxed (nn.Partitioned) parameters for `Transformer(config)`; unbox with `nn.unbox`."""
  return T5Model(config).init_params(rng, batch_size=batch_size, input_length=input_length,
                                     target_length=target_length)
