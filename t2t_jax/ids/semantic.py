"""Semantic IDs: quantise track embeddings into a short tuple of codes so similar tracks share prefixes.

Methods (`build_semantic_ids(method=...)`):
  "rq"      residual k-means (RQ-KMeans): level l clusters the residuals left by levels < l into
            level_sizes[l] centroids; code l is the nearest centroid; residual -= centroid.  Every
            level sees all tracks, so each level is one k-means over N points (streamable).
  "hkmeans" hierarchical (recursive) k-means as in DSI (Tay et al. 2022): level 0 clusters all tracks;
            each cluster's members are clustered again into level_sizes[1] groups, and so on.  A node
            with no more members than codes gives each member its own code directly (ordered by
            distance to the node centroid), and deeper levels are 0.
Both end with one disambiguation level: tracks whose code tuples collide get 0, 1, 2, ... in order of
their distance to their quantised reconstruction (closest first), so every ID is unique.  Its size is
the largest collision group; `meta["num_disambiguated"]` counts the tracks in colliding groups (the
ones that need that level to be told apart) and `meta["stats"]` the collision rate.

`balanced=True` replaces nearest-centroid assignment with a capacity-constrained one (each cluster
holds at most ceil(n / K * (1 + balance_slack)) points): points are taken in order of how much they
would lose by not getting their nearest centroid, each goes to its nearest centroid with room.  It
evens out cluster sizes at the price of a higher quantisation error (both in stats.json).  With
"hkmeans" (balance inside every node) it removes collisions outright when a level has room; with
"rq" (each level balanced over all tracks, not per prefix) it shrinks the largest collision group,
hence the disambiguation level, by an order of magnitude on skewed data, but not the number of
colliding tracks (tests/test_ids_semantic.py pins both).

`unique_last_level=True` ("rq") fixes that: RQ's last level quantises residuals globally, so tracks of
one prefix (close in embedding space, hence with close residuals) mostly land on the same last code
(on the default synthetic catalog, 3000 tracks with (64, 64): 2550 collide).  Inside each prefix the
tracks sharing a code keep it for the nearest one and move the others to the nearest free codes of
that level.  With balanced=True every prefix fits its codebook and all IDs come out unique without an
extra token (same catalog: 0 collide, 2 tokens per ID instead of 3).  `disambiguation="auto"` appends
the disambiguation level only when IDs still collide.  That needs every prefix group to fit the last
codebook, which global k-means levels do not promise on real catalogs (power-law popularity, tracks
seen in one playlist only, hence identical CF vectors: on an MPD-like synthetic catalog of 30,000
tracks with (64, 64, 64), prefix groups of up to 193 tracks left 8,363 tracks colliding).  So with
unique_last_level every earlier level l also caps its (prefix, code) groups at prod(level_sizes[l+1:])
tracks (`capacity_within_prefix`: only over-full prefix groups are re-assigned, greedily by regret to
the nearest code with room).  Then IDs come out unique whenever prod(level_sizes) >= N.  When
prod(level_sizes) < N no assignment can (pigeonhole: some prefix group exceeds the last codebook);
stats["unique_impossible_reason"] says so and suggests sizes (`suggest_level_sizes`).

Collision policies (`collisions=`): "disambiguate" (the extra level above) or "most_popular" (the
paper's: no extra token; the most popular track of a shared ID owns it, the others are unreachable;
table.py).  `resolve_collisions` applies either to any fixed-length codes (dictionary.py uses it too).

Bad input: NaN/inf rows and an embedding/id count mismatch, duplicate ids, level sizes < 2 or larger
than the number of tracks are UserInputErrors.  Zero-norm rows carry no information: by default an
error naming them; `on_zero_norm="random"` replaces them with seeded random vectors of median norm
(counted in meta["num_zero_norm_replaced"]).  `disambiguation=False` (fixed-length IDs without the
extra level) raises when the codebooks cannot give unique IDs: up front if prod(level_sizes) < N,
else naming the number of colliding tracks.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from typing import Any, Callable, Sequence

import numpy as np

from t2t_jax.errors import UserInputError
from t2t_jax.ids import kmeans as kmeans_lib
from t2t_jax.ids.table import COLLISION_POLICIES, IdTable, check_track_ids, most_popular_owners

METHODS = ("rq", "hkmeans")


# ----------------------------------------------------------------------------------------------- #
# Input checks and fixes.


def prepare_embeddings(embeddings_NxD, track_ids: Sequence[str], *, on_zero_norm: str = "error",
                       normalize: bool = False, seed: int = 0, out=None) -> tuple[Any, list[str], dict]:
  """Validated float32 embeddings, ids, and counts of the fixes applied.

  In memory: returns a float32 array (a copy when modified).  Streamed input (memmap / RowFile) is
  checked chunk by chunk; with `out` (a writable RowFile) the fixed rows are copied into it and
  `out` is returned, else the input itself (only valid when nothing needs fixing).
  """
  ids = check_track_ids(track_ids)
  kmeans_lib.check_points(embeddings_NxD, name="embeddings", check_finite=False)
  n, d = embeddings_NxD.shape
  if n != len(ids):
    raise UserInputError(f"embeddings have {n} rows but there are {len(ids)} track ids")
  if on_zero_norm not in ("error", "random"):
    raise UserInputError(f"on_zero_norm must be 'error' or 'random', got {on_zero_norm!r}")
  streamed = kmeans_lib.is_streamed(embeddings_NxD)
  step = n if not streamed else max(1, (1 << 24) // max(d, 1))
  # Pass 1: NaN/inf and zero norms, and the median norm of the others (for replacements).
  zero_rows, norm_samples = [], []
  for s in range(0, n, step):
    block = np.asarray(embeddings_NxD[s:s + step], np.float32)
    finite = np.isfinite(block).all(axis=1)
    if not finite.all():
      r = s + int(np.flatnonzero(~finite)[0])
      raise UserInputError(f"embeddings: row {r} (track {ids[r]!r}) has NaN or inf values")
    norms = np.linalg.norm(block, axis=1)
    zero_rows.append(s + np.flatnonzero(norms <= 1e-12))
    norm_samples.append(norms[norms > 1e-12][:4096])
  zero = np.concatenate(zero_rows)
  fixes = {"num_zero_norm_replaced": 0}
  if zero.size:
    if on_zero_norm == "error":
      bad = [ids[i] for i in zero[:5]]
      raise UserInputError(
          f"embeddings: {zero.size} rows have zero norm (tracks {bad}...); pass "
          f"on_zero_norm='random' to give them seeded random vectors")
    if zero.size == n:
      raise UserInputError("embeddings: every row has zero norm")
    fixes["num_zero_norm_replaced"] = int(zero.size)
  if not zero.size and not normalize and out is None:
    return (embeddings_NxD if streamed else np.asarray(embeddings_NxD, np.float32)), ids, fixes
  median = float(np.median(np.concatenate(norm_samples)))
  rnd = np.random.default_rng([seed, 0x2E40]).normal(size=(zero.size, d))
  rnd = (rnd * median / np.linalg.norm(rnd, axis=1, keepdims=True)).astype(np.float32)
  if out is None:
    assert not streamed, "streamed embeddings that need fixing need an `out` RowFile"
    out = np.array(embeddings_NxD, np.float32)
  zi = 0
  for s in range(0, n, step):
    block = np.array(embeddings_NxD[s:s + step], np.float32)
    while zi < zero.size and zero[zi] < s + block.shape[0]:
      block[zero[zi] - s] = rnd[zi]
      zi += 1
    if normalize:
      block /= np.linalg.norm(block, axis=1, keepdims=True)
    if isinstance(out, kmeans_lib.RowFile):
      out.write(s, block)
    else:
      out[s:s + block.shape[0]] = block
  return out, ids, fixes


def suggest_level_sizes(num_tracks: int, num_levels: int, multiple: int = 8) -> tuple[int, ...]:
  """Equal codebook sizes (multiples of `multiple`) whose product is >= num_tracks: the smallest that
  allow unique IDs with `unique_last_level` and no extra token."""
  size = max(2, math.ceil(num_tracks ** (1.0 / num_levels) - 1e-9))
  size = -(-size // multiple) * multiple
  return (int(size),) * num_levels


def check_level_sizes(level_sizes: Sequence[int], num_tracks: int, disambiguation: bool) -> tuple[int, ...]:
  sizes = tuple(level_sizes)
  if not sizes:
    raise UserInputError("level_sizes must name at least one level")
  for l, s in enumerate(sizes):
    if not isinstance(s, (int, np.integer)) or s < 2:
      raise UserInputError(f"level_sizes[{l}]={s!r}: every codebook needs at least 2 codes")
  if sizes[0] > num_tracks:
    raise UserInputError(f"level_sizes[0]={sizes[0]} is larger than the number of tracks ({num_tracks})")
  if disambiguation is False and math.prod(sizes) < num_tracks:
    raise UserInputError(
        f"level_sizes {sizes} give {math.prod(sizes)} distinct IDs < {num_tracks} tracks; enlarge them or "
        f"keep disambiguation=True")
  return tuple(int(s) for s in sizes)


# ----------------------------------------------------------------------------------------------- #
# Assignment helpers.


def balanced_assign(x_NxD: np.ndarray, centroids_KxD: np.ndarray, *, slack: float = 0.0,
                    chunk: int = 8192, capacity: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Capacity-constrained assignment: (labels_N int32, squared distance_N float32).

  Capacity per cluster: ceil(N / K * (1 + slack)), or `capacity` when given (N <= K * capacity).  Greedy by regret: points sorted by
  (2nd nearest - nearest) distance, largest first, each takes its nearest centroid with room.  Keeps
  only the `m` nearest centroids per point (m = min(K, 16)); a point whose m candidates are all full
  (rare) takes the nearest centroid with room among all K.  O(N*K*D) for the distances, O(N log N)
  for the greedy pass.
  """
  x = x_NxD  # Read chunk by chunk (works for memmaps / RowFiles).
  c = np.asarray(centroids_KxD, np.float32)
  n, k = x.shape[0], c.shape[0]
  cap = int(math.ceil(n / k * (1.0 + max(slack, 0.0)))) if capacity is None else int(capacity)
  assert cap * k >= n, (cap, k, n)
  m = min(k, 16)
  cand_NxM = np.empty((n, m), np.int32)
  dist_NxM = np.empty((n, m), np.float32)
  c_sq = (c * c).sum(1)
  for s in range(0, n, chunk):
    xb = np.asarray(x[s:s + chunk], np.float32)
    d = np.maximum((xb * xb).sum(1)[:, None] - 2 * xb @ c.T + c_sq[None, :], 0.0)
    part = np.argpartition(d, m - 1, axis=1)[:, :m] if m < k else np.tile(np.arange(k), (len(xb), 1))
    dp = np.take_along_axis(d, part, axis=1)
    o = np.argsort(dp, axis=1, kind="stable")
    cand_NxM[s:s + chunk] = np.take_along_axis(part, o, axis=1)
    dist_NxM[s:s + chunk] = np.take_along_axis(dp, o, axis=1)
  regret = dist_NxM[:, 1] - dist_NxM[:, 0] if m > 1 else np.zeros(n, np.float32)
  order = np.lexsort((np.arange(n), -regret))
  room = np.full(k, cap, np.int64)
  labels = np.full(n, -1, np.int32)
  dist = np.zeros(n, np.float32)
  for i in order:
    for j in range(m):
      cj = cand_NxM[i, j]
      if room[cj] > 0:
        room[cj] -= 1
        labels[i], dist[i] = cj, dist_NxM[i, j]
        break
    else:
      xi = np.asarray(x[i], np.float32)
      d = np.maximum((xi * xi).sum() - 2 * c @ xi + c_sq, 0.0)
      d[room <= 0] = np.inf
      cj = int(np.argmin(d))
      room[cj] -= 1
      labels[i], dist[i] = cj, d[cj]
  return labels, dist


