"""k-means in JAX: k-means++ / k-means|| init, Lloyd iterations, in-memory or streamed, data-parallel.

Why hand-written and not faiss / scikit-learn: it runs on the same device mesh as the rest of the
project (TPU/GPU/CPU), shards the assignment over all devices and reduces centroid sums across them,
and streams data from an `np.memmap`, so N is not bound by device memory.  tools/bench_kmeans.py
measures it against faiss-cpu and scikit-learn on the same data and initial centroids.

The Lloyd step, per block of B points (x_BxD, B = `block_size`, 4096 by default), centroids c_KxD:
  scores_KxB = (-2 c_KxD) @ x_BxD^T + ||c||^2_K          (one matmul; ||x||^2 only for the inertia)
  min_B      = min_K scores_KxB;  labels_B = first k with scores_KxB == min_B   (exact argmin)
  sums_KxD  += segment_sum(x_BxD, labels_B)  on CPU, or one_hot(labels_B)^T @ x_BxD (matmul, no
               scatter) on GPU/TPU -- `update="auto"`; both selectable
  counts_K  += the same for ones
Accumulation is float32 (`preferred_element_type`) whatever the matmul input dtype ("fp32" or "bf16").
Measured on 2-core CPU VMs (AMD EPYC Zen 4; tools/bench_kmeans.py and microbenchmarks, medians,
ms per iteration scaled to N=1M, d=64, K=256):
  * where an iteration goes (block 1024, shared machine): matmul (+ ||c||^2) ~170, min ~10, first-index
    labels ~80, scatter-add of sums and counts ~30;
  * the stats loop indexes the resident [C, B, D] blocks in place (`fori_loop`); scanning over
    x[1:] (so that block 0 could start the carry) copied all of X on every call: ~480 -> ~300;
  * scores as K x B rather than B x K: the reductions over K become elementwise mins across rows,
    which XLA:CPU vectorises better: ~300 -> ~280; int16 candidate indices (K < 2^15) for the
    first-index reduction, whose K x B operand XLA:CPU materialises: -15;
  * block size with that layout: 1024 ~270, 2048 ~250, 4096 ~235, 8192 ~270, 16384 ~460 (the old
    B x K layout was best at 512-2048);
  * host -> device copy of the stacked data: jax.device_put ~0.1 s against ~0.35 s through
    jnp.asarray (256 MB), once per call;
  * argmin: XLA:CPU's variadic (value, index) reduce cost 2-10x the matmul (~1200 at 1024 rows, in
    either layout); min + "first index equal to the min" (two vectorised reductions) removed that;
  * centroid sums: segment_sum (~20 per iteration) against ~500 more for the one-hot matmul (it
    doubles the flops); on accelerators the matmul is the right choice;
  * bf16 matmul inputs were slower than fp32 on this CPU (no gain to trade accuracy for);
  * XLA flags --xla_cpu_enable_fast_min_max / --xla_cpu_enable_fast_math: no measurable change.
Tried and not kept:
  * a pairwise (tournament) argmin over adjacent row pairs, one pass, exact: ~300 vs ~280;
  * scatter-adding into the loop carry (`.at[].add`) instead of segment_sum + add, and dropping
    padding rows by an out-of-range label instead of a weight multiply: no measurable change;
  * one CPU device per core (shard_map over --xla_force_host_platform_device_count=2): the shards did
    not run concurrently (no speed-up);
  * folding ||c||^2 into the matmul (an extra ones column), two independent block chains per scan
    step, a packed (score, index) integer min: no gain or slower;
  * Hamerly-bounded Lloyd (exact; points whose upper bound is below half the distance to the nearest
    other centroid or their lower bound keep their label): ~55% of points stay candidates per
    iteration on 64-d blobs, and the gather / nonzero / scatter passes cost more than the skipped
    matmuls (12.0 s vs. 7.9 s for 20 iterations, before the changes above).
Against faiss: docs/results/bench/kmeans.json (tools/bench_kmeans.py; faiss with its best measured
thread count).

Two data paths, same numbers:
  * in memory: the whole (padded) array lives on the devices as [C, B, D] and one jitted call loops over
    the C blocks (no Python per block);
  * streamed (`np.memmap`, `RowFile`, or `stream=True`): `chunk_size` rows at a time are read from the
    host (pread for RowFile: no mapping, RSS stays at one chunk), stacked into blocks and scanned on
    the devices; only K x D partial sums stay resident.
With a `mesh`, every block is sharded over the mesh's data axis (`shard_map`), every device assigns
its rows, and partial sums/counts/inertia are `psum`-reduced: results match one device up to float
summation order.

Empty clusters are repaired the faiss way (split the largest cluster: copy its centroid with a
symmetric +-eps perturbation), which needs no extra pass over the data; the count is reported.
Stopping: after `iterations`, or earlier when the relative inertia decrease is below `tol`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from t2t_jax.errors import UserInputError

DEFAULT_CHUNK = 65536  # Rows per host -> device transfer when streaming.
DEFAULT_BLOCK = 4096  # Rows per scanned block inside the kernels (measured best on CPU).
_EPS_SPLIT = 1.0 / 1024.0


@dataclasses.dataclass
class KMeansResult:
  centroids_KxD: np.ndarray  # float32 [K, D]
  labels_N: np.ndarray  # int32 [N], assignment to the final centroids
  inertia: float  # sum of squared distances to the final centroids
  iterations: int  # Lloyd iterations run
  inertia_history: list  # inertia of each assignment step (before that step's update)
  num_empty_repaired: int  # empty clusters split over all iterations
  seconds: float  # wall time of init + iterations + final assignment
  init_seconds: float


# ----------------------------------------------------------------------------------------------- #
# Row files: streamed reads/writes with pread/pwrite (an np.memmap's touched pages count towards the
# process RSS until the kernel evicts them; pread keeps peak RSS at one chunk).


class RowFile:
  """A float32 [N, D] array in a file (raw or .npy), read and written by rows without mmap."""

  def __init__(self, path: str, shape: tuple[int, int], dtype=np.float32, offset: int = 0):
    self.path, self.shape, self.dtype, self.offset = os.fspath(path), tuple(shape), np.dtype(dtype), int(offset)
    self.ndim = 2
    self._row_bytes = self.shape[1] * self.dtype.itemsize
    self._fd = os.open(self.path, os.O_RDWR if os.access(self.path, os.W_OK) else os.O_RDONLY)

  @classmethod
  def open_npy(cls, path: str) -> "RowFile":
    with open(path, "rb") as f:
      version = np.lib.format.read_magic(f)
      read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
      shape, fortran, dtype = read_header(f)
      offset = f.tell()
    if fortran or len(shape) != 2:
      raise UserInputError(f"{path}: expected a C-order 2-D array, got shape {shape}")
    return cls(path, shape, dtype, offset)

  @classmethod
  def create(cls, path: str, shape: tuple[int, int], dtype=np.float32) -> "RowFile":
    with open(path, "wb") as f:
      f.truncate(int(shape[0]) * int(shape[1]) * np.dtype(dtype).itemsize)
    return cls(path, shape, dtype)

  def __len__(self):
    return self.shape[0]

  def _read(self, start: int, stop: int) -> np.ndarray:
    stop = min(stop, self.shape[0])
    if stop <= start:
      return np.zeros((0, self.shape[1]), self.dtype)
    nbytes = (stop - start) * self._row_bytes
    buf = bytearray(nbytes)
    view, got = memoryview(buf), 0
    while got < nbytes:
      k = os.preadv(self._fd, [view[got:]], self.offset + start * self._row_bytes + got)
      if k <= 0:
        raise OSError(f"{self.path}: short read")
      got += k
    return np.frombuffer(buf, self.dtype).reshape(stop - start, self.shape[1])

  def __getitem__(self, idx):
    if isinstance(idx, slice):
      start, stop, step = idx.indices(self.shape[0])
      assert step == 1, "RowFile supports contiguous slices"
      return self._read(start, stop)
    if isinstance(idx, (int, np.integer)):
      return self._read(int(idx), int(idx) + 1)[0]
    rows = np.asarray(idx, np.int64).reshape(-1)
    out = np.empty((rows.size, self.shape[1]), self.dtype)
    # Contiguous runs of sorted rows are read at once.
    order = np.argsort(rows, kind="stable")
    srt = rows[order]
    breaks = np.flatnonzero(np.diff(srt) != 1) + 1
    for run in np.split(np.arange(srt.size), breaks):
      if run.size:
        out[order[run]] = self._read(int(srt[run[0]]), int(srt[run[-1]]) + 1)
    return out

  def write(self, start: int, block: np.ndarray) -> None:
    data = np.ascontiguousarray(block, self.dtype).tobytes()
    os.pwrite(self._fd, data, self.offset + int(start) * self._row_bytes)

  def close(self):
    if self._fd is not None:
      os.close(self._fd)
      self._fd = None

  def __del__(self):
    try:
      self.close()
    except Exception:  # pylint: disable=broad-except
      pass


def is_streamed(x) -> bool:
  """True for inputs read chunk by chunk (memmaps, RowFiles) rather than held in memory."""
  return isinstance(x, (np.memmap, RowFile)) or not isinstance(x, (np.ndarray, jax.Array))


# ----------------------------------------------------------------------------------------------- #
# Input checks.


def check_points(x_NxD, name: str = "embeddings", check_finite: bool = True) -> None:
  """UserInputError for non-2-D, empty or non-finite input (scans memmaps chunk by chunk)."""
  if getattr(x_NxD, "ndim", None) != 2:
    raise UserInputError(f"{name}: expected a 2-D array [N, D], got shape {getattr(x_NxD, 'shape', None)}")
  n, d = x_NxD.shape
  if n == 0 or d == 0:
    raise UserInputError(f"{name}: empty array of shape {x_NxD.shape}")
  if check_finite:
    step = max(1, (1 << 24) // max(d, 1))
    for start in range(0, n, step):
      block = np.asarray(x_NxD[start:start + step])
      bad = ~np.isfinite(block)  # A RowFile/memmap is read chunk by chunk here.
      if bad.any():
        r = int(np.argwhere(bad.any(axis=1))[0, 0]) + start
        raise UserInputError(f"{name}: row {r} has NaN or inf values")


# ----------------------------------------------------------------------------------------------- #
# The per-chunk step.


def _chunk_stats(x_BxD, w_B, c_KxD, *, matmul_dtype, update: str):
  """Partial (sums_KxD, counts_K, inertia) and (labels_B, min_sqdist_B) for one chunk."""
  k = c_KxD.shape[0]
  x32 = x_BxD.astype(jnp.float32)
  c_sq_K = jnp.sum(c_KxD * c_KxD, axis=1)
  # Scores as K x B: the reductions over K then run across rows (elementwise min of B-wide vectors)
  # rather than along each row, which XLA:CPU vectorises better (measured below).
  scores_KxB = jnp.dot((-2.0 * c_KxD).astype(matmul_dtype), x32.astype(matmul_dtype).T,
                       preferred_element_type=jnp.float32) + c_sq_K[:, None]
  # argmin as min + first index attaining it: two plain reductions that XLA:CPU vectorises; its
  # variadic (value, index) argmin reduce was 2-10x slower than the matmul itself (measured).
  # The K x B candidate indices are materialised before their reduction: int16 (K < 2^15) halves that
  # traffic (~15 ms of ~280 per iteration at 1M x 64, K=256, measured).
  min_B = jnp.min(scores_KxB, axis=0)
  idx_dtype = jnp.int16 if k < (1 << 15) else jnp.int32
  labels_B = jnp.min(jnp.where(scores_KxB == min_B[None, :], jnp.arange(k, dtype=idx_dtype)[:, None],
                               jnp.array(k, idx_dtype)), axis=0).astype(jnp.int32)
  x_sq_B = jnp.sum(x32 * x32, axis=1)
  min_sqdist_B = jnp.maximum(min_B + x_sq_B, 0.0)
  inertia = jnp.sum(w_B * min_sqdist_B)
  if update == "onehot":
    onehot_BxK = (labels_B[:, None] == jnp.arange(k, dtype=jnp.int32)[None, :]).astype(jnp.float32)
    onehot_BxK = onehot_BxK * w_B[:, None]
    sums_KxD = jnp.dot(onehot_BxK.T, x32, preferred_element_type=jnp.float32)
    counts_K = jnp.sum(onehot_BxK, axis=0)
  elif update == "segment_sum":
    sums_KxD = jax.ops.segment_sum(x32 * w_B[:, None], labels_B, num_segments=k)
    counts_K = jax.ops.segment_sum(w_B, labels_B, num_segments=k)
  else:
    raise UserInputError(f"k-means update must be 'onehot' or 'segment_sum', got {update!r}")
  return (sums_KxD, counts_K, inertia), (labels_B, min_sqdist_B)


def resolve_update(update: str) -> str:
  """'auto' -> 'segment_sum' on CPU (a sorted-free scatter-add of N x D floats: ~100x cheaper there than
  the N x K x D one-hot matmul, measured), 'onehot' on GPU/TPU (a matmul on the MXU/tensor cores,
  where scatters serialise)."""
  if update == "auto":
    return "segment_sum" if jax.default_backend() == "cpu" else "onehot"
  return update


def _matmul_dtype(precision: str):
  if precision == "fp32":
    return jnp.float32
  if precision == "bf16":
    return jnp.bfloat16
  raise UserInputError(f"k-means precision must be 'fp32' or 'bf16', got {precision!r}")


class _Engine:
  """Jitted, optionally mesh-sharded kernels over [C, B, D] stacks of blocks, built once per config.

  Every kernel loops over C blocks of B rows: B (`block_size`, 4096 by default) keeps the K x B score
  matrix near the cores between the matmul and the reductions (measured on CPU: 2048-4096 rows best,
  1024 ~15% slower, 16384 ~2x slower).  With a mesh, the B axis is sharded over the devices.
  """

  def __init__(self, mesh: Mesh | None, axis: str, precision: str, update: str):
    self.mesh, self.axis = mesh, axis
    self.num_shards = 1 if mesh is None else int(mesh.shape[axis])
    step = functools.partial(_chunk_stats, matmul_dtype=_matmul_dtype(precision), update=update)

    def scan_stats(x_CxBxD, w_CxB, c_KxD):
      def body(i, carry):
        stats, _ = step(x_CxBxD[i], w_CxB[i], c_KxD)
        return jax.tree.map(jnp.add, carry, stats)
      # The first block's stats start the carry (zeros would not be device-varying under shard_map).
      # The loop indexes blocks 1..C-1 in place: a scan over x_CxBxD[1:] copied all of X into a
      # fresh buffer on every call (~180 ms of a ~480 ms iteration at 1M x 64, measured).
      init, _ = step(x_CxBxD[0], w_CxB[0], c_KxD)
      return jax.lax.fori_loop(1, x_CxBxD.shape[0], body, init)

    def scan_assign(x_CxBxD, c_KxD):
      def body(_, x_BxD):
        _, (labels_B, d_B) = step(x_BxD, jnp.ones(x_BxD.shape[:1], jnp.float32), c_KxD)
        return None, (labels_B, d_B)
      _, out = jax.lax.scan(body, None, x_CxBxD)
      return out

    if mesh is None:
      self.scan_stats = jax.jit(scan_stats)
      self.scan_assign = jax.jit(scan_assign)
      self.x_sharding = self.w_sharding = None
    else:
      a = axis
      psum = lambda t: jax.tree.map(lambda v: jax.lax.psum(v, a), t)
      self.scan_stats = jax.jit(jax.shard_map(
          lambda x, w, c: psum(scan_stats(x, w, c)), mesh=mesh,
          in_specs=(P(None, a, None), P(None, a), P()), out_specs=P()))
      self.scan_assign = jax.jit(jax.shard_map(
          scan_assign, mesh=mesh, in_specs=(P(None, a, None), P()), out_specs=(P(None, a), P(None, a))))
      self.x_sharding = NamedSharding(mesh, P(None, a, None))
      self.w_sharding = NamedSharding(mesh, P(None, a))

  def put(self, x_CxBxD: np.ndarray, w_CxB: np.ndarray):
    if self.mesh is None:
      # jax.device_put, not jnp.asarray: ~0.1 s against ~0.35 s for the 256 MB of 1M x 64 (measured).
      return jax.device_put(x_CxBxD), jax.device_put(w_CxB)
    return jax.device_put(x_CxBxD, self.x_sharding), jax.device_put(w_CxB, self.w_sharding)


@functools.lru_cache(maxsize=32)
def _engine(mesh, axis, precision, update) -> _Engine:
  return _Engine(mesh, axis, precision, resolve_update(update))


# ----------------------------------------------------------------------------------------------- #
# Data sources: in memory (one device-resident [C, B, D] array) or streamed chunks.


class _Source:
  """Blocks of the data, zero-weight padded: in memory stacked once, or streamed chunk by chunk
  (each chunk = `chunk_size` rows read from the host, stacked into blocks and scanned on device)."""

  def __init__(self, x_NxD, chunk_size: int, engine: _Engine, stream: bool | None,
               block_size: int = DEFAULT_BLOCK):
    self.x, self.engine = x_NxD, engine
    self.n, self.d = x_NxD.shape
    shards = engine.num_shards
    # Power-of-two blocks for small inputs: many small k-means calls (hierarchical IDs) share compiles.
    self.block = _round_up(max(1, min(int(block_size), _next_pow2(self.n))), shards)
    self.chunk = _round_up(max(int(chunk_size), self.block), self.block)
    if stream is None:
      stream = is_streamed(x_NxD)
    self.stream = stream
    self.stacked = None
    if not stream:
      x = np.asarray(x_NxD, dtype=np.float32)
      self.stacked = engine.put(*self._stack(x))

  def _stack(self, x: np.ndarray):
    """[C, B, D] blocks and [C, B] weights (0 on padding rows) of `x`."""
    rows = x.shape[0]
    c = -(-rows // self.block)
    pad = c * self.block - rows
    if pad:
      x = np.concatenate([x, np.zeros((pad, self.d), np.float32)])
    w = np.ones((c * self.block,), np.float32)
    if pad:
      w[rows:] = 0.0
    return x.reshape(c, self.block, self.d), w.reshape(c, self.block)

  def chunks(self) -> Iterator[tuple[int, int, jax.Array, jax.Array]]:
    """(start, valid_rows, x_CxBxD, w_CxB) on device, chunk by chunk from the host."""
    for start in range(0, self.n, self.chunk):
      block = np.asarray(self.x[start:start + self.chunk], dtype=np.float32)
      x, w = self.engine.put(*self._stack(block))
      yield start, block.shape[0], x, w

  def stats(self, c_KxD):
    """(sums_KxD, counts_K, inertia) over all points for centroids c."""
    eng = self.engine
    if self.stacked is not None:
      return eng.scan_stats(self.stacked[0], self.stacked[1], c_KxD)
    total = None
    for _, _, x, w in self.chunks():
      stats = eng.scan_stats(x, w, c_KxD)
      total = stats if total is None else jax.tree.map(jnp.add, total, stats)
    return total

  def assign(self, c_KxD) -> tuple[np.ndarray, np.ndarray]:
    """(labels_N int32, min_sqdist_N float32) on the host."""
    eng = self.engine
    if self.stacked is not None:
      labels, dist = eng.scan_assign(self.stacked[0], c_KxD)
      return (np.asarray(labels).reshape(-1)[:self.n].astype(np.int32),
              np.asarray(dist).reshape(-1)[:self.n].astype(np.float32))
    labels_N = np.empty((self.n,), np.int32)
    dist_N = np.empty((self.n,), np.float32)
    for start, valid, x, _ in self.chunks():
      labels, dist = eng.scan_assign(x, c_KxD)
      labels_N[start:start + valid] = np.asarray(labels).reshape(-1)[:valid]
      dist_N[start:start + valid] = np.asarray(dist).reshape(-1)[:valid]
    return labels_N, dist_N


def _round_up(a: int, b: int) -> int:
  return -(-a // b) * b


def _next_pow2(a: int) -> int:
  return 1 << max(int(a) - 1, 0).bit_length()


# ----------------------------------------------------------------------------------------------- #
# Initialisation.


@functools.partial(jax.jit, static_argnames=("k", "num_trials"))
def _kmeanspp_device(x_MxD, w_M, key, *, k: int, num_trials: int):
  """Greedy weighted k-means++ (Arthur & Vassilvitskii; sklearn's greedy variant) on device."""
  m = x_MxD.shape[0]
  x_sq_M = jnp.sum(x_MxD * x_MxD, axis=1)

  def sqdist_to(idx_T):
    c_TxD = x_MxD[idx_T]
    return jnp.maximum(x_sq_M[None, :] - 2.0 * c_TxD @ x_MxD.T + jnp.sum(c_TxD * c_TxD, 1)[:, None], 0.0)

  key, k0 = jax.random.split(key)
  first = jax.random.categorical(k0, jnp.where(w_M > 0, jnp.log(jnp.maximum(w_M, 1e-30)), -jnp.inf))
  closest_M = sqdist_to(first[None])[0]
  centers_K = jnp.zeros((k,), jnp.int32).at[0].set(first)

  def body(i, carry):
    closest_M, centers_K, key = carry
    key, sub = jax.random.split(key)
    pot_M = w_M * closest_M
    total = jnp.sum(pot_M)
    # Sample candidates with probability proportional to weight * squared distance.
    u_T = jax.random.uniform(sub, (num_trials,)) * total
    cand_T = jnp.clip(jnp.searchsorted(jnp.cumsum(pot_M), u_T), 0, m - 1).astype(jnp.int32)
    new_TxM = jnp.minimum(closest_M[None, :], sqdist_to(cand_T))
    best = jnp.argmin(jnp.sum(new_TxM * w_M[None, :], axis=1))
    return new_TxM[best], centers_K.at[i].set(cand_T[best]), key

  _, centers_K, _ = jax.lax.fori_loop(1, k, body, (closest_M, centers_K, key))
  return centers_K


def kmeans_plusplus(x_NxD, k: int, *, seed: int = 0, weights_N=None, sample_size: int | None = None) -> np.ndarray:
  """k-means++ centroids [k, D] (float32), deterministic by seed.

  Greedy k-means++ with 2 + log(k) candidate trials per step.  With `sample_size`, runs on a seeded
  uniform sample of that many rows (the "sampled" scalable variant; for streams prefer k-means||).
  """
  n = x_NxD.shape[0]
  if k > n:
    raise UserInputError(f"k-means: K={k} is larger than the number of points N={n}")
  rng = np.random.default_rng(seed)
  if sample_size is not None and sample_size < n:
    rows = np.sort(rng.choice(n, size=max(int(sample_size), k), replace=False))
    x = np.asarray(x_NxD[rows], np.float32)
    w = None if weights_N is None else np.asarray(weights_N, np.float32)[rows]
  else:
    x = np.asarray(x_NxD[:], np.float32)
    w = None if weights_N is None else np.asarray(weights_N, np.float32)
  m = x.shape[0]
  if w is None:
    w = np.ones((m,), np.float32)
  # Pad to a power of two with zero weight (never sampled) so calls of similar size share a compile.
  pad = _next_pow2(m) - m
  if pad:
    x = np.concatenate([x, np.zeros((pad, x.shape[1]), np.float32)])
    w = np.concatenate([w, np.zeros((pad,), np.float32)])
  trials = 2 + int(math.log(k)) if k > 1 else 1
  # The O(M^2)-memory [T, M] candidate distances are fine for M up to ~1e6 on host/device memory.
  centers = np.asarray(_kmeanspp_device(jnp.asarray(x), jnp.asarray(w), jax.random.key(seed), k=k,
                                        num_trials=trials))
  return x[centers].copy()


def kmeans_parallel_init(x_NxD, k: int, *, seed: int = 0, rounds: int = 5, oversampling: float = 2.0,
                         chunk_size: int = DEFAULT_CHUNK, block_size: int = DEFAULT_BLOCK,
                         mesh: Mesh | None = None, axis: str = "data", stream: bool | None = None,
                         local_iterations: int = 20) -> np.ndarray:
  """k-means|| (Bahmani et al. 2012): `rounds` streamed passes, each sampling ~oversampling*k points
  with probability proportional to their squared distance to the current candidates; the
  candidates are weighted by how many points they are nearest to and reduced to k by k-means++ and
  `local_iterations` weighted Lloyd steps on the candidates.
  Needs rounds + 2 passes over the data, so it suits memmaps of any size.
  """
  n = x_NxD.shape[0]
  if k > n:
    raise UserInputError(f"k-means: K={k} is larger than the number of points N={n}")
  eng = _engine(mesh, axis, "fp32", "auto")
  src = _Source(x_NxD, chunk_size, eng, stream, block_size)
  rng = np.random.default_rng([seed, 0x6B6D])
  def assign_padded(c):
    # Pad the centroid count to a power of two with copies of c[0] (ties go to the lowest index, so
    # copies never win): the rounds' varying candidate counts then share a few compiles.
    pad = _next_pow2(c.shape[0]) - c.shape[0]
    return src.assign(jnp.asarray(np.concatenate([c, np.repeat(c[:1], pad, axis=0)]) if pad else c))

  cand = np.asarray(x_NxD[int(rng.integers(n))], np.float32)[None, :]
  _, dist_N = assign_padded(cand)
  ell = oversampling * k
  for r in range(rounds):
    phi = float(dist_N.astype(np.float64).sum())
    if phi <= 0.0:
      break
    prob_N = np.minimum(1.0, ell * dist_N.astype(np.float64) / phi)
    pick = np.flatnonzero(np.random.default_rng([seed, r, 0x6B6D]).random(n) < prob_N)
    if pick.size == 0:
      continue
    new = np.asarray(x_NxD[pick], np.float32)
    cand = np.concatenate([cand, new])
    _, d_new = assign_padded(new)
    dist_N = np.minimum(dist_N, d_new)
  if cand.shape[0] < k:  # Degenerate (many duplicate points): top up with uniform rows.
    extra = np.random.default_rng([seed, 0xE]).choice(n, size=k - cand.shape[0], replace=False)
    cand = np.concatenate([cand, np.asarray(x_NxD[np.sort(extra)], np.float32)])
  labels_N, _ = assign_padded(cand)
  w = np.bincount(labels_N, minlength=cand.shape[0]).astype(np.float32)
  keep = w > 0
  if keep.sum() >= k:
    cand, w = cand[keep], w[keep]
  else:
    w = np.maximum(w, 1e-3)
  c = kmeans_plusplus(cand, k, seed=seed, weights_N=w).astype(np.float64)
  # Weighted Lloyd on the candidates (as Spark's k-means|| does): cheap, and it fixes poor seeds.
  cand64, w64 = cand.astype(np.float64), w.astype(np.float64)
  for _ in range(local_iterations):
    d = (cand64 * cand64).sum(1)[:, None] - 2 * cand64 @ c.T + (c * c).sum(1)[None, :]
    lab = d.argmin(1)
    wsum = np.bincount(lab, weights=w64, minlength=k)
    sums = np.zeros_like(c)
    np.add.at(sums, lab, cand64 * w64[:, None])
    c = np.where(wsum[:, None] > 0, sums / np.maximum(wsum, 1e-30)[:, None], c)
  return c.astype(np.float32)


# ----------------------------------------------------------------------------------------------- #
# Lloyd iterations.


def _repair_empty(sums_KxD: np.ndarray, counts_K: np.ndarray, old_KxD: np.ndarray) -> tuple[np.ndarray, int]:
  """New centroids; empty clusters take half of the largest cluster (faiss's split).  Float64 math."""
  k, d = old_KxD.shape
  counts = counts_K.astype(np.float64).copy()
  cent = np.where(counts[:, None] > 0, sums_KxD.astype(np.float64) / np.maximum(counts, 1.0)[:, None],
                  old_KxD.astype(np.float64))
  empty = np.flatnonzero(counts == 0)
  for e in empty:
    big = int(np.argmax(counts))
    cent[e] = cent[big]
    signs = np.where(np.arange(d) % 2 == 0, 1.0, -1.0)
    cent[e] = cent[big] * (1.0 + _EPS_SPLIT * signs)
    cent[big] = cent[big] * (1.0 - _EPS_SPLIT * signs)
    # Zero centroids stay equal after a multiplicative split: add a small shift instead.
    if not np.any(cent[e] != cent[big]):
      cent[e] = cent[big] + _EPS_SPLIT * signs
    counts[e] = counts[big] / 2.0
    counts[big] -= counts[e]
  return cent.astype(np.float32), int(empty.size)


def kmeans(x_NxD, k: int, *, iterations: int = 20, tol: float = 1e-4, seed: int = 0,
           init: str = "k-means++", init_centroids_KxD=None, init_sample_size: int | None = 65536,
           chunk_size: int = DEFAULT_CHUNK, block_size: int = DEFAULT_BLOCK, precision: str = "fp32",
           update: str = "auto",
           mesh: Mesh | None = None, axis: str = "data", stream: bool | None = None,
           check_finite: bool = True, callback: Callable[[int, float], None] | None = None) -> KMeansResult:
  """Lloyd's k-means.  `x_NxD`: float array or np.memmap [N, D].

  init: "k-means++" (on at most `init_sample_size` seeded sample rows, all rows if None),
        "k-means||" (streamed passes, for data bigger than memory), "random" (k distinct rows), or
        pass `init_centroids_KxD`.
  precision: "fp32" or "bf16" matmul inputs for the assignment scores (accumulation is always fp32).
  update: "onehot" (matmul, no scatter), "segment_sum", or "auto" (see `resolve_update`).
  chunk_size: rows per host read when streaming; block_size: rows per scanned block in the kernel.
  mesh/axis: shard points over `mesh.shape[axis]` devices; stream: force the streamed path
  (default: streamed for np.memmap input).  callback(iteration, inertia) after every iteration.
  """
  t0 = time.perf_counter()
  check_points(x_NxD, check_finite=check_finite)
  n, d = x_NxD.shape
  if not isinstance(k, (int, np.integer)) or k < 1:
    raise UserInputError(f"k-means: K must be a positive integer, got {k!r}")
  if k > n:
    raise UserInputError(f"k-means: K={k} is larger than the number of points N={n}")
  if init_centroids_KxD is not None:
    c = np.asarray(init_centroids_KxD, np.float32)
    if c.shape != (k, d):
      raise UserInputError(f"k-means: init_centroids shape {c.shape} != ({k}, {d})")
  elif init == "k-means++":
    c = kmeans_plusplus(x_NxD, k, seed=seed, sample_size=init_sample_size)
  elif init == "k-means||":
    c = kmeans_parallel_init(x_NxD, k, seed=seed, chunk_size=chunk_size, block_size=block_size, mesh=mesh,
                             axis=axis, stream=stream)
  elif init == "random":
    rows = np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))
    c = np.asarray(x_NxD[rows], np.float32)
  else:
    raise UserInputError(f"k-means: unknown init {init!r} (k-means++, k-means||, random)")
  init_seconds = time.perf_counter() - t0
  eng = _engine(mesh, axis, precision, update)
  src = _Source(x_NxD, chunk_size, eng, stream, block_size)
  history, repaired, it = [], 0, 0
  c_dev = jax.device_put(c)
  for it in range(1, iterations + 1):
    sums, counts, inertia = jax.device_get(src.stats(c_dev))
    c, nrep = _repair_empty(sums, counts, c)
    repaired += nrep
    c_dev = jax.device_put(c)
    history.append(float(inertia))
    if callback is not None:
      callback(it, float(inertia))
    if tol > 0 and len(history) >= 2 and nrep == 0:
      prev, cur = history[-2], history[-1]
      if prev - cur <= tol * max(prev, 1e-30):
        break
  labels_N, dist_N = src.assign(c_dev)
  return KMeansResult(centroids_KxD=c, labels_N=labels_N, inertia=float(dist_N.astype(np.float64).sum()),
                      iterations=it, inertia_history=history, num_empty_repaired=repaired,
                      seconds=time.perf_counter() - t0, init_seconds=init_seconds)


def assign(x_NxD, centroids_KxD, *, chunk_size: int = DEFAULT_CHUNK, block_size: int = DEFAULT_BLOCK,
           mesh: Mesh | None = None, axis: str = "data", stream: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Nearest centroid per point: (labels_N int32, squared distance_N float32)."""
  eng = _engine(mesh, axis, "fp32", "auto")
  src = _Source(x_NxD, chunk_size, eng, stream, block_size)
  return src.assign(jnp.asarray(np.asarray(centroids_KxD, np.float32)))


def inertia_numpy(x_NxD: np.ndarray, centroids_KxD: np.ndarray, chunk: int = 65536) -> float:
  """Reference inertia in float64 numpy (for tests and benchmarks)."""
  c = np.asarray(centroids_KxD, np.float64)
  total = 0.0
  for s in range(0, x_NxD.shape[0], chunk):
    x = np.asarray(x_NxD[s:s + chunk], np.float64)
    d = (x * x).sum(1)[:, None] - 2 * x @ c.T + (c * c).sum(1)[None, :]
    total += float(np.maximum(d.min(1), 0).sum())
  return total
