"""The catalog scaling study (gin `scaling_study.*`): the Text2Tracks pipeline (semantic IDs) at
several synthetic catalog sizes, one row per size; the library behind tools/scaling_study.py.

  scaling_study       per size N: synthetic data, CF embeddings, semantic IDs, the SeqIO task, a few
                      training steps, constrained beam search; rows -> results.{json,csv,md} + scaling.png
  auto_codebook_size  the codebook size per level chosen for N (a power of two near N ** (1 / levels))
  plot_scaling        scaling.png: metrics, build times, index bytes and throughput against N (log x)
"""

from __future__ import annotations

import math
import os
import shutil
import time

import gin
import numpy as np

from t2t_jax import report
from t2t_jax.errors import UserInputError
from t2t_jax.ids import specs as specs_lib
from t2t_jax.studies import pipeline

TABLE_COLUMNS = ("num_tracks", "num_playlists", "hits@10", "ndcg@10", "level_sizes", "id_build_seconds",
                 "index_bytes", "decode_ms_per_batch", "prompts_per_s", "train_examples_per_s")


def auto_codebook_size(num_tracks: int, levels: int, *, lo: int = 8, hi: int = 4096) -> int:
  """The power of two >= num_tracks ** (1 / levels), clipped to [lo, hi] and to num_tracks."""
  k = 1 << max(0, math.ceil(math.log2(max(2.0, num_tracks ** (1.0 / levels)) - 1e-9)))
  return int(min(max(k, lo), hi, num_tracks))


