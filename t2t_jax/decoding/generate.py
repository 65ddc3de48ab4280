"""Glue between the T5 model (CONTRACTS.md model API) and beam search: prompts -> top-K catalog rows.

The encoder runs once per prompt; its output and the prompt tokens are repeated per beam
(batch-major, as T5X's `flat_batch_beam_expand`), the KV cache is made for B * beam rows, and each
beam-search step calls `model.decode(..., decode=True)` on one token per beam.

Cross-attention keys/values.  `models/t5.py` recomputes the encoder-decoder attention's key and
value projections from the encoder output at every decode step, for every beam: at T5-small,
8 decoder layers x 2 x [S=32, 512] x [512, 384] per beam and step, ~70% of a decode step's FLOPs
(transformers caches them).  With `cache_cross_attention=True` (default) they are computed once per
prompt, before the loop, and handed to the model through `flax.linen.intercept_methods`, which
replaces the `key`/`value` Dense calls of every `encoder_decoder_attention` module at trace time (no
run-time cost).  The number of replaced calls is checked, so a renamed module fails loudly instead
of silently decoding slowly; results are identical (tested).  The proper home of this cache is the
model's decode path; when it has one, drop the interceptor.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2t_jax.decoding.beam_search import beam_search
from t2t_jax.decoding.index import ConstraintIndex


def make_recommend_fn(model, index: ConstraintIndex, *, beam_size: int, top_k: int,
                      max_decode_len: int | None = None, constrained: bool = True,
                      decoder_start_id: int = 0, cache_cross_attention: bool = True):
  """Returns `fn(params, encoder_input_tokens_BxL, index=None) -> (rows_BxK, scores_BxK)`.

  `fn` is pure and jittable.  Pass `index` as an argument (rather than relying on the one captured
  here) when jitting with a large catalog, so its arrays are jit inputs, not compile-time constants.

  Args:
    model: `t2t_jax.models.t5.Transformer` (anything with `.config`, `encode` and `decode`).
    index: the catalog's `ConstraintIndex`.
    beam_size, top_k: beams per prompt and outputs per prompt (top_k may exceed beam_size).
    max_decode_len: maximum ID length in tokens (default: the catalog's longest ID).
    constrained: False decodes freely; rows are -1 for generated sequences not in the catalog.
    decoder_start_id: T5's decoder start token (PAD = 0).
    cache_cross_attention: compute the cross-attention keys/values once per prompt (see above).
  """
  from t2t_jax.models.t5 import init_cache  # lazy: keeps decoding importable without the model
  captured = index
  max_len = int(max_decode_len or index.max_depth)

  def fn(params, encoder_input_tokens_BxL, index=None):
    ix = captured if index is None else index
    params = nn.unbox(params)
    batch = encoder_input_tokens_BxL.shape[0]
    m = batch * beam_size
    encoded_BxLxE = model.apply({"params": params}, encoder_input_tokens_BxL, enable_dropout=False,
                                method=model.encode)
    encoded_MxLxE = jnp.repeat(encoded_BxLxE, beam_size, axis=0)
    inputs_MxL = jnp.repeat(encoder_input_tokens_BxL, beam_size, axis=0)
    cache = init_cache(model.config, m, max_len)
    cross_kv = None
    if cache_cross_attention:
      cross_kv = {k: jnp.repeat(v, beam_size, axis=0) for k, v in
                  _cross_attention_kv(model, params, encoded_BxLxE, encoder_input_tokens_BxL).items()}

    def tokens_to_logits(tokens_Mx1, cache):
      apply = functools.partial(
          model.apply, {"params": params, "cache": cache}, encoded_MxLxE, inputs_MxL, tokens_Mx1,
          enable_dropout=False, decode=True, mutable=["cache"], method=model.decode)
      if cross_kv is None:
        logits_Mx1xV, mutated = apply()
      else:
        hits = []
        with nn.intercept_methods(_replay_cross_kv(cross_kv, hits)):
          logits_Mx1xV, mutated = apply()
        if len(hits) != len(cross_kv):
          raise RuntimeError(f"cross-attention cache: replaced {len(hits)} key/value calls, expected "
                             f"{len(cross_kv)}; the model's module names changed (see generate.py)")
      return logits_Mx1xV[:, 0, :], mutated["cache"]

    return beam_search(tokens_to_logits, cache, ix, batch_size=batch, beam_size=beam_size,
                       top_k=top_k, max_decode_len=max_len, decoder_start_id=decoder_start_id,
                       constrained=constrained)

  return fn


def _cross_kv_name(module):
  """('layers_i', 'key'|'value') for the K/V projections of cross-attention, else None."""
  parent = module.parent
  if (isinstance(parent, nn.Module) and parent.name == "encoder_decoder_attention"
      and module.name in ("key", "value") and isinstance(parent.parent, nn.Module)):
    return parent.parent.name, module.name
  return None


def _cross_attention_kv(model, params, encoded_BxSxE, encoder_input_tokens_BxS):
  """Runs the decoder once on a dummy token and records every cross-attention K/V projection."""
  recorded = {}

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == "__call__":
      name = _cross_kv_name(context.module)
      if name is not None:
        recorded[name] = out
    return out

  dummy_Bx1 = jnp.zeros((encoded_BxSxE.shape[0], 1), jnp.int32)
  with nn.intercept_methods(record):
    model.apply({"params": params}, encoded_BxSxE, encoder_input_tokens_BxS, dummy_Bx1,
                enable_dropout=False, method=model.decode)
  assert recorded, "no encoder_decoder_attention key/value projections found in the model"
  return recorded


def _replay_cross_kv(cross_kv, hits):
  def replay(next_fun, args, kwargs, context):
    if context.method_name == "__call__":
      name = _cross_kv_name(context.module)
      if name is not None:
        hits.append(name)
        return cross_kv[name]
    return next_fun(*args, **kwargs)
  return replay


def score_rows(model, params, encoder_input_tokens_BxL, token_seqs_BxRxL, *,
               decoder_start_id: int = 0):
  """Teacher-forced sum of log-probs of R candidate sequences per prompt ([B, R] float32).

  Reference for tests and re-ranking: sequences are 0-padded; padding contributes nothing.
  """
  params = nn.unbox(params)
  b, r, length = token_seqs_BxRxL.shape
  targets_NxL = token_seqs_BxRxL.reshape(b * r, length).astype(jnp.int32)
  inputs_NxL = jnp.concatenate(
      [jnp.full((b * r, 1), decoder_start_id, jnp.int32), targets_NxL[:, :-1]], axis=1)
  enc_NxS = jnp.repeat(encoder_input_tokens_BxL, r, axis=0)
  logits_NxLxV = model.apply({"params": params}, enc_NxS, inputs_NxL, targets_NxL,
                             enable_dropout=False)
  logp_NxLxV = jax.nn.log_softmax(logits_NxLxV.astype(jnp.float32), axis=-1)
  lp_NxL = jnp.take_along_axis(logp_NxLxV, targets_NxL[..., None], axis=-1)[..., 0]
  return jnp.where(targets_NxL > 0, lp_NxL, 0.0).sum(axis=1).reshape(b, r)
