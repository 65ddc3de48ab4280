"""Tests of tools/gpu_suite.py: the parts' commands, the targets, and --tiny runs with TensorFlow,
SeqIO, TFDS, bm25s, gin, tensorboardX and faiss blocked in every process (the accelerator image has
none of them)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import gpu_suite  # noqa: E402  pylint: disable=wrong-import-position

BLOCKED = ("tensorflow", "seqio", "tensorflow_datasets", "bm25s", "gin", "tensorboardX", "faiss")
# Installed as sitecustomize.py on the children's PYTHONPATH: every Python process of the suite
# refuses to import these (as if not installed) and logs each attempt, with the importing frames, to
# $T2T_BLOCKED_LOG.  Availability probes (importlib.util.find_spec, e.g. orbax/transformers asking
# whether TensorFlow is there) answer None, as on an image without it, and are not failures.
BLOCKER = f'''
import importlib.util, os, sys, traceback
_BLOCKED = {BLOCKED!r}
_find_spec = importlib.util.find_spec

def _blocked(name):
  return name.split(".")[0] in _BLOCKED

def _probe(name, package=None):
  return None if _blocked(name) else _find_spec(name, package)

importlib.util.find_spec = _probe

class _Block:
  def find_spec(self, name, path=None, target=None):
    if _blocked(name):
      with open(os.environ["T2T_BLOCKED_LOG"], "a") as f:
        f.write(name + " <- " + " | ".join(s.filename + ":" + str(s.lineno)
                                           for s in traceback.extract_stack()[-8:-1]) + "\\n")
      raise ModuleNotFoundError("blocked for this test: " + name)
    return None

sys.meta_path.insert(0, _Block())
'''


def _run_suite(tmp_path, *args, timeout):
  site = tmp_path / "site"
  site.mkdir()
  (site / "sitecustomize.py").write_text(BLOCKER)
  log = tmp_path / "blocked.log"
  log.write_text("")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), ROOT]), T2T_BLOCKED_LOG=str(log),
             JAX_PLATFORMS="cpu")
  out = tmp_path / "out"
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gpu_suite.py"), "--out", str(out), "--tiny",
                         "--work_dir", str(tmp_path / "work"), *args],
                        env=env, capture_output=True, text=True, timeout=timeout, check=False)
  return proc, out, log.read_text()


def test_blocker_blocks(tmp_path):
  """The hook itself works: a child that imports a blocked module fails and is logged."""
  site = tmp_path / "site"
  site.mkdir()
  (site / "sitecustomize.py").write_text(BLOCKER)
  log = tmp_path / "b.log"
  env = dict(os.environ, PYTHONPATH=str(site), T2T_BLOCKED_LOG=str(log))
  code = ("import importlib.util; assert importlib.util.find_spec('seqio') is None; "
          "assert importlib.util.find_spec('json') is not None; import numpy; import gin")
  proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
  assert proc.returncode == 1 and "blocked for this test: gin" in proc.stderr
  assert log.read_text().startswith("gin <- ")


def test_full_commands_have_the_target_shapes(tmp_path):
  cmds = gpu_suite.part_commands(str(tmp_path / "o"), str(tmp_path / "w"), tiny=False)
  flat = {k: " ".join(v) for k, v in cmds.items()}
  assert ("--size base --batch_size 256 --inputs_length 32 --targets_length 5 --dtype bfloat16" in flat["train"])
  # Ours and the peers: the same configuration, in parts with budgets of their own.
  assert "--no_hf" in cmds["train"] and "--peers_only" not in cmds["train"]
  assert cmds["train_hf"][:cmds["train_hf"].index("--peers_only")] == [
      a for a in cmds["train"] if a != "--no_hf"][:cmds["train_hf"].index("--peers_only")]
  assert flat["train_hf"].count(f"--ours_json {tmp_path / 'o' / 'train.json'}") == 1
  assert "bench_decode.py --gpu" in flat["decode"]
  assert "--n 10000000 --d 64 --k 256 --iterations 20" in flat["kmeans"]
  assert "--num_tracks 1000000" in flat["scaling"] and "--prepare_only" in flat["prepare"]
  for part in gpu_suite.PARTS:
    assert flat[part].endswith(f"--json {tmp_path / 'o' / (part + '.json')}")
  assert sum(gpu_suite.FULL_BUDGET_S.values()) <= 540  # under 9 minutes


def test_figures_and_targets():
  results = {
      "train": {"ours_mfu": 0.45, "ours_examples_per_s": 100.0, "sides": {"ours": {}}},
      "train_hf": {"ours_over_hf_compiled": 3.0, "ours_examples_per_s": 100.0,
                   "sides": {"hf_compiled": {"status": "ok"}, "hf_eager": {"status": "did not finish in 45 s"}}},
      "decode": {"catalogs": {"100000": {"speedup_constrained_vs_hf": 40.0},
                              "10000000": {"speedup_constrained_vs_hf": 30.0,
                                           "hf_constrained": {"status": "did not finish ..."}}},
                 "mask_only": {"catalogs": {"1000000": {"masking_ms_per_decode": 0.3},
                                            "10000000": {"masking_ms_per_decode": 0.7}}}},
  }
  figs = gpu_suite.figures(results)
  assert figs["train_over_hf_compiled"] == 3.0 and figs["train_over_hf_eager"] is None
  assert figs["train_hf_eager_status"] == "did not finish in 45 s" and figs["train_hf_compiled_status"] == "ok"
  assert figs["decode_over_hf_constrained"] == 30.0  # the worst catalog counts
  assert figs["decode_hf_status_by_catalog"]["10000000"] == "did not finish ..."
  t = gpu_suite.check_targets(figs, tiny=False)
  assert t["train_mfu"]["met"] and not t["train_over_hf_compiled"]["met"]
  assert t["decode_over_hf_constrained"]["met"]
  assert t["masking_ms_per_decode_1M"]["met"] and not t["masking_ms_per_decode_10M"]["met"]
  assert figs["kmeans_seconds_per_iteration"] is None  # a part that did not run
  assert all(v["met"] is None for v in gpu_suite.check_targets(figs, tiny=True).values())


def test_peers_only_reads_ours_of_the_same_configuration(tmp_path):
  import bench_train  # pylint: disable=g-import-not-at-top
  conf = {"model": "t5_1_1_tiny", "batch_size": 8}
  ours = tmp_path / "train.json"
  ours.write_text(json.dumps({"configuration": conf, "ours_examples_per_s": 50.0, "ours_mfu": 0.1,
                              "sides": {"ours": {"examples_per_s": {"median": 50.0}}}}))
  args = bench_train.parse_args(["--peers_only", "--ours_json", str(ours)])
  result = {"configuration": conf, "sides": {}}
  bench_train._ours_from_json(args, result)  # pylint: disable=protected-access
  assert result["ours_examples_per_s"] == 50.0 and result["sides"]["ours"]["from"] == str(ours)
  other = {"configuration": {**conf, "batch_size": 16}, "sides": {}}
  bench_train._ours_from_json(args, other)  # pylint: disable=protected-access
  assert other["ours_examples_per_s"] is None and "another configuration" in other["ours_from"]
  with pytest.raises(SystemExit):
    bench_train.parse_args(["--ours_json", str(ours)])  # only with --peers_only
  with pytest.raises(SystemExit):
    bench_train.parse_args(["--peers_only", "--no_hf"])
  assert "--ours_json" not in bench_train._passthrough(["--peers_only", "--ours_json", "x", "--size", "tiny"])  # pylint: disable=protected-access


def test_tiny_kmeans_part(tmp_path):
  proc, out, blocked = _run_suite(tmp_path, "--parts", "kmeans", timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert blocked == ""
  suite = json.loads((out / "suite.json").read_text())
  assert suite["parts"]["kmeans"]["status"] == "ok" and set(suite["parts"]) == {"kmeans"}
  km = json.loads((out / "kmeans.json").read_text())
  assert km["n"] == 20000 and km["jax_seconds_summary"]["n"] == 5 and km["faiss_seconds"] is None
  assert suite["figures"]["kmeans_seconds_per_iteration"] == km["jax_seconds_per_iteration"]["median"] > 0
  assert km["iteration_over_measured_read"] > 0
  assert km["inertia_evaluator"] == "t2t_jax.ids.kmeans.assign" and 0 < km["jax_inertia"] < km["init_inertia"]
  assert km["block_choice"]["chosen"] in (1024, 16384) and set(km["block_choice"]["seconds_per_iteration_by_block"]) == {
      "1024", "16384"}


@pytest.mark.slow
def test_tiny_suite_runs_every_part_without_tensorflow(tmp_path):
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  proc, out, blocked = _run_suite(tmp_path, timeout=1500)
  assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
  assert blocked == "", blocked
  suite = json.loads((out / "suite.json").read_text())
  assert [suite["parts"][p]["status"] for p in gpu_suite.PARTS] == ["ok"] * 5
  assert sorted(os.listdir(out)) == ["decode.json", "kmeans.json", "scaling.json", "suite.json", "train.json",
                                     "train_hf.json"]
  train, train_hf = (json.loads((out / f).read_text()) for f in ("train.json", "train_hf.json"))
  assert set(train["sides"]) == {"ours"} and train_hf["ours_from"].endswith("train.json")
  assert train_hf["ours_examples_per_s"] == train["ours_examples_per_s"]
  figs = suite["figures"]
  assert figs["train_mfu"] > 0 and figs["train_over_hf_eager"] > 0
  # torch.compile of the tiny model on a CPU does not finish in the tiny mode's 30 s: reported.
  assert figs["train_over_hf_compiled"] is not None or figs["train_hf_compiled_status"].startswith("did not finish")
  assert set(figs["decode_over_hf_constrained_by_catalog"]) == {"500", "2000"}
  assert figs["decode_over_hf_constrained"] > 0
  scaling = json.loads((out / "scaling.json").read_text())["row"]
  assert scaling["num_tracks"] == 3000 and scaling["num_queries"] == 64 and 0 <= scaling["hits@10"] <= 1
  assert scaling["train_examples_per_s"] > 0 and suite["parts"]["scaling"]["prepare_status"] == "ok"
