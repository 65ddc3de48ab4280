"""Benchmark: what checkpoint integrity manifests cost, against orbax's own save and restore.

  python tools/bench_checkpoint_integrity.py --json docs/results/bench/checkpoint_integrity.json
  python tools/bench_checkpoint_integrity.py --tiny            # seconds: the tests' size

A T5.1.1-base-size training state (parameters + the optimizer state of `--optimizer`, float32,
random values, moments included: zeros would compress away) is saved with our CheckpointManager (orbax StandardSave, synchronous), then timed:
  save              orbax writing the step (params, state, meta), committed
  manifest          sha256 of every file of the step into t2t_manifest.json (what training adds per
                    checkpoint, before the next save starts)
  verify_full       checking every file against the manifest (what a training resume adds)
  verify_params     checking the parameter files only (what recommend / export / serve add)
  restore_full      orbax restoring params + optimizer state (verification off)
  restore_params    orbax restoring the parameters only (verification off)
Each is reported as median/min/max over `--runs` runs (fresh step dir per run, interleaved), with
the ratios manifest/save, verify_full/restore_full and verify_params/restore_params.  Reads are
from the page cache (the step was just written); with `--cold` (root: /proc/sys/vm/drop_caches) the
verify and restore pairs are also timed after dropping the cache.  Load average before/after is
recorded; the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_common  # noqa: E402  pylint: disable=g-import-not-at-top


def _state(preset: str, optimizer: str, seed: int):
  """(params, state) host trees of the preset's model and the optimizer's state."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from t2t_jax.training import optimizers  # pylint: disable=import-outside-toplevel
  from t2t_jax.models import t5  # pylint: disable=import-outside-toplevel
  config = t5.T5Config.preset(preset)
  params = bench_common.init_params(config, seed=seed)
  opt = optimizers.make_optimizer(optimizer, schedule=lambda step: 1e-3)
  opt_state = jax.device_get(jax.jit(opt.init)(params))
  # A trained state's moments are not zeros (zeros would compress to nothing on disk): random values.
  rng = np.random.default_rng(seed + 1)
  opt_state = jax.tree.map(lambda x: rng.standard_normal(np.shape(x)).astype(x.dtype)
                           if np.ndim(x) and np.issubdtype(np.asarray(x).dtype, np.floating) else x, opt_state)
  state = {"step": np.int32(1), "rng": np.zeros(2, np.uint32), "opt_state": opt_state}
  return config, params, state


def _nbytes(tree) -> int:
  import jax  # pylint: disable=import-outside-toplevel
  return int(sum(x.nbytes for x in jax.tree.leaves(tree)))


def _drop_caches() -> bool:
  try:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w", encoding="ascii") as f:
      f.write("3\n")
    return True
  except OSError:
    return False


def _abstract(tree):
  import jax  # pylint: disable=import-outside-toplevel
  dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=dev), tree)


def _timed(fn) -> float:
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


