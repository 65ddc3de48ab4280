"""BM25 baseline (bm25s) over track documents.

A track's document is its metadata (artist, title, album, tags) plus the prompts of the training
playlists that contain it, so BM25 sees the same supervision Text2Tracks trains on.  Prompts longer
than `max_prompts_per_track` are subsampled deterministically so that very popular tracks do not
get unboundedly long documents.
"""

from typing import Iterable, Sequence

import bm25s
import numpy as np


class BM25Retriever:
  """Sparse retrieval over track documents with bm25s (Lucene BM25 variant)."""

  def __init__(self, *, k1: float = 1.2, b: float = 0.75, max_prompts_per_track: int = 200, seed: int = 0):
    self.k1, self.b = k1, b
    self.max_prompts_per_track = max_prompts_per_track
    self.seed = seed

  def fit(self, track_texts: Sequence[str], playlists: Iterable[tuple[str, Sequence[int]]]) -> "BM25Retriever":
    """track_texts: metadata text per track row; playlists: (prompt, track rows) of training playlists."""
    prompts_per_track: list[list[str]] = [[] for _ in track_texts]
    for prompt, rows in playlists:
      for r in set(int(r) for r in rows):
        prompts_per_track[r].append(prompt)
    rng = np.random.default_rng(self.seed)
    docs = []
    for text, prompts in zip(track_texts, prompts_per_track):
      if len(prompts) > self.max_prompts_per_track:
        keep = rng.choice(len(prompts), self.max_prompts_per_track, replace=False)
        prompts = [prompts[i] for i in sorted(keep)]
      docs.append(" ".join([text, *prompts]))
    self.tokenizer = bm25s.tokenization.Tokenizer(stopwords="en")
    corpus_ids = self.tokenizer.tokenize(docs, update_vocab=True, show_progress=False, return_as="ids")
    self.model = bm25s.BM25(k1=self.k1, b=self.b)
    self.model.index(corpus_ids, show_progress=False)
    self.num_docs = len(docs)
    return self

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
