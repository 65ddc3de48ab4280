"""Track-ID strategies behind one interface: `build_ids(strategy, ...) -> IdTable`.

Strategies (the paper's three families, Text2Tracks Sec. 3):
  "content"            artist + title as text tokens of the shared SentencePiece vocabulary
                       (variable length, `is_text=True`, no new tokens).  `encode_fn(text) -> ids`.
  "integer"            an integer per track, `order="sequential"` (catalog order) or "random"
                       (seeded permutation); `base=None` gives one atomic token per track (level size
                       N), `base=B` its base-B digits, most significant first (ceil(log_B N) tokens of B).
  "semantic_rq"        residual k-means codes of CF embeddings (+ disambiguation level); semantic.py.
  "semantic_hkmeans"   hierarchical k-means codes (DSI) (+ disambiguation level); semantic.py.
Every table's ID-token vocabulary is its `level_sizes` (token(l, c) = V_text + sum(level_sizes[:l]) + c,
docs/CONTRACTS.md); `id_token_names(table)` names those tokens for vocab files and debugging.

Uniqueness: integer IDs are unique by construction.  Content IDs collide when two tracks share artist
and title (or after `max_len` truncation); later duplicates get a text suffix " #2", " #3", ... (kept
inside `max_len`) and are counted in meta["num_disambiguated"].  Semantic IDs: see semantic.py.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import numpy as np

from t2t_jax.errors import UserInputError
from t2t_jax.ids import semantic
from t2t_jax.ids.table import IdTable, check_track_ids

STRATEGIES = ("content", "integer", "semantic_rq", "semantic_hkmeans")
# Token ids that content IDs may not contain: PAD (0, the padding value) and EOS (1, ends an ID).
_RESERVED_TEXT_IDS = (0, 1)


def build_content_ids(track_ids: Sequence[str], artists: Sequence[str], titles: Sequence[str],
                      encode_fn: Callable[[str], Sequence[int]], *, max_len: int | None = 32,
                      template: str = "{artist} - {title}") -> IdTable:
  """Content IDs: encode_fn(template.format(artist, title)), -1 padded, duplicates suffixed " #i"."""
  t0 = time.perf_counter()
  ids = check_track_ids(track_ids)
  if not (len(artists) == len(titles) == len(ids)):
    raise UserInputError(f"content IDs: {len(ids)} track ids, {len(artists)} artists, {len(titles)} titles")
  if max_len is not None and max_len < 2:
    raise UserInputError(f"content IDs: max_len must be >= 2, got {max_len}")

  def encode(text: str, row: int) -> list[int]:
    toks = [int(t) for t in encode_fn(text)]
    bad = [t for t in toks if t in _RESERVED_TEXT_IDS or t < 0]
    if bad:
      raise UserInputError(f"content IDs: encode_fn({text!r}) (track {ids[row]!r}) returned reserved/negative ids {bad}")
    return toks

  seqs, seen = [], {}
  num_disambiguated = num_truncated = 0
  for r, (artist, title) in enumerate(zip(artists, titles)):
    text = template.format(artist=artist, title=title)
    toks = encode(text, r)
    if not toks:
      raise UserInputError(f"content IDs: track {ids[r]!r} encodes to no tokens ({text!r})")
    if max_len is not None and len(toks) > max_len:
      toks = toks[:max_len]
      num_truncated += 1
    dup = 1
    base = toks
    while tuple(toks) in seen:
      dup += 1
      suffix = encode(f" #{dup}", r)
      keep = len(base) if max_len is None else max(1, min(len(base), max_len - len(suffix)))
      toks = base[:keep] + suffix
      if max_len is not None and len(toks) > max_len:
        raise UserInputError(f"content IDs: max_len={max_len} too short to disambiguate track {ids[r]!r}")
    if dup > 1:
      num_disambiguated += 1
    seen[tuple(toks)] = r
    seqs.append(toks)
  width = max(len(s) for s in seqs)
  codes = np.full((len(ids), width), -1, np.int32)
  for r, s in enumerate(seqs):
    codes[r, :len(s)] = s
  lengths = np.array([len(s) for s in seqs])
  stats = {"num_truncated": num_truncated, "num_disambiguated": num_disambiguated,
           "collision_rate": num_disambiguated / len(ids), "mean_length": float(lengths.mean()),
           "seconds": time.perf_counter() - t0}
  meta = {"template": template, "max_len": max_len, "num_disambiguated": num_disambiguated,
          "num_truncated": num_truncated, "stats": stats}
  return IdTable(strategy="content", track_ids=ids, codes=codes, level_sizes=(), is_text=True, meta=meta)


def build_integer_ids(track_ids: Sequence[str], *, order: str = "sequential", base: int | None = None,
                      seed: int = 0) -> IdTable:
  """Integer IDs: one atomic token per track (base=None) or base-B digits of the integer."""
  ids = check_track_ids(track_ids)
  n = len(ids)
  if n == 0:
    raise UserInputError("integer IDs: no tracks")
  if order == "sequential":
    value_N = np.arange(n, dtype=np.int64)
  elif order == "random":
    value_N = np.random.default_rng(seed).permutation(n).astype(np.int64)
  else:
    raise UserInputError(f"integer IDs: order must be 'sequential' or 'random', got {order!r}")
  if base is None:
    codes, sizes = value_N[:, None].astype(np.int32), (n,)
  else:
    if not isinstance(base, (int, np.integer)) or base < 2:
      raise UserInputError(f"integer IDs: base must be an integer >= 2, got {base!r}")
    num_digits = max(1, math.ceil(math.log(n, base) - 1e-12)) if n > 1 else 1
    while base ** num_digits < n:
      num_digits += 1
    digits = [(value_N // base ** p) % base for p in range(num_digits - 1, -1, -1)]
    codes, sizes = np.stack(digits, axis=1).astype(np.int32), (int(base),) * num_digits
  meta = {"order": order, "base": base, "seed": seed, "num_disambiguated": 0,
          "stats": {"collision_rate": 0.0, "num_disambiguated": 0}}
  return IdTable(strategy="integer", track_ids=ids, codes=codes, level_sizes=sizes, meta=meta)


def build_ids(strategy: str, *, track_ids: Sequence[str], embeddings=None, artists: Sequence[str] | None = None,
              titles: Sequence[str] | None = None, encode_fn: Callable[[str], Sequence[int]] | None = None,
              **kwargs: Any) -> IdTable:
  """One entry point for every strategy; kwargs go to the strategy's builder."""
  if strategy == "content":
    if encode_fn is None or artists is None or titles is None:
      raise UserInputError("strategy 'content' needs artists, titles and encode_fn")
    return build_content_ids(track_ids, artists, titles, encode_fn, **kwargs)
  if strategy == "integer":
    return build_integer_ids(track_ids, **kwargs)
  if strategy in ("semantic_rq", "semantic_hkmeans"):
    if embeddings is None:
      raise UserInputError(f"strategy {strategy!r} needs embeddings")
    method = "rq" if strategy == "semantic_rq" else "hkmeans"
    return semantic.build_semantic_ids(embeddings, track_ids, method=method, **kwargs)
  raise UserInputError(f"unknown ID strategy {strategy!r}; choose one of {STRATEGIES}")


def id_token_names(table: IdTable) -> list[str]:
  """Names of the table's ID tokens in vocabulary order: '<id_{level}_{code}>' ([] for content IDs)."""
  if table.is_text:
    return []
  return [f"<id_{l}_{c}>" for l, size in enumerate(table.level_sizes) for c in range(size)]
