"""Collaborative-filtering track embeddings from playlist co-occurrence, in JAX; embedding files.

Method: truncated SVD of the degree-normalised playlist x track incidence matrix
    A_hat = D_p^-1/2  A  D_t^-1/2          (A[p, t] = 1 if track t is in playlist p)
by randomized subspace iteration (Halko, Martinsson & Tropp 2011).  The right singular vectors of
A_hat are the top eigenvectors of the normalised co-occurrence matrix
    C_hat = D_t^-1/2 (A^T D_p^-1 A) D_t^-1/2,
i.e. track-track co-occurrence in which every playlist's contribution is divided by its length and
every pair by sqrt(popularity_i * popularity_j) -- the same two corrections PMI makes (divide by the
marginals) in a form whose spectrum is bounded by 1 (spectral co-clustering, Dhillon 2001).

Why this and not PPMI + SVD or implicit ALS:
  * PPMI needs the track x track co-occurrence matrix, whose non-zeros grow with sum(len_p^2)
    (~4e9 pairs for 1M Million-Playlist-Dataset playlists): it does not fit 24 GB.  A_hat has
    sum(len_p) non-zeros (~66M for MPD, 0.5 GB as int32 indices) and C_hat is never formed: every
    product is C_hat @ X = A_hat^T (A_hat X), computed block by block of playlists.
  * ALS needs a regularisation weight, a confidence scale and a per-row solve each sweep, and its
    result depends on their tuning; the SVD has one knob (dim) and a deterministic answer.
  * Cost: (power_iters + 2) streamed passes over the non-zeros, memory O(num_tracks * (dim + p)).
    Memory: CSR (4 B per non-zero + 8 B per playlist; memory-mappable via PlaylistMatrix.save/load)
    + ~3 x num_tracks x (dim + 17) float32 + per-block temporaries (~3 x block_nnz x (dim + 17) x 4 B:
    ~0.2 GB at the default block_nnz = 2^19; 2^22 took 1.4 GB and, at 678k tracks / 5.2M non-zeros
    (bench_mpd_scale's 100k playlists), 1.2 GB more peak RSS for no speed).  Measured
    (tools/bench_kmeans.py --cf_scale, at 2^22): 1M tracks x 1M playlists, 19.1M non-zeros, dim 64:
    326 s and 3.1 GiB peak RSS on a 2-core CPU shared with other jobs (load ~13); the Million
    Playlist Dataset (66M non-zeros) adds ~0.2 GB of CSR: far inside 24 GB.  Orthonormalisation is shifted Cholesky-QR3 (matmuls only; see `_orthonormalize`).
The leading singular vector of A_hat (sqrt of track popularity, singular value 1) carries no
co-occurrence structure and is dropped.  Rows are V_k * s_k ** singular_power (0.5 by default, the
symmetric split Levy & Goldberg found best for word vectors), then L2-normalised (as in
Ng-Jordan-Weiss spectral clustering) so k-means on them clusters by direction.

Cold tracks (in no playlist) have no co-occurrence signal; `fit_embeddings` gives them seeded random
unit vectors (counted in `EmbeddingInfo.num_cold_tracks`).  Random positions make meaningless IDs:
catalog pipelines replace them with `cold_start.fill_cold_start` (artist / text neighbours), which
`catalog.catalog_embeddings` does.

`word2vec_embeddings`: the paper's CF embeddings, gensim's Word2Vec (skip-gram, negative sampling)
over playlists as sentences of track rows.  Deterministic with one worker thread and a seed.  Tracks
in no playlist get zero rows (filled by cold_start).

Embedding files (DESIGN.md "Artifacts"): float32 [N, d] `embeddings.npy` + `track_ids.txt`
(one id per line, same order), written atomically by `save_embeddings`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
import zlib
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from t2t_jax import io_utils
from t2t_jax.errors import UserInputError, where
from t2t_jax.ids.table import check_track_ids

EMBEDDINGS_FILE = "embeddings.npy"
TRACK_IDS_FILE = "track_ids.txt"


# ----------------------------------------------------------------------------------------------- #
# The sparse playlist x track matrix (CSR on the host; int32 indices, optional memmap).


@dataclasses.dataclass
class PlaylistMatrix:
  """Binary playlist x track incidence in CSR form: playlist p holds indices[indptr[p]:indptr[p+1]]."""

  indptr: np.ndarray  # int64 [P + 1]
  indices: np.ndarray  # int32 [nnz], sorted and unique within each playlist
  num_tracks: int

  @property
  def num_playlists(self) -> int:
    return int(self.indptr.shape[0] - 1)

  @property
  def nnz(self) -> int:
    return int(self.indptr[-1])

  @classmethod
  def from_playlists(cls, playlists: Iterable[Sequence[int]], num_tracks: int,
                     block: int = 1 << 22) -> "PlaylistMatrix":
    """Builds the CSR from an iterable of track-row lists (streamed: holds only the CSR arrays).

    Duplicate tracks inside one playlist count once.  A row outside [0, num_tracks) is a
    UserInputError naming the playlist position and the row.
    """
    if not isinstance(num_tracks, (int, np.integer)) or num_tracks < 1:
      raise UserInputError(f"num_tracks must be a positive integer, got {num_tracks!r}")
    ptr_parts, idx_parts = [np.zeros(1, np.int64)], []
    buf_idx, buf_len, buffered, total = [], [], 0, 0

    def flush():
      nonlocal buf_idx, buf_len, buffered, total
      if not buf_len:
        return
      lens = np.asarray(buf_len, np.int64)
      ptr_parts.append(total + np.cumsum(lens))
      total += int(lens.sum())
      idx_parts.append(np.concatenate(buf_idx).astype(np.int32) if buf_idx else np.zeros(0, np.int32))
      buf_idx, buf_len, buffered = [], [], 0

    for p, rows in enumerate(playlists):
      arr = np.asarray(rows, dtype=np.int64).reshape(-1)
      if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= num_tracks:
          bad = lo if lo < 0 else hi
          raise UserInputError(f"playlist {p}: track row {bad} outside [0, {num_tracks})")
        arr = np.unique(arr)
      buf_idx.append(arr)
      buf_len.append(arr.size)
      buffered += arr.size
      if buffered >= block:
        flush()
    flush()
    indptr = np.concatenate(ptr_parts)
    indices = np.concatenate(idx_parts) if idx_parts else np.zeros(0, np.int32)
    return cls(indptr=indptr, indices=indices, num_tracks=int(num_tracks))

  def track_counts(self) -> np.ndarray:
    """int64 [N]: number of playlists containing each track."""
    counts = np.zeros(self.num_tracks, np.int64)
    step = 1 << 24
    for s in range(0, self.nnz, step):
      counts += np.bincount(self.indices[s:s + step], minlength=self.num_tracks)
    return counts

  def save(self, directory: str | os.PathLike) -> None:
    """Writes indptr.npy, indices.npy and meta.json atomically (re-open with `load(mmap=True)`)."""
    with io_utils.atomic_dir(directory, kind="playlist_matrix") as tmp:
      np.save(os.path.join(tmp, "indptr.npy"), self.indptr)
      np.save(os.path.join(tmp, "indices.npy"), self.indices)
      io_utils.write_json(os.path.join(tmp, "meta.json"),
                          {"num_tracks": self.num_tracks, "num_playlists": self.num_playlists, "nnz": self.nnz})

  @classmethod
  def load(cls, directory: str | os.PathLike, mmap: bool = True) -> "PlaylistMatrix":
    import json  # pylint: disable=g-import-not-at-top
    mode = "r" if mmap else None
    with open(os.path.join(directory, "meta.json"), encoding="utf-8") as f:
      meta = json.load(f)
    return cls(indptr=np.load(os.path.join(directory, "indptr.npy"), mmap_mode=mode),
               indices=np.load(os.path.join(directory, "indices.npy"), mmap_mode=mode),
               num_tracks=int(meta["num_tracks"]))

  def blocks(self, max_nnz: int) -> Iterable[tuple[int, int]]:
    """(first_playlist, end_playlist) ranges with at most max(max_nnz, longest playlist) non-zeros."""
    p, num = 0, self.num_playlists
    while p < num:
      target = int(self.indptr[p]) + max_nnz
      end = int(np.searchsorted(self.indptr, target, side="right")) - 1
      end = min(max(end, p + 1), num)
      yield p, end
      p = end


# ----------------------------------------------------------------------------------------------- #
# C_hat @ X, streamed over playlist blocks.


@functools.partial(jax.jit, static_argnames=("num_rows",), donate_argnames=("acc_NxR",))
def _block_gram_matvec(acc_NxR, x_NxR, rows_E, cols_E, vals_E, *, num_rows: int):
  """acc += A_b^T (A_b x) for one playlist block given as padded COO (vals 0 on padding)."""
  y_PxR = jax.ops.segment_sum(vals_E[:, None] * x_NxR[cols_E], rows_E, num_segments=num_rows)
  return acc_NxR.at[cols_E].add(vals_E[:, None] * y_PxR[rows_E])


class _GramOperator:
  """X -> C_hat X = A_hat^T A_hat X without forming C_hat; host CSR blocks, padded to fixed shapes."""

  def __init__(self, matrix: PlaylistMatrix, block_nnz: int):
    self.m = matrix
    counts_N = matrix.track_counts()
    self.col_scale_N = np.where(counts_N > 0, 1.0 / np.sqrt(np.maximum(counts_N, 1)), 0.0).astype(np.float32)
    self.counts_N = counts_N
    lens = np.diff(np.asarray(matrix.indptr))
    longest = int(lens.max()) if lens.size else 0
    self.block_nnz = max(int(block_nnz), longest, 1)
    self.block_rows = []
    for s, e in matrix.blocks(self.block_nnz):
      self.block_rows.append((s, e))
    self.max_rows = max([e - s for s, e in self.block_rows], default=1)
    # Pad every block to one power-of-two shape (one compile), no larger than the largest block.
    biggest = max([int(matrix.indptr[e] - matrix.indptr[s]) for s, e in self.block_rows], default=1)
    self.max_rows = 1 << int(np.ceil(np.log2(max(self.max_rows, 1))))
    self.block_nnz = 1 << int(np.ceil(np.log2(max(biggest, 1))))
    self._cached = None
    if len(self.block_rows) == 1:  # Small matrix: keep the one block on device.
      self._cached = [self._coo(*self.block_rows[0])]

  def _coo(self, s: int, e: int):
    m = self.m
    a, b = int(m.indptr[s]), int(m.indptr[e])
    cols = np.asarray(m.indices[a:b], np.int32)
    lens = np.diff(np.asarray(m.indptr[s:e + 1]))
    rows = np.repeat(np.arange(e - s, dtype=np.int32), lens)
    # A_hat[p, t] = 1 / sqrt(len_p) / sqrt(count_t).
    vals = (1.0 / np.sqrt(np.maximum(lens, 1)))[rows - 0].astype(np.float32) * self.col_scale_N[cols]
    pad = self.block_nnz - cols.size
    rows = np.concatenate([rows, np.zeros(pad, np.int32)])
    cols = np.concatenate([cols, np.zeros(pad, np.int32)])
    vals = np.concatenate([vals, np.zeros(pad, np.float32)])
    return jnp.asarray(rows), jnp.asarray(cols), jnp.asarray(vals)

  def __call__(self, x_NxR: jax.Array) -> jax.Array:
    acc_NxR = jnp.zeros_like(x_NxR)
    blocks = self._cached if self._cached is not None else (self._coo(s, e) for s, e in self.block_rows)
    for rows, cols, vals in blocks:
      acc_NxR = _block_gram_matvec(acc_NxR, x_NxR, rows, cols, vals, num_rows=self.max_rows)
    return acc_NxR


@jax.jit
def _orthonormalize(x_NxR):
  """Orthonormal basis of the columns by shifted Cholesky-QR3 (Fukaya et al. 2020): three rounds of
  Gram matrix -> Cholesky -> triangular solve, the first with a small diagonal shift so a rank-deficient
  input cannot break the factorisation.  All matmuls (N x R x R): on CPU ~20x faster than
  jnp.linalg.qr's Householder loop (measured 2.1 s vs 0.1 s for 20000 x 33), and it shards over N."""
  r = x_NxR.shape[1]
  x = x_NxR / jnp.maximum(jnp.linalg.norm(x_NxR, axis=0, keepdims=True), 1e-30)
  for shift in (1e-5, 0.0, 0.0):
    g_RxR = jnp.dot(x.T, x, precision=jax.lax.Precision.HIGHEST)
    g_RxR = g_RxR + (shift * jnp.trace(g_RxR) / r + 1e-30) * jnp.eye(r, dtype=g_RxR.dtype)
    l_RxR = jnp.linalg.cholesky(g_RxR)
    x = jax.scipy.linalg.solve_triangular(l_RxR, x.T, lower=True).T
  return x


