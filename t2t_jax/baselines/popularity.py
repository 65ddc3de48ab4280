"""Most-popular baseline: every prompt gets the tracks that occur in most training playlists."""

from typing import Iterable, Sequence

import numpy as np


class MostPopular:
  """Ranks tracks by their number of training playlists (ties broken by lower row)."""

  def __init__(self, num_tracks: int):
    self.counts_N = np.zeros(num_tracks, dtype=np.int64)

  def fit(self, playlists_rows: Iterable[Sequence[int]]) -> "MostPopular":
    for rows in playlists_rows:
      np.add.at(self.counts_N, np.unique(np.asarray(rows, dtype=np.int64)), 1)
    # Stable sort on -count keeps lower rows first among ties: deterministic.
    self.order_N = np.argsort(-self.counts_N, kind="stable").astype(np.int32)
    return self

  def recommend(self, prompts: Sequence[str], k: int) -> np.ndarray:
    """Returns rows [len(prompts), k]; the prompt is ignored by design."""
    top = self.order_N[:k]
    return np.tile(top, (len(prompts), 1))
