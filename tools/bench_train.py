r"""Train-step benchmark: t2t_jax vs Hugging Face transformers T5 (eager and torch.compile).

Same T5.1.1 configuration, batch, sequence lengths and optimizer family (Adafactor, fp32) on both
sides, in one run; each side does `--warmup` untimed steps (compilation) then `--repeats` timed
windows of `--steps` steps; the median window is reported. Our MFU = model FLOPs of a train step
(analytic count, 3x forward matmuls incl. attention) / (step time * peak FLOP/s of the devices).

  python tools/bench_train.py                       # CPU default: T5-small, batch 8, 64 -> 16
  python tools/bench_train.py --size base --batch_size 128 --inputs_length 128 --targets_length 16 \
      --dtype bfloat16 --json bench.json             # an accelerator
  --json PATH writes ours_examples_per_s, hf_eager_examples_per_s, hf_compiled_examples_per_s (null
  when torch.compile is unavailable or skipped), ours_mfu, configuration, machine, runs.

Peak FLOP/s: --peak_tflops, else a table for known accelerators (dense bf16), else for CPUs
cores x clock x FLOPs/cycle (fp32 FMA width from /proc/cpuinfo flags: AVX-512 64, AVX2 32) - an
estimate, stated in the output.
"""

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PEAK_TFLOPS = {  # dense bf16 per device
    "H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0, "V100": 125.0,
    "TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v5p": 459.0, "TPU v6": 918.0,
}


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


def _batch(np, cfg, batch, li, lt, seed=0):
  rng = np.random.default_rng(seed)
  enc = rng.integers(3, cfg.vocab_size, size=(batch, li)).astype(np.int32)
  tgt = rng.integers(3, cfg.vocab_size, size=(batch, lt)).astype(np.int32)
  tgt[:, -1] = 1
  dec = np.concatenate([np.zeros((batch, 1), np.int32), tgt[:, :-1]], 1)
  return {"encoder_input_tokens": enc, "decoder_input_tokens": dec,
          "decoder_target_tokens": tgt, "decoder_loss_weights": np.ones_like(tgt)}


def _time_windows(step, warmup, steps, repeats, sync):
  for _ in range(warmup):
    step()
  sync()
  windows = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(steps):
      step()
    sync()
    windows.append(time.perf_counter() - t0)
  return windows


def bench_ours(cfg, args, batch_np):
  import jax  # pylint: disable=import-outside-toplevel
  from t2t_jax import partitioning, trainer  # pylint: disable=import-outside-toplevel
  from t2t_jax.losses import LossConfig  # pylint: disable=import-outside-toplevel
  from t2t_jax.optimizers import OptimizerConfig  # pylint: disable=import-outside-toplevel
  part = partitioning.Partitioner(num_partitions=args.num_partitions, fsdp=args.fsdp)
  feature_shapes = {k: (v.shape, v.dtype) for k, v in batch_np.items()}
  t0 = time.perf_counter()
  tr = trainer.build(cfg, partitioner=part, batch_size=args.batch_size,
                     feature_shapes=feature_shapes, optimizer=OptimizerConfig(learning_rate=1e-3),
                     loss=LossConfig(z_loss=0.0), num_microbatches=args.num_microbatches)
  holder = {"state": tr.init_fn(0)}
  compile_s = time.perf_counter() - t0
  gbatch = part.shard_batch(batch_np, args.batch_size)
  out = {}

  def step():
    holder["state"], out["m"] = tr.step_fn(holder["state"], gbatch)

  windows = _time_windows(step, args.warmup, args.steps, args.repeats,
                          lambda: jax.block_until_ready(holder["state"].step))
  return windows, compile_s, float(jax.device_get(out["m"]["loss"])), part.describe()


def bench_hf(cfg, args, batch_np, compiled: bool):
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)
  from transformers.optimization import Adafactor  # pylint: disable=import-outside-toplevel
  from t2t_jax import hf_convert  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  hf_cfg = transformers.T5Config(**{**hf_convert.config_to_hf(cfg), "dropout_rate": 0.0})
  model = transformers.T5ForConditionalGeneration(hf_cfg).to(device)
  model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())  # untied
  dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
  model.train()
  opt = Adafactor(model.parameters(), lr=1e-3, scale_parameter=True, relative_step=False,
                  warmup_init=False, clip_threshold=1.0, decay_rate=-0.8)
  t = {k: torch.tensor(v, dtype=torch.long, device=device) for k, v in batch_np.items()}
  mask = (t["encoder_input_tokens"] > 0).long()

  def loss_step(enc, mask, dec, labels):
    with torch.autocast(device_type=device, dtype=dtype, enabled=dtype != torch.float32):
      return model(input_ids=enc, attention_mask=mask, decoder_input_ids=dec, labels=labels).loss

  fn = torch.compile(loss_step) if compiled else loss_step
  out = {}

  def step():
    loss = fn(t["encoder_input_tokens"], mask, t["decoder_input_tokens"],
              t["decoder_target_tokens"])
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    out["loss"] = loss

  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  t0 = time.perf_counter()
  step()  # first step: compilation for torch.compile
  sync()
  first_s = time.perf_counter() - t0
  windows = _time_windows(step, max(args.warmup - 1, 0), args.steps, args.repeats, sync)
  return windows, first_s, float(out["loss"].detach().float().cpu())


