"""Catalog scaling study: the Text2Tracks pipeline (semantic IDs) at catalog sizes you choose.

  python tools/scaling_study.py --gin_file gin/experiments/scaling_study.gin --out docs/results/scaling
  python tools/scaling_study.py --gin_file gin/experiments/scaling_study.gin \
      --gin_bindings "scaling_study.catalog_sizes = (1_000_000, 10_000_000)" --out /big/scaling   # GPU/TPU host

For each catalog size N: a synthetic catalog of N tracks and `playlists_per_track * N` playlists,
CF embeddings, semantic IDs (codebook size per level chosen for N unless given), the SeqIO task, a
few T5 training steps and constrained beam search over held-out prompts.  Reported per size:
Hits@10 / MAP@10 / NDCG@10, ID-building time (k-means levels, plus CF embedding time), the trie
index and ID-table bytes, decode latency (ms per batch of prompts) and prompts/s, and steady-state
training throughput (examples/s).  Small sizes run on a CPU; JAX runs the same code on a GPU/TPU
host for the large ones.  Outputs in --out: results.{json,csv,md} and scaling.png (metrics against
catalog size, log x axis); rows are written after every size, so an interrupted run keeps them.
The study is t2t_jax/studies/scaling.py (gin `scaling_study.*`).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from t2t_jax import console, gin_utils  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.studies import pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.studies.scaling import scaling_study  # pylint: disable=g-import-not-at-top,wrong-import-position


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--gin_file", action="append", default=[], help="e.g. gin/experiments/scaling_study.gin")
  p.add_argument("--gin_bindings", action="append", default=[],
                 help="e.g. \"scaling_study.catalog_sizes = (10_000, 100_000)\"")
  p.add_argument("--sizes", default=None, help="comma-separated catalog sizes (overrides the gin file)")
  p.add_argument("--out", default=None, help="results dir (overrides scaling_study.out_dir)")
  p.add_argument("--work_dir", default=None, help="dataset, ID tables and models (default t2t_runs/scaling_study)")
  p.add_argument("--no_progress", action="store_true")
  args = p.parse_args(argv)
  return console.run_main(lambda: _run(args))


def _run(args) -> None:
  gin_utils.parse_gin(args.gin_file, args.gin_bindings, finalize=False)
  overrides = {}
  if args.sizes:
    try:
      overrides["catalog_sizes"] = tuple(int(float(x)) for x in args.sizes.split(","))
    except ValueError:
      raise UserInputError(f"--sizes must be comma-separated integers, got {args.sizes!r}") from None
  overrides.update(pipeline.cli_overrides(args))
  scaling_study(**overrides)


if __name__ == "__main__":
  sys.exit(main())
