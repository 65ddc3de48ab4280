"""The `t2t` command: quickstart, recommend, export, serve.

Thin: each subcommand parses flags and calls a module.  Errors a user can cause end with one line
`t2t: error: ...` naming the bad file/flag/value (exit 2), never a traceback from inside JAX.
"""

import argparse
import dataclasses
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
  from t2t_jax import quickstart  # pylint: disable=g-import-not-at-top  (light: no JAX at import)
  defaults = quickstart.QuickstartConfig()
  for field in dataclasses.fields(quickstart.QuickstartConfig):
    if field.name not in quickstart.HELP:
      continue
    value = getattr(defaults, field.name)
    kwargs = {"choices": quickstart.MODELS} if field.name == "model" else {}
    p.add_argument(f"--{field.name}", type=type(value), default=value,
                   help=quickstart.HELP[field.name], **kwargs)
  p.add_argument("--no_progress", action="store_true", help="no progress bars")


def _recommend_parser(sub) -> None:
  p = sub.add_parser("recommend", help="recommend tracks for prompts from a trained model dir",
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("prompts", nargs="*", help="prompts (or use --input)")
  p.add_argument("--model_dir", required=True, help="a model dir written by training / quickstart")
  p.add_argument("--input", help="a text file with one prompt per line")
  p.add_argument("-k", "--k", type=int, default=10, help="tracks per prompt")
  p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")


def _export_parser(sub) -> None:
  p = sub.add_parser(
      "export", help="export a model dir to a portable dir (jax.export function, weights, vocab, IDs)",
      description=(
          "Serializes the whole recommend function (tokenised prompts -> top-K track rows and scores, "
          "constrained beam search included) with jax.export, batch dimension symbolic, next to its "
          "weights and trie (arrays.safetensors), the SentencePiece model, the ID table, the track list, "
          "the weights in Hugging Face T5 naming (hf/) and export_runtime.py, which runs it with only "
          "numpy, jax and sentencepiece installed."),
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--model_dir", required=True, help="a model dir written by training / quickstart")
  p.add_argument("--out", required=True, help="export dir to write (replaced atomically)")
  p.add_argument("-k", "--k", type=int, default=10, help="tracks returned per prompt")
  p.add_argument("--beam_size", type=int, default=None, help="beam width (default: the model dir's; >= k)")
  p.add_argument("--platforms", default="cpu,cuda", help="lowering targets (comma-separated)")
  p.add_argument("--no_hf", action="store_true", help="skip the Hugging Face safetensors copy of the weights")


def _serve_parser(sub) -> None:
  p = sub.add_parser(
      "serve", help="HTTP JSON endpoint: POST /recommend, GET /health",
      description=(
          "Serves a model dir over HTTP. POST /recommend with {\"prompt\": str} or {\"prompts\": [str, ...]} "
          "and optional \"k\"; concurrent requests are gathered into one padded device call."),
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--model_dir", required=True, help="a model dir written by training / quickstart")
  p.add_argument("--host", default="127.0.0.1", help="address to bind")
  p.add_argument("--port", type=int, default=8080, help="port (0: any free port, printed at start)")
  p.add_argument("-k", "--k", type=int, default=10, help="default tracks per prompt")
  p.add_argument("--max_k", type=int, default=100, help="largest k a request may ask for")
  p.add_argument("--max_batch", type=int, default=32, help="most prompts in one device call")
  p.add_argument("--max_wait_ms", type=float, default=5.0,
                 help="under concurrent load, how long a batch waits for more requests (a lone request "
                      "is sent at once; 0: batch only what queued up during the previous device call)")
  p.add_argument("--max_prompts", type=int, default=32, help="most prompts in one request")
  p.add_argument("--max_body_bytes", type=int, default=64 * 1024, help="largest request body")
  p.add_argument("--no_warmup", action="store_true", help="skip compiling the default k's batch shapes at start")
  p.add_argument("--max_uptime_s", type=float, default=0.0,
                 help="stop by itself after this many seconds (0: run until SIGINT/SIGTERM)")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="t2t", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", required=True)
  _quickstart_parser(sub)
  _recommend_parser(sub)
  _export_parser(sub)
  _serve_parser(sub)
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
    elif args.command == "export":
      from t2t_jax import export  # pylint: disable=g-import-not-at-top
      export.run_from_args(args)
    elif args.command == "serve":
      from t2t_jax import serve  # pylint: disable=g-import-not-at-top
      serve.run_from_args(args)
  except UserInputError as e:
    print(f"t2t: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("t2t: interrupted", file=sys.stderr)
    return 130
  return 0


if __name__ == "__main__":
  sys.exit(main())
