"""Builds an ID table dir (codes, track ids, meta, stats.json, plots) for one ID strategy.

  python tools/build_ids.py --gin_file gin/ids/semantic_rq.gin \
      --dataset_dir DATA/synthetic --out DATA/synthetic/ids/semantic_rq
  python tools/build_ids.py --gin_file gin/ids/semantic_rq.gin --embeddings EMB_DIR --out OUT
  python tools/build_ids.py --gin_file gin/ids/content.gin --dataset_dir DATA/synthetic \
      --spm_model DATA/synthetic/vocab/spm.model --out DATA/synthetic/ids/content
  python tools/build_ids.py --strategy integer --gin_bindings "build_id_table.strategy_kwargs = {'base': 64}" ...

Inputs: semantic strategies take `--embeddings` (a dir from `embeddings.save_embeddings`, or an .npy
with track_ids.txt beside it; memory-mapped, streamed when large) or compute CF embeddings from the
train playlists of `--dataset_dir` (also saved to OUT.embeddings/); content IDs take the catalog of
`--dataset_dir` and the SentencePiece model; integer IDs the catalog's (or embeddings') track ids.
Output: the `IdTable.save` dir plus stats.json (collision rate, cluster-size balance per level,
prefix sharing, codebook usage/entropy) and cluster_sizes.png (cluster sizes per level).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time

import gin
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from t2t_jax import console  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.ids import compare  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.ids import embeddings as emb_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.ids import strategies  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.ids.table import IdTable, id_stats  # pylint: disable=g-import-not-at-top,wrong-import-position


def balance_stats(table: IdTable) -> dict:
  """Cluster-size balance per level: sizes of the groups sharing each prefix (max/mean, CV, Gini)."""
  out = []
  codes = table.codes
  for l in range(table.num_levels):
    _, counts = np.unique(codes[:, :l + 1], axis=0, return_counts=True)
    c = np.sort(counts.astype(np.float64))
    gini = float((2 * np.arange(1, c.size + 1) - c.size - 1).dot(c) / (c.size * c.sum())) if c.size else 0.0
    out.append({"level": l, "groups": int(c.size), "min": int(c[0]), "median": float(np.median(c)),
                "max": int(c[-1]), "max_over_mean": float(c[-1] / c.mean()), "cv": float(c.std() / c.mean()),
                "gini": gini})
  return {"balance": out}


def plot_cluster_sizes(table: IdTable) -> bytes:
  """PNG: per level, the size distribution of the groups of tracks sharing a prefix up to that level."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  levels = table.num_levels
  fig, axes = plt.subplots(1, levels, figsize=(4 * levels, 3.2), squeeze=False)
  for l in range(levels):
    ax = axes[0, l]
    if table.is_text:
      lengths = table.lengths
      ax.hist(lengths, bins=np.arange(lengths.max() + 2) - 0.5)
      ax.set_title("content ID length (tokens)")
      break
    _, counts = np.unique(table.codes[:, :l + 1], axis=0, return_counts=True)
    counts = np.sort(counts)[::-1]
    ax.bar(np.arange(counts.size), counts, width=1.0)
    ax.set_yscale("log")
    ax.set_title(f"level {l} (size {table.level_sizes[l]}): {counts.size} groups")
    ax.set_xlabel("group (sorted)")
    ax.set_ylabel("tracks")
  fig.suptitle(f"{table.strategy}: {table.num_tracks} tracks")
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=90)
  plt.close(fig)
  return buf.getvalue()


def _dataset(dataset_dir):
  from t2t_jax.data import formats  # pylint: disable=g-import-not-at-top
  if not dataset_dir:
    return None
  return formats.Dataset.load(dataset_dir)


SEMANTIC = ("semantic_rq", "semantic_hkmeans", "semantic_dict")
TEXT_VOCAB = ("content", "artist_int_track_seq")  # + integer with text_digits=True


def _train_rows(ds) -> tuple[list[list[int]], list[str]]:
  """Catalog rows and prompt texts of the training playlists."""
  from t2t_jax.data import prompts as prompts_lib  # pylint: disable=g-import-not-at-top
  pls = list(ds.playlists("train"))
  return ([[ds.track_row[t] for t in p.track_ids] for p in pls],
          [prompts_lib.prompt_text(p.title, p.description, "both") for p in pls])