def _cluster(x_NxD, k: int, *, seed: int, balanced: bool, balance_slack: float, kmeans_kwargs: dict):
  """(labels_N, centroids_KxD, KMeansResult) for one level/node."""
  res = kmeans_lib.kmeans(x_NxD, k, seed=seed, check_finite=False, **kmeans_kwargs)
  labels, cent = res.labels_N, res.centroids_KxD
  if balanced:
    labels, _ = balanced_assign(x_NxD, cent, slack=balance_slack)
    # One refinement: recentre on the balanced clusters, then re-balance.
    counts = np.bincount(labels, minlength=k)
    sums = np.zeros(cent.shape, np.float64)
    step = 1 << 16
    for s in range(0, labels.size, step):
      xb = np.asarray(x_NxD[s:s + step], np.float64)
      for dim in range(xb.shape[1]):
        sums[:, dim] += np.bincount(labels[s:s + step], weights=xb[:, dim], minlength=k)
    cent = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], cent).astype(np.float32)
    labels, _ = balanced_assign(x_NxD, cent, slack=balance_slack)
  return labels.astype(np.int32), cent, res


def disambiguate(codes_NxL: np.ndarray, order_key_N: np.ndarray) -> tuple[np.ndarray, int, int]:
  """Extra code column that makes rows unique: rank within each group of equal rows by order_key
  (ties by row).  Returns (codes [N, L+1], num tracks in colliding groups, largest group size)."""
  n, num_levels = codes_NxL.shape
  keys = [np.arange(n), np.asarray(order_key_N)] + [codes_NxL[:, l] for l in range(num_levels - 1, -1, -1)]
  order = np.lexsort(keys)
  sorted_codes = codes_NxL[order]
  new_group = np.ones(n, bool)
  if n > 1:
    new_group[1:] = np.any(sorted_codes[1:] != sorted_codes[:-1], axis=1)
  group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
  rank_sorted = np.arange(n) - group_start
  rank = np.empty(n, np.int64)
  rank[order] = rank_sorted
  group_id = np.cumsum(new_group) - 1
  sizes = np.bincount(group_id)
  in_collision = sizes[group_id] > 1
  out = np.concatenate([codes_NxL, rank[:, None]], axis=1).astype(np.int32)
  return out, int(in_collision.sum()), int(sizes.max()) if n else 0


