"""The paper's comparison: Text2Tracks with every ID strategy vs. BM25, a dense dual encoder and
most-popular, on the same synthetic split, scored by the same metric code; or, with
`compare_ids.dataset_dirs`, on the folds of imported datasets (CPCD) with model families and the
pretrained bi-encoder baselines.

  python tools/compare_ids.py --gin_file gin/experiments/compare_ids.gin --out docs/results/compare_ids
  python tools/compare_ids.py --gin_file gin/experiments/compare_ids_tiny.gin --out /tmp/cmp   # seconds

CPCD (issue 13): import both prompt variants first, then run the study (gin/experiments/compare_cpcd*.gin
read data/cpcd and data/cpcd_artists_masked; rebind compare_ids.dataset_dirs for other places):
  t2t import cpcd /path/cpcd --out data/cpcd
  t2t import cpcd /path/cpcd --artists masked --out data/cpcd_artists_masked
  python tools/compare_ids.py --gin_file gin/experiments/compare_cpcd.gin --out docs/results/compare_cpcd
  python tools/compare_ids.py --gin_file gin/experiments/compare_cpcd_small.gin --out docs/results/compare_cpcd_small
Every (prompts variant, fold) x (model family, ID strategy) and every baseline run on the same test
conversations; rows per fold and aggregated over folds (mean, std, min, max) with a `prompts` field,
track- and artist-level Hits/MAP@10, a paired bootstrap (within folds) of the best Text2Tracks row vs.
the best baseline per variant, the paper's CPCD numbers as a reference column, and the study's
targets checked in results.md (t2t_jax/studies/folds_study.py).  Outputs: results.json/.csv (per-fold
rows `fold` = k and aggregated rows `fold` = "all"), results.md, per_query.json, summary.json.

Synthetic mode (dataset_dirs None):

Every ID strategy (content, integer sequential / random / tokenized, semantic RQ / hierarchical;
`id_specs` in the gin file) trains the same T5 for the same number of steps and batch size, then
decodes the same held-out prompts with constrained beam search.  Outputs in --out:
  results.json   list of rows: method, id_strategy, hits@10, map@10, ndcg@10, decode_steps_per_id, ...
  results.csv    the same rows, every column
  results.md     the table, the machine, the config and the paper's claims checked on the rows
  summary.json   those checks as numbers (semantic vs. integer / BM25 / dual encoder, steps per ID)
  metrics.png    Hits@10 / MAP@10 / NDCG@10 per method
  efficiency.png decoding steps per ID, train time and prompts/s at inference per method
Rows are written after every method, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import gin
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from t2t_jax import gin_utils  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax import report  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.ids import specs as specs_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.models import t5  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.studies import baselines as baselines_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.studies import pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top,wrong-import-position

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


def _steady_seconds(examples: int, examples_per_second: float | None, wall_seconds: float) -> float:
  """Training time without compilation (examples / steady-state throughput); wall time if unknown."""
  return round(examples / examples_per_second if examples_per_second else wall_seconds, 1)


def _label(spec: specs_lib.IdSpec) -> str:
  return f"Text2Tracks ({spec.name})"


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
                tune_grid: dict | None = None, hybrid_weights=None, hybrid_depth: int = 100) -> list[dict]:
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
  `studies.tuning.DEFAULT_GRID`) and the hybrid (`hybrid_weights`, `hybrid_depth`), runs.jsonl.
  """
  if protocol not in ("folds", "nested"):
    raise UserInputError(f"compare_ids.protocol must be 'folds' or 'nested', got {protocol!r}")
  if protocol == "nested":
    from t2t_jax.studies import fair_study, tuning  # pylint: disable=g-import-not-at-top
    if dataset_dirs is None:
      raise UserInputError("compare_ids.protocol='nested' needs compare_ids.dataset_dirs (imported datasets)")
    work_dir = work_dir or os.path.join("t2t_runs", "compare_ids")
    config = {k_: v for k_, v in locals().items() if k_ not in ("fair_study", "tuning")}
    return fair_study.run(
        out_dir=out_dir, work_dir=work_dir, dataset_dirs=dict(dataset_dirs), folds=folds,
        seeds=list(seeds) if seeds is not None else [seed], id_specs=id_specs,
        model_families=model_families if model_families is not None else [("scratch", model)],
        train_steps=train_steps, batch_size=batch_size,
        learning_rate=learning_rate, beam_size=beam_size, prompt_field=prompt_field, baselines=baselines,
        bi_encoder_kwargs=bi_encoder_kwargs, tune_grid=tune_grid,
        hybrid_weights=tuple(hybrid_weights) if hybrid_weights is not None else tuning.HYBRID_WEIGHTS,
        hybrid_depth=hybrid_depth, num_devices=num_devices, bootstrap_samples=bootstrap_samples, config=config,
        progress=progress)
  if dataset_dirs is not None:
    from t2t_jax.studies import folds_study  # pylint: disable=g-import-not-at-top
    if beam_size < k:
      raise UserInputError(f"compare_ids.beam_size ({beam_size}) must be >= k ({k})")
    work_dir = work_dir or os.path.join("t2t_runs", "compare_ids")
    config = {k_: v for k_, v in locals().items() if k_ not in ("folds_study",)}
    return folds_study.run(
        out_dir=out_dir, work_dir=work_dir, dataset_dirs=dict(dataset_dirs), folds=folds, id_specs=id_specs,
        model_families=model_families or [("scratch", model)], train_steps=train_steps, batch_size=batch_size,
        learning_rate=learning_rate, beam_size=beam_size, k=k, prompt_field=prompt_field, baselines=baselines,
        dual_encoder_kwargs=dual_encoder_kwargs, bi_encoder_kwargs=bi_encoder_kwargs,
        embedding_dim=embedding_dim, seed=seed, num_devices=num_devices, bootstrap_samples=bootstrap_samples,
        config=config, progress=progress)
  if beam_size < k:
    raise UserInputError(f"compare_ids.beam_size ({beam_size}) must be >= k ({k})")
  for name, v in (("train_steps", train_steps), ("batch_size", batch_size), ("num_tracks", num_tracks),
                  ("num_playlists", num_playlists)):
    if v <= 0:
      raise UserInputError(f"compare_ids.{name} must be positive, got {v}")
  specs = specs_lib.parse_id_specs(id_specs)
  work_dir = work_dir or os.path.join("t2t_runs", "compare_ids")
  machine = report.machine_info()
  config = {k_: v for k_, v in locals().items() if k_ not in ("specs", "machine")}
  config["id_specs"] = [[s.name, s.strategy, s.kwargs] for s in specs]
  stage = pipeline.Stages(verbose=progress)
  t_start = time.time()
  ws = pipeline.prepare_synthetic(work_dir, seed=seed, num_tracks=num_tracks, num_playlists=num_playlists,
                                    vocab_size=vocab_size, synthetic_overrides=synthetic_overrides, stage=stage)
  emb = None
  emb_seconds = 0.0
  if any(s.strategy.startswith("semantic") for s in specs):
    with stage("CF track embeddings"):
      t = time.time()
      emb = pipeline.cf_embeddings(ws, dim=embedding_dim, seed=seed)
      emb_seconds = time.time() - t
  rows: list[dict] = []
  notes = [f"{ws.num_tracks} tracks, {len(ws.train_playlists)} train playlists; every method is scored on the "
           f"same {eval_playlists or len(ws.test_playlists)} test playlists (Hits/MAP/NDCG@{k}).",
           f"Text2Tracks: T5.1.1-{model}, {train_steps} steps x batch {batch_size}, lr {learning_rate} "
           f"(linear_warmup_rsqrt, gin/experiments/synthetic_cpu.gin), "
           f"beam {beam_size}; semantic ID build time includes the CF embeddings ({emb_seconds:.1f} s)."]

  def flush():
    report.write_results(out_dir, rows, columns=TABLE_COLUMNS, machine=machine, config=config,
                             title="Text2Tracks: ID strategies vs. retrieval baselines (synthetic)", notes=notes)
    plot_results(rows, out_dir)

  def run_baselines_once(task):
    with stage(f"baselines: {', '.join(baselines)}"):
      de_kwargs = {"train_steps": train_steps, "batch_size": batch_size, **(dual_encoder_kwargs or {})}
      if "config" not in de_kwargs:
        de_kwargs["config"] = t5.T5Config.preset(model, vocab_size=task.vocab.text_vocab_size)
        if model_overrides:
          de_kwargs["config"] = de_kwargs["config"].replace(**model_overrides)
      baseline_rows.extend(baselines_lib.run_baselines(
          ws, task.prompts, task.relevant, k=k, prompt_field=prompt_field, which=tuple(baselines),
          dual_encoder_kwargs=de_kwargs, seed=seed, progress=progress))

  t2t_rows, baseline_rows = [], []
  inputs_length = None
  for i, spec in enumerate(specs):
    with stage(f"Text2Tracks with {spec.name} IDs"):
      table, build_s = pipeline.build_table(ws, spec, embeddings_NxD=emb, seed=seed)
      if spec.strategy.startswith("semantic"):
        build_s += emb_seconds
      task = pipeline.make_task(ws, table, spec.name, prompt_field=prompt_field, inputs_length=inputs_length,
                                  eval_playlists=eval_playlists)
      inputs_length = task.feature_lengths["inputs"]  # one encoder length for every strategy
      model_dir = os.path.join(work_dir, "models", spec.name)
      trained = pipeline.train_text2tracks(task, model_dir=model_dir, model=model, train_steps=train_steps,
                                             batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                                             progress=progress, model_overrides=model_overrides,
                                             num_devices=num_devices, tensorboard=False,
                                             handle_sigterm=False, beam_size=beam_size)
      ev = pipeline.evaluate_text2tracks(task, model_dir, beam_size=beam_size, k=k)
      t2t_rows.append({"method": _label(spec), "id_strategy": spec.name, **ev["metrics"],
                       **pipeline.decode_steps(table), "id_build_seconds": round(build_s, 2),
                       "train_seconds": _steady_seconds(train_steps * batch_size, trained.examples_per_second,
                                                        trained.seconds),
                       "train_wall_seconds": round(trained.seconds, 1),
                       "train_examples_per_s": trained.examples_per_second, "final_loss": trained.final_loss,
                       "prompts_per_s": ev["prompts_per_s"], "index_bytes": ev["index_bytes"],
                       "params": trained.config.num_params()})
      print(f"      {spec.name}: hits@{k}={ev['metrics'][f'hits@{k}']:.4f} "
            f"steps/ID={t2t_rows[-1]['decode_steps_per_id']} loss={trained.final_loss}", flush=True)
    rows[:] = t2t_rows + baseline_rows
    flush()
    if i == 0 and baselines:  # early, so that an interrupted run still has them
      run_baselines_once(task)
      rows[:] = t2t_rows + baseline_rows
      flush()
  notes.append(f"Total wall time {time.time() - t_start:.0f} s; stages: {stage.times}.")
  summary = summarize(rows, k=k)
  notes.extend(summary["lines"])
  flush()
  from t2t_jax import io_utils  # pylint: disable=g-import-not-at-top
  io_utils.write_json(os.path.join(out_dir, "summary.json"), summary)
  print(report.markdown_table(rows, TABLE_COLUMNS), flush=True)
  return rows


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
  import matplotlib  # pylint: disable=g-import-not-at-top
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


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--gin_file", action="append", default=[], help="e.g. gin/experiments/compare_ids.gin")
  p.add_argument("--gin_bindings", action="append", default=[], help="e.g. \"compare_ids.train_steps = 100\"")
  p.add_argument("--out", default=None, help="results dir (overrides compare_ids.out_dir)")
  p.add_argument("--work_dir", default=None, help="dataset, ID tables and models (default t2t_runs/compare_ids)")
  p.add_argument("--no_progress", action="store_true")
  p.add_argument("--merge", nargs="+", metavar="RESULT_DIR",
                 help="instead of running: join nested-protocol result dirs of the same config on disjoint folds "
                      "into --out (fold means, aggregates and bootstraps recomputed)")
  args = p.parse_args(argv)
  try:
    if args.merge:
      if not args.out:
        raise UserInputError("--merge needs --out")
      from t2t_jax.studies import fair_study  # pylint: disable=g-import-not-at-top
      fair_study.merge(args.out, args.merge)
      return 0
    gin_utils.parse_gin(args.gin_file, args.gin_bindings, finalize=False)
    compare_ids(**pipeline.cli_overrides(args))
  except UserInputError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
