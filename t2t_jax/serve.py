"""`t2t serve`: a small HTTP JSON endpoint over a model dir (aiohttp), with micro-batching.

  POST /recommend  {"prompt": "old classics for slow dancing", "k": 10}
                   {"prompts": ["late night drive", "gym"], "k": 5}          (k optional)
     200 -> {"k": 5, "results": [{"prompt": ..., "tracks": [{"rank", "track_id", "artist", "title",
                                                             "score"}, ...]}, ...]}
     400 -> {"error": "..."} for bad JSON, an empty prompt, k out of range, too many prompts, an
            oversized body or unknown fields; every error body is JSON.
  GET /health      {"status": "ok", "num_tracks", "batches", "prompts", "requests", ...}

`MicroBatcher` gathers concurrent requests into one device call (at most `max_batch` prompts; the
Recommender pads it to a power of two, and those shapes are compiled before the server starts
listening).  Device calls run one at a time in a worker thread, so the event loop keeps accepting
requests meanwhile; the next batch is everything that queued up during the previous call plus, while
requests are arriving concurrently (the previous batch served more than one), those arriving within
`max_wait_ms`.  A lone request after a lone request is sent at once: measured with
tools/bench_serve.py on the 2-core CPU, always waiting 5 ms raised single-prompt p50 from 3.5 to 16 ms
(a sleeping process on a loaded CPU wakes late), while never waiting halved throughput under 32
clients (95 vs 178 requests/s: smaller batches).
"""

import asyncio
import concurrent.futures
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from typing import Callable, Sequence

from aiohttp import web

from t2t_jax.errors import UserInputError

ALLOWED_FIELDS = ("prompt", "prompts", "k")


@dataclasses.dataclass
class ServeConfig:
  host: str = "127.0.0.1"
  port: int = 8080
  default_k: int = 10
  max_k: int = 100
  max_batch: int = 32          # prompts per device call
  max_wait_ms: float = 5.0     # how long a batch waits for company under concurrent load
  max_prompts: int = 32        # prompts per request
  max_body_bytes: int = 64 * 1024
  warmup: bool = True
  max_uptime_s: float = 0.0    # > 0: the server stops by itself after this long (benchmarks, tests)

  def validate(self) -> None:
    for name in ("default_k", "max_k", "max_batch", "max_prompts", "max_body_bytes"):
      if getattr(self, name) < 1:
        raise UserInputError(f"--{name} must be >= 1, got {getattr(self, name)}")
    if self.max_prompts > self.max_batch:
      raise UserInputError(f"--max_prompts ({self.max_prompts}) must be <= --max_batch ({self.max_batch})")
    if self.max_wait_ms < 0:
      raise UserInputError(f"--max_wait_ms must be >= 0, got {self.max_wait_ms}")
    if not 0 <= self.port <= 65535:
      raise UserInputError(f"--port must be in [0, 65535], got {self.port}")


@dataclasses.dataclass
class _Item:
  prompts: list
  k: int
  future: asyncio.Future


