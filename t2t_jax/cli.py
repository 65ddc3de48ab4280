"""The `t2t` command: import, quickstart, recommend, export, serve, plot.

Thin: each subcommand parses flags and calls a module.  Errors a user can cause end with one line
`t2t: error: ...` naming the bad file/flag/value (exit 2), never a traceback from inside JAX.
The libraries' logs are quiet unless `--verbose` (before or after the subcommand; t2t_jax.console).
"""

import argparse
import dataclasses
import sys
import typing

from t2t_jax.errors import UserInputError


def _flag_type(field, value):
  """The argparse type of a config field: its default's type, or for a None default the
  non-None member of its `X | None` annotation."""
  if value is not None:
    return type(value)
  args = [a for a in typing.get_args(field.type) if a is not type(None)]
  assert len(args) == 1, f"field {field.name}: annotate a None default as `X | None`"
  return args[0]


def _quickstart_parser(sub) -> None:
  p = sub.add_parser(
      "quickstart",
      help="run the whole pipeline on the built-in synthetic catalog or your imported dataset",
      description=(
          "Runs Text2Tracks end to end on the built-in synthetic catalog (or, with --dataset_dir, on "
          "a dataset dir written by `t2t import`, which is only read): generate playlists -> "
          "CF track embeddings -> semantic IDs (residual k-means) -> SeqIO task -> train a tiny T5 -> "
          "constrained beam search -> Hits/MAP/NDCG@10 next to BM25 and most-popular baselines. "
          "With --dataset_dir, --model auto (the default) instead trains the best measured recipe whose "
          "extras are installed (the pretrained MiniLM encoder, adapted in-domain first, and a decoder over "
          "one ID token per track) and prints which it picked and why. "
          "Prints a results table and example recommendations, and writes OUT/report.md and "
          "OUT/report.json. The model dir (checkpoint, vocabulary, ID table, catalog) is left in "
          "WORK_DIR/model for `t2t recommend`."),
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  from t2t_jax import quickstart  # pylint: disable=g-import-not-at-top  (lazy: cli dispatch; quickstart loads no JAX)
  defaults = quickstart.QuickstartConfig()
  for field in dataclasses.fields(quickstart.QuickstartConfig):
    if field.name not in quickstart.HELP:
      continue
    value = getattr(defaults, field.name)
    if _flag_type(field, value) is bool:  # a switch: --adapt_encoder (unset: None, the config decides)
      p.add_argument(f"--{field.name}", action="store_true", default=value, help=quickstart.HELP[field.name])
      continue
    kwargs = {"choices": quickstart.MODELS} if field.name == "model" else {}
    if field.name == "prompt_field":
      kwargs = {"choices": ("auto", "title", "description", "both")}
    p.add_argument(f"--{field.name}", type=_flag_type(field, value), default=value,
                   help=quickstart.HELP[field.name], **kwargs)
  p.add_argument("--no_progress", action="store_true", help="no progress bars")
  p.add_argument("--overwrite", action="store_true",
                 help="use --out / --work_dir even if they are non-empty dirs that quickstart did not write")


def _no_verify_flag(p) -> None:
  p.add_argument("--no_verify", action="store_true",
                 help="skip checking the checkpoint's files against their sha256 manifest (trusted "
                      "storage only; same as T2T_VERIFY_CHECKPOINTS=0)")


def _recommend_parser(sub) -> None:
  p = sub.add_parser("recommend", help="recommend tracks for prompts from a trained model dir",
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("prompts", nargs="*", help="prompts (or use --input)")
  p.add_argument("--model_dir", required=True, help="a model dir written by training / quickstart")
  p.add_argument("--input", help="a text file with one prompt per line")
  p.add_argument("-k", "--k", type=int, default=10, help="tracks per prompt")
  p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
  p.add_argument("--lexical_prior", type=float, default=None, metavar="W",
                 help="weight of the BM25 prior inside beam search (0: off); default: the model dir's "
                      "(recommend.json lexical_prior_weight, set by quickstart on validation)")
  p.add_argument("--dense_prior", type=float, default=None, metavar="W",
                 help="weight of the dense prior (cosine of the prompt's encoder embedding with each track's "
                      "vector) inside beam search (0: off); default: the model dir's (recommend.json "
                      "dense_prior_weight)")
  _no_verify_flag(p)


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
  p.add_argument("--out", required=True,
                 help="export dir to write (atomically; a previous export there is replaced)")
  p.add_argument("-k", "--k", type=int, default=10, help="tracks returned per prompt")
  p.add_argument("--beam_size", type=int, default=None, help="beam width (default: the model dir's; >= k)")
  p.add_argument("--platforms", default="cpu,cuda", help="lowering targets (comma-separated)")
  p.add_argument("--no_hf", action="store_true", help="skip the Hugging Face safetensors copy of the weights")
  p.add_argument("--overwrite", action="store_true",
                 help="replace --out even if it is a non-empty dir that is not a previous export")
  _no_verify_flag(p)


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
  p.add_argument("--k_buckets", default="auto",
                 help="top-K sizes computed (a request for k gets the smallest >= k, sliced), e.g. 10,20,50,100; "
                      "auto: the model's beam size, then doubling up to --max_k")
  p.add_argument("--no_warmup", action="store_true",
                 help="skip compiling every (k bucket, batch) shape at start (requests then compile on first use)")
  p.add_argument("--max_connections", type=int, default=256,
                 help="most open connections (lowered to the open-file limit); at the limit a new connection "
                      "closes the oldest one with no request computing")
  p.add_argument("--idle_timeout_s", type=float, default=15.0,
                 help="close a connection with no request in progress for this long (also bounds slow headers)")
  p.add_argument("--body_timeout_s", type=float, default=10.0, help="a request body must arrive within this (408)")
  p.add_argument("--api_key_file", default=None,
                 help="file holding the API key clients must send ('Authorization: Bearer KEY' or 'X-API-Key: KEY'); "
                      "default: $T2T_API_KEY if set, else no key. The key itself is never a flag.")
  p.add_argument("--max_uptime_s", type=float, default=0.0,
                 help="stop by itself after this many seconds (0: run until SIGINT/SIGTERM)")
  _no_verify_flag(p)


def _import_common(p, splits: bool = True) -> None:
  p.add_argument("--out", required=True, help="dataset dir to write (atomically)")
  p.add_argument("--overwrite", action="store_true",
                 help="replace --out even when it is a non-empty folder not written by `t2t import`")
  p.add_argument("--seed", type=int, default=0, help="seed of the splits (and folds)")
  p.add_argument("--vocab_size", type=int, default=8000,
                 help="SentencePiece vocabulary size, trained on the training prompts and the catalog "
                      "metadata (an upper bound on small data; 0: no vocabulary)")
  p.add_argument("--spm", default=None, help="use this SentencePiece model (T5 ids) instead of training one")
  p.add_argument("--on_error", default="raise", choices=["raise", "skip"],
                 help="bad records: stop with an error naming file:line, or skip and count them")
  if splits:
    g = p.add_argument_group("split sizes (default: validation and test get max(10%, 50) playlists "
                             "each, or 10% each when that would leave under 60% for training)")
    g.add_argument("--validation_fraction", type=float, default=None)
    g.add_argument("--test_fraction", type=float, default=None)
    g.add_argument("--validation_size", type=int, default=None, help="playlists")
    g.add_argument("--test_size", type=int, default=None, help="playlists")


def _import_parser(sub) -> None:
  p = sub.add_parser(
      "import", help="import your playlists (JSONL/CSV/Parquet, MPD, CPCD) into a dataset dir",
      description=(
          "Validates a catalog and playlists and writes a dataset dir that is complete for training: "
          "catalog.jsonl, playlists.jsonl, splits.json, vocab/spm.model and meta.json (counts, skipped "
          "records, prompt lengths). Nothing is written when an input is rejected."))
  formats_sub = p.add_subparsers(dest="import_format", required=True, metavar="FORMAT")
  for fmt in ("jsonl", "csv", "parquet"):
    q = formats_sub.add_parser(
        fmt, help=f"catalog as {fmt.upper()} + playlists JSONL",
        description=(
            f"CATALOG: a {fmt.upper()} table of tracks (track_id, artist, title, album, tags). PLAYLISTS: "
            "JSONL, one {\"playlist_id\", \"title\", \"description\", \"track_ids\": [...]} a line. "
            "A track listed twice in a playlist is kept once; HTML in titles/descriptions is cleaned; "
            "playlists with no prompt text are skipped (all counted in meta.json)."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    q.add_argument("catalog")
    q.add_argument("playlists")
    q.add_argument("--splits", default=None, help="a splits.json to use instead of drawing splits")
    _import_common(q)
  q = formats_sub.add_parser("mpd", help="Spotify Million Playlist Dataset slices",
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  q.add_argument("slices", help="an mpd.slice.*.json file or a folder of them")
  _import_common(q)
  q = formats_sub.add_parser(
      "cpcd", help="the Conversational Playlist Curation Dataset (development set)",
      description=(
          "CPCD (Chaganty et al. 2023, arXiv 2303.06791, CC BY 4.0): one playlist per conversation, the "
          "user turns as the prompt, the goal tracks (deduplicated by title and artists) as the playlist. "
          "splits.json: test = the 50 canonical validation conversations, validation = a seeded part of "
          "the training ones; folds.json: seeded k folds over all conversations."),
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  q.add_argument("cpcd_dir", help="folder with cpcd_v1.dialogs.dev.{train,val}.jsonl")
  q.add_argument("--prompt", default="all_user_turns", choices=["all_user_turns", "first_turn"])
  q.add_argument("--artists", default="as_written", choices=["as_written", "masked", "entities_masked"],
                 help="masked: catalog artist names removed from the prompts, common-word names kept "
                      "(rule in meta.json); entities_masked: also each conversation's own artists "
                      "(common words too), goal and liked titles, misspellings and unambiguous first or "
                      "last names, decided from the conversation's tracks (rule in meta.json; "
                      "tools/check_masking.py measures what is left)")
  q.add_argument("--num_folds", type=int, default=5, help="k of the k-fold cross-validation folds")
  q.add_argument("--validation_fraction", type=float, default=0.1,
                 help="share of the canonical training conversations held out for validation (at least 20)")
  _import_common(q, splits=False)


def _plot_parser(sub) -> None:
  p = sub.add_parser(
      "plot", help="training curves of a model dir as a PNG (loss, token accuracy, learning rate, examples/s)",
      description=(
          "Draws MODEL_DIR/metrics.jsonl (written by training beside the TensorBoard events) as one PNG: "
          "loss, token accuracy, learning rate and examples/s against the step, with the eval loss and "
          "accuracy when they were logged. Training draws the same figure when it finishes."))
  p.add_argument("model_dir", help="a model dir written by training / quickstart")
  p.add_argument("--out", default=None,
                 help="PNG to write (atomically); default: MODEL_DIR/training_curves.png")


def run_plot(args) -> str:
  """Runs `t2t plot MODEL_DIR`; prints the path written (and the series not logged)."""
  from t2t_jax import plots  # pylint: disable=g-import-not-at-top  (lazy: cli dispatch)
  path, notes = plots.training_curves(args.model_dir, args.out)
  print(f"Training curves: {path}" + (f" ({'; '.join(notes)})" if notes else ""))
  return path


def _add_verbose(parser, top: bool = True) -> None:
  """`--verbose` on the top-level parser and every (nested) subcommand, so it goes before or after
  the subcommand; a subcommand's flag defaults to unset so it never resets the top-level one."""
  parser.add_argument("--verbose", action="store_true", default=False if top else argparse.SUPPRESS,
                      help="show the logs of TensorFlow, JAX, orbax and the other libraries "
                           "(quiet by default)")
  for action in parser._actions:  # pylint: disable=protected-access  (argparse has no public walk)
    if isinstance(action, argparse._SubParsersAction):  # pylint: disable=protected-access
      for child in action.choices.values():
        _add_verbose(child, top=False)


def _summary(meta: dict, out: str) -> str:
  sizes = meta.get("split_sizes", {})
  rs = meta.get("read_stats", {})
  parts = rs.values() if rs and all(isinstance(v, dict) for v in rs.values()) else [rs]
  counted = {}
  for part in parts:
    for key in ("skipped", "playlists_skipped", "duplicate_tracks_in_playlists", "unknown_tracks_dropped",
                "empty_prompt_playlists"):
      counted[key] = counted.get(key, 0) + int(part.get(key, 0) or 0)
  for key in ("conversations_without_goal", "video_ids_merged", "masked_replacements"):
    if key in meta:
      counted[key] = meta[key]
  extra = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counted.items() if v)
  vocab = meta.get("vocab") or {}
  chars = meta.get("prompt_stats", {}).get("chars", {})
  text = (f"Imported {meta.get('num_tracks')} tracks and {meta.get('num_playlists')} playlists into {out} "
          f"(train {sizes.get('train', 0)}, validation {sizes.get('validation', 0)}, test {sizes.get('test', 0)}; "
          f"{meta.get('split_rule', '')}).")
  if extra:
    text += f" Counted: {extra}."
  if vocab:
    text += f" SentencePiece vocabulary: {vocab.get('size')} pieces ({vocab.get('source')}), {vocab.get('path')}."
  if chars:
    text += (f" Prompt length (characters): median {chars.get('p50', 0):.0f}, p99 {chars.get('p99', 0):.0f}, "
             f"max {chars.get('max', 0)}; tasks cut at {meta.get('prompt_max_chars')}.")
  return text


def run_import(args) -> dict:
  """Runs `t2t import FORMAT ...`; prints the summary (warnings to stderr); returns meta."""
  from t2t_jax.data import convert, cpcd, mpd  # pylint: disable=g-import-not-at-top  (lazy: cli dispatch)
  common = dict(seed=args.seed, vocab_size=args.vocab_size, spm_path=args.spm, on_error=args.on_error,
                overwrite=args.overwrite)
  if args.import_format == "cpcd":
    meta = cpcd.convert_cpcd(args.cpcd_dir, args.out, prompt=args.prompt, artists=args.artists,
                             num_folds=args.num_folds, validation_fraction=args.validation_fraction, **common)
  else:
    sizes = dict(validation_fraction=args.validation_fraction, test_fraction=args.test_fraction,
                 validation_size=args.validation_size, test_size=args.test_size)
    if args.import_format == "mpd":
      meta = mpd.convert_mpd(args.slices, args.out, **sizes, **common)
    else:
      meta = convert.import_dataset(args.catalog, args.playlists, args.out, splits_path=args.splits,
                                    catalog_format=args.import_format, **sizes, **common)
  for w in meta.get("warnings", []):
    print(f"t2t: warning: {w}", file=sys.stderr)
  print(_summary(meta, args.out))
  return meta


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="t2t", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", required=True)
  _import_parser(sub)
  _quickstart_parser(sub)
  _recommend_parser(sub)
  _export_parser(sub)
  _serve_parser(sub)
  _plot_parser(sub)
  _add_verbose(parser)
  args = parser.parse_args(argv)
  from t2t_jax import console  # pylint: disable=g-import-not-at-top  (lazy: cli dispatch; tqdm not for --help)
  console.configure(args.verbose)  # before anything imports TensorFlow
  try:
    if args.command == "import":
      run_import(args)
    elif args.command == "quickstart":
      from t2t_jax import quickstart  # pylint: disable=g-import-not-at-top  (lazy: cli dispatch)
      quickstart.run_from_args(args)
    elif args.command == "recommend":
      from t2t_jax.serving import recommend  # pylint: disable=g-import-not-at-top  (lazy: cli dispatch, JAX)
      recommend.run_from_args(args)
    elif args.command == "export":
      from t2t_jax.serving import export  # pylint: disable=g-import-not-at-top  (lazy: cli dispatch, JAX)
      export.run_from_args(args)
    elif args.command == "serve":
      from t2t_jax.serving import serve  # pylint: disable=g-import-not-at-top  (lazy: cli dispatch, JAX)
      serve.run_from_args(args)
    elif args.command == "plot":
      run_plot(args)
  except UserInputError as e:
    print(f"t2t: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("t2t: interrupted", file=sys.stderr)
    return 130
  return 0


if __name__ == "__main__":
  sys.exit(main())
