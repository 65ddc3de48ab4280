"""The paper's comparison (`compare_ids`, gin-configurable): Text2Tracks with every ID strategy vs. BM25,
a dense dual encoder and most-popular, scored by the same metric code.

  compare_ids        the gin entry of tools/compare_ids.py (gin files bind `compare_ids.*`).  Three modes:
                     the synthetic benchmark (here), `dataset_dirs` (imported datasets, their folds:
                     studies/folds_study.py) and protocol="nested" (studies/fair_study.py)
  summarize          the paper's claims checked on the synthetic rows (semantic vs. integer / BM25 /
                     dual encoder, decoding steps per ID)
  plot_results       metrics.png and efficiency.png of the synthetic rows

The synthetic benchmark trains the same T5 for the same steps and batch size per ID strategy (`id_specs`),
decodes the same held-out prompts with constrained beam search, runs the baselines once (after the first
strategy, so that an interrupted run keeps them) and rewrites results.{json,csv,md} and the charts after
every method; summary.json at the end.
"""

from __future__ import annotations

import os
import time
import types

import gin
import numpy as np

from t2t_jax import io_utils, report
from t2t_jax.errors import UserInputError
from t2t_jax.ids import specs as specs_lib
from t2t_jax.models import t5
from t2t_jax.studies import baselines as baselines_lib
from t2t_jax.studies import fair_study, folds_study, pipeline, tuning

TABLE_COLUMNS = ("method", "id_strategy", "hits@10", "map@10", "ndcg@10", "decode_steps_per_id",
                 "train_seconds", "prompts_per_s")
DEFAULT_ID_SPECS = (  # the same as gin/experiments/compare_ids.gin
    ("semantic_rq", "semantic_rq", {"level_sizes": (64, 64), "last_level_order": "popularity"}),
    ("semantic_hkmeans", "semantic_hkmeans",
     {"level_sizes": (64, 64), "balanced": True, "disambiguation": False, "last_level_order": "popularity"}),
    ("integer_sequential", "integer", {"order": "sequential", "base": None}),
    ("integer_random", "integer", {"order": "random", "base": None}),
    ("integer_tokenized", "integer", {"order": "sequential", "base": 10}),
    ("content", "content", {"max_len": 32, "template": "{artist} - {title}"}),
)
WORK_DIR = os.path.join("t2t_runs", "compare_ids")


