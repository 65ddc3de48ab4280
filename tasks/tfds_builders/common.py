"""Shared features and example generation of the t2t TFDS builders.

Example (one per playlist):
  playlist_id, title, description: Text
  intent: Text (JSON of the latent intent for synthetic data, "" otherwise)
  tracks: Sequence of {track_id, artist, title, album: Text}, in playlist order
"""

from __future__ import annotations

import functools
import json
import os
from typing import Iterator

import tensorflow_datasets as tfds

from t2t_jax.data import formats


def features() -> tfds.features.FeaturesDict:
  text = tfds.features.Text()
  return tfds.features.FeaturesDict({
      "playlist_id": text,
      "title": text,
      "description": text,
      "intent": text,
      "tracks": tfds.features.Sequence({"track_id": text, "artist": text, "title": text, "album": text}),
  })


def split_generators(dataset_dir: str, generate_fn) -> dict:
  return {split: generate_fn(dataset_dir, split) for split in formats.SPLITS}


@functools.lru_cache(maxsize=2)
def _load(dataset_dir: str) -> formats.Dataset:
  return formats.Dataset.load(dataset_dir)  # Once for all three splits.


def generate_examples(dataset_dir: str, split: str) -> Iterator[tuple[str, dict]]:
  """(key, example) for each playlist of `split` of a dataset dir."""
  ds = _load(dataset_dir)
  for p in ds.playlists(split):
    tracks = [ds.tracks[ds.track_row[t]] for t in p.track_ids]
    yield p.playlist_id, {
        "playlist_id": p.playlist_id,
        "title": p.title,
        "description": p.description,
        "intent": json.dumps(p.intent, ensure_ascii=False, sort_keys=True) if p.intent else "",
        "tracks": [{"track_id": t.track_id, "artist": t.artist, "title": t.title, "album": t.album}
                   for t in tracks],
    }


def work_dir(dl_manager, name: str) -> str:
  """A folder under the download dir for intermediate dataset dirs (kept for re-runs)."""
  path = os.path.join(os.fspath(dl_manager.download_dir), name)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  return path
