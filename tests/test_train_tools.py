"""tools/bench_train.py and tools/compile_aot.py on the tiny model."""

import json
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))


def test_flop_count_matches_hand_count():
  import bench_train
  from t2t_jax.models import t5
  cfg = t5.T5Config.micro(num_encoder_layers=1, num_decoder_layers=1)  # E=32, HD=32, F=64, V=128
  # encoder: 4 tokens x (8*32*32 + 6*32*64) + 4*4*4*32; decoder: 2 tokens x (8+4)*32*32 + 6*32*64
  # + 4 enc tokens x 4*32*32 + 4*2*2*32 + 4*2*4*32; logits 2 x 2*32*128.
  enc = 4 * (8 * 1024 + 6 * 2048) + 4 * 4 * 4 * 32
  dec = 2 * (12 * 1024 + 6 * 2048) + 4 * 4 * 1024 + 4 * 2 * 2 * 32 + 4 * 2 * 4 * 32
  logits = 2 * 2 * 32 * 128
  assert bench_train.t5_train_flops(cfg, 1, 4, 2) == 3 * (enc + dec + logits)


@pytest.mark.slow
def test_bench_train_writes_json(tmp_path):
  import bench_train
  out = tmp_path / "b.json"
  bench_train.main(["--size", "tiny", "--vocab_size", "128", "--batch_size", "8",
                    "--inputs_length", "8", "--targets_length", "4", "--warmup", "1",
                    "--steps", "2", "--repeats", "1", "--no_compile", "--json", str(out)])
  r = json.loads(out.read_text())
  assert r["ours_examples_per_s"] > 0 and r["hf_eager_examples_per_s"] > 0
  # --no_compile leaves the compiled peer out of the JSON (as gpu_suite's train part, --no_hf, has ours only).
  assert "hf_compiled_examples_per_s" not in r and set(r["sides"]) == {"ours", "hf_eager"} and 0 < r["ours_mfu"] < 1
  assert r["configuration"]["model"] == "t5_1_1_tiny" and "cpu" in r["machine"]


@pytest.mark.slow
def test_compile_aot_reports_memory(tmp_path):
  import compile_aot
  out = tmp_path / "c.json"
  assert compile_aot.main(["--size", "tiny", "--vocab_size", "128", "--batch_size", "16",
                           "--num_partitions", "2", "--fsdp", "--devices", "8",
                           "--json", str(out)]) == 0
  r = json.loads(out.read_text())
  assert r["devices"] == 8 and "data=4 x model=2" in r["mesh"]
  assert r["temp_size_in_bytes"] > 0 and r["flops_per_device"] > 0
  assert compile_aot.main(["--size", "tiny", "--num_partitions", "3"]) == 2