def machine_info(jax):
  info = {"platform": platform.platform(), "python": platform.python_version(),
          "cpu": platform.processor() or "", "cpu_count": os.cpu_count(),
          "jax": jax.__version__, "jax_backend": jax.default_backend(),
          "devices": [d.device_kind for d in jax.local_devices()]}
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          info["cpu"] = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  try:
    info["loadavg_1m"] = os.getloadavg()[0]
  except OSError:
    pass
  try:
    import torch  # pylint: disable=import-outside-toplevel
    import transformers  # pylint: disable=import-outside-toplevel
    info["torch"], info["transformers"] = torch.__version__, transformers.__version__
    info["torch_threads"] = torch.get_num_threads()
  except ImportError:
    pass
  return info


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--size", default="small", help="T5.1.1 preset: tiny, small, base, large, xl")
  p.add_argument("--vocab_size", type=int, default=32128)
  p.add_argument("--batch_size", type=int, default=8)
  p.add_argument("--inputs_length", type=int, default=64)
  p.add_argument("--targets_length", type=int, default=16)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--num_partitions", type=int, default=1)
  p.add_argument("--num_microbatches", type=int, default=1)
  p.add_argument("--fsdp", action="store_true")
  p.add_argument("--no_hf", action="store_true", help="skip transformers entirely")
  p.add_argument("--no_compile", action="store_true", help="skip torch.compile")
  p.add_argument("--peak_tflops", type=float, default=None, help="peak per device, for MFU")
  p.add_argument("--torch_threads", type=int, default=None, help="torch.set_num_threads")
  p.add_argument("--json", default=None, help="write results here")
  args = p.parse_args(argv)

  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from t2t_jax import io_utils  # pylint: disable=import-outside-toplevel
  from t2t_jax.models import t5  # pylint: disable=import-outside-toplevel
  cfg = t5.T5Config.preset(args.size, vocab_size=args.vocab_size, dropout_rate=0.0,
                           dtype=args.dtype)
  batch_np = _batch(np, cfg, args.batch_size, args.inputs_length, args.targets_length)
  flops = t5_train_flops(cfg, args.batch_size, args.inputs_length, args.targets_length)
  peak, peak_note = peak_flops(jax, args.peak_tflops)
  result = {"configuration": {
      "model": f"t5_1_1_{args.size}", "params": cfg.num_params(), "vocab_size": cfg.vocab_size,
      "batch_size": args.batch_size, "inputs_length": args.inputs_length,
      "targets_length": args.targets_length, "dtype": args.dtype, "optimizer": "adafactor",
      "warmup_steps": args.warmup, "steps_per_window": args.steps, "windows": args.repeats,
      "train_flops_per_step": flops}, "peak_flops": peak, "peak_note": peak_note}
  result["machine"] = machine_info(jax)

  def summarize(name, windows, extra):
    rates = [args.steps * args.batch_size / w for w in windows]
    med = statistics.median(rates)
    result[f"{name}_examples_per_s"] = med
    result.setdefault("runs", {})[name] = {"examples_per_s_per_window": rates, **extra}
    print(f"{name:12s} {med:9.2f} examples/s  (windows: {', '.join(f'{r:.2f}' for r in rates)})"
          + "".join(f"  {k}={v:.3g}" if isinstance(v, float) else f"  {k}={v}"
                    for k, v in extra.items()), flush=True)
    if args.json:  # after each side, so a run cut short keeps what it measured
      io_utils.write_json(args.json, result)
    return med

  windows, compile_s, loss, mesh = bench_ours(cfg, args, batch_np)
  ours = summarize("ours", windows, {"compile_s": compile_s, "final_loss": loss, "mesh": mesh})
  step_s = args.batch_size / ours
  result["ours_mfu"] = flops / step_s / peak if peak else None
  if peak:
    print(f"ours MFU     {result['ours_mfu']:.4f}  ({flops / step_s / 1e12:.3f} TFLOP/s achieved; "
          f"peak {peak / 1e12:.2f} TFLOP/s, {peak_note})", flush=True)

  result["hf_eager_examples_per_s"] = None
  result["hf_compiled_examples_per_s"] = None
  if not args.no_hf:
    try:
      w, first_s, loss = bench_hf(cfg, args, batch_np, compiled=False)
      summarize("hf_eager", w, {"first_step_s": first_s, "final_loss": loss})
    except ImportError as e:
      result["hf_eager_error"] = f"{type(e).__name__}: {e}"
      print(f"hf_eager     skipped: {e}")
    if not args.no_compile and "hf_eager_error" not in result:
      try:
        w, first_s, loss = bench_hf(cfg, args, batch_np, compiled=True)
        summarize("hf_compiled", w, {"first_step_s": first_s, "final_loss": loss})
      except Exception as e:  # pylint: disable=broad-except  (inductor needs a toolchain)
        result["hf_compiled_error"] = f"{type(e).__name__}: {str(e)[:500]}"
        print(f"hf_compiled  failed: {result['hf_compiled_error']}")
    if result["hf_eager_examples_per_s"]:
      result["ours_over_hf_eager"] = ours / result["hf_eager_examples_per_s"]
      print(f"ours / transformers eager = {result['ours_over_hf_eager']:.2f}x")
    if result["hf_compiled_examples_per_s"]:
      result["ours_over_hf_compiled"] = ours / result["hf_compiled_examples_per_s"]
      print(f"ours / transformers torch.compile = {result['ours_over_hf_compiled']:.2f}x")
  if args.json:
    io_utils.write_json(args.json, result)
  return result


if __name__ == "__main__":
  main()
