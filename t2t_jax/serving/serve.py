"""`t2t serve`: a small HTTP JSON endpoint over a model dir (aiohttp), with micro-batching.

  POST /recommend  {"prompt": "old classics for slow dancing", "k": 10}
                   {"prompts": ["late night drive", "gym"], "k": 5}          (k optional)
     200 -> {"k": 5, "results": [{"prompt": ..., "tracks": [{"rank", "track_id", "artist", "title",
                                                             "score"}, ...]}, ...]}
     400 -> {"error": "..."} for bad JSON (also nested too deeply, or a number too long to convert),
            an empty prompt, k out of range, too many prompts, an oversized body or unknown fields;
     401 (API key set, missing or wrong), 408 (body not received within --body_timeout_s),
     500 {"error": "internal error ..."} (the traceback goes to the server log, never to the client),
     503 at the connection limit when every connection is computing.  Requests aiohttp rejects
     before any handler runs (a bad method, a garbage request line, oversized headers) get a JSON
     400 too (`_JsonErrorProtocol`).
  GET /health      {"status": "ok", "num_tracks", "k_buckets", "compiled", "warmup_s", "connections",
                    "batches", "prompts", "requests", ...}

No request compiles.  A request for k is computed as top-K for K = the smallest of a few fixed
"k buckets" >= k (`k_ladder`: the model's beam size, then doubling up to --max_k) and sliced to k;
batches are padded to powers of two.  Every (K, padded batch) pair is compiled before the server
listens (`warmup`).  Beam search keeps beam = max(beam_size, K), so for k up to
the beam size the answer is exactly `GenerativeRetriever.recommend(k)`'s (the beam is the same and the top-k
of a top-K pool is the top-k); above it the search is wider than recommend's max(beam_size, k).
Larger K buckets get smaller batches (batch x beam stays within max_batch x the first bucket's
beam), so a request with many prompts at a large k is split into several device calls.  Measured
with tools/bench_serve.py on the shared 2-core CPU VM under load ~20 (quickstart model, beam 12, the
default --max_k 100 / --max_batch 32: buckets 12, 24, 48, 100 with 6 + 5 + 4 + 2 = 17 shapes): warm-up
took 380 s there (one shape alone compiles in 8-16 s at load ~9), and afterwards a k=10 client's
p50 was 353 ms (max 736 ms) while 16 clients sent k = 40..55 (issue 14 measured 169 s before
buckets: each new k compiled on the device worker).  Choose --max_k / --k_buckets to trade start-up
time for coverage.

`MicroBatcher` gathers concurrent requests into one device call (at most `max_batch` prompts, fewer
for large K buckets).  Device calls run one at a time in a worker thread, so the event loop keeps
accepting requests meanwhile; the next batch is everything that queued up during the previous call
plus, while requests are arriving concurrently (the previous batch served more than one), those
arriving within `max_wait_ms`.  A lone request after a lone request is sent at once: measured with
tools/bench_serve.py on the 2-core CPU, always waiting 5 ms raised single-prompt p50 from 3.5 to 16 ms
(a sleeping process on a loaded CPU wakes late), while never waiting halved throughput under 32
clients (95 vs 178 requests/s: smaller batches).

Hostile or unlucky clients (serve_limits.py):
  * at most --max_connections open connections (clipped to the process's file-descriptor limit
    minus a reserve).  At the limit a new connection closes the oldest one that has no request being
    computed (idle keep-alive, headers or body still trickling in: what slow or stuck clients hold),
    so a flood of slow connections cannot lock valid clients out; only when every connection has a
    request in the batcher is the new one answered 503 and closed;
  * a connection with no request in progress is closed after --idle_timeout_s (from the moment it
    opens or its last response: this bounds slow headers too), and a request body must arrive within
    --body_timeout_s (408);
  * server log records (client errors, aiohttp's and asyncio's error records) are limited to
    `log_max_lines` per `log_interval_s`; the rest are counted and reported as one
    "suppressed N log messages" line;
  * optional API key (--api_key_file FILE, else $T2T_API_KEY): every route then needs
    "Authorization: Bearer KEY" or "X-API-Key: KEY" (compared in constant time), else 401.
Deployment stance: binds 127.0.0.1 by default.  There is no TLS: for anything beyond one machine put
a reverse proxy with TLS (and its own limits) in front, and set an API key.
"""

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import hmac
import json
import logging
import os
import resource
import signal
import sys
import threading
import time
from typing import Callable, Sequence

