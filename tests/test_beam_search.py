"""Property tests for t2t_jax.decoding.beam_search with random catalogs and a random toy model.

The toy model's logits depend on the whole decoded prefix (a rolling hash kept in the cache), so a
wrong cache reordering changes the scores; a brute-force reference scores every catalog ID by
teacher forcing through the same `tokens_to_logits`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from t2t_jax.decoding.beam_search import beam_search, invalid_share
from t2t_jax.decoding.index import build_index, subtree_levels, subtree_max, subtree_max_device

HASH = 1009


def _toy_model(vocab, seed):
  table_HxV = 3.0 * jax.random.normal(jax.random.PRNGKey(seed), (HASH, vocab))

  def tokens_to_logits(tokens_Mx1, cache):
    h = (cache["h"] * 131 + tokens_Mx1[:, 0] + 7) % HASH
    new = dict(cache, h=h, index=cache["index"] + 1, seen=cache["seen"] + 1)
    return table_HxV[h], new

  return tokens_to_logits


def _initial_cache(prompts_B, beam):
  m = len(prompts_B) * beam
  return {"h": jnp.repeat(jnp.asarray(prompts_B, jnp.int32), beam),
          "seen": jnp.zeros((m, 2), jnp.int32), "index": jnp.zeros((), jnp.int32)}


def _brute_force(tokens_to_logits, prompts_B, seqs_NxL, scoring="log_prob"):
  """[B, N] sum of log-probs (scoring="logit": of raw logits) of every catalog row for every prompt."""
  n, length = seqs_NxL.shape
  out = []
  for p in prompts_B:
    cache = _initial_cache([p], n)
    tok = jnp.zeros((n, 1), jnp.int32)
    total = jnp.zeros(n)
    for t in range(length):
      logits, cache = tokens_to_logits(tok, cache)
      lp = (logits if scoring == "logit" else jax.nn.log_softmax(logits))[jnp.arange(n), seqs_NxL[:, t]]
      total = total + jnp.where(seqs_NxL[:, t] > 0, lp, 0.0)
      tok = jnp.asarray(seqs_NxL[:, t:t + 1])
    out.append(np.asarray(total))
  return np.stack(out)


def _catalog(rng, n, length, vocab, variable):
  rows = set()
  while len(rows) < n:
    size = int(rng.integers(1, length + 1)) if variable else length
    body = tuple(int(t) for t in rng.integers(3, vocab, size))
    rows.add(body + ((1,) if variable else ()))
  rows = sorted(rows, key=hash)
  out = np.zeros((n, max(map(len, rows))), np.int32)
  for i, r in enumerate(rows):
    out[i, :len(r)] = r
  return out


def _run(seqs, vocab, prompts, beam, k, seed=0, **kw):
  index = build_index(seqs, vocab)
  t2l = _toy_model(vocab, seed)
  fn = jax.jit(functools.partial(beam_search, t2l, batch_size=len(prompts), beam_size=beam,
                                 top_k=k, **kw))
  rows, scores = fn(_initial_cache(prompts, beam), index)
  return np.asarray(rows), np.asarray(scores), _brute_force(t2l, prompts, seqs, kw.get("scoring", "log_prob"))


@pytest.mark.parametrize("variable", [False, True])
def test_full_beam_equals_brute_force(variable):
  rng = np.random.default_rng(1 if variable else 0)
  seqs = _catalog(rng, 40, 3, 8, variable)
  prompts = [3, 17, 250]
  rows, scores, ref_BxN = _run(seqs, 8, prompts, beam=40, k=12)
  order = np.argsort(-ref_BxN, axis=1)[:, :12]
  np.testing.assert_array_equal(rows, order)
  np.testing.assert_allclose(scores, np.take_along_axis(ref_BxN, order, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variable", [False, True])
def test_logit_scoring_full_beam_equals_brute_force_of_logit_sums(variable):
  rng = np.random.default_rng(11 if variable else 10)
  seqs = _catalog(rng, 40, 3, 8, variable)
  prompts = [3, 17, 250]
  rows, scores, ref_BxN = _run(seqs, 8, prompts, beam=40, k=12, scoring="logit")
  order = np.argsort(-ref_BxN, axis=1)[:, :12]
  # Exact although logit sums rise along some paths: an early stop (the log-prob rule) would miss them.
  np.testing.assert_array_equal(rows, order)
  np.testing.assert_allclose(scores, np.take_along_axis(ref_BxN, order, 1), rtol=1e-5, atol=1e-5)
  assert (scores[:, 0] > 0).any()  # log-probs are never > 0: these are logits
  # The two rankings differ on this model (each step's log-partition depends on the prefix).
  t2l = _toy_model(8, 0)
  logp_order = np.argsort(-_brute_force(t2l, prompts, seqs), axis=1)[:, :12]
  assert (logp_order != order).any()


def test_logit_scoring_small_beam_reports_exact_logit_sums():
  rng = np.random.default_rng(12)
  seqs = _catalog(rng, 200, 4, 12, False)
  rows, scores, ref_BxN = _run(seqs, 12, [1, 2], beam=4, k=10, scoring="logit")
  for b in range(2):
    found = rows[b][rows[b] >= 0]
    assert len(found) >= 4 and len(set(found.tolist())) == len(found)
    np.testing.assert_allclose(scores[b][:len(found)], ref_BxN[b, found], rtol=1e-5, atol=1e-5)
    assert (np.diff(scores[b][:len(found)]) <= 0).all()


def test_unknown_scoring_is_refused():
  seqs = _catalog(np.random.default_rng(0), 10, 2, 8, False)
  with pytest.raises(ValueError, match="scoring='prob' is not one of"):
    _run(seqs, 8, [1], beam=2, k=2, scoring="prob")


def test_subtree_max_by_hand():
  # Fixed length: nodes 0 root; 1 (3), 2 (6), 3 (7); leaves 4 (3,4) row 0, 5 (3,5) row 1, 6 (6,4) row 2, 7 (7,8) row 3.
  index = build_index(np.array([[3, 4], [3, 5], [6, 4], [7, 8]]), 10)
  got = subtree_max(index, np.array([[0.1, 0.9, 0.3, 0.2], [1.0, 0.0, -2.0, 0.0]]))
  np.testing.assert_allclose(got, [[0.9, 0.9, 0.3, 0.2, 0.1, 0.9, 0.3, 0.2],
                                   [1.0, 1.0, -2.0, 0.0, 1.0, 0.0, -2.0, 0.0]])
  # EOS-terminated, variable length: row 0 = (3, EOS) ends at depth 2 beside (3, 4) which goes on.
  index = build_index(np.array([[3, 1, 0], [3, 4, 1], [5, 1, 0]]), 10)
  got = subtree_max(index, np.array([[0.5, 0.7, 0.1]]))
  row_node = {int(r): index.row_base + i for i, r in enumerate(np.asarray(index.terminal_row)) if r >= 0}
  assert got[0, 0] == np.float32(0.7) and [got[0, row_node[r]] for r in range(3)] == [np.float32(x) for x in (0.5, 0.7, 0.1)]
  assert sorted(got[0, 1:3].tolist()) == [np.float32(0.1), np.float32(0.7)]  # (3): max(0.5, 0.7); (5): 0.1
  with pytest.raises(ValueError, match="expected \\[batch, 3\\]"):
    subtree_max(index, np.zeros((1, 4)))
  with pytest.raises(ValueError, match="finite"):
    subtree_max(index, np.array([[0.0, np.nan, 1.0]]))


@pytest.mark.parametrize("variable", [False, True])
def test_subtree_max_device_equals_the_host_one(variable):
  rng = np.random.default_rng(7)
  seqs = _catalog(rng, 300, 3, 12, variable)
  index = build_index(seqs, 12)
  scores = rng.normal(size=(3, index.num_rows)).astype(np.float32)
  levels = subtree_levels(index)
  # Root first; each depth's children are the next depth's nodes.
  assert levels[0][:3] == (0, 1, 1) and all(a[2] == b[0] for a, b in zip(levels, levels[1:]))
  assert len(levels) == index.max_depth and levels[-1][3] == index.num_nodes
  # The index as a jit argument (tracers): the depth ranges come in as static ints.
  got = jax.jit(lambda ix, s: subtree_max_device(ix, s, levels))(index, scores)
  np.testing.assert_array_equal(np.asarray(got), subtree_max(index, scores))
  np.testing.assert_array_equal(np.asarray(subtree_max_device(index, scores)), subtree_max(index, scores))


def _prior_run(seqs, vocab, prompts, beam, k, prior_BxN, **kw):
  index = build_index(seqs, vocab)
  t2l = _toy_model(vocab, 0)
  node_prior = subtree_max(index, prior_BxN)
  fn = jax.jit(functools.partial(beam_search, t2l, batch_size=len(prompts), beam_size=beam, top_k=k, **kw))
  rows, scores = fn(_initial_cache(prompts, beam), index, node_prior_BxS=node_prior)
  ref_BxN = _brute_force(t2l, prompts, seqs, kw.get("scoring", "log_prob"))
  return np.asarray(rows), np.asarray(scores), ref_BxN + prior_BxN - prior_BxN.max(axis=1, keepdims=True)


@pytest.mark.parametrize("variable,scoring", [(False, "log_prob"), (True, "log_prob"), (False, "logit")])
def test_node_prior_full_beam_equals_brute_force_plus_row_prior(variable, scoring):
  rng = np.random.default_rng(20)
  seqs = _catalog(rng, 40, 3, 8, variable)
  prompts = [3, 17]
  prior = 4.0 * rng.random((2, 40)).astype(np.float32)
  rows, scores, ref_BxN = _prior_run(seqs, 8, prompts, 40, 12, prior, scoring=scoring)
  order = np.argsort(-ref_BxN, axis=1)[:, :12]
  np.testing.assert_array_equal(rows, order)
  np.testing.assert_allclose(scores, np.take_along_axis(ref_BxN, order, 1), rtol=1e-5, atol=1e-5)


def test_node_prior_steers_a_narrow_beam_to_the_lexical_match():
  rng = np.random.default_rng(21)
  seqs = _catalog(rng, 200, 4, 12, False)
  prompts = [1, 2]
  plain, _, ref = _run(seqs, 12, prompts, beam=2, k=3)
  # A row that the model alone ranks low, and that beam 2 does not find without help.
  target = [int(np.argsort(-ref[b])[150]) for b in range(2)]
  assert all(t not in plain[b] for b, t in enumerate(target))
  prior = np.zeros((2, 200), np.float32)
  prior[[0, 1], target] = 50.0  # far above the model's score gaps: the prior decides
  rows, scores, ref_prior = _prior_run(seqs, 12, prompts, 2, 3, prior)
  assert rows[:, 0].tolist() == target
  np.testing.assert_allclose(scores[:, 0], ref_prior[[0, 1], target], rtol=1e-5, atol=1e-5)
  # A prior only of zeros changes nothing.
  same, same_scores, _ = _prior_run(seqs, 12, prompts, 2, 3, np.zeros((2, 200), np.float32))
  np.testing.assert_array_equal(same, plain)


def test_node_prior_is_refused_in_free_mode_and_with_a_wrong_shape():
  seqs = _catalog(np.random.default_rng(0), 10, 2, 8, False)
  with pytest.raises(ValueError, match="constrained decoding"):
    _prior_run(seqs, 8, [1], 2, 2, np.zeros((1, 10), np.float32), constrained=False)
  index = build_index(seqs, 8)
  with pytest.raises(ValueError, match="node_prior_BxS"):
    beam_search(_toy_model(8, 0), _initial_cache([1], 2), index, batch_size=1, beam_size=2, top_k=2,
                node_prior_BxS=jnp.zeros((1, 3)))


def test_top_k_larger_than_beam_and_catalog():
  rng = np.random.default_rng(2)
  seqs = _catalog(rng, 30, 2, 9, False)  # fixed length 2
  rows, scores, ref_BxN = _run(seqs, 9, [5, 6], beam=30, k=35)
  # Beam 30 >= 30 IDs: all found, ranked exactly; the 5 missing slots are -1 / -inf.
  order = np.argsort(-ref_BxN, axis=1)
  np.testing.assert_array_equal(rows[:, :30], order)
  assert (rows[:, 30:] == -1).all() and np.isneginf(scores[:, 30:]).all()


@pytest.mark.parametrize("variable", [False, True])
def test_small_beam_outputs_valid_distinct_exact(variable):
  rng = np.random.default_rng(3)
  seqs = _catalog(rng, 200, 4, 12, variable)
  rows, scores, ref_BxN = _run(seqs, 12, [1, 2, 3, 4], beam=4, k=10)
  for b in range(4):
    found = rows[b][rows[b] >= 0]
    assert len(found) >= 4  # K > W works: the pool takes every finishing expansion
    assert len(set(found.tolist())) == len(found)
    assert (found < len(seqs)).all()
    # Each output's score is that ID's exact model score; outputs are sorted best first.
    np.testing.assert_allclose(scores[b][:len(found)], ref_BxN[b, found], rtol=1e-5, atol=1e-5)
    assert (np.diff(scores[b][:len(found)]) <= 0).all()
    # The best found is never better than the true best.
    assert scores[b, 0] <= ref_BxN[b].max() + 1e-5


@pytest.mark.slow
def test_beam_1_is_constrained_greedy():
  rng = np.random.default_rng(4)
  seqs = _catalog(rng, 50, 3, 7, False)
  index = build_index(seqs, 7)
  t2l = _toy_model(7, 0)
  rows, scores, _ = _run(seqs, 7, [9], beam=1, k=1)
  # Greedy reference: at each node pick the best-scoring allowed child.
  cache, node, tok, path = _initial_cache([9], 1), 0, jnp.zeros((1, 1), jnp.int32), []
  for _ in range(3):
    logits, cache = t2l(tok, cache)
    lp = np.asarray(jax.nn.log_softmax(logits))[0]
    first, deg = int(index.first_child(node)), int(index.degree(node))
    kids = np.arange(first, first + deg)
    best = kids[np.argmax(lp[np.asarray(index.token)[kids].astype(int)])]
    node = int(best)
    tok = jnp.full((1, 1), int(index.token[best]))
    path.append(int(index.token[best]))
  assert rows[0, 0] == int(np.flatnonzero((seqs == path).all(1))[0])


def test_free_mode_maps_sequences_and_reports_invalid_share():
  vocab, eos = 6, 1
  pairs = [(a, b) for a in range(2, vocab) for b in range(2, vocab)]
  catalog = np.array(pairs[::2], np.int32)  # half of the length-2 sequences over tokens 2..5
  row_of_pair = {p: r for r, p in enumerate(pairs[::2])}
  prompts, beam = [0, 1], 24
  index = build_index(catalog, vocab)
  t2l = _toy_model(vocab, 5)
  rows, scores = jax.jit(functools.partial(
      beam_search, t2l, batch_size=2, beam_size=beam, top_k=30, constrained=False))(
          _initial_cache(prompts, beam), index)
  rows, scores = np.asarray(rows), np.asarray(scores)
  for b, p in enumerate(prompts):
    # Reference: every free sequence of at most 2 tokens (EOS ends one early, and is not part of a
    # fixed-length ID), scored by enumeration.
    logits, cache = t2l(jnp.zeros((1, 1), jnp.int32), _initial_cache([p], 1))
    lp1 = np.asarray(jax.nn.log_softmax(logits))[0]
    firsts = [a for a in range(vocab) if a != eos]
    logits, _ = t2l(jnp.asarray(firsts)[:, None], jax.tree.map(
        lambda x: jnp.repeat(x, len(firsts), 0) if x.ndim else x, cache))
    lp2 = np.asarray(jax.nn.log_softmax(logits))
    cands = {(): lp1[eos]}
    for i, a in enumerate(firsts):
      cands[(a,)] = lp1[a] + lp2[i, eos]
      for c in firsts:
        cands[(a, c)] = lp1[a] + lp2[i, c]
    best = sorted(cands.items(), key=lambda kv: -kv[1])[:30]
    np.testing.assert_allclose(scores[b], [v for _, v in best], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(rows[b], [row_of_pair.get(seq, -1) for seq, _ in best])
  share = float(invalid_share(jnp.asarray(rows), jnp.asarray(scores)))
  assert share == pytest.approx(float((rows < 0).mean()))
  assert 0.3 < share < 0.9


@pytest.mark.slow
def test_batch_sharded_over_data_axis_matches_unsharded():
  rng = np.random.default_rng(6)
  seqs = _catalog(rng, 64, 3, 10, False)
  index = build_index(seqs, 10)
  prompts = list(range(8))
  t2l = _toy_model(10, 1)
  fn = jax.jit(functools.partial(beam_search, t2l, batch_size=8, beam_size=3, top_k=5))
  cache = _initial_cache(prompts, 3)
  want = fn(cache, index)
  mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
  shard = lambda x: jax.device_put(x, NamedSharding(mesh, P("data") if x.ndim else P()))
  got = fn(jax.tree.map(shard, cache), index.to_device(NamedSharding(mesh, P())))
  np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
  np.testing.assert_allclose(np.asarray(got[1]), np.asarray(want[1]), rtol=1e-6)


def test_grouped_beam_search_diversity():
  rng = np.random.default_rng(8)
  seqs = _catalog(rng, 120, 3, 9, False)
  index = build_index(seqs, 9)
  t2l = _toy_model(9, 2)
  prompts = [4, 5]

  def run(beam, k, **kw):
    fn = jax.jit(functools.partial(beam_search, t2l, batch_size=2, beam_size=beam, top_k=k, **kw))
    return tuple(np.asarray(x) for x in fn(_initial_cache(prompts, beam), index))

  ref = _brute_force(t2l, prompts, seqs)
  # Without a penalty both groups follow the same path: same result as one beam (duplicates merged).
  one = run(1, 8)
  same = run(2, 8, num_groups=2, diversity_penalty=0.0)
  np.testing.assert_array_equal(same[0], one[0])
  np.testing.assert_allclose(same[1], one[1], rtol=1e-6)
  # With a large penalty the second group starts with another first token: two subtrees explored.
  rows, scores = run(2, 8, num_groups=2, diversity_penalty=1e4)
  for b in range(2):
    found = rows[b][rows[b] >= 0]
    assert len(set(found.tolist())) == len(found) >= 3
    np.testing.assert_allclose(scores[b][:len(found)], ref[b, found], rtol=1e-5, atol=1e-5)
    assert len({int(seqs[r, 0]) for r in found}) == 2
    assert len({int(seqs[r, 0]) for r in one[0][b] if r >= 0}) == 1
  with pytest.raises(ValueError, match="must divide"):
    run(3, 2, num_groups=2)


# ---- grouped (diverse) beam search, unconstrained --------------------------------------------- #

# A fixed logits table: the next token's logits depend on the last token only (PAD 0, EOS 1, ID
# tokens 2..4).  The catalog is every pair (a, b) of ID tokens (row 3 * (a - 2) + (b - 2)).
_TABLE_VxV = np.array([[-30.0, -20.0, 3.0, 2.5, 0.0],   # after the start token: 2 > 3 > 4
                       [0.0, 0.0, 0.0, 0.0, 0.0],       # after EOS (never fed)
                       [-30.0, -20.0, 0.0, 1.0, 2.0],   # after 2: 4 > 3 > 2
                       [-30.0, -20.0, 1.0, -3.0, 2.5],  # after 3: 4 > 2 > 3
                       [-30.0, -20.0, 0.0, 0.5, 1.0]], np.float32)
_PAIRS = np.array([(a, b) for a in (2, 3, 4) for b in (2, 3, 4)], np.int32)


def _table_lp(path):
  """Sum of log-probs of a token path under `_TABLE_VxV` (numpy reference)."""
  lp_VxV = _TABLE_VxV - np.log(np.exp(_TABLE_VxV).sum(axis=1, keepdims=True))
  prev, total = 0, 0.0
  for t in path:
    total, prev = total + float(lp_VxV[prev, t]), t
  return total


def _table_search(beam, k, **kw):
  table = jnp.asarray(_TABLE_VxV)
  t2l = lambda tok_Mx1, cache: (table[tok_Mx1[:, 0]], cache)
  fn = jax.jit(functools.partial(beam_search, t2l, batch_size=1, beam_size=beam, top_k=k,
                                 max_decode_len=2, constrained=False, **kw))
  rows, scores = fn({"unused": jnp.zeros((beam,), jnp.int32)}, build_index(_PAIRS, 5))
  return np.asarray(rows)[0].tolist(), np.asarray(scores)[0]


def _pair_row(a, b):
  return 3 * (a - 2) + (b - 2)


def test_free_grouped_one_group_equals_plain_free_search():
  rng = np.random.default_rng(9)
  seqs = _catalog(rng, 60, 3, 8, True)
  kw = dict(constrained=False, max_decode_len=4)
  plain = _run(seqs, 8, [2, 7], beam=4, k=6, seed=3, **kw)
  one = _run(seqs, 8, [2, 7], beam=4, k=6, seed=3, num_groups=1, diversity_penalty=3.0, **kw)
  np.testing.assert_array_equal(one[0], plain[0])
  np.testing.assert_array_equal(one[1], plain[1])


def test_free_grouped_penalty_zero_is_each_group_greedy():
  # Two groups of one beam, no penalty: each group is greedy (2 then 4) and finishes its k best
  # last tokens; identical finishes merge, so the result is one greedy group's: (2,4) (2,3) (2,2).
  rows, scores = _table_search(2, 3, num_groups=2, diversity_penalty=0.0)
  want = [(2, 4), (2, 3), (2, 2)]
  assert rows == [_pair_row(*p) for p in want]
  np.testing.assert_allclose(scores, [_table_lp(p) for p in want], rtol=1e-6)
  plain_rows, plain_scores = _table_search(1, 3)
  assert rows == plain_rows
  np.testing.assert_array_equal(scores, plain_scores)


def test_free_grouped_large_penalty_second_group_starts_elsewhere():
  # Group 2 may not repeat group 1's first token 2: it starts with 3; after 3 its best token 4 was
  # group 1's choice, so it continues with 2 then 3.  Pool: (2,4) -0.91, (2,3) -1.91, (3,2) -2.71
  # ((2,2) -2.91 is 4th).
  rows, scores = _table_search(2, 3, num_groups=2, diversity_penalty=1e3)
  want = [(2, 4), (2, 3), (3, 2)]
  assert rows == [_pair_row(*p) for p in want]
  np.testing.assert_allclose(scores, [_table_lp(p) for p in want], rtol=1e-6)
  # Without groups the beam of two follows 2 and 3 too, and ends both with 4: (3,4) -1.21 is 2nd.
  assert _table_search(2, 3)[0] == [_pair_row(2, 4), _pair_row(3, 4), _pair_row(2, 3)]


def test_free_grouped_scores_are_unpenalised_log_probs():
  # Penalty 1: group 2 still prefers 3 (2.5) over the penalised 2 (3 - 1) first, and then the
  # penalised 4 (2.5 - 1) over 2 (1).  (3,4) is returned with its true log-prob -1.21, ahead of
  # (2,3) -1.91; with the penalty counted it would be -2.21, behind (2,3).
  rows, scores = _table_search(2, 2, num_groups=2, diversity_penalty=1.0)
  assert rows == [_pair_row(2, 4), _pair_row(3, 4)]
  np.testing.assert_allclose(scores, [_table_lp((2, 4)), _table_lp((3, 4))], rtol=1e-6)
  assert _table_lp((3, 4)) - 1.0 < _table_lp((2, 3)) < _table_lp((3, 4))
  # The constrained grouped search reports the same true log-probs for the same paths.
  table = jnp.asarray(_TABLE_VxV)
  c_rows, c_scores = jax.jit(functools.partial(
      beam_search, lambda tok_Mx1, cache: (table[tok_Mx1[:, 0]], cache), batch_size=1,
      beam_size=2, top_k=2, num_groups=2, diversity_penalty=1.0))(
          {"unused": jnp.zeros((2,), jnp.int32)}, build_index(_PAIRS, 5))
  assert np.asarray(c_rows)[0].tolist() == rows
  np.testing.assert_allclose(np.asarray(c_scores)[0], scores, rtol=1e-6)


def _grouped_free_reference(t2l, prompt, seqs, vocab, beam, k, groups, penalty, max_len, eos=1):
  """Group beam search by enumeration (Hugging Face's semantics, true-log-prob scores): top-K
  (row, score) of every finished sequence, one copy per catalog row, -1 for non-IDs."""
  def log_probs(seq):
    cache = _initial_cache([prompt], 1)
    for t in (0,) + seq:
      logits, cache = t2l(jnp.full((1, 1), t, jnp.int32), cache)
    return np.asarray(jax.nn.log_softmax(logits))[0]

  wg, finished = beam // groups, []
  alive = [[((), 0.0, 0.0)] for _ in range(groups)]  # per group: (tokens, score, rank)
  for step in range(max_len):
    chosen = []
    for g in range(groups):
      cands = []
      for seq, score, rank in alive[g]:
        lp = log_probs(seq)
        finished.append((seq, score + lp[eos]))  # EOS ends every live beam
        cands += [(rank + lp[t] - penalty * chosen.count(t), seq + (t,), score + lp[t])
                  for t in range(vocab) if t != eos]
      picked = sorted(cands, key=lambda c: -c[0])[:max(wg, k)]
      if step == max_len - 1:
        finished += [(seq, score) for _, seq, score in picked]
      alive[g] = [(seq, score, rank) for rank, seq, score in picked[:wg]]
      chosen += [seq[-1] for _, seq, _ in picked[:wg]]
  row_of = {tuple(r): i for i, r in enumerate(seqs.tolist())}
  out, seen = [], set()
  for seq, score in sorted(finished, key=lambda f: -f[1]):
    row = row_of.get(seq, -1)
    if row < 0 or row not in seen:
      seen.add(row)
      out.append((row, score))
  return out[:k]


@pytest.mark.parametrize("beam,groups,penalty", [(4, 2, 1.5), (6, 3, 1e4)])
def test_free_grouped_matches_enumerated_group_beam_search(beam, groups, penalty):
  # Vocabulary 16 > the per-beam candidates (max(W / G, K) + 1 + W - W / G): the two-stage top-k is
  # exercised; a dense length-2 catalog makes many outputs real IDs.
  rng = np.random.default_rng(11)
  vocab, prompts = 16, [3, 8]
  seqs = _catalog(rng, 120, 2, vocab, False)
  rows, scores, ref = _run(seqs, vocab, prompts, beam=beam, k=4, seed=4, constrained=False,
                           max_decode_len=2, num_groups=groups, diversity_penalty=penalty)
  t2l = _toy_model(vocab, 4)
  for b, p in enumerate(prompts):
    want = _grouped_free_reference(t2l, p, seqs, vocab, beam, 4, groups, penalty, 2)
    assert rows[b].tolist() == [r for r, _ in want]
    np.testing.assert_allclose(scores[b], [s for _, s in want], rtol=1e-5, atol=1e-5)
    valid = rows[b] >= 0
    np.testing.assert_allclose(scores[b][valid], ref[b, rows[b][valid]], rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="diversity_penalty"):
    _run(seqs, vocab, prompts, beam=4, k=2, constrained=False, num_groups=2, diversity_penalty=-1.0)
