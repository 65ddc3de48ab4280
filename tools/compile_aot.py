r"""Compile the train step ahead of time for a target mesh, without the hardware (MaxText
train_compile style): catches sharding errors and per-device out-of-memory before a pod is spent.

Shapes come from `jax.eval_shape`; nothing is allocated. Targets:
  --devices N          N fake CPU devices (default 8): checks partitioning and prints memory per
                       device as XLA:CPU lays it out (an approximation of an accelerator's).
  --topology NAME      a TPU slice, e.g. v5e:4x4 or v4:2x2x2 (needs libtpu; jax.experimental.topologies),
                       for the real per-chip memory.

  python tools/compile_aot.py --size xl --batch_size 256 --num_partitions 4 --fsdp --remat minimal \
      --dtype bfloat16 --devices 64
Prints parameter count, mesh, FLOPs of one step and per-device memory (arguments, outputs,
temporaries); `--json PATH` writes them. Exit status 0 compiled, 1 failed (the XLA error printed).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _parse(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--size", default="small")
  p.add_argument("--vocab_size", type=int, default=32128)
  p.add_argument("--batch_size", type=int, default=128)
  p.add_argument("--inputs_length", type=int, default=64)
  p.add_argument("--targets_length", type=int, default=8)
  p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
  p.add_argument("--param_dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--remat", default="none", choices=["none", "full", "minimal"])
  p.add_argument("--optimizer", default="adafactor", choices=["adafactor", "adamw"])
  p.add_argument("--num_partitions", type=int, default=1)
  p.add_argument("--num_replicas", type=int, default=1)
  p.add_argument("--num_microbatches", type=int, default=1)
  p.add_argument("--fsdp", action="store_true")
  p.add_argument("--devices", type=int, default=8, help="fake CPU devices (ignored with --topology)")
  p.add_argument("--topology", default=None, help="TPU topology, e.g. v5e:4x4")
  p.add_argument("--json", default=None)
  return p.parse_args(argv)


def main(argv=None) -> int:
  args = _parse(argv)
  if not args.topology:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.devices}")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
  from t2t_jax import console  # pylint: disable=import-outside-toplevel
  return console.run_main(lambda: _compile(args))


def _compile(args) -> int | None:
  """Compiles the train step for the mesh (after main() has set XLA_FLAGS) and prints its cost."""
  import jax  # pylint: disable=import-outside-toplevel
  from t2t_jax import io_utils  # pylint: disable=import-outside-toplevel
  from t2t_jax.training import partitioning, train_state  # pylint: disable=import-outside-toplevel
  from t2t_jax.training.optimizers import OptimizerConfig  # pylint: disable=import-outside-toplevel
  from t2t_jax.errors import UserInputError  # pylint: disable=import-outside-toplevel
  from t2t_jax.models import t5  # pylint: disable=import-outside-toplevel

  if args.topology:
    from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
    devices = topologies.get_topology_desc(topology_name=args.topology, platform="tpu").devices
  else:
    devices = jax.devices()[:args.devices]
  try:
    cfg = t5.T5Config.preset(args.size, vocab_size=args.vocab_size, dtype=args.dtype,
                             param_dtype=args.param_dtype, remat_policy=args.remat)
    part = partitioning.Partitioner(num_partitions=args.num_partitions,
                                    num_replicas=args.num_replicas, fsdp=args.fsdp,
                                    devices=devices)
    feature_shapes = train_state.batch_spec(
        {"inputs": args.inputs_length, "targets": args.targets_length}, batch_size=args.batch_size)
    tr = train_state.build(cfg, partitioner=part, batch_size=args.batch_size,
                           feature_shapes=feature_shapes,
                           optimizer=OptimizerConfig(optimizer=args.optimizer),
                           num_microbatches=args.num_microbatches)
  except UserInputError:
    raise  # run_main: one line, exit code 2
  except Exception as e:  # pylint: disable=broad-except  (XLA: OOM, bad sharding)
    print(f"compilation FAILED: {type(e).__name__}: {e}", file=sys.stderr)
    return 1
  compiled = tr.step_fn
  out = {"model": f"t5_1_1_{args.size}", "params": cfg.num_params(), "mesh": part.describe(),
         "devices": len(devices), "device_kind": devices[0].device_kind,
         "batch_size": args.batch_size, "inputs_length": args.inputs_length,
         "targets_length": args.targets_length}
  try:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    out["flops_per_device"] = float(cost.get("flops", float("nan")))
  except Exception:  # pylint: disable=broad-except
    pass
  try:
    mem = compiled.memory_analysis()
    for name in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
                 "generated_code_size_in_bytes", "alias_size_in_bytes"):
      out[name] = int(getattr(mem, name))
    out["peak_bytes_per_device_estimate"] = (out["argument_size_in_bytes"] +
                                             out["output_size_in_bytes"] +
                                             out["temp_size_in_bytes"] -
                                             out.get("alias_size_in_bytes", 0))
  except Exception:  # pylint: disable=broad-except
    pass
  for k, v in out.items():
    if isinstance(v, int) and k.endswith("bytes") or k.endswith("estimate"):
      print(f"{k:34s} {v / 2**30:10.3f} GiB")
    else:
      print(f"{k:34s} {v}")
  if args.json:
    io_utils.write_json(args.json, out)
  return None


if __name__ == "__main__":
  sys.exit(main())