# ----------------------------------------------------------------------------------------------- #
# Methods.


def _rows_chunks(n: int, step: int = 1 << 16):
  for s in range(0, n, step):
    yield s, min(s + step, n)


def greedy_matching(d_RxC: np.ndarray) -> np.ndarray:
  """Greedy minimum-distance matching of R rows to C >= R columns: the column of each row.

  The answer of taking (row, column) pairs in increasing (distance, row, column) order, each when
  neither is taken yet, computed in rounds instead of by sorting all R x C pairs: a pair that is
  its row's and its column's best among those left (in that order) is one the sorted walk takes
  (nothing before it can use its row or column), so every round takes all such pairs at once
  (Preis's locally-dominant edges).  O(R x C) numpy work per round, a few rounds in practice; the
  sorted walk took ~2 minutes of Python at 678k tracks (bench_mpd_scale, 100k playlists).
  """
  d = np.array(d_RxC, np.float64)
  r, c = d.shape
  assert c >= r, (r, c)
  out = np.full(r, -1, np.int64)
  rows_left, cols_left = np.arange(r), np.arange(c)
  while rows_left.size:
    sub = d[np.ix_(rows_left, cols_left)]
    best_col = sub.argmin(axis=1)  # first column on ties: the (distance, row, column) order
    best_row = sub.argmin(axis=0)
    mutual = best_row[best_col] == np.arange(rows_left.size)
    out[rows_left[mutual]] = cols_left[best_col[mutual]]
    keep_cols = np.ones(cols_left.size, bool)
    keep_cols[best_col[mutual]] = False
    rows_left, cols_left = rows_left[~mutual], cols_left[keep_cols]
  return out