@gin.configurable
def compare_ids(*, out_dir: str = gin.REQUIRED, work_dir: str | None = None, seed: int = 0,
                num_tracks: int = 3000, num_playlists: int = 5000, vocab_size: int = 2000,
                synthetic_overrides: dict | None = None, embedding_dim: int = 64,
                id_specs=DEFAULT_ID_SPECS, model: str = "tiny", model_overrides: dict | None = None,
                train_steps: int = 500, batch_size: int = 128, learning_rate: float = 3e-3,
                beam_size: int = 20, k: int = 10, eval_playlists: int | None = 200, prompt_field: str = "title",
                baselines=baselines_lib.BASELINES, dual_encoder_kwargs: dict | None = None,
                num_devices: int | None = None, progress: bool = True, dataset_dirs: dict | None = None,
                folds: list | None = None, model_families=None, bi_encoder_kwargs: dict | None = None,
                bootstrap_samples: int = 10000, protocol: str = "folds", seeds: list | None = None,
                tune_grid: dict | None = None, hybrid_weights=None, hybrid_depth: int = 100,
                reuse_encoders: bool = False, selected_name: str | None = None,
                validation_only: bool = False, beam_sizes: list | None = None,
                beam_scorings: list | None = None, lexical_prior_weights: list | None = None,
                dense_prior_weights: list | None = None) -> list[dict]:
  """Runs the comparison; writes results.{json,csv,md} and PNG charts into out_dir; returns the rows.

  `dual_encoder_kwargs` default to the Text2Tracks budget: the same T5 size's encoder, the same
  number of steps and batch size.

  `dataset_dirs` ({prompts variant: imported dataset dir}; None = the synthetic benchmark) runs
  `studies.folds_study` instead: `folds` (fold indices of each dir's folds.json; None = its
  splits.json), `model_families` ((name, T5 size or gin/models stem[, options]); None = one family
  ("scratch", `model`)), `bi_encoder_kwargs` for the "bi_encoder" / "bi_encoder_ft" baselines and
  `bootstrap_samples`; the synthetic-only arguments are ignored.

  `protocol="nested"` (with `dataset_dirs`) runs `studies.fair_study`: every choice on each fold's
  inner validation split, `seeds` (default [seed]) training seeds, the tuned bi-encoder (`tune_grid`,
  `studies.tuning.DEFAULT_GRID`) and the hybrid (`hybrid_weights`, `hybrid_depth`), runs.jsonl;
  `reuse_encoders` loads the tuned bi-encoders an earlier run saved in `work_dir` instead of tuning
  them again, `selected_name` names the validation-selected Text2Tracks row, `validation_only` scores
  the Text2Tracks candidates on validation only, `beam_sizes` are the beam widths each candidate is
  scored at on validation, the pick's beam used on test, `beam_scorings` the beam rankings ("log_prob",
  "logit") chosen among the same way, `lexical_prior_weights` the weights of a BM25 prior inside beam
  search chosen among the same way, `dense_prior_weights` those of the tuned bi-encoder's cosine added
  to it, every pair a validation choice (`fair_study.run`).
  """
  config = dict(locals(), work_dir=work_dir or WORK_DIR)  # the arguments, as results.md records them
  if protocol not in ("folds", "nested"):
    raise UserInputError(f"compare_ids.protocol must be 'folds' or 'nested', got {protocol!r}")
  a = types.SimpleNamespace(**config)
  if protocol == "nested":
    return _run_nested(a, config)
  if dataset_dirs is not None:
    return _run_folds(a, config)
  return _run_synthetic(a, config)


def _run_nested(a: types.SimpleNamespace, config: dict) -> list[dict]:
  """protocol="nested": `fair_study.run`."""
  if a.dataset_dirs is None:
    raise UserInputError("compare_ids.protocol='nested' needs compare_ids.dataset_dirs (imported datasets)")
  return fair_study.run(
      out_dir=a.out_dir, work_dir=a.work_dir, dataset_dirs=dict(a.dataset_dirs), folds=a.folds,
      seeds=list(a.seeds) if a.seeds is not None else [a.seed], id_specs=a.id_specs,
      model_families=a.model_families if a.model_families is not None else [("scratch", a.model)],
      train_steps=a.train_steps, batch_size=a.batch_size,
      learning_rate=a.learning_rate, beam_size=a.beam_size, prompt_field=a.prompt_field, baselines=a.baselines,
      bi_encoder_kwargs=a.bi_encoder_kwargs, tune_grid=a.tune_grid,
      hybrid_weights=tuple(a.hybrid_weights) if a.hybrid_weights is not None else tuning.HYBRID_WEIGHTS,
      hybrid_depth=a.hybrid_depth, num_devices=a.num_devices, bootstrap_samples=a.bootstrap_samples,
      config=config, progress=a.progress, reuse_encoders=bool(a.reuse_encoders),
      selected_name=a.selected_name or fair_study.SELECTED, validation_only=bool(a.validation_only),
      beam_sizes=a.beam_sizes, beam_scorings=a.beam_scorings, lexical_prior_weights=a.lexical_prior_weights,
      dense_prior_weights=a.dense_prior_weights)


