"""Benchmark: checkpoint save / restore to a bucket (a local GCS server) against local disk.

  python tools/bench_remote_io.py --json docs/results/bench/remote_io.json
  python tools/bench_remote_io.py --tiny                    # seconds: the tests' size

A T5.1.1 training state of `--preset` (parameters + the optimizer state of `--optimizer`, float32,
random moments: zeros would compress away) is saved with our CheckpointManager (orbax, synchronous)
and restored, once to local disk and once to gs:// on `gcp-storage-emulator` (with the generation
headers real GCS sends: `python -m t2t_jax.local_gcs`) started in its own
process (in memory, on this machine: what is measured is the remote path's client cost, HTTP and
the emulator, not a network), interleaved `--runs` times.  Timed per target: save (orbax step
committed), manifest (t2t's sha256 of every file), restore_full (params + optimizer state,
verification off), restore_params, and verify_params (the parameter files against the manifest).
Medians/min/max and the ratios bucket/local are recorded with the machine and its load.  A save or
restore that fails on the bucket is retried once and counted in `remote_retries` (the unpatched
emulator failed about 1 OCDBT save in 5 with "Malformed StorageGeneration", t2t_jax/local_gcs.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_checkpoint_integrity as integrity  # noqa: E402  pylint: disable=g-import-not-at-top
import bench_common  # noqa: E402  pylint: disable=g-import-not-at-top

STAGES = ("save", "manifest", "restore_full", "restore_params", "verify_params")
BUCKET = "t2t-bench"


def start_emulator() -> tuple[subprocess.Popen, str]:
  """The local GCS server in its own process; the clients pointed at it by their environment."""
  from t2t_jax import local_gcs  # pylint: disable=import-outside-toplevel
  try:
    import gcp_storage_emulator  # pylint: disable=import-outside-toplevel,unused-import
    import gcsfs  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    raise SystemExit("bench_remote_io: needs gcp-storage-emulator and gcsfs (pip install -e '.[test]')") from None
  port = local_gcs.free_port()
  proc = subprocess.Popen([sys.executable, "-m", "t2t_jax.local_gcs", "--port", str(port),
                           "--bucket", BUCKET], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                              [REPO] + os.environ.get("PYTHONPATH", "").split(os.pathsep))))
  local_gcs.wait_until_up(port)
  url = f"http://127.0.0.1:{port}"
  os.environ.update(local_gcs.client_env(url, project="t2t-bench"))
  return proc, url


def _one_run(model_dir: str, params, state, targets) -> dict[str, float]:
  import jax  # pylint: disable=import-outside-toplevel
  from t2t_jax import storage  # pylint: disable=import-outside-toplevel
  from t2t_jax.training import checkpoints  # pylint: disable=import-outside-toplevel
  m = checkpoints.CheckpointManager(model_dir, keep=None, async_save=False, verify=False)
  out = {"save": integrity._timed(lambda: (m._manager.save(  # pylint: disable=protected-access
      1, args=integrity._save_args(params, state)), m._manager.wait_until_finished()))}  # pylint: disable=protected-access
  step_dir = storage.join(m.directory, "1")
  out["manifest"] = integrity._timed(lambda: checkpoints.write_step_manifest(step_dir))  # pylint: disable=protected-access
  out["restore_full"] = integrity._timed(lambda: jax.block_until_ready(m.restore(*targets, step=1)))  # pylint: disable=protected-access
  out["restore_params"] = integrity._timed(lambda: jax.block_until_ready(m.restore_params(targets[0], 1)))  # pylint: disable=protected-access
  out["verify_params"] = integrity._timed(lambda: checkpoints.verify_step(step_dir, ("params",)))  # pylint: disable=protected-access
  out["bytes"] = sum(storage.getsize(storage.join(step_dir, rel)) for rel in storage.walk_files(step_dir))
  m.close()
  storage.rmtree(model_dir)
  return out


def run(*, preset: str, optimizer: str, runs: int) -> dict:
  """Times every stage `runs` times on each target; returns the result dict."""
  watch = bench_common.LoadWatch("bench_remote_io")
  config, params, state = integrity._state(preset, optimizer, seed=0)  # pylint: disable=protected-access
  targets = (integrity._abstract(params), integrity._abstract(state))  # pylint: disable=protected-access
  proc, url = start_emulator()
  local_root = tempfile.mkdtemp(prefix="bench_remote_io.")
  times = {t: {s: [] for s in STAGES} for t in ("local", "bucket")}
  retries, step_bytes = 0, 0
  try:
    for r in range(runs):
      for target in ("local", "bucket"):
        for attempt in range(2):
          model_dir = (os.path.join(local_root, f"run{r}") if target == "local"
                       else f"gs://{BUCKET}/run{r}.{attempt}")
          try:
            got = _one_run(model_dir, params, state, targets)
            break
          except (ValueError, OSError) as e:  # the emulator's OCDBT flake: once more
            if target == "local" or attempt:
              raise
            retries += 1
            print(f"[bench] bucket run {r} failed ({str(e)[:120]}); retrying", flush=True)
        step_bytes = got.pop("bytes")
        for s in STAGES:
          times[target][s].append(got[s])
  finally:
    proc.terminate()
    proc.wait(timeout=30)
    shutil.rmtree(local_root, ignore_errors=True)
  med = {t: {s: bench_common.summary(v) for s, v in st.items()} for t, st in times.items()}
  return {
      "benchmark": "checkpoint save/restore: gs:// on a local GCS server vs local disk",
      "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
      "model": {"preset": preset, "params": int(config.num_params()),
                "params_bytes": integrity._nbytes(params), "optimizer": optimizer,  # pylint: disable=protected-access
                "opt_state_bytes": integrity._nbytes(state["opt_state"]), "step_dir_bytes": step_bytes},  # pylint: disable=protected-access
      "server": "gcp-storage-emulator + x-goog-generation headers (t2t_jax.local_gcs; in memory, its own process, 127.0.0.1)",
      "runs": runs, "seconds": med, "remote_retries": retries,
      "ratios_bucket_over_local": {s: round(med["bucket"][s]["median"] / med["local"][s]["median"], 2)
                                   for s in STAGES if med["local"][s]["median"] > 0},
      "machine": bench_common.machine_info(), "load": watch.report(),
  }


def main(argv=None) -> int:
  p = integrity.state_parser(__doc__, optimizer="adafactor",
                             optimizer_help="its state is saved with the params")
  args = integrity.parse_state_args(p, argv)
  from t2t_jax import console  # pylint: disable=import-outside-toplevel
  return console.run_main(lambda: _run(args), "bench_remote_io")


def _run(args) -> None:
  result = run(preset=args.preset, optimizer=args.optimizer, runs=args.runs)
  s, r = result["seconds"], result["ratios_bucket_over_local"]
  print(f"{args.preset}: step dir {result['model']['step_dir_bytes'] / 1e9:.2f} GB; median s local / "
        f"bucket: " + ", ".join(f"{k} {s['local'][k]['median']:.2f} / {s['bucket'][k]['median']:.2f} "
                                f"({r.get(k)}x)" for k in STAGES))
  bench_common.write_json(args.json, result)


if __name__ == "__main__":
  sys.exit(main())