@gin.configurable
def scaling_study(*, out_dir: str = gin.REQUIRED, work_dir: str | None = None,
                  catalog_sizes=(10_000, 100_000), playlists_per_track: float = 1.0, min_playlists: int = 1000,
                  seed: int = 0, vocab_size: int = 2000, embedding_dim: int = 64,
                  strategy: str = "semantic_rq", levels: int = 2, codebook_size: int | None = None,
                  strategy_kwargs: dict | None = None, synthetic_overrides: dict | None = None,
                  model: str = "tiny", model_overrides: dict | None = None, train_steps: int = 300,
                  batch_size: int = 128, learning_rate: float = 3e-3, beam_size: int = 20, k: int = 10,
                  eval_playlists: int = 200, decode_batch_size: int = 32, prompt_field: str = "title",
                  keep_work: bool = False, num_devices: int | None = None, progress: bool = True) -> list[dict]:
  """Runs the pipeline at each catalog size; writes results.{json,csv,md} + scaling.png; returns rows."""
  sizes = [int(s) for s in (catalog_sizes if isinstance(catalog_sizes, (list, tuple)) else [catalog_sizes])]
  if not sizes or any(s < 2 for s in sizes):
    raise UserInputError(f"scaling_study.catalog_sizes must be integers >= 2, got {catalog_sizes!r}")
  if strategy not in ("semantic_rq", "semantic_hkmeans"):
    raise UserInputError(f"scaling_study.strategy must be semantic_rq or semantic_hkmeans, got {strategy!r}")
  if playlists_per_track <= 0 or levels < 1 or train_steps <= 0:
    raise UserInputError(f"scaling_study: playlists_per_track ({playlists_per_track}), levels ({levels}) and "
                         f"train_steps ({train_steps}) must be positive")
  if beam_size < k:
    raise UserInputError(f"scaling_study.beam_size ({beam_size}) must be >= k ({k})")
  work_dir = work_dir or os.path.join("t2t_runs", "scaling_study")
  machine = report.machine_info()
  config = {key: v for key, v in locals().items() if key not in ("machine",)}
  rows: list[dict] = []
  skw = strategy_kwargs or {}
  disamb = {True: " + disambiguation", False: "", "auto": " (+ disambiguation only if IDs collide)"}.get(
      skw.get("disambiguation", True), "")
  extras = "".join(f", {key}={skw[key]}" for key in ("balanced", "unique_last_level") if key in skw)
  notes = [f"Semantic IDs ({strategy}, {levels} levels{disamb}{extras}), T5.1.1-{model}, {train_steps} steps x "
           f"batch {batch_size}, beam {beam_size}, {playlists_per_track} playlists per track "
           f"(at least {min_playlists}); decode latency is per batch of {decode_batch_size} prompts.",
           "id_build_seconds: k-means levels + disambiguation; embedding_seconds: CF embeddings; "
           "index_bytes: the constrained-decoding trie on the device."]
  for n in sorted(sizes):
    t_size = time.time()
    stage = pipeline.Stages(verbose=progress)
    size_dir = os.path.join(work_dir, f"n{n}")
    num_playlists = max(min_playlists, int(round(playlists_per_track * n)))
    ws = pipeline.prepare_synthetic(size_dir, seed=seed, num_tracks=n, num_playlists=num_playlists,
                                      vocab_size=vocab_size, synthetic_overrides=synthetic_overrides, stage=stage)
    with stage(f"N={n}: CF embeddings"):
      t = time.time()
      emb = pipeline.cf_embeddings(ws, dim=embedding_dim, seed=seed)
      emb_s = time.time() - t
    cb = codebook_size or auto_codebook_size(n, levels)
    spec = specs_lib.IdSpec(strategy, strategy, {"level_sizes": (cb,) * levels, **(strategy_kwargs or {})})
    with stage(f"N={n}: {strategy} IDs {spec.kwargs['level_sizes']}"):
      table, id_s = pipeline.build_table(ws, spec, embeddings_NxD=emb, seed=seed)
    task = pipeline.make_task(ws, table, spec.name, prompt_field=prompt_field, eval_playlists=eval_playlists)
    with stage(f"N={n}: train {train_steps} steps"):
      trained = pipeline.train_text2tracks(task, model_dir=os.path.join(size_dir, "model"), model=model,
                                             train_steps=train_steps, batch_size=batch_size,
                                             learning_rate=learning_rate, seed=seed, progress=progress,
                                             model_overrides=model_overrides, num_devices=num_devices,
                                             tensorboard=False, handle_sigterm=False,
                                             beam_size=beam_size)
    with stage(f"N={n}: constrained beam search on {len(task.eval_examples)} prompts"):
      ev = pipeline.evaluate_text2tracks(task, trained.model_dir, beam_size=beam_size, k=k,
                                           batch_size=decode_batch_size)
    m = ev["metrics"]
    rows.append({
        "num_tracks": n, "num_playlists": num_playlists, "hits@10": m.get("hits@10"), "map@10": m.get("map@10"),
        "ndcg@10": m.get("ndcg@10"), "num_queries": m.get("num_queries"), "level_sizes": list(table.level_sizes),
        **pipeline.decode_steps(table), "generate_seconds": round(ws.seconds.get("generate", 0.0), 2),
        "embedding_seconds": round(emb_s, 2), "id_build_seconds": round(id_s, 2),
        "index_bytes": ev["index_bytes"], "index_bytes_per_track": round(ev["index_bytes"] / n, 2),
        "id_table_bytes": int(table.codes.nbytes), "index_build_seconds": ev["index_build_seconds"],
        "decode_ms_per_batch": ev["decode_ms_per_batch"], "prompts_per_s": ev["prompts_per_s"],
        "train_examples_per_s": trained.examples_per_second, "train_wall_seconds": round(trained.seconds, 1),
        "final_loss": trained.final_loss, "params": trained.config.num_params(),
        "size_seconds": round(time.time() - t_size, 1)})
    report.write_results(out_dir, rows, columns=TABLE_COLUMNS, machine=machine, config=config,
                             title="Text2Tracks catalog scaling study (synthetic)", notes=notes)
    plot_scaling(rows, out_dir)
    if not keep_work:
      shutil.rmtree(size_dir, ignore_errors=True)
  print(report.markdown_table(rows, TABLE_COLUMNS), flush=True)
  return rows


def plot_scaling(rows, out_dir: str) -> None:
  """scaling.png: six panels against catalog size (log x)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  n = np.array([r["num_tracks"] for r in rows], np.float64)
  panels = (("hits@10", "Hits@10", False), ("id_build_seconds", "ID build time (s)", True),
            ("index_bytes", "trie index (bytes)", True), ("decode_ms_per_batch", "decode latency (ms / batch)", True),
            ("train_examples_per_s", "train throughput (examples/s)", False),
            ("embedding_seconds", "CF embedding time (s)", True))
  fig, axes = plt.subplots(2, 3, figsize=(11, 5.5))
  for ax, (key, title, logy) in zip(axes.ravel(), panels):
    y = np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows])
    ax.plot(n, y, "o-")
    ax.set_xscale("log")
    if logy and np.all(y[~np.isnan(y)] > 0):
      ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("catalog size (tracks)", fontsize=8)
    ax.grid(alpha=0.3)
  report.save_figure(fig, os.path.join(out_dir, "scaling.png"))
