"""Builds an ID table dir (codes, track ids, meta, stats.json, plots) for one ID strategy.

  python tools/build_ids.py --gin_file gin/ids/semantic_rq.gin \
      --dataset_dir DATA/synthetic --out DATA/synthetic/ids/semantic_rq
  python tools/build_ids.py --gin_file gin/ids/semantic_rq.gin --embeddings EMB_DIR --out OUT
  python tools/build_ids.py --gin_file gin/ids/content.gin --dataset_dir DATA/synthetic \
      --spm_model DATA/synthetic/vocab/spm.model --out DATA/synthetic/ids/content
  python tools/build_ids.py --strategy integer --gin_bindings "build_id_table.strategy_kwargs = {'base': 64}" ...

Inputs: semantic strategies take `--embeddings` (a dir from `embeddings.save_embeddings`, or an .npy
with track_ids.txt beside it; memory-mapped, streamed when large) or compute CF embeddings from the
train playlists of `--dataset_dir` (also saved to OUT.embeddings/); content IDs take the catalog of
`--dataset_dir` and the SentencePiece model; integer IDs the catalog's (or embeddings') track ids.
Output: the `IdTable.save` dir plus stats.json (collision rate, cluster-size balance per level,
prefix sharing, codebook usage/entropy) and cluster_sizes.png (cluster sizes per level).
The builder is t2t_jax/ids/build.py (gin `build_id_table.*`); --compare runs t2t_jax/ids/compare.py.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from t2t_jax import console, gin_utils, io_utils  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.ids import compare  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.ids.build import build_id_table  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.ids.table import id_stats  # pylint: disable=g-import-not-at-top,wrong-import-position


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--gin_file", action="append", default=[],
                 help="gin/ids/*.gin (bundled files resolve from any working directory)")
  p.add_argument("--gin_bindings", action="append", default=[])
  p.add_argument("--strategy", default=None, help="overrides the gin file's strategy")
  p.add_argument("--out", required=True, help="ID table dir to write (replaced atomically); with --compare, "
                 "a JSON file for the comparison rows")
  p.add_argument("--compare", action="store_true",
                 help="build every strategy on --dataset_dir and print a markdown table of ID properties")
  p.add_argument("--embeddings", default=None)
  p.add_argument("--dataset_dir", default=None)
  p.add_argument("--spm_model", default=None)
  p.add_argument("--no_plots", action="store_true")
  p.add_argument("--no_progress", action="store_true")
  args = p.parse_args(argv)
  return console.run_main(lambda: _run(args))


def _print_table(rows: list[dict]) -> None:
  cols = list(rows[0])
  print("| " + " | ".join(cols) + " |")
  print("|" + "---|" * len(cols))
  for r in rows:
    print("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in r.values()) + " |")


def _run(args) -> None:
  if args.compare:
    if not args.dataset_dir:
      raise UserInputError("--compare needs --dataset_dir")
    rows = compare.compare_strategies(args.dataset_dir, args.spm_model)
    io_utils.write_json(args.out, rows)
    _print_table(rows)
    return
  # gin_utils resolves gin/ids/... (or ids/...) from any working directory, without gin's
  # package-path fallback (its misleading "ERROR:root:Path not found" log).
  gin_utils.parse_gin(args.gin_file, args.gin_bindings)
  overrides = {"out_dir": args.out, "plots": not args.no_plots, "progress": not args.no_progress}
  if args.strategy:
    overrides["strategy"] = args.strategy
  for key, value in (("embeddings_path", args.embeddings), ("dataset_dir", args.dataset_dir),
                     ("spm_model", args.spm_model)):
    if value:
      overrides[key] = value
  table = build_id_table(**overrides)
  stats = id_stats(table)
  print(f"wrote {args.out}: {table.num_tracks} tracks, {table.num_levels} levels {table.level_sizes}, "
        f"{table.meta.get('num_disambiguated', 0)} disambiguated, duplicate IDs {stats['duplicate_ids']} "
        f"({stats.get('num_unreachable_tracks', 0)} unreachable, collision policy {table.collision_policy})")


if __name__ == "__main__":
  sys.exit(main())