@dataclasses.dataclass
class EmbeddingInfo:
  num_tracks: int
  num_playlists: int
  nnz: int
  dim: int
  num_cold_tracks: int  # tracks in no playlist: random unit vectors
  singular_values: list  # of A_hat, the kept ones (leading trivial one dropped)
  seconds: float
  passes: int  # streamed passes over the non-zeros


def fit_embeddings(matrix: PlaylistMatrix, dim: int = 64, *, seed: int = 0, oversample: int = 16,
                   power_iters: int = 4, singular_power: float = 0.5, normalize: bool = True,
                   block_nnz: int = 1 << 19) -> tuple[np.ndarray, EmbeddingInfo]:
  """float32 [num_tracks, dim] embeddings of a `PlaylistMatrix` and an `EmbeddingInfo`.  See module doc."""
  t0 = time.perf_counter()
  n = matrix.num_tracks
  if not isinstance(dim, (int, np.integer)) or dim < 1:
    raise UserInputError(f"embedding dim must be a positive integer, got {dim!r}")
  if matrix.nnz == 0:
    raise UserInputError("cooccurrence embeddings: the playlists hold no tracks")
  op = _GramOperator(matrix, block_nnz)
  warm = int((op.counts_N > 0).sum())
  rank = dim + 1  # + the trivial leading vector.
  if rank > warm:
    raise UserInputError(
        f"embedding dim={dim} needs at least {dim + 1} tracks that occur in playlists, got {warm}")
  # The Gram operator has rank <= the playlists: a wider sketch is rank-deficient and the unshifted
  # Cholesky-QR rounds turn it into NaNs (seen with 15 playlists, dim 8 + oversample 16).
  if rank > matrix.num_playlists:
    raise UserInputError(f"embedding dim={dim} needs at least {dim + 1} playlists, got "
                         f"{matrix.num_playlists}; use a smaller dim")
  r = min(rank + max(int(oversample), 0), n, matrix.num_playlists)
  key = jax.random.key(seed)
  q_NxR = _orthonormalize(jax.random.normal(key, (n, r), jnp.float32))
  passes = 0
  for _ in range(max(int(power_iters), 0) + 1):
    q_NxR = _orthonormalize(op(q_NxR))
    passes += 1
  cq_NxR = op(q_NxR)
  passes += 1
  t_RxR = np.asarray(q_NxR.T @ cq_NxR, np.float64)
  t_RxR = 0.5 * (t_RxR + t_RxR.T)
  evals, evecs = np.linalg.eigh(t_RxR)
  order = np.argsort(-evals)[:rank]
  evals, evecs = evals[order], evecs[:, order]
  # Fix signs deterministically: the largest-magnitude component of each vector is positive.
  v_NxK = np.array(q_NxR @ jnp.asarray(evecs, jnp.float32), np.float32)
  signs = np.sign(v_NxK[np.abs(v_NxK).argmax(axis=0), np.arange(rank)])
  v_NxK *= np.where(signs == 0, 1.0, signs)[None, :].astype(np.float32)
  s_K = np.sqrt(np.maximum(evals, 0.0))
  emb = v_NxK[:, 1:] * (s_K[1:] ** singular_power).astype(np.float32)[None, :]
  cold = op.counts_N == 0
  if normalize:
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = np.where(norms > 0, emb / np.maximum(norms, 1e-30), 0.0).astype(np.float32)
  num_cold = int(cold.sum())
  if num_cold:
    rnd = np.random.default_rng([seed, 0xC01D]).normal(size=(num_cold, dim)).astype(np.float32)
    rnd /= np.linalg.norm(rnd, axis=1, keepdims=True)
    if not normalize:
      rnd *= float(np.median(np.linalg.norm(emb[~cold], axis=1)))
    emb[cold] = rnd
  info = EmbeddingInfo(num_tracks=n, num_playlists=matrix.num_playlists, nnz=matrix.nnz, dim=int(dim),
                       num_cold_tracks=num_cold, singular_values=[float(v) for v in s_K[1:]],
                       seconds=time.perf_counter() - t0, passes=passes)
  return np.ascontiguousarray(emb, np.float32), info