from aiohttp import web, web_protocol

from t2t_jax import storage
from t2t_jax.data import prompts as prompts_lib
from t2t_jax.errors import UserInputError
from t2t_jax.serving import retriever
from t2t_jax.serving.serve_limits import (API_KEY_ENV, FD_RESERVE, ConnectionGate, RateLimitFilter, fd_connection_limit,
                                  is_loopback, load_api_key, reserve_address)

ALLOWED_FIELDS = ("prompt", "prompts", "k")
LINGER_S = 2.0        # after an error reply, unread body bytes are drained (then closed) this long
LOG_LOGGERS = ("aiohttp.server", "aiohttp.web", "aiohttp.access", "asyncio")  # + this module's, via _log

logger = logging.getLogger(__name__)


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
  k_buckets: tuple = ()        # top-K sizes computed; (): automatic (`k_ladder`)
  max_connections: int = 256
  idle_timeout_s: float = 15.0  # no request in progress for this long: the connection is closed
  body_timeout_s: float = 10.0  # a request body must arrive within this (408)
  api_key: str | None = dataclasses.field(default=None, repr=False)
  log_max_lines: int = 20       # server log records per log_interval_s; the rest are counted
  log_interval_s: float = 10.0

  def validate(self) -> None:
    for name in ("default_k", "max_k", "max_batch", "max_prompts", "max_body_bytes", "max_connections",
                 "log_max_lines"):
      if getattr(self, name) < 1:
        flag = "-k/--k" if name == "default_k" else f"--{name}"  # `t2t serve`'s flag for the field
        raise UserInputError(f"{flag} must be >= 1, got {getattr(self, name)}")
    if self.max_prompts > self.max_batch:
      raise UserInputError(f"--max_prompts ({self.max_prompts}) must be <= --max_batch ({self.max_batch})")
    if self.max_wait_ms < 0:
      raise UserInputError(f"--max_wait_ms must be >= 0, got {self.max_wait_ms}")
    for name in ("idle_timeout_s", "body_timeout_s", "log_interval_s"):
      if not getattr(self, name) > 0:
        raise UserInputError(f"--{name} must be > 0, got {getattr(self, name)}")
    if not 0 <= self.port <= 65535:
      raise UserInputError(f"--port must be in [0, 65535], got {self.port}")
    if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in self.k_buckets):
      raise UserInputError(f"--k_buckets must be positive integers, got {list(self.k_buckets)}")
    if self.api_key is not None and not self.api_key:
      raise UserInputError("the API key is empty")


# ---- k buckets ----------------------------------------------------------------------------------

def k_ladder(smallest: int, max_k: int) -> tuple:
  """Top-K sizes to compile: `smallest`, then doubling; a last step short of max_k merges into it.

  k_ladder(12, 100) == (12, 24, 48, 100): a request for k is answered from the smallest K >= k, so
  at most ~2.5x the needed top-K (and beam, above the beam size) is computed.
  """
  out = [min(smallest, max_k)]
  while out[-1] < max_k:
    nxt = 2 * out[-1]
    out.append(max_k if nxt * 1.25 >= max_k else nxt)
  return tuple(out)


def _pow2_ceil(n: int) -> int:
  return 1 << (n - 1).bit_length()


