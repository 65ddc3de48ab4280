"""BM25 baseline (bm25s, through `serving.lexical.LexicalIndex`) over track documents.

A track's document is one of `catalog.TRACK_TEXTS` (default "metadata_and_titles": its metadata plus
the prompts of the training playlists that contain it, so BM25 sees the same supervision Text2Tracks
trains on; "playlist_titles" is the paper's BM25 document, "metadata" the metadata alone).  Prompts
beyond `max_prompts_per_track` per track are subsampled deterministically (see catalog.py).
"""

from typing import Sequence

import numpy as np

from t2t_jax.baselines import catalog as catalog_lib
from t2t_jax.serving import lexical


class BM25Retriever:
  """Sparse retrieval over track documents with bm25s (Lucene BM25 variant)."""

  def __init__(self, *, track_text: str = "metadata_and_titles", k1: float = 1.2, b: float = 0.75,
               max_prompts_per_track: int = 200, seed: int = 0):
    self.track_text = catalog_lib.check_track_text(track_text, "bm25", catalog_lib.TRACK_TEXTS)
    self.k1, self.b = k1, b
    self.max_prompts_per_track = max_prompts_per_track
    self.seed = seed
    self.num_cold_tracks = None

  def fit(self, catalog: catalog_lib.CatalogTexts, train: catalog_lib.Train) -> "BM25Retriever":
    """Indexes one document per catalog row; `train` = (prompt, track rows) of training playlists."""
    train = catalog_lib.checked_train(train, catalog.num_tracks, "bm25")
    self.docs, self.num_cold_tracks = catalog_lib.track_documents(
        catalog, train, self.track_text, max_prompts_per_track=self.max_prompts_per_track, seed=self.seed)
    self.index = lexical.LexicalIndex.build(self.docs, k1=self.k1, b=self.b)
    self.num_docs = len(self.docs)
    return self

  def scores(self, prompts: Sequence[str]) -> np.ndarray:
    """BM25 score of every catalog row for every prompt ([len(prompts), num_docs] float32; a row of
    zeros for a prompt with no known word)."""
    return self.index.scores(prompts)

  def prior(self, prompts: Sequence[str]) -> np.ndarray:
    """`scores` divided by each prompt's best (in [0, 1]; BM25 scores are not comparable across
    prompts): the lexical prior that guides Text2Tracks' beam search (`rank_inputs(row_prior_NxR=
    w * prior)`; `serving.lexical`, which a model dir keeps for `t2t recommend` / `t2t serve`)."""
    return self.index.shares(prompts)

  def recommend(self, prompts: Sequence[str], k: int) -> np.ndarray:
    """Returns rows [len(prompts), k]; -1 where a prompt has no known word (nothing retrieved)."""
    k_eff = min(k, self.num_docs)
    query_ids = self.index.query_ids(prompts)
    out = np.full((len(prompts), k), -1, dtype=np.int32)
    nonempty = [i for i, q in enumerate(query_ids) if q]
    if nonempty:
      docs, scores = self.index.model.retrieve([query_ids[i] for i in nonempty], k=k_eff, show_progress=False)
      for j, i in enumerate(nonempty):
        valid = scores[j] > 0
        out[i, : valid.sum()] = docs[j][valid]
    return out
