"""The paper's comparison: Text2Tracks with every ID strategy vs. BM25, a dense dual encoder and
most-popular, on the same synthetic split, scored by the same metric code; or, with
`compare_ids.dataset_dirs`, on the folds of imported datasets (CPCD) with model families and the
pretrained bi-encoder baselines.

  python tools/compare_ids.py --gin_file gin/experiments/compare_ids.gin --out docs/results/compare_ids
  python tools/compare_ids.py --gin_file gin/experiments/compare_ids_tiny.gin --out /tmp/cmp   # seconds

CPCD (issue 13): import both prompt variants first, then run the study (gin/experiments/compare_cpcd*.gin
read data/cpcd and data/cpcd_artists_masked; rebind compare_ids.dataset_dirs for other places):
  t2t import cpcd /path/cpcd --out data/cpcd
  t2t import cpcd /path/cpcd --artists masked --out data/cpcd_artists_masked
  python tools/compare_ids.py --gin_file gin/experiments/compare_cpcd.gin --out docs/results/compare_cpcd
  python tools/compare_ids.py --gin_file gin/experiments/compare_cpcd_small.gin --out docs/results/compare_cpcd_small
Every (prompts variant, fold) x (model family, ID strategy) and every baseline run on the same test
conversations; rows per fold and aggregated over folds (mean, std, min, max) with a `prompts` field,
track- and artist-level Hits/MAP@10, a paired bootstrap (within folds) of the best Text2Tracks row vs.
the best baseline per variant, the paper's CPCD numbers as a reference column, and the study's
targets checked in results.md (t2t_jax/studies/folds_study.py).  Outputs: results.json/.csv (per-fold
rows `fold` = k and aggregated rows `fold` = "all"), results.md, per_query.json, summary.json.

Synthetic mode (dataset_dirs None):

Every ID strategy (content, integer sequential / random / tokenized, semantic RQ / hierarchical;
`id_specs` in the gin file) trains the same T5 for the same number of steps and batch size, then
decodes the same held-out prompts with constrained beam search.  Outputs in --out:
  results.json   list of rows: method, id_strategy, hits@10, map@10, ndcg@10, decode_steps_per_id, ...
  results.csv    the same rows, every column
  results.md     the table, the machine, the config and the paper's claims checked on the rows
  summary.json   those checks as numbers (semantic vs. integer / BM25 / dual encoder, steps per ID)
  metrics.png    Hits@10 / MAP@10 / NDCG@10 per method
  efficiency.png decoding steps per ID, train time and prompts/s at inference per method
Rows are written after every method, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from t2t_jax import console, gin_utils  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.studies import fair_study, pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.studies.compare_ids import compare_ids  # pylint: disable=g-import-not-at-top,wrong-import-position


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--gin_file", action="append", default=[], help="e.g. gin/experiments/compare_ids.gin")
  p.add_argument("--gin_bindings", action="append", default=[], help="e.g. \"compare_ids.train_steps = 100\"")
  p.add_argument("--out", default=None, help="results dir (overrides compare_ids.out_dir)")
  p.add_argument("--work_dir", default=None, help="dataset, ID tables and models (default t2t_runs/compare_ids)")
  p.add_argument("--no_progress", action="store_true")
  p.add_argument("--merge", nargs="+", metavar="RESULT_DIR",
                 help="instead of running: join nested-protocol result dirs of the same config on disjoint folds "
                      "into --out (fold means, aggregates and bootstraps recomputed)")
  args = p.parse_args(argv)
  return console.run_main(lambda: _run(args))


def _run(args) -> None:
  if args.merge:
    if not args.out:
      raise UserInputError("--merge needs --out")
    fair_study.merge(args.out, args.merge)
    return
  gin_utils.parse_gin(args.gin_file, args.gin_bindings, finalize=False)
  compare_ids(**pipeline.cli_overrides(args))


if __name__ == "__main__":
  sys.exit(main())
