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
`fair_study.ADAPTED_FAMILY`, warm-started from this run's tuned bi-encoder, model dir under --work_dir).
Every row also carries the conversation-level scores of the fold study (the whole conversation as one
query, the goal playlist as gold: Hits/MAP@10) under "conversation".  A query's text gets what D's prompts got at import
(artist masking when D was imported with --artists masked) and the tasks' normalisation.

--json gets one row per method (macro and micro hit/recall/precision/MRR/MAP @1,5,10, scored
conversations and turns, train_seconds), the dataset authors' published development-set figures as a
reference (their catalog is the full CPCD track set, larger than ours: not a comparison), and the
machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Sequence

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from t2t_jax import io_utils  # noqa: E402  pylint: disable=wrong-import-position
from t2t_jax.baselines import bm25, popularity  # noqa: E402  pylint: disable=wrong-import-position
from t2t_jax.baselines.catalog import CatalogTexts  # noqa: E402  pylint: disable=wrong-import-position
from t2t_jax.data import cpcd, formats, prompts as prompts_lib  # noqa: E402  pylint: disable=wrong-import-position
from t2t_jax.errors import UserInputError  # noqa: E402  pylint: disable=wrong-import-position
from t2t_jax.studies import baselines as baselines_study  # noqa: E402  pylint: disable=wrong-import-position
from t2t_jax import evaluation  # noqa: E402  pylint: disable=wrong-import-position
from t2t_jax.studies import cpcd_turns, fair_study, pipeline  # noqa: E402  pylint: disable=wrong-import-position

METHODS = ("most_popular", "bm25", "bi_encoder", "bi_encoder_tuned", "hybrid", "text2tracks", "text2tracks_tuned")
LABELS = {"most_popular": baselines_study.BASELINE_LABELS["most_popular"],
          "bm25": baselines_study.BASELINE_LABELS["bm25"],
          "bi_encoder": baselines_study.BASELINE_LABELS["bi_encoder"],
          "bi_encoder_tuned": "Bi-encoder fine-tuned, chosen on validation (MiniLM-L6)",
          "hybrid": "Hybrid BM25 + tuned bi-encoder, weight chosen on validation",
          "text2tracks": "Text2Tracks (--model_dir)",
          "text2tracks_tuned": "Text2Tracks over the tuned bi-encoder's encoder (per-track IDs fixed at its embeddings)"}
ROUND = 4


def _split_prompts(ds: formats.Dataset, split: str, max_chars: int) -> tuple[list[str], list[list[int]]]:
  """(prompts as the tasks cut them, catalog rows) of a split's playlists."""
  playlists = list(ds.playlists(split))
  return ([prompts_lib.make_prompt(p, "title", max_chars=max_chars) for p in playlists],
          [[ds.track_row[t] for t in p.track_ids] for p in playlists])


def _text_fn(ds: formats.Dataset, dialogs: list[cpcd_turns.Dialog], max_chars: int) -> cpcd_turns.TextFn:
  """A query text as D's prompts were made: the importer's masking (meta.json "artists": "masked" with
  the catalog's artists, "entities_masked" also with the conversation's own names), then the tasks'
  cleaning, normalisation and cut (`prompts.make_prompt`)."""
  mode = ds.meta.get("artists", "as_written")
  songs = cpcd._songs([d.conversation for d in dialogs])[1]  # pylint: disable=protected-access
  artists = [a for s in songs.values() for a in s[1]]  # the importer's catalog artists
  if mode == "as_written":
    mask = None
  elif mode == "masked":
    masker = cpcd.ArtistMasker(artists)
    mask = lambda text, conv: masker.mask(text)[0]  # noqa: E731
  elif mode == "entities_masked":
    entity_masker = cpcd.EntityMasker(songs.values())
    names = cpcd._conversation_names  # pylint: disable=protected-access  (the importer's own choice of names)
    mask = lambda text, conv: entity_masker.mask(text, *names(conv))[0]  # noqa: E731
  else:
    raise UserInputError(f"--dataset_dir {ds.directory}: meta.json artists={mode!r}: this tool cannot "
                         "redo that masking on turn queries")

  def fn(text: str, conv) -> str:
    if mask is not None:
      text = mask(text, conv)
    text = prompts_lib.normalize_text(prompts_lib.clean_text(text))
    return prompts_lib.truncate(text, max_chars)
  return fn


