"""build_id_table (gin `build_id_table.*`): one ID strategy's table dir (codes, track ids, meta,
stats.json, id_tokens.txt, cluster_sizes.png), the library behind tools/build_ids.py.

  build_id_table      inputs (dataset dir, embeddings, SentencePiece model) -> strategies.build_ids -> IdTable.save;
                      semantic strategies get embeddings from a file or from the train playlists
                      (catalog.catalog_embeddings, saved to OUT.embeddings/)
  balance_stats       cluster-size balance per level (groups sharing a prefix: max/mean, CV, Gini)
  plot_cluster_sizes  PNG of the group sizes per level (content IDs: their lengths)
"""

from __future__ import annotations

import io
import os
import time

import gin
import numpy as np
from tqdm.auto import tqdm

from t2t_jax import io_utils
from t2t_jax.data import formats
from t2t_jax.data import prompts as prompts_lib
from t2t_jax.data import vocab as vocab_lib
from t2t_jax.errors import UserInputError
from t2t_jax.ids import catalog, strategies
from t2t_jax.ids import embeddings as emb_lib
from t2t_jax.ids.table import IdTable


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
  if not dataset_dir:
    return None
  return formats.Dataset.load(dataset_dir)


SEMANTIC = ("semantic_rq", "semantic_hkmeans", "semantic_dict")
TEXT_VOCAB = ("content", "artist_int_track_seq")  # + integer with text_digits=True


def _train_rows(ds) -> tuple[list[list[int]], list[str]]:
  """Catalog rows and prompt texts of the training playlists."""
  pls = list(ds.playlists("train"))
  return ([[ds.track_row[t] for t in p.track_ids] for p in pls],
          [prompts_lib.prompt_text(p.title, p.description, "both") for p in pls])


def _semantic_embeddings(ds, out_dir, *, embeddings_path, embedding_dim, embedding_source, cold_start,
                         text_mode, seed):
  """(embeddings, track ids, embedding info or None): from a file, or computed from the train playlists
  (`catalog.catalog_embeddings`: CF or text, cold tracks placed) and saved to OUT.embeddings/."""
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
      common["popularity"] = catalog.training_popularity(_train_rows(ds)[0], len(ds.tracks))
  if text_vocab:
    if not (ds is not None and spm_model):
      raise UserInputError(f"strategy {strategy!r} writes text IDs: it needs --dataset_dir and --spm_model")
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
