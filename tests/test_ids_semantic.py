"""Tests for t2t_jax.ids.semantic: unique IDs, determinism, round trip, collisions, bad input."""

import numpy as np
import pytest

from t2t_jax.errors import UserInputError
from t2t_jax.ids import semantic
from t2t_jax.ids.table import IdTable


def _emb(n=600, d=8, seed=0):
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(10, d)) * 4
  return (centers[rng.integers(10, size=n)] + rng.normal(size=(n, d))).astype(np.float32)


def _ids(n):
  return [f"spotify:track:{i:05d}" for i in range(n)]


@pytest.mark.parametrize("method", ["rq", "hkmeans"])
def test_unique_deterministic_round_trip(tmp_path, method):
  emb = _emb()
  ids = _ids(len(emb))
  t = semantic.build_semantic_ids(emb, ids, level_sizes=(8, 4), method=method, seed=1, iterations=8)
  assert t.num_levels == 3 and t.level_sizes[:2] == (8, 4)
  assert t.num_duplicate_ids() == 0
  assert t.level_sizes[2] == int(t.codes[:, 2].max()) + 1
  u = semantic.build_semantic_ids(emb, ids, level_sizes=(8, 4), method=method, seed=1, iterations=8)
  np.testing.assert_array_equal(t.codes, u.codes)
  # Round trip: track -> tokens -> track, through the saved table.
  t.save(tmp_path / "ids")
  loaded = IdTable.load(tmp_path / "ids")
  tokens = loaded.token_ids(1000)
  inverse = {tuple(row): r for r, row in enumerate(tokens.tolist())}
  for tid in ids[::37]:
    assert loaded.track_ids[inverse[tuple(tokens[loaded.row_of(tid)])]] == tid
  # The disambiguation count: tracks whose level codes collide with another's.
  _, inv, counts = np.unique(t.codes[:, :2], axis=0, return_inverse=True, return_counts=True)
  assert t.meta["num_disambiguated"] == int((counts[inv.reshape(-1)] > 1).sum())
  assert t.meta["stats"]["collision_rate"] == pytest.approx(t.meta["num_disambiguated"] / len(ids))


def test_rq_first_level_groups_blobs_and_residual_shrinks():
  emb = _emb()
  t = semantic.build_semantic_ids(emb, _ids(len(emb)), level_sizes=(10, 8, 8), seed=0)
  levels = t.meta["stats"]["levels_detail"]
  errs = [lv["mean_sq_residual"] for lv in levels]
  assert errs[0] > errs[1] > errs[2]
  # Residual after level 0 ~ noise variance * d (blobs found, up to a merge).
  assert errs[0] < 8 * 2.0


def test_disambiguate_ranks_by_key():
  codes = np.array([[1, 2], [0, 0], [1, 2], [1, 2], [3, 3]])
  out, colliding, largest = semantic.disambiguate(codes, np.array([0.5, 0.0, 0.1, 0.9, 0.0]))
  np.testing.assert_array_equal(out[:, 2], [1, 0, 0, 2, 0])
  assert (colliding, largest) == (3, 3)


def test_balanced_reduces_collisions():
  rng = np.random.default_rng(0)
  # Very uneven density: one dense blob holds 80% of the points.
  emb = np.concatenate([rng.normal(size=(800, 8)) * 0.1, rng.normal(size=(200, 8)) * 5]).astype(np.float32)
  kw = dict(seed=0, iterations=10)
  plain = semantic.build_semantic_ids(emb, _ids(1000), level_sizes=(32, 32), method="hkmeans", **kw)
  bal = semantic.build_semantic_ids(emb, _ids(1000), level_sizes=(32, 32), method="hkmeans", balanced=True, **kw)
  assert plain.meta["num_disambiguated"] >= 700 and bal.meta["num_disambiguated"] == 0
  assert bal.level_sizes[-1] == 1
  assert np.bincount(bal.codes[:, 0]).max() <= int(np.ceil(1000 / 32))
  # RQ: the dense blob falls into one cell (disambiguation level of ~800 codes) unless balanced.
  plain = semantic.build_semantic_ids(emb, _ids(1000), level_sizes=(16, 16), **kw)
  bal = semantic.build_semantic_ids(emb, _ids(1000), level_sizes=(16, 16), balanced=True, **kw)
  assert plain.level_sizes[-1] >= 700 and bal.level_sizes[-1] <= 100