def _text2tracks_rank_fn(model_dir: str, beam_size: int | None, track_ids: list[str], batch_size: int):
  """rank_fn over a Text2Tracks model dir whose ID table rows are the dataset's catalog rows."""
  from t2t_jax import recommend  # pylint: disable=g-import-not-at-top  (JAX: only for this method)
  rec = recommend.Recommender.load(model_dir, beam_size=beam_size)
  table_ids = list(rec.id_table.track_ids)
  if table_ids != track_ids:
    diff = next((i for i, (a, b) in enumerate(zip(table_ids, track_ids)) if a != b),
                min(len(table_ids), len(track_ids)))
    raise UserInputError(f"--model_dir {model_dir}: its ID table's tracks are not --dataset_dir's catalog "
                         f"({len(table_ids)} vs {len(track_ids)} tracks, first difference at row {diff})")

  def rank(texts: list[str], n: int):
    return np.concatenate([rec.recommend_rows(texts[s:s + batch_size], n)[0]
                           for s in range(0, len(texts), batch_size)])
  return rank


def _row(name: str, result: dict, train_seconds: float | None, **extra) -> dict:
  row = {"method": LABELS[name], "name": name,
         "macro": {k: round(v, ROUND) for k, v in result["macro"].items()},
         "micro": {k: round(v, ROUND) for k, v in result["micro"].items()},
         **{k: result[k] for k in ("num_conversations", "num_turns", "turns_skipped", "empty_queries",
                                   "candidates", "rank_seconds")},
         "per_turn": {k: [round(x, ROUND) for x in v] if k.startswith("hit@") else v
                      for k, v in result["per_turn"].items()},
         "train_seconds": None if train_seconds is None else round(train_seconds, 1), **extra}
  print(f"{name:18s} macro hit@10 {row['macro'].get('hit@10', float('nan')):.3f}  "
        f"micro hit@10 {row['micro'].get('hit@10', float('nan')):.3f}  "
        f"macro recall@10 {row['macro'].get('recall@10', float('nan')):.3f}  "
        f"macro map@10 {row['macro'].get('map@10', float('nan')):.3f}  "
        f"train {row['train_seconds'] if train_seconds is not None else '-'} s", flush=True)
  return row


def reference_rows() -> dict:
  """The dataset authors' published development-set figures, labelled as a reference."""
  return {"label": "reference, not a comparison: " + cpcd_turns.PUBLISHED_DEV_SOURCE,
          "rows": [{"method": name, "macro": {k: v[0] for k, v in m.items()}, "micro": {k: v[1] for k, v in m.items()},
                    "num_conversations": 448, "num_turns": 2396}
                   for name, m in cpcd_turns.PUBLISHED_DEV.items()]}


def _check_methods(methods: list[str], model_dir: str | None) -> list[str]:
  unknown = [m for m in methods if m not in METHODS]
  if unknown or not methods:
    raise UserInputError(f"--methods: unknown {unknown or methods!r}; choose from {', '.join(METHODS)}")
  if "text2tracks" in methods and not model_dir:
    raise UserInputError("--methods text2tracks needs --model_dir")
  return list(dict.fromkeys(methods))


def _clusters_path(cpcd_dir: str, clusters: str | None) -> str | None:
  if clusters == "none":
    return None
  if clusters:
    if not os.path.isfile(clusters):
      raise UserInputError(f"--clusters {clusters}: no such file")
    return clusters
  found = os.path.join(cpcd_dir, cpcd_turns.CLUSTERS_FILE)
  return found if os.path.isfile(found) else None


