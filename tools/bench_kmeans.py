"""Benchmark: t2t_jax k-means (JAX) vs faiss-cpu vs scikit-learn, same data, K, iterations, init.

  python tools/bench_kmeans.py --json kmeans.json    # N=1M, d=64, K=256, 20 iterations, 5 runs
  python tools/bench_kmeans.py --n 10000000 --no_faiss --no_sklearn --json kmeans.json   # a GPU
  python tools/bench_kmeans.py --scale --n 10000000  # streamed semantic IDs from a memmap, peak RSS
  python tools/bench_kmeans.py --cf_scale --n 1000000 --playlists 1000000 --d 64  # CF embeddings

Fairness: one seeded Gaussian-mixture dataset; the same k-means++ initial centroids go to all three
(faiss `train(init_centroids=...)`, sklearn `init=array, n_init=1`); exactly `--iterations` Lloyd
steps (tol=0; faiss `max_points_per_centroid` raised so it trains on all N points instead of its
default 256*K sample; sklearn algorithm="lloyd", tol=0 -- it may stop early only at exact
convergence).  Final inertia of each result is computed by one evaluator (float32 distances from
faiss IndexFlatL2, float64 sum) on all points.  Times are wall seconds of the fit call; ours includes
its final assignment pass (faiss's train does not) and excludes XLA compilation (a warm-up fit on
the same shapes runs first and is reported separately).  Runs are interleaved (jax, faiss, sklearn,
jax, ...), median/min/max reported.  faiss runs with its best OpenMP thread count on this machine
(every count 1..nproc timed on a 3-iteration fit; `--faiss_threads N` fixes it): on an oversubscribed
CPU its threads collapse, so the load average before and after is recorded and a run whose load
exceeded the core count says so.  Also reported: our seconds per Lloyd iteration (between iteration
callbacks) against the time of one read of the data from device memory (a jitted sum over the
device-resident array, and on known GPUs the datasheet HBM bandwidth): the roofline of a pass.

Scale mode (--scale): writes an N x d float32 file to --scratch in chunks, then builds 3 x 256 +
disambiguation residual-k-means semantic IDs streaming from it (k-means|| or sampled k-means++
init; chunks read with pread, residuals written with pwrite, so neither file is mapped into the
process), and reports wall time and peak RSS (ru_maxrss of the whole process).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common  # noqa: E402  pylint: disable=wrong-import-position

BLOCK_CANDIDATES = (1024, 16384, 262144)
NOMINAL_READ_TBPS = {"H200": 4.8, "H100": 3.35, "A100": 2.0}  # datasheet HBM bandwidth, TB/s


def make_data(n: int, d: int, num_blobs: int, seed: int, out=None, start: int = 0) -> np.ndarray:
  """Rows [start, start + n) of one seeded Gaussian mixture, written in chunks into `out` if given.

  The mixture (centres, scales) depends only on `seed`, and each 2^18-row chunk of the global row
  range has its own seeded stream, so writing a big file piece by piece gives the same rows as
  generating it at once."""
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(num_blobs, d)).astype(np.float32) * 2.0
  scales = rng.uniform(0.5, 1.5, size=num_blobs).astype(np.float32)
  x = np.empty((n, d), np.float32) if out is None else out
  step = 1 << 18
  if start % step:
    raise ValueError(f"make_data: start={start} must be a multiple of {step}")
  for s in range(0, n, step):
    m = min(step, n - s)
    r = np.random.default_rng([seed, start + s])
    lab = r.integers(num_blobs, size=m)
    x[s:s + m] = centers[lab] + r.standard_normal((m, d), dtype=np.float32) * scales[lab, None]
  return x


def machine() -> dict:
  """bench_common.machine_info() (cpu, cores, load, versions, date) + XLA flags."""
  out = bench_common.machine_info()
  out["xla_flags"] = os.environ.get("XLA_FLAGS", "")
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


def run_jax(x, c0, args, iterations=None):
  from t2t_jax.ids import kmeans as km  # pylint: disable=g-import-not-at-top
  stamps = []
  t = time.perf_counter()
  res = km.kmeans(x, args.k, iterations=iterations or args.iterations, tol=0.0, init_centroids_KxD=c0,
                  chunk_size=args.chunk, block_size=args.block, precision=args.precision, update=args.update,
                  callback=lambda it, inertia: stamps.append(time.perf_counter()))
  return time.perf_counter() - t, res.centroids_KxD, list(np.diff(stamps))


def run_faiss(x, c0, args, iterations=None):
  import faiss  # pylint: disable=g-import-not-at-top
  if args.faiss_threads:
    faiss.omp_set_num_threads(args.faiss_threads)
  km = faiss.Kmeans(x.shape[1], args.k, niter=iterations or args.iterations, seed=args.seed, verbose=False,
                    max_points_per_centroid=-(-x.shape[0] // args.k) + 1)
  km.cp.early_stop_threshold = -1.0  # Never stop early: exactly niter iterations.
  t = time.perf_counter()
  km.train(x, init_centroids=c0)
  return time.perf_counter() - t, km.centroids, None


def run_sklearn(x, c0, args, iterations=None):
  from sklearn.cluster import KMeans  # pylint: disable=g-import-not-at-top
  km = KMeans(n_clusters=args.k, init=c0, n_init=1, max_iter=iterations or args.iterations, tol=0.0,
              algorithm="lloyd", random_state=args.seed)
  t = time.perf_counter()
  km.fit(x)
  return time.perf_counter() - t, km.cluster_centers_.astype(np.float32), None


def choose_faiss_threads(x, c0, args) -> dict:
  """faiss's best OpenMP thread count here: every count 1..nproc timed on a 3-iteration fit."""
  seconds = {}
  for n in range(1, (os.cpu_count() or 1) + 1):
    args.faiss_threads = n
    seconds[n] = min(run_faiss(x, c0, args, iterations=3)[0] for _ in range(2))
  args.faiss_threads = min(seconds, key=seconds.get)
  return {"chosen": args.faiss_threads, "seconds_by_threads": {str(k): v for k, v in seconds.items()},
          "how": "each thread count timed on a 3-iteration fit (best of 2); the fastest kept"}


