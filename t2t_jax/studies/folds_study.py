"""compare_ids on imported datasets (e.g. CPCD): every prompts variant x fold x model family x ID
strategy, and every baseline on the same folds and prompts; per-fold rows, their mean and spread,
and a paired bootstrap of the best Text2Tracks row against the best baseline.

  run(dataset_dirs={"as_written": "data/cpcd", "artists_masked": "data/cpcd_artists_masked"},
      folds=[0, 1, 2, 3, 4], id_specs=..., model_families=[("scratch", "micro"),
      ("bert_t5", "bert_t5_minilm", {"bindings": ["TARGETS_PER_PROMPT=8"]})], ...)

A prompts variant is one dataset dir (`t2t import cpcd DIR --out D [--artists masked]`); a fold is
its folds.json fold k as the test split (`pipeline.open_dataset(dir, work_dir, fold=k)`: validation
from the other folds, SentencePiece retrained on that fold's training prompts); folds=None keeps
splits.json.  Model families (`ModelFamily`): a T5.1.1 size trained from scratch
(models/t5_1_1_{size}.gin, SentencePiece prompts) or a gin model file such as bert_t5_minilm (the
pretrained MiniLM encoder: its task reads WordPiece prompts, name suffix '.minilm').

Rows (results.json / results.csv), each with `prompts` (the variant) and `fold`:
  fold = k      one method on one fold: Hits/MAP/NDCG@K, artist_hits@K / artist_map@K (a hit when a
                recommended track's artist is a relevant track's artist, `metrics.py`),
                num_queries (the fold's test conversations), decode steps per ID, timings
  fold = "all"  the method over all finished folds: every metric's mean with `_std` (ddof 1),
                `_min`, `_max` (`stats.mean_and_spread`), num_queries summed over folds, `folds`,
                and `paper_hits@10`, the paper's number for that kind of method (`PAPER`)
Rows are written after every method, so an interrupted run keeps what it finished;
per_query.json keeps the per-query vectors the bootstrap needs.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Sequence

import numpy as np

from t2t_jax import evaluation, io_utils, plots, report, stats
from t2t_jax.data import formats
from t2t_jax.data import prompts as prompts_lib
from t2t_jax.errors import UserInputError
from t2t_jax.ids import specs as specs_lib
from t2t_jax.studies import baselines as baselines_lib
from t2t_jax.studies import pipeline

T5_SIZES = ("micro", "tiny", "small", "base", "large", "xl", "xxl")
# ModelFamily.encoder: where a pretrained-encoder family's encoder comes from (None: its gin file).
# ("bi_encoder_tuned": the nested protocol of studies/fair_study.py only.)
ENCODERS = (None, "bi_encoder_ft", "bi_encoder_tuned")
# Input vocabularies of the pretrained-encoder model files (the suffix of their task names).
MODEL_INPUT_VOCAB = {"bert_t5_minilm": "minilm", "bert_t5_mpnet": "mpnet"}
SPREAD_KEYS = ("hits@10", "map@10", "artist_hits@10", "artist_map@10", "ndcg@10", "hits@1", "hits@5",
               "recall@10", "mrr", "artist_ndcg@10")
BOOTSTRAP_KEYS = ("hits@10", "map@10", "artist_hits@10", "artist_map@10")
TABLE_COLUMNS = ("prompts", "method", "hits@10", "map@10", "artist_hits@10", "artist_map@10",
                 "paper_hits@10", "decode_steps_per_id", "num_queries", "folds", "train_seconds")
# The paper's CPCD Hits@10 (workshop version, RecSys 2024 ROEGEN, track level; its own split of
# LLM-rewritten requests: 448 train / 468 test conversations, flan-T5-base, all-mpnet-base-v2
# bi-encoders over playlist-title track texts).  Not the split measured here: for reference only.
PAPER = {"text2tracks": 0.538, "bm25": 0.131, "most_popular": 0.002, "bi_encoder": 0.148,
         "bi_encoder_ft": 0.222}
PAPER_NOTE = ("paper_hits@10: the paper's CPCD Hits@10 (workshop version; its split of LLM-rewritten "
              "requests, 448 train / 468 test conversations; flan-T5-base Text2Tracks with its best ID "
              "strategy, all-mpnet-base-v2 bi-encoders over playlist-title texts): a reference, not "
              "measured on these folds.")


@dataclasses.dataclass(frozen=True)
class ModelFamily:
  """One model family of the comparison.

  name      row label ("scratch", "bert_t5")
  model     a T5.1.1 size (models/t5_1_1_{size}.gin) or a gin/models file stem ("bert_t5_minilm")
  bindings  extra gin bindings for this family's training (e.g. "TARGETS_PER_PROMPT=8")
  train_steps / batch_size / learning_rate  override the study's values for this family
  id_specs  names of the ID specs this family trains (None: all of them)
  encoder   None: the model file's pretrained encoder (INITIAL_CHECKPOINT_PATH of the gin file);
            "bi_encoder_ft": the encoder of this fold's fine-tuned bi-encoder baseline (MNRL on the
            fold's training prompts only), i.e. the pretrained encoder adapted in-domain first, then
            the Text2Tracks decoder trained over it (bert_t5 families; needs "bi_encoder_ft" in
            `baselines`, which saves its encoder for the purpose)
  """
  name: str
  model: str
  bindings: tuple[str, ...] = ()
  train_steps: int | None = None
  batch_size: int | None = None
  learning_rate: float | None = None
  id_specs: tuple[str, ...] | None = None
  encoder: str | None = None

  @property
  def model_gin(self) -> str | None:
    return None if self.model in T5_SIZES else f"models/{self.model}.gin"

  @property
  def input_vocab(self) -> str | None:
    return MODEL_INPUT_VOCAB.get(self.model)


def parse_model_families(families: Sequence) -> list[ModelFamily]:
  """ModelFamily from gin-friendly values: (name, model) or (name, model, {options})."""
  out = []
  for f in families:
    if not isinstance(f, ModelFamily):
      if not isinstance(f, (tuple, list)) or len(f) not in (2, 3):
        raise UserInputError(f"model family {f!r}: expected (name, model[, options])")
      opts = dict(f[2]) if len(f) == 3 else {}
      unknown = set(opts) - {"bindings", "train_steps", "batch_size", "learning_rate", "id_specs", "encoder"}
      if unknown:
        raise UserInputError(f"model family {f[0]!r}: unknown options {sorted(unknown)}")
      opts["bindings"] = tuple(opts.get("bindings", ()))
      if opts.get("id_specs") is not None:
        opts["id_specs"] = tuple(opts["id_specs"])
      f = ModelFamily(str(f[0]), str(f[1]), **opts)
    if f.model not in T5_SIZES and not f.model.startswith("bert_t5"):
      raise UserInputError(f"model family {f.name!r}: model {f.model!r} is neither a T5.1.1 size "
                           f"{T5_SIZES} nor a bert_t5 model file (gin/models/bert_t5_*.gin)")
    if f.encoder not in ENCODERS:
      raise UserInputError(f"model family {f.name!r}: encoder {f.encoder!r} is not one of {ENCODERS}")
    if f.encoder and not f.model.startswith("bert_t5"):
      raise UserInputError(f"model family {f.name!r}: encoder={f.encoder!r} needs a pretrained-encoder "
                           f"model (bert_t5_*), not {f.model!r}")
    out.append(f)
  names = [f.name for f in out]
  if not out or len(set(names)) != len(names):
    raise UserInputError(f"model_families: need at least one, with unique names; got {names}")
  return out


def _kind(row: dict) -> str:
  """'text2tracks' or the baseline's key (BASELINE_LABELS reversed)."""
  if row.get("id_strategy"):
    return "text2tracks"
  return next((k for k, v in baselines_lib.BASELINE_LABELS.items() if v == row["method"]), "other")


