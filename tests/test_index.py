"""Tests for t2t_jax.decoding.index: trie layout, lookups, errors."""

import jax.numpy as jnp
import numpy as np
import pytest

from t2t_jax.decoding.index import build_index, validate_index_arrays
from t2t_jax.errors import UserInputError


def _walk(index, seq):
  node = jnp.asarray(0)
  for t in seq:
    if t == 0:
      break
    node = index.child(node, int(t))
  return int(node)


def _random_catalog(rng, n, length, vocab, variable=False, eos_id=1):
  """Distinct 0-padded rows; variable=True: random lengths, EOS-terminated."""
  rows = set()
  while len(rows) < n:
    size = int(rng.integers(1, length)) if variable else length
    body = tuple(int(t) for t in rng.integers(3, vocab, size))
    rows.add(body + ((eos_id,) if variable else ()))
  width = max(len(r) for r in rows)
  out = np.zeros((n, width), np.int32)
  for i, r in enumerate(sorted(rows, key=lambda r: hash(r))):
    out[i, :len(r)] = r
  return out


def test_small_trie_layout_pinned():
  seqs = np.array([[5, 6, 7], [5, 6, 8], [5, 9, 0], [4, 0, 0]])
  ix = build_index(seqs, 10)
  # Level order: root; 4, 5; [5,6], [5,9]; [5,6,7], [5,6,8].
  np.testing.assert_array_equal(ix.token, [0, 4, 5, 6, 9, 7, 8])
  np.testing.assert_array_equal(ix.child_start, [1, 3, 3, 5, 7])
  np.testing.assert_array_equal(ix.terminal_row, [3, -1, -1, 2, 0, 1])
  assert ix.num_nodes == 7 and ix.max_depth == 3 and ix.max_degree == (2, 2, 2)
  assert ix.row_base == 1 and not ix.eos_terminated
  assert ix.token.dtype == np.uint16
  assert ix.nbytes == 5 * 4 + 7 * 2 + 6 * 4
  for r, seq in enumerate(seqs):
    assert int(ix.row_of(jnp.asarray(_walk(ix, seq)))) == r
  # Internal nodes [5] and [5, 6] end no ID.
  assert int(ix.row_of(jnp.asarray(_walk(ix, [5])))) == -1
  assert int(ix.row_of(jnp.asarray(_walk(ix, [5, 6])))) == -1
  assert int(ix.degree(jnp.asarray(_walk(ix, [5, 6])))) == 2
  assert _walk(ix, [3]) == -1 and _walk(ix, [5, 7]) == -1 and _walk(ix, [5, 6, 7, 7]) == -1
  assert int(ix.degree(jnp.asarray(-1))) == 0 and int(ix.row_of(jnp.asarray(-1))) == -1


