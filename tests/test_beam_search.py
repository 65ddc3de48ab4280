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
from t2t_jax.decoding.index import build_index

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


def _brute_force(tokens_to_logits, prompts_B, seqs_NxL):
  """[B, N] sum of log-probs of every catalog row for every prompt."""
  n, length = seqs_NxL.shape
  out = []
  for p in prompts_B:
    cache = _initial_cache([p], n)
    tok = jnp.zeros((n, 1), jnp.int32)
    total = jnp.zeros(n)
    for t in range(length):
      logits, cache = tokens_to_logits(tok, cache)
      lp = jax.nn.log_softmax(logits)[jnp.arange(n), seqs_NxL[:, t]]
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
  return np.asarray(rows), np.asarray(scores), _brute_force(t2l, prompts, seqs)


@pytest.mark.parametrize("variable", [False, True])
def test_full_beam_equals_brute_force(variable):
  rng = np.random.default_rng(1 if variable else 0)
  seqs = _catalog(rng, 40, 3, 8, variable)
  prompts = [3, 17, 250]
  rows, scores, ref_BxN = _run(seqs, 8, prompts, beam=40, k=12)
  order = np.argsort(-ref_BxN, axis=1)[:, :12]
  np.testing.assert_array_equal(rows, order)
  np.testing.assert_allclose(scores, np.take_along_axis(ref_BxN, order, 1), rtol=1e-5, atol=1e-5)


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
