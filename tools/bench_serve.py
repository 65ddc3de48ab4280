"""Benchmark `t2t serve`: single-prompt latency and throughput under concurrent clients, with answers checked.

  python tools/bench_serve.py [--model_dir DIR] [--json PATH]

Without --model_dir a small quickstart model is built into a temp dir first (synthetic catalog,
a few training steps).  Then:
  1. reference answers: the in-process `Recommender` ranks every benchmark prompt once;
  2. `t2t serve --port 0` starts as a subprocess on 127.0.0.1 (warmed: every padded batch shape is
     compiled before it listens) with --max_uptime_s as a safety net;
  3. latency: one client sends --latency_requests single-prompt requests one after another (p50/p99);
  4. load: --clients concurrent clients each send --requests_per_client single-prompt requests;
     every answer is compared with the reference (same track ids in the same order, scores within
     1e-3): errors (non-200 / transport) and wrong_answers are counted, requests/s measured;
  5. the server is stopped (SIGTERM) and the numbers are printed and written to --json.
All request loops are bounded; only loopback is used.
"""

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PROMPTS = [
    "old classics for slow dancing", "late night drive", "GYM WORKOUT", "chill evening jazz 🎷",
    "música para bailar", "rainy sunday morning", "summer road trip", "focus music for coding",
    "90s hip hop", "sad songs to cry to", "party anthems", "acoustic covers", "indie folk autumn",
    "deep house sunset", "running playlist 180 bpm", "sleep", "dinner party", "love songs",
    "country roads", "punk rock energy", "piano for studying", "reggae vibes", "throwback hits",
    "epic movie soundtracks", "coffee shop", "k-pop favourites", "metal workout", "lofi beats",
    "wedding first dance", "christmas classics", "happy morning", "road trip with friends",
]


def build_quickstart_model(work_dir: str) -> str:
  """A small quickstart run (the test_quickstart sizes); returns its model dir."""
  from t2t_jax import quickstart  # pylint: disable=g-import-not-at-top
  cfg = quickstart.QuickstartConfig(
      out=os.path.join(work_dir, "report"), work_dir=os.path.join(work_dir, "work"), num_tracks=300,
      num_playlists=400, vocab_size=600, embedding_dim=16, id_levels=(8, 8), train_steps=40,
      batch_size=32, beam_size=12, k=10, eval_playlists=16, inputs_length=24, progress=False)
  quickstart.run(cfg)
  return os.path.join(cfg.work_dir, "model")


def reference_answers(model_dir: str, prompts: list, k: int) -> dict:
  from t2t_jax import recommend  # pylint: disable=g-import-not-at-top
  rec = recommend.Recommender.load(model_dir)
  out = {}
  for p, recs in zip(prompts, rec.recommend(prompts, k=k)):
    out[p] = ([r.track_id for r in recs], [r.score for r in recs])
  return out


def start_server(model_dir: str, args) -> tuple:
  cmd = [sys.executable, "-m", "t2t_jax.cli", "serve", "--model_dir", model_dir, "--host", "127.0.0.1",
         "--port", "0", "-k", str(args.k), "--max_batch", str(args.max_batch),
         "--max_wait_ms", str(args.max_wait_ms), "--max_prompts", str(min(32, args.max_batch)),
         "--max_uptime_s", str(args.max_uptime_s)]
  env = dict(os.environ, PYTHONUNBUFFERED="1", JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env)
  deadline = time.time() + args.start_timeout_s
  log = []
  while time.time() < deadline:
    line = proc.stdout.readline()
    if not line:
      break
    log.append(line.rstrip())
    if "listening on http://" in line:
      url = line.split("listening on ")[1].split()[0]
      return proc, url, log
  stop_server(proc)
  raise SystemExit("server did not start:\n" + "\n".join(log[-20:]))


def stop_server(proc) -> int:
  if proc.poll() is None:
    proc.send_signal(signal.SIGTERM)
    try:
      proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
  return proc.returncode


def _check(answer: dict, prompt: str, want: dict) -> bool:
  ids, scores = want[prompt]
  tracks = answer["results"][0]["tracks"]
  return ([t["track_id"] for t in tracks] == ids
          and np.allclose([t["score"] for t in tracks], scores, rtol=0, atol=1e-3))


async def _client(session, url: str, prompts: list, k: int, want: dict, stats: dict):
  for p in prompts:
    t = time.perf_counter()
    try:
      async with session.post(url + "/recommend", json={"prompt": p, "k": k}) as resp:
        body = await resp.json()
        ok = resp.status == 200
    except Exception:  # pylint: disable=broad-except
      ok, body = False, None
    stats["latency_ms"].append((time.perf_counter() - t) * 1000)
    if not ok:
      stats["errors"] += 1
    elif not _check(body, p, want):
      stats["wrong_answers"] += 1