@pytest.mark.parametrize("variable", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_random_catalog_properties(seed, variable):
  rng = np.random.default_rng(seed)
  seqs = _random_catalog(rng, 60, 4, 9, variable=variable)
  ix = build_index(seqs, 12)
  assert ix.eos_terminated == variable
  prefixes = {tuple(s[:d]) for s in seqs for d in range(1, int((s > 0).sum()) + 1)}
  assert ix.num_nodes == 1 + len(prefixes)
  assert ix.max_depth == max(int((s > 0).sum()) for s in seqs)
  # Every row walks to a node that names it; rows are found exactly once.
  nodes = np.array([_walk(ix, s) for s in seqs])
  assert (nodes > 0).all()
  np.testing.assert_array_equal(np.asarray(ix.row_of(jnp.asarray(nodes))), np.arange(len(seqs)))
  assert (np.asarray(ix.terminal_row) >= 0).sum() == len(seqs)
  # Children are contiguous and sorted by token; degrees match the prefix sets.
  deg = np.asarray(ix.degree(jnp.arange(ix.num_nodes)))
  first = np.asarray(ix.first_child(jnp.arange(ix.num_nodes)))
  tok = np.asarray(ix.token).astype(int)
  for s in range(ix.num_nodes):
    kids = tok[first[s]:first[s] + deg[s]]
    assert (np.diff(kids) > 0).all()
  assert deg.sum() == ix.num_nodes - 1
  root_kids = {p[0] for p in prefixes}
  assert deg[0] == len(root_kids) == ix.max_degree[0]


def test_uses_int32_tokens_for_large_vocab():
  seqs = np.array([[70000, 3], [70000, 4], [5, 0]])
  ix = build_index(seqs, 80000)
  assert ix.token.dtype == np.int32
  assert int(ix.row_of(jnp.asarray(_walk(ix, [70000, 4])))) == 1


@pytest.mark.parametrize("wide", [False, True])
def test_packed_and_lexsort_builds_agree(wide):
  # 5 columns of 17-bit tokens do not fit one uint64 key with the row number: lexsort path.
  rng = np.random.default_rng(7)
  hi = 70000 if wide else 40
  seqs = np.unique(rng.integers(3, hi, (300, 5)), axis=0)
  seqs[::3, 3:] = 0  # some shorter rows
  seqs = np.unique(seqs, axis=0)[rng.permutation(len(np.unique(seqs, axis=0)))]
  ix = build_index(seqs, 2**20)
  assert (ix.token.dtype == np.int32)
  nodes = np.array([_walk(ix, s) for s in seqs])
  np.testing.assert_array_equal(np.asarray(ix.row_of(jnp.asarray(nodes))), np.arange(len(seqs)))
  prefixes = {tuple(s[:d]) for s in seqs for d in range(1, int((s > 0).sum()) + 1)}
  assert ix.num_nodes == 1 + len(prefixes)


@pytest.mark.parametrize("seqs, message", [
    ([[3, 4], [3, 4]], "duplicate ID sequences: rows 0 and 1"),
    ([[3, 0, 4]], "token after padding"),
    ([[0, 3]], "row 0 is empty"),
    ([[3, 12]], "token 12 outside"),
    ([[3, -1]], "token -1 outside"),
    ([3, 4], "2-D"),
    # A prefix without EOS would be scored with no stop probability and outrank its extensions.
    ([[5, 6, 7], [4, 0, 0], [5, 6, 0]], r"ID row 2 \[5, 6\] is a prefix of row 0 \[5, 6, 7\] and does not end "
     r"with EOS \(1\)"),
    ([[3, 0], [3, 4]], r"ID row 0 \[3\] is a prefix of row 1 \[3, 4\]"),
])
def test_bad_catalogs_raise_user_errors(seqs, message):
  with pytest.raises(UserInputError, match=message):
    build_index(np.array(seqs), 12)


def test_semantic_catalog_bytes_per_id():
  # 4096 IDs over 3 levels of 16 codes + a disambiguation level, tokens offset as in the vocab.
  rng = np.random.default_rng(0)
  codes = np.unique(rng.integers(0, 16, (5000, 3)), axis=0)
  n = len(codes)
  seqs = np.concatenate([codes + 100, np.full((n, 1), 200)], axis=1)
  ix = build_index(seqs, 300)
  assert ix.max_depth == 4 and ix.max_degree[-1] == 1
  assert ix.row_base == ix.num_nodes - n  # fixed length: the leaves are the last n nodes
  # uint16 token per node + int32 child_start per internal node + int32 row per leaf.
  num_internal = ix.num_nodes - n
  assert ix.nbytes == 2 * ix.num_nodes + 4 * (num_internal + 1) + 4 * n
  assert ix.bytes_per_id < 16  # less than the raw int32 [N, 4] table


def test_eos_terminated_prefix_is_allowed():
  # [5, 1] ends with EOS: decoding it means choosing to stop, so [5, 1, 7] beside it is unambiguous.
  ix = build_index(np.array([[5, 1, 0], [5, 1, 7], [6, 1, 0]]), 10)
  assert int(ix.row_of(jnp.asarray(_walk(ix, [5, 1])))) == 0
  ix.validate()


def _corruptions(ix):
  """(name, child_start, token, terminal_row) variants of a valid index, each structurally broken."""
  cs, tok, term = (np.asarray(a).astype(np.int64) for a in (ix.child_start, ix.token, ix.terminal_row))
  out = []
  c = cs.copy(); c[2] += 5; out.append(("child_start out of order", c, tok, term))
  c = cs.copy(); c[-1] += 1; out.append(("child_start past the end", c, tok, term))
  c = cs.copy(); c[0] = 0; out.append(("root is its own child", c, tok, term))
  t = tok.copy(); t[1], t[2] = t[2], t[1]; out.append(("siblings unsorted", cs, t, term))
  t = tok.copy(); t[3] = ix.vocab_size; out.append(("token outside vocab", cs, t, term))
  t = tok.copy(); t[4] = 0; out.append(("PAD edge", cs, t, term))
  r = np.concatenate([term[1:], [-1]]); out.append(("rows shifted by one", cs, tok, r))
  r = term.copy(); r[r >= 0] = r[r >= 0][0]; out.append(("one row five times", cs, tok, r))
  r = term.copy(); r[np.flatnonzero(r >= 0)[0]] = ix.num_rows; out.append(("row out of range", cs, tok, r))
  r = term.copy(); r[np.flatnonzero(r >= 0)[-1]] = -1; out.append(("leaf ends no row", cs, tok, r))
  out.append(("terminal_row too long", cs, tok, np.concatenate([[-1] * len(tok), term])))
  out.append(("2-D token", cs, tok[None], term))
  return out


def test_validate_index_arrays_accepts_built_indexes_and_rejects_corruptions():
  rng = np.random.default_rng(3)
  for variable in (False, True):
    ix = build_index(_random_catalog(rng, 40, 4, 9, variable=variable), 12)
    assert ix.validate() is ix
    for name, cs, tok, term in _corruptions(ix):
      with pytest.raises(UserInputError, match="trie: "):
        validate_index_arrays(cs, tok, term, num_rows=ix.num_rows, vocab_size=ix.vocab_size,
                              max_depth=ix.max_depth)
        pytest.fail(name)
  ix = build_index(np.array([[5, 6, 7], [5, 6, 8], [5, 9, 0], [4, 0, 0]]), 10)
  with pytest.raises(UserInputError, match="depth 3 exceeds the decode length 2"):
    validate_index_arrays(ix.child_start, ix.token, ix.terminal_row, num_rows=4, vocab_size=10, max_depth=2)
  # A prefix row without EOS smuggled in by hand (what build_index refuses): node [5, 6] ends row 4.
  term = np.asarray(ix.terminal_row).copy()
  term[3 - ix.row_base] = 4
  with pytest.raises(UserInputError, match="node 3 ends a row and has children but is not EOS"):
    validate_index_arrays(ix.child_start, ix.token, term, num_rows=5, vocab_size=10)
