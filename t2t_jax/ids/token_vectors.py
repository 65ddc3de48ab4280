"""Vectors of ID tokens from vectors of the tracks they name (for semantic initialisation).

An ID token (level l, code c) stands for the set of tracks whose ID has code c at level l: an
artist's tracks (artist_iid_track_seq, level 0), one track (atomic integer IDs), a k-means cluster
(semantic IDs).  Its vector is the normalised mean of those tracks' (normalised) vectors, so a
model whose output embeddings start from these vectors scores a token by how close the prompt is
to the tracks it leads to.  Tokens shared by unrelated tracks (e.g. "the most popular track of its
artist") get a vector near the catalog mean: they carry no meaning of their own.
"""

from __future__ import annotations

import numpy as np

from t2t_jax.errors import UserInputError


def id_token_vectors(table, track_vectors_NxH: np.ndarray, *, id_token_offset: int,
                     vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
  """(vectors float32 [vocab_size, H], mask bool [vocab_size]: tokens that got a vector).

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
  for level in range(tokens_NxL.shape[1]):
    tok = tokens_NxL[:, level]
    keep = tok > 0
    np.add.at(out, tok[keep], x[keep])
  norms = np.linalg.norm(out, axis=1)
  mask = norms > 0
  out[mask] /= norms[mask, None]
  return out, mask