def run(dataset_dir: str, cpcd_dir: str, *, methods=("most_popular", "bm25"), clusters: str | None = None,
        model_dir: str | None = None, beam_size: int | None = None, k: int = 10,
        max_turns: int | None = cpcd_turns.MAX_TURNS, seed: int = 0, track_text: str = "metadata",
        threads: int | None = 1, cache_dir: str | None = None, tune_grid: dict | None = None,
        hybrid_weights=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0), hybrid_depth: int = 100,
        batch_size: int = 64, work_dir: str | None = None, t2t_train_steps: int | None = None) -> dict:
  """Scores `methods` on D's test conversations turn by turn; returns the results document."""
  methods = _check_methods(list(methods), model_dir)
  files = [os.path.join(cpcd_dir, f) for f in (cpcd.TRAIN_FILE, cpcd.VAL_FILE)]
  if not os.path.isdir(cpcd_dir) or not all(os.path.isfile(f) for f in files):
    raise UserInputError(f"--cpcd_dir {cpcd_dir}: expected a folder with {cpcd.TRAIN_FILE} and {cpcd.VAL_FILE}")
  clusters_file = _clusters_path(cpcd_dir, clusters)
  ds = formats.Dataset.load(dataset_dir)
  if ds.meta.get("source") != "cpcd":
    raise UserInputError(f"--dataset_dir {dataset_dir}: not a CPCD import (meta.json source "
                         f"{ds.meta.get('source')!r}; make one with `t2t import cpcd`)")
  dialogs = [d for f in files for d in cpcd_turns.read_dialogs(f)]
  keys = cpcd_turns.TrackKeys.from_dialogs(
      dialogs, clusters=cpcd_turns.read_clusters(clusters_file) if clusters_file else None,
      aliases=cpcd_turns.read_aliases(dataset_dir))
  try:
    cat_keys = cpcd_turns.catalog_keys(ds.tracks, keys)
  except UserInputError as e:
    raise UserInputError(f"--dataset_dir {dataset_dir} and --cpcd_dir {cpcd_dir}: {e}") from None
  max_chars = int(ds.meta.get("prompt_max_chars") or prompts_lib.DEFAULT_MAX_CHARS)
  test_ids = ds.split_ids("test")
  if not test_ids:
    raise UserInputError(f"--dataset_dir {dataset_dir}: its test split is empty")
  try:
    queries = cpcd_turns.turn_queries(dialogs, keys, max_turns=max_turns, conversation_ids=test_ids,
                                      text_fn=_text_fn(ds, dialogs, max_chars))
  except UserInputError as e:
    raise UserInputError(f"--dataset_dir {dataset_dir} test split vs --cpcd_dir {cpcd_dir}: {e}") from None
  catalog = CatalogTexts.from_tracks(ds.tracks, pipeline.track_text)
  train_prompts, train_rows = _split_prompts(ds, "train", max_chars)
  train = list(zip(train_prompts, train_rows))
  val_prompts, val_rows = _split_prompts(ds, "validation", max_chars)
  print(f"{len(queries)} turn queries of {len(test_ids)} test conversations; catalog {len(ds.tracks)} tracks "
        f"({len(set(cat_keys))} keys); {len(train)} train / {len(val_prompts)} validation playlists", flush=True)

  bi_kw = {**baselines_study.BI_ENCODER_DEFAULTS, "track_text": track_text, "threads": threads, "seed": seed,
           "max_seq_length": pipeline.MAX_WORDPIECE_LENGTH}  # prompts uncut, as Text2Tracks reads them
  bi_kw.pop("epochs", None)
  fitted: dict = {}  # name -> (retriever, fit seconds, extra row fields)

  def fit(name: str):
    if name in fitted:
      return fitted[name]
    t = time.perf_counter()
    extra = {}
    if name == "most_popular":
      model = popularity.MostPopular().fit(catalog, train)
    elif name == "bm25":
      model = bm25.BM25Retriever().fit(catalog, train)
    elif name == "bi_encoder":
      from t2t_jax.baselines import bi_encoder  # pylint: disable=g-import-not-at-top  (torch, at fit time)
      model = bi_encoder.BiEncoderRetriever(cache_dir=cache_dir, **bi_kw).fit(catalog, train)
      extra = {"track_text": track_text}
    elif name == "bi_encoder_tuned":
      from t2t_jax.studies import tuning  # pylint: disable=g-import-not-at-top  (torch, at fit time)
      model, info = tuning.tune_bi_encoder(catalog, train, val_prompts, val_rows, grid=dict(tune_grid or {}),
                                           seed=seed, base_kwargs={k: v for k, v in bi_kw.items() if k != "seed"})
      extra = {"tuning": info}
    else:  # hybrid
      from t2t_jax.studies import tuning  # pylint: disable=g-import-not-at-top  (torch, at fit time)
      sparse, dense = fit("bm25"), fit("bi_encoder_tuned")
      model, info = tuning.tune_hybrid(sparse[0], dense[0], val_prompts, val_rows, weights=list(hybrid_weights),
                                       depth=hybrid_depth)
      extra = {"tuning": info, "train_seconds_includes": "bm25 and bi_encoder_tuned fits"}
      fitted[name] = (model, time.perf_counter() - t + sparse[1] + dense[1], extra)
      return fitted[name]
    fitted[name] = (model, time.perf_counter() - t, extra)
    return fitted[name]

  if "text2tracks_tuned" in methods and not work_dir:
    raise UserInputError("--methods text2tracks_tuned needs --work_dir (its model dir goes there)")
  t2t_rank_fn = None
  if "text2tracks" in methods:  # loaded (and checked against the catalog) before anything is fitted
    t2t_rank_fn = _text2tracks_rank_fn(model_dir, beam_size, [t.track_id for t in ds.tracks], batch_size)
  test_prompts, test_rows = _split_prompts(ds, "test", max_chars)

  def score(name, rank_fn, fit_s, **extra):
    result = cpcd_turns.rank_turns(rank_fn, queries, cat_keys, k)
    conv = evaluation.evaluate_rankings(np.asarray(rank_fn(test_prompts, k)), test_rows, ks=(1, 5, k))
    extra["conversation"] = {m: round(float(conv[m]), ROUND) for m in (f"hits@{k}", f"map@{k}", "num_queries")}
    rows.append(_row(name, result, fit_s, **extra))

  rows = []
  for name in methods:
    if name == "text2tracks":
      score(name, t2t_rank_fn, None, model_dir=os.path.abspath(model_dir), beam_size=beam_size)
      continue
    if name == "text2tracks_tuned":
      dense, dense_s, dense_extra = fit("bi_encoder_tuned")
      t = time.perf_counter()
      t2t_dir, extra = fair_study.train_adapted(dataset_dir, work_dir, dense, seed=seed, train_steps=t2t_train_steps)
      extra["decoder_train_seconds"] = extra.pop("train_seconds")  # steady-state decoder time; the row's: all
      rank_fn = _text2tracks_rank_fn(t2t_dir, beam_size, [t.track_id for t in ds.tracks], batch_size)
      score(name, rank_fn, time.perf_counter() - t + dense_s, model_dir=os.path.abspath(t2t_dir), **extra,
            train_seconds_includes="bi_encoder_tuned fit (its encoder)", encoder=dense_extra.get("tuning", {}).get("chosen"))
      continue
    model, fit_s, extra = fit(name)
    score(name, model.recommend, fit_s, **extra)
  return {
      "protocol": ("CPCD's turn-level evaluation (t2t_jax/studies/cpcd_turns.py): query = user turns 0..t, "
                   f"t < {max_turns}; seeds = first {cpcd_turns.NUM_SEEDS} liked tracks of each earlier turn, "
                   "removed from ranking and gold; gold = the goal playlist; tracks compared by cluster / "
                   "title + artists; macro = per conversation then averaged, micro = over turns"),
      "data": {"dataset_dir": os.path.abspath(dataset_dir), "cpcd_dir": os.path.abspath(cpcd_dir),
               "clusters": os.path.abspath(clusters_file) if clusters_file else None,
               "prompt": ds.meta.get("prompt"), "artists": ds.meta.get("artists"),
               "test_conversations": len(test_ids), "turn_queries": len(queries), "max_turns": max_turns,
               "catalog_tracks": len(ds.tracks), "catalog_keys": len(set(cat_keys)),
               "train_playlists": len(train), "validation_playlists": len(val_prompts), "k": k,
               "track_keys": keys.stats, **cpcd_turns.gold_coverage(queries, cat_keys)},
      "results": rows,
      "reference": reference_rows(),
  }


