"""What every retrieval baseline is fitted on, and the track texts built from it.

One signature for all retrievers (BM25, most popular, dual encoder, bi-encoder; in code:
`t2t_jax.baselines.base.Baseline`):

  retriever.fit(catalog: CatalogTexts, train: Sequence[tuple[str, Sequence[int]]]) -> retriever
  retriever.recommend(prompts: Sequence[str], k: int) -> np.ndarray int32 [len(prompts), k] catalog rows

`train` holds the training playlists as (prompt, catalog rows).  The track text a retriever matches
a prompt against is one of `TRACK_TEXTS`:

  "playlist_titles"      the concatenated prompts of the training playlists the track is in (the
                         paper's baseline text); a track in no training playlist ("cold") falls
                         back to its metadata text
  "metadata"             the catalog's metadata text of the track (e.g. "artist - title (album)")
  "metadata_and_titles"  metadata, then the training prompts (BM25's historical document)
  "prompt_mean"          dense retrievers only: the track vector is the mean embedding of its
                         training prompts (cold tracks: the embedding of the metadata text)

Tracks in very many playlists keep a seeded random subset of `max_prompts_per_track` prompts (in
playlist order), so popular tracks do not get unboundedly long documents.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from t2t_jax.errors import UserInputError

TRACK_TEXTS = ("playlist_titles", "metadata", "metadata_and_titles")
DENSE_TRACK_TEXTS = TRACK_TEXTS + ("prompt_mean",)

Train = Sequence[tuple[str, Sequence[int]]]


@dataclasses.dataclass(frozen=True)
class CatalogTexts:
  """Per catalog row: a metadata text and the track's artist (artist-level metrics, per-artist IDs)."""
  metadata: tuple[str, ...]
  artists: tuple[str, ...]

  def __post_init__(self):
    object.__setattr__(self, "metadata", tuple(self.metadata))
    object.__setattr__(self, "artists", tuple(self.artists))
    if len(self.metadata) != len(self.artists):
      raise UserInputError(f"catalog: {len(self.metadata)} metadata texts but {len(self.artists)} artists")

  @property
  def num_tracks(self) -> int:
    return len(self.metadata)

  @classmethod
  def from_tracks(cls, tracks, text_fn) -> "CatalogTexts":
    """From `formats.Track`-like objects (`.artist`): metadata `text_fn(track)`, artist `track.artist`."""
    tracks = list(tracks)
    return cls(metadata=[text_fn(t) for t in tracks], artists=[t.artist for t in tracks])


def check_track_text(track_text: str, who: str, allowed: Sequence[str]) -> str:
  if track_text not in allowed:
    raise UserInputError(f"{who}: track_text={track_text!r}; choose from {', '.join(allowed)}")
  return track_text


def checked_train(train: Train, num_tracks: int, who: str) -> list[tuple[str, np.ndarray]]:
  """(prompt, unique sorted int64 rows) per training playlist; rows outside the catalog are an error."""
  if num_tracks == 0:
    raise UserInputError(f"{who}: empty catalog")
  out = []
  for prompt, rows in train:
    rows = np.unique(np.asarray(list(rows), np.int64))
    if rows.size and (rows.min() < 0 or rows.max() >= num_tracks):
      raise UserInputError(f"{who}: training playlist {prompt!r} has track rows outside [0, {num_tracks})")
    out.append((str(prompt), rows))
  return out


def prompts_of_track(train: list[tuple[str, np.ndarray]], num_tracks: int) -> list[list[int]]:
  """For each catalog row, the indices into `train` of the playlists holding it (playlist order)."""
  out: list[list[int]] = [[] for _ in range(num_tracks)]
  for i, (_, rows) in enumerate(train):
    for r in rows:
      out[int(r)].append(i)
  return out


def track_documents(catalog: CatalogTexts, train: list[tuple[str, np.ndarray]], track_text: str, *,
                    max_prompts_per_track: int = 200, seed: int = 0) -> tuple[list[str], int]:
  """(one text per catalog row, number of cold tracks) for a text mode of `TRACK_TEXTS`.

  `train` comes from `checked_train`.  Cold tracks (in no training playlist) get their metadata
  text in "playlist_titles" mode.
  """
  assert track_text in TRACK_TEXTS, track_text
  if track_text == "metadata":
    return list(catalog.metadata), 0
  by_track = prompts_of_track(train, catalog.num_tracks)
  rng = np.random.default_rng(seed)
  docs, cold = [], 0
  for meta, idx in zip(catalog.metadata, by_track):
    if len(idx) > max_prompts_per_track:
      keep = rng.choice(len(idx), max_prompts_per_track, replace=False)
      idx = [idx[i] for i in sorted(keep)]
    prompts = [train[i][0] for i in idx]
    cold += not prompts
    if track_text == "playlist_titles":
      docs.append(" ".join(prompts) if prompts else meta)
    else:
      docs.append(" ".join([meta, *prompts]))
  return docs, cold
