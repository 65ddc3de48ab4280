"""Track-ID strategies behind one interface: `build_ids(strategy, ...) -> IdTable`, which calls the
strategy's builder (`BUILDERS[strategy]`, an `IdStrategy`).

Strategies (the paper's three families, Text2Tracks Sec. 3):
  "content"            artist + title as text tokens of the shared SentencePiece vocabulary
                       (variable length, `is_text=True`, no new tokens).  `encode_fn(text) -> ids`.
  "integer"            an integer per track, `order="sequential"` (catalog order) or "random"
                       (seeded permutation); `base=None` gives one atomic token per track (level size
                       N), `base=B` its base-B digits, most significant first (ceil(log_B N) tokens of B).
                       `text_digits=True` (the paper's track-int): the integer written in decimal with
                       the TEXT vocabulary (`encode_fn`, is_text=True, no new tokens).
  "artist_iid_track_seq"  the paper's best workshop strategy: level 0 = one new token per artist (the
                       `max_artists` most popular, by summed training popularity, ties by name; the
                       others share `num_other_tokens` tokens, each artist's by a stable CRC32 of its
                       name), then the track's rank inside that token's group by training popularity
                       (0 = most popular, ties by row).  A group larger than `max_seq` spills into more
                       levels: the rank in base `max_seq`, most significant digit first, so every ID has
                       1 + ceil(log_max_seq(largest group)) tokens.
  "artist_int_track_seq"  text IDs "<artist int><sep><track int>", e.g. "1001_1001": a seeded random
                       integer per artist (a permutation of start .. start + #artists - 1) and the
                       track's number inside its artist by popularity, counting from `start` (1000).
                       Written with the text vocabulary (`encode_fn`, is_text=True).
  "semantic_rq"        residual k-means codes of track embeddings (+ disambiguation level); semantic.py.
  "semantic_hkmeans"   hierarchical k-means codes (DSI) (+ disambiguation level); semantic.py.
  "semantic_dict"      sparse codes of a learned dictionary (online dictionary learning): the indices
                       of the non-zero coefficients ordered by magnitude, with sign; dictionary.py.
Every table's ID-token vocabulary is its `level_sizes` (token(l, c) = V_text + sum(level_sizes[:l]) + c,
docs/CONTRACTS.md); `id_token_names(table)` names those tokens for vocab files and debugging.

`popularity` (int counts per catalog row, from training playlists only) orders artists and tracks for
the artist strategies and picks the owner of a shared ID under `collisions="most_popular"` (semantic).

Uniqueness: integer and artist IDs are unique by construction (text-written ones are checked after
encoding: a text vocabulary that cannot write a digit maps it to UNK, and two IDs may then collide,
a UserInputError naming both tracks).  Content IDs collide when two tracks share artist and title (or
after `max_len` truncation); later duplicates get a text suffix " #2", " #3", ... (kept inside
`max_len`) and are counted in meta["num_disambiguated"].  Semantic IDs: see semantic.py.
"""

from __future__ import annotations

import math
import time
import zlib
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from t2t_jax.errors import UserInputError
from t2t_jax.ids import dictionary, semantic
from t2t_jax.ids.table import IdTable, check_track_ids

STRATEGIES = ("content", "integer", "artist_iid_track_seq", "artist_int_track_seq", "semantic_rq",
              "semantic_hkmeans", "semantic_dict")
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
                      seed: int = 0, text_digits: bool = False,
                      encode_fn: Callable[[str], Sequence[int]] | None = None) -> IdTable:
  """Integer IDs: one atomic token per track (base=None), base-B digits of the integer, or (text_digits)
  its decimal text in the text vocabulary."""
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
  meta = {"order": order, "base": base, "seed": seed, "text_digits": bool(text_digits), "num_disambiguated": 0,
          "stats": {"collision_rate": 0.0, "num_disambiguated": 0}}
  if text_digits:
    if base is not None:
      raise UserInputError(f"integer IDs: text_digits=True writes decimal text; drop base={base!r}")
    if encode_fn is None:
      raise UserInputError("integer IDs with text_digits=True need encode_fn (the text vocabulary)")
    codes = _text_codes([str(v) for v in value_N.tolist()], encode_fn, ids, "integer IDs")
    meta["stats"]["mean_length"] = float((codes >= 0).sum(1).mean())
    return IdTable(strategy="integer", track_ids=ids, codes=codes, level_sizes=(), is_text=True, meta=meta)
  if base is None:
    codes, sizes = value_N[:, None].astype(np.int32), (n,)
  else:
    if not isinstance(base, (int, np.integer)) or base < 2:
      raise UserInputError(f"integer IDs: base must be an integer >= 2, got {base!r}")
    codes, sizes = _digits(value_N, int(base), n)
  return IdTable(strategy="integer", track_ids=ids, codes=codes, level_sizes=sizes, meta=meta)


