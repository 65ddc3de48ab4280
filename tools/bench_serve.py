"""Benchmark `t2t serve`: latency and throughput under concurrent clients, mixed k, and a flood of slow
connections, with answers checked.

  python tools/bench_serve.py [--model_dir DIR] [--json PATH]
  python tools/bench_serve.py --tiny --json PATH     # the same steps at toy sizes (a smoke run, tests)

Without --model_dir a small quickstart model is built into a temp dir first (synthetic catalog,
a few training steps; with --tiny a smaller one: TINY_MODEL).  --tiny also lowers every request
count and the server's --max_k / --max_batch (TINY_DEFAULTS; flags given explicitly still win), so
fewer shapes are compiled; its numbers mean nothing.  Then:
  1. reference answers: the in-process `GenerativeRetriever` ranks every benchmark prompt once, at the top-K
     bucket the server uses for each k (the server's `plan_buckets`), sliced to k;
  2. `t2t serve --port 0` starts as a subprocess on 127.0.0.1 (warmed: every (k bucket, padded batch)
     shape is compiled before it listens) with --max_uptime_s as a safety net; its output is drained
     in a thread (log lines are counted);
  3. latency: one client sends --latency_requests single-prompt requests one after another (p50/p99);
  4. load: --clients concurrent clients each send --requests_per_client single-prompt requests;
     every answer is compared with the reference (same track ids in the same order, scores within
     1e-3): errors (non-200 / transport) and wrong_answers are counted, requests/s measured;
  5. mixed k: --mixed_clients clients send requests with k = 40, 41, ... (clipped to --max_k) while one
     client sends --mixed_small_requests requests at -k; its latency is reported (no request may
     compile: the server's compiled_on_request must stay 0);
  6. slow clients: --slow_clients connections each announce a 60 kB body and send 12 bytes (half of
     them send nothing at all), then --slow_valid_requests valid requests are timed; the server's
     open file descriptors (/proc) and connection counters are reported;
  7. the server is stopped (SIGTERM) and the numbers are printed and written to --json.
All request loops are bounded; only loopback is used.
"""

import argparse
import asyncio
import json
import os
import signal
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common  # noqa: E402  pylint: disable=wrong-import-position

PROMPTS = [
    "old classics for slow dancing", "late night drive", "GYM WORKOUT", "chill evening jazz 🎷",
    "música para bailar", "rainy sunday morning", "summer road trip", "focus music for coding",
    "90s hip hop", "sad songs to cry to", "party anthems", "acoustic covers", "indie folk autumn",
    "deep house sunset", "running playlist 180 bpm", "sleep", "dinner party", "love songs",
    "country roads", "punk rock energy", "piano for studying", "reggae vibes", "throwback hits",
    "epic movie soundtracks", "coffee shop", "k-pop favourites", "metal workout", "lofi beats",
    "wedding first dance", "christmas classics", "happy morning", "road trip with friends",
]


# The quickstart model built without --model_dir (the test_quickstart sizes), and what --tiny changes.
SMALL_MODEL = dict(num_tracks=300, num_playlists=400, vocab_size=600, embedding_dim=16, id_levels="8,8",
                   train_steps=40, batch_size=32, beam_size=12, k=10, eval_playlists=16, inputs_length=24)
TINY_MODEL = dict(SMALL_MODEL, num_tracks=150, num_playlists=200, embedding_dim=8, model="micro",
                  train_steps=5, batch_size=16, eval_playlists=4)
# --tiny: the defaults of these flags (a few requests per phase; 3 k buckets of at most 2 prompts).
TINY_DEFAULTS = dict(max_k=48, max_batch=2, latency_requests=5, clients=2, requests_per_client=2,
                     mixed_clients=2, mixed_small_requests=2, slow_clients=10, slow_valid_requests=2)