@dataclasses.dataclass(frozen=True)
class BucketPlan:
  """Which top-K sizes are computed and how many prompts one device call takes for each."""
  k_buckets: tuple        # ascending; the last is max_k
  batch_caps: dict        # K -> most prompts per device call

  def bucket(self, k: int) -> int:
    return next(b for b in self.k_buckets if b >= k)

  def batch_sizes(self, k_bucket: int) -> tuple:
    """Padded batch sizes compiled for a bucket: powers of two up to its cap's."""
    top = _pow2_ceil(self.batch_caps[k_bucket])
    return tuple(1 << i for i in range(top.bit_length()))

  def as_dict(self) -> dict:
    return {str(k): list(self.batch_sizes(k)) for k in self.k_buckets}


def plan_buckets(*, beam_size: int, default_k: int, max_k: int, max_batch: int,
                 k_buckets: Sequence[int] = ()) -> BucketPlan:
  """The k buckets (`k_ladder` from max(beam_size, default_k) unless given) and their batch caps.

  The first bucket takes `max_batch` prompts per call; a bucket whose beam (max(beam_size, K), the
  GenerativeRetriever's rule) is wider takes max_batch x first beam / its beam, rounded down to a power of
  two (at least 1): a device call never holds more beams than the first bucket's full batch.
  Measured (quickstart model, 2-core CPU): per prompt, K=48 costs 16 ms at batch 1 and 24 ms at
  batches 8 and 32, so larger batches at a large K buy nothing there.
  """
  if k_buckets:
    buckets = tuple(sorted({min(int(k), max_k) for k in k_buckets}))
    if buckets[-1] < max_k:
      raise UserInputError(f"--k_buckets {','.join(map(str, buckets))}: the largest must be >= --max_k "
                           f"({max_k})")
  else:
    buckets = k_ladder(max(beam_size, default_k), max_k)
  beam0 = max(beam_size, buckets[0])
  caps = {}
  for k in buckets:
    beam = max(beam_size, k)
    fits = max(max_batch * beam0 // beam, 1)  # prompts whose beams fit in the first bucket's full call
    caps[k] = max_batch if beam <= beam0 else min(max_batch, 1 << (fits.bit_length() - 1))
  return BucketPlan(buckets, caps)


# ---- micro-batching -----------------------------------------------------------------------------

@dataclasses.dataclass
class _Item:
  prompts: list
  k: int
  future: asyncio.Future


class MicroBatcher:
  """Gathers concurrent requests into batched calls of `run_batch(prompts, k) -> list[result]`.

  A batch takes the requests already queued and, when the previous batch served several requests
  (concurrent load), those arriving within `max_wait_ms`; requests with the same k share a call of at
  most `limits.get(k, max_batch)` prompts (a request is never split).  Calls run one at a time in a
  worker thread.
  """

  def __init__(self, run_batch: Callable[[list, int], list], *, max_batch: int, max_wait_ms: float,
               limits: dict | None = None):
    self.run_batch = run_batch
    self.max_batch = max_batch
    self.limits = dict(limits or {})
    self.max_wait_s = max_wait_ms / 1000.0
    self.stats = {"batches": 0, "prompts": 0, "requests": 0, "largest_batch": 0, "retried_requests": 0}
    self._queue: asyncio.Queue | None = None
    self._task: asyncio.Task | None = None
    self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="t2t-device")
    self._concurrent = False  # did the previous batch serve more than one request?

  def limit(self, k: int) -> int:
    return self.limits.get(k, self.max_batch)

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
    assert 1 <= len(prompts) <= self.limit(k), (len(prompts), k)
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
        for item in group:  # fill up to the limit; the rest waits for the next round
          if size + len(item.prompts) > self.limit(k):
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


def _error(status: int, message: str, **kwargs) -> web.Response:
  return web.json_response({"error": message}, status=status, **kwargs)


