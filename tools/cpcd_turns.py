"""CPCD's own turn-level evaluation of Text2Tracks and the baselines on an imported CPCD dataset dir.

  python tools/cpcd_turns.py --dataset_dir D --cpcd_dir RAW
      [--clusters RAW/cpcd_v1.dev.val.track_clusters.jsonl] [--methods most_popular,bm25,...]
      [--model_dir M [--beam_size B]] [--json docs/results/cpcd_turns/results.json]

D: a dataset dir made by `t2t import cpcd RAW` (its catalog, track_aliases.json and splits.json: the
test split's conversations are scored, the canonical one's being the 50 val-file conversations).
RAW: the CPCD folder the dataset was imported from (the conversations' turns and liked tracks).
--clusters: the dataset's track clusters (default: RAW/cpcd_v1.dev.val.track_clusters.jsonl when it
exists; "none": title + artists keys only).  The protocol (queries, seeds, gold, keys, metrics) is in
t2t_jax/studies/cpcd_turns.py.

Methods (fitted on D's train split: prompt = the playlist title as the tasks cut it, catalog texts as
t2t_jax/studies/baselines.py): most_popular, bm25, bi_encoder (zero-shot MiniLM-L6), bi_encoder_tuned
and hybrid (t2t_jax/studies/tuning.py, chosen on D's validation split), text2tracks (--model_dir: its
ID table must hold D's catalog in D's order), text2tracks_tuned (trained here on D's train split:
`fair_study.ADAPTED_FAMILY`, warm-started from this run's tuned bi-encoder, model dir under --work_dir;
--t2t_lexical_prior_weights 0,2,4 adds a BM25 prior inside its beam search, the weight chosen on D's
validation split).
Every row also carries the conversation-level scores of the fold study (the whole conversation as one
query, the goal playlist as gold: Hits/MAP@10) under "conversation".  A query's text gets what D's prompts got at import
(artist masking when D was imported with --artists masked) and the tasks' normalisation.

--json gets one row per method (macro and micro hit/recall/precision/MRR/MAP @1,5,10, scored
conversations and turns, train_seconds), the dataset authors' published development-set figures as a
reference (their catalog is the full CPCD track set, larger than ours: not a comparison), and the
machine.  Each row also holds its per-conversation macro hit/recall/MRR/MAP@k, in the order of
data.conversation_ids.

  python tools/cpcd_turns.py --aggregate RESULTS_JSON... [--json docs/results/cpcd_turns/seeds_summary.json]

--aggregate: mean and sample std over runs (one results file per training seed), and a paired bootstrap
over the test conversations (each conversation's macro value averaged over the runs; the runs must have
scored the same conversations) of every text2tracks* row minus bi_encoder_tuned and minus hybrid, macro
hit@10 and mrr@10: delta, 95% CI, p, n.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from typing import Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from t2t_jax import console, io_utils, report  # noqa: E402  pylint: disable=wrong-import-position
from t2t_jax.errors import UserInputError  # noqa: E402  pylint: disable=wrong-import-position
from t2t_jax.studies import cpcd_turns, turns_study  # noqa: E402  pylint: disable=wrong-import-position


def _floats(text: str, flag: str = "--hybrid_weights") -> list[float]:
  try:
    values = [float(x) for x in text.split(",") if x.strip()]
  except ValueError:
    raise UserInputError(f"{flag}: expected comma-separated numbers, got {text!r}") from None
  if any(not 0 <= v < float("inf") for v in values):
    raise UserInputError(f"{flag}: expected finite numbers >= 0, got {text!r}")
  return values


def aggregate(paths: Sequence[str], out: str | None) -> dict:
  """`--aggregate`: mean / spread over the runs in `paths` (one results file per training seed) and the
  paired bootstraps of `cpcd_turns.aggregate_runs`, printed and written to `out`."""
  runs = []
  for path in paths:
    try:
      with open(path, encoding="utf-8") as f:
        runs.append((path, json.load(f)))
    except (OSError, json.JSONDecodeError) as e:
      raise UserInputError(f"--aggregate {path}: not a readable results file ({e})") from None
  summary = cpcd_turns.aggregate_runs(runs)
  summary["seeds"] = [r.get("seed") for _, r in runs]
  summary["command"] = shlex.join(["python", "tools/cpcd_turns.py", "--aggregate", *paths] + (["--json", out] if out else []))
  for m in summary["methods"]:
    h = m["macro"]["hit@10"]
    print(f"{m['name']:18s} macro hit@10 {h['mean']:.3f} +- {h['std']:.3f} over {summary['num_runs']} runs "
          f"({', '.join(f'{v:.3f}' for v in h['values'])})")
  for bt in summary["paired_bootstrap"]:
    print(f"paired bootstrap {bt['text2tracks']} - {bt['baseline']} ({bt['resampling']}): " + "; ".join(
        f"macro {m} {bt[m]['delta']:+.3f} [{bt[m]['ci'][0]:+.3f}, {bt[m]['ci'][1]:+.3f}] p={bt[m]['p']:.4f}"
        for m in cpcd_turns.PAIRED_METRICS))
  if not summary["paired_bootstrap"]:
    print(f"no paired bootstrap: no row named {cpcd_turns.TEXT2TRACKS_PREFIX}* beside "
          f"{' or '.join(cpcd_turns.PAIRED_BASELINES)} in every run")
  if out:
    io_utils.write_json(out, summary)
  return summary


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--aggregate", nargs="+", metavar="RESULTS_JSON",
                 help="instead of running: mean and spread over these results files (one per training seed) "
                      "and paired bootstraps of the text2tracks rows vs bi_encoder_tuned and hybrid over the "
                      "conversations, printed and written to --json")
  p.add_argument("--dataset_dir", help="a dataset dir made by `t2t import cpcd`")
  p.add_argument("--cpcd_dir", help="the raw CPCD folder it was imported from")
  p.add_argument("--clusters", default="", help=f"track clusters JSONL (default: CPCD_DIR/{cpcd_turns.CLUSTERS_FILE} "
                 "if present; 'none': title + artists keys only)")
  p.add_argument("--methods", default="most_popular,bm25", help=f"comma-separated, from {', '.join(turns_study.METHODS)}")
  p.add_argument("--model_dir", help="a Text2Tracks model dir trained on --dataset_dir (method text2tracks)")
  p.add_argument("--beam_size", type=int, help="text2tracks beam size (default: the model's)")
  p.add_argument("--k", type=int, default=10, help="metrics at 1, 5 and k")
  p.add_argument("--max_turns", type=int, default=cpcd_turns.MAX_TURNS, help="0: every turn")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--track_text", default="metadata", help="bi-encoder track text (baselines/catalog.py)")
  p.add_argument("--threads", type=int, default=1, help="torch intra-op threads of the bi-encoders")
  p.add_argument("--cache_dir", help="cache zero-shot bi-encoder embeddings here")
  p.add_argument("--tune_grid", default="{}", help="JSON grid for tuning.tune_bi_encoder")
  p.add_argument("--hybrid_weights", default="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1",
                 help="weights tried by tuning.tune_hybrid")
  p.add_argument("--hybrid_depth", type=int, default=100, help="candidates per retriever fused by the hybrid")
  p.add_argument("--batch_size", type=int, default=64, help="prompts per text2tracks call")
  p.add_argument("--work_dir", help="text2tracks_tuned: where its dataset copy, encoder and model dir go")
  p.add_argument("--t2t_train_steps", type=int, help="text2tracks_tuned training steps (default: the recipe's 300)")
  p.add_argument("--t2t_lexical_prior_weights", default="",
                 help="text2tracks_tuned: a BM25 prior inside beam search, its weight chosen among these "
                      "(comma-separated, e.g. 0,2,4) on the validation split; default: none")
  p.add_argument("--t2t_dense_prior_weights", default="",
                 help="text2tracks_tuned: a dense prior inside beam search (its tuned bi-encoder's track vectors, "
                      "cosine with the prompt under the model's frozen encoder), its weight chosen among these "
                      "(e.g. 0,10,20) jointly with the BM25 prior's on the validation split; default: none")
  p.add_argument("--json", help="results file, written atomically (e.g. docs/results/cpcd_turns/results.json)")
  args = p.parse_args(argv)
  return console.run_main(lambda: _run(args, argv), "cpcd_turns")


def _run(args, argv) -> None:
  if args.aggregate:
    aggregate(args.aggregate, args.json)
    return
  if not args.dataset_dir or not args.cpcd_dir:
    raise UserInputError("--dataset_dir and --cpcd_dir are required (unless --aggregate)")
  try:
    grid = json.loads(args.tune_grid)
  except json.JSONDecodeError as e:
    raise UserInputError(f"--tune_grid: not JSON ({e.msg})") from None
  if not isinstance(grid, dict):
    raise UserInputError("--tune_grid: expected a JSON object")
  if args.k < 1 or args.max_turns < 0 or args.batch_size < 1:
    raise UserInputError("--k and --batch_size must be >= 1, --max_turns >= 0")
  out = turns_study.run(
      args.dataset_dir, args.cpcd_dir, methods=[m.strip() for m in args.methods.split(",") if m.strip()],
      clusters=args.clusters or None, model_dir=args.model_dir, beam_size=args.beam_size, k=args.k,
      max_turns=args.max_turns or None, seed=args.seed, track_text=args.track_text, threads=args.threads,
      cache_dir=args.cache_dir, tune_grid=grid, hybrid_weights=_floats(args.hybrid_weights),
      hybrid_depth=args.hybrid_depth, batch_size=args.batch_size, work_dir=args.work_dir,
      t2t_train_steps=args.t2t_train_steps,
      t2t_lexical_prior_weights=_floats(args.t2t_lexical_prior_weights, "--t2t_lexical_prior_weights") or None,
      t2t_dense_prior_weights=_floats(args.t2t_dense_prior_weights, "--t2t_dense_prior_weights") or None)
  out["seed"] = args.seed
  out["command"] = shlex.join(["python", "tools/cpcd_turns.py"] + (sys.argv[1:] if argv is None else list(argv)))  # quoted: re-runnable
  out["machine"] = report.machine_info()
  for ref in out["reference"]["rows"]:
    print(f"{'reference':18s} macro hit@10 {ref['macro']['hit@10']:.3f}  {ref['method']}")
  if args.json:
    io_utils.write_json(args.json, out)


if __name__ == "__main__":
  sys.exit(main())