def aggregate(fold_rows: Sequence[dict]) -> list[dict]:
  """One row per (prompts, method) over its finished folds: mean, std, min, max of every metric."""
  groups: dict[tuple, list[dict]] = {}
  for r in fold_rows:
    groups.setdefault((r["prompts"], r["method"]), []).append(r)
  out = []
  for (variant, method), rs in groups.items():
    first = rs[0]
    row = {"prompts": variant, "fold": "all", "method": method, "family": first.get("family"),
           "model": first.get("model"), "id_strategy": first.get("id_strategy"), "folds": len(rs),
           "fold_ids": [r["fold"] for r in rs], "num_queries": int(sum(r["num_queries"] for r in rs))}
    for key in SPREAD_KEYS:
      vals = [r[key] for r in rs if r.get(key) is not None]
      if vals:
        s = stats.mean_and_spread(vals)
        row.update({key: s["mean"], f"{key}_std": s["std"], f"{key}_min": s["min"], f"{key}_max": s["max"]})
    for key in ("decode_steps_per_id", "train_seconds", "prompts_per_s"):
      vals = [r[key] for r in rs if r.get(key) is not None]
      row[key] = round(float(np.mean(vals)), 2) if vals else None
    row["paper_hits@10"] = PAPER.get(_kind(first))
    out.append(row)
  return out


