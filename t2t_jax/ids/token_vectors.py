"""Vectors of ID tokens from vectors of the tracks they name (for semantic initialisation).

An ID token (level l, code c) stands for the set of tracks whose ID has code c at level l: an
artist's tracks (artist_iid_track_seq, level 0), one track (atomic integer IDs), a k-means cluster
(semantic IDs).  Its vector is the normalised mean of those tracks' (normalised) vectors, so a
model whose output embeddings start from these vectors scores a token by how close the prompt is
to the tracks it leads to.  Tokens shared by unrelated tracks (e.g. "the most popular track of its
artist") get a vector near the catalog mean: they carry no meaning of their own.

`residual=True` (for residual-quantised semantic IDs): level 0's token vectors are the means of
their tracks' vectors, level l's the means of what the levels before left over (track vector minus
the vectors of its earlier tokens), magnitudes kept.  Then a track's vector is approximately the SUM
of its tokens' vectors, so a model that scores each decoding step by the dot product of one state
with the step's token vectors ranks a path by the prompt's dot product with that sum: beam search
over the ID tree approximates the dense retriever over the tracks.  Normalised means (the default)
would instead score every level-l token by its tracks' shared direction, which for RQ's global
residual codebooks is nearly the catalog mean (measured on CPCD, docs/results/compare_cpcd_scalable).
"""

from __future__ import annotations

import numpy as np

from t2t_jax.errors import UserInputError


def id_token_vectors(table, track_vectors_NxH: np.ndarray, *, id_token_offset: int,
                     vocab_size: int, residual: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """(vectors float32 [vocab_size, H], mask bool [vocab_size]: tokens that got a vector); unit rows,
  or with `residual` the level means of the residuals (module doc).

  `track_vectors_NxH` rows are the ID table's rows.  Text-valued IDs (content, track-int as
  digits) reuse text pieces shared with every other text, so they are refused.
  """
  if table.is_text:
    raise UserInputError(f"ID-token vectors need non-text IDs; {table.strategy!r} IDs are text")
  x = np.asarray(track_vectors_NxH, np.float32)
  if x.shape[0] != table.num_tracks:
    raise ValueError(f"{x.shape[0]} track vectors for {table.num_tracks} ID-table rows")
  x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  tokens_NxL = table.token_ids(id_token_offset)
  out = np.zeros((vocab_size, x.shape[1]), np.float32)
  counts = np.zeros(vocab_size, np.int64)
  for level in range(tokens_NxL.shape[1]):
    tok = tokens_NxL[:, level]
    keep = tok > 0
    np.add.at(out, tok[keep], x[keep])
    np.add.at(counts, tok[keep], 1)
    if residual:  # this level's means, then what they leave over for the next level
      seen = np.unique(tok[keep])
      out[seen] /= counts[seen, None]
      x = x.copy()
      x[keep] -= out[tok[keep]]
  mask = counts > 0 if residual else np.linalg.norm(out, axis=1) > 0
  if not residual:
    out[mask] /= np.linalg.norm(out[mask], axis=1, keepdims=True)
  return out, mask