def _run_folds(a: types.SimpleNamespace, config: dict) -> list[dict]:
  """`dataset_dirs` with protocol="folds": `folds_study.run`."""
  if a.beam_size < a.k:
    raise UserInputError(f"compare_ids.beam_size ({a.beam_size}) must be >= k ({a.k})")
  return folds_study.run(
      out_dir=a.out_dir, work_dir=a.work_dir, dataset_dirs=dict(a.dataset_dirs), folds=a.folds,
      id_specs=a.id_specs, model_families=a.model_families or [("scratch", a.model)], train_steps=a.train_steps,
      batch_size=a.batch_size, learning_rate=a.learning_rate, beam_size=a.beam_size, k=a.k,
      prompt_field=a.prompt_field, baselines=a.baselines, dual_encoder_kwargs=a.dual_encoder_kwargs,
      bi_encoder_kwargs=a.bi_encoder_kwargs, embedding_dim=a.embedding_dim, seed=a.seed,
      num_devices=a.num_devices, bootstrap_samples=a.bootstrap_samples, config=config, progress=a.progress)


def _check_synthetic(a: types.SimpleNamespace) -> None:
  if a.beam_size < a.k:
    raise UserInputError(f"compare_ids.beam_size ({a.beam_size}) must be >= k ({a.k})")
  for name, v in (("train_steps", a.train_steps), ("batch_size", a.batch_size), ("num_tracks", a.num_tracks),
                  ("num_playlists", a.num_playlists)):
    if v <= 0:
      raise UserInputError(f"compare_ids.{name} must be positive, got {v}")


def _run_synthetic(a: types.SimpleNamespace, config: dict) -> list[dict]:
  """The synthetic benchmark: every ID spec, then the baselines once (after the first spec)."""
  _check_synthetic(a)
  specs = specs_lib.parse_id_specs(a.id_specs)
  specs_lib.check_embeddings(specs, ("cf",), "the synthetic benchmark")
  machine = report.machine_info()
  # "name" and "v": the last values of _check_synthetic's loop, which results.md has always recorded.
  config = {**config, "name": "num_playlists", "v": a.num_playlists}
  config["id_specs"] = [[s.name, s.strategy, s.kwargs] for s in specs]
  stage = pipeline.Stages(verbose=a.progress)
  t_start = time.time()
  ws = pipeline.prepare_synthetic(a.work_dir, seed=a.seed, num_tracks=a.num_tracks, num_playlists=a.num_playlists,
                                  vocab_size=a.vocab_size, synthetic_overrides=a.synthetic_overrides, stage=stage)
  emb, emb_seconds = None, 0.0
  if any(s.strategy.startswith("semantic") for s in specs):
    with stage("CF track embeddings"):
      t = time.time()
      emb = pipeline.cf_embeddings(ws, dim=a.embedding_dim, seed=a.seed)
      emb_seconds = time.time() - t
  rows: list[dict] = []
  notes = [f"{ws.num_tracks} tracks, {len(ws.train_playlists)} train playlists; every method is scored on the "
           f"same {a.eval_playlists or len(ws.test_playlists)} test playlists (Hits/MAP/NDCG@{a.k}).",
           f"Text2Tracks: T5.1.1-{a.model}, {a.train_steps} steps x batch {a.batch_size}, lr {a.learning_rate} "
           f"(linear_warmup_rsqrt, gin/experiments/synthetic_cpu.gin), "
           f"beam {a.beam_size}; semantic ID build time includes the CF embeddings ({emb_seconds:.1f} s)."]

  def flush():
    report.write_results(a.out_dir, rows, columns=TABLE_COLUMNS, machine=machine, config=config,
                         title="Text2Tracks: ID strategies vs. retrieval baselines (synthetic)", notes=notes)
    plot_results(rows, a.out_dir)

  t2t_rows, baseline_rows = [], []
  inputs_length = None  # one encoder length for every strategy: the first task's
  for i, spec in enumerate(specs):
    with stage(f"Text2Tracks with {spec.name} IDs"):
      task, row = _text2tracks_row(a, ws, spec, emb, emb_seconds, inputs_length)
      inputs_length = task.feature_lengths["inputs"]
      t2t_rows.append(row)
    rows[:] = t2t_rows + baseline_rows
    flush()
    if i == 0 and a.baselines:  # early, so that an interrupted run still has them
      with stage(f"baselines: {', '.join(a.baselines)}"):
        baseline_rows.extend(_baseline_rows(a, ws, task))
      rows[:] = t2t_rows + baseline_rows
      flush()
  notes.append(f"Total wall time {time.time() - t_start:.0f} s; stages: {stage.times}.")
  summary = summarize(rows, k=a.k)
  notes.extend(summary["lines"])
  flush()
  io_utils.write_json(os.path.join(a.out_dir, "summary.json"), summary)
  print(report.markdown_table(rows, TABLE_COLUMNS), flush=True)
  return rows


