"""Limits for `t2t serve` under hostile or unlucky clients: a connection cap with eviction, an idle
timeout, rate-limited logging, the API key and the bind-address checks.

aiohttp's server has neither a connection limit nor (before 3.14) a timeout for a connection that
never sends a request, so `ConnectionGate` keeps them around aiohttp's public protocol factory
(`AppRunner.server`), using only asyncio's Protocol interface.  See serve.py for how they are used.
"""

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import resource
import socket
import threading
import time
from typing import Callable

from t2t_jax.errors import UserInputError

API_KEY_ENV = "T2T_API_KEY"
FD_RESERVE = 64  # file descriptors kept free for model files, threads, logs

logger = logging.getLogger("t2t_jax.serving.serve")


class RateLimitFilter(logging.Filter):
  """Passes at most `max_records` records per `interval_s`; counts the rest until `flush`.

  A flood of bad requests or broken connections must not fill the disk (an aiohttp error record
  carries a traceback: 130 MB of log in a minute under 20,000 slow connections before this).
  """

  def __init__(self, max_records: int, interval_s: float, clock: Callable[[], float] = time.monotonic):
    super().__init__()
    self.max_records, self.interval_s, self.clock = max_records, interval_s, clock
    self.suppressed = 0
    self._lock = threading.Lock()
    self._window_start = clock()
    self._passed = 0

  def filter(self, record: logging.LogRecord) -> bool:
    return getattr(record, "t2t_summary", False) or self.allow()

  def allow(self) -> bool:
    """Whether one more record fits in the current window (counted as suppressed if not)."""
    with self._lock:
      now = self.clock()
      if now - self._window_start >= self.interval_s:
        self._window_start, self._passed = now, 0
      if self._passed < self.max_records:
        self._passed += 1
        return True
      self.suppressed += 1
      return False

  def flush(self) -> int:
    """Logs one line for the records suppressed since the last flush; returns their number."""
    with self._lock:
      n, self.suppressed = self.suppressed, 0
    if n:
      logger.warning("suppressed %d log message(s) (limit: %d per %g s)", n, self.max_records,
                     self.interval_s, extra={"t2t_summary": True})
    return n


class Connection(asyncio.Protocol):
  """One client connection: forwards the asyncio protocol calls to aiohttp's handler and keeps what
  `ConnectionGate` needs (age order, idle deadline, requests in progress, requests computing)."""

  def __init__(self, gate: "ConnectionGate", inner: asyncio.Protocol):
    self.gate, self.inner = gate, inner
    self.transport = None
    self.doomed = False  # evicted before asyncio connected it (a burst of accepts): abort on arrival
    self.started = False
    self.requests = 0    # requests in a handler (body being read, or computing)
    self.computing = 0   # requests queued in the batcher or on the device: never evicted
    self.deadline = gate.clock() + gate.idle_timeout_s

  def connection_made(self, transport) -> None:
    self.transport = transport
    if self.doomed:
      transport.abort()
      return
    self.gate.by_transport[transport] = self
    self.started = True
    self.inner.connection_made(transport)

  def connection_lost(self, exc) -> None:
    self.gate.forget(self)
    if self.started:
      self.inner.connection_lost(exc)

  def data_received(self, data: bytes) -> None:
    if self.started:
      self.inner.data_received(data)

  def eof_received(self):
    return self.inner.eof_received() if self.started else None

  def pause_writing(self) -> None:
    if self.started:
      self.inner.pause_writing()

  def resume_writing(self) -> None:
    if self.started:
      self.inner.resume_writing()

  def begin_request(self) -> None:
    self.requests += 1

  def end_request(self) -> None:
    self.requests -= 1
    if not self.requests:
      self.deadline = self.gate.clock() + self.gate.idle_timeout_s

  @contextlib.contextmanager
  def compute(self):
    self.computing += 1
    try:
      yield
    finally:
      self.computing -= 1


_REFUSED_BODY = b'{"error": "server at its connection limit; retry later"}'
_REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(_REFUSED_BODY)).encode() + b"\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
            + _REFUSED_BODY)


class _Refused(asyncio.Protocol):
  def connection_made(self, transport) -> None:
    transport.write(_REFUSED)
    transport.close()