def build_quickstart_model(work_dir: str, *, tiny: bool = False) -> str:
  """A small (or, with `tiny`, a toy) quickstart run; returns its model dir."""
  from t2t_jax import quickstart  # pylint: disable=g-import-not-at-top
  cfg = quickstart.QuickstartConfig(
      out=os.path.join(work_dir, "report"), work_dir=os.path.join(work_dir, "work"), progress=False,
      **(TINY_MODEL if tiny else SMALL_MODEL))
  quickstart.run(cfg)
  return os.path.join(cfg.work_dir, "model")


def reference_answers(model_dir: str, prompts: list, ks: list, args) -> dict:
  """{(prompt, k): (track ids, scores)}: the server's answer computed in-process (top-K bucket, sliced)."""
  from t2t_jax.serving import serve, retriever  # pylint: disable=g-import-not-at-top
  rec = retriever.GenerativeRetriever.from_model_dir(model_dir)
  max_k = min(args.max_k, rec.id_table.num_tracks)
  plan = serve.plan_buckets(beam_size=rec.beam_size, default_k=min(args.k, max_k), max_k=max_k,
                            max_batch=args.max_batch, k_buckets=serve.parse_k_buckets(args.k_buckets))
  out = {}
  for k in ks:
    for p, recs in zip(prompts, rec.recommend(prompts, k=plan.bucket(k))):
      out[(p, k)] = ([r.track_id for r in recs[:k]], [r.score for r in recs[:k]])
  return out


class ServerProcess:
  """`t2t serve` as a subprocess; a thread drains its output (a server that logs must never block)."""

  def __init__(self, model_dir: str, args):
    cmd = [sys.executable, "-m", "t2t_jax.cli", "serve", "--model_dir", model_dir, "--host", "127.0.0.1",
           "--port", "0", "-k", str(args.k), "--max_k", str(args.max_k), "--k_buckets", args.k_buckets,
           "--max_batch", str(args.max_batch), "--max_wait_ms", str(args.max_wait_ms),
           "--max_prompts", str(min(32, args.max_batch)), "--max_connections", str(args.max_connections),
           "--max_uptime_s", str(args.max_uptime_s)]
    env = dict(os.environ, PYTHONUNBUFFERED="1", JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 env=env)
    self.lines: list = []
    self._listening = threading.Event()
    self.url = None
    threading.Thread(target=self._drain, daemon=True).start()
    if not self._listening.wait(args.start_timeout_s) or self.url is None:
      self.stop()
      raise SystemExit("server did not start:\n" + "\n".join(self.lines[-20:]))

  def _drain(self) -> None:
    for line in self.proc.stdout:
      self.lines.append(line.rstrip())
      if self.url is None and "listening on http://" in line:
        self.url = line.split("listening on ")[1].split()[0]
        self._listening.set()
    self._listening.set()

  def open_fds(self) -> int:
    return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

  def stop(self) -> int:
    return stop_server(self.proc)


def stop_server(proc) -> int:
  if proc.poll() is None:
    proc.send_signal(signal.SIGTERM)
    try:
      proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
  return proc.returncode


def _check(answer: dict, prompt: str, k: int, want: dict) -> bool:
  ids, scores = want[(prompt, k)]
  tracks = answer["results"][0]["tracks"]
  return ([t["track_id"] for t in tracks] == ids
          and np.allclose([t["score"] for t in tracks], scores, rtol=0, atol=1e-3))


async def _client(session, url: str, jobs: list, want: dict, stats: dict):
  for p, k in jobs:
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
    elif not _check(body, p, k, want):
      stats["wrong_answers"] += 1


def _new_stats() -> dict:
  return {"latency_ms": [], "errors": 0, "wrong_answers": 0}