def _steady_seconds(examples: int, examples_per_second: float | None, wall_seconds: float) -> float:
  """Training time without compilation (examples / steady-state throughput); wall time if unknown."""
  return round(examples / examples_per_second if examples_per_second else wall_seconds, 1)


def _label(spec: specs_lib.IdSpec) -> str:
  return f"Text2Tracks ({spec.name})"


def _text2tracks_row(a: types.SimpleNamespace, ws, spec: specs_lib.IdSpec, emb, emb_seconds: float,
                     inputs_length: int | None):
  """(task, result row) of Text2Tracks with `spec`'s IDs: table built, model trained and evaluated."""
  table, build_s = pipeline.build_table(ws, spec, embeddings_NxD=emb, seed=a.seed)
  if spec.strategy.startswith("semantic"):
    build_s += emb_seconds
  task = pipeline.make_task(ws, table, spec.name, prompt_field=a.prompt_field, inputs_length=inputs_length,
                            eval_playlists=a.eval_playlists)
  model_dir = os.path.join(a.work_dir, "models", spec.name)
  trained = pipeline.train_text2tracks(task, model_dir=model_dir, model=a.model, train_steps=a.train_steps,
                                       batch_size=a.batch_size, learning_rate=a.learning_rate, seed=a.seed,
                                       progress=a.progress, model_overrides=a.model_overrides,
                                       num_devices=a.num_devices, tensorboard=False,
                                       handle_sigterm=False, beam_size=a.beam_size)
  ev = pipeline.evaluate_text2tracks(task, model_dir, beam_size=a.beam_size, k=a.k)
  row = {"method": _label(spec), "id_strategy": spec.name, **ev["metrics"],
         **pipeline.decode_steps(table), "id_build_seconds": round(build_s, 2),
         "train_seconds": _steady_seconds(a.train_steps * a.batch_size, trained.examples_per_second,
                                          trained.seconds),
         "train_wall_seconds": round(trained.seconds, 1),
         "train_examples_per_s": trained.examples_per_second, "final_loss": trained.final_loss,
         "prompts_per_s": ev["prompts_per_s"], "index_bytes": ev["index_bytes"],
         "params": trained.config.num_params()}
  print(f"      {spec.name}: hits@{a.k}={ev['metrics'][f'hits@{a.k}']:.4f} "
        f"steps/ID={row['decode_steps_per_id']} loss={trained.final_loss}", flush=True)
  return task, row


def _baseline_rows(a: types.SimpleNamespace, ws, task) -> list[dict]:
  """The baselines' rows on `task`'s held-out prompts; the dual encoder at the Text2Tracks budget."""
  de_kwargs = {"train_steps": a.train_steps, "batch_size": a.batch_size, **(a.dual_encoder_kwargs or {})}
  if "config" not in de_kwargs:
    de_kwargs["config"] = t5.T5Config.preset(a.model, vocab_size=task.vocab.text_vocab_size)
    if a.model_overrides:
      de_kwargs["config"] = de_kwargs["config"].replace(**a.model_overrides)
  return baselines_lib.run_baselines(
      ws, task.prompts, task.relevant, k=a.k, prompt_field=a.prompt_field, which=tuple(a.baselines),
      dual_encoder_kwargs=de_kwargs, seed=a.seed, progress=a.progress)