def _semantic_embeddings(ds, out_dir, *, embeddings_path, embedding_dim, embedding_source, cold_start,
                         text_mode, seed):
  """(embeddings, track ids, embedding info or None): from a file, or computed from the train playlists
  (`catalog.catalog_embeddings`: CF or text, cold tracks placed) and saved to OUT.embeddings/."""
  from t2t_jax.ids import catalog  # pylint: disable=g-import-not-at-top
  if embeddings_path:
    emb, track_ids = emb_lib.load_embeddings(embeddings_path, mmap=True)
    if emb.shape[0] * emb.shape[1] * 4 < (1 << 30):  # Small: load into memory.
      emb = np.asarray(emb)
    return emb, track_ids, None
  rows, prompts = _train_rows(ds)
  emb, info = catalog.catalog_embeddings(tracks=ds.tracks, rows_train=rows, train_prompts=prompts,
                                         source=embedding_source, dim=embedding_dim, seed=seed,
                                         cold_start=cold_start, text_mode=text_mode)
  track_ids = [t.track_id for t in ds.tracks]
  emb_lib.save_embeddings(os.path.join(out_dir + ".embeddings"), emb, track_ids)
  print(f"{embedding_source} embeddings: {len(track_ids)} tracks x {emb.shape[1]}, cold start "
        f"{info['cold_start']}, {info['seconds']:.1f} s", flush=True)
  return emb, track_ids, info


@gin.configurable
def build_id_table(*, strategy: str = gin.REQUIRED, out_dir: str = gin.REQUIRED,
                   embeddings_path: str | None = None, dataset_dir: str | None = None,
                   spm_model: str | None = None, embedding_dim: int = 64, seed: int = 0,
                   embedding_source: str = "svd", cold_start: str = "auto", text_mode: str = "metadata",
                   strategy_kwargs: dict | None = None, plots: bool = True, progress: bool = True) -> IdTable:
  """Builds and saves the table for `strategy`; returns it.

  embedding_source / cold_start / text_mode: how semantic strategies get embeddings from --dataset_dir
  (t2t_jax/ids/catalog.py: "svd" | "word2vec" | "text"; cold tracks by "artist" | "artist+text" | ...).
  Training popularity (playlists per track) comes from --dataset_dir's train split when given.
  """
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  from t2t_jax import io_utils  # pylint: disable=g-import-not-at-top
  # Refuse a bad --out before any work (it may not hold or replace the inputs).
  inputs = [p for p in (embeddings_path, spm_model) if p]
  if dataset_dir:
    inputs += [os.path.join(dataset_dir, name) for name in ("catalog.jsonl", "playlists.jsonl", "splits.json")]
  io_utils.check_output_dir(out_dir, kind="ids", inputs=inputs)
  t0 = time.perf_counter()
  kwargs = dict(strategy_kwargs or {})
  if strategy not in strategies.STRATEGIES:
    raise UserInputError(f"unknown ID strategy {strategy!r}; choose one of {strategies.STRATEGIES}")
  ds = _dataset(dataset_dir)
  text_vocab = strategy in TEXT_VOCAB or (strategy == "integer" and kwargs.get("text_digits"))
  common = {}
  if ds is not None and strategy != "content":
    from t2t_jax.ids import catalog  # pylint: disable=g-import-not-at-top
    common["popularity"] = catalog.training_popularity(_train_rows(ds)[0], len(ds.tracks))
  if text_vocab:
    if not (ds is not None and spm_model):
      raise UserInputError(f"strategy {strategy!r} writes text IDs: it needs --dataset_dir and --spm_model")
    from t2t_jax.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
    common["encode_fn"] = vocab_lib.TextAndIdVocab(spm_model).encode
  if strategy in SEMANTIC:
    if not (embeddings_path or ds is not None):
      raise UserInputError(f"strategy {strategy!r} needs --embeddings or --dataset_dir")
    emb, track_ids, info = _semantic_embeddings(ds, out_dir, embeddings_path=embeddings_path,
                                                embedding_dim=embedding_dim, embedding_source=embedding_source,
                                                cold_start=cold_start, text_mode=text_mode, seed=seed)
    if ds is not None and track_ids != [t.track_id for t in ds.tracks]:
      common.pop("popularity", None)  # embeddings of another catalog order: no popularity to align
    levels = (len(kwargs.get("level_sizes", (64, 64, 64))) if strategy != "semantic_dict"
              else kwargs.get("num_nonzero", 4))
    bar = tqdm(total=levels, desc=f"{strategy} levels", disable=not progress)
    kwargs.setdefault("seed", seed)
    table = strategies.build_ids(strategy, track_ids=track_ids, embeddings=emb, embedding_info=info,
                                 progress=lambda done: bar.update(done - bar.n), **common, **kwargs)
    bar.close()
  elif strategy in ("content", "artist_iid_track_seq", "artist_int_track_seq"):
    if ds is None:
      raise UserInputError(f"strategy {strategy!r} needs --dataset_dir (catalog)")
    tracks = list(tqdm(ds.tracks, desc=f"{strategy} IDs", disable=not progress))
    if strategy == "artist_int_track_seq":
      kwargs.setdefault("seed", seed)
    table = strategies.build_ids(strategy, track_ids=[t.track_id for t in tracks],
                                 artists=[t.artist for t in tracks], titles=[t.title for t in tracks],
                                 **common, **kwargs)
  else:  # integer
    if ds is not None:
      track_ids = [t.track_id for t in ds.tracks]
    elif embeddings_path:
      _, track_ids = emb_lib.load_embeddings(embeddings_path, mmap=True, check_finite=False)
    else:
      raise UserInputError("strategy 'integer' needs --dataset_dir or --embeddings for the track ids")
    kwargs.setdefault("seed", seed)
    common.pop("popularity", None)
    table = strategies.build_ids("integer", track_ids=track_ids, **common, **kwargs)
  table.meta.setdefault("stats", {}).update(balance_stats(table))
  table.meta["stats"]["build_seconds"] = time.perf_counter() - t0
  extra = {"id_tokens.txt": ("\n".join(strategies.id_token_names(table)) + "\n").encode("utf-8")}
  if plots:
    extra["cluster_sizes.png"] = plot_cluster_sizes(table)
  table.save(out_dir, extra_files=extra, inputs=inputs)
  return table


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--gin_file", action="append", default=[],
                 help="gin/ids/*.gin (bundled files resolve from any working directory)")
  p.add_argument("--gin_bindings", action="append", default=[])
  p.add_argument("--strategy", default=None, help="overrides the gin file's strategy")
  p.add_argument("--out", required=True, help="ID table dir to write (replaced atomically); with --compare, "
                 "a JSON file for the comparison rows")
  p.add_argument("--compare", action="store_true",
                 help="build every strategy on --dataset_dir and print a markdown table of ID properties")
  p.add_argument("--embeddings", default=None)
  p.add_argument("--dataset_dir", default=None)
  p.add_argument("--spm_model", default=None)
  p.add_argument("--no_plots", action="store_true")
  p.add_argument("--no_progress", action="store_true")
  args = p.parse_args(argv)
  return console.run_main(lambda: _run(args))


