"""Benchmark: t2t_jax k-means (JAX) vs faiss-cpu vs scikit-learn, same data, K, iterations, init.

  python tools/bench_kmeans.py                       # N=1M, d=64, K=256, 20 iterations, 3 runs
  python tools/bench_kmeans.py --n 200000 --runs 5 --json /tmp/bench.json
  python tools/bench_kmeans.py --scale --n 10000000  # streamed semantic IDs from a memmap, peak RSS

Fairness: one seeded Gaussian-mixture dataset; the same k-means++ initial centroids go to all three
(faiss `train(init_centroids=...)`, sklearn `init=array, n_init=1`); exactly `--iterations` Lloyd
steps (tol=0; faiss `max_points_per_centroid` raised so it trains on all N points instead of its
default 256*K sample; sklearn algorithm="lloyd", tol=0 -- it may stop early only at exact
convergence).  Final inertia of each result is computed by one evaluator (float32 distances from
faiss IndexFlatL2, float64 sum) on all points.  Times are wall seconds of the fit call; ours includes
its final assignment pass (faiss's train does not) and excludes XLA compilation (a warm-up fit on
the same shapes runs first and is reported separately).  Runs are interleaved (jax, faiss, sklearn,
jax, ...) and medians reported, because this machine's CPUs are shared with other jobs.

Scale mode (--scale): writes an N x d float32 memmap to --scratch in chunks, then builds 3 x 256 +
disambiguation residual-k-means semantic IDs streaming from it (k-means|| or sampled k-means++
init, chunks read with pread so the file is never mapped), and reports wall time and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_data(n: int, d: int, num_blobs: int, seed: int, out=None) -> np.ndarray:
  """Seeded Gaussian mixture, written in chunks into `out` (an array or memmap) if given."""
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(num_blobs, d)).astype(np.float32) * 2.0
  scales = rng.uniform(0.5, 1.5, size=num_blobs).astype(np.float32)
  x = np.empty((n, d), np.float32) if out is None else out
  step = 1 << 18
  for s in range(0, n, step):
    m = min(step, n - s)
    r = np.random.default_rng([seed, s])
    lab = r.integers(num_blobs, size=m)
    x[s:s + m] = centers[lab] + r.standard_normal((m, d), dtype=np.float32) * scales[lab, None]
  return x


def machine() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  cpu = platform.processor()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  out = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
         "python": platform.python_version(), "jax": jax.__version__,
         "jax_devices": [str(dv) for dv in jax.devices()], "xla_flags": os.environ.get("XLA_FLAGS", ""),
         "load_average_at_start": os.getloadavg()}
  for mod in ("faiss", "sklearn", "numpy"):
    try:
      out[mod] = __import__(mod).__version__
    except ImportError:
      out[mod] = None
  return out


def evaluate_inertia(x: np.ndarray, centroids: np.ndarray) -> float:
  import faiss  # pylint: disable=g-import-not-at-top
  index = faiss.IndexFlatL2(x.shape[1])
  index.add(np.ascontiguousarray(centroids, np.float32))
  total = 0.0
  for s in range(0, x.shape[0], 1 << 18):
    dist, _ = index.search(np.ascontiguousarray(x[s:s + (1 << 18)]), 1)
    total += float(dist.astype(np.float64).sum())
  return total


def run_jax(x, c0, args):
  from t2t_jax.ids import kmeans as km  # pylint: disable=g-import-not-at-top
  t = time.perf_counter()
  res = km.kmeans(x, args.k, iterations=args.iterations, tol=0.0, init_centroids_KxD=c0,
                  chunk_size=args.chunk, precision=args.precision, update=args.update)
  return time.perf_counter() - t, res.centroids_KxD


def run_faiss(x, c0, args):
  import faiss  # pylint: disable=g-import-not-at-top
  km = faiss.Kmeans(x.shape[1], args.k, niter=args.iterations, seed=args.seed, verbose=False,
                    max_points_per_centroid=-(-x.shape[0] // args.k) + 1)
  km.cp.early_stop_threshold = -1.0  # Never stop early: exactly niter iterations.
  t = time.perf_counter()
  km.train(x, init_centroids=c0)
  return time.perf_counter() - t, km.centroids


def run_sklearn(x, c0, args):
  from sklearn.cluster import KMeans  # pylint: disable=g-import-not-at-top
  km = KMeans(n_clusters=args.k, init=c0, n_init=1, max_iter=args.iterations, tol=0.0, algorithm="lloyd",
              random_state=args.seed)
  t = time.perf_counter()
  km.fit(x)
  return time.perf_counter() - t, km.cluster_centers_.astype(np.float32)


def bench(args) -> dict:
  from t2t_jax.ids import kmeans as km  # pylint: disable=g-import-not-at-top
  info = machine()
  x = make_data(args.n, args.d, args.blobs, args.seed)
  c0 = km.kmeans_plusplus(x, args.k, seed=args.seed, sample_size=min(args.n, 64 * args.k))
  # Warm-up (compile) on the real shapes, 1 iteration.
  t = time.perf_counter()
  km.kmeans(x, args.k, iterations=1, tol=0.0, init_centroids_KxD=c0, chunk_size=args.chunk,
            precision=args.precision, update=args.update)
  compile_s = time.perf_counter() - t
  libs = [("jax", run_jax), ("faiss", run_faiss)] + ([] if args.no_sklearn else [("sklearn", run_sklearn)])
  times = {name: [] for name, _ in libs}
  cents = {}
  for r in range(args.runs):
    for name, fn in libs:
      if name == "sklearn" and r >= args.sklearn_runs:
        continue
      sec, cent = fn(x, c0, args)
      times[name].append(sec)
      cents[name] = cent
      print(f"run {r} {name:8s} {sec:8.2f} s", flush=True)
  out = {"n": args.n, "d": args.d, "k": args.k, "iterations": args.iterations, "runs": args.runs,
         "chunk": args.chunk, "precision": args.precision, "update": args.update,
         "jax_compile_and_1_iteration_seconds": compile_s, "machine": info}
  init_inertia = evaluate_inertia(x, c0)
  out["init_inertia"] = init_inertia
  for name in times:
    out[f"{name}_seconds"] = statistics.median(times[name]) if times[name] else None
    out[f"{name}_all_seconds"] = times[name]
    out[f"{name}_inertia"] = evaluate_inertia(x, cents[name]) if name in cents else None
  if "sklearn" not in times:
    out["sklearn_seconds"] = out["sklearn_inertia"] = None
  out["time_ratio_jax_over_faiss"] = out["jax_seconds"] / out["faiss_seconds"]
  out["inertia_ratio_jax_over_faiss"] = out["jax_inertia"] / out["faiss_inertia"]
  out["machine"]["load_average_at_end"] = os.getloadavg()
  return out


def _pread_source(path: str, shape, dtype=np.float32):
  """An object with .shape/.ndim/__getitem__(slice) that reads rows with pread (no mmap, no RSS)."""
  from t2t_jax.ids import kmeans as km  # pylint: disable=g-import-not-at-top
  return km.RowFile(path, shape, dtype)


def scale(args) -> dict:
  import psutil  # pylint: disable=g-import-not-at-top
  from t2t_jax.ids import semantic  # pylint: disable=g-import-not-at-top
  proc = psutil.Process()
  info = machine()
  scratch = args.scratch or tempfile.mkdtemp(prefix="bench_kmeans_")
  path = os.path.join(scratch, f"emb_{args.n}x{args.d}.npy")
  t = time.perf_counter()
  if not os.path.exists(path):
    mm = np.lib.format.open_memmap(path + ".tmp", mode="w+", dtype=np.float32, shape=(args.n, args.d))
    make_data(args.n, args.d, args.blobs, args.seed, out=mm)
    mm.flush()
    del mm
    os.replace(path + ".tmp", path)
  write_s = time.perf_counter() - t
  emb = np.load(path, mmap_mode="r")
  ids = [f"t{i}" for i in range(args.n)]
  rss_before = proc.memory_info().rss
  peak = [rss_before]

  def progress(level):
    peak[0] = max(peak[0], proc.memory_info().rss)
    print(f"level {level} done at {time.perf_counter() - t0:.1f} s, rss {proc.memory_info().rss / 2**30:.2f} GiB",
          flush=True)

  t0 = time.perf_counter()
  table = semantic.build_semantic_ids(
      emb, ids, level_sizes=(args.k,) * args.levels, seed=args.seed, iterations=args.iterations, stream=True,
      scratch_dir=scratch, progress=progress,
      kmeans_kwargs={"init": args.init, "chunk_size": args.chunk, "tol": 1e-4})
  build_s = time.perf_counter() - t0
  import resource  # pylint: disable=g-import-not-at-top
  maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  return {"mode": "scale", "n": args.n, "d": args.d, "k": args.k, "levels": args.levels,
          "iterations": args.iterations, "init": args.init, "write_data_seconds": write_s,
          "build_seconds": build_s, "peak_rss_bytes": maxrss, "peak_rss_gib": maxrss / 2**30,
          "disambiguation_size": table.level_sizes[-1], "num_disambiguated": table.meta["num_disambiguated"],
          "levels_detail": table.meta["stats"]["levels_detail"], "machine": info}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--n", type=int, default=1_000_000)
  p.add_argument("--d", type=int, default=64)
  p.add_argument("--k", type=int, default=256)
  p.add_argument("--iterations", type=int, default=20)
  p.add_argument("--runs", type=int, default=3)
  p.add_argument("--sklearn_runs", type=int, default=1, help="sklearn is slow: run it this many times")
  p.add_argument("--no_sklearn", action="store_true")
  p.add_argument("--blobs", type=int, default=1024, help="Gaussian mixture components in the data")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--chunk", type=int, default=None, help="k-means chunk size (default: the library's)")
  p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
  p.add_argument("--update", default="onehot", choices=["onehot", "segment_sum"])
  p.add_argument("--json", default=None, help="write the results here (atomically)")
  p.add_argument("--scale", action="store_true", help="streamed semantic-ID build from a memmap")
  p.add_argument("--levels", type=int, default=3)
  p.add_argument("--init", default="k-means||", choices=["k-means||", "k-means++"])
  p.add_argument("--scratch", default=None, help="scale mode: where the memmap and residuals go")
  args = p.parse_args(argv)
  from t2t_jax import io_utils  # pylint: disable=g-import-not-at-top
  from t2t_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top
  from t2t_jax.ids import kmeans as km  # pylint: disable=g-import-not-at-top
  if args.chunk is None:
    args.chunk = km.DEFAULT_CHUNK
  try:
    out = scale(args) if args.scale else bench(args)
  except UserInputError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps({k: v for k, v in out.items() if k != "machine"}, indent=1))
  if args.json:
    io_utils.write_json(args.json, out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