def summarize(rows, *, k: int = 10) -> dict:
  """The paper's claims checked on these rows: semantic vs. integer IDs (relative Hits@k), vs. BM25
  and the dual encoder, and decoding steps per ID of content vs. semantic IDs."""
  hits = f"hits@{k}"

  def best(prefix):
    cands = [r for r in rows if (r.get("id_strategy") or "").startswith(prefix)]
    return max(cands, key=lambda r: r[hits]) if cands else None

  def baseline(prefix):
    return next((r for r in rows if not r.get("id_strategy") and r["method"].startswith(prefix)), None)

  sem, integer, content = best("semantic"), best("integer"), best("content")
  out = {"best_semantic": sem and sem["id_strategy"], "best_integer": integer and integer["id_strategy"]}
  lines = []
  if sem and integer and integer[hits] > 0:
    out["semantic_vs_integer_rel_hits"] = sem[hits] / integer[hits] - 1
    lines.append(f"Best semantic ({sem['id_strategy']}) vs. best integer ({integer['id_strategy']}) {hits}: "
                 f"{sem[hits]:.4f} vs. {integer[hits]:.4f} "
                 f"({100 * out['semantic_vs_integer_rel_hits']:+.1f}% relative; target >= +30%).")
  for name, prefix in (("bm25", "BM25"), ("dual_encoder", "Dual encoder")):
    b = baseline(prefix)
    if sem and b:
      out[f"semantic_minus_{name}_hits"] = sem[hits] - b[hits]
      lines.append(f"Best semantic vs. {b['method']} {hits}: {sem[hits]:.4f} vs. {b[hits]:.4f}.")
  if sem and content:
    # The best semantic variant (the one the Hits@k claims use) and every variant, for the record.
    out["content_over_semantic_steps"] = content["decode_steps_per_id"] / sem["decode_steps_per_id"]
    out["content_over_semantic_steps_each"] = {
        r["id_strategy"]: content["decode_steps_per_id"] / r["decode_steps_per_id"]
        for r in rows if (r.get("id_strategy") or "").startswith("semantic")}
    each = ", ".join(f"{name} {v:.1f}x" for name, v in out["content_over_semantic_steps_each"].items())
    lines.append(f"Decoding steps per ID: content {content['decode_steps_per_id']} vs. best semantic "
                 f"({sem['id_strategy']}) {sem['decode_steps_per_id']} "
                 f"({out['content_over_semantic_steps']:.1f}x fewer; target >= 3x; each semantic variant: {each}).")
  out["lines"] = lines
  return out


def plot_results(rows, out_dir: str) -> None:
  """metrics.png (Hits/MAP/NDCG@10 per method) and efficiency.png (steps per ID, train s, prompts/s)."""
  import matplotlib  # pylint: disable=g-import-not-at-top  (optional, heavy: only when charts are drawn)
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  if not rows:
    return
  names = [r["id_strategy"] or r["method"].split(" (")[0] for r in rows]
  colors = ["tab:green" if (r["id_strategy"] or "").startswith("semantic") else
            "tab:blue" if r["id_strategy"] else "tab:gray" for r in rows]
  x = np.arange(len(rows))
  fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows) + 2), 3.4))
  for j, m in enumerate(("hits@10", "map@10", "ndcg@10")):
    ax.bar(x + (j - 1) * 0.27, [r.get(m) or 0.0 for r in rows], width=0.27, label=m)
  ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
  ax.set_ylabel("score")
  ax.set_title("Ranking quality on held-out playlists")
  ax.legend(fontsize=8)
  report.save_figure(fig, os.path.join(out_dir, "metrics.png"))

  panels = (("decode_steps_per_id", "decoding steps per ID"), ("train_seconds", "train time (s)"),
            ("prompts_per_s", "prompts / s at inference"))
  fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
  for ax, (key, title) in zip(axes, panels):
    vals = [r.get(key) for r in rows]
    keep = [i for i, v in enumerate(vals) if v is not None]
    ax.bar(np.arange(len(keep)), [vals[i] for i in keep], color=[colors[i] for i in keep])
    ax.set_xticks(np.arange(len(keep)), [names[i] for i in keep], rotation=35, ha="right", fontsize=7)
    ax.set_title(title, fontsize=9)
    if key == "prompts_per_s":
      ax.set_yscale("log")
  report.save_figure(fig, os.path.join(out_dir, "efficiency.png"))
