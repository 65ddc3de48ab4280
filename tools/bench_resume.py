"""Resume cost at step 100 vs step 10,000: restoring the input position by index vs replaying.

  python tools/bench_resume.py --json docs/results/bench/resume.json

The trainer restores its data position with `IndexedBatches.set_state` (t2t_jax/data/resumable.py):
the stream position maps to example indices directly, so reaching step s costs the same at any s.
The peer is what the trainer did before (and what a plain iterator without checkpointable state
must do): replay s batches from the start of the stream and drop them.  Both sides build the same
batches (batch 128, 64 -> 8 tokens, EncDecFeatureConverter features, unpacked and packed) from an
index-addressable example set of 50,000 prompts; the figure is the time from "restore step s" to
the first batch of step s in hand, median of >= 5 runs.  Replay is timed at the small steps and, at
the large ones, up to --replay_limit_s (then extrapolated from its measured rate and labelled so).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common  # noqa: E402  pylint: disable=wrong-import-position

from t2t_jax.data.resumable import IndexedBatches  # noqa: E402  pylint: disable=wrong-import-position
from tasks import feature_converter  # noqa: E402  pylint: disable=wrong-import-position


def make_examples(num_examples: int, inputs_length: int, targets_length: int, seed: int = 0):
  """An index-addressable example set: token arrays held in memory, variable lengths."""
  rng = np.random.default_rng(seed)
  lin = rng.integers(4, inputs_length, num_examples)
  tokens_NxL = rng.integers(3, 32000, (num_examples, inputs_length)).astype(np.int32)
  tokens_NxL[np.arange(inputs_length)[None, :] >= lin[:, None]] = 0
  tokens_NxL[np.arange(num_examples), lin - 1] = 1
  targets_NxT = np.zeros((num_examples, targets_length), np.int32)
  targets_NxT[:, :targets_length - 1] = rng.integers(3, 32000, (num_examples, targets_length - 1))
  targets_NxT[:, targets_length - 1] = 1

  def examples_fn(ids):
    return tokens_NxL[ids], targets_NxT[ids]
  return examples_fn


def _iterator(examples_fn, num_examples, batch_size, packed):
  features = feature_converter.packed_features if packed else feature_converter.unpacked_features
  return IndexedBatches(num_examples, examples_fn, features, batch_size=batch_size, seed=0,
                        packed=packed, chunk_size=256)


def restore_seconds(examples_fn, num_examples, batch_size, packed, step, runs):
  """Seconds from a fresh iterator + set_state(state at `step`) to the first batch of `step`."""
  ref = _iterator(examples_fn, num_examples, batch_size, packed)
  if packed:  # a packed state is (chunk, rows used): take it from an iterator advanced to `step`
    state = _state_after(ref, step)
  else:
    state = {"position": step * batch_size}
  out = []
  for _ in range(runs):
    t = time.perf_counter()
    it = _iterator(examples_fn, num_examples, batch_size, packed)
    it.set_state(state)
    next(it)
    out.append(time.perf_counter() - t)
  return out


def _state_after(it, step):
  """The state of `it` after `step` batches (packed rows: computed by replaying once, untimed)."""
  for _ in range(step):
    next(it)
  return it.get_state()


def replay_seconds(examples_fn, num_examples, batch_size, packed, step, runs, limit_s):
  """Seconds to replay `step` batches and draw the next; extrapolated past `limit_s`."""
  out, extrapolated = [], False
  for _ in range(runs):
    it = _iterator(examples_fn, num_examples, batch_size, packed)
    t = time.perf_counter()
    done = 0
    while done < step:
      next(it)
      done += 1
      if time.perf_counter() - t > limit_s:
        break
    next(it)
    secs = time.perf_counter() - t
    if done < step:
      secs = secs * (step + 1) / (done + 1)
      extrapolated = True
    out.append(secs)
  return out, extrapolated


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--steps", default="100,10000", help="comma-separated restore steps")
  p.add_argument("--batch_size", type=int, default=128)
  p.add_argument("--num_examples", type=int, default=50_000)
  p.add_argument("--inputs_length", type=int, default=64)
  p.add_argument("--targets_length", type=int, default=8)
  p.add_argument("--runs", type=int, default=5)
  p.add_argument("--replay_limit_s", type=float, default=20.0)
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)
  steps = [int(s) for s in args.steps.split(",")]
  if args.runs < bench_common.MIN_WINDOWS:
    p.error(f"--runs must be >= {bench_common.MIN_WINDOWS}")
  watch = bench_common.LoadWatch("bench_resume")
  examples_fn = make_examples(args.num_examples, args.inputs_length, args.targets_length)
  result = {"benchmark": "bench_resume", "command": "python tools/bench_resume.py " + " ".join(argv or sys.argv[1:]),
            "config": vars(args), "machine": bench_common.machine_info(with_jax=False), "rows": []}
  for packed in (False, True):
    for step in steps:
      ours = bench_common.summary(restore_seconds(examples_fn, args.num_examples, args.batch_size, packed,
                                                  step, args.runs))
      peer_vals, extrapolated = replay_seconds(examples_fn, args.num_examples, args.batch_size, packed, step,
                                               args.runs, args.replay_limit_s)
      peer = bench_common.summary(peer_vals)
      row = {"packed": packed, "step": step, "ours_set_state_s": ours, "peer_replay_s": peer,
             "peer_extrapolated": extrapolated, "ratio_replay_over_ours": peer["median"] / ours["median"]}
      result["rows"].append(row)
      print(f"{'packed' if packed else 'unpacked':8s} step {step:>7,}: set_state + first batch "
            f"{1000 * ours['median']:.2f} ms; replay {peer['median']:.3f} s"
            f"{' (extrapolated)' if extrapolated else ''}; ratio {row['ratio_replay_over_ours']:.0f}x", flush=True)
      bench_common.write_json(args.json, result)
  result["load"] = watch.report()
  bench_common.write_json(args.json, result)
  return result


if __name__ == "__main__":
  main()
