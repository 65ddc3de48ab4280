"""Track embeddings for a whole catalog, ready for semantic IDs: CF or text, cold tracks placed.

  training_popularity(rows_train, num_tracks)  int64 [N]: training playlists holding each track
  catalog_embeddings(tracks=..., rows_train=..., source=..., cold_start=...) -> (emb_NxD, info)

Sources: "svd" (embeddings.fit_embeddings: normalised co-occurrence SVD, JAX), "word2vec" (gensim,
the paper's CF embeddings) and "text" (text_embeddings.py: the tracks' metadata and/or training
prompts through the sentence encoder; covers every track).  For CF sources the tracks in no training
playlist are placed by `cold_start.fill_cold_start`:
  cold_start="artist"       their artist's warm tracks, else the fallback;
  cold_start="text"         the k nearest warm tracks in text space (needs text vectors: `text_NxE` or
                            `encoder`);
  cold_start="artist+text"  artist first, text neighbours for the rest (every track has a text, so text
                            first would leave nothing to the artist);
  cold_start="random"       keep fit_embeddings' random unit vectors (the old behaviour; for comparison);
  cold_start="auto"         "artist+text" when text vectors are available, else "artist".
Measured (tools/measure_cold_start.py: 20% of the warm tracks held out of the training playlists;
first-token purity of the cold tracks = share landing in a group whose warm majority shares their
label; reference = the same tracks with their own full-data vectors; text = MiniLM on metadata):
  synthetic (3,000 tracks, label = intent; tags name genre/era/mood, which favours text), seeds 0 / 1:
    random 0.017 / 0.015, artist 0.17 / 0.27, text 0.27 / 0.38, artist+text 0.19 / 0.29, reference 0.51 / 0.60
  CPCD (8,371 tracks, 3,598 cold; label = the training conversation; no tags, 1,714 cold tracks
  have no warm track of their artist):
    random 0.002, artist 0.050, text 0.051, artist+text 0.055, reference 0.085
Artist first, text for the rest is the best on the real catalog, hence "auto".
`info` (JSON-able) goes to `strategies.build_ids(..., embedding_info=info)`, which writes its
"cold_start" counts into the ID table's stats.json.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from t2t_jax.errors import UserInputError
from t2t_jax.ids import cold_start as cold_lib
from t2t_jax.ids import embeddings as emb_lib
from t2t_jax.ids import text_embeddings as text_lib

SOURCES = ("svd", "word2vec", "text")
COLD_START = ("auto", "artist", "artist+text", "text", "random")
_ORDER = {"artist": ("artist",), "text": ("text_knn",), "artist+text": ("artist", "text_knn")}


def training_popularity(rows_train: Sequence[Sequence[int]], num_tracks: int) -> np.ndarray:
  """int64 [N]: how many training playlists hold each track (a track counts once per playlist)."""
  counts = np.zeros(num_tracks, np.int64)
  for rows in rows_train:
    arr = np.unique(np.asarray(rows, np.int64))
    if arr.size and (arr[0] < 0 or arr[-1] >= num_tracks):
      raise UserInputError(f"training playlist row outside [0, {num_tracks})")
    counts[arr] += 1
  return counts


def catalog_embeddings(*, tracks: Sequence[Any], rows_train: Sequence[Sequence[int]], source: str = "svd",
                       dim: int = 64, seed: int = 0, cold_start: str = "auto", text_NxE: np.ndarray | None = None,
                       encoder=None, train_prompts: Sequence[str] | None = None, text_mode: str = "metadata",
                       knn: int = 10, source_kwargs: dict | None = None) -> tuple[np.ndarray, dict]:
  """(float32 [N, dim] embeddings in catalog order, info).  See the module doc.

  tracks: catalog records (artist, title, album, tags); rows_train: catalog rows of each training
  playlist; train_prompts: their prompts (text modes with prompts); text_NxE: precomputed text
  embeddings (else computed with `encoder` when a source or cold_start needs them).
  """
  t0 = time.perf_counter()
  if source not in SOURCES:
    raise UserInputError(f"embedding source must be one of {SOURCES}, got {source!r}")
  if cold_start not in COLD_START:
    raise UserInputError(f"cold_start must be one of {COLD_START}, got {cold_start!r}")
  n = len(tracks)
  popularity = training_popularity(rows_train, n)
  cold = popularity == 0
  info: dict[str, Any] = {"source": source, "num_tracks": n, "num_train_playlists": len(rows_train)}
  wants_text = source == "text" or "text" in cold_start or (
      cold_start == "auto" and (text_NxE is not None or encoder is not None))
  if wants_text and text_NxE is None:
    prompts = None
    if text_mode != "metadata":
      if train_prompts is None:
        raise UserInputError(f"text_mode={text_mode!r} needs train_prompts (one per training playlist)")
      prompts = text_lib.prompts_by_track(rows_train, train_prompts, n)
    text_NxE = text_lib.text_embeddings(text_lib.track_texts(tracks, prompts, mode=text_mode), encoder=encoder)
    info["text_mode"] = text_mode
  kw = dict(source_kwargs or {})
  if source == "text":
    emb = np.asarray(text_NxE, np.float32)
    info["dim"] = int(emb.shape[1])
    info["cold_start"] = {"num_cold": int(cold.sum()), "by_artist": 0, "by_text_knn": 0, "fallback": 0,
                          "note": "text embeddings place every track"}
    info["seconds"] = time.perf_counter() - t0
    return emb, info
  if source == "svd":
    matrix = emb_lib.PlaylistMatrix.from_playlists(rows_train, n)
    emb, _ = emb_lib.fit_embeddings(matrix, dim, seed=seed, **kw)
  else:
    emb = emb_lib.word2vec_embeddings(rows_train, n, dim, seed=seed, **kw)
  info["dim"] = int(dim)
  if cold_start == "auto":
    cold_start = "artist+text" if text_NxE is not None else "artist"
  info["cold_start_method"] = cold_start
  if cold_start == "random":
    if source == "word2vec":  # zero rows: give them what fit_embeddings gives (seeded random unit vectors)
      rnd = np.random.default_rng([seed, 0xC01D]).normal(size=(int(cold.sum()), dim)).astype(np.float32)
      emb[cold] = rnd / np.linalg.norm(rnd, axis=1, keepdims=True)
    info["cold_start"] = {"num_cold": int(cold.sum()), "by_artist": 0, "by_text_knn": 0, "fallback": 0,
                          "random": int(cold.sum())}
  else:
    emb, info["cold_start"] = cold_lib.fill_cold_start(emb, cold, artists=[t.artist for t in tracks],
                                                       text_NxE=text_NxE, k=knn, seed=seed, order=_ORDER[cold_start])
  info["seconds"] = time.perf_counter() - t0
  return emb, info
