"""The `t2t` command: quickstart, recommend, export, serve.

Thin: each subcommand parses flags and calls a module.  Errors a user can cause end with one line
`t2t: error: ...` naming the bad file/flag/value (exit 2), never a traceback from inside JAX.
"""

import argparse
import os
import sys


def _quickstart_parser(sub) -> None:
  p = sub.add_parser(
      "quickstart",
      help="run the whole pipeline on the built-in synthetic catalog",
      description=(
          "Runs Text2Tracks end to end on the built-in synthetic catalog: generate playlists -> "
          "CF track embeddings -> semantic IDs (residual k-means) -> SeqIO task -> train a tiny T5 -> "
          "constrained beam search -> Hits/MAP/NDCG@10 next to BM25 and most-popular baselines. "
          "Prints a results table and example recommendations, and writes OUT/report.md and "
          "OUT/report.json. The model dir (checkpoint, vocabulary, ID table, catalog) is left in "
          "WORK_DIR/model for `t2t recommend`."),
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--out", default="report", help="report folder (report.md, report.json)")
  p.add_argument("--work_dir", default="t2t_runs/quickstart", help="dataset, IDs and model dir go here")
  p.add_argument("--seed", type=int, default=0, help="seed of the catalog, splits, k-means and training")
  p.add_argument("--num_tracks", type=int, default=3000, help="synthetic catalog size")
  p.add_argument("--num_playlists", type=int, default=5000, help="synthetic playlists")
  p.add_argument("--vocab_size", type=int, default=2000, help="SentencePiece text vocabulary size")
  p.add_argument("--embedding_dim", type=int, default=64, help="CF embedding dimension")
  p.add_argument("--id_levels", default="64,64,64",
                 help="semantic ID codebook sizes per level (a disambiguation level is added)")
  p.add_argument("--model", default="tiny", choices=["tiny", "small"], help="T5.1.1 size")
  p.add_argument("--train_steps", type=int, default=1500, help="training steps")
  p.add_argument("--batch_size", type=int, default=128, help="global training batch size")
  p.add_argument("--learning_rate", type=float, default=3e-3, help="peak learning rate (Adafactor)")
  p.add_argument("--beam_size", type=int, default=20, help="constrained beam search width (>= k)")
  p.add_argument("--k", type=int, default=10, help="tracks recommended per prompt")
  p.add_argument("--eval_playlists", type=int, default=400, help="held-out playlists evaluated (0 = all)")
  p.add_argument("--prompt_field", default="title", help="prompt source: title, description or both")
  p.add_argument("--no_progress", action="store_true", help="no progress bars")


def _recommend_parser(sub) -> None:
  p = sub.add_parser("recommend", help="recommend tracks for prompts from a trained model dir",
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("prompts", nargs="*", help="prompts (or use --input)")
  p.add_argument("--model_dir", required=True, help="a model dir written by training / quickstart")
  p.add_argument("--input", help="a text file with one prompt per line")
  p.add_argument("-k", "--k", type=int, default=10, help="tracks per prompt")
  p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="t2t", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", required=True)
  _quickstart_parser(sub)
  _recommend_parser(sub)
  args = parser.parse_args(argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  from t2t_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top
  try:
    if args.command == "quickstart":
      from t2t_jax import quickstart  # pylint: disable=g-import-not-at-top
      quickstart.run_from_args(args)
    elif args.command == "recommend":
      from t2t_jax import recommend  # pylint: disable=g-import-not-at-top
      recommend.run_from_args(args)
  except UserInputError as e:
    print(f"t2t: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("t2t: interrupted", file=sys.stderr)
    return 130
  return 0


if __name__ == "__main__":
  sys.exit(main())