def cooccurrence_embeddings(playlists: Iterable[Sequence[int]], num_tracks: int, dim: int = 64, *,
                            seed: int = 0, **kwargs) -> np.ndarray:
  """float32 [num_tracks, dim] CF embeddings from playlists (each a sequence of track rows).

  kwargs go to `fit_embeddings` (oversample, power_iters, singular_power, normalize, block_nnz).
  """
  matrix = PlaylistMatrix.from_playlists(playlists, num_tracks)
  emb, _ = fit_embeddings(matrix, dim, seed=seed, **kwargs)
  return emb


def _stable_hash(text: str) -> int:
  """gensim's per-word init seed; Python's hash() is salted per process (PYTHONHASHSEED)."""
  return zlib.crc32(text.encode("utf-8"))


def word2vec_embeddings(playlists_rows: Iterable[Sequence[int]], num_tracks: int, dim: int = 64, *,
                        window: int = 20, epochs: int = 10, seed: int = 0, negative: int = 5,
                        sample: float = 1e-3, normalize: bool = True, workers: int = 1) -> np.ndarray:
  """float32 [num_tracks, dim] word2vec (skip-gram) track embeddings; zero rows for tracks in no playlist.

  Every playlist is a sentence of track rows (in playlist order; `window` wide, so a 40-track playlist
  is mostly one bag).  min_count=1: every track in a playlist gets a vector.  workers=1 (default) and a
  seed make the result deterministic; more workers are faster but not reproducible.
  """
  try:
    from gensim.models import Word2Vec  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserInputError("word2vec embeddings need gensim: pip install 'gensim>=4.3'") from None
  if not isinstance(num_tracks, (int, np.integer)) or num_tracks < 1:
    raise UserInputError(f"num_tracks must be a positive integer, got {num_tracks!r}")
  if not isinstance(dim, (int, np.integer)) or dim < 1:
    raise UserInputError(f"embedding dim must be a positive integer, got {dim!r}")
  sentences = []
  for p, rows in enumerate(playlists_rows):
    arr = np.asarray(rows, np.int64).reshape(-1)
    if arr.size and (arr.min() < 0 or arr.max() >= num_tracks):
      bad = int(arr.min()) if arr.min() < 0 else int(arr.max())
      raise UserInputError(f"playlist {p}: track row {bad} outside [0, {num_tracks})")
    if arr.size:
      sentences.append([str(r) for r in arr.tolist()])
  if not sentences:
    raise UserInputError("word2vec embeddings: the playlists hold no tracks")
  model = Word2Vec(sentences, vector_size=int(dim), window=int(window), min_count=1, sg=1, negative=negative,
                   sample=sample, epochs=int(epochs), seed=int(seed), workers=int(workers),
                   hashfxn=_stable_hash, sorted_vocab=1)
  emb = np.zeros((num_tracks, dim), np.float32)
  rows = np.asarray([int(k) for k in model.wv.index_to_key], np.int64)
  emb[rows] = model.wv.vectors
  if normalize:
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = np.where(norms > 0, emb / np.maximum(norms, 1e-30), 0.0).astype(np.float32)
  return emb