def _best(rows: Sequence[dict], variant: str, pred, key: str = "hits@10") -> dict | None:
  cands = [r for r in rows if r["prompts"] == variant and pred(r)]
  return max(cands, key=lambda r: r[key]) if cands else None


def bootstrap_best(agg_rows: Sequence[dict], per_query: dict, variant: str, *, num_samples: int = 10000,
                   seed: int = 0) -> dict | None:
  """Paired bootstrap of the best Text2Tracks row vs. the best baseline (by mean Hits@10) of one
  variant, over the queries of the folds both finished, resampled within folds."""
  t2t = _best(agg_rows, variant, lambda r: bool(r.get("id_strategy")))
  base = _best(agg_rows, variant, lambda r: not r.get("id_strategy"))
  if not t2t or not base:
    return None
  a_folds, b_folds = per_query.get(f"{variant}|{t2t['method']}", {}), per_query.get(f"{variant}|{base['method']}", {})
  common = sorted(set(a_folds) & set(b_folds), key=str)
  if not common:
    return None
  groups = np.concatenate([np.full(len(a_folds[f]["hits@10"]), i) for i, f in enumerate(common)])
  out = {"prompts": variant, "text2tracks": t2t["method"], "baseline": base["method"], "folds": common,
         "resampling": "within folds"}
  for key in BOOTSTRAP_KEYS:
    a = np.concatenate([a_folds[f][key] for f in common])
    b = np.concatenate([b_folds[f][key] for f in common])
    out[key] = stats.paired_bootstrap(a, b, num_samples=num_samples, seed=seed, groups=groups)
  return out