async def run_load(url: str, prompts: list, *, clients: int, per_client: int, k: int, want: dict) -> dict:
  import aiohttp  # pylint: disable=g-import-not-at-top
  stats = _new_stats()
  timeout = aiohttp.ClientTimeout(total=300)
  async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients), timeout=timeout) as s:
    t = time.perf_counter()
    await asyncio.gather(*[
        _client(s, url, [(prompts[(c * 7 + i) % len(prompts)], k) for i in range(per_client)], want, stats)
        for c in range(clients)])
    stats["seconds"] = time.perf_counter() - t
  return stats


async def run_mixed(url: str, prompts: list, *, large_ks: list, small_k: int, small_requests: int,
                    want: dict) -> tuple:
  """One client at small_k, one after another, while a client per large k sends requests until it ends."""
  import aiohttp  # pylint: disable=g-import-not-at-top
  small, large = _new_stats(), _new_stats()
  done = asyncio.Event()

  async def large_client(session, c, k):
    i = 0
    while not done.is_set() and i < 1000:
      await _client(session, url, [(prompts[(c * 7 + i) % len(prompts)], k)], want, large)
      i += 1

  timeout = aiohttp.ClientTimeout(total=600)
  async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=len(large_ks) + 1),
                                   timeout=timeout) as s:
    t = time.perf_counter()
    tasks = [asyncio.create_task(large_client(s, c, k)) for c, k in enumerate(large_ks)]
    await asyncio.sleep(0.2)
    await _client(s, url, [(prompts[i % len(prompts)], small_k) for i in range(small_requests)], want, small)
    done.set()
    await asyncio.gather(*tasks)
    large["seconds"] = time.perf_counter() - t
  return small, large


def slow_clients(url: str, n: int) -> list:
  """n connections that each hold the server: half announce a 60 kB body and send 12 bytes, half send
  nothing."""
  host, port = url.split("//")[1].rsplit(":", 1)
  socks = []
  for i in range(n):
    sock = socket.create_connection((host, int(port)), timeout=10)
    if i % 2:
      sock.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: 60000\r\n\r\n" + b'{"prompt": "')
    socks.append(sock)
  return socks


async def health(url: str) -> dict:
  import aiohttp  # pylint: disable=g-import-not-at-top
  async with aiohttp.ClientSession() as s:
    async with s.get(url + "/health") as resp:
      return await resp.json()


def machine() -> dict:
  """bench_common.machine_info (one definition of "where it ran" for every results file)."""
  return bench_common.machine_info()


def pct(xs, q) -> float:
  return round(float(np.percentile(np.asarray(xs), q)), 2)


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model_dir", help="model dir to serve (default: build a small quickstart model)")
  p.add_argument("--json", help="write the results here")
  p.add_argument("-k", "--k", type=int, default=10)
  p.add_argument("--max_k", type=int, default=100, help="t2t serve --max_k")
  p.add_argument("--k_buckets", default="auto", help="t2t serve --k_buckets")
  p.add_argument("--latency_requests", type=int, default=100)
  p.add_argument("--clients", type=int, default=32)
  p.add_argument("--requests_per_client", type=int, default=16)
  p.add_argument("--max_batch", type=int, default=32, help="t2t serve --max_batch (1: no batching)")
  p.add_argument("--max_wait_ms", type=float, default=5.0, help="t2t serve --max_wait_ms")
  p.add_argument("--max_connections", type=int, default=256, help="t2t serve --max_connections")
  p.add_argument("--mixed_clients", type=int, default=16, help="clients at k = 40, 41, ... (0: skip)")
  p.add_argument("--mixed_small_requests", type=int, default=20, help="requests at -k during the mixed phase")
  p.add_argument("--slow_clients", type=int, default=2000, help="slow connections opened (0: skip)")
  p.add_argument("--slow_valid_requests", type=int, default=10)
  p.add_argument("--start_timeout_s", type=float, default=900)
  p.add_argument("--max_uptime_s", type=float, default=2400, help="server safety net")
  p.add_argument("--tiny", action="store_true",
                 help="toy sizes, for a smoke run: a micro model when one is built and these defaults: "
                      + ", ".join(f"--{k} {v}" for k, v in TINY_DEFAULTS.items()))
  return p


