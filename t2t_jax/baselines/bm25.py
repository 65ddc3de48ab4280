"""BM25 baseline (bm25s) over track documents.

A track's document is one of `catalog.TRACK_TEXTS` (default "metadata_and_titles": its metadata plus
the prompts of the training playlists that contain it, so BM25 sees the same supervision Text2Tracks
trains on; "playlist_titles" is the paper's BM25 document, "metadata" the metadata alone).  Prompts
beyond `max_prompts_per_track` per track are subsampled deterministically (see catalog.py).
"""

from typing import Sequence

import bm25s
import numpy as np

from t2t_jax.baselines import catalog as catalog_lib


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
    docs, self.num_cold_tracks = catalog_lib.track_documents(
        catalog, train, self.track_text, max_prompts_per_track=self.max_prompts_per_track, seed=self.seed)
    self.tokenizer = bm25s.tokenization.Tokenizer(stopwords="en")
    corpus_ids = self.tokenizer.tokenize(docs, update_vocab=True, show_progress=False, return_as="ids")
    self.model = bm25s.BM25(k1=self.k1, b=self.b)
    self.model.index(corpus_ids, show_progress=False)
    self.num_docs = len(docs)
    return self

  def scores(self, prompts: Sequence[str]) -> np.ndarray:
    """BM25 score of every catalog row for every prompt ([len(prompts), num_docs] float32; a row of
    zeros for a prompt with no known word)."""
    query_ids = self.tokenizer.tokenize(list(prompts), update_vocab=False, show_progress=False, return_as="ids")
    out = np.zeros((len(prompts), self.num_docs), np.float32)
    for i, q in enumerate(query_ids):
      if q:
        out[i] = self.model.get_scores([int(t) for t in q])
    return out

  def prior(self, prompts: Sequence[str]) -> np.ndarray:
    """`scores` divided by each prompt's best (in [0, 1]; BM25 scores are not comparable across
    prompts): the lexical prior that guides Text2Tracks' beam search (`rank_inputs(row_prior_NxR=
    w * prior)`)."""
    raw = self.scores(prompts)
    return raw / np.maximum(raw.max(axis=1, keepdims=True), np.float32(1e-9))

  def recommend(self, prompts: Sequence[str], k: int) -> np.ndarray:
    """Returns rows [len(prompts), k]; -1 where a prompt has no known word (nothing retrieved)."""
    k_eff = min(k, self.num_docs)
    query_ids = self.tokenizer.tokenize(list(prompts), update_vocab=False, show_progress=False, return_as="ids")
    out = np.full((len(prompts), k), -1, dtype=np.int32)
    nonempty = [i for i, q in enumerate(query_ids) if q]
    if nonempty:
      docs, scores = self.model.retrieve([query_ids[i] for i in nonempty], k=k_eff, show_progress=False)
      for j, i in enumerate(nonempty):
        valid = scores[j] > 0
        out[i, : valid.sum()] = docs[j][valid]
    return out