class MicroBatcher:
  """Gathers concurrent requests into batched calls of `run_batch(prompts, k) -> list[result]`.

  A batch takes the requests already queued and, when the previous batch served several requests
  (concurrent load), those arriving within `max_wait_ms`; requests with the same k share a call of at
  most `max_batch` prompts (a request is never split).  Calls run one at a time in a worker thread.
  """

  def __init__(self, run_batch: Callable[[list, int], list], *, max_batch: int, max_wait_ms: float):
    self.run_batch = run_batch
    self.max_batch = max_batch
    self.max_wait_s = max_wait_ms / 1000.0
    self.stats = {"batches": 0, "prompts": 0, "requests": 0, "largest_batch": 0, "retried_requests": 0}
    self._queue: asyncio.Queue | None = None
    self._task: asyncio.Task | None = None
    self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="t2t-device")
    self._concurrent = False  # did the previous batch serve more than one request?

  def start(self) -> None:
    self._queue = asyncio.Queue()
    self._task = asyncio.get_running_loop().create_task(self._loop())

  async def stop(self) -> None:
    if self._task is not None:
      self._task.cancel()
      try:
        await self._task
      except asyncio.CancelledError:
        pass
    while self._queue is not None and not self._queue.empty():
      item = self._queue.get_nowait()
      if not item.future.done():
        item.future.set_exception(RuntimeError("server stopping"))
    self._executor.shutdown(wait=True)

  async def submit(self, prompts: Sequence[str], k: int) -> list:
    """Results for `prompts` (one per prompt), computed in some batch."""
    assert 1 <= len(prompts) <= self.max_batch, len(prompts)
    future = asyncio.get_running_loop().create_future()
    await self._queue.put(_Item(list(prompts), k, future))
    return await future

  async def _gather(self, items: list) -> list:
    """`items` plus the requests already queued (or arriving within max_wait under concurrent load),
    up to max_batch prompts."""
    loop = asyncio.get_running_loop()
    n = sum(len(it.prompts) for it in items)
    deadline = loop.time() + (self.max_wait_s if self._concurrent or len(items) > 1 else 0.0)
    while n < self.max_batch:
      if not self._queue.empty():
        item = self._queue.get_nowait()
      else:
        timeout = deadline - loop.time()
        if timeout <= 0:
          break
        try:
          item = await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
          break
      items.append(item)
      n += len(item.prompts)
    self._concurrent = len(items) > 1
    return items

  async def _loop(self) -> None:
    carry: list = []
    while True:
      items, carry = (carry, []) if carry else ([await self._queue.get()], [])
      items = await self._gather(items)
      by_k: dict = {}
      for item in items:
        by_k.setdefault(item.k, []).append(item)
      for k, group in by_k.items():
        batch, size = [], 0
        for item in group:  # fill up to max_batch prompts; the rest waits for the next round
          if size + len(item.prompts) > self.max_batch:
            carry.append(item)
          else:
            batch.append(item)
            size += len(item.prompts)
        batch = [it for it in batch if not it.future.done()]  # e.g. client gone
        if not batch:
          continue
        if not await self._run(batch, k) and len(batch) > 1:
          for it in batch:  # one bad request must not fail the others: retry them one by one
            await self._run([it], k, retry=True)

  async def _run(self, batch: list, k: int, retry: bool = False) -> bool:
    """One device call for `batch`; resolves its futures.  False if it raised (and several wait)."""
    prompts = [p for it in batch for p in it.prompts]
    try:
      results = await asyncio.get_running_loop().run_in_executor(self._executor, self.run_batch, prompts, k)
    except Exception as e:  # pylint: disable=broad-except
      if len(batch) > 1:
        return False
      if not batch[0].future.done():
        batch[0].future.set_exception(e)
      return True
    self.stats["batches"] += 1
    self.stats["prompts"] += len(prompts)
    self.stats["requests"] += len(batch)
    self.stats["retried_requests"] += len(batch) if retry else 0
    self.stats["largest_batch"] = max(self.stats["largest_batch"], len(prompts))
    i = 0
    for it in batch:
      if not it.future.done():
        it.future.set_result(results[i:i + len(it.prompts)])
      i += len(it.prompts)
    return True


def _error(status: int, message: str) -> web.Response:
  return web.json_response({"error": message}, status=status)