def unique_within_prefix(x_NxD, prefix_NxP: np.ndarray, labels_N: np.ndarray,
                         centroids_KxD: np.ndarray) -> tuple[np.ndarray, int, int]:
  """Last-level codes made unique inside every prefix: (labels_N, tracks moved, tracks left colliding).

  For each group of rows with equal `prefix_NxP`, a code held by one row stays; of the rows sharing a
  code the nearest keeps it and the others take the nearest codes no row of the group holds, greedily
  by distance over (row, free code) pairs.  A group with more rows than codes cannot be made unique
  and is left as it is (the disambiguation level then separates it).  Only colliding groups are
  read from `x_NxD` (an array, memmap or RowFile), so this is cheap when collisions are few.
  """
  n, k = labels_N.shape[0], centroids_KxD.shape[0]
  labels = labels_N.astype(np.int32).copy()
  keys = [labels] + [prefix_NxP[:, j] for j in range(prefix_NxP.shape[1] - 1, -1, -1)]
  order = np.lexsort(keys)
  p_sorted, l_sorted = prefix_NxP[order], labels[order]
  same_prefix = np.zeros(n, bool)
  if n > 1:
    same_prefix[1:] = np.all(p_sorted[1:] == p_sorted[:-1], axis=1)
  dup = np.zeros(n, bool)
  if n > 1:
    dup[1:] = same_prefix[1:] & (l_sorted[1:] == l_sorted[:-1])
  if not dup.any():
    return labels, 0, 0
  starts = np.flatnonzero(~same_prefix)
  ends = np.append(starts[1:], n)
  group_of = np.cumsum(~same_prefix) - 1
  c = np.asarray(centroids_KxD, np.float64)
  moved = left = 0
  for g in np.unique(group_of[dup]):
    rows = order[starts[g]:ends[g]]
    if rows.size > k:
      left += int(rows.size)
      continue
    rows = np.sort(rows)
    xg = np.asarray(x_NxD[rows], np.float64)
    d = (xg * xg).sum(1)[:, None] - 2.0 * xg @ c.T + (c * c).sum(1)[None, :]
    lab = labels[rows]
    # Of the rows sharing a code the nearest keeps it (ties: the first row); the others are freed,
    # listed by (code, row) as the tie order of the matching below.
    idx = np.arange(rows.size)
    by_code = np.lexsort((idx, d[idx, lab], lab))
    keeper = np.zeros(rows.size, bool)
    keeper[by_code[np.r_[True, lab[by_code][1:] != lab[by_code][:-1]]]] = True
    free_rows = np.lexsort((idx, lab))
    free_rows = free_rows[~keeper[free_rows]]
    taken = np.zeros(k, bool)
    taken[lab] = True
    free_codes = np.flatnonzero(~taken)
    matched = greedy_matching(d[free_rows][:, free_codes])
    labels[rows[free_rows]] = free_codes[matched]
    moved += int(free_rows.size)
  return labels, moved, left


