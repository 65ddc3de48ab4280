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

from t2t_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top,wrong-import-position
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


@gin.configurable
def build_id_table(*, strategy: str = gin.REQUIRED, out_dir: str = gin.REQUIRED,
                   embeddings_path: str | None = None, dataset_dir: str | None = None,
                   spm_model: str | None = None, embedding_dim: int = 64, seed: int = 0,
                   strategy_kwargs: dict | None = None, plots: bool = True, progress: bool = True) -> IdTable:
  """Builds and saves the table for `strategy`; returns it."""
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  kwargs = dict(strategy_kwargs or {})
  ds = None
  if strategy in ("semantic_rq", "semantic_hkmeans"):
    if embeddings_path:
      emb, track_ids = emb_lib.load_embeddings(embeddings_path, mmap=True)
      if emb.shape[0] * emb.shape[1] * 4 < (1 << 30):  # Small: load into memory.
        emb = np.asarray(emb)
    elif dataset_dir:
      ds = _dataset(dataset_dir)
      rows = ([ds.track_row[t] for t in p.track_ids] for p in ds.playlists("train"))
      matrix = emb_lib.PlaylistMatrix.from_playlists(rows, len(ds.tracks))
      emb, info = emb_lib.fit_embeddings(matrix, embedding_dim, seed=seed)
      track_ids = [t.track_id for t in ds.tracks]
      emb_lib.save_embeddings(os.path.join(out_dir + ".embeddings"), emb, track_ids)
      print(f"CF embeddings: {info.num_tracks} tracks x {info.dim}, {info.num_cold_tracks} cold, "
            f"{info.seconds:.1f} s", flush=True)
    else:
      raise UserInputError(f"strategy {strategy!r} needs --embeddings or --dataset_dir")
    levels = len(kwargs.get("level_sizes", (64, 64, 64)))
    bar = tqdm(total=levels, desc=f"{strategy} levels", disable=not progress)
    kwargs.setdefault("seed", seed)
    table = strategies.build_ids(strategy, track_ids=track_ids, embeddings=emb,
                                 progress=lambda done: bar.update(done - bar.n), **kwargs)
    bar.close()
  elif strategy == "content":
    if not (dataset_dir and spm_model):
      raise UserInputError("strategy 'content' needs --dataset_dir (catalog) and --spm_model")
    from t2t_jax.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
    ds = _dataset(dataset_dir)
    vocab = vocab_lib.TextAndIdVocab(spm_model)
    tracks = list(tqdm(ds.tracks, desc="content IDs", disable=not progress))
    table = strategies.build_ids("content", track_ids=[t.track_id for t in tracks],
                                 artists=[t.artist for t in tracks], titles=[t.title for t in tracks],
                                 encode_fn=vocab.encode, **kwargs)
  elif strategy == "integer":
    if dataset_dir:
      track_ids = [t.track_id for t in _dataset(dataset_dir).tracks]
    elif embeddings_path:
      _, track_ids = emb_lib.load_embeddings(embeddings_path, mmap=True, check_finite=False)
    else:
      raise UserInputError("strategy 'integer' needs --dataset_dir or --embeddings for the track ids")
    kwargs.setdefault("seed", seed)
    table = strategies.build_ids("integer", track_ids=track_ids, **kwargs)
  else:
    raise UserInputError(f"unknown ID strategy {strategy!r}; choose one of {strategies.STRATEGIES}")
  table.meta.setdefault("stats", {}).update(balance_stats(table))
  table.meta["stats"]["build_seconds"] = time.perf_counter() - t0
  extra = {"id_tokens.txt": ("\n".join(strategies.id_token_names(table)) + "\n").encode("utf-8")}
  if plots:
    extra["cluster_sizes.png"] = plot_cluster_sizes(table)
  table.save(out_dir, extra_files=extra)
  return table


