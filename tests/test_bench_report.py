"""tools/bench_report.py renders the Performance table from benchmark JSON files."""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import bench_report  # noqa: E402  pylint: disable=wrong-import-position


def _s(*values):
  v = sorted(values)
  return {"median": v[len(v) // 2], "min": v[0], "max": v[-1], "n": len(v), "values": list(values)}


def test_rows_carry_figures_machine_and_load(tmp_path):
  machine = {"cpu": "AMD EPYC", "cpu_count": 2, "device_kind": "cpu", "date_utc": "2026-12-01 10:00 UTC"}
  kmeans = {"n": 1000000, "d": 64, "k": 256, "iterations": 20, "runs": 5, "jax_seconds_summary": _s(8.0, 7.9, 8.2),
            "jax_seconds_per_iteration": _s(0.39, 0.4, 0.41), "faiss_seconds": 6.0, "faiss_threads": 2,
            "faiss_seconds_summary": _s(6.0, 5.9, 6.3), "sklearn_seconds_summary": _s(6.9),
            "time_ratio_jax_over_faiss": 1.3333, "inertia_ratio_jax_over_faiss": 1.000000001,
            "iteration_over_measured_read": 40.0, "machine": machine,
            "load": {"before_1_5_15": [0.5, 0.4, 0.3], "after_1_5_15": [2.5, 1, 1], "overloaded": False}}
  train = {"configuration": {"model": "t5_1_1_small", "batch_size": 8, "inputs_length": 64, "targets_length": 16,
                             "dtype": "float32", "windows": 5, "steps_per_window": 3},
           "sides": {"ours": {"examples_per_s": _s(2.0, 2.1, 1.9), "mfu": 0.09},
                     "hf_eager": {"examples_per_s": _s(1.0, 1.1, 0.9), "threads": {"chosen": 1}},
                     "hf_compiled": {"status": "did not finish in 600 s"}},
           "ours_over_hf_eager": 2.0, "machine": machine,
           "load": {"before_1_5_15": [3.0, 1, 1], "after_1_5_15": [3.5, 1, 1], "overloaded": True}}
  (tmp_path / "kmeans.json").write_text(json.dumps(kmeans))
  (tmp_path / "train.json").write_text(json.dumps(train))
  table = bench_report.render(str(tmp_path)).splitlines()
  assert len(table) == 4  # header, rule, train, kmeans
  train_row, kmeans_row = table[2], table[3]
  assert "2.00 (1.90-2.10) examples/s, MFU 0.090" in train_row and "**2.00x** eager" in train_row
  assert "torch.compile: did not finish in 600 s" in train_row and "**overloaded**" in train_row
  assert "**1.33x** faiss time" in kmeans_row and "faiss (2 threads, measured best) 6.00 (5.90-6.30) s" in kmeans_row
  assert "AMD EPYC, 2 cores, 2026-12-01 10:00 UTC; load 0.5 -> 2.5 |" in kmeans_row
  assert kmeans_row.endswith(f"[kmeans.json]({tmp_path / 'kmeans.json'}) |")