def _print_table(rows: list[dict]) -> None:
  cols = list(rows[0])
  print("| " + " | ".join(cols) + " |")
  print("|" + "---|" * len(cols))
  for r in rows:
    print("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in r.values()) + " |")


def _run(args) -> None:
  if args.compare:
    if not args.dataset_dir:
      raise UserInputError("--compare needs --dataset_dir")
    rows = compare.compare_strategies(args.dataset_dir, args.spm_model)
    from t2t_jax import io_utils  # pylint: disable=g-import-not-at-top
    io_utils.write_json(args.out, rows)
    _print_table(rows)
    return
  # gin_utils resolves gin/ids/... (or ids/...) from any working directory, without gin's
  # package-path fallback (its misleading "ERROR:root:Path not found" log).
  from t2t_jax import gin_utils  # pylint: disable=g-import-not-at-top
  gin_utils.parse_gin(args.gin_file, args.gin_bindings)
  overrides = {"out_dir": args.out, "plots": not args.no_plots, "progress": not args.no_progress}
  if args.strategy:
    overrides["strategy"] = args.strategy
  for key, value in (("embeddings_path", args.embeddings), ("dataset_dir", args.dataset_dir),
                     ("spm_model", args.spm_model)):
    if value:
      overrides[key] = value
  table = build_id_table(**overrides)
  stats = id_stats(table)
  print(f"wrote {args.out}: {table.num_tracks} tracks, {table.num_levels} levels {table.level_sizes}, "
        f"{table.meta.get('num_disambiguated', 0)} disambiguated, duplicate IDs {stats['duplicate_ids']} "
        f"({stats.get('num_unreachable_tracks', 0)} unreachable, collision policy {table.collision_policy})")


if __name__ == "__main__":
  sys.exit(main())