def mixed_k_phase(url: str, args, large_ks: list, want: dict) -> dict:
  """Step 5: clients at large k while one client at -k is timed; nothing may compile on request."""
  print(f"[bench] mixed k: {args.mixed_clients} clients at k {large_ks[0]}..{large_ks[-1]} and one at "
        f"k={args.k} ...", flush=True)
  small, large = asyncio.run(run_mixed(url, PROMPTS, large_ks=large_ks, small_k=args.k,
                                       small_requests=args.mixed_small_requests, want=want))
  after = asyncio.run(health(url))
  return {
      "small_k_p50_ms": pct(small["latency_ms"], 50), "small_k_max_ms": round(max(small["latency_ms"]), 1),
      "large_k_requests": len(large["latency_ms"]), "large_k_p50_ms": pct(large["latency_ms"], 50),
      "large_k_requests_per_s": round(len(large["latency_ms"]) / large["seconds"], 1),
      "errors": small["errors"] + large["errors"],
      "wrong_answers": small["wrong_answers"] + large["wrong_answers"],
      "compiled_on_request": after["compiled_on_request"]}


def slow_clients_phase(server: ServerProcess, url: str, args, want: dict) -> dict:
  """Step 6: slow connections held open while valid requests are timed; the server's fds and counters."""
  n = min(args.slow_clients, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 200)
  fds_before, lines_before = server.open_fds(), len(server.lines)
  print(f"[bench] {n} slow connections, then {args.slow_valid_requests} valid requests ...", flush=True)
  socks = slow_clients(url, n)
  try:
    valid = asyncio.run(run_load(url, PROMPTS, clients=1, per_client=args.slow_valid_requests, k=args.k,
                                 want=want))
    fds_during = server.open_fds()
    conns = asyncio.run(health(url))["connections"]
  finally:
    for sock in socks:
      sock.close()
  time.sleep(1.0)
  return {
      "connections_opened": n, "valid_max_ms": round(max(valid["latency_ms"]), 1),
      "valid_p50_ms": pct(valid["latency_ms"], 50), "errors": valid["errors"],
      "wrong_answers": valid["wrong_answers"], "server_fds_before": fds_before,
      "server_fds_during": fds_during, "server": conns,
      "server_log_lines": len(server.lines) - lines_before}


def run_phases(server: ServerProcess, args, large_ks: list, want: dict) -> dict:
  """Steps 3-6 against the running server: {"latency", "load", "before", "server_stats", "phases"}."""
  url = server.url
  phases = {}
  asyncio.run(run_load(url, PROMPTS[:4], clients=1, per_client=4, k=args.k, want=want))  # connection warm-up
  print(f"[bench] latency: {args.latency_requests} sequential single-prompt requests ...", flush=True)
  lat = asyncio.run(run_load(url, PROMPTS, clients=1, per_client=args.latency_requests, k=args.k, want=want))
  before = asyncio.run(health(url))
  print(f"[bench] load: {args.clients} clients x {args.requests_per_client} requests ...", flush=True)
  load = asyncio.run(run_load(url, PROMPTS, clients=args.clients, per_client=args.requests_per_client,
                              k=args.k, want=want))
  server_stats = asyncio.run(health(url))
  if args.mixed_clients:
    phases["mixed_k"] = mixed_k_phase(url, args, large_ks, want)
  if args.slow_clients:
    phases["slow_clients"] = slow_clients_phase(server, url, args, want)
  return {"latency": lat, "load": load, "before": before, "server_stats": server_stats, "phases": phases}