def _floats(text: str) -> list[float]:
  try:
    return [float(x) for x in text.split(",") if x.strip()]
  except ValueError:
    raise UserInputError(f"--hybrid_weights: expected comma-separated numbers, got {text!r}") from None


def aggregate(paths: Sequence[str], out: str | None) -> dict:
  """`--aggregate`: mean / spread over the runs in `paths` (one results file per training seed)."""
  runs = []
  for path in paths:
    try:
      with open(path, encoding="utf-8") as f:
        runs.append((path, json.load(f)))
    except (OSError, json.JSONDecodeError) as e:
      raise UserInputError(f"--aggregate {path}: not a readable results file ({e})") from None
  summary = cpcd_turns.aggregate_runs(runs)
  summary["seeds"] = [r.get("seed") for _, r in runs]
  summary["command"] = " ".join(["python", "tools/cpcd_turns.py", "--aggregate", *paths] + (["--json", out] if out else []))
  for m in summary["methods"]:
    h = m["macro"]["hit@10"]
    print(f"{m['name']:18s} macro hit@10 {h['mean']:.3f} +- {h['std']:.3f} over {summary['num_runs']} runs "
          f"({', '.join(f'{v:.3f}' for v in h['values'])})")
  if out:
    io_utils.write_json(out, summary)
  return summary


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--aggregate", nargs="+", metavar="RESULTS_JSON",
                 help="instead of running: mean and spread over these results files (one per training seed) "
                      "into --json")
  p.add_argument("--dataset_dir", help="a dataset dir made by `t2t import cpcd`")
  p.add_argument("--cpcd_dir", help="the raw CPCD folder it was imported from")
  p.add_argument("--clusters", default="", help=f"track clusters JSONL (default: CPCD_DIR/{cpcd_turns.CLUSTERS_FILE} "
                 "if present; 'none': title + artists keys only)")
  p.add_argument("--methods", default="most_popular,bm25", help=f"comma-separated, from {', '.join(METHODS)}")
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
  p.add_argument("--json", help="results file, written atomically (e.g. docs/results/cpcd_turns/results.json)")
  args = p.parse_args(argv)
  try:
    if args.aggregate:
      aggregate(args.aggregate, args.json)
      return 0
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
    out = run(args.dataset_dir, args.cpcd_dir, methods=[m.strip() for m in args.methods.split(",") if m.strip()],
              clusters=args.clusters or None, model_dir=args.model_dir, beam_size=args.beam_size, k=args.k,
              max_turns=args.max_turns or None, seed=args.seed, track_text=args.track_text, threads=args.threads,
              cache_dir=args.cache_dir, tune_grid=grid, hybrid_weights=_floats(args.hybrid_weights),
              hybrid_depth=args.hybrid_depth, batch_size=args.batch_size, work_dir=args.work_dir,
              t2t_train_steps=args.t2t_train_steps)
  except UserInputError as e:
    print(f"cpcd_turns: error: {e}", file=sys.stderr)
    return 2
  from t2t_jax import report  # pylint: disable=g-import-not-at-top  (JAX, for the device list)
  out["seed"] = args.seed
  out["command"] = " ".join(["python", "tools/cpcd_turns.py"] + (sys.argv[1:] if argv is None else list(argv)))
  out["machine"] = report.machine_info()
  for ref in out["reference"]["rows"]:
    print(f"{'reference':18s} macro hit@10 {ref['macro']['hit@10']:.3f}  {ref['method']}")
  if args.json:
    io_utils.write_json(args.json, out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
