"""compare_ids' nested protocol ("fair"): every choice on inner validation, each test fold run once per
final configuration and seed, every test run logged.

  run(dataset_dirs={"as_written": "data/cpcd", ...}, folds=[0, ..., 4], seeds=[0, 1, 2], ...)

For each prompts variant and fold k (`pipeline.open_dataset(dir, fold=k)`: test = fold k; validation =
a seeded 10% of the other folds' conversations, held out of training; train = the rest):
- every method trains on the fold's train split only; every choice is made on its validation split:
  * bi_encoder_tuned: MiniLM fine-tuned over all (prompt, goal track) pairs; learning rate, batch,
    positives per prompt and epochs chosen by `tuning.tune_bi_encoder` with the first seed, the other
    seeds retrain the chosen configuration (`tuning.refit_bi_encoder`); prompts as long as
    Text2Tracks' (its task's inputs length in WordPiece tokens);
  * hybrid: RRF of BM25 and that seed's tuned bi-encoder, the weight chosen on validation;
  * Text2Tracks: with several model families, each is trained with the first seed and scored on
    validation; the best one (Hits@10, then MAP@10) is the fold's "Text2Tracks (selected)" row and
    is the only one trained with the other seeds and run on test.  A family with
    encoder="bi_encoder_tuned" warm-starts from that seed's tuned bi-encoder (saved by it);
  * most popular, BM25 (documents: track metadata + the training prompts of the track's
    conversations) and the zero-shot bi-encoder have no trained parameters: one run per fold.
- the test split is scored once per final configuration and seed; each such run is one line of
  `runs.jsonl` in the results dir (appended, never rewritten: reuse of a test fold shows there),
  with the validation conversations its choices saw, so that a test can check that no test
  conversation of a fold is a validation query of any of that fold's choices.
Rows: per (variant, fold, seed, method) in results.json; per (variant, fold, method) the seeds'
mean; per (variant, method) the mean ± std over folds (folds_study.aggregate) and the mean std over
seeds.  Paired bootstrap (within folds, per-query values averaged over seeds) of the best Text2Tracks
row against the tuned bi-encoder and against the hybrid.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import os
import subprocess
import time
from typing import Sequence

import numpy as np

from t2t_jax import evaluation, io_utils, report, stats
from t2t_jax.baselines import bi_encoder, bm25, popularity
from t2t_jax.baselines.catalog import CatalogTexts
from t2t_jax.data import formats
from t2t_jax.data import prompts as prompts_lib
from t2t_jax.decoding.beam_search import SCORINGS
from t2t_jax.errors import UserInputError
from t2t_jax.ids import specs as specs_lib
from t2t_jax.models import pretrained
from t2t_jax.studies import baselines as baselines_lib
from t2t_jax.studies import folds_study, pipeline, tuning

FAIR_BASELINES = ("most_popular", "bm25", "bi_encoder", "bi_encoder_mpnet", "bi_encoder_tuned", "hybrid")
LABELS = {"bi_encoder_tuned": "Bi-encoder fine-tuned, tuned (MiniLM-L6, all pairs, MNRL)",
          "hybrid": "Hybrid BM25 + tuned bi-encoder (RRF, weight tuned)",
          "bm25": "BM25 (bm25s; docs: metadata + training prompts)",
          "bi_encoder_mpnet": "Bi-encoder zero-shot (all-mpnet-base-v2)"}
SELECTED = "Text2Tracks (selected on validation)"
METRIC_KEYS = folds_study.SPREAD_KEYS
RUNS_FILE = "runs.jsonl"
VALIDATION_FILE = "validation.json"
# The adapted-encoder recipe (gin/experiments/compare_cpcd_fair.gin's first candidate): per-track IDs whose
# vectors stay at the tuned bi-encoder's track embeddings, the decoder trained 300 steps x 64.
ADAPTED_FAMILY = ("bert_t5_adapted", "bert_t5_minilm",
                  {"bindings": ["TARGETS_PER_PROMPT=8", "INDEXING='artists'", "INDEXING_SHARE=0.3",
                                "ID_EMBEDDING_INIT='retrieval'", "ID_EMB_LR_SCALE=0.0"],
                   "id_specs": ["integer_atomic"], "encoder": "bi_encoder_tuned", "train_steps": 300})
ADAPTED_SPEC = ("integer_atomic", "integer", {"order": "random", "base": None})
ADAPTED_DEFAULTS = {"train_steps": 300, "batch_size": 64, "learning_rate": 3e-3, "beam_size": 20, "num_devices": None}


def label(name: str) -> str:
  return LABELS.get(name) or baselines_lib.BASELINE_LABELS[name]


def _git_commit() -> str | None:
  try:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                          cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or None
  except (OSError, subprocess.SubprocessError):
    return None


@dataclasses.dataclass
class Fold:
  """One (variant, fold): its workspace, queries and the texts every retriever is fitted on."""
  variant: str
  fold: int | None
  ws: pipeline.Workspace
  test: tuple[list[str], list[np.ndarray]]
  val: tuple[list[str], list[np.ndarray]]
  catalog: object
  train: list
  artist_of_row: list

  @property
  def test_ids(self) -> list[str]:
    return [p.playlist_id for p in self.ws.test_playlists]

  @property
  def val_ids(self) -> list[str]:
    return [p.playlist_id for p in self.ws.ds.playlists("validation")]


def open_fold(variant: str, ddir: str, fold: int | None, work_dir: str, prompt_field: str,
              stage: pipeline.Stages) -> Fold:
  ws = pipeline.open_dataset(ddir, work_dir, fold=fold, name=variant, stage=stage)
  max_chars = formats.dataset_prompt_max_chars(ws.ds_dir)

  def queries(playlists):
    return ([prompts_lib.make_prompt(p, prompt_field, max_chars=max_chars) for p in playlists],
            [np.asarray([ws.ds.track_row[t] for t in p.track_ids], np.int32) for p in playlists])
  val_pl = list(ws.ds.playlists("validation"))
  if not val_pl:
    raise UserInputError(f"{ddir} fold {fold}: no validation conversations to tune on")
  test_ids = {p.playlist_id for p in ws.test_playlists}
  leaked = test_ids & ({p.playlist_id for p in val_pl} | {p.playlist_id for p in ws.train_playlists})
  assert not leaked, f"test conversations in train/validation: {sorted(leaked)[:5]}"
  train_prompts, _ = queries(ws.train_playlists)
  return Fold(variant=variant, fold=fold, ws=ws, test=queries(ws.test_playlists), val=queries(val_pl),
              catalog=CatalogTexts.from_tracks(ws.ds.tracks, pipeline.track_text),
              train=list(zip(train_prompts, ws.rows_train)), artist_of_row=[t.artist for t in ws.ds.tracks])


def paired_rows(per_query: dict, variant: str, method: str, baseline: str, *, num_samples: int,
                seed: int) -> dict | None:
  """Paired bootstrap of two rows of a per_query.json ({"variant|method": {fold: {seed: {key: [..]}}}})
  over the folds both hold: per-query values averaged over seeds, resampled within folds. None when the
  rows share no fold."""
  a, b = per_query.get(f"{variant}|{method}", {}), per_query.get(f"{variant}|{baseline}", {})
  common = sorted(set(a) & set(b))
  if not common:
    return None

  def seed_mean(d, fold, key):
    return tuning.mean_over_seeds([v[key] for v in d[fold].values()])
  groups = np.concatenate([np.full(len(seed_mean(a, f, "hits@10")), i) for i, f in enumerate(common)])
  bt = {"prompts": variant, "text2tracks": method, "baseline": baseline, "folds": common,
        "resampling": "within folds, per-query values averaged over seeds"}
  for key in folds_study.BOOTSTRAP_KEYS:
    bt[key] = stats.paired_bootstrap(np.concatenate([seed_mean(a, f, key) for f in common]),
                                     np.concatenate([seed_mean(b, f, key) for f in common]),
                                     num_samples=num_samples, seed=seed, groups=groups)
  return bt


class Log:
  """Rows, per-query vectors and the test-run log of one study; written after every test run."""

  def __init__(self, out_dir: str, *, config: dict, notes: list[str], bootstrap_samples: int, seed: int):
    self.out_dir, self.config, self.notes = out_dir, config, notes
    self.bootstrap_samples, self.seed = bootstrap_samples, seed
    self.rows: list[dict] = []
    self.validation: list[dict] = []  # every Text2Tracks candidate's validation figures (VALIDATION_FILE)
    self.per_query: dict[str, dict] = {}  # "{variant}|{method}" -> {fold: {seed: {metric: list}}}
    self.machine = report.machine_info()
    self.commit = _git_commit()
    os.makedirs(out_dir, exist_ok=True)

  def test_run(self, f: Fold, seed: int | None, method: str, ranked: np.ndarray, *, config: dict,
               val_ids: Sequence[str], extra: dict | None = None) -> dict:
    """Scores `ranked` on the fold's test queries, logs the run and rewrites the results."""
    m = evaluation.evaluate_rankings(np.asarray(ranked), f.test[1], ks=(1, 5, 10), artist_of_row=f.artist_of_row,
                                     per_query=True)
    vectors = m.pop("per_query")
    row = {"prompts": f.variant, "fold": f.fold, "seed": seed, "method": method, **m, **(extra or {})}
    self.rows.append(row)
    self.per_query.setdefault(f"{f.variant}|{method}", {}).setdefault(str(f.fold), {})[str(seed)] = {
        key: [float(x) for x in vectors[key]] for key in folds_study.BOOTSTRAP_KEYS}
    entry = {"utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "commit": self.commit, "prompts": f.variant, "fold": f.fold, "seed": seed, "method": method,
             "config": config, "hits@10": m["hits@10"], "map@10": m["map@10"], "num_queries": m["num_queries"],
             "test_conversations": f.test_ids, "validation_conversations": sorted(val_ids)}
    with open(os.path.join(self.out_dir, RUNS_FILE), "a", encoding="utf-8") as fh:
      fh.write(json.dumps(entry) + "\n")
    self.flush()
    print(f"      {f.variant} fold {f.fold} seed {seed} {method}: hits@10={m['hits@10']:.4f} "
          f"map@10={m['map@10']:.4f}", flush=True)
    return row

  def validation_run(self, f: Fold, seed: int, row: dict) -> None:
    """Records one candidate's inner-validation figures (the choice the fold's test run rests on)."""
    self.validation.append({"prompts": f.variant, "fold": f.fold, "seed": seed, **row,
                            "validation_conversations": len(f.val_ids)})
    io_utils.write_json(os.path.join(self.out_dir, VALIDATION_FILE), self.validation)

  def fold_means(self) -> list[dict]:
    """Per (variant, fold, method): the mean over seeds of every metric (+ `seeds`)."""
    groups: dict[tuple, list[dict]] = {}
    for r in self.rows:
      groups.setdefault((r["prompts"], r["fold"], r["method"]), []).append(r)
    out = []
    for (variant, fold, method), rs in groups.items():
      row = {k: v for k, v in rs[0].items() if k not in METRIC_KEYS and k != "seed"}
      row.update(prompts=variant, fold=fold, method=method, seeds=len(rs),
                 num_queries=rs[0]["num_queries"])
      for key in METRIC_KEYS:
        vals = [r[key] for r in rs if r.get(key) is not None]
        if vals:
          row[key] = float(np.mean(vals))
          row[f"{key}_seed_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
      for key in ("train_seconds", "decode_steps_per_id", "id_vocab_size", "prompts_per_s"):
        vals = [r[key] for r in rs if r.get(key) is not None]
        row[key] = round(float(np.mean(vals)), 2) if vals else None
      out.append(row)
    return out

  def aggregate(self) -> list[dict]:
    fold_rows = self.fold_means()
    agg = folds_study.aggregate(fold_rows)
    for row in agg:
      rs = [r for r in fold_rows if r["prompts"] == row["prompts"] and r["method"] == row["method"]]
      row["seeds"] = max(r["seeds"] for r in rs)
      row["hits@10_seed_std"] = round(float(np.mean([r.get("hits@10_seed_std", 0.0) for r in rs])), 4)
      row["id_vocab_size"] = rs[0].get("id_vocab_size")
      row["paper_hits@10"] = None
      picks = {str(r["fold"]): r["selected"] for r in rs if r.get("selected")}
      if picks:  # what each fold's inner validation chose
        row["selected_by_fold"] = picks
        for key in ("family", "model", "id_strategy"):
          if len({r.get(key) for r in rs}) > 1:
            row[key] = "per fold"
    return agg

  def bootstraps(self, agg: Sequence[dict]) -> list[dict]:
    """Per variant: every Text2Tracks method vs. the tuned bi-encoder and vs. the hybrid, and every other
    Text2Tracks method vs. the best one (Hits@10, then MAP@10)."""
    out = []
    for variant in dict.fromkeys(r["prompts"] for r in agg):
      best = folds_study._best(agg, variant, lambda r: bool(r.get("id_strategy")))  # pylint: disable=protected-access
      if not best:
        continue
      t2t = [r["method"] for r in agg if r["prompts"] == variant and r.get("id_strategy")]
      pairs = [(m, label(name)) for m in t2t for name in ("bi_encoder_tuned", "hybrid")]
      pairs += [(m, best["method"]) for m in t2t if m != best["method"]]
      for method, baseline in pairs:
        bt = paired_rows(self.per_query, variant, method, baseline, num_samples=self.bootstrap_samples,
                         seed=self.seed)
        if bt:
          out.append(bt)
    return out

  def flush(self, final_lines: Sequence[str] = ()) -> tuple[list[dict], list[dict], list[str]]:
    agg = self.aggregate()
    boots = self.bootstraps(agg)
    lines = [f"[{b['prompts']}] paired bootstrap {b['text2tracks']} - {b['baseline']} ({b['hits@10']['num_queries']} "
             f"queries, folds {b['folds']}): Hits@10 {b['hits@10']['mean_diff']:+.3f} "
             f"[{b['hits@10']['low']:+.3f}, {b['hits@10']['high']:+.3f}] p={b['hits@10']['p_value']:.4f}; "
             f"MAP@10 {b['map@10']['mean_diff']:+.3f} p={b['map@10']['p_value']:.4f}" for b in boots]
    report.write_results(self.out_dir, self.rows + self.fold_means() + agg, columns=TABLE_COLUMNS,
                         machine=self.machine, config=self.config,
                         title="CPCD, nested protocol: tuned baselines, hybrid and Text2Tracks over folds and seeds",
                         notes=self.notes + lines + list(final_lines), table_rows=folds_study.table_rows(agg),
                         figures=folds_study.metrics_figure(self.out_dir, agg))
    io_utils.write_json(os.path.join(self.out_dir, "per_query.json"), self.per_query)
    return agg, boots, lines


TABLE_COLUMNS = ("prompts", "method", "hits@10", "map@10", "artist_hits@10", "hits@10_seed_std",
                 "decode_steps_per_id", "id_vocab_size", "num_queries", "folds", "seeds", "train_seconds")


def _fit_fixed_baselines(f: Fold, log: Log, which: Sequence[str], bi_kwargs: dict) -> dict:
  """Most popular, BM25, zero-shot bi-encoders (MiniLM-L6, all-mpnet-base-v2 when its part packages are
  installed: `models.pretrained.mpnet_dir`): no trained parameters, one test run per fold."""
  fitted = {}
  names = ("most_popular", "bm25", "bi_encoder", "bi_encoder_mpnet")
  for name in [n for n in names if n in which or (n == "bm25" and "hybrid" in which)]:
    t = time.perf_counter()
    if name == "most_popular":
      model = popularity.MostPopular().fit(f.catalog, f.train)
    elif name == "bm25":
      model = bm25.BM25Retriever().fit(f.catalog, f.train)
    else:
      kw = {k: v for k, v in bi_kwargs.items() if k not in ("epochs",)}
      if name == "bi_encoder_mpnet":
        kw["model_dir"] = pretrained.mpnet_dir()
      model = bi_encoder.BiEncoderRetriever(**kw).fit(f.catalog, f.train)
    fitted[name] = model
    if name in which:
      log.test_run(f, None, label(name), model.recommend(f.test[0], 10), config={"baseline": name},
                   val_ids=(), extra={"family": None, "id_strategy": None,
                                      "train_seconds": round(time.perf_counter() - t, 1)})
  return fitted


def _tuned_baselines(f: Fold, log: Log, seed: int, first_seed: bool, state: dict, *, which, bi_kwargs: dict,
                     tune_grid: dict | None, hybrid_weights, hybrid_depth: int, encoder_dir: str | None,
                     reuse_encoders: bool = False) -> None:
  """This seed's tuned bi-encoder (grid with the first seed, the chosen config after) and hybrid.

  With an `encoder_dir` the encoder is saved under it (seed{seed}/, its tuning record beside it) and its
  track embeddings kept in state["track_emb"][seed] (the "encoder" embeddings of semantic ID specs).
  `reuse_encoders`: an encoder already saved there by an earlier run of this fold (same split: the
  workspace is the fold's) is loaded instead of tuned again; its row says "reused_from".
  """
  if "bi_encoder_tuned" not in which and "hybrid" not in which and encoder_dir is None:
    return
  t = time.perf_counter()
  kw = {k: v for k, v in bi_kwargs.items() if k not in ("seed", "cache_dir")}
  saved = os.path.join(encoder_dir, f"seed{seed}") if encoder_dir else None
  record = f"{saved}.tuning.json" if saved else None
  reused = bool(reuse_encoders and saved and os.path.isfile(os.path.join(saved, "model.safetensors")))
  if reused:
    load_kw = {k: kw[k] for k in ("track_text", "max_seq_length", "threads") if k in kw}
    dense = bi_encoder.BiEncoderRetriever(model_dir=saved, seed=seed, **load_kw).fit(f.catalog, f.train)
    if first_seed:
      state["bi_tuning"] = (formats.read_json_file(record, "tuning record") if os.path.isfile(record)
                            else {"chosen": {"reused_from": saved}, "trials": None})
  elif first_seed:
    dense, info = tuning.tune_bi_encoder(f.catalog, f.train, f.val[0], f.val[1], grid=tune_grid, seed=seed,
                                         base_kwargs=kw)
    state["bi_tuning"] = info
  else:
    dense = tuning.refit_bi_encoder(f.catalog, f.train, state["bi_tuning"]["chosen"], seed=seed, base_kwargs=kw)
  train_s = None if reused else round(time.perf_counter() - t, 1)
  chosen = state["bi_tuning"]["chosen"]
  if saved and not reused:
    dense.save(saved)
    io_utils.write_json(record, {"chosen": chosen, "trials": state["bi_tuning"].get("trials") if first_seed else None,
                                 "seed": seed, "validation_conversations": f.val_ids})
  state.setdefault("track_emb", {})[seed] = np.asarray(dense.track_emb_NxE, np.float32)
  state.setdefault("dense", {})[seed] = dense  # the dense prior's scorer (`_text2tracks`)
  if reused:
    chosen = {**chosen, "reused_from": saved}
  if "bi_encoder_tuned" in which:
    log.test_run(f, seed, label("bi_encoder_tuned"), dense.recommend(f.test[0], 10),
                 config={"baseline": "bi_encoder_tuned", **chosen}, val_ids=f.val_ids,
                 extra={"family": None, "id_strategy": None, "train_seconds": train_s, "tuned": chosen,
                        "max_seq_length": kw.get("max_seq_length"),
                        "tuning_trials": state["bi_tuning"]["trials"] if first_seed else None})
  if "hybrid" in which:
    hyb, info = tuning.tune_hybrid(state["fixed"]["bm25"], dense, f.val[0], f.val[1], weights=hybrid_weights,
                                   depth=hybrid_depth)
    log.test_run(f, seed, label("hybrid"), hyb.recommend(f.test[0], 10),
                 config={"baseline": "hybrid", "weight": hyb.weight, "depth": hybrid_depth, "bi_encoder": chosen},
                 val_ids=f.val_ids, extra={"family": None, "id_strategy": None, "train_seconds": train_s,
                                           "tuned": info["chosen"], "tuning_trials": info["trials"]})


def _id_cost(table) -> dict:
  """Decoding steps per ID (`pipeline.decode_steps`) and the decoder's ID vocabulary size."""
  steps = pipeline.decode_steps(table)
  return {**steps, "id_vocab_size": steps["id_tokens_added"]}


def _train_family(f: Fold, fam, spec, table, task, *, seed: int, encoder_dir: str | None, work_dir: str,
                  defaults: dict, progress: bool):
  steps = fam.train_steps or defaults["train_steps"]
  batch = fam.batch_size or defaults["batch_size"]
  model_dir = os.path.join(work_dir, "models", f.ws.name, fam.name, spec.name, f"seed{seed}")
  bindings = fam.bindings
  if fam.encoder:
    bindings += (f"INITIAL_CHECKPOINT_PATH={os.path.join(encoder_dir, f'seed{seed}')!r}",)
  trained = pipeline.train_text2tracks(
      task, model_dir=model_dir, model=fam.model, model_gin=fam.model_gin, train_steps=steps, batch_size=batch,
      learning_rate=fam.learning_rate or defaults["learning_rate"], seed=seed, progress=progress,
      num_devices=defaults["num_devices"], tensorboard=False, handle_sigterm=False,
      beam_size=defaults["beam_size"], extra_bindings=bindings)
  eps = trained.examples_per_second
  return model_dir, {"train_seconds": round(steps * batch / eps if eps else trained.seconds, 1),
                     "train_wall_seconds": round(trained.seconds, 1), "final_loss": trained.final_loss,
                     "params": trained.config.num_params(), "train_steps": steps, "batch_size": batch}


class Candidates:
  """The Text2Tracks candidates of one fold: (family, ID spec) pairs and their tables and tasks.

  A spec's table is built on first use: "cf" embeddings once per fold (`pipeline.catalog_cf_embeddings`,
  the first seed), "encoder" ones once per training seed from that seed's tuned bi-encoder
  (state["track_emb"], filled by `_tuned_baselines`), so a seed re-runs the whole pipeline; such a
  table and its task are named "{spec}_seed{seed}" (row fields keep the spec's name).
  """

  def __init__(self, f: Fold, families, specs: dict, *, prompt_field: str, seed: int, state: dict,
               cf_dim: int = 64):
    self.f, self.prompt_field, self.seed, self.state, self.cf_dim = f, prompt_field, seed, state, cf_dim
    self.pairs = [(fam, specs[name]) for fam in families for name in (fam.id_specs or list(specs))]
    self._built: dict = {}
    self._cf = None

  def __len__(self) -> int:
    return len(self.pairs)

  def _embeddings(self, spec, seed: int):
    sources = spec.embedding_sources
    if not sources:
      return None, None
    parts = []
    if "cf" in sources:
      if self._cf is None:
        self._cf = pipeline.catalog_cf_embeddings(self.f.ws, dim=self.cf_dim, seed=self.seed)
      parts.append(self._cf[0])
    if "encoder" in sources:
      if seed not in self.state.get("track_emb", {}):
        raise UserInputError(f"ID spec {spec.name!r}: embeddings='encoder' needs a model family with "
                             "encoder='bi_encoder_tuned' (its tuned bi-encoder embeds the tracks)")
      parts.append(self.state["track_emb"][seed])
    info = {"source": spec.embeddings, "dim": int(sum(p.shape[1] for p in parts)),
            **({"cold_start": self._cf[1]["cold_start"]} if "cf" in sources else {})}
    return (parts[0] if len(parts) == 1 else specs_lib.fused_embeddings(*parts)), info

  def get(self, fam, spec, seed: int):
    """(table, task) of `spec` for `fam` and training seed `seed`."""
    per_seed = "encoder" in spec.embedding_sources
    key_seed = seed if per_seed else None
    if (spec.name, key_seed) not in self._built:
      emb, info = self._embeddings(spec, seed)
      named = dataclasses.replace(spec, name=f"{spec.name}_seed{seed}") if per_seed else spec
      table, _ = pipeline.build_table(self.f.ws, named, embeddings_NxD=emb, seed=seed if per_seed else self.seed,
                                      embedding_info=info)
      self._built[(spec.name, key_seed)] = (named, table, {})
    named, table, tasks = self._built[(spec.name, key_seed)]
    if fam.input_vocab not in tasks:
      task = pipeline.make_task(self.f.ws, table, named.name, prompt_field=self.prompt_field,
                                input_vocab=fam.input_vocab)
      if task.prompts != self.f.test[0]:
        raise AssertionError(f"{task.name}: test prompts differ from the baselines' ({self.f.variant} fold "
                             f"{self.f.fold})")
      tasks[fam.input_vocab] = task
    return table, tasks[fam.input_vocab]

  def inputs_length(self) -> int:
    """The prompts' length in the pretrained encoder's WordPiece tokens (what the bi-encoders read):
    from a task of a family with `input_vocab`, built now (a per-seed spec's table cannot exist before
    its tuned encoder, so such a family gets the length from a plain integer table of the fold)."""
    fams = [fam for fam, _ in self.pairs if fam.input_vocab]
    if not fams:
      return 256
    for fam, spec in self.pairs:
      if fam.input_vocab and "encoder" not in spec.embedding_sources:
        return int(self.get(fam, spec, self.seed)[1].feature_lengths["inputs"])
    (probe,) = specs_lib.parse_id_specs([ADAPTED_SPEC])
    table, _ = pipeline.build_table(self.f.ws, probe, seed=self.seed)
    task = pipeline.make_task(self.f.ws, table, probe.name, prompt_field=self.prompt_field,
                              input_vocab=fams[0].input_vocab)
    return int(task.feature_lengths["inputs"])


def _text2tracks(f: Fold, log: Log, seeds: Sequence[int], cands: Candidates, *, encoder_dir: str | None,
                 work_dir: str, defaults: dict, progress: bool, method_name: str = SELECTED,
                 validation_only: bool = False, dense: dict | None = None) -> None:
  """Candidates (family, spec) trained with the first seed and scored on validation; the best one's
  test run for every seed (none with `validation_only`).  `method_name`: the rows' method when there
  are several candidates.  `dense`: seed -> that seed's tuned bi-encoder (the dense prior's scores)."""
  from tasks import pipeline as tasks_pipeline  # pylint: disable=g-import-not-at-top  (lazy: tasks loads TensorFlow)
  beams = defaults.get("beam_sizes") or (defaults["beam_size"],)
  scorings = defaults.get("beam_scorings") or ("log_prob",)
  weights = defaults.get("lexical_prior_weights") or (0.0,)
  dense_weights = defaults.get("dense_prior_weights") or (0.0,)
  if any(dense_weights) and not all(s in (dense or {}) for s in seeds):
    raise UserInputError("compare_ids.dense_prior_weights: the dense prior is the tuned bi-encoder's; it needs a "
                         "model family with encoder='bi_encoder_tuned' or 'bi_encoder_tuned' in compare_ids.baselines")
  # The lexical prior: BM25 over the fold's training part (metadata + training prompts), as the baseline's.
  lexical = bm25.BM25Retriever().fit(f.catalog, f.train) if any(weights) else None

  shares: dict = {}  # (prior, seed, prompts) -> row scores, computed once per prompt set, not per decoding setting

  def prior(prompts, w, wd, seed):
    """w * BM25 share + wd * the seed's tuned bi-encoder cosine, or None (both weights 0)."""
    parts = []
    for name, weight, scorer in (("bm25", w, lexical and lexical.prior), ("dense", wd, (dense or {}).get(seed))):
      if weight:
        key = (name, seed if name == "dense" else None, tuple(prompts))
        if key not in shares:
          shares[key] = scorer(prompts) if name == "bm25" else scorer.scores(prompts)
        parts.append(weight * shares[key])
    return sum(parts) if parts else None

  val_table, best = [], None
  for fam, spec in cands.pairs:
    table, task = cands.get(fam, spec, seeds[0])
    model_dir, extra = _train_family(f, fam, spec, table, task, seed=seeds[0], encoder_dir=encoder_dir,
                                     work_dir=work_dir, defaults=defaults, progress=progress)
    val_task = dataclasses.replace(task, eval_examples=tasks_pipeline.get_eval_examples(task.name, "validation"))
    cost = _id_cost(table)
    # One decoding step: every beam >= k returns the same top k, and logit sums rank as log-probs do
    # (one log-partition per prompt), so only the first beam and scoring are scored.
    one_step = cost["decode_steps_max"] == 1
    retriever = pipeline.load_retriever(val_task, model_dir)  # once per candidate: one load, one compile per shape
    for scoring, beam, w, wd in itertools.product(scorings[:1] if one_step else scorings,
                                                  beams[:1] if one_step else beams, weights, dense_weights):
      m = pipeline.evaluate_text2tracks(val_task, model_dir, beam_size=beam, k=10, scoring=scoring,
                                        row_prior_NxR=prior(val_task.prompts, w, wd, seeds[0]),
                                        retriever=retriever)["metrics"]
      val_table.append({"family": fam.name, "id_strategy": spec.name, "beam_size": beam, "beam_scoring": scoring,
                        "lexical_prior_weight": w, "dense_prior_weight": wd,
                        "val_hits@10": round(m["hits@10"], 4), "val_map@10": round(m["map@10"], 4),
                        "num_queries": m["num_queries"], **cost, "train_seconds": extra["train_seconds"]})
      log.validation_run(f, seeds[0], val_table[-1])
      score = (val_table[-1]["val_hits@10"], val_table[-1]["val_map@10"])  # as validation.json records it
      if best is None or score > best[0]:  # ties: the earlier candidate / scoring / beam / weights
        best = (score, (fam, spec), model_dir, extra, beam, scoring, w, wd)
  if validation_only:
    return
  _, (fam, spec), model_dir, extra, beam, scoring, w, wd = best
  # One method over folds whatever each fold's validation picked: the pick is in `selected`.
  # A validation choice among decoding options (beam, ranking, prior weight) names the row like one among
  # candidates, so a row says it was selected, and the validation conversations are logged with its runs.
  chose = len(cands) > 1 or len(val_table) > 1
  method = method_name if chose else f"Text2Tracks {fam.name} ({spec.name})"
  for i, seed in enumerate(seeds):
    table, task = cands.get(fam, spec, seed)
    if i:
      model_dir, extra = _train_family(f, fam, spec, table, task, seed=seed, encoder_dir=encoder_dir,
                                       work_dir=work_dir, defaults=defaults, progress=progress)
    ev = pipeline.evaluate_text2tracks(task, model_dir, beam_size=beam, k=10, scoring=scoring,
                                       row_prior_NxR=prior(task.prompts, w, wd, seed))
    log.test_run(f, seed, method, ev["rows_NxK"],
                 config={"family": fam.name, "model": fam.model, "bindings": list(fam.bindings), "id_spec": spec.name,
                         "id_spec_kwargs": spec.kwargs, "beam_size": beam, "beam_scoring": scoring,
                         "lexical_prior_weight": w, "dense_prior_weight": wd,
                         **{k: extra[k] for k in ("train_steps", "batch_size")}},
                 val_ids=f.val_ids if chose or fam.encoder else (),
                 extra={"family": fam.name, "model": fam.model, "id_strategy": spec.name,
                        "selected": f"{fam.name} ({spec.name})", "beam_size": beam, "beam_scoring": scoring,
                        "lexical_prior_weight": w, "dense_prior_weight": wd, **extra,
                        **_id_cost(table),
                        "prompts_per_s": ev["prompts_per_s"], "validation_choice": val_table})


def run(*, out_dir: str, work_dir: str, dataset_dirs: dict, folds: Sequence[int] | None, seeds: Sequence[int],
        id_specs, model_families, train_steps: int, batch_size: int, learning_rate: float, beam_size: int,
        prompt_field: str, baselines: Sequence[str], bi_encoder_kwargs: dict | None, tune_grid: dict | None,
        hybrid_weights: Sequence[float], hybrid_depth: int, num_devices: int | None, bootstrap_samples: int,
        config: dict, progress: bool = True, reuse_encoders: bool = False,
        selected_name: str = SELECTED, validation_only: bool = False,
        beam_sizes: Sequence[int] | None = None, beam_scorings: Sequence[str] | None = None,
        lexical_prior_weights: Sequence[float] | None = None,
        dense_prior_weights: Sequence[float] | None = None) -> list[dict]:
  """The study (module docstring); writes results.{json,csv,md}, per_query.json, runs.jsonl, validation.json,
  summary.json.  `reuse_encoders`: load each seed's tuned bi-encoder saved in `work_dir` by an earlier
  run of the same folds instead of tuning it again (`_tuned_baselines`); `selected_name`: the method
  name of the validation-selected Text2Tracks row (another name keeps a second candidate set's rows
  apart from the first's when their result dirs are merged).  `validation_only`: design exploration
  that never touches test: the Text2Tracks candidates are trained with the first seed and scored on
  validation (validation.json), nothing else runs (the baselines must be ()).  `beam_sizes`: beam widths
  each candidate is scored at on validation (a decoding choice like any other: the fold's pick is the
  best (candidate, beam), its test runs use that beam); None: `beam_size` only.  `beam_scorings`: how
  beams are ranked ("log_prob", "logit": `decoding.beam_search`), chosen on validation the same way
  (None: "log_prob").  `lexical_prior_weights`: weights w of a BM25 prior inside beam search (each
  row's BM25 score over the fold's training part, divided by the prompt's best, times w, guiding which
  prefixes stay in the beam: `decoding.index.subtree_max`), chosen on validation the same way; 0 is no
  prior (None: [0]).  `dense_prior_weights`: the same for a dense prior, each row's cosine under that
  seed's tuned bi-encoder times the weight (20, the bi-encoder's MNRL scale, adds its own logits), added
  to the BM25 prior; every (lexical, dense) pair is a validation choice (None: [0])."""
  unknown = [b for b in baselines if b not in FAIR_BASELINES]
  if unknown:
    raise UserInputError(f"compare_ids.baselines {unknown}: the nested protocol runs {FAIR_BASELINES}")
  seeds = [int(s) for s in seeds]
  if not seeds or len(set(seeds)) != len(seeds):
    raise UserInputError(f"compare_ids.seeds must be distinct integers, got {seeds}")
  tuning.check_grid(tune_grid)
  if validation_only and baselines:
    raise UserInputError(f"compare_ids.validation_only runs no test: set compare_ids.baselines = () (got {baselines})")
  if validation_only:
    seeds = seeds[:1]
  specs = {s.name: s for s in specs_lib.parse_id_specs(id_specs)}
  families = folds_study.parse_model_families(model_families) if model_families else []  # [] = baselines only
  for fam in families:
    if fam.encoder not in (None, "bi_encoder_tuned"):
      raise UserInputError(f"model family {fam.name!r}: the nested protocol warm-starts from 'bi_encoder_tuned', "
                           f"not {fam.encoder!r}")
  stage = pipeline.Stages(verbose=progress)
  t_start = time.time()
  log = Log(out_dir, config=config, bootstrap_samples=bootstrap_samples, seed=seeds[0], notes=[
      f"Nested protocol (t2t_jax/studies/fair_study.py): variants {list(dataset_dirs)}, folds {folds}, seeds {seeds}; "
      "every choice on the fold's inner validation split, test run once per final configuration and seed "
      f"({RUNS_FILE} logs each); cells: mean over seeds, then mean ± std over folds."])
  defaults = {"train_steps": train_steps, "batch_size": batch_size, "learning_rate": learning_rate,
              "beam_size": beam_size, "beam_sizes": check_beam_sizes(beam_sizes, k=10),
              "beam_scorings": check_beam_scorings(beam_scorings),
              "lexical_prior_weights": check_prior_weights(lexical_prior_weights),
              "dense_prior_weights": check_prior_weights(dense_prior_weights, "dense_prior_weights"),
              "num_devices": num_devices}
  for variant, ddir in dataset_dirs.items():
    for fold in (list(folds) if folds is not None else [None]):
      tag = f"{variant} fold {fold}"
      f = open_fold(variant, ddir, fold, work_dir, prompt_field, stage)
      state: dict = {}
      cands = Candidates(f, families, specs, prompt_field=prompt_field, seed=seeds[0], state=state)
      # The bi-encoders read prompts as long as the pretrained-encoder Text2Tracks does (WordPiece).
      bi_kwargs = {**baselines_lib.BI_ENCODER_DEFAULTS, "max_seq_length": cands.inputs_length(),
                   **(bi_encoder_kwargs or {})}
      encoder_dir = (os.path.join(work_dir, "models", f.ws.name, "bi_encoder_tuned_encoder")
                     if any(fam.encoder for fam in families) else None)
      with stage(f"{tag}: fixed baselines"):
        state["fixed"] = _fit_fixed_baselines(f, log, baselines, bi_kwargs)
      for i, seed in enumerate(seeds):
        with stage(f"{tag} seed {seed}: tuned bi-encoder and hybrid"):
          _tuned_baselines(f, log, seed, i == 0, state, which=baselines, bi_kwargs=bi_kwargs, tune_grid=tune_grid,
                           hybrid_weights=hybrid_weights, hybrid_depth=hybrid_depth, encoder_dir=encoder_dir,
                           reuse_encoders=reuse_encoders)
      if len(cands):
        with stage(f"{tag}: Text2Tracks ({len(cands)} candidates, {len(seeds)} seeds)"):
          _text2tracks(f, log, seeds, cands, encoder_dir=encoder_dir, work_dir=work_dir, defaults=defaults,
                       progress=progress, method_name=selected_name, validation_only=validation_only,
                       dense=state.get("dense"))
  agg, boots, lines = log.flush([f"Total wall time {time.time() - t_start:.0f} s."])
  io_utils.write_json(os.path.join(out_dir, "summary.json"), {"checks": lines, "bootstrap": boots})
  print(report.markdown_table(folds_study.table_rows(agg), TABLE_COLUMNS), flush=True)
  return log.rows + agg


def train_adapted(dataset_dir: str, work_dir: str, encoder, *, seed: int = 0, train_steps: int | None = None,
                  progress: bool = False):
  """`ADAPTED_FAMILY` on a dataset dir's own split (splits.json), warm-started from `encoder` (a fitted
  BiEncoderRetriever, saved under work_dir): (model dir, row fields).  tools/cpcd_turns.py's
  text2tracks_tuned."""
  f = open_fold("canonical", dataset_dir, None, work_dir, "title", pipeline.Stages(verbose=progress))
  name, model, opts = ADAPTED_FAMILY
  (fam,) = folds_study.parse_model_families([(name, model, {**opts, "train_steps": train_steps or opts["train_steps"]})])
  (spec,) = specs_lib.parse_id_specs([ADAPTED_SPEC])
  table, _ = pipeline.build_table(f.ws, spec, seed=seed)
  task = pipeline.make_task(f.ws, table, spec.name, prompt_field="title", input_vocab=fam.input_vocab)
  encoder_dir = os.path.join(work_dir, "models", f.ws.name, "bi_encoder_tuned_encoder")
  encoder.save(os.path.join(encoder_dir, f"seed{seed}"))
  model_dir, extra = _train_family(f, fam, spec, table, task, seed=seed, encoder_dir=encoder_dir, work_dir=work_dir,
                                   defaults=ADAPTED_DEFAULTS, progress=progress)
  return model_dir, {**extra, **_id_cost(table)}


def _check_choices(values, name: str, ok, what: str) -> list | None:
  """`values`, a non-empty list whose items all pass `ok` (the messages name `compare_ids.{name}` and
  `what` the items must be), or None."""
  if values is None:
    return None
  if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
    raise UserInputError(f"compare_ids.{name} must be a non-empty list of {what}, got {values!r}")
  bad = [v for v in values if not ok(v)]
  if bad:
    raise UserInputError(f"compare_ids.{name}: {bad} not {what}")
  return list(values)


def check_beam_sizes(beam_sizes: Sequence[int] | None, *, k: int) -> tuple[int, ...] | None:
  """`beam_sizes` sorted (the smallest wins a validation tie), or None; each an integer >= k."""
  ok = lambda b: not isinstance(b, bool) and isinstance(b, int) and b >= k
  checked = _check_choices(beam_sizes, "beam_sizes", ok, f"integers >= k ({k})")
  return None if checked is None else tuple(sorted(set(checked)))


def check_beam_scorings(scorings: Sequence[str] | None) -> tuple[str, ...] | None:
  """`scorings` without repeats in the given order (a validation tie goes to the earlier one), or None."""
  checked = _check_choices(scorings, "beam_scorings", lambda s: s in SCORINGS, f"among {SCORINGS}")
  return None if checked is None else tuple(dict.fromkeys(checked))


def check_prior_weights(weights: Sequence[float] | None,
                        name: str = "lexical_prior_weights") -> tuple[float, ...] | None:
  """`weights` as floats >= 0 without repeats in the given order (a validation tie goes to the earlier
  one), or None."""
  ok = lambda w: not isinstance(w, bool) and isinstance(w, (int, float)) and 0 <= w < float("inf")
  checked = _check_choices(weights, name, ok, "finite numbers >= 0")
  return None if checked is None else tuple(dict.fromkeys(float(w) for w in checked))


def _one_selected_method(method: str) -> str:
  """Runs written before 2026-12-05 named the validation pick in the method ("{SELECTED}: family
  (spec)"), so a fold whose pick differed became another method: all are SELECTED now."""
  return SELECTED if method.startswith(SELECTED + ": ") else method


def merge(out_dir: str, in_dirs: Sequence[str], *, bootstrap_samples: int | None = None) -> list[dict]:
  """One study from runs of the same config on disjoint folds (e.g. one fold per session), or of other
  methods on the same folds (e.g. a second set of Text2Tracks candidates with its own `selected_name`).

  Each fold's protocol is self-contained (its own inner validation, tuning and test runs), so the test
  runs of several result dirs combine exactly as if one run had done every fold: their seed-level rows,
  per-query vectors and runs.jsonl lines are joined and the fold means, aggregates and bootstraps are
  recomputed with the runs' own bootstrap size (from their summary.json, unless `bootstrap_samples`)
  and seed (their first training seed).  A (variant, fold, seed, method) present in two dirs is refused.
  """
  rows, per_query, runs, seen = [], {}, [], {}
  for d in in_dirs:
    paths = {name: os.path.join(d, name) for name in ("results.json", "per_query.json", RUNS_FILE)}
    missing = [p for p in paths.values() if not os.path.isfile(p)]
    if missing:
      raise UserInputError(f"--merge {d}: not a nested-study result dir (missing {missing[0]})")
    results = formats.read_json_file(paths["results.json"], "results file")
    for r in results:
      if "seeds" in r or r.get("fold") == "all":
        continue  # fold means and aggregates: recomputed below
      r = dict(r, method=_one_selected_method(r["method"]))
      if r["method"] == SELECTED and not r.get("selected"):
        r["selected"] = f"{r.get('family')} ({r.get('id_strategy')})"
      key = (r["prompts"], r["fold"], r.get("seed"), r["method"])
      if key in seen:
        raise UserInputError(f"--merge: {key} is in both {seen[key]} and {d}")
      seen[key] = d
      rows.append(r)
    for method, by_fold in formats.read_json_file(paths["per_query.json"], "per-query file").items():
      variant, _, name = method.partition("|")
      method = f"{variant}|{_one_selected_method(name)}"
      for fold, by_seed in by_fold.items():
        per_query.setdefault(method, {}).setdefault(fold, {}).update(by_seed)
    with open(paths[RUNS_FILE], encoding="utf-8") as fh:
      runs += [line for line in fh if line.strip()]
  if not rows:
    raise UserInputError(f"--merge {list(in_dirs)}: no test runs to merge")
  if any(os.path.abspath(out_dir) == os.path.abspath(d) for d in in_dirs):
    raise UserInputError(f"--out {out_dir} is one of the merged dirs: write the merge elsewhere")
  folds = sorted({r["fold"] for r in rows}, key=str)
  if bootstrap_samples is None:
    sizes = set()
    for d in in_dirs:
      try:
        with open(os.path.join(d, "summary.json"), encoding="utf-8") as fh:
          sizes |= {b["hits@10"]["num_samples"] for b in json.load(fh).get("bootstrap", [])}
      except (OSError, ValueError, KeyError, TypeError):
        pass
    if len(sizes) > 1:
      raise UserInputError(f"--merge: the runs used different bootstrap sizes {sorted(sizes)}")
    bootstrap_samples = sizes.pop() if sizes else 10000
  seed = min((r["seed"] for r in rows if r.get("seed") is not None), default=0)
  log = Log(out_dir, config={"merged_from": list(in_dirs)}, bootstrap_samples=bootstrap_samples, seed=seed,
            notes=[f"Nested protocol (t2t_jax/studies/fair_study.py), merged from {list(in_dirs)} (runs of the same "
                   f"config on disjoint folds, or of other methods on the same folds; their results.md hold the configs): "
                   f"folds {folds}; cells: mean over "
                   "seeds, then mean ± std over folds."])
  log.rows, log.per_query = rows, per_query
  with io_utils.atomic_write(os.path.join(out_dir, RUNS_FILE)) as fh:
    fh.write("".join(line if line.endswith("\n") else line + "\n" for line in runs))
  agg, boots, lines = log.flush()
  io_utils.write_json(os.path.join(out_dir, "summary.json"), {"checks": lines, "bootstrap": boots})
  return rows + agg
