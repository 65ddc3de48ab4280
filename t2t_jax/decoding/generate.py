"""Glue between the model interface and beam search: prompts -> top-K catalog rows.

The model (`t2t_jax.models.base.EncoderDecoderModel`) encodes each prompt once and projects its
cross-attention keys/values once (`init_decode_state`); beam search then calls `decode_step` on one
token per beam, carrying only the self-attention cache (gathered by beam) while the per-prompt
context stays fixed.  Nothing here knows the model family.
"""

from __future__ import annotations

import jax.numpy as jnp

from t2t_jax.decoding.beam_search import beam_search
from t2t_jax.decoding.index import ConstraintIndex, subtree_levels, subtree_max_device
from t2t_jax.models import build_model
from t2t_jax.models.bert import mean_pool


def make_recommend_fn(model, index: ConstraintIndex, *, beam_size: int, top_k: int,
                      max_decode_len: int | None = None, constrained: bool = True,
                      decoder_start_id: int = 0, num_groups: int = 1,
                      diversity_penalty: float = 0.0, scoring: str = "log_prob"):
  """Returns `fn(params, encoder_input_tokens_BxL, index=None, node_prior_BxS=None, row_prior_BxR=None,
  dense_RxE=None) -> (rows_BxK, scores_BxK)`.

  `fn` is pure and jittable.  Pass `index` as an argument (rather than relying on the one captured
  here) when jitting with a large catalog, so its arrays are jit inputs, not compile-time constants.
  Priors (constrained decoding; `beam_search`'s node prior), at most one of:
    node_prior_BxS: per-prompt trie-node bonuses already built on the host (`index.subtree_max`);
    row_prior_BxR / dense_RxE: a per-prompt bonus of every ID-table row (e.g. a weighted BM25 share)
      and / or a dense table whose rows, dotted with the prompt's mean-pooled, L2-normalised encoder
      states, are added to it (rows = weight x unit track vectors: a weighted cosine, the
      sentence-transformers query embedding when the encoder is a sentence encoder).  Both are
      combined and spread over the trie (`index.subtree_max_device`) inside the function, so the
      encoder runs once per prompt and nothing returns to the host between the prior and the search.

  Args:
    model: an `EncoderDecoderModel` or a model config (`t2t_jax.models.build_model`).
    index: the catalog's `ConstraintIndex`.
    beam_size, top_k: beams per prompt and outputs per prompt (top_k may exceed beam_size).
    max_decode_len: maximum ID length in tokens (default: the catalog's longest ID).
    constrained: False decodes freely; rows are -1 for generated sequences not in the catalog.
    decoder_start_id: T5's decoder start token (PAD = 0).
    num_groups, diversity_penalty: grouped (diverse) beam search, see `beam_search`.
    scoring: "log_prob" (default) or "logit": how beams are ranked, see `beam_search`.
  """
  model = build_model(model)
  captured = index
  max_len = int(max_decode_len or index.max_depth)
  levels = []  # the trie's static depth ranges, computed at the first trace that needs them

  def fn(params, encoder_input_tokens_BxL, index=None, node_prior_BxS=None, row_prior_BxR=None,
         dense_RxE=None):
    ix = captured if index is None else index
    batch = encoder_input_tokens_BxL.shape[0]
    encoded = None
    if row_prior_BxR is not None or dense_RxE is not None:
      if node_prior_BxS is not None:
        raise ValueError("pass a node prior or a row / dense prior, not both")
      prior_BxR = 0.0 if row_prior_BxR is None else jnp.asarray(row_prior_BxR, jnp.float32)
      if dense_RxE is not None:
        encoded = model.encode(params, encoder_input_tokens_BxL)
        query_BxE = mean_pool(encoded, encoder_input_tokens_BxL)
        prior_BxR = prior_BxR + query_BxE @ jnp.asarray(dense_RxE, jnp.float32).T
      if not levels:
        levels.append(subtree_levels(captured))
      node_prior_BxS = subtree_max_device(ix, jnp.broadcast_to(prior_BxR, (batch, ix.num_rows)), levels[0])
    state = model.init_decode_state(params, encoder_input_tokens_BxL, beam_size=beam_size,
                                    max_decode_len=max_len, encoded=encoded)

    def tokens_to_logits(tokens_Mx1, cache):
      return model.decode_step(params, tokens_Mx1, cache, state.context)

    return beam_search(tokens_to_logits, state.cache, ix, batch_size=batch, beam_size=beam_size,
                       top_k=top_k, max_decode_len=max_len, decoder_start_id=decoder_start_id,
                       constrained=constrained, num_groups=num_groups,
                       diversity_penalty=diversity_penalty, scoring=scoring,
                       node_prior_BxS=node_prior_BxS)

  return fn


def score_rows(model, params, encoder_input_tokens_BxL, token_seqs_BxRxL, *,
               decoder_start_id: int = 0):
  """Teacher-forced sum of log-probs of R candidate sequences per prompt ([B, R] float32)."""
  return build_model(model).score_sequences(params, encoder_input_tokens_BxL, token_seqs_BxRxL,
                                          decoder_start_id=decoder_start_id)