def run(*, preset: str, optimizer: str, runs: int, scratch: str | None, cold: bool) -> dict:
  """Times every stage `runs` times; returns the result dict."""
  import jax  # pylint: disable=import-outside-toplevel
  from t2t_jax.training import checkpoints  # pylint: disable=import-outside-toplevel
  watch = bench_common.LoadWatch("bench_checkpoint_integrity")
  config, params, state = _state(preset, optimizer, seed=0)
  target_params, target_state = _abstract(params), _abstract(state)
  times: dict[str, list[float]] = {k: [] for k in (
      "save", "manifest", "verify_full", "verify_params", "restore_full", "restore_params")}
  cold_times: dict[str, list[float]] = {k: [] for k in (
      "verify_full", "restore_full", "verify_params", "restore_params")}
  cold_ok = None
  root = tempfile.mkdtemp(prefix="bench_ckpt_integrity.", dir=scratch)
  step_bytes = 0
  try:
    for r in range(runs):
      model_dir = os.path.join(root, f"run{r}")
      m = checkpoints.CheckpointManager(model_dir, keep=None, async_save=False, verify=False)
      times["save"].append(_timed(lambda: (m._manager.save(  # pylint: disable=protected-access
          1, args=_save_args(params, state)), m._manager.wait_until_finished())))  # pylint: disable=protected-access
      step_dir = os.path.join(m.directory, "1")
      times["manifest"].append(_timed(lambda: checkpoints.write_step_manifest(step_dir)))
      step_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(step_dir) for f in fs)
      pairs = [("verify_full", lambda: checkpoints.verify_step(step_dir)),
               ("restore_full", lambda: jax.block_until_ready(m.restore(target_params, target_state, step=1))),
               ("verify_params", lambda: checkpoints.verify_step(step_dir, ("params",))),
               ("restore_params", lambda: jax.block_until_ready(m.restore_params(target_params, 1)))]
      for name, fn in pairs:
        times[name].append(_timed(fn))
      if cold:
        for name, fn in pairs:
          cold_ok = _drop_caches()
          if not cold_ok:
            break
          cold_times[name].append(_timed(fn))
      m.close()
      shutil.rmtree(model_dir)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  med = {k: bench_common.summary(v) for k, v in times.items()}

  def ratio(a, b, table=med):
    return round(table[a]["median"] / table[b]["median"], 3) if table[a]["n"] and table[b]["n"] else None

  result = {
      "benchmark": "checkpoint integrity manifests (sha256 per file) vs orbax save/restore",
      "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
      "model": {"preset": preset, "params": int(config.num_params()), "params_bytes": _nbytes(params),
                "optimizer": optimizer, "opt_state_bytes": _nbytes(state["opt_state"]),
                "step_dir_bytes": step_bytes},
      "runs": runs, "seconds": med,
      "ratios": {"manifest_over_save": ratio("manifest", "save"),
                 "verify_full_over_restore_full": ratio("verify_full", "restore_full"),
                 "verify_params_over_restore_params": ratio("verify_params", "restore_params")},
      "hash_gb_per_s": round(step_bytes / 1e9 / med["manifest"]["median"], 3) if step_bytes else None,
      "page_cache": "warm (the step was just written)",
  }
  if cold:
    cmed = {k: bench_common.summary(v) for k, v in cold_times.items()}
    result["cold"] = ({"seconds": cmed,
                       "ratios": {"verify_full_over_restore_full": ratio("verify_full", "restore_full", cmed),
                                  "verify_params_over_restore_params": ratio("verify_params", "restore_params",
                                                                             cmed)}}
                      if cold_ok else {"skipped": "cannot write /proc/sys/vm/drop_caches (needs root)"})
  result["machine"] = bench_common.machine_info()
  result["load"] = watch.report()
  return result


def _save_args(params, state):
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  return ocp.args.Composite(params=ocp.args.StandardSave(params), state=ocp.args.StandardSave(state),
                            meta=ocp.args.JsonSave({"step": 1}))


def state_parser(doc: str, *, optimizer: str, optimizer_help: str) -> argparse.ArgumentParser:
  """The flags of the checkpoint benchmarks: the saved state (--preset, --optimizer), --runs,
  --tiny and --json (read them back with `parse_state_args`)."""
  p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--preset", default="base", help="T5.1.1 size of the saved state (micro, tiny, small, base, ...)")
  p.add_argument("--optimizer", default=optimizer, help=optimizer_help)
  p.add_argument("--runs", type=int, default=3)
  p.add_argument("--tiny", action="store_true", help="preset micro, 1 run (the tests' size)")
  p.add_argument("--json", default=None, help="results file (written atomically)")
  return p


def parse_state_args(p: argparse.ArgumentParser, argv) -> argparse.Namespace:
  args = p.parse_args(argv)
  if args.tiny:
    args.preset, args.runs = "micro", 1
  if args.runs < 1:
    p.error(f"--runs must be >= 1, got {args.runs}")
  return args


def main(argv=None) -> int:
  p = state_parser(__doc__, optimizer="adamw", optimizer_help="its state is saved with the params (adamw: 2 copies)")
  p.add_argument("--scratch", default=None, help="where step dirs are written (default: the temp dir)")
  p.add_argument("--cold", action="store_true", help="also time verify/restore after dropping the page cache")
  args = parse_state_args(p, argv)
  from t2t_jax import console  # pylint: disable=import-outside-toplevel
  return console.run_main(lambda: _run(args), "bench_checkpoint_integrity")


def _run(args) -> None:
  result = run(preset=args.preset, optimizer=args.optimizer, runs=args.runs, scratch=args.scratch,
               cold=args.cold)
  s, r = result["seconds"], result["ratios"]
  print(f"{args.preset}: {result['model']['params'] / 1e6:.0f}M params, step dir "
        f"{result['model']['step_dir_bytes'] / 1e9:.2f} GB; median s: save {s['save']['median']:.2f}, "
        f"manifest {s['manifest']['median']:.2f} ({r['manifest_over_save']}x save), verify_full "
        f"{s['verify_full']['median']:.2f} ({r['verify_full_over_restore_full']}x restore), verify_params "
        f"{s['verify_params']['median']:.2f} ({r['verify_params_over_restore_params']}x restore_params)")
  bench_common.write_json(args.json, result)


if __name__ == "__main__":
  sys.exit(main())
