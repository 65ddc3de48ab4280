"""Every ID strategy built on one dataset, side by side (`tools/build_ids.py --compare`).

  compare_strategies  one row of ID properties per strategy variant: tokens per ID, new vocabulary,
                      disambiguation, unreachable tracks, tracks per first token, prefix purity,
                      build seconds, duplicate IDs, collision rate
"""

from __future__ import annotations

import collections
import os
import tempfile
import time

import numpy as np

from t2t_jax.data import formats
from t2t_jax.data import vocab as vocab_lib
from t2t_jax.ids import catalog, strategies
from t2t_jax.ids.table import IdTable


def _dominant_intents(ds: formats.Dataset, playlists) -> np.ndarray:
  """Per catalog row, a label of the intent of most train playlists holding it (unique if none)."""
  votes = collections.defaultdict(collections.Counter)
  for p in playlists:
    key = tuple(sorted((p.intent or {}).items()))
    for t in p.track_ids:
      votes[ds.track_row[t]][key] += 1
  return np.array([hash(votes[r].most_common(1)[0][0]) if votes[r] else -r - 1 for r in range(len(ds.tracks))])


def _prefix_purity(table: IdTable, dominant: np.ndarray) -> float:
  """Share of tracks whose first-token group's majority intent is their own."""
  first = table.codes[:, 0]
  agree = 0
  for code in np.unique(first):
    members = dominant[first == code]
    agree += collections.Counter(members.tolist()).most_common(1)[0][1]
  return agree / len(first)


def _variants(ds: formats.Dataset, playlists, spm_model: str | None, *, embedding_dim: int, level_sizes,
              dict_size: int, seed: int) -> list[tuple[str, str, dict, float]]:
  """(row label, strategy, build_ids kwargs, embedding seconds) of every compared variant; computes the
  CF embeddings (SVD and word2vec) and, without `spm_model`, a SentencePiece model of the catalog."""
  t0 = time.perf_counter()
  rows = [[ds.track_row[t] for t in p.track_ids] for p in playlists]
  emb, _ = catalog.catalog_embeddings(tracks=ds.tracks, rows_train=rows, source="svd", dim=embedding_dim,
                                      seed=seed, cold_start="artist")
  emb_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  w2v, _ = catalog.catalog_embeddings(tracks=ds.tracks, rows_train=rows, source="word2vec", dim=embedding_dim,
                                      seed=seed, cold_start="artist")
  w2v_s = time.perf_counter() - t0
  popularity = catalog.training_popularity(rows, len(ds.tracks))
  if spm_model is None:
    spm_model = vocab_lib.train_sentencepiece((f"{t.artist} - {t.title}" for t in ds.tracks),
                                              os.path.join(tempfile.mkdtemp(), "spm.model"), vocab_size=2000)
  vocab = vocab_lib.TextAndIdVocab(spm_model)
  artists = [t.artist for t in ds.tracks]
  rq = dict(level_sizes=level_sizes, seed=seed)
  uniq = dict(rq, balanced=True, unique_last_level=True, disambiguation="auto")
  return [
      ("content", "content", dict(artists=artists, titles=[t.title for t in ds.tracks], encode_fn=vocab.encode), 0),
      ("integer order=sequential", "integer", dict(order="sequential"), 0),
      ("integer order=random base=64", "integer", dict(order="random", base=64, seed=seed), 0),
      ("integer text_digits=True (track-int)", "integer",
       dict(order="random", text_digits=True, encode_fn=vocab.encode, seed=seed), 0),
      ("artist_iid_track_seq", "artist_iid_track_seq", dict(artists=artists, popularity=popularity), 0),
      ("artist_int_track_seq", "artist_int_track_seq",
       dict(artists=artists, popularity=popularity, encode_fn=vocab.encode, seed=seed), 0),
      ("semantic_rq", "semantic_rq", dict(rq, embeddings=emb), emb_s),
      ("semantic_rq balanced=True", "semantic_rq", dict(rq, embeddings=emb, balanced=True), emb_s),
      ("semantic_rq balanced=True unique_last_level=True", "semantic_rq", dict(uniq, embeddings=emb), emb_s),
      ("semantic_rq balanced=True collisions=most_popular", "semantic_rq",
       dict(rq, embeddings=emb, balanced=True, collisions="most_popular", popularity=popularity), emb_s),
      ("semantic_rq word2vec balanced=True unique_last_level=True", "semantic_rq", dict(uniq, embeddings=w2v), w2v_s),
      ("semantic_hkmeans", "semantic_hkmeans", dict(rq, embeddings=emb), emb_s),
      ("semantic_hkmeans balanced=True", "semantic_hkmeans", dict(rq, embeddings=emb, balanced=True), emb_s),
      ("semantic_dict", "semantic_dict", dict(embeddings=emb, dict_size=dict_size, num_nonzero=len(level_sizes),
                                              seed=seed), emb_s),
      ("semantic_dict collisions=most_popular", "semantic_dict",
       dict(embeddings=emb, dict_size=dict_size, num_nonzero=len(level_sizes), seed=seed,
            collisions="most_popular", popularity=popularity), emb_s),
  ]


