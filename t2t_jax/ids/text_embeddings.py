"""Text-based track embeddings: a track's metadata and/or training prompts, embedded by a sentence encoder.

The paper's "text-based" semantic IDs embed "the concatenated training prompts of a track" with
all-MiniLM-L6-v2.  Metadata text (title, artist, album, tags) also covers tracks that are in no
training playlist (cold tracks), which CF embeddings cannot place (cold_start.py uses these vectors
to find a cold track's warm neighbours).

  track_texts(tracks, prompts_by_row, mode)  one string per track:
      "metadata"          "{title} by {artist}, from {album}. {tag}, {tag}"
      "prompts"           the track's distinct training prompts, most frequent first (at most
                          `max_prompts`, joined by "; "); a track with none falls back to its metadata
      "metadata+prompts"  both, metadata first
  prompts_by_track(rows_train, prompts, num_tracks)  the training prompts of every track
  text_embeddings(texts, encoder=None, batch_size=64)  float32 [N, E] from `encoder.encode(texts,
      batch_size=...)`; encoder None loads the project's JAX port of all-MiniLM-L6-v2
      (`t2t_jax.models.bert.SentenceEncoder.load(pretrained.minilm_dir())`: mean pooled, L2-normalised,
      384 dims).  Any object with that `encode` method works (tests pass a hashing bag of words).

The encoder truncates long texts (MiniLM: 256 word pieces), hence the most frequent prompts go first.
"""

from __future__ import annotations

import collections
from typing import Any, Sequence

import numpy as np

from t2t_jax.errors import UserInputError
from t2t_jax.models import bert, pretrained

MODES = ("metadata", "prompts", "metadata+prompts")


def metadata_text(track: Any) -> str:
  """"{title} by {artist}, from {album}. {tags}" (album and tags only when present)."""
  text = f"{track.title} by {track.artist}"
  album = getattr(track, "album", "") or ""
  if album:
    text += f", from {album}"
  tags = list(getattr(track, "tags", ()) or ())
  if tags:
    text += ". " + ", ".join(str(t) for t in tags)
  return text


def prompts_by_track(rows_train: Sequence[Sequence[int]], prompts: Sequence[str], num_tracks: int) -> list[list[str]]:
  """For every catalog row, the prompts of the training playlists holding it (one entry per playlist)."""
  if len(rows_train) != len(prompts):
    raise UserInputError(f"{len(rows_train)} training playlists but {len(prompts)} prompts")
  out: list[list[str]] = [[] for _ in range(num_tracks)]
  for rows, prompt in zip(rows_train, prompts):
    for r in dict.fromkeys(int(x) for x in rows):
      out[r].append(prompt)
  return out


def track_texts(tracks: Sequence[Any], training_prompts_by_row: Sequence[Sequence[str]] | None = None, *,
                mode: str = "metadata", max_prompts: int = 32) -> list[str]:
  """One text per track (see the module doc for the modes)."""
  if mode not in MODES:
    raise UserInputError(f"text embedding mode must be one of {MODES}, got {mode!r}")
  if mode != "metadata":
    if training_prompts_by_row is None or len(training_prompts_by_row) != len(tracks):
      raise UserInputError(f"text mode {mode!r} needs the training prompts of each of the {len(tracks)} tracks")
  out = []
  for r, track in enumerate(tracks):
    meta = metadata_text(track)
    if mode == "metadata":
      out.append(meta)
      continue
    counts = collections.Counter(p.strip() for p in training_prompts_by_row[r] if p and p.strip())
    prompts = "; ".join(p for p, _ in counts.most_common(max_prompts))  # ties: first seen first
    if mode == "prompts":
      out.append(prompts or meta)
    else:
      out.append(f"{meta}. {prompts}" if prompts else meta)
  return out


def load_default_encoder():
  """The project's JAX all-MiniLM-L6-v2 sentence encoder (t2t_jax.models.bert)."""
  return bert.SentenceEncoder.load(pretrained.minilm_dir())


def text_embeddings(texts: Sequence[str], *, encoder=None, batch_size: int = 64) -> np.ndarray:
  """float32 [N, E] sentence embeddings of `texts` (rows as the encoder returns them: MiniLM's are
  unit-norm).  UserInputError on empty input or an encoder returning the wrong shape / non-finite values."""
  texts = [str(t) for t in texts]
  if not texts:
    raise UserInputError("text embeddings: no texts")
  if encoder is None:
    encoder = load_default_encoder()
  emb = np.asarray(encoder.encode(texts, batch_size=batch_size), np.float32)
  if emb.ndim != 2 or emb.shape[0] != len(texts):
    raise UserInputError(f"text encoder returned shape {emb.shape} for {len(texts)} texts")
  if not np.isfinite(emb).all():
    raise UserInputError("text encoder returned NaN/inf values")
  return emb
