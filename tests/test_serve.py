"""`t2t serve` (t2t_jax/serve.py): a real HTTP server on 127.0.0.1, real HTTP clients (urllib)."""

import asyncio
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from t2t_jax import cli, recommend, serve

from test_recommend import PROMPTS, build_model_dir  # pylint: disable=g-bad-import-order

K = 5


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  return build_model_dir(str(tmp_path_factory.mktemp("serve")))


@pytest.fixture(scope="module")
def rec(model_dir):
  return recommend.Recommender.load(model_dir)


@pytest.fixture(scope="module")
def want(rec):
  """Each prompt's answer alone (batch 1), before the server runs."""
  return {p: [r.as_dict() for r in rec.recommend([p], k=K)[0]] for p in PROMPTS}


@pytest.fixture(scope="module")
def server(rec, want):  # pylint: disable=unused-argument
  cfg = serve.ServeConfig(host="127.0.0.1", port=0, default_k=K, max_k=20, max_batch=4, max_prompts=4,
                          max_wait_ms=30.0, max_body_bytes=4096)
  s = serve.BackgroundServer(rec, cfg)
  s.server.warmup()  # compiles k=5 for padded batches 1, 2, 4
  with s:
    yield s


def post(url: str, body, *, raw: bool = False) -> tuple[int, dict]:
  data = body if raw else json.dumps(body).encode("utf-8")
  req = urllib.request.Request(url + "/recommend", data=data, headers={"Content-Type": "application/json"})
  try:
    with urllib.request.urlopen(req, timeout=120) as resp:
      return resp.status, json.loads(resp.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def get(url: str, path: str) -> tuple[int, dict]:
  try:
    with urllib.request.urlopen(url + path, timeout=30) as resp:
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
    (b'{"prompt": "' + b"a" * 5000 + b'"}', "request body is 5014 bytes; the limit is 4096"),
], ids=["empty", "empty_in_list", "k0", "k_over_max", "k_str", "k_bool", "prompt_not_str",
        "no_prompts", "too_many_prompts", "list_item_not_str", "both", "neither", "unknown_field",
        "not_object", "bad_json", "not_utf8", "oversized"])
def test_bad_requests_get_400_with_a_json_message(server, body, message):
  status, got = post(server.url, body, raw=isinstance(body, bytes))
  assert status == 400 and message in got["error"], got


def test_oversized_chunked_body_and_unknown_paths(server):
  port = int(server.url.rsplit(":", 1)[1])
  conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
  conn.request("POST", "/recommend", body=iter([b'{"prompt": "', b"a" * 3000, b"b" * 3000, b'"}']),
               encode_chunked=True, headers={"Content-Type": "application/json"})
  resp = conn.getresponse()
  assert resp.status == 400 and "over 4096 bytes" in json.loads(resp.read())["error"]
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