class _JsonErrorProtocol(web_protocol.RequestHandler):
  """aiohttp's connection protocol, answering the requests it rejects itself with JSON.

  A request aiohttp cannot parse (a bad method, a garbage request line, headers over its limits)
  never reaches the app or its middleware: `RequestHandler.handle_error` answers it with a text/plain
  400, and aiohttp has no setting for that (aio-libs/aiohttp#3287, #9882).  This override keeps its
  logging and closing of the connection and answers {"error": ...} like every other error.
  """
  __slots__ = ()

  def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                   message: str | None = None) -> web.StreamResponse:
    super().handle_error(request, status, exc, message)  # logs; raises if a response was already sent
    lines = (message or "").strip().splitlines()  # aiohttp's first line says what; the rest quotes bytes
    detail = f": {lines[0].rstrip(' :')[:200]}" if lines else ""
    resp = _error(status, "internal error (details are in the server log)" if status >= 500
                  else f"bad HTTP request ({status}{detail})")
    resp.force_close()
    return resp


def _json_errors(protocol: web_protocol.RequestHandler) -> web_protocol.RequestHandler:
  """`protocol` (made by aiohttp's server factory, which takes no protocol class) as a
  `_JsonErrorProtocol`: the subclass adds no state, so switching the class is safe."""
  protocol.__class__ = _JsonErrorProtocol
  return protocol


def _gone(request) -> bool:
  """Whether the request's connection is closed or closing (the client left, or the gate closed it)."""
  return request.transport is None or request.transport.is_closing()


def _short(value, n: int = 40) -> str:
  """repr for error messages: containers by type (no deep repr), long values clipped."""
  if isinstance(value, (list, dict)):
    return f"a JSON {'array' if isinstance(value, list) else 'object'}"
  text = repr(value)
  return text if len(text) <= n else f"{text[:n]}... ({len(text)} characters)"


