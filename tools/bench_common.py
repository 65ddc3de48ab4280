"""Shared plumbing of the benchmarks (tools/bench_*.py) and tools/gpu_suite.py.

One definition each of:
  * where a figure was measured: `machine_info()` (CPU, cores, memory, accelerator, versions of
    jax/flax/torch/transformers/faiss/..., UTC date) and `LoadWatch` (load average before and after
    a run; a run whose load exceeded the core count says so in its output and JSON);
  * how it was timed: `time_windows` (warm-up, then >= 5 windows of a fixed number of steps) and
    `summary` (median, min, max of the windows);
  * how the peer is set up fairly: `choose_torch_threads` (every thread count 1..nproc measured on
    the peer's own work, the fastest kept; on a shared CPU torch's default often spin-waits badly)
    and `run_child` (a peer in its own process under a time limit: torch.compile that does not
    finish is reported as "did not finish in N s", and its compile workers are stopped with it);
  * what one step of a pipeline costs in a process of its own: `run_measured` (wall and CPU seconds
    and the peak RSS of that process, read from wait4, under a time and an RSS limit);
  * the model and training calls every benchmark makes: `make_model`, `init_params`, `model_logits`,
    `build_train_step`, `train_model` (one place to change when the model interface or the
    trainer's API changes).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

MIN_WINDOWS = 5
# Distribution names whose versions every results file records (read from package metadata, so
# nothing is imported: torch is not loaded into a process that does not use it).
VERSION_DISTS = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "torch", "transformers",
                 "faiss-cpu", "faiss-gpu", "scikit-learn", "sentencepiece", "gin-config")


# ----------------------------------------------------------------------------------------------- #
# Where it ran.


def versions(dists: Sequence[str] = VERSION_DISTS) -> dict[str, str | None]:
  from importlib import metadata  # pylint: disable=import-outside-toplevel
  out = {}
  for d in dists:
    try:
      out[d] = metadata.version(d)
    except metadata.PackageNotFoundError:
      out[d] = None
  return out


def load_average() -> list[float] | None:
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return None


def _memory_gb() -> float | None:
  try:
    with open("/proc/meminfo", encoding="utf-8") as f:
      return round(int(f.readline().split()[1]) / 2**20, 1)
  except (OSError, ValueError, IndexError):
    return None


def machine_info(*, with_jax: bool = True) -> dict[str, Any]:
  """CPU, cores, memory, load, accelerator, library versions and the UTC date of this run."""
  if with_jax:
    from t2t_jax import report  # pylint: disable=import-outside-toplevel
    info = report.machine_info()
    import jax  # pylint: disable=import-outside-toplevel
    info["device_kind"] = jax.local_devices()[0].device_kind
  else:
    import platform  # pylint: disable=import-outside-toplevel
    info = {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "load_avg_1_5_15": load_average(), "platform": platform.platform(),
            "python": platform.python_version(), "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    try:
      with open("/proc/cpuinfo", encoding="utf-8") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
      info["cpu"] = names[0] if names else info["cpu"]
    except OSError:
      pass
  info["memory_gb"] = _memory_gb()
  info["versions"] = versions()
  info["env"] = {k: os.environ[k] for k in ("XLA_FLAGS", "JAX_PLATFORMS", "OMP_NUM_THREADS",
                                            "XLA_PYTHON_CLIENT_MEM_FRACTION") if k in os.environ}
  return info


class LoadWatch:
  """Load average before and after a run, and whether it exceeded the core count.

    watch = LoadWatch()          # records the load before
    ...
    result["load"] = watch.report()   # after; prints a warning line when the machine was overloaded
  """

  def __init__(self, label: str = ""):
    self.label = label
    self.cores = os.cpu_count() or 1
    self.before = load_average()

  def report(self, *, quiet: bool = False) -> dict[str, Any]:
    after = load_average()
    seen = [x[0] for x in (self.before, after) if x]
    peak = max(seen) if seen else None
    overloaded = bool(peak is not None and peak > self.cores)
    out = {"before_1_5_15": self.before, "after_1_5_15": after, "cores": self.cores,
           "overloaded": overloaded}
    if overloaded:
      out["warning"] = (f"load average {peak:.1f} exceeded the {self.cores} cores: other jobs shared the "
                        "CPUs, figures are not representative of this machine")
      if not quiet:
        print(f"WARNING{' (' + self.label + ')' if self.label else ''}: {out['warning']}", flush=True)
    return out


# ----------------------------------------------------------------------------------------------- #
# Timing.


def summary(values: Sequence[float]) -> dict[str, Any]:
  """median, min, max (and the values) of a list of measurements."""
  vals = [float(v) for v in values]
  if not vals:
    return {"median": None, "min": None, "max": None, "n": 0, "values": []}
  return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals),
          "values": vals}


def time_windows(step: Callable[[], Any], *, warmup: int, steps: int, windows: int,
                 sync: Callable[[], Any] = lambda: None,
                 deadline: float | None = None) -> list[float]:
  """Seconds of each of `windows` windows of `steps` calls of `step`, after `warmup` untimed calls.

  `sync` waits for the device (block_until_ready / cuda.synchronize).  With a `deadline`
  (time.monotonic()), windows stop once it has passed (at least one window is timed).
  """
  for _ in range(warmup):
    step()
  sync()
  out = []
  for _ in range(windows):
    t0 = time.perf_counter()
    for _ in range(steps):
      step()
    sync()
    out.append(time.perf_counter() - t0)
    if deadline is not None and time.monotonic() > deadline:
      break
  return out


def rate_summary(window_seconds: Sequence[float], items_per_window: float) -> dict[str, Any]:
  """items/s per window -> summary (median/min/max), plus the raw window seconds."""
  out = summary([items_per_window / s for s in window_seconds])
  out["window_seconds"] = [float(s) for s in window_seconds]
  out["items_per_window"] = items_per_window
  return out


def fmt_summary(s: dict, unit: str = "", digits: int = 2) -> str:
  if not s or s.get("median") is None:
    return "-"
  f = f"{{:.{digits}f}}"
  return (f"{f.format(s['median'])}{unit} (min {f.format(s['min'])}, max {f.format(s['max'])}, "
          f"{s['n']} windows)")


# ----------------------------------------------------------------------------------------------- #
# Fair peers.


def choose_torch_threads(run_once: Callable[[], Any], *, max_threads: int | None = None, repeats: int = 2,
                         sync: Callable[[], Any] = lambda: None) -> dict[str, Any]:
  """Measures `run_once` at 1..max_threads torch threads (after one warm-up call each); keeps the fastest.

  Returns {"chosen": n, "seconds_by_threads": {n: best of `repeats`}}; torch is left at the chosen
  count (inter-op threads stay at torch's default).
  """
  import torch  # pylint: disable=import-outside-toplevel
  max_threads = max_threads or os.cpu_count() or 1
  seconds = {}
  for n in range(1, max_threads + 1):
    torch.set_num_threads(n)
    run_once()
    sync()
    best = float("inf")
    for _ in range(repeats):
      t0 = time.perf_counter()
      run_once()
      sync()
      best = min(best, time.perf_counter() - t0)
    seconds[n] = best
  chosen = min(seconds, key=seconds.get)
  torch.set_num_threads(chosen)
  return {"chosen": chosen, "seconds_by_threads": {str(k): v for k, v in seconds.items()},
          "how": f"each of 1..{max_threads} torch threads timed on the peer's own step (best of {repeats} "
                 "after a warm-up); the fastest kept"}


def run_child(cmd: Sequence[str], *, timeout_s: float, out_path: str, env: dict | None = None,
              label: str = "child", echo: bool = True) -> tuple[dict | None, str]:
  """Runs `cmd` (which writes JSON to `out_path`, possibly several times) under a time limit.

  Returns (what the child last wrote or None, status): status is "ok", "did not finish in N s"
  (the child's whole process group is then stopped: torch.compile's workers too) or
  "failed (rc=R): <last stderr line>".  The child's stdout/stderr lines are echoed with `label`.
  """
  if os.path.exists(out_path):
    os.remove(out_path)
  child_env = dict(os.environ if env is None else env)
  child_env["PYTHONPATH"] = REPO + os.pathsep + child_env.get("PYTHONPATH", "")
  child_env.setdefault("PYTHONUNBUFFERED", "1")
  proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env,
                          start_new_session=True)
  lines: list[str] = []
  import threading  # pylint: disable=import-outside-toplevel

  def pump():
    for line in proc.stdout:
      lines.append(line.rstrip("\n"))
      if echo:
        print(f"  [{label}] {line.rstrip()}", flush=True)

  reader = threading.Thread(target=pump, daemon=True)
  reader.start()
  try:
    proc.wait(timeout=timeout_s)
    status = "ok" if proc.returncode == 0 else None
  except subprocess.TimeoutExpired:
    stop_group(proc)
    status = f"did not finish in {timeout_s:.0f} s"
  reader.join(timeout=10)
  if status is None:
    tail = [l for l in lines if l.strip()][-1:] or [""]
    status = f"failed (rc={proc.returncode}): {tail[0][:300]}"
  result = None
  if os.path.exists(out_path):
    with open(out_path, encoding="utf-8") as f:
      result = json.load(f)
  return result, status


def run_measured(cmd: Sequence[str], *, log_path: str, timeout_s: float, env: dict | None = None,
                 rss_limit_bytes: int | None = None, poll_s: float = 0.5) -> dict[str, Any]:
  """Runs `cmd` in a session of its own (stdout and stderr appended to `log_path`) and measures it.

  Returns {"status", "returncode", "wall_s", "cpu_s", "peak_rss_bytes", "polled_peak_rss_bytes"}:
  cpu_s and peak_rss_bytes come from the rusage wait4 returns for that process (user + system time,
  ru_maxrss: its own peak and its waited-for children's), so one step's peak is not mixed with
  another's; polled_peak_rss_bytes is the largest RSS of the process and its descendants seen every
  `poll_s` (a lower bound, but it also sees children that are never waited for).  status: "ok",
  "failed (rc=R)", "killed by signal N" (SIGKILL from outside is usually the kernel's OOM killer),
  "did not finish in N s" or "stopped at N GiB RSS (limit L GiB)": past either limit the process group
  gets SIGTERM, then SIGKILL.  On Linux ru_maxrss also counts the RSS of the calling process at the
  fork (the kernel keeps the high-water mark across exec): call this from a small orchestrator, or
  read peak_rss_bytes as an upper bound that includes the caller's RSS.
  """
  import threading  # pylint: disable=import-outside-toplevel
  import psutil  # pylint: disable=import-outside-toplevel
  child_env = dict(os.environ if env is None else env)
  child_env["PYTHONPATH"] = REPO + os.pathsep + child_env.get("PYTHONPATH", "")
  with open(log_path, "ab") as log:
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, env=child_env,
                            start_new_session=True)
  done = threading.Event()
  waited: dict[str, Any] = {}

  def reap():  # a blocking wait4 in a thread: the end time is exact, the rusage is that process's own
    _, wstatus, usage = os.wait4(proc.pid, 0)
    waited.update(end=time.perf_counter(), wstatus=wstatus, usage=usage)
    done.set()

  threading.Thread(target=reap, daemon=True).start()
  status, polled = None, 0
  while not done.wait(poll_s):
    try:
      root = psutil.Process(proc.pid)
      rss = sum(p.memory_info().rss for p in [root] + root.children(recursive=True))
    except psutil.Error:  # exited between the checks
      continue
    polled = max(polled, rss)
    if rss_limit_bytes and rss > rss_limit_bytes:
      status = f"stopped at {rss / 2**30:.1f} GiB RSS (limit {rss_limit_bytes / 2**30:.1f} GiB)"
    elif time.perf_counter() - t0 > timeout_s:
      status = f"did not finish in {timeout_s:.0f} s"
    if status:
      for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 60)):
        try:
          os.killpg(proc.pid, sig)
        except ProcessLookupError:
          break
        if done.wait(grace):
          break
      break
  done.wait()
  code = os.waitstatus_to_exitcode(waited["wstatus"])
  proc.returncode = code  # reaped here: Popen must not wait for it again
  if status is None:
    status = "ok" if code == 0 else (f"killed by signal {-code}" if code < 0 else f"failed (rc={code})")
  usage = waited["usage"]
  return {"status": status, "returncode": code, "wall_s": waited["end"] - t0,
          "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_bytes": usage.ru_maxrss * 1024,
          "polled_peak_rss_bytes": polled}


def stop_group(proc: subprocess.Popen) -> None:
  """SIGTERM, then SIGKILL, to the process group this module started for `proc`."""
  for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
    try:
      os.killpg(proc.pid, sig)
    except ProcessLookupError:
      return
    try:
      proc.wait(timeout=wait)
      return
    except subprocess.TimeoutExpired:
      continue


# ----------------------------------------------------------------------------------------------- #
# The project's model and trainer (one place each).


def make_model(config):
  """Our model object for `config` (the model interface, `t2t_jax.models.build_model`)."""
  from t2t_jax import models  # pylint: disable=import-outside-toplevel
  return models.build_model(config)


def init_params(config, *, seed: int = 0, input_length: int = 8, target_length: int = 8):
  """Random parameters of our model for `config` (host arrays, unboxed)."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  model = make_model(config)
  init = jax.jit(lambda k: model.init_params(k, input_length=input_length, target_length=target_length))
  return nn.unbox(jax.device_get(init(jax.random.PRNGKey(seed))))


def model_logits(config, params, encoder_input_tokens_BxS, decoder_input_tokens_BxL):
  """Teacher-forced logits [B, L, V] of our model (no dropout)."""
  return make_model(config).logits(params, {"encoder_input_tokens": encoder_input_tokens_BxS,
                                            "decoder_input_tokens": decoder_input_tokens_BxL})


def build_train_step(config, *, batch_size: int, feature_shapes: dict, num_partitions: int = 1,
                     fsdp: bool = False, num_microbatches: int = 1, learning_rate: float = 1e-3):
  """(CompiledTrainer, Partitioner): our Adafactor train step compiled for these shapes."""
  from t2t_jax.training import partitioning, train_state  # pylint: disable=import-outside-toplevel
  from t2t_jax.training.losses import LossConfig  # pylint: disable=import-outside-toplevel
  from t2t_jax.training.optimizers import OptimizerConfig  # pylint: disable=import-outside-toplevel
  part = partitioning.Partitioner(num_partitions=num_partitions, fsdp=fsdp)
  tr = train_state.build(config, partitioner=part, batch_size=batch_size, feature_shapes=feature_shapes,
                         optimizer=OptimizerConfig(learning_rate=learning_rate),
                         loss=LossConfig(z_loss=0.0), num_microbatches=num_microbatches)
  return tr, part


def train_model(config, *, train_iter, model_dir: str, train_steps: int, batch_size: int,
                learning_rate: float, seed: int = 0, progress: bool = False):
  """Our training loop (linear-warmup rsqrt, no TensorBoard, no SIGTERM hook); returns TrainResult."""
  from t2t_jax.training import trainer  # pylint: disable=import-outside-toplevel
  from t2t_jax.training.optimizers import OptimizerConfig  # pylint: disable=import-outside-toplevel
  return trainer.train(
      model=config, train_iter=train_iter, model_dir=model_dir,
      config=trainer.TrainConfig(train_steps=train_steps, batch_size=batch_size, seed=seed,
                                 log_period=max(1, train_steps // 10), progress=progress,
                                 tensorboard=False, handle_sigterm=False),
      optimizer=OptimizerConfig(learning_rate=learning_rate, schedule="linear_warmup_rsqrt",
                                warmup_steps=max(1, min(200, train_steps // 5))),
      checkpoint=trainer.CheckpointConfig(period=None, restore=False, async_save=False))


def write_json(path: str | None, result: dict) -> None:
  if path:
    from t2t_jax import io_utils  # pylint: disable=import-outside-toplevel
    io_utils.write_json(path, result)