def choose_block(x, c0, args) -> dict:
  """Our best block size here (rows per scanned block: ~1024 suits a CPU's cache, a GPU wants far
  more rows per step): each candidate compiled, then timed on a 3-iteration fit (median seconds per
  iteration); the fastest kept."""
  candidates = [b for b in BLOCK_CANDIDATES if b <= max(BLOCK_CANDIDATES[0], 2 * x.shape[0])]
  per_iter = {}
  for b in candidates:
    args.block = b
    run_jax(x, c0, args, iterations=2)  # compile
    per_iter[b] = statistics.median(run_jax(x, c0, args, iterations=4)[2])
  args.block = min(per_iter, key=per_iter.get)
  return {"chosen": args.block, "seconds_per_iteration_by_block": {str(k): v for k, v in per_iter.items()},
          "how": "each block size compiled, then timed on a 4-iteration fit (median of 3 iteration gaps); "
                 "the fastest kept"}


def memory_read(x: np.ndarray) -> dict:
  """Seconds of one read of the data from device memory (a jitted sum over the device-resident
  array; median of 5 after a warm-up) and the bandwidth it implies; nominal HBM figures for known GPUs."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  xd = jax.device_put(jnp.asarray(x))
  total = jax.jit(lambda a: jnp.sum(a, dtype=jnp.float32))
  call = lambda: jax.block_until_ready(total(xd))
  call()
  secs = bench_common.summary(bench_common.time_windows(call, warmup=1, steps=1, windows=5))
  out = {"bytes": int(x.nbytes), "measured_seconds": secs, "measured_gb_per_s": x.nbytes / secs["median"] / 1e9,
         "how": "jitted jnp.sum over the device-resident float32 array (every byte read once)"}
  kind = jax.local_devices()[0].device_kind
  for name, tbps in NOMINAL_READ_TBPS.items():
    if name.lower() in kind.lower():
      out.update(nominal_tb_per_s=tbps, nominal_seconds=x.nbytes / (tbps * 1e12), device=kind)
  del xd
  return out


def bench(args) -> dict:
  from t2t_jax.ids import kmeans as km  # pylint: disable=g-import-not-at-top
  watch = bench_common.LoadWatch("bench_kmeans")
  info = machine()
  x = make_data(args.n, args.d, args.blobs, args.seed)
  c0 = km.kmeans_plusplus(x, args.k, seed=args.seed, sample_size=min(args.n, 64 * args.k))
  block_choice = choose_block(x, c0, args) if args.block == "auto" else None
  if block_choice:
    print(f"jax block size: {block_choice['chosen']} ({block_choice['seconds_per_iteration_by_block']})", flush=True)
  # Warm-up (compile) on the real shapes, 1 iteration.
  t = time.perf_counter()
  km.kmeans(x, args.k, iterations=1, tol=0.0, init_centroids_KxD=c0, chunk_size=args.chunk,
            block_size=args.block, precision=args.precision, update=args.update)
  compile_s = time.perf_counter() - t
  out = {"benchmark": "bench_kmeans", "command": "python tools/bench_kmeans.py " + " ".join(args.argv),
         "n": args.n, "d": args.d, "k": args.k, "iterations": args.iterations, "runs": args.runs,
         "chunk": args.chunk, "block": args.block, "precision": args.precision, "update": args.update,
         "jax_compile_and_1_iteration_seconds": compile_s, "machine": info}
  if block_choice:
    out["block_choice"] = block_choice
  libs = [("jax", run_jax)]
  if not args.no_faiss:
    libs.append(("faiss", run_faiss))
    if not args.faiss_threads:
      out["faiss_thread_choice"] = choose_faiss_threads(x, c0, args)
      print(f"faiss threads: {out['faiss_thread_choice']['chosen']} ({out['faiss_thread_choice']['seconds_by_threads']})",
            flush=True)
    out["faiss_threads"] = args.faiss_threads
  if not args.no_sklearn:
    libs.append(("sklearn", run_sklearn))
  times = {name: [] for name, _ in libs}
  per_iter = []
  cents = {}
  for r in range(args.runs):  # interleaved: a shared CPU's load hits every library alike
    for name, fn in libs:
      if name == "sklearn" and r >= args.sklearn_runs:
        continue
      sec, cent, iters = fn(x, c0, args)
      times[name].append(sec)
      per_iter += iters or []
      cents[name] = cent
      print(f"run {r} {name:8s} {sec:8.2f} s", flush=True)
  # One evaluator for every result: faiss's exact search when faiss runs, else our assignment pass on
  # the device (float32 distances, float64 sum; numpy's would take minutes at 10M rows).
  inertia = evaluate_inertia if not args.no_faiss else (
      lambda x, c: float(km.assign(x, c, block_size=args.block)[1].astype(np.float64).sum()))
  out["inertia_evaluator"] = "faiss IndexFlatL2" if not args.no_faiss else "t2t_jax.ids.kmeans.assign"
  out["init_inertia"] = inertia(x, c0)
  for name in ("jax", "faiss", "sklearn"):
    ts = times.get(name, [])
    out[f"{name}_seconds"] = statistics.median(ts) if ts else None
    out[f"{name}_seconds_summary"] = bench_common.summary(ts)
    out[f"{name}_all_seconds"] = ts
    if name in cents:
      out[f"{name}_inertia"] = inertia(x, cents[name])
    else:
      out[f"{name}_inertia"] = None
  out["jax_seconds_per_iteration"] = bench_common.summary(per_iter)
  if out["faiss_seconds"]:
    out["time_ratio_jax_over_faiss"] = out["jax_seconds"] / out["faiss_seconds"]
    out["inertia_ratio_jax_over_faiss"] = out["jax_inertia"] / out["faiss_inertia"]
  out["memory_read"] = memory_read(x)
  it_s = out["jax_seconds_per_iteration"]["median"]
  out["iteration_over_measured_read"] = it_s / out["memory_read"]["measured_seconds"]["median"]
  if "nominal_seconds" in out["memory_read"]:
    out["iteration_over_nominal_read"] = it_s / out["memory_read"]["nominal_seconds"]
  print(f"jax: {it_s * 1e3:.2f} ms per Lloyd iteration (median of {len(per_iter)}) = "
        f"{out['iteration_over_measured_read']:.1f}x one read of the {x.nbytes / 1e9:.2f} GB of data "
        f"({out['memory_read']['measured_gb_per_s']:.0f} GB/s measured)", flush=True)
  out["load"] = watch.report()
  return out


def scale(args) -> dict:
  import resource  # pylint: disable=g-import-not-at-top
  import psutil  # pylint: disable=g-import-not-at-top
  from t2t_jax.ids import kmeans as km  # pylint: disable=g-import-not-at-top
  from t2t_jax.ids import semantic  # pylint: disable=g-import-not-at-top
  proc = psutil.Process()
  info = machine()
  scratch = args.scratch or tempfile.mkdtemp(prefix="bench_kmeans_")
  path = os.path.join(scratch, f"emb_{args.n}x{args.d}_blobs{args.blobs}_seed{args.seed}_v2.f32")
  t = time.perf_counter()
  if not os.path.exists(path):
    # Written with pwrite (not a memmap), so the data never counts towards this process's RSS.
    out = km.RowFile.create(path + ".tmp", (args.n, args.d))
    step = 1 << 18
    for s0 in range(0, args.n, step):
      m = min(step, args.n - s0)
      out.write(s0, make_data(m, args.d, args.blobs, args.seed, start=s0))
    out.close()
    os.replace(path + ".tmp", path)
  write_s = time.perf_counter() - t
  emb = km.RowFile(path, (args.n, args.d))
  ids = [f"t{i}" for i in range(args.n)]
  peak = [proc.memory_info().rss]
  t0 = time.perf_counter()

  def progress(level):
    peak[0] = max(peak[0], proc.memory_info().rss)
    print(f"level {level} done at {time.perf_counter() - t0:.1f} s, rss {proc.memory_info().rss / 2**30:.2f} GiB",
          flush=True)

  kmeans_kwargs = {"init": args.init, "chunk_size": args.chunk, "block_size": args.block, "tol": 1e-4}
  if args.init == "k-means++":
    kmeans_kwargs["init_sample_size"] = 64 * args.k
  table = semantic.build_semantic_ids(
      emb, ids, level_sizes=(args.k,) * args.levels, seed=args.seed, iterations=args.iterations, stream=True,
      scratch_dir=scratch, progress=progress, kmeans_kwargs=kmeans_kwargs)
  build_s = time.perf_counter() - t0
  maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  if not args.scratch:
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(scratch, ignore_errors=True)
  return {"mode": "scale", "n": args.n, "d": args.d, "k": args.k, "levels": args.levels,
          "iterations": args.iterations, "init": args.init, "write_data_seconds": write_s,
          "build_seconds": build_s, "peak_rss_bytes": maxrss, "peak_rss_gib": maxrss / 2**30,
          "disambiguation_size": table.level_sizes[-1], "num_disambiguated": table.meta["num_disambiguated"],
          "duplicate_ids": table.num_duplicate_ids(),
          "levels_detail": table.meta["stats"]["levels_detail"], "machine": info}


def cf_scale(args) -> dict:
  """CF embeddings at scale: a random playlist x track matrix (Zipf track popularity, playlists drawn
  around latent topics), built directly in CSR, then `fit_embeddings`; wall time and peak RSS."""
  import resource  # pylint: disable=g-import-not-at-top
  from t2t_jax.ids import embeddings as emb_lib  # pylint: disable=g-import-not-at-top
  info = machine()
  rng = np.random.default_rng(args.seed)
  num_tracks, num_playlists = args.n, args.playlists
  t = time.perf_counter()
  lens = rng.integers(5, 2 * args.avg_len - 5 + 1, size=num_playlists)
  indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
  nnz = int(indptr[-1])
  # Each playlist picks a topic; 80% of its tracks come from the topic's contiguous track range
  # (tracks are shuffled into topics), 20% from a Zipf popularity over the catalog.
  topics = max(1, num_tracks // 500)
  topic_of_pl = np.repeat(rng.integers(topics, size=num_playlists), lens)
  perm = rng.permutation(num_tracks).astype(np.int32)
  in_topic = rng.random(nnz) < 0.8
  topic_size = num_tracks // topics
  local = rng.integers(topic_size, size=nnz)
  zipf = np.minimum(rng.zipf(1.3, size=nnz) - 1, num_tracks - 1)
  cols = np.where(in_topic, perm[np.minimum(topic_of_pl * topic_size + local, num_tracks - 1)], perm[zipf])
  rows = np.repeat(np.arange(num_playlists), lens)
  order = np.lexsort((cols, rows))
  rows, cols = rows[order], cols[order].astype(np.int32)
  keep = np.ones(nnz, bool)
  keep[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
  rows, cols = rows[keep], cols[keep]
  indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=num_playlists))]).astype(np.int64)
  del order, keep, topic_of_pl, in_topic, local, zipf, rows
  matrix = emb_lib.PlaylistMatrix(indptr=indptr, indices=cols, num_tracks=num_tracks)
  gen_s = time.perf_counter() - t
  rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  emb, einfo = emb_lib.fit_embeddings(matrix, args.d, seed=args.seed, power_iters=args.power_iters)
  maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  return {"mode": "cf_scale", "num_tracks": num_tracks, "num_playlists": num_playlists, "nnz": matrix.nnz,
          "dim": args.d, "power_iters": args.power_iters, "passes": einfo.passes,
          "generate_seconds": gen_s, "fit_seconds": einfo.seconds, "cold_tracks": einfo.num_cold_tracks,
          "peak_rss_before_fit_gib": rss0 / 2**30, "peak_rss_gib": maxrss / 2**30,
          "top_singular_values": einfo.singular_values[:5], "machine": info}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--n", type=int, default=1_000_000)
  p.add_argument("--d", type=int, default=64)
  p.add_argument("--k", type=int, default=256)
  p.add_argument("--iterations", type=int, default=20)
  p.add_argument("--runs", type=int, default=5)
  p.add_argument("--sklearn_runs", type=int, default=1, help="sklearn is slow: run it this many times")
  p.add_argument("--no_sklearn", action="store_true")
  p.add_argument("--no_faiss", action="store_true", help="ours only (e.g. an accelerator image without faiss)")
  p.add_argument("--faiss_threads", type=int, default=0,
                 help="faiss OpenMP threads (0: the fastest of 1..nproc, measured on a 3-iteration fit)")
  p.add_argument("--blobs", type=int, default=1024, help="Gaussian mixture components in the data")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--chunk", type=int, default=None, help="k-means chunk size (default: the library's)")
  p.add_argument("--block", default=None,
                 help="k-means block size (default: the library's; 'auto': the fastest of "
                      f"{', '.join(map(str, BLOCK_CANDIDATES))}, measured)")
  p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
  p.add_argument("--update", default="auto", choices=["auto", "onehot", "segment_sum"])
  p.add_argument("--json", default=None, help="write the results here (atomically)")
  p.add_argument("--scale", action="store_true", help="streamed semantic-ID build from a memmap")
  p.add_argument("--levels", type=int, default=3)
  p.add_argument("--cf_scale", action="store_true", help="CF embeddings on a random n x playlists matrix")
  p.add_argument("--playlists", type=int, default=1_000_000)
  p.add_argument("--avg_len", type=int, default=20)
  p.add_argument("--power_iters", type=int, default=4)
  p.add_argument("--init", default="k-means||", choices=["k-means||", "k-means++"])
  p.add_argument("--scratch", default=None, help="scale mode: where the memmap and residuals go")
  args = p.parse_args(argv)
  args.argv = list(sys.argv[1:] if argv is None else argv)
  from t2t_jax import console  # pylint: disable=g-import-not-at-top
  from t2t_jax.ids import kmeans as km  # pylint: disable=g-import-not-at-top
  if args.chunk is None:
    args.chunk = km.DEFAULT_CHUNK
  if args.block is None:
    args.block = km.DEFAULT_BLOCK
  elif args.block != "auto":
    args.block = int(args.block)
  watch = bench_common.LoadWatch("bench_kmeans")
  return console.run_main(lambda: _run(args, watch))


def _run(args, watch) -> None:
  from t2t_jax import io_utils  # pylint: disable=g-import-not-at-top
  out = cf_scale(args) if args.cf_scale else scale(args) if args.scale else bench(args)
  out.setdefault("load", watch.report())
  print(json.dumps({k: v for k, v in out.items() if isinstance(v, (int, float, str, type(None)))}, indent=1))
  if args.json:
    io_utils.write_json(args.json, out)


if __name__ == "__main__":
  sys.exit(main())
