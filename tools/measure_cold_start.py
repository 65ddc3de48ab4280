"""Measures cold-start filling (t2t_jax/ids/cold_start.py): how good are the IDs of tracks that no
training playlist holds, when their CF vectors are random, their artist's mean, or their text
neighbours' mean?

Protocol: a synthetic catalog (t2t_jax.data.synthetic, intents known); a seeded share of tracks is
removed from every training playlist (they become cold); CF embeddings (SVD) of the reduced
playlists; the cold rows filled by each method; semantic IDs (balanced RQ, collision-aware last
level) for every variant and, as the reference, for the full playlists.  For the cold tracks:
  * purity: share whose first-token group's majority intent (over the group's warm tracks; a track's
    intent = the intent of most FULL training playlists holding it) is their own intent;
  * prefix agreement: share of a cold track's first-token co-members that are also its first-token
    co-members in the full-data IDs (codes differ between runs; co-membership does not);
  * knn@10 intent: share of the 10 nearest warm tracks of the filled vector with the same intent.

  python tools/measure_cold_start.py --out /tmp/cold.json [--st_model_dir DIR_OF_all-MiniLM-L6-v2]
  python tools/measure_cold_start.py --cpcd_dir /path/to/cpcd --level_sizes 64,64,64 --out /tmp/cold_cpcd.json
On CPCD (no intents) a track's label is the training conversation holding it (most of them are in
one), so purity asks whether a cold track lands among its own playlist-mates.
Text neighbours need a sentence encoder: --st_model_dir (sentence-transformers, for measuring only)
or, when the project's JAX port is installed, --encoder minilm.  Without either the text rows are
skipped.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from t2t_jax import console  # noqa: E402  pylint: disable=wrong-import-position
from t2t_jax.ids import catalog, cold_start, embeddings as emb_lib, strategies, text_embeddings  # noqa: E402  pylint: disable=wrong-import-position


class _STEncoder:
  """sentence-transformers as an `encode(texts, batch_size)` encoder (measurements only)."""

  def __init__(self, model_dir: str):
    from sentence_transformers import SentenceTransformer  # pylint: disable=g-import-not-at-top
    self.model = SentenceTransformer(model_dir, device="cpu")

  def encode(self, texts, batch_size=64):
    return self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                             convert_to_numpy=True, show_progress_bar=False)


def _dominant_intent(rows_full, intents, n):
  votes = [collections.Counter() for _ in range(n)]
  for rows, k in zip(rows_full, intents):
    for r in set(rows):
      votes[r][k] += 1
  return np.array([v.most_common(1)[0][0] if v else -1 - r for r, v in enumerate(votes)])


def _first_token_groups(codes_N):
  return {c: np.flatnonzero(codes_N == c) for c in np.unique(codes_N)}


def evaluate(codes_N, full_codes_N, emb, cold_rows, intent_N):
  """(purity, prefix agreement, knn@10 intent) of the cold tracks."""
  warm = np.ones(codes_N.size, bool)
  warm[cold_rows] = False
  groups, full_groups = _first_token_groups(codes_N), _first_token_groups(full_codes_N)
  pure, agree = [], []
  for r in cold_rows:
    members = groups[codes_N[r]]
    warm_members = members[warm[members]]
    if warm_members.size:
      pure.append(collections.Counter(intent_N[warm_members].tolist()).most_common(1)[0][0] == intent_N[r])
    else:
      pure.append(False)
    others = members[members != r]
    if others.size:
      agree.append(np.isin(others, full_groups[full_codes_N[r]]).mean())
    else:
      agree.append(0.0)
  e = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
  warm_rows = np.flatnonzero(warm)
  sim = e[cold_rows] @ e[warm_rows].T
  nn = warm_rows[np.argsort(-sim, axis=1)[:, :10]]
  knn = (intent_N[nn] == intent_N[cold_rows][:, None]).mean()
  return float(np.mean(pure)), float(np.mean(agree)), float(knn)


def synthetic_catalog(seed: int, num_tracks: int, num_playlists: int):
  """(tracks, training playlists as rows, intent id per playlist) of a synthetic catalog."""
  from t2t_jax.data import formats, synthetic  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory(prefix="cold_start_") as tmp:  # removed once the playlists are read
    synthetic.generate(synthetic.SyntheticConfig(seed=seed, num_tracks=num_tracks, num_playlists=num_playlists,
                                                 num_artists=max(10, num_tracks // 10)), os.path.join(tmp, "ds"))
    ds = formats.Dataset.load(os.path.join(tmp, "ds"))
    pls = list(ds.playlists("train"))
    tracks = list(ds.tracks)
  return tracks, [[ds.track_row[t] for t in p.track_ids] for p in pls], [p.intent["intent_id"] for p in pls]


def run(tracks, rows_full, playlist_intents, *, seed: int, holdout: float, level_sizes, encoder, dim: int = 64,
        text_cache: str | None = None) -> dict:
  """The protocol of the module doc on one catalog; `playlist_intents`: a label per training playlist
  (synthetic: its intent; CPCD: the conversation itself, so purity = landing among playlist-mates)."""
  n = len(tracks)
  intent_N = _dominant_intent(rows_full, playlist_intents, n)
  warm_full = np.flatnonzero(catalog.training_popularity(rows_full, n) > 0)
  rng = np.random.default_rng([seed, 7])
  cold_rows = np.sort(rng.choice(warm_full, int(holdout * warm_full.size), replace=False))
  held = np.zeros(n, bool)
  held[cold_rows] = True
  rows_red = [[r for r in rows if not held[r]] for rows in rows_full]
  ids = [t.track_id for t in tracks]
  kw = dict(level_sizes=level_sizes, balanced=True, unique_last_level=True, disambiguation="auto", seed=seed)
  full_emb = emb_lib.cooccurrence_embeddings(rows_full, n, dim, seed=seed)
  full_codes = strategies.build_ids("semantic_rq", track_ids=ids, embeddings=full_emb, **kw).codes[:, 0]
  base, _ = emb_lib.fit_embeddings(emb_lib.PlaylistMatrix.from_playlists(rows_red, n), dim, seed=seed)
  cold = catalog.training_popularity(rows_red, n) == 0
  artists = [t.artist for t in tracks]
  variants = {"random": (base, {"num_cold": int(cold.sum())})}
  variants["artist"] = cold_start.fill_cold_start(base, cold, artists=artists)
  text = None
  if text_cache and os.path.exists(text_cache):
    text = np.load(text_cache)
  elif encoder is not None:
    t0 = time.perf_counter()
    text = text_embeddings.text_embeddings(text_embeddings.track_texts(tracks, mode="metadata"), encoder=encoder)
    print(f"text embeddings: {text.shape} in {time.perf_counter() - t0:.1f} s", flush=True)
    if text_cache:
      np.save(text_cache, text)
  if text is not None:
    variants["text_knn"] = cold_start.fill_cold_start(base, cold, text_NxE=text)
    variants["artist, then text_knn"] = cold_start.fill_cold_start(base, cold, artists=artists, text_NxE=text)
  variants["fallback (global mean)"] = cold_start.fill_cold_start(base, cold)
  out = {"num_tracks": n, "num_cold": int(cold.sum()), "held_out": int(cold_rows.size), "level_sizes": list(level_sizes),
         "rows": []}
  for name, (emb, info) in variants.items():
    table = strategies.build_ids("semantic_rq", track_ids=ids, embeddings=emb, **kw)
    purity, agree, knn = evaluate(table.codes[:, 0], full_codes, emb, np.flatnonzero(cold), intent_N)
    row = {"method": name, "cold_purity": purity, "cold_prefix_agreement": agree, "cold_knn10_intent": knn,
           "id_tokens": table.num_levels, "info": info}
    print(json.dumps(row), flush=True)
    out["rows"].append(row)
  # Reference: the same tracks' own full-data vectors (what they would get if they were warm).
  purity, agree, knn = evaluate(full_codes, full_codes, full_emb, np.flatnonzero(cold), intent_N)
  out["rows"].append({"method": "reference (full data)", "cold_purity": purity, "cold_prefix_agreement": agree,
                      "cold_knn10_intent": knn})
  print(json.dumps(out["rows"][-1]), flush=True)
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", required=True, help="JSON file for the results")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--num_tracks", type=int, default=3000)
  p.add_argument("--num_playlists", type=int, default=5000)
  p.add_argument("--cpcd_dir", default=None, help="measure on CPCD (tools/measure_ids_catalogs.load_cpcd) instead")
  p.add_argument("--holdout", type=float, default=0.2, help="share of warm tracks made cold")
  p.add_argument("--level_sizes", default="64,64")
  p.add_argument("--st_model_dir", default=None, help="sentence-transformers model dir (all-MiniLM-L6-v2)")
  p.add_argument("--encoder", choices=("none", "minilm"), default="none", help="minilm: t2t_jax.models.bert")
  p.add_argument("--text_cache", default=None, help=".npy file caching the text embeddings of this catalog")
  args = p.parse_args(argv)
  encoder = None
  if args.st_model_dir:
    encoder = _STEncoder(args.st_model_dir)
  elif args.encoder == "minilm":
    encoder = text_embeddings.load_default_encoder()
  return console.run_main(lambda: _run(args, encoder), "measure_cold_start")


def _run(args, encoder) -> None:
  if args.cpcd_dir:
    import measure_ids_catalogs  # pylint: disable=g-import-not-at-top
    tracks, rows = measure_ids_catalogs.load_cpcd(args.cpcd_dir)
    labels = list(range(len(rows)))
  else:
    tracks, rows, labels = synthetic_catalog(args.seed, args.num_tracks, args.num_playlists)
  res = run(tracks, rows, labels, seed=args.seed, holdout=args.holdout,
            level_sizes=tuple(int(x) for x in args.level_sizes.split(",")), encoder=encoder,
            text_cache=args.text_cache)
  from t2t_jax import io_utils  # pylint: disable=g-import-not-at-top
  io_utils.write_json(args.out, res)


if __name__ == "__main__":
  sys.exit(main())
