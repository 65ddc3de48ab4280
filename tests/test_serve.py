"""`t2t serve` (t2t_jax/serving/serve.py): a real HTTP server on 127.0.0.1, real HTTP clients (urllib,
aiohttp, raw sockets for slow and stuck clients)."""

import asyncio
import contextlib
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.request

import aiohttp
import jax
import pytest

from t2t_jax import cli
from t2t_jax.serving import serve, retriever
from t2t_jax.errors import UserInputError

from test_recommend import PROMPTS, build_model_dir  # pylint: disable=g-bad-import-order

K = 5
# The module server: default k 5 and beam 6 -> k bucket 6 (batches 1, 2, 4); k 7..20 -> bucket 20,
# whose beam (20) allows 4 * 6 // 20 -> 1 prompt per device call.  4 compiled shapes in all.
BASE = dict(host="127.0.0.1", port=0, default_k=K, max_k=20, max_batch=4, max_prompts=4, max_wait_ms=30.0,
            max_body_bytes=8192, k_buckets=(6, 20))
BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  return build_model_dir(str(tmp_path_factory.mktemp("serve")))


@pytest.fixture(scope="module")
def rec(model_dir):
  return retriever.GenerativeRetriever.from_model_dir(model_dir)


@pytest.fixture(scope="module")
def want(rec):
  """Each prompt's answer alone (batch 1), before the server runs."""
  return {p: [r.as_dict() for r in rec.recommend([p], k=K)[0]] for p in PROMPTS}


@pytest.fixture(scope="module")
def server(rec, want):  # pylint: disable=unused-argument
  s = serve.BackgroundServer(rec, serve.ServeConfig(**BASE))
  s.server.warmup()  # compiles top-6 for padded batches 1, 2, 4 and top-20 for batch 1
  with s:
    yield s


@contextlib.contextmanager
def small_server(rec, **overrides):
  """Another server over the module's (warm) Recommender: its shapes are compiled already."""
  s = serve.BackgroundServer(rec, serve.ServeConfig(**dict(BASE, **overrides)))
  with s:
    yield s


@pytest.fixture
def compiles():
  """Backend compilations (any function) while the test runs."""
  events = []

  def listener(name, secs, **kwargs):  # pylint: disable=unused-argument
    if name == BACKEND_COMPILE:
      events.append(secs)

  jax.monitoring.register_event_duration_secs_listener(listener)
  yield events
  jax.monitoring.unregister_event_duration_listener(listener)