def checks(agg_rows: Sequence[dict], boots: Sequence[dict]) -> list[str]:
  """The study's targets checked on the aggregated rows (each line says met / not met)."""
  lines = []

  def fmt(r):
    std = r.get("hits@10_std")
    return f"{r['hits@10']:.3f}" + (f" ± {std:.3f}" if std is not None else "")

  def verdict(ok):
    return "met" if ok else "NOT met"

  variants = list(dict.fromkeys(r["prompts"] for r in agg_rows))
  for v in variants:
    t2t = _best(agg_rows, v, lambda r: bool(r.get("id_strategy")))
    if not t2t:
      continue
    bm25 = _best(agg_rows, v, lambda r: _kind(r) == "bm25")
    bi = _best(agg_rows, v, lambda r: _kind(r).startswith("bi_encoder"))
    if v == "artists_masked" and bm25:
      lines.append(f"[{v}] best Text2Tracks ({t2t['method']}) Hits@10 {fmt(t2t)} vs. 2 x BM25 "
                   f"{2 * bm25['hits@10']:.3f} (BM25 {fmt(bm25)}): target >= 2x BM25 "
                   f"{verdict(t2t['hits@10'] >= 2 * bm25['hits@10'])}.")
    else:
      for b in (bm25, bi):
        if b:
          lines.append(f"[{v}] best Text2Tracks ({t2t['method']}) Hits@10 {fmt(t2t)} vs. {b['method']} "
                       f"{fmt(b)}: target T2T > baseline {verdict(t2t['hits@10'] > b['hits@10'])}.")
    # Pretrained encoder (a gin/models file) vs. a T5.1.1 size trained from scratch.
    b = _best(agg_rows, v, lambda r: bool(r.get("id_strategy")) and r.get("model") not in T5_SIZES)
    s = _best(agg_rows, v, lambda r: bool(r.get("id_strategy")) and r.get("model") in T5_SIZES)
    if b and s:
      lines.append(f"[{v}] best pretrained-encoder row ({b['method']}) {fmt(b)} vs. best from-scratch "
                   f"({s['method']}) {fmt(s)}: target bert_t5 > scratch {verdict(b['hits@10'] > s['hits@10'])}.")
  for bt in boots:
    h = bt["hits@10"]
    lines.append(f"[{bt['prompts']}] paired bootstrap (within folds {bt['folds']}, {h['num_queries']} queries, "
                 f"{h['num_samples']} samples) {bt['text2tracks']} - {bt['baseline']}: Hits@10 "
                 f"{h['mean_diff']:+.3f} [{h['low']:+.3f}, {h['high']:+.3f}] p={h['p_value']:.4f}; "
                 f"MAP@10 {bt['map@10']['mean_diff']:+.3f} p={bt['map@10']['p_value']:.4f}; "
                 f"artist Hits@10 {bt['artist_hits@10']['mean_diff']:+.3f} "
                 f"p={bt['artist_hits@10']['p_value']:.4f}.")
  return lines


def metrics_figure(out_dir: str, agg_rows: Sequence[dict]) -> list[tuple[str, str]]:
  """OUT/metrics.png: Hits@10 and MAP@10 per (prompts, method), mean over folds with the std as
  error bars; [(caption, file)] for results.md."""
  return plots.chart_figures(out_dir, agg_rows, caption="Hits@10 and MAP@10, mean ± std over folds",
                             metrics=("hits@10", "map@10"), label_keys=("prompts", "method"))


def table_rows(agg_rows: Sequence[dict]) -> list[dict]:
  """The aggregated rows with 'mean ± std' strings in the metric cells (results.md)."""
  out = []
  for r in agg_rows:
    d = dict(r)
    for key in ("hits@10", "map@10", "artist_hits@10", "artist_map@10"):
      if r.get(key) is not None:
        std = r.get(f"{key}_std")
        d[key] = f"{r[key]:.3f} ± {std:.3f}" if std is not None else f"{r[key]:.3f}"
    out.append(d)
  return out


def _queries(ws: pipeline.Workspace, prompt_field: str):
  """(prompts, relevant catalog rows) of the test playlists, cut as the tasks cut them."""
  max_chars = formats.dataset_prompt_max_chars(ws.ds_dir)
  prompts = [prompts_lib.make_prompt(p, prompt_field, max_chars=max_chars) for p in ws.test_playlists]
  relevant = [np.asarray([ws.ds.track_row[t] for t in p.track_ids], np.int32) for p in ws.test_playlists]
  return prompts, relevant