def _digits(value_N: np.ndarray, base: int, bound: int) -> tuple[np.ndarray, tuple[int, ...]]:
  """Base-`base` digits of values in [0, bound), most significant first: (codes [N, D], sizes (base,)*D)."""
  num_digits = max(1, math.ceil(math.log(bound, base) - 1e-12)) if bound > 1 else 1
  while base ** num_digits < bound:
    num_digits += 1
  digits = [(value_N // base ** p) % base for p in range(num_digits - 1, -1, -1)]
  return np.stack(digits, axis=1).astype(np.int32), (int(base),) * num_digits


def _text_codes(texts: Sequence[str], encode_fn, ids: Sequence[str], what: str) -> np.ndarray:
  """Text-token codes [N, max len] (-1 padded) of `texts`; UserInputError on reserved ids or collisions."""
  seqs, seen = [], {}
  for r, text in enumerate(texts):
    toks = tuple(int(t) for t in encode_fn(text))
    if not toks or any(t in _RESERVED_TEXT_IDS or t < 0 for t in toks):
      raise UserInputError(f"{what}: encode_fn({text!r}) (track {ids[r]!r}) returned {list(toks)}: empty or "
                           f"reserved/negative ids")
    if toks in seen:
      q = seen[toks]
      raise UserInputError(f"{what}: tracks {ids[q]!r} ({texts[q]!r}) and {ids[r]!r} ({text!r}) encode to the "
                           f"same tokens {list(toks)}; the text vocabulary cannot tell them apart (UNK digits?)")
    seen[toks] = r
    seqs.append(toks)
  codes = np.full((len(seqs), max(len(q) for q in seqs)), -1, np.int32)
  for r, q in enumerate(seqs):
    codes[r, :len(q)] = q
  return codes


def _popularity(popularity, n: int) -> np.ndarray:
  """int64 [N] training counts (zeros when None); UserInputError on a bad shape or negative counts."""
  if popularity is None:
    return np.zeros(n, np.int64)
  pop = np.asarray(popularity)
  if pop.shape != (n,) or not np.issubdtype(pop.dtype, np.number) or (pop < 0).any():
    raise UserInputError(f"popularity must be {n} non-negative counts (one per track), got shape {pop.shape}")
  return pop.astype(np.int64)


def _check_artists(ids, artists, what) -> list[str]:
  if artists is None or len(artists) != len(ids):
    raise UserInputError(f"{what}: need one artist per track ({len(ids)} tracks, "
                         f"{'no' if artists is None else len(artists)} artists)")
  return [str(a) for a in artists]


def rank_within_groups(group_N: np.ndarray, popularity_N: np.ndarray) -> np.ndarray:
  """int64 [N]: each row's rank inside its group by popularity (0 = most popular; ties by row)."""
  n = group_N.size
  order = np.lexsort((np.arange(n), -popularity_N, group_N))
  g = group_N[order]
  starts = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1] if n else np.zeros(0, np.int64)
  rank = np.empty(n, np.int64)
  rank[order] = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
  return rank


def artist_order(artists: Sequence[str], popularity_N: np.ndarray | None) -> tuple[list[str], np.ndarray]:
  """(distinct artists most popular first, artist index per track).  Artist popularity = the sum of its
  tracks' training counts (None: its number of tracks); ties by name."""
  names, inv = np.unique(np.asarray(artists, dtype=object).astype(str), return_inverse=True)
  inv = inv.reshape(-1)
  score = np.bincount(inv, weights=None if popularity_N is None else popularity_N.astype(np.float64),
                      minlength=names.size)
  order = np.lexsort((names, -score))  # popularity, then name
  rank = np.empty(names.size, np.int64)
  rank[order] = np.arange(names.size)
  return [str(x) for x in names[order]], rank[inv]


def build_artist_iid_track_seq_ids(track_ids: Sequence[str], artists: Sequence[str], *, popularity=None,
                                   max_artists: int = 50_000, num_other_tokens: int = 1,
                                   max_seq: int = 1024) -> IdTable:
  """Artist token + the track's popularity rank inside it (see the module doc)."""
  ids = check_track_ids(track_ids)
  artists = _check_artists(ids, artists, "artist_iid_track_seq IDs")
  n = len(ids)
  for name, v, lo in (("max_artists", max_artists, 1), ("num_other_tokens", num_other_tokens, 1),
                      ("max_seq", max_seq, 2)):
    if not isinstance(v, (int, np.integer)) or v < lo:
      raise UserInputError(f"artist_iid_track_seq IDs: {name} must be an integer >= {lo}, got {v!r}")
  pop = _popularity(popularity, n)
  ordered, artist_rank_N = artist_order(artists, None if popularity is None else pop)
  num_top = min(max_artists, len(ordered))
  others = ordered[num_top:]
  other_token = {a: num_top + zlib.crc32(a.encode("utf-8")) % num_other_tokens for a in others}
  token_of = np.array([r if r < num_top else other_token[ordered[r]] for r in range(len(ordered))], np.int64)
  level0_N = token_of[artist_rank_N]
  num_artist_tokens = num_top + (num_other_tokens if others else 0)
  seq_N = rank_within_groups(level0_N, pop)
  largest = int(seq_N.max()) + 1
  if largest <= max_seq:
    seq_codes, seq_sizes = seq_N[:, None].astype(np.int32), (largest,)
  else:
    seq_codes, seq_sizes = _digits(seq_N, int(max_seq), largest)
    seq_sizes = (int(-(-largest // max_seq ** (len(seq_sizes) - 1))),) + seq_sizes[1:]
  codes = np.concatenate([level0_N[:, None].astype(np.int32), seq_codes], axis=1)
  in_other = int((level0_N >= num_top).sum())
  stats = {"num_artists": len(ordered), "num_artist_tokens": num_artist_tokens, "num_other_artists": len(others),
           "tracks_in_other_tokens": in_other, "max_tracks_per_token": largest, "seq_levels": len(seq_sizes),
           "collision_rate": 0.0, "num_disambiguated": 0}
  meta = {"max_artists": max_artists, "num_other_tokens": num_other_tokens, "max_seq": max_seq,
          "artist_tokens": ordered[:num_top], "num_disambiguated": 0, "stats": stats}
  return IdTable(strategy="artist_iid_track_seq", track_ids=ids, codes=codes,
                 level_sizes=(num_artist_tokens,) + tuple(seq_sizes), meta=meta)


def build_artist_int_track_seq_ids(track_ids: Sequence[str], artists: Sequence[str],
                                   encode_fn: Callable[[str], Sequence[int]], *, popularity=None, seed: int = 0,
                                   start: int = 1000, separator: str = "_") -> IdTable:
  """Text IDs "<artist int><sep><track int>" (see the module doc)."""
  ids = check_track_ids(track_ids)
  artists = _check_artists(ids, artists, "artist_int_track_seq IDs")
  if not isinstance(start, (int, np.integer)) or start < 0:
    raise UserInputError(f"artist_int_track_seq IDs: start must be an integer >= 0, got {start!r}")
  pop = _popularity(popularity, len(ids))
  names, artist_N = np.unique(np.asarray(artists, dtype=object).astype(str), return_inverse=True)
  artist_N = artist_N.reshape(-1)
  artist_int = start + np.random.default_rng(seed).permutation(names.size)
  track_int = start + rank_within_groups(artist_N, pop)
  texts = [f"{a}{separator}{t}" for a, t in zip(artist_int[artist_N].tolist(), track_int.tolist())]
  codes = _text_codes(texts, encode_fn, ids, "artist_int_track_seq IDs")
  stats = {"num_artists": int(names.size), "mean_length": float((codes >= 0).sum(1).mean()),
           "collision_rate": 0.0, "num_disambiguated": 0}
  meta = {"seed": seed, "start": start, "separator": separator, "num_disambiguated": 0, "stats": stats}
  return IdTable(strategy="artist_int_track_seq", track_ids=ids, codes=codes, level_sizes=(), is_text=True,
                 meta=meta)


def build_ids(strategy: str, *, track_ids: Sequence[str], embeddings=None, artists: Sequence[str] | None = None,
              titles: Sequence[str] | None = None, encode_fn: Callable[[str], Sequence[int]] | None = None,
              popularity=None, embedding_info: dict | None = None, **kwargs: Any) -> IdTable:
  """One entry point for every strategy; kwargs go to the strategy's builder (`BUILDERS`, each an
  `IdStrategy`).

  popularity: training counts per track (artist strategies; semantic collisions="most_popular").
  embedding_info: how the embeddings were made (e.g. `catalog.catalog_embeddings`' info); stored in
  meta["embedding"], its "cold_start" counts also in stats.json.
  """
  if strategy not in BUILDERS:
    raise UserInputError(f"unknown ID strategy {strategy!r}; choose one of {STRATEGIES}")
  table = BUILDERS[strategy](track_ids=track_ids, embeddings=embeddings, artists=artists,
                             titles=titles, encode_fn=encode_fn, popularity=popularity, **kwargs)
  if embedding_info:
    table.meta["embedding"] = dict(embedding_info)
    if "cold_start" in embedding_info:
      table.meta.setdefault("stats", {})["cold_start"] = embedding_info["cold_start"]
  return table


@runtime_checkable
class IdStrategy(Protocol):
  """An ID strategy: its builder as `build_ids` calls it (the values of `BUILDERS`).  Every catalog
  input comes by keyword, None when the caller has none; the strategy uses the ones it needs (a
  UserInputError when one is missing) and `kwargs` are its own options."""

  def __call__(self, *, track_ids: Sequence[str], embeddings: Any, artists: Sequence[str] | None,
               titles: Sequence[str] | None, encode_fn: Callable[[str], Sequence[int]] | None,
               popularity: Any, **kwargs: Any) -> IdTable:
    ...


def _content(*, track_ids, embeddings, artists, titles, encode_fn, popularity, **kwargs) -> IdTable:
  del embeddings, popularity
  if encode_fn is None or artists is None or titles is None:
    raise UserInputError("strategy 'content' needs artists, titles and encode_fn")
  return build_content_ids(track_ids, artists, titles, encode_fn, **kwargs)


def _integer(*, track_ids, embeddings, artists, titles, encode_fn, popularity, **kwargs) -> IdTable:
  del embeddings, artists, titles, popularity
  return build_integer_ids(track_ids, encode_fn=encode_fn, **kwargs)


def _artist_iid_track_seq(*, track_ids, embeddings, artists, titles, encode_fn, popularity,
                          **kwargs) -> IdTable:
  del embeddings, titles, encode_fn
  return build_artist_iid_track_seq_ids(track_ids, artists, popularity=popularity, **kwargs)


def _artist_int_track_seq(*, track_ids, embeddings, artists, titles, encode_fn, popularity,
                          **kwargs) -> IdTable:
  del embeddings, titles
  if encode_fn is None:
    raise UserInputError("strategy 'artist_int_track_seq' needs encode_fn (the text vocabulary)")
  return build_artist_int_track_seq_ids(track_ids, artists, encode_fn, popularity=popularity, **kwargs)


def _semantic(strategy: str) -> IdStrategy:
  """The builder of a semantic strategy: k-means codes (semantic.py) or a dictionary's (dictionary.py)."""

  def build(*, track_ids, embeddings, artists, titles, encode_fn, popularity, **kwargs) -> IdTable:
    del artists, titles, encode_fn
    if embeddings is None:
      raise UserInputError(f"strategy {strategy!r} needs embeddings")
    if strategy == "semantic_dict":
      return dictionary.build_dictionary_ids(embeddings, track_ids, popularity=popularity, **kwargs)
    method = "rq" if strategy == "semantic_rq" else "hkmeans"
    return semantic.build_semantic_ids(embeddings, track_ids, method=method, popularity=popularity, **kwargs)

  return build


# Strategy name -> its builder (`IdStrategy`), in `STRATEGIES` order.
BUILDERS: dict[str, IdStrategy] = {
    "content": _content, "integer": _integer, "artist_iid_track_seq": _artist_iid_track_seq,
    "artist_int_track_seq": _artist_int_track_seq, "semantic_rq": _semantic("semantic_rq"),
    "semantic_hkmeans": _semantic("semantic_hkmeans"), "semantic_dict": _semantic("semantic_dict")}
assert tuple(BUILDERS) == STRATEGIES


def id_token_names(table: IdTable) -> list[str]:
  """Names of the table's ID tokens in vocabulary order: '<id_{level}_{code}>' ([] for content IDs)."""
  if table.is_text:
    return []
  return [f"<id_{l}_{c}>" for l, size in enumerate(table.level_sizes) for c in range(size)]