def _sorted_walk(d):
  """The definition `greedy_matching` must equal: pairs by (distance, row, column), each taken when
  its row and column are both free."""
  out, used = np.full(d.shape[0], -1), set()
  for flat in np.argsort(d, axis=None, kind="stable"):
    i, j = divmod(int(flat), d.shape[1])
    if out[i] < 0 and j not in used:
      out[i] = j
      used.add(j)
  return out


@pytest.mark.parametrize("seed", range(6))
def test_greedy_matching_equals_the_sorted_walk_ties_included(seed):
  rng = np.random.default_rng(seed)
  r, c = int(rng.integers(1, 40)), int(rng.integers(40, 90))
  d = rng.normal(size=(r, c))
  if seed % 2:
    d = np.round(d)  # many ties: broken by row, then column
  got = semantic.greedy_matching(d)
  assert got.tolist() == _sorted_walk(d).tolist()
  assert len(set(got.tolist())) == r


def test_greedy_matching_hand_case():
  # Row 1's best (column 0, 0.1) is taken first; row 0 then takes its second best, column 2.
  d = np.array([[0.2, 0.9, 0.3], [0.1, 0.5, 0.8]])
  assert semantic.greedy_matching(d).tolist() == [2, 0]


def test_unique_within_prefix_moves_only_colliders_to_nearest_free_codes():
  c = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
  x = np.array([[0.1], [0.2], [0.9], [5.0], [1.4], [2.2], [9.0]], np.float32)
  prefix = np.array([[0], [0], [0], [0], [1], [1], [2]])
  labels = np.array([0, 0, 0, 3, 1, 1, 4])  # Prefix 0: three rows on code 0; prefix 1: two on code 1.
  out, moved, left = semantic.unique_within_prefix(x, prefix, labels, c)
  # Prefix 0: row 0 (nearest to code 0) keeps it; rows 1 and 2 take the nearest free codes (3 is held
  # by row 3): row 2 (0.9) is nearest to 1, row 1 (0.2) then to 2.  Prefix 1: row 5 (2.2) is farther
  # from code 1 than row 4 (1.4), so it moves, to 2.  Row 6 is alone and untouched.
  assert out.tolist() == [0, 2, 1, 3, 1, 2, 4]
  assert (moved, left) == (3, 0)
  # A prefix with more rows than codes stays as it is (and is counted).
  big = semantic.unique_within_prefix(np.zeros((6, 1), np.float32), np.zeros((6, 1), int), np.zeros(6, int), c)
  assert big[0].tolist() == [0] * 6 and big[1:] == (0, 6)
  # Nothing colliding: unchanged.
  same = semantic.unique_within_prefix(x, prefix, np.array([0, 1, 2, 3, 1, 2, 4]), c)
  assert same[0].tolist() == [0, 1, 2, 3, 1, 2, 4] and same[1:] == (0, 0)