def post(url: str, body, *, raw: bool = False, headers: dict | None = None) -> tuple[int, dict]:
  data = body if raw else json.dumps(body).encode("utf-8")
  req = urllib.request.Request(url + "/recommend", data=data,
                               headers={"Content-Type": "application/json", **(headers or {})})
  try:
    with urllib.request.urlopen(req, timeout=120) as resp:
      return resp.status, json.loads(resp.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def get(url: str, path: str, headers: dict | None = None) -> tuple[int, dict]:
  try:
    with urllib.request.urlopen(urllib.request.Request(url + path, headers=headers or {}), timeout=30) as resp:
      return resp.status, json.loads(resp.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def _same(tracks, expected):
  assert [t["track_id"] for t in tracks] == [t["track_id"] for t in expected]
  assert [t["rank"] for t in tracks] == list(range(1, len(expected) + 1))
  assert [t["score"] for t in tracks] == pytest.approx([t["score"] for t in expected], abs=1e-4)


def test_health(server):
  status, body = get(server.url, "/health")
  assert status == 200 and body["status"] == "ok"
  assert (body["num_tracks"], body["default_k"], body["max_k"], body["max_batch"]) == (96, K, 20, 4)
  assert body["k_buckets"] == {"6": 4, "20": 1}
  assert body["compiled"] == {"6": [1, 2, 4], "20": [1]} and body["warmup_s"] > 0
  assert body["connections"]["limit"] == 256 and body["connections"]["open"] >= 1


def test_one_prompt_and_a_list(server, want):
  status, body = post(server.url, {"prompt": "  " + PROMPTS[0] + "\n"})
  assert status == 200 and body["k"] == K
  assert [r["prompt"] for r in body["results"]] == [PROMPTS[0]]  # normalised
  _same(body["results"][0]["tracks"], want[PROMPTS[0]])
  status, body = post(server.url, {"prompts": PROMPTS[1:4], "k": K})
  assert status == 200 and [r["prompt"] for r in body["results"]] == PROMPTS[1:4]
  for r in body["results"]:
    _same(r["tracks"], want[r["prompt"]])


@pytest.mark.parametrize("body, message", [
    ({"prompt": "   "}, "prompt: empty prompt"),
    ({"prompts": ["ok", "\u200b"]}, "prompts[1]: empty prompt"),
    ({"prompt": "x", "k": 0}, '"k" must be an integer in [1, 20], got 0'),
    ({"prompt": "x", "k": 21}, "got 21"),
    ({"prompt": "x", "k": "5"}, "got '5'"),
    ({"prompt": "x", "k": True}, "got True"),
    ({"prompt": 3}, '"prompt" must be a string'),
    ({"prompts": []}, '"prompts" must be a non-empty list'),
    ({"prompts": ["a"] * 5}, '"prompts" has 5 prompts; the limit is 4'),
    ({"prompts": ["a", 2]}, "prompts[1] must be a string"),
    ({"prompt": "a", "prompts": ["b"]}, "exactly one of"),
    ({}, "exactly one of"),
    ({"prompt": "a", "K": 3}, "unknown field(s) ['K']"),
    (["a"], "must be a JSON object"),
    (b'{"prompt": "x"', "bad JSON: Expecting ',' delimiter at line 1 column 15"),
    (b"\xff\xfe", "not UTF-8"),
    (b'{"prompt": "' + b"a" * 9000 + b'"}', "request body is 9014 bytes; the limit is 8192"),
    (b"[" * 3000 + b"]" * 3000, "bad JSON: nested too deeply"),
    (b'{"prompts": ' + b"[" * 3000 + b"]" * 3000 + b"}", "bad JSON: nested too deeply"),
    (b'{"prompt": "x", "k": ' + b"7" * 4400 + b"}", "bad JSON: a number has more than 4300 digits"),
    ({"prompt": "x", "k": 10 ** 200}, f"got 1{'0' * 39}... (201 characters)"),
    ({"prompt": "x", "k": [[[1]]]}, "got a JSON array"),
], ids=["empty", "empty_in_list", "k0", "k_over_max", "k_str", "k_bool", "prompt_not_str",
        "no_prompts", "too_many_prompts", "list_item_not_str", "both", "neither", "unknown_field",
        "not_object", "bad_json", "not_utf8", "oversized", "nested", "nested_in_field", "k_4400_digits",
        "k_200_digits", "k_nested"])
def test_bad_requests_get_400_with_a_json_message(server, body, message):
  status, got = post(server.url, body, raw=isinstance(body, bytes))
  assert status == 400 and message in got["error"], got


def test_oversized_chunked_body_and_unknown_paths(server):
  port = int(server.url.rsplit(":", 1)[1])
  conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
  conn.request("POST", "/recommend", body=iter([b'{"prompt": "', b"a" * 5000, b"b" * 5000, b'"}']),
               encode_chunked=True, headers={"Content-Type": "application/json"})
  resp = conn.getresponse()
  assert resp.status == 400 and "over 8192 bytes" in json.loads(resp.read())["error"]
  conn.close()
  assert get(server.url, "/nope") == (404, {"error": "Not Found"})
  assert get(server.url, "/recommend")[0] == 405


def test_concurrent_requests_are_batched_and_answered_right(server, want):
  _, before = get(server.url, "/health")
  n = 12
  barrier = threading.Barrier(n)
  answers = [None] * n

  def client(i):
    barrier.wait()
    answers[i] = post(server.url, {"prompt": PROMPTS[i % len(PROMPTS)]})

  threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=300)
  for i, (status, body) in enumerate(answers):
    assert status == 200, body
    _same(body["results"][0]["tracks"], want[PROMPTS[i % len(PROMPTS)]])
  _, after = get(server.url, "/health")
  assert after["requests"] - before["requests"] == n
  assert after["batches"] - before["batches"] < n  # some requests shared a device call
  assert 1 < after["largest_batch"] <= 4


def test_cli_serve_starts_answers_health_and_stops_on_sigterm(model_dir, capsys):
  assert cli.main(["serve", "--model_dir", model_dir, "--max_batch", "4", "--max_prompts", "8"]) == 2
  assert "--max_prompts (8) must be <= --max_batch (4)" in capsys.readouterr().err
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  proc = subprocess.Popen(
      [sys.executable, "-m", "t2t_jax.cli", "serve", "--model_dir", model_dir, "--port", "0", "--no_warmup",
       "--max_uptime_s", "300"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
  try:
    url = None
    deadline = time.time() + 240
    while time.time() < deadline and url is None:
      line = proc.stdout.readline()
      if not line:
        break
      if "listening on http://127.0.0.1:" in line:
        url = line.split("listening on ")[1].split()[0]
    assert url, "server did not start"
    status, body = get(url, "/health")
    assert status == 200 and body["num_tracks"] == 96 and body["model_dir"] == os.path.abspath(model_dir)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "t2t serve: stopped" in out
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()


def test_micro_batcher_groups_by_k_caps_batches_and_isolates_failures():
  calls = []

  def run_batch(prompts, k):
    calls.append((list(prompts), k))
    if "bad" in prompts:
      raise ValueError("bad prompt")
    return [f"{p}@{k}" for p in prompts]

  async def scenario():
    b = serve.MicroBatcher(run_batch, max_batch=3, max_wait_ms=50)
    b.start()
    jobs = [b.submit(["a"], 1), b.submit(["b", "c"], 1), b.submit(["d"], 1), b.submit(["e"], 2),
            b.submit(["bad"], 2)]
    out = await asyncio.gather(*jobs, return_exceptions=True)
    await b.stop()
    return out, b.stats

  out, stats = asyncio.run(scenario())
  assert out[:4] == [["a@1"], ["b@1", "c@1"], ["d@1"], ["e@2"]]
  assert isinstance(out[4], ValueError)
  # Round 1: "a" + "b","c" fill the cap of 3.  Round 2: "d" (k=1) and "e","bad" (k=2) are separate
  # calls; the k=2 call fails, so its requests are retried alone: "e" is answered, only "bad" fails.
  assert calls == [(["a", "b", "c"], 1), (["d"], 1), (["e", "bad"], 2), (["e"], 2), (["bad"], 2)]
  assert stats == {"batches": 3, "prompts": 5, "requests": 4, "largest_batch": 3, "retried_requests": 1}


def test_micro_batcher_never_splits_a_request_over_the_cap():
  calls = []

  def run_batch(prompts, k):
    calls.append(list(prompts))
    return list(prompts)

  async def scenario():
    b = serve.MicroBatcher(run_batch, max_batch=3, max_wait_ms=50)
    b.start()
    out = await asyncio.gather(b.submit(["a"], 1), b.submit(["b", "c", "d"], 1), b.submit(["e"], 1))
    await b.stop()
    return out

  assert asyncio.run(scenario()) == [["a"], ["b", "c", "d"], ["e"]]
  assert calls == [["a"], ["b", "c", "d"], ["e"]]  # "b c d" would overflow "a"'s call: it goes next


def test_micro_batcher_waits_for_company_only_under_concurrent_load():
  calls = []

  def run_batch(prompts, k):
    calls.append(list(prompts))
    return list(prompts)

  async def timed(b, prompt):
    t = time.perf_counter()
    await b.submit([prompt], 1)
    return time.perf_counter() - t

  async def scenario():
    b = serve.MicroBatcher(run_batch, max_batch=8, max_wait_ms=400)
    b.start()
    alone = await timed(b, "a")  # idle server: sent at once
    await asyncio.gather(b.submit(["b"], 1), b.submit(["c"], 1))  # concurrent: one call
    after_concurrent = await timed(b, "d")  # waits up to 400 ms for company, then goes alone
    alone_again = await timed(b, "e")
    await b.stop()
    return alone, after_concurrent, alone_again

  alone, after_concurrent, alone_again = asyncio.run(scenario())
  assert calls == [["a"], ["b", "c"], ["d"], ["e"]]
  assert alone < 0.3 and alone_again < 0.3 and after_concurrent >= 0.39


# ---- k buckets: no request compiles (issue 14.4) -------------------------------------------------

def test_k_ladder_and_bucket_plan():
  assert serve.k_ladder(12, 100) == (12, 24, 48, 100)
  assert serve.k_ladder(20, 100) == (20, 40, 100)
  assert serve.k_ladder(6, 20) == (6, 12, 20)
  assert serve.k_ladder(10, 10) == (10,) and serve.k_ladder(30, 10) == (10,)
  plan = serve.plan_buckets(beam_size=12, default_k=10, max_k=100, max_batch=32)
  assert plan.k_buckets == (12, 24, 48, 100)
  assert plan.batch_caps == {12: 32, 24: 16, 48: 8, 100: 2}  # beams per call <= 32 * 12
  assert plan.as_dict() == {"12": [1, 2, 4, 8, 16, 32], "24": [1, 2, 4, 8, 16], "48": [1, 2, 4, 8],
                            "100": [1, 2]}
  assert [plan.bucket(k) for k in (1, 10, 12, 13, 40, 55, 100)] == [12, 12, 12, 24, 48, 100, 100]
  # default k above the beam: the first bucket is the default k; a non-power-of-two max_batch stays.
  plan = serve.plan_buckets(beam_size=6, default_k=10, max_k=50, max_batch=24)
  assert plan.k_buckets == (10, 20, 50) and plan.batch_caps == {10: 24, 20: 8, 50: 4}
  assert plan.batch_sizes(10) == (1, 2, 4, 8, 16, 32)
  plan = serve.plan_buckets(beam_size=6, default_k=5, max_k=20, max_batch=4, k_buckets=(20, 6, 6, 50))
  assert plan.k_buckets == (6, 20) and plan.batch_caps == {6: 4, 20: 1}
  with pytest.raises(UserInputError, match=r"--k_buckets 10,50: the largest must be >= --max_k \(100\)"):
    serve.plan_buckets(beam_size=6, default_k=5, max_k=100, max_batch=4, k_buckets=(10, 50))


def test_no_request_compiles_after_warmup(server, want, compiles):
  for k in range(1, 21):
    status, body = post(server.url, {"prompt": PROMPTS[k % len(PROMPTS)], "k": k})
    assert status == 200 and body["k"] == k, body
    tracks = body["results"][0]["tracks"]
    assert len(tracks) == k and len({t["track_id"] for t in tracks}) == k
    assert [t["rank"] for t in tracks] == list(range(1, k + 1))
    if k <= K:  # same beam (6): the top-k of the top-6 is recommend(k)'s answer
      _same(tracks, want[PROMPTS[k % len(PROMPTS)]][:k])
  # 4 prompts at k 17: bucket 20 takes 1 prompt per device call, so 4 calls of the compiled shape.
  status, body = post(server.url, {"prompts": PROMPTS[:4], "k": 17})
  assert status == 200 and [len(r["tracks"]) for r in body["results"]] == [17] * 4
  alone = [post(server.url, {"prompt": p, "k": 17})[1]["results"][0]["tracks"] for p in PROMPTS[:4]]
  for r, a in zip(body["results"], alone):
    _same(r["tracks"], a)
  assert compiles == []
  assert get(server.url, "/health")[1]["compiled_on_request"] == 0


def test_small_k_is_answered_while_large_k_requests_are_in_flight(server, want, compiles):
  async def ask(session, k, prompt):
    t = time.perf_counter()
    async with session.post(server.url + "/recommend", json={"prompt": prompt, "k": k}) as resp:
      return resp.status, await resp.json(), time.perf_counter() - t

  async def scenario():
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
      large = [asyncio.create_task(ask(session, k, PROMPTS[k % len(PROMPTS)]))
               for k in range(13, 21) for _ in range(2)]
      await asyncio.sleep(0.05)
      small = await ask(session, K, PROMPTS[0])
      return small, await asyncio.gather(*large)

  (status, body, seconds), large = asyncio.run(scenario())
  assert status == 200
  _same(body["results"][0]["tracks"], want[PROMPTS[0]])
  assert seconds < 2.0, f"k={K} took {seconds:.2f} s behind 16 requests with k 13..20"
  assert [len(b["results"][0]["tracks"]) for _, b, _ in large] == [k for k in range(13, 21) for _ in range(2)]
  assert compiles == []


# ---- slow, stuck and too many clients (issue 14.5) ------------------------------------------------

def _port(url: str) -> int:
  return int(url.rsplit(":", 1)[1])


def _slow_body_socket(port: int) -> socket.socket:
  """Announces a 60 kB body and sends 12 bytes of it."""
  sock = socket.create_connection(("127.0.0.1", port), timeout=10)
  sock.sendall(b"POST /recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Content-Length: 60000\r\n\r\n" + b'{"prompt": "')
  return sock


def _read_all(sock: socket.socket, timeout: float) -> bytes:
  """Everything the server sends until it closes the connection (or `timeout`: then raises)."""
  sock.settimeout(timeout)
  data = b""
  while True:
    try:
      chunk = sock.recv(65536)
    except ConnectionResetError:
      return data
    if not chunk:
      return data
    data += chunk


def test_slow_body_gets_408_and_the_connection_is_closed(rec, server):  # pylint: disable=unused-argument
  with small_server(rec, body_timeout_s=0.5, max_body_bytes=64 * 1024) as s:
    t = time.perf_counter()
    sock = _slow_body_socket(_port(s.url))
    reply = _read_all(sock, timeout=10)
    sock.close()
    assert time.perf_counter() - t < 5
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and b"Connection: close" in head, reply
    assert json.loads(body) == {"error": "request body not received within 0.5 s"}
    assert post(s.url, {"prompt": PROMPTS[0]})[0] == 200


def test_idle_and_slow_header_connections_are_closed(rec, server):  # pylint: disable=unused-argument
  with small_server(rec, idle_timeout_s=0.5) as s:
    port = _port(s.url)
    silent = socket.create_connection(("127.0.0.1", port), timeout=10)
    trickle = socket.create_connection(("127.0.0.1", port), timeout=10)
    t = time.perf_counter()
    closed_after = None
    try:
      for line in [b"POST /recommend HTTP/1.1\r\n"] + [b"X-Slow: %d\r\n" % i for i in range(30)]:
        trickle.sendall(line)
        time.sleep(0.1)
    except (BrokenPipeError, ConnectionResetError):
      closed_after = time.perf_counter() - t
    assert closed_after is not None and closed_after < 2.5, "slow headers were not cut off"
    assert _read_all(silent, timeout=5) == b""
    silent.close()
    trickle.close()
    assert get(s.url, "/health")[1]["connections"]["timed_out"] >= 2


def _open_fds() -> int:
  return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts file descriptors in /proc")
def test_a_flood_of_slow_connections_does_not_lock_out_valid_clients(rec, server):  # pylint: disable=unused-argument
  n, limit = 300, 40
  with small_server(rec, max_connections=limit, body_timeout_s=60, idle_timeout_s=60,
                    max_body_bytes=64 * 1024) as s:
    port = _port(s.url)
    fds = _open_fds()
    socks = []
    try:
      for i in range(n):
        socks.append(_slow_body_socket(port) if i % 2 else socket.create_connection(("127.0.0.1", port)))
      t = time.perf_counter()
      status, body = post(s.url, {"prompt": PROMPTS[0]})
      assert status == 200 and time.perf_counter() - t < 2.0
      _, health = get(s.url, "/health")
      # This process holds the n client sockets; the server at most `limit` of its own.
      assert _open_fds() - fds <= n + limit + 5
    finally:
      for sock in socks:
        sock.close()
    conns = health["connections"]
    assert conns["open"] <= limit and conns["evicted"] >= n - limit and conns["refused"] == 0


def test_client_errors_are_logged_at_a_limited_rate(rec, server, caplog):  # pylint: disable=unused-argument
  with caplog.at_level(logging.WARNING, logger="t2t_jax.serving.serve"):
    with small_server(rec, log_max_lines=3, log_interval_s=600) as s:
      for i in range(20):
        assert post(s.url, {"prompt": "x", "k": 100 + i})[0] == 400
      assert s.server.log_filter.flush() == 17
  lines = [r.getMessage() for r in caplog.records if r.name == "t2t_jax.serving.serve"]
  assert len(lines) == 4, lines
  assert all(l.startswith("400 POST /recommend from 127.0.0.1:") for l in lines[:3])
  assert '"k\\" must be an integer in [1, 20], got 100' in lines[0]
  assert lines[3] == "suppressed 17 log message(s) (limit: 3 per 600 s)"


def test_api_key(rec, server):  # pylint: disable=unused-argument
  key = "k3y-\u00e9-0123456789"
  with small_server(rec, api_key=key) as s:
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"},
                    {"Authorization": "Basic " + key}):
      status, body = post(s.url, {"prompt": PROMPTS[0]}, headers=headers)
      assert status == 401 and "API key" in body["error"], (headers, body)
    assert get(s.url, "/health")[0] == 401
    wire = key.encode("utf-8").decode("latin-1")  # http.client sends header values as latin-1
    for headers in ({"X-API-Key": wire}, {"Authorization": "Bearer " + wire}):
      assert post(s.url, {"prompt": PROMPTS[0]}, headers=headers)[0] == 200
    assert get(s.url, "/health", headers={"X-API-Key": wire})[0] == 200


def test_cli_reads_the_api_key_from_a_file_only(tmp_path, capsys):
  assert cli.main(["serve", "--model_dir", str(tmp_path), "--api_key_file", str(tmp_path / "nope")]) == 2
  assert "t2t: error: --api_key_file " in capsys.readouterr().err
  with pytest.raises(SystemExit):  # the key itself is never a flag: argv is visible to every user
    cli.main(["serve", "--model_dir", str(tmp_path), "--api-key", "k"])


# ---- every error is JSON (issue 14.6) --------------------------------------------------------------

class _Broken:
  """A recommender whose device call fails with an internal message that must not reach clients."""

  def __init__(self, rec):
    self.id_table, self.beam_size = rec.id_table, rec.beam_size

  def recommend(self, prompts, k):
    raise RuntimeError("secret internal detail /srv/model")


def test_internal_errors_are_json_500_without_details(rec, server, caplog):  # pylint: disable=unused-argument
  with caplog.at_level(logging.ERROR, logger="t2t_jax.serving.serve"):
    with small_server(_Broken(rec)) as s:
      status, body = post(s.url, {"prompt": PROMPTS[0]})
      assert status == 500 and body == {"error": "internal error (details are in the server log)"}

      def boom(body):
        raise KeyError("another secret")
      s.server.parse_request = boom
      status, body = post(s.url, {"prompt": PROMPTS[0]})
      assert status == 500 and body == {"error": "internal error (details are in the server log)"}
  logged = "\n".join(r.getMessage() + str(r.exc_info and r.exc_info[1]) for r in caplog.records)
  assert "secret internal detail" in logged and "another secret" in logged


@pytest.mark.parametrize("flags, message", [
    (["--k_buckets", "10,x"], "--k_buckets '10,x': expected comma-separated integers"),
    (["--k_buckets", "0,100"], "--k_buckets must be positive integers, got [0, 100]"),
    (["--body_timeout_s", "0"], "--body_timeout_s must be > 0, got 0.0"),
    (["--max_connections", "0"], "--max_connections must be >= 1, got 0"),
    (["-k", "0"], "-k/--k must be >= 1, got 0"),  # issue 23: named the field (--default_k), not the flag
])
def test_cli_serve_rejects_bad_limits(tmp_path, capsys, flags, message):
  assert cli.main(["serve", "--model_dir", str(tmp_path)] + flags) == 2
  assert f"t2t: error: {message}" in capsys.readouterr().err


# ---- issue 23: requests aiohttp rejects itself, a busy port --------------------------------------

class _NoModel:
  """A recommender without a model, for requests that never reach it."""
  id_table = types.SimpleNamespace(num_tracks=3)
  beam_size = 1

  def recommend(self, prompts, k):  # pylint: disable=unused-argument
    return [[] for _ in prompts]


@pytest.mark.parametrize("request_bytes", [
    b"BREW /recommend HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01 not http at all\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
], ids=["bad_method", "garbage_request_line", "200kb_header"])
def test_requests_aiohttp_rejects_itself_get_a_json_400(request_bytes):
  with serve.BackgroundServer(_NoModel(), serve.ServeConfig(port=0, warmup=False)) as s:
    sock = socket.create_connection(("127.0.0.1", _port(s.url)), timeout=10)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # it may answer before reading all
      sock.sendall(request_bytes)
    reply = _read_all(sock, timeout=10)
    sock.close()
  head, _, body = reply.partition(b"\r\n\r\n")
  assert head.split()[1] == b"400" and b"Content-Type: application/json" in head, reply[:300]
  assert json.loads(body)["error"].startswith("bad HTTP request (400"), body


def test_cli_serve_names_a_busy_port_before_loading_anything(tmp_path, capsys):
  busy = socket.socket()
  busy.bind(("127.0.0.1", 0))
  busy.listen()
  port = busy.getsockname()[1]
  try:  # the model dir does not exist: the port is checked first, not after the model's warm-up
    assert cli.main(["serve", "--model_dir", str(tmp_path / "nope"), "--port", str(port)]) == 2
  finally:
    busy.close()
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [f"t2t: error: --host 127.0.0.1 --port {port}: Address already in use"], err