async def run_load(url: str, prompts: list, *, clients: int, per_client: int, k: int, want: dict) -> dict:
  import aiohttp  # pylint: disable=g-import-not-at-top
  stats = {"latency_ms": [], "errors": 0, "wrong_answers": 0}
  timeout = aiohttp.ClientTimeout(total=300)
  async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients), timeout=timeout) as s:
    t = time.perf_counter()
    await asyncio.gather(*[
        _client(s, url, [prompts[(c * 7 + i) % len(prompts)] for i in range(per_client)], k, want, stats)
        for c in range(clients)])
    stats["seconds"] = time.perf_counter() - t
  return stats


async def health(url: str) -> dict:
  import aiohttp  # pylint: disable=g-import-not-at-top
  async with aiohttp.ClientSession() as s:
    async with s.get(url + "/health") as resp:
      return await resp.json()


def machine() -> dict:
  """report.machine_info (one definition of "where it ran" for every results file)."""
  from t2t_jax import report  # pylint: disable=g-import-not-at-top
  return report.machine_info()


def pct(xs, q) -> float:
  return round(float(np.percentile(np.asarray(xs), q)), 2)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model_dir", help="model dir to serve (default: build a small quickstart model)")
  p.add_argument("--json", help="write the results here")
  p.add_argument("-k", "--k", type=int, default=10)
  p.add_argument("--latency_requests", type=int, default=100)
  p.add_argument("--clients", type=int, default=32)
  p.add_argument("--requests_per_client", type=int, default=16)
  p.add_argument("--max_batch", type=int, default=32, help="t2t serve --max_batch (1: no batching)")
  p.add_argument("--max_wait_ms", type=float, default=5.0, help="t2t serve --max_wait_ms")
  p.add_argument("--start_timeout_s", type=float, default=600)
  p.add_argument("--max_uptime_s", type=float, default=1800, help="server safety net")
  args = p.parse_args(argv)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  mach = machine()
  t_all = time.time()
  tmp = None
  model_dir = args.model_dir
  if not model_dir:
    tmp = tempfile.TemporaryDirectory(prefix="bench_serve_")
    print("[bench] building a small quickstart model ...", flush=True)
    model_dir = build_quickstart_model(tmp.name)
  print("[bench] reference answers (in-process Recommender) ...", flush=True)
  want = reference_answers(model_dir, PROMPTS, args.k)
  print("[bench] starting t2t serve ...", flush=True)
  proc, url, log = start_server(model_dir, args)
  print(f"[bench] {url} ({[l for l in log if 'warm in' in l]})", flush=True)
  try:
    asyncio.run(run_load(url, PROMPTS[:4], clients=1, per_client=4, k=args.k, want=want))  # connection warm-up
    print(f"[bench] latency: {args.latency_requests} sequential single-prompt requests ...", flush=True)
    lat = asyncio.run(run_load(url, PROMPTS, clients=1, per_client=args.latency_requests, k=args.k, want=want))
    before = asyncio.run(health(url))
    print(f"[bench] load: {args.clients} clients x {args.requests_per_client} requests ...", flush=True)
    load = asyncio.run(run_load(url, PROMPTS, clients=args.clients, per_client=args.requests_per_client,
                                k=args.k, want=want))
    server_stats = asyncio.run(health(url))
  finally:
    rc = stop_server(proc)
    if tmp is not None:
      tmp.cleanup()
  n_load = len(load["latency_ms"])
  result = {
      "p50_ms": pct(lat["latency_ms"], 50), "p99_ms": pct(lat["latency_ms"], 99),
      "requests_per_s": round(n_load / load["seconds"], 1),
      "errors": lat["errors"] + load["errors"], "wrong_answers": lat["wrong_answers"] + load["wrong_answers"],
      "machine": dict(mach, loadavg_1m_at_end=round(os.getloadavg()[0], 2)),
      "latency_requests": len(lat["latency_ms"]), "load_requests": n_load, "clients": args.clients,
      "load_p50_ms": pct(load["latency_ms"], 50), "load_p99_ms": pct(load["latency_ms"], 99),
      "single_client_requests_per_s": round(len(lat["latency_ms"]) / lat["seconds"], 1),
      "server": {"batches": server_stats["batches"], "prompts": server_stats["prompts"],
                 "largest_batch": server_stats["largest_batch"],
                 "load_batches": server_stats["batches"] - before["batches"],
                 "load_mean_batch": round((server_stats["prompts"] - before["prompts"])
                                          / max(server_stats["batches"] - before["batches"], 1), 2),
                 "exit_code": rc},
      "config": {"k": args.k, "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms,
                 "model_dir": args.model_dir or "(built: small quickstart)"},
      "total_seconds": round(time.time() - t_all, 1),
  }
  print(json.dumps(result, indent=2, ensure_ascii=False))
  if args.json:
    from t2t_jax import io_utils  # pylint: disable=g-import-not-at-top
    io_utils.write_json(args.json, result)
  return 0 if result["errors"] == 0 and result["wrong_answers"] == 0 else 1


if __name__ == "__main__":
  sys.exit(main())