def test_rq_unique_last_level_gives_unique_ids_without_extra_token():
  emb = _emb(n=2000, seed=4)
  kw = dict(level_sizes=(64, 64), seed=0, iterations=10, balanced=True)  # ceil(2000 / 64) <= 64 codes
  plain = semantic.build_semantic_ids(emb, _ids(2000), **kw)
  uniq = semantic.build_semantic_ids(emb, _ids(2000), unique_last_level=True, disambiguation="auto", **kw)
  assert plain.meta["num_disambiguated"] > 200  # RQ's global last level: close tracks share codes.
  assert uniq.meta["num_disambiguated"] == 0 and uniq.num_duplicate_ids() == 0
  assert uniq.level_sizes == (64, 64)  # "auto": no disambiguation level when nothing collides.
  assert uniq.meta["stats"]["levels_detail"][-1]["unique_last_level_moved"] > 200
  # The prefixes are RQ's own: only the last level changed.
  np.testing.assert_array_equal(uniq.codes[:, 0], plain.codes[:, 0])
  # "auto" keeps the level when collisions remain; hierarchical k-means has no such option.
  tight = semantic.build_semantic_ids(emb, _ids(2000), level_sizes=(4, 8), unique_last_level=True,
                                      disambiguation="auto", seed=0, iterations=5)
  assert len(tight.level_sizes) == 3 and tight.num_duplicate_ids() == 0
  with pytest.raises(UserInputError, match="unique_last_level applies to method='rq'"):
    semantic.build_semantic_ids(emb, _ids(2000), level_sizes=(4, 8), method="hkmeans", unique_last_level=True)
  with pytest.raises(UserInputError, match="disambiguation must be True, False or 'auto'"):
    semantic.build_semantic_ids(emb, _ids(2000), level_sizes=(4, 8), disambiguation="yes")


def test_balanced_assign_capacity():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(101, 3)).astype(np.float32)
  c = x[:5] + 10  # All points prefer the same centroid.
  c[0] -= 10
  labels, _ = semantic.balanced_assign(x, c)
  assert np.bincount(labels, minlength=5).max() == 21  # ceil(101 / 5)


def test_bad_input():
  emb = _emb(n=50)
  ids = _ids(50)
  with pytest.raises(UserInputError, match="50 rows but there are 49 track ids"):
    semantic.build_semantic_ids(emb, ids[:49], level_sizes=(4, 4))
  with pytest.raises(UserInputError, match="duplicate track id"):
    semantic.build_semantic_ids(emb, ids[:49] + ids[:1], level_sizes=(4, 4))
  bad = emb.copy()
  bad[3] = np.inf
  with pytest.raises(UserInputError, match="row 3 \\(track 'spotify:track:00003'\\) has NaN or inf"):
    semantic.build_semantic_ids(bad, ids, level_sizes=(4, 4))
  zero = emb.copy()
  zero[[4, 9]] = 0
  with pytest.raises(UserInputError, match="2 rows have zero norm"):
    semantic.build_semantic_ids(zero, ids, level_sizes=(4, 4))
  fixed = semantic.build_semantic_ids(zero, ids, level_sizes=(4, 4), on_zero_norm="random")
  assert fixed.meta["num_zero_norm_replaced"] == 2 and fixed.num_duplicate_ids() == 0
  with pytest.raises(UserInputError, match="level_sizes\\[0\\]=64 is larger than the number of tracks"):
    semantic.build_semantic_ids(emb, ids, level_sizes=(64,))
  with pytest.raises(UserInputError, match="at least 2 codes"):
    semantic.build_semantic_ids(emb, ids, level_sizes=(4, 1))
  with pytest.raises(UserInputError, match="give 16 distinct IDs < 50 tracks"):
    semantic.build_semantic_ids(emb, ids, level_sizes=(4, 4), disambiguation=False)
  with pytest.raises(UserInputError, match="without disambiguation: .* tracks share their ID"):
    semantic.build_semantic_ids(emb, ids, level_sizes=(4, 16), disambiguation=False)
  with pytest.raises(UserInputError, match="more than max_disambiguation=1"):
    semantic.build_semantic_ids(emb, ids, level_sizes=(2, 2), max_disambiguation=1)
  with pytest.raises(UserInputError, match="method must be one of"):
    semantic.build_semantic_ids(emb, ids, method="pq")