def _check_inputs(dataset_dirs, baselines, id_specs, model_families):
  """(ID specs, model families) of the study's arguments; UserInputError naming a bad one."""
  if not isinstance(dataset_dirs, dict) or not dataset_dirs:
    raise UserInputError(f"compare_ids.dataset_dirs must be a dict prompts variant -> dataset dir, got "
                         f"{dataset_dirs!r}")
  unknown = [b for b in baselines if b not in baselines_lib.ALL_BASELINES]
  if unknown:
    raise UserInputError(f"unknown baselines {unknown}; choose from {baselines_lib.ALL_BASELINES}")
  specs = specs_lib.parse_id_specs(id_specs)
  specs_lib.check_embeddings(specs, ("cf",), "compare_ids.protocol = 'folds'")
  families = parse_model_families(model_families)
  for f in families:
    missing = set(f.id_specs or ()) - {s.name for s in specs}
    if missing:
      raise UserInputError(f"model family {f.name!r}: id_specs {sorted(missing)} are not in compare_ids.id_specs")
    if f.encoder and f.encoder not in baselines:
      raise UserInputError(f"model family {f.name!r}: encoder={f.encoder!r} needs {f.encoder!r} in "
                           f"compare_ids.baselines (its fine-tuned encoder is the warm start)")
  return specs, families


def _notes(dataset_dirs, folds, families, *, k, train_steps, batch_size, learning_rate, beam_size) -> list[str]:
  """The report's notes on what was compared and how."""
  return [f"Prompts variants {list(dataset_dirs)}; folds {folds if folds is not None else 'splits.json'}; "
          f"every method scored on the same test conversations of each fold (Hits/MAP@{k} at track and "
          "artist level, t2t_jax.metrics); cells: mean ± std over folds (min/max in results.json).",
          "Text2Tracks families: " + "; ".join(
              f"{f.name} = {f.model_gin or f'models/t5_1_1_{f.model}.gin'}, "
              f"{f.train_steps or train_steps} steps x batch {f.batch_size or batch_size}, "
              f"lr {f.learning_rate or learning_rate}" + (f", {' '.join(f.bindings)}" if f.bindings else "")
              + (f", IDs {', '.join(f.id_specs)}" if f.id_specs is not None else "")
              + (f", encoder from the fold's {f.encoder} baseline" if f.encoder else "")
              for f in families) + f"; constrained beam search, beam {beam_size}.",
          PAPER_NOTE]


class _Results:
  """The study's rows so far, rewritten with their aggregates after every method (results.*,
  per_query.json), so an interrupted run keeps what it finished."""

  def __init__(self, out_dir: str, dataset_dirs: dict, *, notes: list[str], config: dict,
               bootstrap_samples: int, seed: int):
    self.out_dir, self.dataset_dirs, self.notes, self.config = out_dir, dataset_dirs, notes, config
    self.bootstrap_samples, self.seed = bootstrap_samples, seed
    self.machine = report.machine_info()
    self.fold_rows: list[dict] = []
    self.per_query: dict[str, dict] = {}  # "{variant}|{method}" -> {fold: {metric: list}}

  def flush(self, final_lines=()):
    agg = aggregate(self.fold_rows)
    boots = [b for b in (bootstrap_best(agg, self.per_query, v, num_samples=self.bootstrap_samples,
                                        seed=self.seed) for v in self.dataset_dirs) if b]
    lines = checks(agg, boots)
    report.write_results(self.out_dir, self.fold_rows + agg, columns=TABLE_COLUMNS, machine=self.machine,
                         config=self.config,
                         title="Text2Tracks on " + ", ".join(self.dataset_dirs) + ": ID strategies x model "
                         "families vs. retrieval baselines, over folds",
                         notes=self.notes + lines + list(final_lines), table_rows=table_rows(agg),
                         figures=metrics_figure(self.out_dir, agg))
    io_utils.write_json(os.path.join(self.out_dir, "per_query.json"), self.per_query)
    return agg, boots, lines

  def add(self, row, vectors):
    self.fold_rows.append(row)
    self.per_query.setdefault(f"{row['prompts']}|{row['method']}", {})[str(row["fold"])] = {
        key: [float(x) for x in vectors[key]] for key in BOOTSTRAP_KEYS}
    self.flush()