def results(m: dict, args, argv, *, mach: dict, watch, rc: int, seconds: float) -> dict:
  """The results document of the measurements `m` (run_phases)."""
  lat, load, before, server_stats, phases = m["latency"], m["load"], m["before"], m["server_stats"], m["phases"]
  n_load = len(load["latency_ms"])
  errors = lat["errors"] + load["errors"] + sum(r.get("errors", 0) for r in phases.values())
  wrong = lat["wrong_answers"] + load["wrong_answers"] + sum(r.get("wrong_answers", 0) for r in phases.values())
  return {
      "p50_ms": pct(lat["latency_ms"], 50), "p99_ms": pct(lat["latency_ms"], 99),
      "requests_per_s": round(n_load / load["seconds"], 1),
      "errors": errors, "wrong_answers": wrong,
      "benchmark": "bench_serve", "command": "python tools/bench_serve.py " + " ".join(sys.argv[1:] if argv is None else argv),
      "machine": mach, "load": watch.report(),
      "latency_requests": len(lat["latency_ms"]), "load_requests": n_load, "clients": args.clients,
      "load_p50_ms": pct(load["latency_ms"], 50), "load_p99_ms": pct(load["latency_ms"], 99),
      "single_client_requests_per_s": round(len(lat["latency_ms"]) / lat["seconds"], 1),
      **phases,
      "server": {"batches": server_stats["batches"], "prompts": server_stats["prompts"],
                 "largest_batch": server_stats["largest_batch"],
                 "load_batches": server_stats["batches"] - before["batches"],
                 "load_mean_batch": round((server_stats["prompts"] - before["prompts"])
                                          / max(server_stats["batches"] - before["batches"], 1), 2),
                 "k_buckets": server_stats["k_buckets"], "warmup_s": server_stats["warmup_s"],
                 "exit_code": rc},
      "config": {"k": args.k, "max_k": args.max_k, "k_buckets": args.k_buckets, "max_batch": args.max_batch,
                 "max_wait_ms": args.max_wait_ms, "max_connections": args.max_connections,
                 "model_dir": args.model_dir or f"(built: {'tiny' if args.tiny else 'small'} quickstart)",
                 "tiny": args.tiny},
      "total_seconds": seconds,
  }


def main(argv=None) -> int:
  p = _parser()
  if p.parse_known_args(argv)[0].tiny:
    p.set_defaults(**TINY_DEFAULTS)
  args = p.parse_args(argv)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  watch = bench_common.LoadWatch("bench_serve")
  mach = machine()
  t_all = time.time()
  tmp = None
  model_dir = args.model_dir
  if not model_dir:
    tmp = tempfile.TemporaryDirectory(prefix="bench_serve_")
    print(f"[bench] building a {'tiny' if args.tiny else 'small'} quickstart model ...", flush=True)
    model_dir = build_quickstart_model(tmp.name, tiny=args.tiny)
  large_ks = sorted({min(40 + i, args.max_k) for i in range(args.mixed_clients)})
  large_ks = [large_ks[i % len(large_ks)] for i in range(args.mixed_clients)]
  print("[bench] reference answers (in-process GenerativeRetriever) ...", flush=True)
  want = reference_answers(model_dir, PROMPTS, sorted({args.k, *large_ks}), args)
  print("[bench] starting t2t serve ...", flush=True)
  server = ServerProcess(model_dir, args)
  print(f"[bench] {server.url} ({[l for l in server.lines if 'warm in' in l]})", flush=True)
  try:
    measured = run_phases(server, args, large_ks, want)
  finally:
    rc = server.stop()
    if tmp is not None:
      tmp.cleanup()
  result = results(measured, args, argv, mach=mach, watch=watch, rc=rc, seconds=round(time.time() - t_all, 1))
  print(json.dumps(result, indent=2, ensure_ascii=False))
  if args.json:
    from t2t_jax import io_utils  # pylint: disable=g-import-not-at-top
    io_utils.write_json(args.json, result)
  return 0 if result["errors"] == 0 and result["wrong_answers"] == 0 else 1

if __name__ == "__main__":
  sys.exit(main())
