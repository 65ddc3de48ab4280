"""Cold-start positions: CF vectors for tracks with no training co-occurrence.

A track in no training playlist has no CF signal.  Random vectors (what `embeddings.fit_embeddings`
gives them) scatter such tracks over the codebooks: their IDs mean nothing, and on a real catalog
they crowd the prefix groups of unrelated tracks.  `fill_cold_start` places each cold track, in order
of preference, at

  1. "by_artist":   the mean CF vector of its artist's warm tracks (artist co-occurrence: a new track
                    sits with the artist's others);
  2. "by_text_knn": the cosine-weighted mean CF vector of its k nearest warm tracks in a text-embedding
                    space (kNN regression; weights max(cos, 0), uniform when all are <= 0), when text
                    embeddings are given (text_embeddings.py: metadata text covers cold tracks);
  3. "fallback":    the mean of all warm vectors plus a small deterministic jitter (1% of the median
                    warm norm, seeded): cold tracks with nothing to go by sit together near the centre
                    instead of taking random places among warm tracks.

Filled vectors 1 and 2 are rescaled to the mean norm of the vectors they average (unit for
normalised CF embeddings), so they quantise like warm ones.  Everything is deterministic.  `info`
counts the tracks per method (stats.json "cold_start").  Memory: the kNN step works on chunks of
`chunk` cold tracks against all warm text vectors.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from t2t_jax.errors import UserInputError


def _rescale(vec_MxD: np.ndarray, norm_M: np.ndarray) -> np.ndarray:
  cur = np.linalg.norm(vec_MxD, axis=1, keepdims=True)
  return np.where(cur > 1e-12, vec_MxD / np.maximum(cur, 1e-30) * norm_M[:, None], vec_MxD)


def _by_artist(cf, warm, todo, artists):
  """(rows filled, their vectors): the mean warm vector of each cold row's artist."""
  names, artist_N = np.unique(np.asarray(artists, dtype=object).astype(str), return_inverse=True)
  artist_N = artist_N.reshape(-1)
  a = names.size
  count_A = np.bincount(artist_N[warm], minlength=a).astype(np.float64)
  sums_AxD = np.zeros((a, cf.shape[1]), np.float64)
  np.add.at(sums_AxD, artist_N[warm], cf[warm].astype(np.float64))
  norm_A = np.bincount(artist_N[warm], weights=np.linalg.norm(cf[warm], axis=1), minlength=a)
  rows = todo[count_A[artist_N[todo]] > 0]
  art = artist_N[rows]
  mean = sums_AxD[art] / count_A[art][:, None]
  ok = np.linalg.norm(mean, axis=1) > 1e-9  # opposite vectors can cancel: leave those to the next step
  rows, art, mean = rows[ok], art[ok], mean[ok]
  return rows, _rescale(mean, norm_A[art] / count_A[art])


def _by_text_knn(cf, warm_rows, todo, text, k, chunk):
  """Cosine-weighted mean CF vector of the k nearest warm tracks in text space."""
  t = np.asarray(text, np.float32)
  t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
  tw = t[warm_rows]
  k = min(k, warm_rows.size)
  out = np.zeros((todo.size, cf.shape[1]), np.float64)
  warm_cf = cf[warm_rows].astype(np.float64)
  warm_norm = np.linalg.norm(warm_cf, axis=1)
  for s in range(0, todo.size, chunk):
    sim = t[todo[s:s + chunk]] @ tw.T
    # Top k by similarity, ties by warm row (stable argsort of -sim): deterministic.
    nn = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    w = np.maximum(np.take_along_axis(sim, nn, 1), 0.0).astype(np.float64)
    w = np.where(w.sum(1, keepdims=True) > 0, w, 1.0)
    w /= w.sum(1, keepdims=True)
    mean = np.einsum("mk,mkd->md", w, warm_cf[nn])
    out[s:s + chunk] = _rescale(mean, (w * warm_norm[nn]).sum(1))
  return out


def fill_cold_start(cf_NxD: np.ndarray, cold_mask_N: np.ndarray, *, artists: Sequence[str] | None = None,
                    text_NxE: np.ndarray | None = None, k: int = 10, seed: int = 0,
                    order: Sequence[str] = ("artist", "text_knn"), chunk: int = 4096) -> tuple[np.ndarray, dict]:
  """(float32 [N, D] embeddings with cold rows replaced, {"num_cold", "by_artist", "by_text_knn",
  "fallback"}).  Warm rows are returned unchanged.  `order`: the methods to try, first to last
  ("artist" needs `artists`, "text_knn" needs `text_NxE`; a method without its input is skipped);
  the fallback comes last.  See the module doc."""
  cf = np.array(cf_NxD, np.float32)
  cold = np.asarray(cold_mask_N, bool)
  n = cf.shape[0]
  if cf.ndim != 2 or cold.shape != (n,):
    raise UserInputError(f"fill_cold_start: embeddings {cf.shape} and cold mask {cold.shape} do not match")
  if artists is not None and len(artists) != n:
    raise UserInputError(f"fill_cold_start: {len(artists)} artists for {n} tracks")
  if text_NxE is not None and np.shape(text_NxE)[0] != n:
    raise UserInputError(f"fill_cold_start: {np.shape(text_NxE)[0]} text embeddings for {n} tracks")
  if set(order) - {"artist", "text_knn"}:
    raise UserInputError(f"fill_cold_start: order must name 'artist' and/or 'text_knn', got {tuple(order)}")
  if not isinstance(k, (int, np.integer)) or k < 1:
    raise UserInputError(f"fill_cold_start: k must be a positive integer, got {k!r}")
  info = {"num_cold": int(cold.sum()), "by_artist": 0, "by_text_knn": 0, "fallback": 0}
  todo = np.flatnonzero(cold)
  if not todo.size:
    return cf, info
  warm = ~cold
  warm_rows = np.flatnonzero(warm)
  if not warm_rows.size:
    raise UserInputError("fill_cold_start: no track has training co-occurrence (every track is cold)")
  for method in order:
    if method == "artist" and artists is not None and todo.size:
      rows, vecs = _by_artist(cf, warm, todo, artists)
      cf[rows] = vecs
      info["by_artist"] = int(rows.size)
      todo = np.setdiff1d(todo, rows)
    elif method == "text_knn" and text_NxE is not None and todo.size:
      cf[todo] = _by_text_knn(cf, warm_rows, todo, text_NxE, int(k), chunk)
      info["by_text_knn"] = int(todo.size)
      todo = todo[:0]
  if todo.size:
    norms = np.linalg.norm(cf[warm_rows], axis=1)
    jitter = np.random.default_rng([seed, 0xC01D]).normal(size=(todo.size, cf.shape[1]))
    cf[todo] = cf[warm_rows].mean(0) + 0.01 * float(np.median(norms)) * jitter
    info["fallback"] = int(todo.size)
  return cf, info