@dataclasses.dataclass
class _Fold:
  """One prompts variant's fold: its workspace, test queries and what its rows share."""
  ws: pipeline.Workspace
  tag: str  # "{variant} fold {fold}", for logs
  base: dict  # the row fields "prompts" and "fold"
  prompts: list
  relevant: list
  artist_of_row: list
  encoder_dirs: dict  # ModelFamily.encoder -> where that fitted baseline saves its encoder


def _fold_baselines(results: _Results, fold: _Fold, stage, baselines, *, k, prompt_field, train_steps,
                    batch_size, dual_encoder_kwargs, bi_encoder_kwargs, seed, progress) -> None:
  """Fits and scores every baseline on the fold, one at a time, so each row is written as it finishes."""
  with stage(f"{fold.tag}: baselines {', '.join(baselines)}"):
    for name in baselines:
      de_kwargs = dict(dual_encoder_kwargs or {})
      if name == "dual_encoder":
        de_kwargs.setdefault("train_steps", train_steps)
        de_kwargs.setdefault("batch_size", batch_size)
      (row,) = baselines_lib.run_baselines(
          fold.ws, fold.prompts, fold.relevant, k=k, prompt_field=prompt_field, which=(name,),
          dual_encoder_kwargs=de_kwargs, bi_encoder_kwargs=bi_encoder_kwargs, seed=seed,
          artist_of_row=fold.artist_of_row, per_query=True, progress=progress,
          save_dirs={n: d for n, d in fold.encoder_dirs.items() if n == name})
      vectors = row.pop("per_query")
      results.add({**fold.base, "family": None, **row}, vectors)
      print(f"      {fold.tag} {row['method']}: hits@{k}={row[f'hits@{k}']:.4f} "
            f"artist_hits@{k}={row[f'artist_hits@{k}']:.4f}", flush=True)


def _fold_text2tracks(results: _Results, fold: _Fold, stage, specs, families, *, work_dir, k,
                      prompt_field, train_steps, batch_size, learning_rate, beam_size, embedding_dim,
                      seed, num_devices, progress) -> None:
  """Trains and scores every (model family, ID spec) pair the families ask for on the fold."""
  ws, tag = fold.ws, fold.tag
  emb = None
  if any(s.strategy.startswith("semantic") for s in specs):
    with stage(f"{tag}: CF track embeddings"):
      emb = pipeline.cf_embeddings(ws, dim=embedding_dim, seed=seed)
  for spec in specs:
    if all(f.id_specs is not None and spec.name not in f.id_specs for f in families):
      continue
    table, build_s = pipeline.build_table(ws, spec, embeddings_NxD=emb, seed=seed)
    for fam in families:
      if fam.id_specs is not None and spec.name not in fam.id_specs:
        continue
      with stage(f"{tag}: Text2Tracks {fam.name} with {spec.name} IDs"):
        task = pipeline.make_task(ws, table, spec.name, prompt_field=prompt_field, input_vocab=fam.input_vocab)
        if [ex["prompt"] for ex in task.eval_examples] != fold.prompts:
          raise AssertionError(f"{task.name}: test prompts differ from the baselines' ({tag})")
        steps = fam.train_steps or train_steps
        model_dir = os.path.join(work_dir, "models", ws.name, fam.name, spec.name)
        trained = pipeline.train_text2tracks(
            task, model_dir=model_dir, model=fam.model, model_gin=fam.model_gin, train_steps=steps,
            batch_size=fam.batch_size or batch_size, learning_rate=fam.learning_rate or learning_rate,
            seed=seed, progress=progress, num_devices=num_devices, tensorboard=False,
            handle_sigterm=False, beam_size=beam_size,
            extra_bindings=fam.bindings + ((f"INITIAL_CHECKPOINT_PATH={fold.encoder_dirs[fam.encoder]!r}",)
                                           if fam.encoder else ()))
        ev = pipeline.evaluate_text2tracks(task, model_dir, beam_size=beam_size, k=k)
        m = evaluation.evaluate_rankings(ev["rows_NxK"], fold.relevant, ks=(1, 5, 10),
                                         artist_of_row=fold.artist_of_row, per_query=True)
        vectors = m.pop("per_query")
        eps = trained.examples_per_second
        row = {**fold.base, "method": f"Text2Tracks {fam.name} ({spec.name})", "family": fam.name,
               "model": fam.model, "id_strategy": spec.name, **m, **pipeline.decode_steps(table),
               "id_build_seconds": round(build_s, 2),
               "train_seconds": round(steps * (fam.batch_size or batch_size) / eps if eps else trained.seconds, 1),
               "train_wall_seconds": round(trained.seconds, 1), "final_loss": trained.final_loss,
               "prompts_per_s": ev["prompts_per_s"], "params": trained.config.num_params()}
        results.add(row, vectors)
        print(f"      {tag} {row['method']}: hits@{k}={m[f'hits@{k}']:.4f} "
              f"artist_hits@{k}={m[f'artist_hits@{k}']:.4f} loss={trained.final_loss}", flush=True)


