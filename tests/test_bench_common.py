"""Tests of tools/bench_common.py (timing windows, load report, peer processes under a time limit,
a step measured in its own process) and a smoke run of tools/bench_train.py."""

import json
import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import bench_common  # noqa: E402  pylint: disable=wrong-import-position


def test_summary_and_windows():
  s = bench_common.summary([3.0, 1.0, 2.0, 10.0, 4.0])
  assert (s["median"], s["min"], s["max"], s["n"]) == (3.0, 1.0, 10.0, 5)
  assert bench_common.summary([])["median"] is None
  calls = []
  windows = bench_common.time_windows(lambda: calls.append(1), warmup=2, steps=3, windows=5)
  assert len(windows) == 5 and len(calls) == 2 + 15 and all(w >= 0 for w in windows)
  # A passed deadline stops after one window.
  assert len(bench_common.time_windows(lambda: None, warmup=0, steps=1, windows=5,
                                       deadline=time.monotonic() - 1)) == 1
  r = bench_common.rate_summary([2.0, 4.0, 1.0, 2.0, 2.0], items_per_window=8)
  assert r["median"] == 4.0 and r["min"] == 2.0 and r["max"] == 8.0
  assert "min 2.00, max 8.00, 5 windows" in bench_common.fmt_summary(r)


def test_load_watch_flags_an_overloaded_machine(monkeypatch, capsys):
  loads = iter([(1.0, 1.0, 1.0), (99.0, 50.0, 20.0)])
  monkeypatch.setattr(os, "getloadavg", lambda: next(loads))
  watch = bench_common.LoadWatch("x")
  rep = watch.report()
  assert rep["before_1_5_15"] == [1.0, 1.0, 1.0] and rep["after_1_5_15"] == [99.0, 50.0, 20.0]
  assert rep["overloaded"] and "exceeded" in rep["warning"]
  assert "WARNING (x): load average 99.0 exceeded" in capsys.readouterr().out
  monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1))
  assert not bench_common.LoadWatch().report()["overloaded"]


def test_run_child_ok_timeout_and_failure(tmp_path):
  out = str(tmp_path / "c.json")
  write = f"import json; json.dump({{'stage': 'started'}}, open({out!r}, 'w'))"
  res, status = bench_common.run_child([sys.executable, "-c", write + "; print('hello')"], timeout_s=60,
                                       out_path=out, echo=False)
  assert status == "ok" and res == {"stage": "started"}
  t0 = time.monotonic()
  res, status = bench_common.run_child([sys.executable, "-c", write + "; import time; time.sleep(60)"],
                                       timeout_s=3, out_path=out, echo=False)
  assert status == "did not finish in 3 s" and res == {"stage": "started"}  # what it wrote is kept
  assert time.monotonic() - t0 < 30
  res, status = bench_common.run_child([sys.executable, "-c", "raise SystemExit('boom')"], timeout_s=60,
                                       out_path=out, echo=False)
  assert res is None and status.startswith("failed (rc=1): boom")


def test_run_measured_reads_the_childs_own_peak_rss(tmp_path):
  """ru_maxrss from wait4 is that process's peak (300 MB held here), not this test process's; a time
  or RSS limit stops the process group and says which."""
  log = str(tmp_path / "log.txt")
  hold = "import numpy as np, time; a = np.ones(300_000_000 // 8); print('held'); time.sleep(1.0)"
  # On Linux a child's ru_maxrss also counts the RSS of the process it was forked from (kept across
  # exec), so measure from a small orchestrator, as tools/bench_mpd_scale.py does, not from pytest.
  code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import bench_common; "
          "print(json.dumps(bench_common.run_measured(sys.argv[3:], log_path=sys.argv[2], timeout_s=60)))")
  res = subprocess.run([sys.executable, "-c", code, os.path.join(ROOT, "tools"), log, sys.executable, "-c", hold],
                       capture_output=True, text=True, timeout=120)
  assert res.returncode == 0, res.stderr[-2000:]
  m = json.loads(res.stdout.strip().splitlines()[-1])
  assert m["status"] == "ok" and m["returncode"] == 0 and m["wall_s"] >= 1.0 and m["cpu_s"] > 0
  assert 0.3e9 < m["peak_rss_bytes"] < 0.6e9 and 0 < m["polled_peak_rss_bytes"] <= m["peak_rss_bytes"] * 1.1
  assert open(log, encoding="utf-8").read().strip() == "held"
  m = bench_common.run_measured([sys.executable, "-c", hold.replace("1.0", "60")], log_path=log, timeout_s=60,
                                rss_limit_bytes=100_000_000, poll_s=0.1)
  assert m["status"].startswith("stopped at 0.") and m["status"].endswith("(limit 0.1 GiB)") and m["returncode"] < 0
  m = bench_common.run_measured([sys.executable, "-c", "import time; time.sleep(60)"], log_path=log, timeout_s=1)
  assert m["status"] == "did not finish in 1 s" and m["wall_s"] < 30
  m = bench_common.run_measured([sys.executable, "-c", "raise SystemExit(3)"], log_path=log, timeout_s=60)
  assert m["status"] == "failed (rc=3)"


def test_machine_info_records_versions_and_date():
  info = bench_common.machine_info(with_jax=False)
  assert info["cpu_count"] >= 1 and info["date_utc"].endswith("UTC")
  assert info["versions"]["numpy"] and "jax" in info["versions"]


@pytest.mark.slow
def test_bench_train_tiny_with_peers(tmp_path):
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  import bench_train  # pylint: disable=import-outside-toplevel
  path = tmp_path / "train.json"
  bench_train.main(["--size", "tiny", "--vocab_size", "256", "--batch_size", "8", "--inputs_length", "8",
                    "--targets_length", "4", "--steps", "1", "--windows", "5", "--torch_threads", "1",
                    "--compile_limit_s", "1", "--json", str(path)])
  r = json.loads(path.read_text())
  ours, eager = r["sides"]["ours"], r["sides"]["hf_eager"]
  assert ours["examples_per_s"]["n"] == 5 and ours["examples_per_s"]["min"] <= ours["examples_per_s"]["median"]
  assert eager["examples_per_s"]["n"] == 5 and eager["threads"]["chosen"] == 1 and eager["status"] == "ok"
  assert r["ours_over_hf_eager"] == pytest.approx(r["ours_examples_per_s"] / r["hf_eager_examples_per_s"])
  # A one-second limit stops torch.compile: reported, not silently dropped.
  assert r["hf_compiled_examples_per_s"] is None
  assert r["sides"]["hf_compiled"]["status"].startswith("did not finish in 1 s")
  assert 0 < r["ours_mfu"] < 1 and r["machine"]["versions"]["torch"]
  assert r["load"]["after_1_5_15"] is not None
