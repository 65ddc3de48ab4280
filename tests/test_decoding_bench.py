"""Tests of tools/bench_decode.py: the peer's catalog trie, and a smoke run with sane values."""

import importlib.util
import json
import os

import numpy as np
import pytest


def _load():
  path = os.path.join(os.path.dirname(__file__), "..", "tools", "bench_decode.py")
  spec = importlib.util.spec_from_file_location("bench_decode", path)
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  return bench


def test_sorted_catalog_trie_equals_dict_trie():
  bench = _load()
  seqs, vocab = bench.semantic_catalog(5000, seed=7, levels=(8, 8, 8))
  assert seqs.shape == (5000, 4) and vocab % 128 == 0 and seqs.max() < vocab
  assert len({tuple(r) for r in seqs.tolist()}) == 5000  # the disambiguation level makes IDs unique
  trie = {}
  for row in seqs.tolist():
    for d in range(len(row)):
      trie.setdefault(tuple(row[:d]), set()).add(row[d])
  fast = bench.SortedCatalogTrie(seqs, eos_id=1)
  for prefix, nxt in trie.items():
    assert fast.allowed(prefix) == sorted(nxt), prefix
  assert fast.allowed(tuple(seqs[0])) == [1]  # a whole ID: only EOS
  assert fast.allowed((int(seqs.max()) + 1,)) == [1]  # not a prefix of any ID


def test_row_lookup_dict_and_sorted_paths():
  bench = _load()
  for n in (1000, 250_000):  # > 200k: binary search over packed keys instead of a dict
    seqs, _ = bench.semantic_catalog(n, seed=3)
    row_of = bench._row_lookup(seqs)  # pylint: disable=protected-access
    for i in np.random.default_rng(0).integers(0, n, 200):
      assert row_of(list(seqs[i])) == i
    assert row_of([1, 2, 3, 4]) == -1


@pytest.mark.slow
def test_bench_decode_quick_writes_json(tmp_path):
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  bench = _load()
  out_path = tmp_path / "decode.json"
  bench.main(["--quick", "--catalogs", "500,2000", "--threads", "1", "--json", str(out_path)])
  out = json.loads(out_path.read_text())
  first, second = out["catalogs"]["500"], out["catalogs"]["2000"]
  for key in ("ours_constrained", "ours_free", "hf_constrained", "hf_free"):
    s = first[key]["prompts_per_s"]
    assert s["n"] == 5 and 0 < s["min"] <= s["median"] <= s["max"], key
  assert "ours_free" not in second and second["hf_constrained"]["prompts_per_s"]["n"] == 5
  # Same weights in both implementations: same logits, same constrained IDs.
  assert out["logits_max_abs_diff_vs_hf"] < 1e-3
  assert first["top1_agreement"] == 1.0 and second["top1_agreement"] == 1.0
  assert first["ours_constrained_all_valid"] and first["hf_constrained_all_valid"]
  assert first["speedup_constrained_vs_hf"] == pytest.approx(
      first["hf_constrained"]["seconds_per_batch"]["median"] / first["ours_constrained"]["seconds_per_batch"]["median"])
  # The first catalog's ratio is measured before the masking-only runs (a short budget keeps it).
  assert list(out).index("catalogs") < list(out).index("mask_only")
  mask = out["mask_only"]["catalogs"]["20000"]
  assert mask["masking_ms_per_decode"] == mask["constrained_ms_per_decode"]["median"] > 0
  assert out["index_build"]["bytes_per_id"] > 0 and out["torch_threads"]["chosen"] == 1
  assert out["machine"]["cpu_count"] >= 1 and out["load"]["cores"] >= 1
  assert out["config"]["beam"] == 3 and "masking_ms_per_decode" in out["definitions"]
  assert np.isfinite(out["load"]["after_1_5_15"][0])