# ----------------------------------------------------------------------------------------------- #
# Embedding files.


def save_embeddings(directory: str | os.PathLike, embeddings_NxD: np.ndarray, track_ids: Sequence[str]) -> None:
  """Writes `embeddings.npy` (float32) + `track_ids.txt` atomically into `directory`."""
  emb = np.asarray(embeddings_NxD, np.float32)
  ids = check_track_ids(track_ids)
  if emb.ndim != 2 or emb.shape[0] != len(ids):
    raise UserInputError(f"embeddings shape {emb.shape} does not match {len(ids)} track ids")
  with io_utils.atomic_dir(directory, kind="embeddings") as tmp:
    np.save(os.path.join(tmp, EMBEDDINGS_FILE), emb)
    with open(os.path.join(tmp, TRACK_IDS_FILE), "w", encoding="utf-8") as f:
      f.writelines(t + "\n" for t in ids)


def load_embeddings(path: str | os.PathLike, track_ids_path: str | os.PathLike | None = None, *,
                    mmap: bool = False, check_finite: bool = True) -> tuple[np.ndarray, list[str]]:
  """(float32 [N, d] embeddings, track ids) from a dir written by `save_embeddings`, or from a `.npy`
  file plus `track_ids_path` (default: `track_ids.txt` beside it).  With mmap=True and a float32
  file the array is an np.memmap (nothing is read until used).

  UserInputError (naming the file) for: missing files, non-2-D or non-numeric arrays, a row count
  different from the number of ids, duplicate/empty ids, NaN/inf values (unless check_finite=False).
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    npy = os.path.join(path, EMBEDDINGS_FILE)
    ids_path = os.fspath(track_ids_path) if track_ids_path else os.path.join(path, TRACK_IDS_FILE)
  else:
    npy = path
    ids_path = os.fspath(track_ids_path) if track_ids_path else os.path.join(os.path.dirname(path), TRACK_IDS_FILE)
  for p in (npy, ids_path):
    if not os.path.exists(p):
      raise UserInputError(f"embeddings: file not found: {p}")
  try:
    emb = np.load(npy, mmap_mode="r" if mmap else None, allow_pickle=False)
  except ValueError as e:
    raise UserInputError(f"{npy}: not a numeric .npy array ({e})") from None
  if emb.ndim != 2 or not np.issubdtype(emb.dtype, np.number):
    raise UserInputError(f"{npy}: expected a numeric [N, d] array, got shape {emb.shape} dtype {emb.dtype}")
  if emb.dtype != np.float32:
    emb = np.asarray(emb, np.float32)
  with open(ids_path, encoding="utf-8") as f:
    ids = f.read().splitlines()
  ids = check_track_ids(ids, source=ids_path)
  if emb.shape[0] != len(ids):
    raise UserInputError(f"{npy} has {emb.shape[0]} rows but {ids_path} has {len(ids)} track ids")
  if check_finite:
    step = max(1, (1 << 24) // max(emb.shape[1], 1))
    for s in range(0, emb.shape[0], step):
      bad = ~np.isfinite(np.asarray(emb[s:s + step]))
      if bad.any():
        r = s + int(np.argwhere(bad.any(axis=1))[0, 0])
        raise UserInputError(f"{where(npy)}: row {r} (track {ids[r]!r}) has NaN or inf values")
  return emb, ids
