"""Smoke test of tools/bench_decode.py (tiny model, small catalogs): it runs and reports sane values."""

import importlib.util
import json
import os

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.mark.slow
def test_bench_decode_quick_writes_json(tmp_path):
  path = os.path.join(os.path.dirname(__file__), "..", "tools", "bench_decode.py")
  spec = importlib.util.spec_from_file_location("bench_decode", path)
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  out_path = tmp_path / "decode.json"
  bench.main(["--quick", "--threads", "0", "--json", str(out_path)])
  out = json.loads(out_path.read_text())
  for key in ("ours_constrained_prompts_per_s", "ours_free_prompts_per_s",
              "hf_constrained_prompts_per_s", "hf_free_prompts_per_s", "index_build_seconds",
              "index_bytes_per_id"):
    assert out[key] > 0, key
  assert set(out["mask_only_ms_per_step"]) == {"20000"}
  # Same weights in both implementations: same logits, same constrained IDs.
  assert out["logits_max_abs_diff_vs_hf"] < 1e-3
  assert out["top1_agreement"] == 1.0
  assert out["ours_constrained_all_valid"] and out["hf_constrained_all_valid"]
  assert 0.0 <= out["ours_free_invalid_share"] <= 1.0
  assert out["machine"]["cpu_count"] >= 1 and out["config"]["beam"] == 3