class Server:
  """The aiohttp app around a `GenerativeRetriever` (anything with `recommend(prompts, k)` and `id_table`)."""

  def __init__(self, recommender, config: ServeConfig, *, model_dir: str | None = None):
    config.validate()
    self.rec = recommender
    self.config = config
    self.model_dir = model_dir
    self.num_tracks = int(recommender.id_table.num_tracks)
    self.max_k = min(config.max_k, self.num_tracks)
    self.default_k = min(config.default_k, self.max_k)
    self.plan = plan_buckets(beam_size=int(getattr(recommender, "beam_size", 1)), default_k=self.default_k,
                             max_k=self.max_k, max_batch=config.max_batch, k_buckets=config.k_buckets)
    self.batcher = MicroBatcher(self._run_batch, max_batch=config.max_batch,
                                max_wait_ms=config.max_wait_ms, limits=self.plan.batch_caps)
    self.max_connections = fd_connection_limit(config.max_connections)
    self.compiled: dict = {}          # K -> padded batch sizes run so far (warm-up included)
    self.compiled_on_request = 0      # shapes first run by a request (0 after a full warm-up)
    self.warmup_s: float | None = None
    self.started = time.time()
    self.port: int | None = None
    self.log_filter = RateLimitFilter(config.log_max_lines, config.log_interval_s)
    self._api_key = config.api_key.encode("utf-8") if config.api_key else None
    self._compiled_lock = threading.Lock()
    self._runner: web.AppRunner | None = None
    self._listener: asyncio.AbstractServer | None = None
    self._gate: ConnectionGate | None = None
    self._housekeeper: asyncio.Task | None = None

  def _note_shape(self, k_bucket: int, batch: int, *, on_request: bool) -> None:
    with self._compiled_lock:
      sizes = self.compiled.setdefault(k_bucket, set())
      if batch not in sizes:
        sizes.add(batch)
        self.compiled_on_request += int(on_request)

  def _run_batch(self, prompts: list, k_bucket: int) -> list:
    self._note_shape(k_bucket, _pow2_ceil(len(prompts)), on_request=True)
    return [[r.as_dict() for r in recs] for recs in self.rec.recommend(prompts, k=k_bucket)]

  def warmup(self) -> float:
    """Compiles every (k bucket, padded batch) pair; returns seconds.

    One after another: compiling the buckets in 2 threads was no faster on the shared 2-core VM (tiny
    model, 6 shapes: 98 and 123 s in one thread, 118 and 144 s in two, load 11-15).
    """
    t = time.time()
    for k_bucket in self.plan.k_buckets:
      for b in self.plan.batch_sizes(k_bucket):
        self.rec.recommend(["warm up"] * b, k=k_bucket)
        self._note_shape(k_bucket, b, on_request=False)
    self.warmup_s = round(time.time() - t, 2)
    return self.warmup_s

  # ---- HTTP ------------------------------------------------------------------------------------

  @web.middleware
  async def _guard(self, request, handler):
    """API key, JSON errors for every failure, connection bookkeeping, rate-limited error log."""
    conn = self._gate.connection(request.transport) if self._gate is not None else None
    if conn is not None:
      conn.begin_request()
    try:
      resp = await self._dispatch(request, handler)
    finally:
      if conn is not None:
        conn.end_request()
    if 400 <= resp.status < 500 and not _gone(request):
      self._log(logging.WARNING, "%d %s %s from %s: %s", resp.status, request.method, request.path[:100],
                request.remote, (resp.text or "")[:300])
    return resp

  async def _dispatch(self, request, handler) -> web.StreamResponse:
    if self._api_key is not None and not self._authorized(request):
      return _error(401, "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                    headers={"WWW-Authenticate": "Bearer"})
    try:
      return await handler(request)
    except web.HTTPException as e:
      if e.status < 400:
        raise
      return _error(e.status, e.reason)
    except Exception:  # pylint: disable=broad-except
      if _gone(request):  # evicted, timed out or left while its body was read: nobody to answer
        return web.Response(status=400)
      self._log(logging.ERROR, "internal error on %s %s", request.method, request.path[:100], exc_info=True)
      return _error(500, "internal error (details are in the server log)")

  def _log(self, level: int, msg: str, *args, **kwargs) -> None:
    """This server's log lines, within its rate limit (aiohttp's and asyncio's get the same filter)."""
    if self.log_filter.allow():
      logger.log(level, msg, *args, **kwargs)

  def _authorized(self, request) -> bool:
    given = request.headers.get("X-API-Key")
    if given is None:
      scheme, _, token = request.headers.get("Authorization", "").partition(" ")
      if scheme.lower() != "bearer":
        return False
      given = token.strip()
    return hmac.compare_digest(given.encode("utf-8", "replace"), self._api_key)

  def app(self) -> web.Application:
    app = web.Application(middlewares=[self._guard], client_max_size=self.config.max_body_bytes)
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
    with self._compiled_lock:
      compiled = {str(k): sorted(v) for k, v in sorted(self.compiled.items())}
    gate = self._gate
    return web.json_response({
        "status": "ok", "model_dir": self.model_dir, "num_tracks": self.num_tracks,
        "default_k": self.default_k, "max_k": self.max_k, "max_batch": self.config.max_batch,
        "k_buckets": {str(k): c for k, c in self.plan.batch_caps.items()}, "compiled": compiled,
        "warmup_s": self.warmup_s, "compiled_on_request": self.compiled_on_request,
        "connections": {"open": len(gate.open) if gate else 0, "limit": self.max_connections,
                        **(gate.stats if gate else {})},
        "uptime_s": round(time.time() - self.started, 1), **self.batcher.stats})

  async def _read_body(self, request) -> bytes:
    """The body, within max_body_bytes (UserInputError) and body_timeout_s (asyncio.TimeoutError)."""
    limit = self.config.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
      raise UserInputError(f"request body is {request.content_length} bytes; the limit is {limit}")
    chunks, size = [], 0
    async with asyncio.timeout(self.config.body_timeout_s):
      while True:
        chunk = await request.content.read(64 * 1024)
        if not chunk:
          return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
          raise UserInputError(f"request body is over {limit} bytes")

  def parse_request(self, body: bytes) -> tuple[list, int]:
    """(normalised prompts, k) from a request body; UserInputError naming the bad field."""
    try:
      req = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
      raise UserInputError("request body is not UTF-8") from None
    except json.JSONDecodeError as e:
      raise UserInputError(f"bad JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
      raise UserInputError("bad JSON: nested too deeply (requests are at most 2 levels deep)") from None
    except ValueError:  # an integer over Python's int_max_str_digits (4300) digits
      raise UserInputError(f"bad JSON: a number has more than {sys.get_int_max_str_digits()} digits") from None
    if not isinstance(req, dict):
      raise UserInputError(f"request must be a JSON object, got {type(req).__name__}")
    unknown = sorted(set(req) - set(ALLOWED_FIELDS))
    if unknown:
      names = repr(unknown) if len(repr(unknown)) <= 200 else f"{repr(unknown)[:200]}..."
      raise UserInputError(f"unknown field(s) {names}; allowed: {list(ALLOWED_FIELDS)}")
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
      raise UserInputError(f'"k" must be an integer in [1, {self.max_k}], got {_short(k)}')
    return prompts, k

  async def handle_recommend(self, request) -> web.Response:
    try:
      prompts, k = self.parse_request(await self._read_body(request))
    except UserInputError as e:
      return _error(400, str(e))
    except asyncio.TimeoutError:
      resp = _error(408, f"request body not received within {self.config.body_timeout_s:g} s")
      resp.force_close()
      return resp
    k_bucket = self.plan.bucket(k)
    cap = self.plan.batch_caps[k_bucket]
    conn = self._gate.connection(request.transport) if self._gate is not None else None
    with conn.compute() if conn is not None else contextlib.nullcontext():
      try:  # a request over the bucket's batch cap goes as several device calls
        parts = await asyncio.gather(*[self.batcher.submit(prompts[i:i + cap], k_bucket)
                                       for i in range(0, len(prompts), cap)])
      except UserInputError as e:  # found while tokenising (e.g. bad "<id_l_c>" markup)
        return _error(400, str(e))
    results = [tracks[:k] for part in parts for tracks in part]
    return web.json_response(
        {"k": k, "results": [{"prompt": p, "tracks": t} for p, t in zip(prompts, results)]},
        dumps=lambda o: json.dumps(o, ensure_ascii=False))

  # ---- lifecycle -------------------------------------------------------------------------------

  async def _housekeeping(self) -> None:
    """Closes idle connections (every <= 1 s) and reports suppressed log lines (every interval)."""
    period = min(1.0, self.config.idle_timeout_s / 4)
    next_flush = time.monotonic() + self.config.log_interval_s
    while True:
      await asyncio.sleep(period)
      try:
        self._gate.sweep()
        if time.monotonic() >= next_flush:
          self.log_filter.flush()
          next_flush = time.monotonic() + self.config.log_interval_s
      except Exception:  # pylint: disable=broad-except
        self._log(logging.ERROR, "housekeeping failed", exc_info=True)  # keep sweeping

  async def start(self) -> int:
    """Starts listening; returns the bound port."""
    for name in LOG_LOGGERS:
      logging.getLogger(name).addFilter(self.log_filter)
    # aiohttp's keep-alive timeout only backs up the gate's idle sweep (which counts what it closes).
    self._runner = web.AppRunner(self.app(), access_log=None, keepalive_timeout=2 * self.config.idle_timeout_s,
                                 lingering_time=min(LINGER_S, self.config.body_timeout_s))
    await self._runner.setup()
    server = self._runner.server
    self._gate = ConnectionGate(lambda: _json_errors(server()), limit=self.max_connections,
                                idle_timeout_s=self.config.idle_timeout_s, log=self._log)
    loop = asyncio.get_running_loop()
    try:
      self._listener = await loop.create_server(self._gate, self.config.host, self.config.port)
    except BaseException:
      await self.stop()
      raise
    self.port = self._listener.sockets[0].getsockname()[1]
    self._housekeeper = loop.create_task(self._housekeeping())
    return self.port

  async def stop(self) -> None:
    if self._housekeeper is not None:
      self._housekeeper.cancel()
      with contextlib.suppress(asyncio.CancelledError):
        await self._housekeeper
      self._housekeeper = None
    if self._listener is not None:
      self._listener.close()
    if self._runner is not None:
      await self._runner.cleanup()
      self._runner = None
    if self._listener is not None:
      with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(self._listener.wait_closed(), 5)
      self._listener = None
    self.log_filter.flush()
    for name in LOG_LOGGERS:
      logging.getLogger(name).removeFilter(self.log_filter)


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
  cfg = server.config
  print(f"t2t serve: listening on http://{cfg.host}:{port} "
        f"(POST /recommend, GET /health; max_batch={cfg.max_batch}, max_wait_ms={cfg.max_wait_ms}, "
        f"max_connections={server.max_connections}, api_key={'on' if cfg.api_key else 'off'})", flush=True)
  stop = asyncio.Event()
  loop = asyncio.get_running_loop()
  for sig in (signal.SIGINT, signal.SIGTERM):
    loop.add_signal_handler(sig, stop.set)
  try:
    if cfg.max_uptime_s > 0:
      try:
        await asyncio.wait_for(stop.wait(), cfg.max_uptime_s)
      except asyncio.TimeoutError:
        print(f"t2t serve: --max_uptime_s {cfg.max_uptime_s:g} reached, stopping", flush=True)
    else:
      await stop.wait()
  finally:
    await server.stop()
    print("t2t serve: stopped", flush=True)


def parse_k_buckets(text: str | None) -> tuple:
  """--k_buckets "10,20,50,100" -> (10, 20, 50, 100); "" or "auto" -> () (automatic)."""
  if not text or text.strip() == "auto":
    return ()
  try:
    return tuple(int(x) for x in text.split(","))
  except ValueError:
    raise UserInputError(f"--k_buckets {text!r}: expected comma-separated integers, e.g. 10,20,50,100") from None


def config_from_args(args) -> ServeConfig:
  cfg = ServeConfig(host=args.host, port=args.port, default_k=args.k, max_k=args.max_k,
                    max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_prompts=args.max_prompts,
                    max_body_bytes=args.max_body_bytes, warmup=not args.no_warmup,
                    max_uptime_s=args.max_uptime_s, k_buckets=parse_k_buckets(args.k_buckets),
                    max_connections=args.max_connections, idle_timeout_s=args.idle_timeout_s,
                    body_timeout_s=args.body_timeout_s, api_key=load_api_key(args.api_key_file))
  cfg.validate()
  return cfg


def run_from_args(args) -> None:
  """`t2t serve` entry."""
  cfg = config_from_args(args)
  logging.basicConfig(level=logging.WARNING, format="%(asctime)s t2t serve %(levelname)s %(name)s: %(message)s")
  held = reserve_address(cfg.host, cfg.port)  # a port in use fails now, not after loading and warm-up
  try:
    rec = retriever.GenerativeRetriever.from_model_dir(args.model_dir,
                                     verify=False if getattr(args, "no_verify", False) else None)
    server = Server(rec, cfg, model_dir=storage.abspath(args.model_dir))
    if server.max_connections < cfg.max_connections:
      print(f"t2t serve: --max_connections lowered to {server.max_connections} (open-file limit "
            f"{resource.getrlimit(resource.RLIMIT_NOFILE)[0]} minus {FD_RESERVE})", flush=True)
    if not is_loopback(cfg.host) and not cfg.api_key:
      print(f"t2t serve: warning: --host {cfg.host} without an API key: anyone who can reach the port can "
            f"use it (set --api_key_file or ${API_KEY_ENV}; put a TLS reverse proxy in front)", flush=True)
    if cfg.warmup:
      shapes = sum(len(v) for v in server.plan.as_dict().values())
      print(f"t2t serve: compiling {shapes} shapes, k bucket: padded batch sizes {server.plan.as_dict()} ...",
            flush=True)
      print(f"t2t serve: warm in {server.warmup():.1f} s", flush=True)
  finally:
    for sock in held:
      sock.close()
  try:
    asyncio.run(_serve_forever(server))
  except OSError as e:  # port in use, address not available
    raise UserInputError(f"--host {cfg.host} --port {cfg.port}: {e.strerror or e}") from None
  sys.stdout.flush()