class Server:
  """The aiohttp app around a `Recommender` (anything with `recommend(prompts, k)` and `id_table`)."""

  def __init__(self, recommender, config: ServeConfig, *, model_dir: str | None = None):
    config.validate()
    self.rec = recommender
    self.config = config
    self.model_dir = model_dir
    self.num_tracks = int(recommender.id_table.num_tracks)
    self.max_k = min(config.max_k, self.num_tracks)
    self.default_k = min(config.default_k, self.max_k)
    self.batcher = MicroBatcher(self._run_batch, max_batch=config.max_batch,
                                max_wait_ms=config.max_wait_ms)
    self.started = time.time()
    self.port: int | None = None
    self._runner: web.AppRunner | None = None

  def _run_batch(self, prompts: list, k: int) -> list:
    return [[r.as_dict() for r in recs] for recs in self.rec.recommend(prompts, k=k)]

  def warmup(self) -> float:
    """Compiles the default k for every padded batch size up to max_batch; returns seconds."""
    t = time.time()
    b = 1
    while True:
      self.rec.recommend(["warm up"] * b, k=self.default_k)
      if b >= self.config.max_batch:
        break
      b *= 2
    return time.time() - t

  # ---- HTTP ------------------------------------------------------------------------------------

  @web.middleware
  async def _json_errors(self, request, handler):
    try:
      return await handler(request)
    except web.HTTPException as e:
      if e.status < 400:
        raise
      return _error(e.status, e.reason)

  def app(self) -> web.Application:
    app = web.Application(middlewares=[self._json_errors])  # body size: checked in _read_body
    app.router.add_post("/recommend", self.handle_recommend)
    app.router.add_get("/health", self.handle_health)
    app.on_startup.append(self._on_startup)
    app.on_cleanup.append(self._on_cleanup)
    return app

  async def _on_startup(self, app) -> None:  # pylint: disable=unused-argument
    self.batcher.start()

  async def _on_cleanup(self, app) -> None:  # pylint: disable=unused-argument
    await self.batcher.stop()

  async def handle_health(self, request) -> web.Response:  # pylint: disable=unused-argument
    return web.json_response({"status": "ok", "model_dir": self.model_dir, "num_tracks": self.num_tracks,
                              "default_k": self.default_k, "max_k": self.max_k,
                              "max_batch": self.config.max_batch,
                              "uptime_s": round(time.time() - self.started, 1), **self.batcher.stats})

  async def _read_body(self, request) -> bytes:
    limit = self.config.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
      raise UserInputError(f"request body is {request.content_length} bytes; the limit is {limit}")
    body = b""
    while True:
      chunk = await request.content.read(64 * 1024)
      if not chunk:
        return body
      body += chunk
      if len(body) > limit:
        raise UserInputError(f"request body is over {limit} bytes")

  def parse_request(self, body: bytes) -> tuple[list, int]:
    """(normalised prompts, k) from a request body; UserInputError naming the bad field."""
    from t2t_jax.data import prompts as prompts_lib  # pylint: disable=g-import-not-at-top
    try:
      req = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
      raise UserInputError("request body is not UTF-8") from None
    except json.JSONDecodeError as e:
      raise UserInputError(f"bad JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(req, dict):
      raise UserInputError(f"request must be a JSON object, got {type(req).__name__}")
    unknown = sorted(set(req) - set(ALLOWED_FIELDS))
    if unknown:
      raise UserInputError(f"unknown field(s) {unknown}; allowed: {list(ALLOWED_FIELDS)}")
    if ("prompt" in req) == ("prompts" in req):
      raise UserInputError('give exactly one of "prompt" (a string) or "prompts" (a list of strings)')
    if "prompt" in req:
      if not isinstance(req["prompt"], str):
        raise UserInputError(f'"prompt" must be a string, got {type(req["prompt"]).__name__}')
      raw = [req["prompt"]]
    else:
      raw = req["prompts"]
      if not isinstance(raw, list) or not raw:
        raise UserInputError('"prompts" must be a non-empty list of strings')
      if len(raw) > self.config.max_prompts:
        raise UserInputError(f'"prompts" has {len(raw)} prompts; the limit is {self.config.max_prompts}')
    prompts = []
    for i, p in enumerate(raw):
      where = "prompt" if "prompt" in req else f"prompts[{i}]"
      if not isinstance(p, str):
        raise UserInputError(f"{where} must be a string, got {type(p).__name__}")
      try:
        prompts.append(prompts_lib.normalize_prompt(p))
      except UserInputError as e:
        raise UserInputError(f"{where}: {e}") from None
    encode = getattr(self.rec, "encode", None)
    if encode is not None:  # tokenising is cheap: reject bad "<id_l_c>" markup before batching
      encode(prompts)
    k = req.get("k", self.default_k)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.max_k:
      raise UserInputError(f'"k" must be an integer in [1, {self.max_k}], got {k!r}')
    return prompts, k

  async def handle_recommend(self, request) -> web.Response:
    try:
      prompts, k = self.parse_request(await self._read_body(request))
    except UserInputError as e:
      return _error(400, str(e))
    try:
      results = await self.batcher.submit(prompts, k)
    except UserInputError as e:  # found while tokenising (e.g. bad "<id_l_c>" markup)
      return _error(400, str(e))
    except Exception as e:  # pylint: disable=broad-except
      return _error(500, f"internal error: {type(e).__name__}: {e}")
    return web.json_response(
        {"k": k, "results": [{"prompt": p, "tracks": t} for p, t in zip(prompts, results)]},
        dumps=lambda o: json.dumps(o, ensure_ascii=False))

  # ---- lifecycle -------------------------------------------------------------------------------

  async def start(self) -> int:
    """Starts listening; returns the bound port."""
    self._runner = web.AppRunner(self.app(), access_log=None)
    await self._runner.setup()
    site = web.TCPSite(self._runner, self.config.host, self.config.port)
    await site.start()
    self.port = site._server.sockets[0].getsockname()[1]  # pylint: disable=protected-access
    return self.port

  async def stop(self) -> None:
    if self._runner is not None:
      await self._runner.cleanup()
      self._runner = None


class BackgroundServer:
  """A `Server` on its own event loop in a daemon thread (tests, notebooks): `with ... as s: s.url`."""

  def __init__(self, recommender, config: ServeConfig, **kwargs):
    self.server = Server(recommender, config, **kwargs)
    self._loop = asyncio.new_event_loop()
    self._thread = threading.Thread(target=self._loop.run_forever, name="t2t-serve", daemon=True)

  @property
  def url(self) -> str:
    return f"http://{self.server.config.host}:{self.server.port}"

  def __enter__(self) -> "BackgroundServer":
    self._thread.start()
    asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(timeout=60)
    return self

  def __exit__(self, *exc) -> None:
    asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout=60)
    self._loop.call_soon_threadsafe(self._loop.stop)
    self._thread.join(timeout=10)


