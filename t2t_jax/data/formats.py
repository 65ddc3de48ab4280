"""Dataset-dir formats: catalog and playlists as JSONL, splits and meta as JSON (docs/CONTRACTS.md).

A dataset dir holds
  catalog.jsonl    one track a line:    {"track_id", "artist", "title", "album", "tags": [...]}
  playlists.jsonl  one playlist a line: {"playlist_id", "title", "description", "track_ids": [...],
                                          "intent": {...} (optional)}
  splits.json      {"train": [playlist ids], "validation": [...], "test": [...]}
  meta.json        free-form provenance (generator config, source, counts).

Readers stream (one record in memory at a time, apart from the set of seen ids used to catch
duplicates) and validate every record.  A bad record raises `UserInputError` naming `file:line` and
the bad field/value; with `on_error="skip"` it is skipped and counted in a `ReadStats` instead
(first few messages kept).  Writers write to a temporary name and rename (`t2t_jax.io_utils`).

Real-data quirks that are not errors: a track listed twice in one playlist is kept once (first
position) and counted (`ReadStats.duplicate_tracks_in_playlists`); with `on_error="skip"` a track
missing from the catalog drops only that track (`unknown_tracks_dropped`; a playlist left with no
track is skipped).  Importers also skip, and count, playlists whose prompt is empty once markup and
placeholders are cleaned (`prompts.clean_text`); `Dataset.load` still rejects them.

The id rule (`id_problem`), shared by every reader and by `ids.table.check_track_ids`: a track or
playlist id is a non-empty string of at most MAX_ID_CHARS characters, without leading or trailing
whitespace, control characters (C0/C1, so no newline, tab, VT/FF, FS/GS/RS, NEL, CR), the Unicode
line/paragraph separators U+2028/U+2029, or lone surrogates.  Those are exactly the characters that
`str.splitlines` splits on or UTF-8 cannot encode, so an id that passes survives every one-id-a-line
file.  Text fields (title, artist, ...) may hold anything but lone surrogates.

`fold_splits` turns a `folds.json` (k-fold cross-validation, e.g. CPCD's) into the splits of one
fold (`finish.materialize_fold`: into a complete dataset dir for that fold).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from typing import Any, Collection, Iterable, Iterator

import numpy as np

from t2t_jax import io_utils, storage
from t2t_jax.data.prompts import DEFAULT_MAX_CHARS, clean_text, normalize_text
from t2t_jax.errors import UserInputError, where

CATALOG_FILE = "catalog.jsonl"
PLAYLISTS_FILE = "playlists.jsonl"
SPLITS_FILE = "splits.json"
META_FILE = "meta.json"
FOLDS_FILE = "folds.json"
VOCAB_DIR = "vocab"
SPM_FILE = "spm.model"
SPLITS = ("train", "validation", "test")
ON_ERROR = ("raise", "skip")
# Longest title/description/name accepted by the readers (characters).  Longer values are a
# corrupted record, not a prompt; prompts.py trims long-but-sane prompts further.
MAX_TEXT_CHARS = 20_000
MAX_ID_CHARS = 512
# Characters no id may contain (see the module docstring): C0/C1 controls, U+2028/U+2029, surrogates.
_BAD_ID_CHAR = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


_BAD_ID_CHAR_BUT_NL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# On newline-joined ids: an empty id, or one starting/ending with whitespace.
_BAD_JOINED_ID = re.compile(r"^$|^\s|[^\S\n]$", re.MULTILINE)


def all_ids_valid(ids: list[str]) -> bool:
  """True when every id (all str) passes `id_problem`; vectorised (10M ids in seconds)."""
  if not ids:
    return True
  joined = "\n".join(ids)
  return (joined.count("\n") == len(ids) - 1 and not _BAD_ID_CHAR_BUT_NL.search(joined)
          and not _BAD_JOINED_ID.search(joined) and max(map(len, ids)) <= MAX_ID_CHARS)


def id_problem(value: Any) -> str | None:
  """Why `value` is not a valid track/playlist id (the shared id rule), or None when it is."""
  if not isinstance(value, str):
    return f"must be a string, got {type(value).__name__} {_short(value)}"
  if not value:
    return "is empty"
  if len(value) > MAX_ID_CHARS:
    return f"is {len(value)} characters long (limit {MAX_ID_CHARS}): {_short(value)}"
  m = _BAD_ID_CHAR.search(value)
  if m:
    return f"contains the control/separator character {m.group()!r} at position {m.start()}: {_short(value)}"
  if value != value.strip():
    return f"has leading/trailing whitespace: {_short(value)}"
  return None


@dataclasses.dataclass(frozen=True)
class Track:
  track_id: str
  artist: str
  title: str
  album: str = ""
  tags: tuple[str, ...] = ()

  def to_json(self) -> dict[str, Any]:
    return {"track_id": self.track_id, "artist": self.artist, "title": self.title,
            "album": self.album, "tags": list(self.tags)}


@dataclasses.dataclass(frozen=True)
class Playlist:
  playlist_id: str
  title: str
  description: str
  track_ids: tuple[str, ...]
  intent: dict | None = None

  def to_json(self) -> dict[str, Any]:
    out = {"playlist_id": self.playlist_id, "title": self.title, "description": self.description,
           "track_ids": list(self.track_ids)}
    if self.intent is not None:
      out["intent"] = self.intent
    return out


@dataclasses.dataclass
class ReadStats:
  """Counters filled by a reader: records read (valid), skipped, and the first skip messages."""
  read: int = 0
  skipped: int = 0
  duplicate_tracks_in_playlists: int = 0  # repeats dropped (first position kept)
  unknown_tracks_dropped: int = 0         # on_error="skip": tracks not in the catalog, dropped
  playlists_without_known_tracks: int = 0  # on_error="skip": nothing left after that (also in skipped)
  empty_prompt_playlists: int = 0         # importers: no prompt text after cleaning, skipped
  messages: list[str] = dataclasses.field(default_factory=list)
  max_messages: int = 20
  empty_prompt_ids: set[str] = dataclasses.field(default_factory=set)  # not in as_dict

  def skip(self, message: str) -> None:
    self.skipped += 1
    self.note(message)

  def note(self, message: str) -> None:
    if len(self.messages) < self.max_messages:
      self.messages.append(message)

  def as_dict(self) -> dict[str, Any]:
    return {"read": self.read, "skipped": self.skipped,
            "duplicate_tracks_in_playlists": self.duplicate_tracks_in_playlists,
            "unknown_tracks_dropped": self.unknown_tracks_dropped,
            "playlists_without_known_tracks": self.playlists_without_known_tracks,
            "empty_prompt_playlists": self.empty_prompt_playlists, "messages": list(self.messages)}


class _BadRecord(Exception):
  """A record-level problem; the reader turns it into UserInputError or a counted skip."""


class _EmptyPrompt(_BadRecord):
  """A playlist with no prompt text: an error in a dataset dir, skipped and counted by importers."""

  def __init__(self, message: str, playlist_id: str):
    super().__init__(message)
    self.playlist_id = playlist_id


class _NoKnownTracks(_BadRecord):
  """on_error="skip": every track of the playlist was unknown and dropped."""


def check_input_file(path: str | os.PathLike, what: str = "file") -> str:
  """`path` as str if it names a readable regular file (or object); otherwise UserInputError saying why."""
  path = os.fspath(path)
  if storage.is_remote(path):
    if not storage.isfile(path):
      raise UserInputError(f"{path}: no such {what}" + (" (a folder)" if storage.isdir(path) else ""))
    return path
  if os.path.isdir(path):
    raise UserInputError(f"{path}: is a folder, expected a {what}")
  if not os.path.exists(path):
    if os.path.islink(path):
      try:
        os.stat(path)
      except OSError as e:
        raise UserInputError(f"{path}: unreadable symbolic link ({e.strerror})") from None
    raise UserInputError(f"{path}: no such {what}")
  try:
    with open(path, "rb"):
      pass
  except OSError as e:
    raise UserInputError(f"{path}: cannot read the {what} ({e.strerror})") from None
  return path


def _check_on_error(on_error: str) -> None:
  if on_error not in ON_ERROR:
    raise UserInputError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
  """Yields (line number, parsed JSON or _BadRecord) for each non-blank line; streams the file.

  Lines are decoded as UTF-8 one at a time so that a non-UTF-8 byte names its own line.
  """
  path = check_input_file(path)
  with storage.open(path, "rb") as f:
    for lineno, raw in enumerate(f, start=1):
      if raw.strip():
        yield lineno, _parse_line(raw, lineno == 1)


def _parse_line(raw: bytes, first: bool) -> Any:
  """One JSONL line -> parsed JSON, or a _BadRecord describing why it is not JSON."""
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    return _BadRecord(f"not UTF-8 (byte {e.start}: {raw[e.start:e.start + 4]!r})")
  if first and text.startswith("\ufeff"):
    text = text[1:]
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    return _BadRecord(f"malformed JSON ({e.msg} at column {e.colno})")
  except RecursionError:
    return _BadRecord("JSON nested too deeply")


def _str_field(rec: dict, key: str, *, required: bool = True, nonempty: bool = False,
               max_chars: int = MAX_TEXT_CHARS) -> str:
  if key not in rec or rec[key] is None:
    if required:
      raise _BadRecord(f"missing field {key!r}")
    return ""
  value = rec[key]
  if not isinstance(value, str):
    raise _BadRecord(f"field {key!r} must be a string, got {type(value).__name__} {_short(value)}")
  if nonempty and not value.strip():
    raise _BadRecord(f"field {key!r} is empty")
  check_text(value, key, max_chars)
  return value


def check_text(value: str, key: str, max_chars: int = MAX_TEXT_CHARS) -> None:
  """Raises _BadRecord when a text field is longer than `max_chars` (a corrupted record, not a
  prompt) or holds a lone surrogate (a "\\ud800" JSON escape)."""
  if len(value) > max_chars:
    raise _BadRecord(f"field {key!r} is {len(value)} characters long (limit {max_chars})")
  m = _SURROGATE.search(value)
  if m:
    raise _BadRecord(f"field {key!r} contains a lone surrogate {m.group()!r} at position {m.start()} "
                     "(not valid Unicode)")


def _id_field(rec: dict, key: str) -> str:
  if key not in rec or rec[key] is None:
    raise _BadRecord(f"missing field {key!r}")
  problem = id_problem(rec[key])
  if problem:
    raise _BadRecord(f"field {key!r} {problem}")
  return rec[key]


def _short(value: Any, n: int = 60) -> str:
  s = repr(value)
  return s if len(s) <= n else s[:n] + "..."


def parse_track(rec: Any) -> Track:
  """Validates one catalog record (parsed JSON) and returns a Track; raises _BadRecord."""
  if isinstance(rec, _BadRecord):
    raise rec
  if not isinstance(rec, dict):
    raise _BadRecord(f"expected a JSON object, got {type(rec).__name__}")
  track_id = _id_field(rec, "track_id")
  artist = _str_field(rec, "artist")
  title = _str_field(rec, "title")
  album = _str_field(rec, "album", required=False)
  tags = rec.get("tags", [])
  if tags is None:
    tags = []
  if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
    raise _BadRecord(f"field 'tags' must be a list of strings, got {_short(tags)}")
  # Interned (as every playlist's track ids are, `parse_playlist`): a catalog and its playlists share
  # one string object per track, ~80 B a playlist row less at MPD's 66M rows.
  return Track(sys.intern(track_id), artist, title, album, tuple(tags))


def parse_playlist(rec: Any, known_track_ids: Collection[str] | None = None, *,
                   drop_unknown: bool = False, stats: ReadStats | None = None) -> Playlist:
  """Validates one playlist record (parsed JSON) and returns a Playlist; raises _BadRecord.

  A repeated track is kept once (first position) and counted in `stats`.  With `drop_unknown`, a
  track missing from `known_track_ids` is dropped and counted instead of failing the record.
  """
  if isinstance(rec, _BadRecord):
    raise rec
  if not isinstance(rec, dict):
    raise _BadRecord(f"expected a JSON object, got {type(rec).__name__}")
  playlist_id = _id_field(rec, "playlist_id")
  title = _str_field(rec, "title")
  description = _str_field(rec, "description", required=False)
  track_ids = rec.get("track_ids")
  if track_ids is None:
    raise _BadRecord(f"playlist {playlist_id!r}: missing field 'track_ids'")
  if not isinstance(track_ids, list):
    raise _BadRecord(f"playlist {playlist_id!r}: 'track_ids' must be a list, got {type(track_ids).__name__}")
  if not track_ids:
    raise _BadRecord(f"playlist {playlist_id!r} is empty (no track_ids)")
  kept, seen, dropped = [], set(), 0
  for i, t in enumerate(track_ids):
    problem = id_problem(t)
    if problem:
      raise _BadRecord(f"playlist {playlist_id!r}: track_ids[{i}] {problem}")
    if t in seen:
      if stats is not None:
        stats.duplicate_tracks_in_playlists += 1
      continue
    seen.add(t)
    if known_track_ids is not None and t not in known_track_ids:
      if not drop_unknown:
        raise _BadRecord(f"playlist {playlist_id!r}: unknown track {t!r} (track_ids[{i}] not in the catalog)")
      dropped += 1
      continue
    kept.append(sys.intern(t))  # one object per track id across playlists (see `parse_track`)
  if stats is not None:
    stats.unknown_tracks_dropped += dropped
  if not kept:
    raise _NoKnownTracks(f"playlist {playlist_id!r}: none of its {len(seen)} tracks is in the catalog")
  if not normalize_text(clean_text(title)) and not normalize_text(clean_text(description)):
    raise _EmptyPrompt(f"playlist {playlist_id!r} has no title or description (empty prompt)", playlist_id)
  intent = rec.get("intent")
  if intent is not None and not isinstance(intent, dict):
    raise _BadRecord(f"playlist {playlist_id!r}: 'intent' must be an object, got {type(intent).__name__}")
  return Playlist(playlist_id, title, description, tuple(kept), intent)


def read_catalog(path: str | os.PathLike, *, on_error: str = "raise",
                 stats: ReadStats | None = None) -> Iterator[Track]:
  """Streams tracks from a catalog JSONL file, validating each line and rejecting duplicate ids."""
  _check_on_error(on_error)
  stats = stats if stats is not None else ReadStats()
  seen: set[str] = set()
  for lineno, rec in iter_jsonl(path):
    try:
      track = parse_track(rec)
      if track.track_id in seen:
        raise _BadRecord(f"duplicate track_id {track.track_id!r}")
    except _BadRecord as e:
      msg = f"{where(path, lineno)}: {e}"
      if on_error == "raise":
        raise UserInputError(msg) from None
      stats.skip(msg)
      continue
    seen.add(track.track_id)
    stats.read += 1
    yield track


def read_playlists(path: str | os.PathLike, known_track_ids: Collection[str] | None = None, *,
                   on_error: str = "raise", stats: ReadStats | None = None,
                   skip_empty_prompts: bool = False) -> Iterator[Playlist]:
  """Streams playlists from a playlists JSONL file.

  Validates types and fields, rejects empty playlists, duplicate playlist ids and (when
  `known_track_ids` is given) tracks missing from the catalog; with on_error="skip" a missing
  track is dropped, and its playlist skipped only when no track is left.  A track repeated in a
  playlist is kept once and counted.  `skip_empty_prompts` (importers): a playlist without prompt
  text is skipped and counted in `stats.empty_prompt_playlists` instead of being an error.
  """
  _check_on_error(on_error)
  stats = stats if stats is not None else ReadStats()
  seen: set[str] = set()
  for lineno, rec in iter_jsonl(path):
    try:
      playlist = parse_playlist(rec, known_track_ids, drop_unknown=on_error == "skip", stats=stats)
      if playlist.playlist_id in seen:
        raise _BadRecord(f"duplicate playlist_id {playlist.playlist_id!r}")
    except _BadRecord as e:
      msg = f"{where(path, lineno)}: {e}"
      if isinstance(e, _EmptyPrompt) and skip_empty_prompts:
        stats.empty_prompt_playlists += 1
        stats.empty_prompt_ids.add(e.playlist_id)
        stats.note(msg)
        continue
      if on_error == "raise":
        raise UserInputError(msg) from None
      if isinstance(e, _NoKnownTracks):
        stats.playlists_without_known_tracks += 1
      stats.skip(msg)
      continue
    seen.add(playlist.playlist_id)
    stats.read += 1
    yield playlist


def _write_jsonl(path, records: Iterable[Any]) -> int:
  n = 0
  with io_utils.atomic_write(path) as f:
    for rec in records:
      f.write(json.dumps(rec.to_json() if hasattr(rec, "to_json") else rec, ensure_ascii=False))
      f.write("\n")
      n += 1
  return n


def write_catalog(path: str | os.PathLike, tracks: Iterable[Track]) -> int:
  """Writes tracks (streamed) to catalog JSONL atomically; returns the count."""
  return _write_jsonl(path, tracks)


def _checked(playlists: Iterable[Playlist]) -> Iterator[Playlist]:
  """The playlists, their text checked as `read_playlists` will check it: a value it would refuse
  (e.g. a prompt an importer built from a 5 MB conversation) is named here by its playlist id, not
  later by a line of the temporary file being written."""
  for p in playlists:
    if isinstance(p, Playlist):
      try:
        check_text(p.title, "title")
        check_text(p.description or "", "description")
      except _BadRecord as e:
        raise UserInputError(f"playlist {p.playlist_id!r}: {e}") from None
    yield p


def write_playlists(path: str | os.PathLike, playlists: Iterable[Playlist]) -> int:
  """Writes playlists (streamed) to playlists JSONL atomically; returns the count."""
  return _write_jsonl(path, _checked(playlists))


def write_splits(path: str | os.PathLike, splits: dict[str, list[str]]) -> None:
  """Writes splits.json atomically (keys: train, validation, test)."""
  unknown = set(splits) - set(SPLITS)
  if unknown:
    raise UserInputError(f"unknown split names {sorted(unknown)}; expected {SPLITS}")
  io_utils.write_json(path, {k: list(splits.get(k, [])) for k in SPLITS}, indent=None)


def make_splits(playlist_ids: Iterable[str], *, seed: int, validation_fraction: float = 0.05,
                test_fraction: float = 0.05, validation_size: int | None = None,
                test_size: int | None = None) -> dict[str, list[str]]:
  """Splits playlists (not tracks) into train/validation/test, deterministically from `seed`.

  The result depends only on the set of ids and the seed (ids are sorted before the permutation).
  Sizes come from the fractions (non-zero fractions get at least one playlist each when there are
  at least three playlists) unless `validation_size` / `test_size` give them as counts.
  """
  if not (0 <= validation_fraction < 1 and 0 <= test_fraction < 1
          and validation_fraction + test_fraction < 1):
    raise UserInputError(
        f"bad split fractions: validation={validation_fraction}, test={test_fraction} "
        "(each in [0, 1), sum < 1)")
  ids = sorted(set(playlist_ids))
  n = len(ids)
  perm = np.random.default_rng(seed).permutation(n)
  n_val = int(round(validation_fraction * n))
  n_test = int(round(test_fraction * n))
  if n >= 3:
    n_val = max(n_val, 1 if validation_fraction > 0 else 0)
    n_test = max(n_test, 1 if test_fraction > 0 else 0)
  for name, size in (("validation_size", validation_size), ("test_size", test_size)):
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
      raise UserInputError(f"{name} must be a non-negative integer, got {size!r}")
  n_val = n_val if validation_size is None else validation_size
  n_test = n_test if test_size is None else test_size
  if n_val + n_test >= n and (validation_size is not None or test_size is not None):
    raise UserInputError(f"validation_size {n_val} + test_size {n_test} leave no training playlist "
                         f"(the dataset has {n})")
  shuffled = [ids[i] for i in perm]
  return {"train": sorted(shuffled[n_val + n_test:]),
          "validation": sorted(shuffled[:n_val]),
          "test": sorted(shuffled[n_val:n_val + n_test])}


def read_json_file(path: str | os.PathLike, what: str = "JSON file") -> Any:
  """Parses a whole JSON file; any problem (missing, folder, not UTF-8, malformed) -> UserInputError."""
  path = check_input_file(path, what)
  try:
    with storage.open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise UserInputError(f"{where(path, e.lineno)}: malformed JSON ({e.msg})") from None
  except UnicodeDecodeError:
    raise UserInputError(f"{path}: not UTF-8") from None
  except RecursionError:
    raise UserInputError(f"{path}: JSON nested too deeply") from None


def dataset_prompt_max_chars(dataset_dir: str | os.PathLike) -> int:
  """The prompt length limit a dataset dir asks for (meta.json `prompt_max_chars`, e.g. CPCD's
  2048), else `prompts.DEFAULT_MAX_CHARS`: where tasks and baselines cut held-out prompts."""
  try:
    with storage.open(storage.join(dataset_dir, META_FILE)) as f:
      value = json.load(f).get("prompt_max_chars")
  except (OSError, ValueError, AttributeError):
    value = None
  return int(value) if isinstance(value, int) and value > 0 else DEFAULT_MAX_CHARS


def read_splits(path: str | os.PathLike) -> dict[str, list[str]]:
  """Reads and validates splits.json: known split names, lists of ids, no id in two splits."""
  path = os.fspath(path)
  obj = read_json_file(path, "splits file")
  if not isinstance(obj, dict):
    raise UserInputError(f"{path}: expected an object with keys {SPLITS}")
  unknown = set(obj) - set(SPLITS)
  if unknown:
    raise UserInputError(f"{path}: unknown split names {sorted(unknown)}; expected {SPLITS}")
  owner: dict[str, str] = {}
  out = {}
  for split in SPLITS:
    ids = obj.get(split, [])
    if not isinstance(ids, list):
      raise UserInputError(f"{path}: split {split!r} must be a list of playlist id strings")
    for k, i in enumerate(ids):
      problem = id_problem(i)
      if problem:
        raise UserInputError(f"{path}: split {split!r}[{k}] {problem}")
      if i in owner:
        raise UserInputError(f"{path}: playlist {i!r} is in both {owner[i]!r} and {split!r}")
      owner[i] = split
    out[split] = ids
  return out


def read_folds(path: str | os.PathLike) -> dict[str, Any]:
  """Reads folds.json ({"num_folds", "seed", "folds": [[playlist ids], ...]}); folds are disjoint."""
  path = os.fspath(path)
  obj = read_json_file(path, "folds file")
  folds = obj.get("folds") if isinstance(obj, dict) else None
  if not isinstance(folds, list) or not folds or not all(isinstance(f, list) for f in folds):
    raise UserInputError(f"{path}: expected {{\"num_folds\", \"seed\", \"folds\": [[ids], ...]}}")
  owner: dict[str, int] = {}
  for k, fold in enumerate(folds):
    for i in fold:
      problem = id_problem(i)
      if problem:
        raise UserInputError(f"{path}: folds[{k}]: playlist id {problem}")
      if i in owner:
        raise UserInputError(f"{path}: playlist {i!r} is in folds {owner[i]} and {k}")
      owner[i] = k
  return {"num_folds": len(folds), "seed": obj.get("seed", 0), "folds": folds}


def make_folds(playlist_ids: Iterable[str], *, num_folds: int, seed: int) -> dict[str, Any]:
  """Seeded k-fold partition of playlists (sizes differ by at most one); the folds.json object."""
  ids = sorted(set(playlist_ids))
  if isinstance(num_folds, bool) or not isinstance(num_folds, int) or not 2 <= num_folds <= len(ids):
    raise UserInputError(f"num_folds must be an integer in [2, {len(ids)}] (the playlists), got {num_folds!r}")
  perm = np.random.default_rng(seed).permutation(len(ids))
  folds = [sorted(ids[i] for i in perm[k::num_folds]) for k in range(num_folds)]
  return {"num_folds": num_folds, "seed": seed, "folds": folds}


def validation_subset(ids: Iterable[str], *, fraction: float, minimum: int, seed: int) -> list[str]:
  """A seeded subset of `ids`: round(fraction * n) of them, at least `minimum` (and at most n - 1)."""
  ids = sorted(set(ids))
  if not 0 <= fraction < 1:
    raise UserInputError(f"validation_fraction must be in [0, 1), got {fraction}")
  n = min(max(int(round(fraction * len(ids))), minimum if fraction > 0 else 0), max(len(ids) - 1, 0))
  perm = np.random.default_rng(seed).permutation(len(ids))
  return sorted(ids[i] for i in perm[:n])


def fold_splits(dataset_dir_or_folds: str | os.PathLike | dict, fold: int, *,
                validation_fraction: float = 0.1, min_validation: int = 20,
                seed: int | None = None) -> dict[str, list[str]]:
  """The splits of fold `fold`: test = that fold; validation = a seeded subset of the other folds
  (`validation_subset`, seed defaults to the folds' seed); train = the rest.

  `dataset_dir_or_folds`: a dataset dir holding folds.json, a folds.json path, or its parsed object.
  """
  if isinstance(dataset_dir_or_folds, dict):
    obj = dataset_dir_or_folds
  else:
    path = os.fspath(dataset_dir_or_folds)
    obj = read_folds(os.path.join(path, FOLDS_FILE) if os.path.isdir(path) else path)
  folds = obj["folds"]
  if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < len(folds):
    raise UserInputError(f"fold must be an integer in [0, {len(folds)}), got {fold!r}")
  seed = obj.get("seed", 0) if seed is None else seed
  rest = [i for k, f in enumerate(folds) if k != fold for i in f]
  validation = validation_subset(rest, fraction=validation_fraction, minimum=min_validation, seed=seed)
  held = set(validation)
  return {"train": sorted(i for i in rest if i not in held), "validation": validation,
          "test": sorted(folds[fold])}


class Dataset:
  """A dataset dir: the catalog in memory (one Track per row), playlists streamed from disk.

  `Dataset.load(dir)` validates the whole dir in one streaming pass: catalog records, playlist
  records against the catalog, and the split file against the playlist ids.
  """

  def __init__(self, directory: str, tracks: list[Track], splits: dict[str, list[str]], meta: dict,
               on_error: str = "raise", catalog_stats: ReadStats | None = None,
               playlist_stats: ReadStats | None = None):
    self.directory = directory
    self.tracks = tracks
    self.track_row = {t.track_id: i for i, t in enumerate(tracks)}
    self.splits = splits
    self.meta = meta
    self.on_error = on_error
    self.catalog_stats = catalog_stats or ReadStats(read=len(tracks))
    self.playlist_stats = playlist_stats or ReadStats()
    self._split_sets = {k: frozenset(v) for k, v in splits.items()}
    self._index: dict[str, tuple[np.ndarray, np.ndarray]] = {}

  @property
  def name(self) -> str:
    if storage.is_remote(self.directory):
      return storage.basename(self.directory)
    return os.path.basename(os.path.normpath(self.directory))

  @property
  def catalog_path(self) -> str:
    return storage.join(self.directory, CATALOG_FILE)

  @property
  def playlists_path(self) -> str:
    return storage.join(self.directory, PLAYLISTS_FILE)

  @classmethod
  def load(cls, directory: str | os.PathLike, *, on_error: str = "raise", validate: bool = True) -> "Dataset":
    directory = os.fspath(directory)
    _check_on_error(on_error)
    if not storage.isdir(directory):
      raise UserInputError(f"{directory}: dataset dir does not exist")
    for name in (CATALOG_FILE, PLAYLISTS_FILE, SPLITS_FILE):
      if not storage.exists(storage.join(directory, name)):
        raise UserInputError(f"dataset dir {directory}: missing {name}")
    cat_stats = ReadStats()
    tracks = list(read_catalog(storage.join(directory, CATALOG_FILE), on_error=on_error, stats=cat_stats))
    if not tracks:
      raise UserInputError(f"{storage.join(directory, CATALOG_FILE)}: the catalog is empty (no valid tracks)")
    splits = read_splits(storage.join(directory, SPLITS_FILE))
    meta = {}
    meta_path = storage.join(directory, META_FILE)
    if storage.exists(meta_path):
      meta = read_json_file(meta_path, "meta file")
    ds = cls(directory, tracks, splits, meta, on_error, cat_stats)
    if validate:
      ds._validate_playlists()
    return ds

  def _validate_playlists(self) -> None:
    stats = ReadStats()
    ids = set()
    for p in read_playlists(self.playlists_path, self.track_row, on_error=self.on_error, stats=stats):
      ids.add(p.playlist_id)
    self.playlist_stats = stats
    if not ids:
      raise UserInputError(f"{self.playlists_path}: no valid playlists")
    for split, split_ids in self.splits.items():
      missing = [i for i in split_ids if i not in ids]
      if missing and self.on_error == "raise":
        raise UserInputError(
            f"{os.path.join(self.directory, SPLITS_FILE)}: split {split!r} names {len(missing)} playlist(s) "
            f"not in {PLAYLISTS_FILE}, e.g. {missing[0]!r}")
      if missing:
        self.splits[split] = [i for i in split_ids if i in ids]
        self._split_sets[split] = frozenset(self.splits[split])

  def split_ids(self, split: str) -> list[str]:
    if split not in SPLITS:
      raise UserInputError(f"unknown split {split!r}; expected one of {SPLITS}")
    return list(self.splits.get(split, []))

  def playlists(self, split: str | None = None, *, shuffle_seed: int | None = None) -> Iterator[Playlist]:
    """Streams playlists, only those of `split` when given.

    File order by default.  With `shuffle_seed`, a permutation of the split's playlists drawn from
    the seed, read by seeking to each record (an index of line offsets: 12 bytes a playlist, built
    once per split), so training sees playlists in a global random order without loading them.
    """
    keep = None
    if split is not None:
      if split not in SPLITS:
        raise UserInputError(f"unknown split {split!r}; expected one of {SPLITS}")
      keep = self._split_sets.get(split, frozenset())
    if shuffle_seed is not None:
      yield from self._shuffled_playlists(split, keep, shuffle_seed)
      return
    for p in read_playlists(self.playlists_path, self.track_row, on_error=self.on_error):
      if keep is None or p.playlist_id in keep:
        yield p

  def _line_index(self, split: str | None, keep) -> tuple[np.ndarray, np.ndarray]:
    """(byte offsets int64, line numbers int32) of the valid playlists of `split`, in file order."""
    key = split or "*"
    if key not in self._index:
      offsets, lines = [], []
      offset = 0
      seen = set()
      with storage.open(self.playlists_path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
          start, offset = offset, offset + len(raw)
          if not raw.strip():
            continue
          rec = _parse_line(raw, lineno == 1)
          try:
            pid = parse_playlist(rec, self.track_row, drop_unknown=self.on_error == "skip").playlist_id
            if pid in seen:
              raise _BadRecord(f"duplicate playlist_id {pid!r}")
          except _BadRecord as e:
            if self.on_error == "raise":
              raise UserInputError(f"{where(self.playlists_path, lineno)}: {e}") from None
            continue
          seen.add(pid)
          if keep is None or pid in keep:
            offsets.append(start)
            lines.append(lineno)
      self._index[key] = (np.asarray(offsets, np.int64), np.asarray(lines, np.int32))
    return self._index[key]

  def _shuffled_playlists(self, split, keep, seed: int) -> Iterator[Playlist]:
    offsets, lines = self._line_index(split, keep)
    order = np.random.default_rng(seed).permutation(offsets.size)
    with storage.open(self.playlists_path, "rb") as f:
      for i in order:
        f.seek(int(offsets[i]))
        raw = f.readline()
        try:
          yield parse_playlist(_parse_line(raw, int(lines[i]) == 1), self.track_row,
                               drop_unknown=self.on_error == "skip")
        except _BadRecord as e:  # The file changed since the index was built.
          raise UserInputError(f"{where(self.playlists_path, int(lines[i]))}: {e}") from None


def write_dataset(directory: str | os.PathLike, tracks: Iterable[Track], playlists: Iterable[Playlist],
                  splits: dict[str, list[str]], meta: dict | None = None, *,
                  overwrite: bool = False) -> None:
  """Writes a whole dataset dir atomically (the dir appears only when every file is complete)."""
  with io_utils.atomic_dir(directory, kind="dataset", overwrite=overwrite) as tmp:
    write_catalog(os.path.join(tmp, CATALOG_FILE), tracks)
    write_playlists(os.path.join(tmp, PLAYLISTS_FILE), playlists)
    write_splits(os.path.join(tmp, SPLITS_FILE), splits)
    io_utils.write_json(os.path.join(tmp, META_FILE), meta or {})