class ConnectionGate:
  """asyncio protocol factory in front of aiohttp's: a connection cap and an idle timeout.

  At the limit a new connection closes the oldest one with no request computing (eviction: slow or
  idle clients cannot lock valid ones out); if every connection is computing, it gets a 503.
  """

  def __init__(self, factory: Callable[[], asyncio.Protocol], *, limit: int, idle_timeout_s: float,
               log: Callable[..., None] | None = None, clock: Callable[[], float] = time.monotonic):
    self.factory, self.limit, self.idle_timeout_s, self.clock = factory, limit, idle_timeout_s, clock
    self.log = log or logger.log
    self.open: dict = {}  # Connection -> None, oldest first
    self.by_transport: dict = {}
    self.stats = {"evicted": 0, "refused": 0, "timed_out": 0}

  def __call__(self) -> asyncio.Protocol:
    if len(self.open) >= self.limit and not self._evict_one():
      self.stats["refused"] += 1
      self.log(logging.WARNING, "connection limit %d reached with every connection computing: refused one "
               "(503)", self.limit)
      return _Refused()
    conn = Connection(self, self.factory())
    self.open[conn] = None
    return conn

  def _evict_one(self) -> bool:
    for conn in self.open:
      if not conn.computing:
        peer = conn.transport.get_extra_info("peername") if conn.transport is not None else "not yet connected"
        self._close(conn, "evicted")
        self.log(logging.WARNING, "connection limit %d reached: closed the oldest idle or unfinished "
                 "connection (%s)", self.limit, peer)
        return True
    return False

  def _close(self, conn: Connection, why: str) -> None:
    self.stats[why] += 1
    self.forget(conn)
    if conn.transport is None:
      conn.doomed = True
    else:
      conn.transport.abort()  # frees the socket now (close() would wait for a client that never reads)

  def forget(self, conn: Connection) -> None:
    self.open.pop(conn, None)
    self.by_transport.pop(conn.transport, None)

  def connection(self, transport) -> Connection | None:
    return self.by_transport.get(transport)

  def sweep(self) -> int:
    """Closes the connections that have had no request in progress for idle_timeout_s."""
    now = self.clock()
    stale = [c for c in self.open if not c.requests and c.deadline <= now and c.started]
    for conn in stale:
      self._close(conn, "timed_out")
    return len(stale)


def load_api_key(path: str | None, environ=None) -> str | None:
  """The API key from --api_key_file (stripped), else $T2T_API_KEY, else None (no key)."""
  if path:
    try:
      with open(path, encoding="utf-8") as f:
        key = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
      raise UserInputError(f"--api_key_file {path}: {e}") from None
    if not key:
      raise UserInputError(f"--api_key_file {path}: the file is empty")
    return key
  return (os.environ if environ is None else environ).get(API_KEY_ENV, "").strip() or None


def is_loopback(host: str) -> bool:
  if host == "localhost":
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False


def fd_connection_limit(requested: int) -> int:
  """`requested`, lowered to the open-file limit minus a reserve (connections must not exhaust fds)."""
  soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
  if soft == resource.RLIM_INFINITY:
    return requested
  return max(1, min(requested, soft - FD_RESERVE))


def reserve_address(host: str, port: int) -> list:
  """Binds, without listening, every address `host`:`port` resolves to, as asyncio's create_server
  will (SO_REUSEADDR, IPv6 only on IPv6 sockets), so a port in use fails at once with one line, not
  after the warm-up.  Returns the bound sockets: close them just before the server binds the port.
  Port 0 (any free port) reserves nothing."""
  if port == 0:
    return []
  try:
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
  except socket.gaierror as e:
    raise UserInputError(f"--host {host}: {e.strerror or e}") from None
  held = []
  try:
    for family, kind, proto, _, address in infos:
      sock = socket.socket(family, kind, proto)
      held.append(sock)
      sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
      if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
      try:
        sock.bind(address)
      except OSError as e:
        if family == socket.AF_INET6 and e.errno == errno.EADDRNOTAVAIL:
          continue  # IPv6 switched off: asyncio skips such an address too
        raise
  except OSError as e:
    for sock in held:
      sock.close()
    raise UserInputError(f"--host {host} --port {port}: {e.strerror or e}") from None
  return held
