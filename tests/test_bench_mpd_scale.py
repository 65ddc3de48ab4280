"""tools/bench_mpd_scale.py: the MPD-scale dress rehearsal at --tiny, every stage of the user's route
in its own process, measured; the export it ends with serves a prompt."""

import os
import subprocess
import sys

import pytest

from t2t_jax import export_runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import bench_mpd_scale  # noqa: E402  pylint: disable=wrong-import-position
from test_tools_defaults import (  # noqa: E402  pylint: disable=g-bad-import-order
    _assert_reported, _env, _read_only_output, run_tool)


@pytest.mark.slow  # 62 s at load ~1 (ten stage processes, three TensorFlow imports): over the default budget
@pytest.mark.entry
def test_tiny_rehearsal(tmp_path):
  out, export = tmp_path / "out", tmp_path / "export"
  run_tool(tmp_path, "bench_mpd_scale.py", "--tiny", "--json", str(out / "mpd_scale.json"),
           "--export_dir", str(export), timeout=900)  # asserts exit 0 and that TMPDIR (the scratch) is empty
  r = _read_only_output(out, "mpd_scale.json")
  assert r["benchmark"] == "bench_mpd_scale" and r["command"].startswith("python tools/bench_mpd_scale.py --tiny")
  n = bench_mpd_scale.TINY_PLAYLISTS
  assert list(r["sizes"]) == [str(n)] and r["growth"] == [] and r["notes"] == []
  s = r["sizes"][str(n)]
  assert s["ok"] and [x["stage"] for x in s["stages"]] == list(bench_mpd_scale.STAGES)
  for x in s["stages"]:
    assert x["status"] == "ok" and x["wall_s"] > 0 and x["cpu_s"] > 0, x
    assert 0.01 < x["peak_rss_gb"] < 24 and x["polled_peak_rss_gb"] <= x["peak_rss_gb"] * 1.5, x
  by = {x["stage"]: x["detail"] for x in s["stages"]}
  corpus = s["corpus"]
  assert corpus["profile"] == "mpd" and corpus["playlists"] == n and corpus["rows"] == s["rows"] > 50 * n
  assert by["import"]["tracks"] == corpus["unique_tracks"] == s["tracks"] and by["import"]["playlists"] == n
  assert by["import"]["duplicate_rows"] > 0  # MPD's repeated tracks are generated and counted
  assert by["workspace"]["train_playlists"] + by["workspace"]["test_playlists"] < n
  assert by["embeddings"]["dim"] == 64 and by["embeddings"]["tracks"] == s["tracks"]
  assert by["ids"]["tracks"] == s["tracks"] and by["ids"]["level_sizes"][:2] == [256, 256]  # auto levels
  assert by["task"]["task"] == "t2t.mpd.semantic_rq.both" and by["task"]["batches"] == 20
  assert by["train"]["steps"] == 20 and by["decode"]["prompts"] == by["serve_check"]["prompts"] == 100
  assert by["export"]["tracks"] == s["tracks"] and by["export"]["platforms"] == ["cpu"]
  assert r["within_targets"]["size"] == n and r["within_targets"]["peak_rss"] is True
  assert r["mpd_reported"]["unique_tracks"] == 2_262_292 and r["load"]["cores"] >= 1
  _assert_reported(out, "mpd_scale.json", "bench_mpd_scale.py")
  # The export dir (the last size's, kept by --export_dir) loads and answers a prompt.
  rec = export_runtime.load(str(export))
  answers = rec.recommend(["chill summer vibes"], k=5)
  assert len(answers) == 1 and len(answers[0]) == 5
  assert all(a["track_id"].startswith("spotify:track:") for a in answers[0])


@pytest.mark.slow  # ~11-13 min on the 2-core VM (the 100k size of docs/results/bench/mpd_scale.json)
@pytest.mark.entry
def test_100k_playlists_within_the_memory_target(tmp_path):
  """Issue 25's middle size as a test: 100,000 MPD-format playlists (6.6M rows, ~680k tracks) through
  every stage, each under the 16 GB target with room to spare (the 1M size's budget), in O(n) time."""
  out = tmp_path / "out"
  run_tool(tmp_path, "bench_mpd_scale.py", "--sizes", "100000", "--platforms", "cpu", "--json",
           str(out / "mpd_scale.json"), timeout=3600)
  r = _read_only_output(out, "mpd_scale.json")
  s = r["sizes"]["100000"]
  assert s["ok"] and [x["status"] for x in s["stages"]] == ["ok"] * len(bench_mpd_scale.STAGES)
  assert 6_000_000 < s["rows"] < 7_500_000 and 500_000 < s["tracks"] < 900_000
  # 1M playlists has 10x the rows and ~3.3x the tracks: a stage over 4 GB here would not fit 16 GB there.
  assert s["peak_rss_gb"] < 4.0, {x["stage"]: x["peak_rss_gb"] for x in s["stages"]}
  by = {x["stage"]: x["detail"] for x in s["stages"]}
  assert by["ids"]["level_sizes"] == [1024, 1024] and by["ids"]["num_disambiguated"] == 0
  assert by["decode"]["prompts"] == by["serve_check"]["prompts"] == 1000


def test_refuses_a_scratch_it_did_not_make(tmp_path):
  scratch = tmp_path / "scratch"
  scratch.mkdir()
  (scratch / "notes.txt").write_text("mine")
  proc = subprocess.run([sys.executable, os.path.join("tools", "bench_mpd_scale.py"), "--tiny", "--scratch",
                         str(scratch)], cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True,
                        timeout=120, check=False)
  assert proc.returncode == 2 and "--scratch" in proc.stderr and "not a t2t output" in proc.stderr
  assert sorted(os.listdir(scratch)) == ["notes.txt"]


@pytest.mark.parametrize("argv, sizes", [
    (["--playlists", "1000000"], [10_000, 100_000, 1_000_000]),  # the command: three sizes
    (["--playlists", "250000"], [10_000, 100_000, 250_000]),
    (["--playlists", "5000"], [5_000]),
    (["--sizes", "100000"], [100_000]),
    (["--sizes", "100000,10000,10000"], [10_000, 100_000]),
    ([], [10_000, 100_000, 1_000_000]),
])
def test_sizes_from_the_flags(argv, sizes, monkeypatch):
  seen = {}
  monkeypatch.setattr(bench_mpd_scale, "run", lambda args: seen.setdefault("sizes", bench_mpd_scale._sizes(args)) and 0)
  assert bench_mpd_scale.main(argv) == 0
  assert seen["sizes"] == sizes


@pytest.mark.parametrize("argv, words", [(["--playlists", "10"], "--playlists"), (["--sizes", "10,x"], "--sizes")])
def test_bad_sizes_are_named(argv, words, capsys):
  assert bench_mpd_scale.main(argv) == 2
  assert words in capsys.readouterr().err