async def _serve_forever(server: Server) -> None:
  port = await server.start()
  print(f"t2t serve: listening on http://{server.config.host}:{port} "
        f"(POST /recommend, GET /health; max_batch={server.config.max_batch}, "
        f"max_wait_ms={server.config.max_wait_ms})", flush=True)
  stop = asyncio.Event()
  loop = asyncio.get_running_loop()
  for sig in (signal.SIGINT, signal.SIGTERM):
    loop.add_signal_handler(sig, stop.set)
  try:
    if server.config.max_uptime_s > 0:
      try:
        await asyncio.wait_for(stop.wait(), server.config.max_uptime_s)
      except asyncio.TimeoutError:
        print(f"t2t serve: --max_uptime_s {server.config.max_uptime_s:g} reached, stopping", flush=True)
    else:
      await stop.wait()
  finally:
    await server.stop()
    print("t2t serve: stopped", flush=True)


def run_from_args(args) -> None:
  """`t2t serve` entry."""
  from t2t_jax import recommend  # pylint: disable=g-import-not-at-top
  cfg = ServeConfig(host=args.host, port=args.port, default_k=args.k, max_k=args.max_k,
                    max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_prompts=args.max_prompts,
                    max_body_bytes=args.max_body_bytes, warmup=not args.no_warmup,
                    max_uptime_s=args.max_uptime_s)
  cfg.validate()
  rec = recommend.Recommender.load(args.model_dir)
  server = Server(rec, cfg, model_dir=os.path.abspath(args.model_dir))
  if cfg.warmup:
    print(f"t2t serve: compiling k={server.default_k} for batches up to {cfg.max_batch} ...", flush=True)
    print(f"t2t serve: warm in {server.warmup():.1f} s", flush=True)
  try:
    asyncio.run(_serve_forever(server))
  except OSError as e:  # port in use, address not available
    raise UserInputError(f"--host {cfg.host} --port {cfg.port}: {e.strerror or e}") from None
  sys.stdout.flush()
