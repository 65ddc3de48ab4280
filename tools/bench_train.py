r"""Train-step benchmark: t2t_jax vs Hugging Face transformers T5 (eager and torch.compile).

Same T5.1.1 configuration, batch, sequence lengths, precision (fp32, or bf16 activations with fp32
parameters: our `dtype=bfloat16`, torch autocast bf16) and optimizer (Adafactor, lr 1e-3, no
dropout) on both sides.  Each side runs `--warmup` untimed steps, then `--windows` (>= 5) timed
windows of `--steps` steps; the JSON and the printout give median, min and max examples/s.

The peer runs in its best configuration on this machine, each in its own process:
  * eager: on a CPU, every torch thread count 1..nproc is timed on its own train step and the
    fastest kept (`--torch_threads N` fixes it instead);
  * torch.compile: the same threads, under `--compile_limit_s` (compile + windows); when it does not
    finish, the JSON says "did not finish in N s" and whether the first (compiling) step finished.
Our MFU = model FLOPs of a train step (analytic, 3x forward matmuls incl. attention) / (step time x
peak FLOP/s); the peers' MFU is given the same way.  The load average before and after each side is
recorded; a run whose load exceeded the core count says so.

  python tools/bench_train.py --json train.json             # CPU default: T5-small, batch 8, 64 -> 16
  python tools/bench_train.py --size base --batch_size 256 --inputs_length 32 --targets_length 5 \
      --dtype bfloat16 --json train.json                     # H100/H200 (tools/gpu_suite.py runs this)

`--no_hf` measures ours only; `--peers_only --ours_json OURS.json` measures only the peers, in a run of
their own (tools/gpu_suite.py's train and train_hf parts: on an H200 our first step compiles for ~140 s,
which used to eat the peers' time), with the ratios against the figure in OURS.json (same configuration).

Peak FLOP/s: --peak_tflops, else a table for known accelerators (dense bf16), else for CPUs cores x
clock x FLOPs/cycle (fp32 FMA width from /proc/cpuinfo flags: AVX-512 64, AVX2 32): an estimate,
stated in the output.
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common  # noqa: E402  pylint: disable=wrong-import-position

PEAK_TFLOPS = {  # dense bf16 per device
    "H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0, "V100": 125.0,
    "TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v5p": 459.0, "TPU v6": 918.0,
}
PEERS = ("hf_eager", "hf_compiled")


def t5_train_flops(cfg, batch: int, inputs_length: int, targets_length: int) -> float:
  """Matmul FLOPs of one training step (forward x 3) of a T5.1.1 encoder-decoder."""
  e, f, hd, v = cfg.emb_dim, cfg.mlp_dim, cfg.num_heads * cfg.head_dim, cfg.vocab_size
  li, lt = inputs_length, targets_length
  enc_layer = li * (2 * 4 * e * hd + 2 * 3 * e * f) + 2 * 2 * li * li * hd
  dec_layer = (lt * (2 * 4 * e * hd + 2 * 2 * e * hd + 2 * 3 * e * f) + li * 2 * 2 * e * hd +
               2 * 2 * lt * lt * hd + 2 * 2 * lt * li * hd)
  forward = (cfg.num_encoder_layers * enc_layer + cfg.num_decoder_layers * dec_layer +
             lt * 2 * e * v)
  return 3.0 * batch * forward


def _cpu_peak_flops():
  cores = os.cpu_count() or 1
  mhz, flags = None, ""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("cpu MHz") and mhz is None:
          mhz = float(line.split(":")[1])
        if line.startswith("flags") and not flags:
          flags = line
  except OSError:
    pass
  per_cycle = 64 if "avx512f" in flags else 32 if "avx2" in flags else 16
  mhz = mhz or 2000.0
  return cores * mhz * 1e6 * per_cycle, (f"estimate: {cores} cores x {mhz:.0f} MHz x {per_cycle} "
                                         "fp32 FLOPs/cycle")


def peak_flops(jax, override_tflops):
  devices = jax.local_devices()
  if override_tflops:
    return override_tflops * 1e12 * len(devices), "from --peak_tflops"
  kind = devices[0].device_kind
  for name, tflops in PEAK_TFLOPS.items():
    if name.lower() in kind.lower():
      return tflops * 1e12 * len(devices), f"{kind}: {tflops} TFLOP/s bf16 dense per device"
  if devices[0].platform == "cpu":
    return _cpu_peak_flops()
  return None, f"unknown peak for {kind}"


def model_config(args):
  from t2t_jax.models import t5  # pylint: disable=import-outside-toplevel
  return t5.T5Config.preset(args.size, vocab_size=args.vocab_size, dropout_rate=0.0, dtype=args.dtype)


def make_batch(np, cfg, batch, li, lt, seed=0):
  """One fixed random batch (the same in every process: seeded)."""
  rng = np.random.default_rng(seed)
  enc = rng.integers(3, cfg.vocab_size, size=(batch, li)).astype(np.int32)
  tgt = rng.integers(3, cfg.vocab_size, size=(batch, lt)).astype(np.int32)
  tgt[:, -1] = 1
  dec = np.concatenate([np.zeros((batch, 1), np.int32), tgt[:, :-1]], 1)
  return {"encoder_input_tokens": enc, "decoder_input_tokens": dec,
          "decoder_target_tokens": tgt, "decoder_loss_weights": np.ones_like(tgt)}


def bench_ours(cfg, args, batch_np):
  import jax  # pylint: disable=import-outside-toplevel
  feature_shapes = {k: (v.shape, v.dtype) for k, v in batch_np.items()}
  t0 = time.perf_counter()
  tr, part = bench_common.build_train_step(cfg, batch_size=args.batch_size, feature_shapes=feature_shapes,
                                           num_partitions=args.num_partitions, fsdp=args.fsdp,
                                           num_microbatches=args.num_microbatches)
  holder = {"state": tr.init_fn(0)}
  compile_s = time.perf_counter() - t0
  gbatch = part.shard_batch(batch_np, args.batch_size)
  out = {}

  def step():
    holder["state"], out["m"] = tr.step_fn(holder["state"], gbatch)

  windows = bench_common.time_windows(step, warmup=args.warmup, steps=args.steps, windows=args.windows,
                                      sync=lambda: jax.block_until_ready(holder["state"].step))
  return windows, {"compile_s": compile_s, "final_loss": float(jax.device_get(out["m"]["loss"])),
                   "mesh": part.describe()}


# ----------------------------------------------------------------------------------------------- #
# The peer (runs in a child process: `--peer hf_eager|hf_compiled --child_out PATH`).


def run_peer(args) -> dict:
  """transformers T5 train steps; writes args.child_out after setup, after compiling and at the end."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  from transformers.optimization import Adafactor  # pylint: disable=import-outside-toplevel
  from t2t_jax.models import hf_convert  # pylint: disable=import-outside-toplevel
  compiled = args.peer == "hf_compiled"
  cfg = model_config(args)
  batch_np = make_batch(np, cfg, args.batch_size, args.inputs_length, args.targets_length)
  torch.manual_seed(0)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  if device == "cuda":
    torch.set_float32_matmul_precision("high")  # TF32, as JAX's default float32 matmul on a GPU
  out = {"device": device, "torch": torch.__version__, "transformers": transformers.__version__,
         "compiled": compiled, "stage": "setup"}
  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)
  hf_cfg = transformers.T5Config(**{**hf_convert.config_to_hf(cfg), "dropout_rate": 0.0})
  model = transformers.T5ForConditionalGeneration(hf_cfg).to(device)
  model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())  # untied, as ours
  dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
  out["precision"] = ("autocast bfloat16, float32 parameters" if dtype == torch.bfloat16 else "float32") + (
      f"; float32 matmul precision {torch.get_float32_matmul_precision()}")
  model.train()
  opt = Adafactor(model.parameters(), lr=1e-3, scale_parameter=True, relative_step=False,
                  warmup_init=False, clip_threshold=1.0, decay_rate=-0.8)
  t = {k: torch.tensor(v, dtype=torch.long, device=device) for k, v in batch_np.items()}
  mask = (t["encoder_input_tokens"] > 0).long()

  def loss_step(enc, mask, dec, labels):
    with torch.autocast(device_type=device, dtype=dtype, enabled=dtype != torch.float32):
      return model(input_ids=enc, attention_mask=mask, decoder_input_ids=dec, labels=labels).loss

  fn = torch.compile(loss_step) if compiled else loss_step
  last = {}

  def step():
    loss = fn(t["encoder_input_tokens"], mask, t["decoder_input_tokens"], t["decoder_target_tokens"])
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    last["loss"] = loss

  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  bench_common.write_json(args.child_out, out)
  t0 = time.perf_counter()
  step()  # the first step compiles under torch.compile
  sync()
  out.update(stage="first step done", first_step_s=time.perf_counter() - t0)
  bench_common.write_json(args.child_out, out)
  if device == "cpu" and not args.torch_threads:
    out["threads"] = bench_common.choose_torch_threads(step, sync=sync)
    print(f"torch threads: {out['threads']['chosen']} "
          f"({', '.join(f'{k}: {v:.2f} s' for k, v in out['threads']['seconds_by_threads'].items())})",
          flush=True)
  else:
    out["threads"] = {"chosen": torch.get_num_threads(),
                      "how": "--torch_threads" if args.torch_threads else "not measured: the peer runs on CUDA"}
  out["windows_s"] = bench_common.time_windows(step, warmup=max(args.warmup - 1, 0), steps=args.steps,
                                               windows=args.windows, sync=sync)
  out.update(stage="done", final_loss=float(last["loss"].detach().float().cpu()))
  bench_common.write_json(args.child_out, out)
  return out