def _row(label: str, table: IdTable, build_seconds: float, dominant: np.ndarray) -> dict:
  lengths = table.lengths
  stats = table.meta.get("stats", {})
  return {"strategy": label, "tokens_per_id_mean": float(lengths.mean()) + (1.0 if table.is_text else 0.0),
          "tokens_per_id_max": int(lengths.max()) + (1 if table.is_text else 0),
          "new_vocab_tokens": table.num_id_tokens, "disambiguated_tracks": int(table.meta.get("num_disambiguated", 0)),
          "disambiguation_size": int(table.level_sizes[-1]) if table.meta.get("disambiguation") else 0,
          "unreachable_tracks": len(table.meta.get("unreachable_rows", [])),
          "tracks_per_first_token": float(table.num_tracks / np.unique(table.codes[:, 0]).size),
          "prefix_purity": _prefix_purity(table, dominant), "build_seconds": build_seconds,
          "duplicate_ids": table.num_duplicate_ids() - len(table.meta.get("unreachable_rows", [])),
          "collision_rate": float(stats.get("collision_rate", 0.0))}


def compare_strategies(dataset_dir: str, spm_model: str | None = None, *, embedding_dim: int = 64,
                       level_sizes=(64, 64, 64), dict_size: int = 256, seed: int = 0) -> list[dict]:
  """Builds every strategy on one dataset; returns one row of ID properties per strategy.

  Semantic rows use CF embeddings (SVD, or word2vec where named) with cold tracks placed by their
  artist (catalog.catalog_embeddings).  "tokens_per_id" counts decoding steps (+1 EOS for text IDs);
  "duplicate_ids" counts IDs shared without a policy (0 for every valid table); "unreachable_tracks"
  the tracks a collisions="most_popular" table cannot return.

  "prefix purity": tracks are labelled with their dominant intent (the intent of most train playlists
  holding them; synthetic datasets record it); purity = share of tracks whose first-token group's
  majority intent is their own (how much the first decoding step already narrows the intent); read it
  with "tracks_per_first_token" (atomic integer IDs are trivially pure: every group is one track).
  """
  ds = formats.Dataset.load(dataset_dir)
  track_ids = [t.track_id for t in ds.tracks]
  playlists = list(ds.playlists("train"))
  dominant = _dominant_intents(ds, playlists)
  out = []
  for label, name, kw, extra_s in _variants(ds, playlists, spm_model, embedding_dim=embedding_dim,
                                            level_sizes=level_sizes, dict_size=dict_size, seed=seed):
    t = time.perf_counter()
    table = strategies.build_ids(name, track_ids=track_ids, **kw)
    out.append(_row(label, table, time.perf_counter() - t + extra_s, dominant))
  return out
