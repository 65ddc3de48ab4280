"""The ID table: track <-> tuple of ID codes (the contract in docs/CONTRACTS.md).

An `IdTable` maps each catalog track (row r, `track_ids[r]`) to a short tuple of integer codes
`codes_NxL[r]`.  For learned/integer IDs, code `c` at level `l` is the ID token
`id_token_offset + sum(level_sizes[:l]) + c` (docs/CONTRACTS.md, "Token layout").  For content IDs
(`is_text=True`) the codes are already text-token ids of the shared SentencePiece vocabulary, the
table has `level_sizes == ()` and rows are -1 padded to the longest ID.

On disk (one directory, written atomically):
  codes.npy       int32 [N, L]
  track_ids.txt   one track id per line, same order as the rows of codes.npy
  meta.json       {"strategy", "level_sizes", "is_text", "num_tracks", "num_levels", "meta": {...}}
  stats.json      `id_stats(table)` merged with `meta["stats"]` when present (collisions, balance, ...)

Collision policy.  IDs are unique (one row per code tuple), except under
`meta["collision_policy"] == "most_popular"` (the paper's rule: no disambiguation token; an ID shared by
several tracks decodes to the most popular of them).  Such a table lists the rows that do not own
their ID in `meta["unreachable_rows"]` (sorted); `decodable_rows()` is every other row, and exactly
one row of every shared ID is decodable (checked on construction).  `most_popular_owners` computes
the owners.  Without that policy duplicates are a bug of the builder: `decodable_rows()` raises.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
from typing import Any, Sequence

import numpy as np

from t2t_jax import io_utils, storage
from t2t_jax.data import formats
from t2t_jax.errors import UserInputError

CODES_FILE = "codes.npy"
TRACK_IDS_FILE = "track_ids.txt"
META_FILE = "meta.json"
STATS_FILE = "stats.json"
FORMAT_VERSION = 1


def check_track_ids(track_ids: Sequence[str], source: str = "track_ids") -> list[str]:
  """Returns track ids as a list of str; raises UserInputError on duplicates or an id breaking the
  id rule of `t2t_jax.data.formats.id_problem` (empty, > 512 characters, whitespace at either end,
  control characters, U+2028/U+2029: anything that would not survive track_ids.txt)."""
  out = [t if type(t) is str else str(t) for t in track_ids]  # pylint: disable=unidiomatic-typecheck
  # Fast vectorised checks; the slow loop below only runs to name a bad id.
  if formats.all_ids_valid(out) and len(set(out)) == len(out):
    return out
  seen: dict[str, int] = {}
  for i, t in enumerate(out):
    problem = formats.id_problem(t)
    if problem:
      raise UserInputError(f"{source}: track id at position {i} {problem}")
    if t in seen:
      raise UserInputError(f"{source}: duplicate track id {t!r} at positions {seen[t]} and {i}")
    seen[t] = i
  return out


COLLISION_POLICIES = ("disambiguate", "most_popular")


@dataclasses.dataclass(eq=False)
class IdTable:
  """Track <-> ID codes.  See the module docstring for the token mapping and on-disk format."""

  strategy: str
  track_ids: list[str]
  codes: np.ndarray  # int32 [N, L], -1 padded when IDs have variable length.
  level_sizes: tuple[int, ...] = ()
  is_text: bool = False
  meta: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    self.track_ids = check_track_ids(self.track_ids)
    codes = np.asarray(self.codes)
    if codes.ndim != 2:
      raise UserInputError(f"IdTable codes must be 2-D [N, L], got shape {codes.shape}")
    if not np.issubdtype(codes.dtype, np.integer):
      raise UserInputError(f"IdTable codes must be integers, got dtype {codes.dtype}")
    self.codes = codes.astype(np.int32, copy=False)
    if self.codes.shape[0] != len(self.track_ids):
      raise UserInputError(
          f"IdTable: {self.codes.shape[0]} code rows but {len(self.track_ids)} track ids")
    self.level_sizes = tuple(int(s) for s in self.level_sizes)
    if self.is_text:
      if self.level_sizes:
        raise UserInputError(f"content (is_text) IdTable must have level_sizes=(), got {self.level_sizes}")
    else:
      if len(self.level_sizes) != self.codes.shape[1]:
        raise UserInputError(
            f"IdTable: {len(self.level_sizes)} level sizes {self.level_sizes} for {self.codes.shape[1]} code levels")
      if any(s <= 0 for s in self.level_sizes):
        raise UserInputError(f"IdTable: level sizes must be positive, got {self.level_sizes}")
      if self.codes.size:
        hi = np.asarray(self.level_sizes, np.int64)[None, :]
        bad = (self.codes >= hi) | (self.codes < -1)
        if bad.any():
          r, l = np.argwhere(bad)[0]
          raise UserInputError(
              f"IdTable: code {self.codes[r, l]} of track {self.track_ids[r]!r} at level {l} "
              f"outside [0, {self.level_sizes[l]})")
    self._row = {t: i for i, t in enumerate(self.track_ids)}
    if self.collision_policy == "most_popular":
      self._check_owners()
    elif self.meta.get("unreachable_rows"):
      raise UserInputError("IdTable: unreachable_rows given but collision_policy is not 'most_popular'")

  @property
  def collision_policy(self) -> str:
    """"most_popular" (shared IDs allowed, see module doc) or "disambiguate" (IDs unique)."""
    policy = self.meta.get("collision_policy", "disambiguate")
    if policy not in COLLISION_POLICIES:
      raise UserInputError(f"IdTable: collision_policy must be one of {COLLISION_POLICIES}, got {policy!r}")
    return policy

  def _check_owners(self) -> None:
    unreachable = np.asarray(self.meta.get("unreachable_rows", []), np.int64)
    n = self.num_tracks
    if unreachable.size and (unreachable.min() < 0 or unreachable.max() >= n
                             or np.any(np.diff(unreachable) <= 0)):
      raise UserInputError(f"IdTable: unreachable_rows must be sorted unique rows in [0, {n})")
    decodable = np.ones(n, bool)
    decodable[unreachable] = False
    group_N = _group_ids(self.codes)
    owners_per_id = np.bincount(group_N[decodable], minlength=int(group_N.max()) + 1 if n else 0)
    if owners_per_id.size and (owners_per_id != 1).any():
      g = int(np.flatnonzero(owners_per_id != 1)[0])
      rows = np.flatnonzero(group_N == g)[:5].tolist()
      raise UserInputError(f"IdTable: the ID of rows {rows} has {int(owners_per_id[g])} decodable rows, "
                           f"expected exactly 1 (collision_policy='most_popular')")

  def decodable_rows(self) -> np.ndarray:
    """int64 rows that own their ID (what a decoder can return): every row when IDs are unique; under
    collision_policy="most_popular" the most popular row of each shared ID.  Raises if IDs collide
    without that policy."""
    n = self.num_tracks
    if self.collision_policy == "most_popular":
      keep = np.ones(n, bool)
      keep[np.asarray(self.meta.get("unreachable_rows", []), np.int64)] = False
      return np.flatnonzero(keep)
    dups = self.num_duplicate_ids()
    if dups:
      raise UserInputError(f"ID table ({self.strategy}): {dups} tracks share their ID with another track and "
                           f"collision_policy is not 'most_popular'")
    return np.arange(n, dtype=np.int64)

  @property
  def num_tracks(self) -> int:
    return len(self.track_ids)

  @property
  def num_levels(self) -> int:
    return int(self.codes.shape[1])

  @property
  def num_id_tokens(self) -> int:
    return int(sum(self.level_sizes))

  @property
  def lengths(self) -> np.ndarray:
    """int32 [N]: number of non-padding codes per track."""
    return (self.codes >= 0).sum(axis=1).astype(np.int32)

  def token_ids(self, id_token_offset: int) -> np.ndarray:
    """int32 [N, L] vocabulary ids, 0-padded (no EOS).

    Non-text: token(l, c) = id_token_offset + sum(level_sizes[:l]) + c.  Text (content IDs): the codes
    are text-token ids already and `id_token_offset` is ignored.
    """
    pad = self.codes < 0
    if self.is_text:
      tokens_NxL = self.codes.copy()
    else:
      level_offset_L = np.concatenate([[0], np.cumsum(self.level_sizes)[:-1]]).astype(np.int64)
      tokens_NxL = (int(id_token_offset) + level_offset_L[None, :] + self.codes).astype(np.int64)
    tokens_NxL[pad] = 0
    return tokens_NxL.astype(np.int32)

  def row_of(self, track_id: str) -> int:
    """Row of `track_id`; UserInputError naming it if it is not in the table."""
    try:
      return self._row[str(track_id)]
    except KeyError:
      raise UserInputError(f"track id {track_id!r} is not in the ID table ({self.strategy})") from None

  def row_of_codes(self) -> dict[tuple[int, ...], int]:
    """{code tuple (padding stripped): row}; the inverse of `codes` over `decodable_rows()` (a shared
    ID maps to its owner under collision_policy="most_popular")."""
    out = {}
    rows = self.decodable_rows() if self.collision_policy == "most_popular" else range(self.num_tracks)
    for r in rows:
      out[tuple(c for c in self.codes[r].tolist() if c >= 0)] = int(r)
    return out

  def num_duplicate_ids(self) -> int:
    """How many rows share their full code tuple with an earlier row (0 for a valid table)."""
    if self.num_tracks == 0:
      return 0
    return self.num_tracks - int(np.unique(self.codes, axis=0).shape[0])

  def save(self, directory: str | os.PathLike, extra_files: dict[str, bytes] | None = None, *,
           inputs=(), overwrite: bool = False) -> None:
    """Writes the table atomically to `directory` (replacing a previous ID table there).

    `extra_files`: name -> bytes (plots).  `inputs`/`overwrite`: see `io_utils.check_output_dir`.
    """
    stats = id_stats(self)
    stats.update(self.meta.get("stats", {}))
    meta = {
        "format_version": FORMAT_VERSION,
        "strategy": self.strategy,
        "level_sizes": list(self.level_sizes),
        "is_text": bool(self.is_text),
        "num_tracks": self.num_tracks,
        "num_levels": self.num_levels,
        "num_id_tokens": self.num_id_tokens,
        "meta": _jsonable(self.meta),
    }
    with io_utils.atomic_dir(directory, kind="ids", inputs=inputs, overwrite=overwrite) as tmp:
      np.save(os.path.join(tmp, CODES_FILE), self.codes)
      with open(os.path.join(tmp, TRACK_IDS_FILE), "w", encoding="utf-8") as f:
        for t in self.track_ids:
          f.write(t + "\n")
      io_utils.write_json(os.path.join(tmp, META_FILE), meta)
      io_utils.write_json(os.path.join(tmp, STATS_FILE), _jsonable(stats))
      for name, data in (extra_files or {}).items():
        with open(os.path.join(tmp, name), "wb") as f:
          f.write(data)

  @classmethod
  def load(cls, directory: str | os.PathLike) -> "IdTable":
    """The table of an ID table dir (a local path or a gs:// / s3:// URL)."""
    directory = os.fspath(directory)
    for name in (CODES_FILE, TRACK_IDS_FILE, META_FILE):
      if not storage.exists(storage.join(directory, name)):
        raise UserInputError(f"ID table dir {directory}: missing {name}")
    meta_path = storage.join(directory, META_FILE)
    meta = formats.read_json_file(meta_path, "ID table meta file")
    if not isinstance(meta, dict):
      raise UserInputError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    ids_path = storage.join(directory, TRACK_IDS_FILE)
    try:
      with storage.open(ids_path) as f:
        track_ids = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
      raise UserInputError(f"{ids_path}: unreadable ({e})") from None
    codes_path = storage.join(directory, CODES_FILE)
    try:
      source = io.BytesIO(storage.read_bytes(codes_path)) if storage.is_remote(codes_path) else codes_path
      codes = np.load(source, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:  # truncated, not .npy, or an object array
      raise UserInputError(f"{codes_path}: not a readable int32 [N, L] .npy file ({e})") from None
    missing = [k for k in ("strategy", "level_sizes", "is_text") if k not in meta]
    if missing:
      raise UserInputError(f"{meta_path}: missing key(s) {missing}")
    level_sizes, is_text = meta["level_sizes"], meta["is_text"]
    if not isinstance(level_sizes, list) or not all(
        isinstance(x, int) and not isinstance(x, bool) for x in level_sizes):
      raise UserInputError(f"{meta_path}: level_sizes must be a list of integers, got {level_sizes!r}")
    if not isinstance(is_text, bool) or not isinstance(meta["strategy"], str):
      raise UserInputError(f"{meta_path}: is_text must be true/false and strategy a string")
    try:
      return cls(strategy=meta["strategy"], track_ids=track_ids, codes=codes,
                 level_sizes=tuple(level_sizes), is_text=is_text, meta=meta.get("meta", {}))
    except UserInputError as e:
      raise UserInputError(f"ID table dir {directory}: {e}") from None


def id_stats(table: IdTable) -> dict[str, Any]:
  """Collision rate, per-level usage/entropy and prefix sharing of an ID table."""
  codes_NxL = table.codes
  n, num_levels = codes_NxL.shape
  stats: dict[str, Any] = {
      "num_tracks": int(n),
      "num_levels": int(num_levels),
      "level_sizes": list(table.level_sizes),
      "num_id_tokens": table.num_id_tokens,
      "duplicate_ids": table.num_duplicate_ids(),
      "collision_policy": table.collision_policy,
  }
  if n == 0:
    return stats
  _, per_id = np.unique(_group_ids(codes_NxL), return_counts=True)
  stats["tracks_per_id"] = {"mean": float(n / per_id.size), "max": int(per_id.max())}
  stats["num_unreachable_tracks"] = int(n - table.decodable_rows().size) if table.collision_policy == "most_popular" else 0
  lengths = table.lengths
  stats["id_length"] = {"min": int(lengths.min()), "mean": float(lengths.mean()), "max": int(lengths.max())}
  # Prefix sharing: for each prefix length p, number of distinct prefixes and mean group size.
  prefix = []
  for p in range(1, num_levels + 1):
    _, counts = np.unique(codes_NxL[:, :p], axis=0, return_counts=True)
    prefix.append({
        "prefix_len": p,
        "distinct": int(counts.size),
        "mean_tracks_per_prefix": float(counts.mean()),
        "max_tracks_per_prefix": int(counts.max()),
        "tracks_sharing_prefix": int(counts[counts > 1].sum()),
    })
  stats["prefix"] = prefix
  if not table.is_text:
    levels = []
    for l, size in enumerate(table.level_sizes):
      col = codes_NxL[:, l]
      col = col[col >= 0]
      counts = np.bincount(col, minlength=size).astype(np.float64)
      used = int((counts > 0).sum())
      p = counts[counts > 0] / max(counts.sum(), 1.0)
      entropy = float(-(p * np.log2(p)).sum()) if p.size else 0.0
      levels.append({
          "level": l,
          "size": int(size),
          "used": used,
          "usage": used / size,
          "entropy_bits": entropy,
          "max_entropy_bits": math.log2(size) if size > 1 else 0.0,
          "perplexity": float(2.0 ** entropy),
          "max_count": int(counts.max()) if counts.size else 0,
      })
    stats["levels"] = levels
  return stats


def _group_ids(codes_NxL: np.ndarray) -> np.ndarray:
  """int64 [N]: one id per distinct code row (rows with equal codes get equal ids)."""
  if codes_NxL.shape[0] == 0:
    return np.zeros(0, np.int64)
  return np.unique(codes_NxL, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)


def most_popular_owners(codes_NxL: np.ndarray, popularity_N=None) -> tuple[np.ndarray, dict[str, Any]]:
  """The "most_popular" collision policy: (sorted unreachable rows int64, stats).

  Rows sharing a full code tuple keep it; the most popular of them (ties: lowest row) owns it, the
  others are unreachable.  `popularity_N`: training counts per row (None: all equal, so the lowest row
  owns).  Stats: tracks per ID (mean, max) and the number of unreachable tracks.
  """
  n = codes_NxL.shape[0]
  pop = np.zeros(n, np.int64) if popularity_N is None else np.asarray(popularity_N, np.int64)
  if pop.shape != (n,):
    raise UserInputError(f"popularity has shape {pop.shape}, expected ({n},) (one count per track)")
  group_N = _group_ids(codes_NxL)
  order = np.lexsort((np.arange(n), -pop, group_N))  # by ID, most popular first, then row
  first = np.ones(n, bool)
  first[1:] = group_N[order][1:] != group_N[order][:-1]
  unreachable = np.sort(order[~first])
  num_ids = int(first.sum())
  stats = {"tracks_per_id": {"mean": float(n / max(num_ids, 1)),
                             "max": int(np.bincount(group_N).max()) if n else 0},
           "num_unreachable_tracks": int(unreachable.size)}
  return unreachable.astype(np.int64), stats


def _jsonable(obj):
  if isinstance(obj, dict):
    return {str(k): _jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_jsonable(v) for v in obj]
  if isinstance(obj, np.generic):
    return obj.item()
  if isinstance(obj, np.ndarray):
    return obj.tolist()
  return obj


def decode_steps(table) -> dict:
  """Decoding cost of a table's IDs from `id_stats` and the trie rule (one EOS step more
  for text / variable-length IDs, `decoding.index.token_seqs_for_table`)."""
  stats = id_stats(table)
  length = stats["id_length"]
  eos = 1 if table.is_text or length["min"] != length["max"] else 0
  return {"decode_steps_per_id": round(float(length["mean"]) + eos, 2),
          "decode_steps_max": int(length["max"]) + eos, "id_tokens_added": int(stats["num_id_tokens"]),
          "num_disambiguated": int(table.meta.get("num_disambiguated", 0) or 0)}