@pytest.mark.parametrize("method", ["rq", "hkmeans"])
def test_streamed_from_memmap_equals_in_memory(tmp_path, method):
  emb = _emb(n=700, seed=3)
  emb[5] = 0  # Zero row, fixed the same way in both paths.
  np.save(tmp_path / "e.npy", emb)
  mm = np.load(tmp_path / "e.npy", mmap_mode="r")
  kw = dict(level_sizes=(8, 8), method=method, seed=2, iterations=6, on_zero_norm="random",
            kmeans_kwargs={"init": "k-means++", "chunk_size": 128})
  a = semantic.build_semantic_ids(emb, _ids(700), **kw)
  b = semantic.build_semantic_ids(mm, _ids(700), scratch_dir=str(tmp_path), **kw)
  np.testing.assert_array_equal(a.codes, b.codes)
  assert b.meta["num_zero_norm_replaced"] == 1
  assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npy"]  # Scratch files removed.
  # The default streamed init (k-means||) also gives unique IDs.
  c = semantic.build_semantic_ids(mm, _ids(700), level_sizes=(8, 8), method=method, on_zero_norm="random")
  assert c.num_duplicate_ids() == 0
  if method == "rq":  # The collision-aware last level reads colliding rows from the scratch file.
    kw.update(level_sizes=(16, 64), balanced=True, unique_last_level=True, disambiguation="auto")
    a = semantic.build_semantic_ids(emb, _ids(700), **kw)
    b = semantic.build_semantic_ids(mm, _ids(700), scratch_dir=str(tmp_path), **kw)
    np.testing.assert_array_equal(a.codes, b.codes)
    assert b.level_sizes == (16, 64) and b.num_duplicate_ids() == 0


def test_unique_last_level_caps_prefix_groups_on_duplicated_vectors():
  """Tracks seen in one playlist only share one CF vector (MPD-like tails): big groups of identical
  rows.  Per-prefix capacities still give unique IDs whenever prod(level_sizes) >= N."""
  rng = np.random.default_rng(0)
  emb = rng.normal(size=(512, 6)).astype(np.float32)
  emb[:150] = emb[0]  # 150 identical vectors
  emb[150:230] = emb[150]  # and 80 more
  t = semantic.build_semantic_ids(emb, _ids(512), level_sizes=(4, 4, 32), balanced=True, unique_last_level=True,
                                  disambiguation=False, iterations=5)
  assert t.level_sizes == (4, 4, 32) and t.num_duplicate_ids() == 0
  detail = t.meta["stats"]["levels_detail"]
  assert detail[0]["prefix_capacity"] == 128 and detail[1]["prefix_capacity"] == 32
  assert detail[1]["prefix_capacity_moved"] > 0 and detail[1]["prefix_capacity_too_large"] == 0
  assert t.meta["stats"]["unique_possible"] is True
  _, counts = np.unique(t.codes[:, :2], axis=0, return_counts=True)
  assert counts.max() <= 32


def test_unique_impossible_is_reported():
  emb = _emb(n=100)
  t = semantic.build_semantic_ids(emb, _ids(100), level_sizes=(4, 8), balanced=True, unique_last_level=True,
                                  disambiguation="auto", iterations=5)
  stats = t.meta["stats"]
  assert stats["unique_possible"] is False and "pigeonhole" in stats["unique_impossible_reason"]
  assert "(16, 16)" in stats["unique_impossible_reason"] and t.num_levels == 3  # the extra token
  assert semantic.suggest_level_sizes(100, 2) == (16, 16) and semantic.suggest_level_sizes(30000, 3) == (32, 32, 32)
  assert semantic.suggest_level_sizes(4096, 2, multiple=1) == (64, 64)


def test_resolve_collisions_policies():
  codes = np.array([[0, 1], [0, 1], [1, 0], [0, 1]], np.int32)
  out, sizes, stats, meta = semantic.resolve_collisions(codes, np.array([0.3, 0.1, 0.0, 0.2]), (2, 2))
  np.testing.assert_array_equal(out[:, 2], [2, 0, 0, 1])  # ranked by the order key
  assert sizes == (2, 2, 3) and meta["num_disambiguated"] == 3 and stats["disambiguation_size"] == 3
  out, sizes, stats, meta = semantic.resolve_collisions(codes, np.zeros(4), (2, 2), collisions="most_popular",
                                                        popularity=[0, 0, 0, 9])
  assert sizes == (2, 2) and meta["unreachable_rows"] == [0, 1] and stats["num_unreachable_tracks"] == 2
  with pytest.raises(UserInputError, match="3 of 4 tracks share their ID"):
    semantic.resolve_collisions(codes, np.zeros(4), (2, 2), disambiguation=False)
