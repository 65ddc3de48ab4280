"""Most-popular baseline: every prompt gets the tracks that occur in most training playlists."""

from typing import Sequence

import numpy as np

from t2t_jax.baselines import catalog as catalog_lib


class MostPopular:
  """Ranks tracks by their number of training playlists (ties broken by lower row)."""

  def fit(self, catalog: catalog_lib.CatalogTexts, train: catalog_lib.Train) -> "MostPopular":
    """Counts each track once per training playlist; the prompts are not used."""
    self.counts_N = np.zeros(catalog.num_tracks, dtype=np.int64)
    for _, rows in catalog_lib.checked_train(train, catalog.num_tracks, "most popular"):
      self.counts_N[rows] += 1  # rows are unique within a playlist
    # Stable sort on -count keeps lower rows first among ties: deterministic.
    self.order_N = np.argsort(-self.counts_N, kind="stable").astype(np.int32)
    return self

  def recommend(self, prompts: Sequence[str], k: int) -> np.ndarray:
    """Returns rows [len(prompts), k] (-1 past the catalog's end); the prompt is ignored by design."""
    top = np.full(k, -1, np.int32)
    top[:min(k, len(self.order_N))] = self.order_N[:k]
    return np.tile(top, (len(prompts), 1))
