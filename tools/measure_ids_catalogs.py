"""Unique semantic IDs on real-shaped catalogs: CPCD and an MPD-like power-law catalog.

For each catalog: CF embeddings (SVD) of the training playlists with cold tracks placed by their
artist (and, for comparison, the old random vectors); semantic IDs with the collision-aware last
level (gin/ids/semantic_rq_unique.gin: balanced RQ, unique_last_level, disambiguation "auto") at
(64, 64, 64) and at two levels; reported: tokens per ID, colliding tracks, whether unique IDs are
possible (prod(level_sizes) >= N), the largest prefix group before the last level.

  python tools/measure_ids_catalogs.py --cpcd_dir /path/to/cpcd --mpd_like --out /tmp/catalogs.json

CPCD (Conversational Playlist Curation Dataset, the development files cpcd_v1.dialogs.dev.*.jsonl):
catalog = every track of every conversation (title, artists joined by ", ", release title);
training playlists = the goal playlists of the train file.  MPD-like: t2t_jax.data.synthetic with a
steep Zipf popularity (1.3), 30,000 tracks, 3,000 playlists of 10-120 tracks: ~16% of tracks in no
training playlist, ~21% in exactly one (so whole playlists' tails share one CF vector), as in the
Million Playlist Dataset's long tail.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from t2t_jax.data.formats import Track  # noqa: E402  pylint: disable=wrong-import-position
from t2t_jax.ids import catalog, semantic, strategies  # noqa: E402  pylint: disable=wrong-import-position

MPD_LIKE = dict(num_artists=3000, num_tracks=30000, num_playlists=3000, num_intents=400, min_playlist_len=10,
                max_playlist_len=120, zipf_exponent=1.3, random_noise=0.02, popular_noise=0.1)


def load_cpcd(directory: str) -> tuple[list[Track], list[list[int]]]:
  """(catalog tracks, training playlists as catalog rows) from the CPCD development files."""
  meta, train = {}, []
  for name in ("cpcd_v1.dialogs.dev.train.jsonl", "cpcd_v1.dialogs.dev.val.jsonl"):
    with open(os.path.join(directory, name), encoding="utf-8") as f:
      for line in f:
        conv = json.loads(line)
        meta.update(conv["tracks"])
        if ".train." in name:
          train.append(conv["goal_playlist"])
  ids = sorted(meta)
  row = {t: i for i, t in enumerate(ids)}
  tracks = [Track(t, ", ".join(meta[t]["track_artists"]) or "unknown", meta[t]["track_titles"] or t,
                  meta[t].get("track_release_titles") or "", ()) for t in ids]
  return tracks, [[row[t] for t in p if t in row] for p in train]


def load_mpd_like(seed: int = 0) -> tuple[list[Track], list[list[int]]]:
  from t2t_jax.data import formats, synthetic  # pylint: disable=g-import-not-at-top
  d = os.path.join(tempfile.mkdtemp(prefix="mpd_like_"), "ds")
  synthetic.generate(synthetic.SyntheticConfig(seed=seed, **MPD_LIKE), d)
  ds = formats.Dataset.load(d)
  return list(ds.tracks), [[ds.track_row[t] for t in p.track_ids] for p in ds.playlists("train")]


def measure(name: str, tracks, rows, *, seed: int = 0) -> list[dict]:
  n = len(tracks)
  pop = catalog.training_popularity(rows, n)
  ids = [t.track_id for t in tracks]
  out = []
  print(f"{name}: {n} tracks, {len(rows)} training playlists, {int((pop == 0).sum())} cold, "
        f"{int((pop == 1).sum())} in one playlist", flush=True)
  for cold in ("random", "artist"):
    emb, info = catalog.catalog_embeddings(tracks=tracks, rows_train=rows, source="svd", dim=64, seed=seed,
                                           cold_start=cold)
    distinct = np.unique(np.round(emb, 5), axis=0).shape[0]
    for sizes in ((64, 64, 64), semantic.suggest_level_sizes(n, 2), (64, 64)):
      t0 = time.perf_counter()
      table = strategies.build_ids("semantic_rq", track_ids=ids, embeddings=emb, level_sizes=sizes, seed=seed,
                                   balanced=True, unique_last_level=True, disambiguation="auto")
      stats = table.meta["stats"]
      _, groups = np.unique(table.codes[:, :len(sizes) - 1], axis=0, return_counts=True)
      row = {"catalog": name, "num_tracks": n, "cold_start": cold, "cold": info["cold_start"],
             "distinct_vectors": int(distinct), "level_sizes": list(sizes), "tokens_per_id": table.num_levels,
             "colliding_tracks": stats["num_colliding_tracks"], "unique_possible": stats["unique_possible"],
             "largest_prefix_group": int(groups.max()), "seconds": round(time.perf_counter() - t0, 1)}
      if "unique_impossible_reason" in stats:
        row["reason"] = stats["unique_impossible_reason"]
      print(json.dumps(row), flush=True)
      out.append(row)
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", required=True)
  p.add_argument("--cpcd_dir", default=None, help="dir with cpcd_v1.dialogs.dev.{train,val}.jsonl")
  p.add_argument("--mpd_like", action="store_true", help="measure the MPD-like synthetic catalog")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  rows = []
  if args.cpcd_dir:
    rows += measure("cpcd", *load_cpcd(args.cpcd_dir), seed=args.seed)
  if args.mpd_like:
    rows += measure("mpd_like", *load_mpd_like(args.seed), seed=args.seed)
  from t2t_jax import io_utils  # pylint: disable=g-import-not-at-top
  io_utils.write_json(args.out, rows)
  return 0


if __name__ == "__main__":
  sys.exit(main())