def compare_strategies(dataset_dir: str, spm_model: str | None = None, *, embedding_dim: int = 64,
                       level_sizes=(64, 64, 64), seed: int = 0) -> list[dict]:
  """Builds every strategy on one dataset; returns one row of ID properties per strategy.

  "prefix purity": tracks are labelled with their dominant intent (the intent of most train playlists
  holding them; synthetic datasets record it); purity = share of tracks whose first-token group's
  majority intent is their own (how much the first decoding step already narrows the intent); read it
  with "tracks_per_first_token" (atomic integer IDs are trivially pure: every group is one track).
  """
  import collections  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  from t2t_jax.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  ds = _dataset(dataset_dir)
  track_ids = [t.track_id for t in ds.tracks]
  playlists = list(ds.playlists("train"))
  votes = collections.defaultdict(collections.Counter)
  for p in playlists:
    key = tuple(sorted((p.intent or {}).items()))
    for t in p.track_ids:
      votes[ds.track_row[t]][key] += 1
  dominant = np.array([hash(votes[r].most_common(1)[0][0]) if votes[r] else -r - 1 for r in range(len(track_ids))])

  def purity(table):
    first = table.codes[:, 0]
    agree = 0
    for code in np.unique(first):
      members = dominant[first == code]
      agree += collections.Counter(members.tolist()).most_common(1)[0][1]
    return agree / len(first)

  t0 = time.perf_counter()
  rows = [[ds.track_row[t] for t in p.track_ids] for p in playlists]
  emb, _ = emb_lib.fit_embeddings(emb_lib.PlaylistMatrix.from_playlists(rows, len(track_ids)), embedding_dim, seed=seed)
  emb_s = time.perf_counter() - t0
  if spm_model is None:
    spm_model = vocab_lib.train_sentencepiece((f"{t.artist} - {t.title}" for t in ds.tracks),
                                              os.path.join(tempfile.mkdtemp(), "spm.model"), vocab_size=2000)
  vocab = vocab_lib.TextAndIdVocab(spm_model)
  specs = [
      ("content", dict(artists=[t.artist for t in ds.tracks], titles=[t.title for t in ds.tracks],
                       encode_fn=vocab.encode)),
      ("integer", dict(order="sequential")),
      ("integer", dict(order="random", base=64, seed=seed)),
      ("semantic_rq", dict(embeddings=emb, level_sizes=level_sizes, seed=seed)),
      ("semantic_rq", dict(embeddings=emb, level_sizes=level_sizes, seed=seed, balanced=True)),
      ("semantic_rq", dict(embeddings=emb, level_sizes=level_sizes, seed=seed, balanced=True, unique_last_level=True,
                           disambiguation="auto")),
      ("semantic_hkmeans", dict(embeddings=emb, level_sizes=level_sizes, seed=seed)),
      ("semantic_hkmeans", dict(embeddings=emb, level_sizes=level_sizes, seed=seed, balanced=True)),
  ]
  out = []
  for name, kw in specs:
    t = time.perf_counter()
    table = strategies.build_ids(name, track_ids=track_ids, **kw)
    secs = time.perf_counter() - t
    label = name + "".join(f" {k}={v}" for k, v in kw.items() if k in ("order", "base", "balanced", "unique_last_level"))
    lengths = table.lengths
    out.append({"strategy": label, "tokens_per_id_mean": float(lengths.mean()), "tokens_per_id_max": int(lengths.max()),
                "new_vocab_tokens": table.num_id_tokens, "disambiguated_tracks": int(table.meta.get("num_disambiguated", 0)),
                "disambiguation_size": int(table.level_sizes[-1]) if table.meta.get("disambiguation") else 0,
                "tracks_per_first_token": float(len(track_ids) / np.unique(table.codes[:, 0]).size),
                "prefix_purity": purity(table), "build_seconds": secs + (emb_s if name.startswith("semantic") else 0.0),
                "duplicate_ids": table.num_duplicate_ids()})
  return out


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
  try:
    if args.compare:
      if not args.dataset_dir:
        raise UserInputError("--compare needs --dataset_dir")
      rows = compare_strategies(args.dataset_dir, args.spm_model)
      from t2t_jax import io_utils  # pylint: disable=g-import-not-at-top
      io_utils.write_json(args.out, rows)
      cols = list(rows[0])
      print("| " + " | ".join(cols) + " |")
      print("|" + "---|" * len(cols))
      for r in rows:
        print("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in r.values()) + " |")
      return 0
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
  except UserInputError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  stats = id_stats(table)
  print(f"wrote {args.out}: {table.num_tracks} tracks, {table.num_levels} levels {table.level_sizes}, "
        f"{table.meta.get('num_disambiguated', 0)} disambiguated, duplicate IDs {stats['duplicate_ids']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