def _sorted_groups(prefix_NxP: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(group_N, order, starts): a group id per row (equal prefixes), rows sorted by group, group starts."""
  n = prefix_NxP.shape[0]
  if prefix_NxP.shape[1] == 0:
    group = np.zeros(n, np.int64)
  else:
    group = np.unique(prefix_NxP, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)
  order = np.argsort(group, kind="stable")
  starts = np.searchsorted(group[order], np.arange(int(group.max()) + 2 if n else 1))
  return group, order, starts


def capacity_within_prefix(x_NxD, prefix_NxP: np.ndarray, labels_N: np.ndarray, centroids_KxD: np.ndarray,
                           capacity: int) -> tuple[np.ndarray, int, int]:
  """Codes of one level re-assigned so no (prefix, code) group holds more than `capacity` rows:
  (labels_N, rows re-assigned, rows in prefix groups too large to fit: more than K * capacity).

  Only prefix groups with an over-full code are touched; inside them `balanced_assign` with that
  capacity (greedy by regret, each row to its nearest code with room).  With capacity = the product of
  the later levels' sizes, every group below fits the codes left (pigeonhole: a group larger than
  K * capacity cannot), so the last level can make every ID unique (`unique_within_prefix`).
  """
  k = centroids_KxD.shape[0]
  labels = labels_N.astype(np.int32).copy()
  group, order, starts = _sorted_groups(prefix_NxP)
  over_full = np.bincount(group * k + labels, minlength=(int(group.max()) + 1) * k if group.size else 0) > capacity
  moved = too_large = 0
  for g in np.unique(np.flatnonzero(over_full) // k):
    rows = np.sort(order[starts[g]:starts[g + 1]])
    if rows.size > k * capacity:
      too_large += int(rows.size)
      continue
    x = x_NxD if rows.size == labels.size else np.asarray(x_NxD[rows], np.float32)  # streamed root: chunks
    new, _ = balanced_assign(x, centroids_KxD, capacity=capacity)
    moved += int((new != labels[rows]).sum())
    labels[rows] = new
  return labels, moved, too_large


def _residual_kmeans(emb, level_sizes, *, seed, balanced, balance_slack, kmeans_kwargs, progress,
                     unique_last_level: bool = False):
  """Residual k-means.  `emb` is consumed: in memory it is copied; a RowFile is updated in place."""
  n = emb.shape[0]
  streamed = isinstance(emb, kmeans_lib.RowFile)
  residual = emb if streamed else np.array(emb, np.float32)
  codes = np.zeros((n, len(level_sizes)), np.int32)
  err_N = np.zeros(n, np.float64)
  levels = []
  for l, k in enumerate(level_sizes):
    if k > n:
      raise UserInputError(f"level_sizes[{l}]={k} is larger than the number of tracks ({n})")
    labels, cent, res = _cluster(residual, k, seed=seed + 1000 * l, balanced=balanced,
                                 balance_slack=balance_slack, kmeans_kwargs=kmeans_kwargs)
    extra = {}
    if unique_last_level and l == len(level_sizes) - 1 and l > 0:
      labels, moved, left = unique_within_prefix(residual, codes[:, :l], labels, cent)
      extra = {"unique_last_level_moved": moved, "unique_last_level_left_colliding": left}
    elif unique_last_level and l < len(level_sizes) - 1:
      room = math.prod(level_sizes[l + 1:])
      labels, moved, too_large = capacity_within_prefix(residual, codes[:, :l], labels, cent, room)
      extra = {"prefix_capacity": room, "prefix_capacity_moved": moved, "prefix_capacity_too_large": too_large}
    codes[:, l] = labels
    for s, e in _rows_chunks(n):
      block = np.asarray(residual[s:e], np.float32) - cent[labels[s:e]]
      err_N[s:e] = (block.astype(np.float64) ** 2).sum(1)
      if streamed:
        residual.write(s, block)
      else:
        residual[s:e] = block
    levels.append({"level": l, "k": k, "kmeans_iterations": res.iterations, "kmeans_inertia": res.inertia,
                   "kmeans_seconds": res.seconds, "empty_repaired": res.num_empty_repaired,
                   "mean_sq_residual": float(err_N.mean()), **extra})
    if progress:
      progress(l + 1)
  return codes, err_N, levels


def _hierarchical_kmeans(emb, level_sizes, *, seed, balanced, balance_slack, kmeans_kwargs, progress,
                         node_kmeans_kwargs):
  n = emb.shape[0]
  codes = np.zeros((n, len(level_sizes)), np.int32)
  err = np.zeros(n, np.float64)
  levels = [{"level": l, "k": k, "nodes_clustered": 0, "nodes_direct": 0} for l, k in enumerate(level_sizes)]
  # Frontier of (member rows, level); breadth first so the progress bar moves per level.
  frontier = [np.arange(n)]
  for l, k in enumerate(level_sizes):
    nxt = []
    for node, rows in enumerate(frontier):
      # The root node of a streamed input stays streamed; deeper nodes (~N / level_sizes[0]) are loaded.
      x = emb if (l == 0 and kmeans_lib.is_streamed(emb)) else np.asarray(emb[rows], np.float32)
      if rows.size <= k:
        x = np.asarray(x[:], np.float32)
        # Few members: each gets its own code, nearest to the node centroid first.
        center = x.mean(0, keepdims=True)
        d = ((x - center) ** 2).sum(1)
        order = np.lexsort((rows, d))
        codes[rows[order], l] = np.arange(rows.size)
        err[rows] = d
        levels[l]["nodes_direct"] += 1
        continue
      labels, cent, _ = _cluster(x, k, seed=seed + 7919 * l + node, balanced=balanced,
                                 balance_slack=balance_slack,
                                 kmeans_kwargs=kmeans_kwargs if l == 0 else node_kmeans_kwargs)
      codes[rows, l] = labels
      for s, e in _rows_chunks(rows.size):
        err[rows[s:e]] = ((np.asarray(x[s:e], np.float64) - cent[labels[s:e]]) ** 2).sum(1)
      levels[l]["nodes_clustered"] += 1
      order = np.argsort(labels, kind="stable")
      bounds = np.searchsorted(labels[order], np.arange(k + 1))
      for c in range(k):
        members = rows[order[bounds[c]:bounds[c + 1]]]
        if members.size > 1:
          nxt.append(members)
    frontier = nxt
    if progress:
      progress(l + 1)
  return codes, err, levels


def check_collision_args(collisions: str, disambiguation) -> bool | str:
  """Validates the collision policy; returns the effective `disambiguation` (True / False / "auto")."""
  if collisions not in COLLISION_POLICIES:
    raise UserInputError(f"collisions must be one of {COLLISION_POLICIES}, got {collisions!r}")
  if disambiguation not in (None, True, False, "auto"):
    raise UserInputError(f"disambiguation must be True, False or 'auto', got {disambiguation!r}")
  if collisions == "most_popular":
    if disambiguation not in (None, False):
      raise UserInputError(f"collisions='most_popular' adds no disambiguation level; drop "
                           f"disambiguation={disambiguation!r}")
    return False
  return True if disambiguation is None else disambiguation


def resolve_collisions(codes_NxL: np.ndarray, order_key_N: np.ndarray, sizes: tuple[int, ...], *,
                       collisions: str = "disambiguate", disambiguation: bool | str = True,
                       max_disambiguation: int | None = None, popularity=None,
                       what: str = "level_sizes") -> tuple[np.ndarray, tuple[int, ...], dict, dict]:
  """Applies the collision policy to fixed-length codes: (codes, level sizes, stats, meta).

  "disambiguate": an extra level ranks the tracks of every shared ID by `order_key_N` (True), only
  when some collide ("auto"), or never (False: raise if any collide).  "most_popular": codes kept,
  the most popular track of a shared ID owns it (`table.most_popular_owners`, meta["unreachable_rows"]).
  """
  n = codes_NxL.shape[0]
  full, num_colliding, largest = disambiguate(codes_NxL, order_key_N)
  stats = {"num_colliding_tracks": num_colliding,
           "num_collisions": int(n - np.unique(codes_NxL, axis=0).shape[0]) if n else 0,
           "collision_rate": num_colliding / max(n, 1), "collision_policy": collisions}
  meta = {"collision_policy": collisions, "num_disambiguated": 0}
  if collisions == "most_popular":
    unreachable, owner_stats = most_popular_owners(codes_NxL, popularity)
    stats.update(owner_stats, disambiguation_size=0)
    meta.update(disambiguation=False, unreachable_rows=unreachable.tolist())
    return codes_NxL, sizes, stats, meta
  if disambiguation == "auto":
    disambiguation = num_colliding > 0
  if disambiguation:
    if max_disambiguation is not None and largest > max_disambiguation:
      raise UserInputError(
          f"{what} {sizes}: {num_colliding} tracks collide and the largest group has {largest} tracks, "
          f"more than max_disambiguation={max_disambiguation}; use larger or more levels or balanced=True")
    codes_out, out_sizes = full, sizes + (max(largest, 1),)
  else:
    if num_colliding:
      raise UserInputError(
          f"{what} {sizes} without disambiguation: {num_colliding} of {n} tracks share their ID "
          f"(largest group {largest}); enlarge the codebooks, use balanced=True, disambiguation=True or "
          f"collisions='most_popular'")
    codes_out, out_sizes = codes_NxL, sizes
  stats["disambiguation_size"] = int(largest) if disambiguation else 0
  meta.update(disambiguation=bool(disambiguation), num_disambiguated=num_colliding)
  return codes_out, out_sizes, stats, meta


def _quantize(embeddings, track_ids, sizes, *, method, seed, iterations, balanced, balance_slack,
              normalize, on_zero_norm, unique_last_level, kmeans_kwargs, stream, scratch_dir, progress):
  """`build_semantic_ids`' k-means levels over the prepared embeddings: (track ids, fixes,
  N, codes [N, L], squared quantization error [N], per-level details).  Streamed input is prepared
  into a scratch file under `scratch_dir`, removed however this ends."""
  # Streamed k-means (k-means|| init) for levels over all N points; hierarchical nodes below the root
  # hold ~N / level_sizes[0] points and run in memory.
  node_kw = {"iterations": iterations, **(kmeans_kwargs or {}), "stream": False}
  kw = {"iterations": iterations, **({"stream": True, "init": "k-means||"} if stream else {}),
        **(kmeans_kwargs or {})}
  run = _residual_kmeans if method == "rq" else _hierarchical_kmeans
  scratch = None
  try:
    work = None
    if stream:
      scratch = tempfile.mkdtemp(prefix="semantic_ids_", dir=scratch_dir)
      kmeans_lib.check_points(embeddings, check_finite=False)
      work = kmeans_lib.RowFile.create(os.path.join(scratch, "work.f32"), embeddings.shape)
    emb, ids, fixes = prepare_embeddings(embeddings, track_ids, on_zero_norm=on_zero_norm,
                                         normalize=normalize, seed=seed, out=work)
    extra = {"node_kmeans_kwargs": node_kw} if method == "hkmeans" else {"unique_last_level": unique_last_level}
    codes, err_N, levels = run(emb, sizes, seed=seed, balanced=balanced, balance_slack=balance_slack,
                               kmeans_kwargs=kw, progress=progress, **extra)
    return ids, fixes, emb.shape[0], codes, err_N, levels
  finally:
    if scratch is not None:
      if work is not None:
        work.close()
      shutil.rmtree(scratch, ignore_errors=True)


def build_semantic_ids(embeddings, track_ids: Sequence[str], *, level_sizes: Sequence[int] = (64, 64, 64),
                       method: str = "rq", seed: int = 0, iterations: int = 20, balanced: bool = False,
                       balance_slack: float = 0.0, normalize: bool = False, on_zero_norm: str = "error",
                       disambiguation: bool | str | None = None, max_disambiguation: int | None = None,
                       collisions: str = "disambiguate", popularity=None,
                       unique_last_level: bool = False, kmeans_kwargs: dict | None = None, stream: bool | None = None,
                       scratch_dir: str | None = None,
                       progress: Callable[[int], Any] | None = None) -> IdTable:
  """Semantic-ID table for embeddings [N, D] (ndarray or memmap) in the order of `track_ids`.

  level_sizes: codebook size per level (the disambiguation level is appended and sized to fit).
  method: "rq" (residual k-means) or "hkmeans" (hierarchical, DSI).  balanced: capacity-constrained
  assignment (see module doc).  kmeans_kwargs: extra `kmeans.kmeans` arguments (tol, chunk_size,
  init, mesh, precision, ...).  progress(levels_done) is called after every level.
  disambiguation: True (always append the level; the default), False (fixed length; raise if IDs
  collide) or "auto" (append it only when some IDs collide).
  `max_disambiguation`: raise if the disambiguation level would need more codes than this.
  collisions: "disambiguate" (the above) or "most_popular" (no extra level: a shared ID decodes to its
  most popular track, by `popularity` = training counts per track; see table.py).
  unique_last_level ("rq" only): inside each prefix, tracks that would share a last-level code move to
  the nearest free code of that level (`unique_within_prefix`), so the last real level, not an extra
  token, tells them apart whenever a prefix has no more tracks than codes.
  stream: stream from disk (default: True for np.memmap / RowFile input).  The working copy of the
  embeddings (residuals for "rq") then lives in a scratch file under `scratch_dir` (default: the
  system temp dir), read and written chunk by chunk with pread/pwrite, and k-means streams too;
  memory holds O(N) integers/floats for codes and distances, not the N x D matrix.
  """
  t0 = time.perf_counter()
  if method not in METHODS:
    raise UserInputError(f"semantic ID method must be one of {METHODS}, got {method!r}")
  if stream is None:
    stream = kmeans_lib.is_streamed(embeddings)
  n = embeddings.shape[0] if getattr(embeddings, "ndim", 0) == 2 else 0
  disambiguation = check_collision_args(collisions, disambiguation)
  sizes = check_level_sizes(level_sizes, max(n, 1), disambiguation if collisions == "disambiguate" else True)
  if unique_last_level and method != "rq":
    raise UserInputError("unique_last_level applies to method='rq' (hierarchical k-means balances inside "
                         "each node instead: balanced=True)")
  ids, fixes, n, codes, err_N, levels = _quantize(
      embeddings, track_ids, sizes, method=method, seed=seed, iterations=iterations, balanced=balanced,
      balance_slack=balance_slack, normalize=normalize, on_zero_norm=on_zero_norm,
      unique_last_level=unique_last_level, kmeans_kwargs=kmeans_kwargs, stream=stream,
      scratch_dir=scratch_dir, progress=progress)
  codes_out, out_sizes, coll_stats, coll_meta = resolve_collisions(
      codes, err_N, sizes, collisions=collisions, disambiguation=disambiguation,
      max_disambiguation=max_disambiguation, popularity=popularity)
  stats = {
      "method": method,
      "balanced": bool(balanced),
      **coll_stats,
      "mean_sq_quantization_error": float(err_N.mean()),
      "levels_detail": levels,
      "seconds": time.perf_counter() - t0,
  }
  if unique_last_level and len(sizes) > 1:
    stats["unique_possible"] = math.prod(sizes) >= n
    if not stats["unique_possible"]:
      stats["unique_impossible_reason"] = (
          f"level_sizes {sizes} give {math.prod(sizes)} distinct IDs < {n} tracks: some prefix group must "
          f"hold more tracks than the last codebook (pigeonhole); use sizes with a product >= {n}, e.g. "
          f"{suggest_level_sizes(n, len(sizes))}")
  stats.update(fixes)
  meta = {
      "method": method,
      "requested_level_sizes": list(sizes),
      **coll_meta,
      "seed": seed,
      "iterations": iterations,
      "balanced": bool(balanced),
      "balance_slack": balance_slack,
      "unique_last_level": bool(unique_last_level),
      "normalize": bool(normalize),
      **fixes,
      "stats": stats,
  }
  strategy = "semantic_rq" if method == "rq" else "semantic_hkmeans"
  return IdTable(strategy=strategy, track_ids=ids, codes=codes_out, level_sizes=out_sizes, is_text=False, meta=meta)