def measure_peer(name, args, argv, limit_s, threads):
  """Runs one peer in a child process under `limit_s`; returns (child JSON or None, status)."""
  with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
    path = os.path.join(tmp, f"{name}.json")
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--peer", name, "--child_out", path]
    if threads and not args.torch_threads:
      cmd += ["--torch_threads", str(threads)]
    return bench_common.run_child(cmd, timeout_s=limit_s, out_path=path, label=name)


# ----------------------------------------------------------------------------------------------- #


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--size", default="small", help="T5.1.1 preset: tiny, small, base, large, xl")
  p.add_argument("--vocab_size", type=int, default=32128)
  p.add_argument("--batch_size", type=int, default=8)
  p.add_argument("--inputs_length", type=int, default=64)
  p.add_argument("--targets_length", type=int, default=16)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--steps", type=int, default=3, help="steps per timed window")
  p.add_argument("--windows", "--repeats", type=int, default=5, help="timed windows (>= 5)")
  p.add_argument("--num_partitions", type=int, default=1)
  p.add_argument("--num_microbatches", type=int, default=1)
  p.add_argument("--fsdp", action="store_true")
  p.add_argument("--no_hf", action="store_true", help="skip transformers entirely")
  p.add_argument("--peers_only", action="store_true",
                 help="measure only the transformers peers (their own process and budget: gpu_suite's "
                      "train_hf part); ratios against --ours_json's figure when given")
  p.add_argument("--ours_json", default=None, help="with --peers_only: a bench_train JSON holding ours")
  p.add_argument("--no_compile", action="store_true", help="skip torch.compile")
  p.add_argument("--eager_limit_s", type=float, default=900, help="time limit of the eager peer's process")
  p.add_argument("--compile_limit_s", type=float, default=600,
                 help="time limit of the torch.compile peer's process (compile + windows)")
  p.add_argument("--time_budget_s", type=float, default=None,
                 help="whole run: the peers' limits are cut to what is left of it")
  p.add_argument("--peak_tflops", type=float, default=None, help="peak per device, for MFU")
  p.add_argument("--torch_threads", type=int, default=None,
                 help="torch threads for the peer (default: the fastest of 1..nproc, measured)")
  p.add_argument("--json", default=None, help="write results here (after each side)")
  p.add_argument("--peer", choices=PEERS, default=None, help=argparse.SUPPRESS)
  p.add_argument("--child_out", default=None, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.peers_only and args.no_hf:
    p.error("--peers_only and --no_hf leave nothing to measure")
  if args.ours_json and not args.peers_only:
    p.error("--ours_json is read only with --peers_only")
  if args.windows < bench_common.MIN_WINDOWS and not args.peer:
    print(f"note: --windows {args.windows} < {bench_common.MIN_WINDOWS}: too few for a stable figure",
          flush=True)
  return args


_PARENT_ONLY = ("--json", "--peer", "--child_out", "--time_budget_s", "--ours_json")


def _passthrough(argv):
  """The command-line flags a peer process needs (everything but --json/--peer/--child_out)."""
  out, skip = [], False
  for a in argv:
    if skip:
      skip = False
      continue
    if a in _PARENT_ONLY:
      skip = True
      continue
    if a.split("=", 1)[0] in _PARENT_ONLY:
      continue
    out.append(a)
  return out


def _ours_from_json(args, result) -> None:
  """--peers_only: ours' figure from an earlier run of the same configuration (gpu_suite's train part)."""
  result["ours_examples_per_s"] = result["ours_mfu"] = None
  if not args.ours_json:
    return
  try:
    with open(args.ours_json, encoding="utf-8") as f:
      ours = json.load(f)
  except (OSError, ValueError) as e:
    result["ours_from"] = f"{args.ours_json}: unreadable ({e}); no ratios"
    print(f"note: {result['ours_from']}", flush=True)
    return
  if ours.get("configuration") != result["configuration"]:
    result["ours_from"] = f"{args.ours_json}: another configuration; no ratios"
    print(f"note: {result['ours_from']}", flush=True)
    return
  result["ours_from"] = args.ours_json
  result["ours_examples_per_s"], result["ours_mfu"] = ours.get("ours_examples_per_s"), ours.get("ours_mfu")
  if "ours" in ours.get("sides", {}):
    result["sides"]["ours"] = {**ours["sides"]["ours"], "from": args.ours_json}


def main(argv=None):
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parse_args(argv)
  if args.peer:
    run_peer(args)
    return None

  t_start = time.monotonic()
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  cfg = model_config(args)
  batch_np = make_batch(np, cfg, args.batch_size, args.inputs_length, args.targets_length)
  flops = t5_train_flops(cfg, args.batch_size, args.inputs_length, args.targets_length)
  peak, peak_note = peak_flops(jax, args.peak_tflops)
  result = {"benchmark": "bench_train", "command": "python tools/bench_train.py " + " ".join(argv),
            "configuration": {
                "model": f"t5_1_1_{args.size}", "params": cfg.num_params(), "vocab_size": cfg.vocab_size,
                "batch_size": args.batch_size, "inputs_length": args.inputs_length,
                "targets_length": args.targets_length, "dtype": args.dtype, "optimizer": "adafactor",
                "warmup_steps": args.warmup, "steps_per_window": args.steps, "windows": args.windows,
                "train_flops_per_step": flops},
            "peak_flops": peak, "peak_note": peak_note, "machine": bench_common.machine_info(),
            "sides": {}}
  examples = args.steps * args.batch_size

  def record(name, windows_s, extra, watch):
    rates = bench_common.rate_summary(windows_s, examples)
    mfu = flops * rates["median"] / args.batch_size / peak if peak else None  # FLOPs/step x steps/s
    result["sides"][name] = {"examples_per_s": rates, "mfu": mfu, "load": watch.report(), **extra}
    result[f"{name}_examples_per_s"] = rates["median"]
    print(f"{name:12s} {bench_common.fmt_summary(rates, ' examples/s')}"
          + (f"  MFU {mfu:.4f}" if mfu is not None else ""), flush=True)
    bench_common.write_json(args.json, result)

  if args.peers_only:
    _ours_from_json(args, result)
  else:
    watch = bench_common.LoadWatch("ours")
    windows, extra = bench_ours(cfg, args, batch_np)
    record("ours", windows, extra, watch)
    result["ours_mfu"] = result["sides"]["ours"]["mfu"]
    if peak:
      print(f"ours MFU     {result['ours_mfu']:.4f} (peak {peak / 1e12:.2f} TFLOP/s, {peak_note})", flush=True)

  threads = None
  peers = [] if args.no_hf else ["hf_eager"] + ([] if args.no_compile else ["hf_compiled"])
  for name in peers:
    limit = args.eager_limit_s if name == "hf_eager" else args.compile_limit_s
    if args.time_budget_s:
      limit = max(1.0, min(limit, args.time_budget_s - (time.monotonic() - t_start) - 5))
    watch = bench_common.LoadWatch(name)
    child, status = measure_peer(name, args, _passthrough(argv), limit, threads)
    if child and child.get("windows_s"):
      record(name, child["windows_s"], {k: v for k, v in child.items() if k != "windows_s"} | {"status": status},
             watch)
      threads = threads or child.get("threads", {}).get("chosen")
    else:
      outcome = status
      if child and "first_step_s" in child:
        outcome += f" (first step, incl. compilation, took {child['first_step_s']:.0f} s)"
      elif child and name == "hf_compiled":
        outcome += " (the first step, which compiles, did not finish)"
      elif child is None and status.startswith("did not finish"):
        outcome += " (before its setup had finished)"
      result["sides"][name] = {"status": outcome, "load": watch.report(), **(child or {})}
      result[f"{name}_examples_per_s"] = None
      print(f"{name:12s} {outcome}", flush=True)
      bench_common.write_json(args.json, result)
  ours = result.get("ours_examples_per_s")
  for name in peers:
    if ours and result.get(f"{name}_examples_per_s"):
      result[f"ours_over_{name}"] = ours / result[f"{name}_examples_per_s"]
      print(f"ours / {name} = {result[f'ours_over_{name}']:.2f}x", flush=True)
  result["load"] = {"before_1_5_15": result["machine"]["load_avg_1_5_15"],
                    "after_1_5_15": bench_common.load_average(),
                    "overloaded": any(s.get("load", {}).get("overloaded") for s in result["sides"].values())}
  bench_common.write_json(args.json, result)
  return result


if __name__ == "__main__":
  main()