def run(*, out_dir: str, work_dir: str, dataset_dirs: dict, folds: Sequence[int] | None, id_specs,
        model_families, train_steps: int, batch_size: int, learning_rate: float, beam_size: int, k: int,
        prompt_field: str, baselines: Sequence[str], dual_encoder_kwargs: dict | None,
        bi_encoder_kwargs: dict | None, embedding_dim: int, seed: int, num_devices: int | None,
        bootstrap_samples: int, config: dict, progress: bool = True) -> list[dict]:
  """The study (module docstring); writes results.{json,csv,md}, per_query.json, summary.json."""
  specs, families = _check_inputs(dataset_dirs, baselines, id_specs, model_families)
  notes = _notes(dataset_dirs, folds, families, k=k, train_steps=train_steps, batch_size=batch_size,
                 learning_rate=learning_rate, beam_size=beam_size)
  results = _Results(out_dir, dataset_dirs, notes=notes, config=config,
                     bootstrap_samples=bootstrap_samples, seed=seed)
  stage = pipeline.Stages(verbose=progress)
  t_start = time.time()
  for variant, ddir in dataset_dirs.items():
    for fold_k in (list(folds) if folds is not None else [None]):
      ws = pipeline.open_dataset(ddir, work_dir, fold=fold_k, name=variant, stage=stage)
      prompts, relevant = _queries(ws, prompt_field)
      fold = _Fold(ws=ws, tag=f"{variant} fold {fold_k}", prompts=prompts, relevant=relevant,
                   base={"prompts": variant, "fold": fold_k if fold_k is not None else "test"},
                   artist_of_row=[t.artist for t in ws.ds.tracks],
                   # Fitted baselines whose encoder a family warm-starts from (ModelFamily.encoder).
                   encoder_dirs={f.encoder: os.path.join(work_dir, "models", ws.name, f"{f.encoder}_encoder")
                                 for f in families if f.encoder})
      if baselines:
        _fold_baselines(results, fold, stage, baselines, k=k, prompt_field=prompt_field,
                        train_steps=train_steps, batch_size=batch_size,
                        dual_encoder_kwargs=dual_encoder_kwargs, bi_encoder_kwargs=bi_encoder_kwargs,
                        seed=seed, progress=progress)
      _fold_text2tracks(results, fold, stage, specs, families, work_dir=work_dir, k=k,
                        prompt_field=prompt_field, train_steps=train_steps, batch_size=batch_size,
                        learning_rate=learning_rate, beam_size=beam_size, embedding_dim=embedding_dim,
                        seed=seed, num_devices=num_devices, progress=progress)
  agg, boots, lines = results.flush([f"Total wall time {time.time() - t_start:.0f} s."])
  io_utils.write_json(os.path.join(out_dir, "summary.json"), {"checks": lines, "bootstrap": boots})
  print(report.markdown_table(table_rows(agg), TABLE_COLUMNS), flush=True)
  return results.fold_rows + agg
