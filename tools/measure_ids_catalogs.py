"""Unique semantic IDs on real-shaped catalogs: CPCD and an MPD-like power-law catalog.

For each catalog: CF embeddings (SVD) of the training playlists with cold tracks placed by their
artist (and, for comparison, the old random vectors); semantic IDs with the collision-aware last
level (gin/ids/semantic_rq_unique.gin: balanced RQ, unique_last_level, disambiguation "auto") at
(64, 64, 64) and at two levels; reported: tokens per ID, colliding tracks, whether unique IDs are
possible (prod(level_sizes) >= N), the largest prefix group before the last level.

  python tools/measure_ids_catalogs.py --cpcd_dir /path/to/cpcd --mpd_like --out /tmp/catalogs.json
  python tools/measure_ids_catalogs.py --cpcd_dir DIR --mpd_like --tiny --out OUT   # toy sizes (tests)

CPCD (Conversational Playlist Curation Dataset, the development files cpcd_v1.dialogs.dev.*.jsonl):
catalog = every track of every conversation (title, artists joined by ", ", release title);
training playlists = the goal playlists of the train file.  MPD-like: t2t_jax.data.synthetic with a
steep Zipf popularity (1.3), 30,000 tracks, 3,000 playlists of 10-120 tracks: ~16% of tracks in no
training playlist, ~21% in exactly one (so whole playlists' tails share one CF vector), as in the
Million Playlist Dataset's long tail.

--tiny: the same measurement at toy sizes (TINY: 16-d embeddings, codebooks of 16 and 8, and the
MPD-like catalog shrunk to 600 tracks), e.g. on a CPCD slice too small for 64-d embeddings; its
numbers mean nothing.
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
from t2t_jax import console  # noqa: E402  pylint: disable=wrong-import-position
from t2t_jax.ids import catalog, semantic, strategies  # noqa: E402  pylint: disable=wrong-import-position

MPD_LIKE = dict(num_artists=3000, num_tracks=30000, num_playlists=3000, num_intents=400, min_playlist_len=10,
                max_playlist_len=120, zipf_exponent=1.3, random_noise=0.02, popular_noise=0.1)
# The sizes of a run: CF embedding dim, the fixed codebook sizes tried, the MPD-like catalog.
FULL = dict(dim=64, level_sizes=((64, 64, 64), (64, 64)), mpd_like=MPD_LIKE)
TINY = dict(dim=16, level_sizes=((16, 16, 16), (8, 8)),
            mpd_like=dict(MPD_LIKE, num_artists=60, num_tracks=600, num_playlists=120, num_intents=20,
                          min_playlist_len=5, max_playlist_len=40))


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


def load_mpd_like(seed: int = 0, config: dict | None = None) -> tuple[list[Track], list[list[int]]]:
  """(tracks, training playlists as rows) of the MPD-like catalog (`config`: its SyntheticConfig fields,
  default MPD_LIKE), generated in a temporary dir that is removed afterwards."""
  from t2t_jax.data import formats, synthetic  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory(prefix="mpd_like_") as tmp:
    d = os.path.join(tmp, "ds")
    synthetic.generate(synthetic.SyntheticConfig(seed=seed, **(config or MPD_LIKE)), d)
    ds = formats.Dataset.load(d)
    return list(ds.tracks), [[ds.track_row[t] for t in p.track_ids] for p in ds.playlists("train")]


def measure(name: str, tracks, rows, *, seed: int = 0, dim: int = FULL["dim"],
            level_sizes=FULL["level_sizes"]) -> list[dict]:
  """One row per (cold-start placement, codebook sizes): `level_sizes[0]`, the suggested two levels
  for the catalog size, then the rest of `level_sizes`."""
  n = len(tracks)
  pop = catalog.training_popularity(rows, n)
  ids = [t.track_id for t in tracks]
  out = []
  print(f"{name}: {n} tracks, {len(rows)} training playlists, {int((pop == 0).sum())} cold, "
        f"{int((pop == 1).sum())} in one playlist", flush=True)
  for cold in ("random", "artist"):
    emb, info = catalog.catalog_embeddings(tracks=tracks, rows_train=rows, source="svd", dim=dim, seed=seed,
                                           cold_start=cold)
    distinct = np.unique(np.round(emb, 5), axis=0).shape[0]
    for sizes in (level_sizes[0], semantic.suggest_level_sizes(n, 2), *level_sizes[1:]):
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
  p.add_argument("--tiny", action="store_true", help="toy sizes (16-d embeddings, codebooks of 16 and 8, a 600-track "
                 "MPD-like catalog): a smoke run, e.g. on a small CPCD slice")
  args = p.parse_args(argv)
  if not args.cpcd_dir and not args.mpd_like:
    p.error("nothing to measure: give --cpcd_dir DIR and/or --mpd_like")
  sizes = TINY if args.tiny else FULL
  return console.run_main(lambda: _run(args, sizes), "measure_ids_catalogs")


def _run(args, sizes: dict) -> None:
  kw = dict(seed=args.seed, dim=sizes["dim"], level_sizes=sizes["level_sizes"])
  rows = []
  if args.cpcd_dir:
    rows += measure("cpcd", *load_cpcd(args.cpcd_dir), **kw)
  if args.mpd_like:
    rows += measure("mpd_like", *load_mpd_like(args.seed, sizes["mpd_like"]), **kw)
  from t2t_jax import io_utils  # pylint: disable=g-import-not-at-top
  io_utils.write_json(args.out, rows)


if __name__ == "__main__":
  sys.exit(main())
