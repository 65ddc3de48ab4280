"""t2t_jax/serving/serve_limits.py without a server: the connection gate (cap, eviction, idle sweep, 503),
the log rate limit, the API key and the file-descriptor cap.  Real sockets and HTTP clients against a
running server are in test_serve.py."""

import json
import logging
import resource
import socket

import pytest

from t2t_jax.serving import serve_limits
from t2t_jax.errors import UserInputError


class FakeTransport:
  def __init__(self, name: str):
    self.name, self.sent, self.aborted, self.closed = name, [], False, False

  def get_extra_info(self, key):
    return (self.name, 0) if key == "peername" else None

  def write(self, data):
    self.sent.append(data)

  def close(self):
    self.closed = True

  def abort(self):
    self.aborted = True


class FakeProtocol:
  """What aiohttp's RequestHandler gets called with, recorded."""

  def __init__(self):
    self.calls = []

  def connection_made(self, transport):
    self.calls.append(("made", transport.name))

  def connection_lost(self, exc):
    self.calls.append(("lost", exc))

  def data_received(self, data):
    self.calls.append(("data", data))

  def eof_received(self):
    self.calls.append(("eof",))


def make_gate(limit: int, now: list):
  inner = []

  def factory():
    inner.append(FakeProtocol())
    return inner[-1]

  return serve_limits.ConnectionGate(factory, limit=limit, idle_timeout_s=5.0, clock=lambda: now[0]), inner


def test_gate_forwards_the_protocol_and_evicts_the_oldest_connection_not_computing():
  now = [0.0]
  gate, inner = make_gate(2, now)
  a, b = gate(), gate()
  ta, tb = FakeTransport("a"), FakeTransport("b")
  a.connection_made(ta)
  b.connection_made(tb)
  a.data_received(b"GET /")
  assert inner[0].calls == [("made", "a"), ("data", b"GET /")]
  assert gate.connection(tb) is b and len(gate.open) == 2
  with a.compute():  # a's request is in the batcher: b, though younger, is the one closed
    c = gate()
    assert tb.aborted and not ta.aborted and gate.stats == {"evicted": 1, "refused": 0, "timed_out": 0}
  b.connection_lost(None)  # asyncio reports the abort
  assert inner[1].calls[-1] == ("lost", None) and list(gate.open) == [a, c]
  # A connection evicted before asyncio connected it (a burst of accepts) is aborted on arrival and
  # never reaches aiohttp.
  d = gate()
  assert gate.stats["evicted"] == 2 and ta.aborted and list(gate.open) == [c, d]
  e = gate()  # evicts c, which has no transport yet
  tc = FakeTransport("c")
  c.connection_made(tc)
  c.data_received(b"late")
  c.connection_lost(None)
  assert tc.aborted and inner[2].calls == [] and list(gate.open) == [d, e]


def test_gate_refuses_with_503_only_when_every_connection_is_computing():
  gate, _ = make_gate(1, [0.0])
  busy = gate()
  busy.connection_made(FakeTransport("busy"))
  with busy.compute():
    refused = gate()
    t = FakeTransport("new")
    refused.connection_made(t)
  head, _, body = t.sent[0].partition(b"\r\n\r\n")
  assert head.startswith(b"HTTP/1.1 503 ") and b"Connection: close" in head and t.closed
  assert json.loads(body) == {"error": "server at its connection limit; retry later"}
  assert gate.stats["refused"] == 1 and list(gate.open) == [busy]


def test_gate_sweep_closes_connections_idle_past_the_timeout():
  now = [0.0]
  gate, _ = make_gate(10, now)
  conns = [gate() for _ in range(3)]
  ts = [FakeTransport(str(i)) for i in range(3)]
  for c, t in zip(conns, ts):
    c.connection_made(t)
  conns[1].begin_request()  # reading its body: the body timeout applies, not the idle one
  now[0] = 4.0
  conns[2].begin_request()
  conns[2].end_request()  # answered at t=4: idle until 9
  assert gate.sweep() == 0
  now[0] = 5.0
  assert gate.sweep() == 1 and ts[0].aborted and not ts[1].aborted and not ts[2].aborted
  now[0] = 9.0
  assert gate.sweep() == 1 and ts[2].aborted and gate.stats["timed_out"] == 2


def test_rate_limit_filter_counts_and_reports_suppressed_records(caplog):
  now = [0.0]
  f = serve_limits.RateLimitFilter(3, 10.0, clock=lambda: now[0])
  records = [logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "m%d", (i,), None) for i in range(8)]
  assert [f.filter(r) for r in records[:5]] == [True, True, True, False, False]
  now[0] = 10.0  # a new window
  assert [f.filter(r) for r in records[5:]] == [True, True, True]
  assert not f.allow()  # the server's own lines share the budget
  with caplog.at_level(logging.WARNING, logger="t2t_jax.serving.serve"):
    assert f.flush() == 3 and f.flush() == 0
  assert [r.getMessage() for r in caplog.records] == ["suppressed 3 log message(s) (limit: 3 per 10 s)"]


def test_load_api_key(tmp_path, monkeypatch):
  path = tmp_path / "key"
  path.write_text(" s3cret\n", encoding="utf-8")
  monkeypatch.setenv(serve_limits.API_KEY_ENV, "from-env")
  assert serve_limits.load_api_key(str(path)) == "s3cret"  # the file wins
  assert serve_limits.load_api_key(None) == "from-env"
  monkeypatch.setenv(serve_limits.API_KEY_ENV, "  ")
  assert serve_limits.load_api_key(None) is None
  monkeypatch.delenv(serve_limits.API_KEY_ENV)
  assert serve_limits.load_api_key(None) is None
  path.write_text("\n", encoding="utf-8")
  with pytest.raises(UserInputError, match="the file is empty"):
    serve_limits.load_api_key(str(path))
  with pytest.raises(UserInputError, match="--api_key_file .*nope"):
    serve_limits.load_api_key(str(tmp_path / "nope"))


def test_bind_address_and_file_descriptor_checks():
  assert [serve_limits.is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "10.0.0.1",
                                                 "example.org")] == [True, True, True, False, False, False]
  soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
  assert serve_limits.fd_connection_limit(10) == 10
  if soft != resource.RLIM_INFINITY:
    assert serve_limits.fd_connection_limit(10 ** 9) == soft - serve_limits.FD_RESERVE


def test_reserve_address_fails_at_once_on_a_busy_port():
  """Issue 23: a busy --port was reported only after the warm-up; it is now bound first."""
  assert serve_limits.reserve_address("127.0.0.1", 0) == []  # any free port: nothing to reserve
  busy = socket.socket()
  busy.bind(("127.0.0.1", 0))
  busy.listen()
  port = busy.getsockname()[1]
  try:
    with pytest.raises(UserInputError, match=f"^--host 127.0.0.1 --port {port}: Address already in use$"):
      serve_limits.reserve_address("127.0.0.1", port)
  finally:
    busy.close()
  held = serve_limits.reserve_address("127.0.0.1", port)  # free now: bound, not listening
  try:
    assert [s.getsockname() for s in held] == [("127.0.0.1", port)]
  finally:
    for s in held:
      s.close()
