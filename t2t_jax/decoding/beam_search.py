"""Beam search over a catalog trie, entirely inside jit (T5X `tokens_to_logits` seam).

Each step calls the model once on the last token of every beam (`tokens_Mx1`, M = batch * beam) and
gets `logits_MxV`.  Constrained mode never builds a [M, V] mask: a beam at trie node s reads the
`degree(s)` children of s (a contiguous slice of the index, see index.py), gathers the log-probs of
their tokens and scores those candidates only (`[B, beam * D]`, D = largest degree at that depth).
Candidates that end an ID go to the finished pool (top-K over pool + new), the others compete for
the beam.  So every output is a catalog row, the K outputs are distinct (each trie path finishes
once) and K may exceed the beam (the pool takes every finishing expansion, not just beam winners).

Scores are sums of log-probs (no length penalty): they only decrease along a path, so a batch
element is done once its K-th finished score is >= its best alive score, and the loop stops when
all are done (or the IDs' maximum length is reached).

Log-probs are `logit - logsumexp(logits)` gathered at the candidates: one reduction over V per beam
and no [M, V] log-prob array.

`scoring="logit"` ranks by sums of raw logits instead (no per-step normalisation).  Under
`ID_EMBEDDING_INIT='retrieval_residual'` the model starts with the same decoder state at every step
and ID token vectors that sum to their track's vector, so an ID's logit sum is the prompt's similarity
to its reconstructed track vector (the quantity residual codes are fitted to); log-probs subtract
each step's log-partition, which differs between prefixes once the decoder is trained.  Logit sums
need not decrease along a path, so that mode never stops early: every search runs the IDs' full
length.  Which ranks better is an empirical question per model (`compare_ids.beam_scorings`).

All arrays keep the batch axis first ([B, ...] or [B * beam, ...] batch-major), so the batch can be
sharded over the mesh 'data' axis; the index arrays are replicated.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Tuple

import jax
import jax.numpy as jnp

from t2t_jax.decoding.index import ConstraintIndex

NEG_INF = float("-inf")
SCORINGS = ("log_prob", "logit")

TokensToLogits = Callable[[jax.Array, Any], Tuple[jax.Array, Any]]


class _State(NamedTuple):
  step: jax.Array            # int32 scalar: tokens decoded so far
  tok_BxW: jax.Array         # int32 last token of each beam (fed to the model next)
  node_BxW: jax.Array        # int32 trie node of each beam (-1: left the catalog, free mode)
  score_BxW: jax.Array       # float32 sum of log-probs (-inf: dead beam)
  rank_BxW: jax.Array        # float32 selection score: score minus diversity penalties so far
  cache: Any                 # model cache, leading dim B * W
  fin_row_BxK: jax.Array     # int32 finished rows (-1 none / not in catalog)
  fin_score_BxK: jax.Array   # float32 finished scores (-inf: empty slot)


def gather_beams(tree, parent_BxW: jax.Array, batch_size: int, beam_size: int):
  """Reorders the [B * W, ...] leaves of `tree` by beam parent; scalar leaves are kept."""
  def gather(x):
    if x.ndim == 0:
      return x
    assert x.shape[0] == batch_size * beam_size, (x.shape, batch_size, beam_size)
    x_BxW = x.reshape((batch_size, beam_size) + x.shape[1:])
    y_BxW = jax.vmap(lambda xb, pb: jnp.take(xb, pb, axis=0))(x_BxW, parent_BxW)
    return y_BxW.reshape(x.shape)
  return jax.tree.map(gather, tree)


def _merge_finished(fin_row_BxK, fin_score_BxK, row_BxC, score_BxC, dedup: bool = False):
  """Keeps the K best of the finished pool and the new finished candidates.

  dedup: drop all but the best copy of a row (needed when beam groups can reach the same ID).
  """
  k = fin_score_BxK.shape[1]
  score = jnp.concatenate([fin_score_BxK, score_BxC], axis=1)
  row = jnp.concatenate([fin_row_BxK, row_BxC], axis=1)
  if dedup:
    by_score = jnp.argsort(-score, axis=1, stable=True)
    row_s = jnp.take_along_axis(row, by_score, axis=1)
    score_s = jnp.take_along_axis(score, by_score, axis=1)
    by_row = jnp.argsort(row_s, axis=1, stable=True)  # equal rows: best score first
    r = jnp.take_along_axis(row_s, by_row, axis=1)
    first = jnp.concatenate([jnp.ones_like(r[:, :1], bool), r[:, 1:] != r[:, :-1]], axis=1)
    keep_s = jnp.take_along_axis(first, jnp.argsort(by_row, axis=1), axis=1)
    row, score = row_s, jnp.where(keep_s | (row_s < 0), score_s, NEG_INF)
  top_score, idx = jax.lax.top_k(score, k)
  return jnp.take_along_axis(row, idx, axis=1), top_score


def _select_by_group(rank_BxWxD, tok_BxWxD, num_groups: int, diversity_penalty: float,
                     n_keep: int):
  """The `n_keep` best candidates of each beam group, groups choosing in turn.

  Group g (beams g * W / G .. (g + 1) * W / G - 1) ranks its candidates by `rank` minus
  `diversity_penalty` per beam of groups < g that chose the same token at this step; the first
  W / G picks of a group are the beams it keeps, so only their tokens penalise later groups.

  Args:
    rank_BxWxD: float32 selection score of candidate d of beam w (-inf: not a candidate).
    tok_BxWxD: int32 the candidates' tokens.
    num_groups, diversity_penalty: G and the per-repeat penalty.
    n_keep: picks per group (>= W / G, at most W / G * D).

  Returns:
    rank_BxGxN (penalised ranks, best first within a group) and idx_BxGxN (int32 indices into the
    [B, W * D] flattened candidates).
  """
  b, w, d = rank_BxWxD.shape
  wg = w // num_groups
  tok_BxC = tok_BxWxD.reshape(b, w * d)
  ranks, idxs, chosen = [], [], []
  for g in range(num_groups):
    rank_BxC = rank_BxWxD[:, g * wg:(g + 1) * wg].reshape(b, wg * d)
    if g > 0 and diversity_penalty:
      tok_g_BxC = tok_BxWxD[:, g * wg:(g + 1) * wg].reshape(b, wg * d)
      prev_BxP = jnp.concatenate(chosen, axis=1)
      hits_BxC = (tok_g_BxC[:, :, None] == prev_BxP[:, None, :]).sum(axis=2)
      rank_BxC = rank_BxC - diversity_penalty * hits_BxC
    r_BxN, i_BxN = jax.lax.top_k(rank_BxC, n_keep)
    i_BxN = i_BxN + g * wg * d  # index into the full [B, W * D] candidate list
    ranks.append(r_BxN)
    idxs.append(i_BxN)
    # Tokens of the beams this group keeps (-1, never a token, for dead ones).
    chosen.append(jnp.where(r_BxN[:, :wg] > NEG_INF,
                            jnp.take_along_axis(tok_BxC, i_BxN[:, :wg], axis=1), -1))
  return jnp.stack(ranks, axis=1), jnp.stack(idxs, axis=1)


def _constrained_step(state: _State, tokens_to_logits: TokensToLogits, index: ConstraintIndex,
                      width: int, batch_size: int, beam_size: int, num_groups: int = 1,
                      diversity_penalty: float = 0.0, scoring: str = "log_prob",
                      node_prior_BxS: jax.Array | None = None) -> _State:
  """One decode step whose candidates are the trie children (at most `width`) of each beam.

  With num_groups = G > 1 the beam is split into G groups of W / G beams that choose in turn; a
  candidate of group g loses `diversity_penalty` per beam of groups < g that chose the same token
  at this step (Hamming diversity, Vijayakumar et al. 2018; transformers' group beam search).
  Penalties steer selection (`rank`) only: reported scores stay true log-probs.
  """
  b, w, g_num = batch_size, beam_size, num_groups
  logits_MxV, cache = tokens_to_logits(state.tok_BxW.reshape(b * w, 1), state.cache)
  logits_BxWxV = logits_MxV.astype(jnp.float32).reshape(b, w, -1)
  # log p(token) = logit - logsumexp: one reduction over V, then only candidates are touched.
  lse_BxW = _log_partition(logits_BxWxV, scoring)

  first_BxW = index.first_child(state.node_BxW)
  deg_BxW = index.degree(state.node_BxW)
  offs_D = jnp.arange(width, dtype=jnp.int32)
  valid_BxWxD = offs_D < deg_BxW[..., None]
  node_BxWxD = jnp.where(valid_BxWxD, first_BxW[..., None] + offs_D, 0)
  tok_BxWxD = index.edge_token(node_BxWxD)
  lp_BxWxD = jnp.take_along_axis(logits_BxWxV, tok_BxWxD, axis=2) - lse_BxW[..., None]
  if node_prior_BxS is not None:  # + prior(child) - prior(parent): telescopes to the finished row's prior
    child_BxWxD = jnp.take_along_axis(node_prior_BxS, node_BxWxD.reshape(b, -1), axis=1).reshape(b, w, width)
    parent_BxW = jnp.take_along_axis(node_prior_BxS, jnp.maximum(state.node_BxW, 0), axis=1)
    lp_BxWxD = lp_BxWxD + jnp.where(valid_BxWxD, child_BxWxD - parent_BxW[..., None], 0.0)
  score_BxWxD = jnp.where(valid_BxWxD, state.score_BxW[..., None] + lp_BxWxD, NEG_INF)

  node_BxC = node_BxWxD.reshape(b, w * width)
  tok_BxC = tok_BxWxD.reshape(b, w * width)
  score_BxC = score_BxWxD.reshape(b, w * width)

  # Candidates that complete an ID join the finished pool.
  row_BxC = index.row_of(node_BxC)
  fin_row, fin_score = _merge_finished(state.fin_row_BxK, state.fin_score_BxK, row_BxC,
                                       jnp.where(row_BxC >= 0, score_BxC, NEG_INF),
                                       dedup=g_num > 1)
  # Candidates with children compete for the beam (per group).
  alive_BxWxD = (index.degree(node_BxWxD) > 0) & valid_BxWxD
  rank_BxWxD = jnp.where(alive_BxWxD, state.rank_BxW[..., None] + lp_BxWxD, NEG_INF)
  rank_BxGxN, idx_BxGxN = _select_by_group(rank_BxWxD, tok_BxWxD, g_num, diversity_penalty,
                                           w // g_num)
  rank_BxW = rank_BxGxN.reshape(b, w)
  idx_BxW = idx_BxGxN.reshape(b, w)
  parent_BxW = idx_BxW // width
  return _State(
      step=state.step + 1,
      tok_BxW=jnp.take_along_axis(tok_BxC, idx_BxW, axis=1),
      node_BxW=jnp.take_along_axis(node_BxC, idx_BxW, axis=1),
      score_BxW=jnp.where(rank_BxW > NEG_INF, jnp.take_along_axis(score_BxC, idx_BxW, axis=1),
                          NEG_INF),
      rank_BxW=rank_BxW,
      cache=gather_beams(cache, parent_BxW, b, w),
      fin_row_BxK=fin_row, fin_score_BxK=fin_score)


def _free_step(state: _State, tokens_to_logits: TokensToLogits, index: ConstraintIndex,
               max_steps: int, batch_size: int, beam_size: int, num_groups: int = 1,
               diversity_penalty: float = 0.0, scoring: str = "log_prob") -> _State:
  """One unconstrained step: any token; paths are followed in the trie only to name the row.

  Groups (num_groups > 1) choose in turn with the diversity penalty of `_constrained_step`
  (`_select_by_group`); EOS finishes every live beam with its true score, unpenalised, and is no
  beam's choice.  Scores stay true log-probs.
  """
  b, w, g_num = batch_size, beam_size, num_groups
  wg = w // g_num
  k = state.fin_score_BxK.shape[1]
  logits_MxV, cache = tokens_to_logits(state.tok_BxW.reshape(b * w, 1), state.cache)
  logits_BxWxV = logits_MxV.astype(jnp.float32).reshape(b, w, -1)
  lse_BxW = _log_partition(logits_BxWxV, scoring)
  eos = index.eos_id

  # EOS ends a sequence (EOS is part of the ID only when the catalog's rows are EOS-terminated).
  eos_score_BxW = state.score_BxW + logits_BxWxV[..., eos] - lse_BxW
  eos_node_BxW = index.child(state.node_BxW, eos) if index.eos_terminated else state.node_BxW
  eos_row_BxW = index.row_of(eos_node_BxW)

  # Other tokens: each group's best max(W / G, K) continuations; its first W / G stay alive, all
  # finish at the last step.  Two-stage top-k: per beam the n + 1 + P best tokens (the n best
  # non-EOS are among them even after penalties: at most P = W - W / G tokens are penalised, and a
  # penalty only lowers a rank), then each group's best n of its W / G * (n + 1 + P) candidates;
  # never materialises a [B, W, V] score array.
  n_keep = max(wg, k)
  n_keep_beam = min(n_keep + 1 + (w - wg), logits_BxWxV.shape[-1])
  n_keep = min(n_keep, wg * n_keep_beam)
  # On a 2-D operand: XLA:CPU turns a 3-D top_k inside the loop into a full sort (~60x slower).
  top_logit_MxN, top_tok_MxN = jax.lax.top_k(logits_BxWxV.reshape(b * w, -1), n_keep_beam)
  top_logit_BxWxN = top_logit_MxN.reshape(b, w, n_keep_beam)
  top_tok_BxWxN = top_tok_MxN.reshape(b, w, n_keep_beam).astype(jnp.int32)
  is_eos_BxWxN = top_tok_BxWxN == eos
  score_BxWxN = jnp.where(is_eos_BxWxN, NEG_INF,
                          state.score_BxW[..., None] + top_logit_BxWxN - lse_BxW[..., None])
  rank_BxWxN = jnp.where(is_eos_BxWxN, NEG_INF,
                         state.rank_BxW[..., None] + top_logit_BxWxN - lse_BxW[..., None])
  rank_BxGxN, idx_BxGxN = _select_by_group(rank_BxWxN, top_tok_BxWxN, g_num, diversity_penalty,
                                           n_keep)
  idx_BxN = idx_BxGxN.reshape(b, g_num * n_keep)
  rank_BxN = rank_BxGxN.reshape(b, g_num * n_keep)
  score_BxN = jnp.where(rank_BxN > NEG_INF,
                        jnp.take_along_axis(score_BxWxN.reshape(b, -1), idx_BxN, axis=1), NEG_INF)
  parent_BxN = idx_BxN // n_keep_beam
  tok_BxN = jnp.take_along_axis(top_tok_BxWxN.reshape(b, -1), idx_BxN, axis=1)
  node_BxN = index.child(jnp.take_along_axis(state.node_BxW, parent_BxN, axis=1), tok_BxN)
  is_last = state.step + 1 >= max_steps
  last_score_BxN = jnp.where(is_last, score_BxN, NEG_INF)

  fin_row, fin_score = _merge_finished(
      state.fin_row_BxK, state.fin_score_BxK,
      jnp.concatenate([eos_row_BxW, index.row_of(node_BxN)], axis=1),
      jnp.concatenate([eos_score_BxW, last_score_BxN], axis=1), dedup=g_num > 1)
  alive = lambda x_BxN: x_BxN.reshape(b, g_num, n_keep)[:, :, :wg].reshape(b, w)
  return _State(
      step=state.step + 1,
      tok_BxW=alive(tok_BxN), node_BxW=alive(node_BxN), score_BxW=alive(score_BxN),
      rank_BxW=alive(rank_BxN),
      cache=gather_beams(cache, alive(parent_BxN), b, w),
      fin_row_BxK=fin_row, fin_score_BxK=fin_score)


def _log_partition(logits_BxWxV: jax.Array, scoring: str) -> jax.Array:
  """What each step subtracts from a candidate's logit: logsumexp (log-probs) or 0 (raw logits)."""
  if scoring == "logit":
    return jnp.zeros(logits_BxWxV.shape[:-1], logits_BxWxV.dtype)
  return jax.nn.logsumexp(logits_BxWxV, axis=-1)


def _not_done(state: _State, max_steps: int, monotone: bool = True) -> jax.Array:
  """Whether to decode another step.  With monotone scores (log-probs) a batch element is done once its
  K-th finished score is >= its best alive score; otherwise only the length bounds the search."""
  if not monotone:
    return state.step < max_steps
  best_alive_B = state.score_BxW.max(axis=1)
  worst_fin_B = state.fin_score_BxK[:, -1]
  return (state.step < max_steps) & jnp.any(best_alive_B > worst_fin_B)


def beam_search(tokens_to_logits: TokensToLogits, initial_cache, index: ConstraintIndex, *,
                batch_size: int, beam_size: int, top_k: int, max_decode_len: int | None = None,
                decoder_start_id: int = 0, constrained: bool = True, num_groups: int = 1,
                diversity_penalty: float = 0.0, scoring: str = "log_prob",
                node_prior_BxS: jax.Array | None = None):
  """Beam search returning the top-K catalog rows per prompt (jittable, no host round trips).

  Args:
    tokens_to_logits: `(tokens_Mx1, cache) -> (logits_MxV, new_cache)`, M = batch_size * beam_size
      (batch-major: beam j of prompt b is row b * beam_size + j).
    initial_cache: pytree whose array leaves have leading dim M (scalar leaves are never gathered).
    index: `build_index(...)` of the catalog.
    batch_size, beam_size, top_k: B, W, K (K may exceed W).
    max_decode_len: maximum tokens per ID (default: the catalog's longest ID).
    decoder_start_id: first decoder input token (T5: PAD = 0).
    constrained: False decodes freely (any token), ends at EOS or `max_decode_len` and maps each
      sequence to its catalog row, -1 when it is not in the catalog (see `invalid_share`).
    num_groups, diversity_penalty: diversified (grouped) beam search, constrained or free (Hugging
      Face's `num_beam_groups` / `diversity_penalty`): the beam is split into `num_groups` groups
      (dividing beam_size) that choose in turn at every step; a group's candidates lose
      `diversity_penalty` (>= 0) for each earlier group's beam that chose the same token at that
      step, for the same prompt.  Penalties steer selection only: returned scores are true
      log-probs.  With several groups, outputs that are the same catalog row are merged (the best
      copy kept); in free mode a sequence outside the catalog that several groups generate stays
      repeated (row -1 each time).
    scoring: "log_prob" (sums of log-probs, the default) or "logit" (sums of raw logits, see the
      module docstring; no early stop).
    node_prior_BxS: optional float [B, num_nodes] per-prompt bonus of every trie node, at most its
      parent's (e.g. `w * index.subtree_max(index, lexical_scores_BxN)`): each step adds
      prior(child) - prior(parent), so a finished row scores model + prior(row) - prior(root) and
      scores still only decrease (early stop stays exact).  Constrained mode only.

  Returns:
    rows_BxK int32 (ID-table rows, best first; -1 where fewer than K were found or, in free mode,
    the sequence is not an ID) and scores_BxK float32 (sums of log-probs, or of logits with
    scoring="logit"; plus prior(row) - prior(root) with a node prior; -inf for empty slots).
  """
  b, w, k = batch_size, beam_size, top_k
  assert w >= 1 and k >= 1, (w, k)
  if num_groups < 1 or w % num_groups:
    raise ValueError(f"num_groups={num_groups} must divide beam_size={w}")
  if num_groups > 1 and not diversity_penalty >= 0:
    raise ValueError(f"diversity_penalty={diversity_penalty} must be >= 0")
  if scoring not in SCORINGS:
    raise ValueError(f"scoring={scoring!r} is not one of {SCORINGS}")
  if node_prior_BxS is not None:
    if not constrained:
      raise ValueError("node_prior_BxS needs constrained decoding (free decoding leaves the trie)")
    if tuple(node_prior_BxS.shape) != (b, index.num_nodes):
      raise ValueError(f"node_prior_BxS {tuple(node_prior_BxS.shape)}: expected {(b, index.num_nodes)}")
  max_steps = index.max_depth if max_decode_len is None else int(max_decode_len)
  if constrained:
    max_steps = min(max_steps, index.max_depth)
  # Only the first beam of each group is live at the start (all beams are the same empty prefix).
  wg = w // num_groups
  init_BxW = jnp.tile(jnp.array([0.0 if j % wg == 0 else NEG_INF for j in range(w)], jnp.float32),
                      (b, 1))
  state = _State(
      step=jnp.zeros((), jnp.int32),
      tok_BxW=jnp.full((b, w), decoder_start_id, jnp.int32),
      node_BxW=jnp.zeros((b, w), jnp.int32),
      score_BxW=init_BxW,
      rank_BxW=init_BxW,
      cache=initial_cache,
      fin_row_BxK=jnp.full((b, k), -1, jnp.int32),
      fin_score_BxK=jnp.full((b, k), NEG_INF, jnp.float32))

  if constrained:
    # The root step gets its own width (the root is often the widest node); later steps share the
    # widest degree below the root.
    step = functools.partial(_constrained_step, tokens_to_logits=tokens_to_logits, index=index,
                             batch_size=b, beam_size=w, num_groups=num_groups,
                             diversity_penalty=diversity_penalty, scoring=scoring,
                             node_prior_BxS=None if node_prior_BxS is None
                             else jnp.asarray(node_prior_BxS, jnp.float32))
    state = step(state, width=max(index.max_degree[0], 1))
    width = max(max(index.max_degree[1:max_steps], default=1), 1)
    body = lambda s: step(s, width=width)
  else:
    body = lambda s: _free_step(s, tokens_to_logits, index, max_steps, b, w, num_groups,
                                diversity_penalty, scoring)
  if max_steps > 0:
    monotone = scoring == "log_prob"
    state = jax.lax.while_loop(lambda s: _not_done(s, max_steps, monotone), body, state)
  rows_BxK = jnp.where(state.fin_score_BxK > NEG_INF, state.fin_row_BxK, -1)
  return rows_BxK, state.fin_score_BxK


def invalid_share(rows_BxK, scores_BxK) -> jax.Array:
  """Share of produced (finite-score) outputs that are not catalog IDs (free decoding)."""
  produced = scores_BxK > NEG_INF
  return jnp.sum(produced & (rows_BxK < 0)) / jnp.maximum(jnp.sum(produced), 1)
