"""Catalogs as CSV or Parquet, and importing user files into a validated dataset dir.

Catalog tables have columns track_id, artist, title, album (optional), tags (optional):
  CSV (.csv, .tsv): a header row; tags separated by "|" ("rock|70s").  UTF-8, with or without a
  byte-order mark (Excel writes one).  Errors name file:line.
  Parquet (.parquet, .pq): string columns; tags a list<string> or a "|"-separated string.  Read in
  record batches (streaming); errors name file and row number (0-based).
`read_any_catalog(path)` dispatches on the extension (.jsonl/.json -> formats.read_catalog).

`import_dataset(catalog, playlists, out_dir)` validates a catalog (any format) and a playlists JSONL
against it and writes a dataset dir atomically, complete for training (`finish.finish_dataset`:
splits from a splits.json or drawn, the SentencePiece vocabulary, meta.json).  With
`on_error="skip"` bad records are skipped and counted in meta.json["read_stats"]; a track listed
twice in a playlist, and playlists with no prompt text, are counted there in either mode.
"""

from __future__ import annotations

import csv
import os
from typing import Any, Iterator

from t2t_jax import console, io_utils
from t2t_jax.data import finish, formats, prompts
from t2t_jax.errors import UserInputError, where

CSV_EXTS = (".csv", ".tsv")
PARQUET_EXTS = (".parquet", ".pq")
JSONL_EXTS = (".jsonl", ".json")
FORMATS = {"jsonl": JSONL_EXTS, "csv": CSV_EXTS, "parquet": PARQUET_EXTS}
REQUIRED_COLUMNS = ("track_id", "artist", "title")
TAG_SEPARATOR = "|"


def _row_to_track(row: dict, tags: Any) -> formats.Track:
  if isinstance(tags, str):
    tags = [t for t in tags.split(TAG_SEPARATOR) if t.strip()]
  elif tags is None:
    tags = []
  else:
    tags = list(tags)
  rec = {k: row.get(k) for k in ("track_id", "artist", "title", "album")}
  rec["tags"] = tags
  return formats.parse_track(rec)


def _emit(path, place, make, seen, on_error, stats):
  try:
    track = make()
    if track.track_id in seen:
      raise formats._BadRecord(f"duplicate track_id {track.track_id!r}")
  except formats._BadRecord as e:
    msg = f"{place}: {e}"
    if on_error == "raise":
      raise UserInputError(msg) from None
    stats.skip(msg)
    return None
  seen.add(track.track_id)
  stats.read += 1
  return track


def _decoded_lines(path: str, f) -> Iterator[str]:
  """Lines of a binary file decoded as UTF-8 one at a time (a bad byte names its line); BOM dropped."""
  for lineno, raw in enumerate(f, start=1):
    try:
      line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
      raise UserInputError(f"{where(path, lineno)}: not UTF-8 (byte {e.start}: {raw[e.start:e.start + 4]!r})") from None
    if lineno == 1 and line.startswith("\ufeff"):
      line = line[1:]
    yield line


def read_catalog_csv(path: str | os.PathLike, *, on_error: str = "raise",
                     stats: formats.ReadStats | None = None) -> Iterator[formats.Track]:
  path = formats.check_input_file(path, "catalog file")
  stats = stats if stats is not None else formats.ReadStats()
  delimiter = "\t" if path.endswith(".tsv") else ","
  seen: set[str] = set()
  with open(path, "rb") as f:
    reader = csv.DictReader(_decoded_lines(path, f), delimiter=delimiter, strict=True)
    try:
      missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
      if missing:
        raise UserInputError(f"{where(path, 1)}: missing column(s) {missing} (header: {reader.fieldnames})")
      for row in reader:
        problem = None
        if None in row:
          problem = f"{len(row[None])} more field(s) than the header"
        elif any(row.get(c) is None for c in REQUIRED_COLUMNS):
          problem = "fewer fields than the header"
        if problem:
          msg = f"{where(path, reader.line_num)}: {problem}"
          if on_error == "raise":
            raise UserInputError(msg)
          stats.skip(msg)
          continue
        track = _emit(path, where(path, reader.line_num), lambda: _row_to_track(row, row.get("tags")),
                      seen, on_error, stats)
        if track is not None:
          yield track
    except csv.Error as e:
      raise UserInputError(f"{where(path, reader.line_num)}: malformed CSV ({e})") from None


def read_catalog_parquet(path: str | os.PathLike, *, on_error: str = "raise",
                         stats: formats.ReadStats | None = None,
                         batch_size: int = 65_536) -> Iterator[formats.Track]:
  import pyarrow as pa  # Lazy: only Parquet catalogs need pyarrow.
  import pyarrow.parquet as pq

  path = formats.check_input_file(path, "catalog file")
  stats = stats if stats is not None else formats.ReadStats()
  try:
    pf = pq.ParquetFile(path)
  except (pa.ArrowInvalid, OSError) as e:
    raise UserInputError(f"{path}: not a Parquet file ({e})") from None
  names = pf.schema_arrow.names
  missing = [c for c in REQUIRED_COLUMNS if c not in names]
  if missing:
    raise UserInputError(f"{path}: missing column(s) {missing} (columns: {names})")
  columns = [c for c in ("track_id", "artist", "title", "album", "tags") if c in names]
  seen: set[str] = set()
  row_index = 0
  for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
    for row in batch.to_pylist():
      place = f"{path}: row {row_index}"
      row_index += 1
      track = _emit(path, place, lambda: _row_to_track(row, row.get("tags")), seen, on_error, stats)
      if track is not None:
        yield track


def read_any_catalog(path: str | os.PathLike, *, on_error: str = "raise",
                     stats: formats.ReadStats | None = None, fmt: str | None = None) -> Iterator[formats.Track]:
  """Reads a catalog in JSONL, CSV/TSV or Parquet: `fmt` ("jsonl", "csv", "parquet") or the extension."""
  path = os.fspath(path)
  if on_error not in formats.ON_ERROR:
    raise UserInputError(f"on_error must be one of {formats.ON_ERROR}, got {on_error!r}")
  formats.check_input_file(path, "catalog file")
  ext = os.path.splitext(path)[1].lower()
  if fmt is not None:
    if fmt not in FORMATS:
      raise UserInputError(f"unknown catalog format {fmt!r}; expected one of {sorted(FORMATS)}")
    ext = FORMATS[fmt][0]
  if ext in JSONL_EXTS:
    return formats.read_catalog(path, on_error=on_error, stats=stats)
  if ext in CSV_EXTS:
    return read_catalog_csv(path, on_error=on_error, stats=stats)
  if ext in PARQUET_EXTS:
    return read_catalog_parquet(path, on_error=on_error, stats=stats)
  raise UserInputError(f"{path}: unknown catalog format {ext!r} (use .jsonl, .csv, .tsv or .parquet)")


def write_catalog_parquet(path: str | os.PathLike, tracks) -> int:
  """Writes tracks to Parquet atomically (tags as list<string>); returns the count."""
  import pyarrow as pa
  import pyarrow.parquet as pq

  tracks = list(tracks)
  table = pa.table({
      "track_id": [t.track_id for t in tracks], "artist": [t.artist for t in tracks],
      "title": [t.title for t in tracks], "album": [t.album for t in tracks],
      "tags": pa.array([list(t.tags) for t in tracks], type=pa.list_(pa.string())),
  })
  with io_utils.atomic_write(path, "wb", encoding=None) as f:
    pq.write_table(table, f)
  return len(tracks)


def write_catalog_csv(path: str | os.PathLike, tracks) -> int:
  """Writes tracks to CSV atomically (tags joined with "|"); returns the count."""
  n = 0
  with io_utils.atomic_write(path) as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(["track_id", "artist", "title", "album", "tags"])
    for t in tracks:
      w.writerow([t.track_id, t.artist, t.title, t.album, TAG_SEPARATOR.join(t.tags)])
      n += 1
  return n


def import_dataset(catalog_path: str | os.PathLike, playlists_path: str | os.PathLike,
                   out_dir: str | os.PathLike, *, splits_path: str | os.PathLike | None = None,
                   seed: int = 0, validation_fraction: float | None = None,
                   test_fraction: float | None = None, validation_size: int | None = None,
                   test_size: int | None = None, on_error: str = "raise", catalog_format: str | None = None,
                   vocab_size: int | None = finish.DEFAULT_VOCAB_SIZE, spm_path: str | os.PathLike | None = None,
                   prompt_max_chars: int = prompts.DEFAULT_MAX_CHARS, overwrite: bool = False) -> dict[str, Any]:
  """Validates user files and writes a dataset dir atomically; returns meta (with read stats).

  Split sizes: `finish.draw_splits` (default max(10%, 50) each) unless fractions/sizes or a
  `splits_path` are given.  `vocab_size=None` and no `spm_path`: no vocabulary is written.
  """
  cat_stats, pl_stats = formats.ReadStats(), formats.ReadStats()
  known: set[str] = set()
  pids: list[str] = []
  inputs = (catalog_path, playlists_path, splits_path, spm_path)
  with io_utils.atomic_dir(out_dir, kind="dataset", inputs=inputs, overwrite=overwrite) as tmp:

    def tracks():
      read = read_any_catalog(catalog_path, on_error=on_error, stats=cat_stats, fmt=catalog_format)
      for t in console.progress(read, "catalog", unit="tracks"):
        known.add(t.track_id)
        yield t

    formats.write_catalog(os.path.join(tmp, formats.CATALOG_FILE), tracks())
    if not known:
      raise UserInputError(f"{catalog_path}: the catalog is empty (no valid tracks; {cat_stats.skipped} skipped)")

    def playlists():
      read = formats.read_playlists(playlists_path, known, on_error=on_error, stats=pl_stats,
                                    skip_empty_prompts=True)
      for p in console.progress(read, "playlists", unit="playlists"):
        pids.append(p.playlist_id)
        yield p

    formats.write_playlists(os.path.join(tmp, formats.PLAYLISTS_FILE), playlists())
    if not pids:
      raise UserInputError(f"{playlists_path}: no valid playlists ({pl_stats.skipped} skipped, "
                           f"{pl_stats.empty_prompt_playlists} with an empty prompt)")
    splits = None
    if splits_path is not None:
      splits = _user_splits(splits_path, set(pids), on_error, ignore=pl_stats.empty_prompt_ids)
    meta = {"source": "import", "catalog": os.path.abspath(os.fspath(catalog_path)),
            "playlists": os.path.abspath(os.fspath(playlists_path)),
            "read_stats": {"catalog": cat_stats.as_dict(), "playlists": pl_stats.as_dict()}}
    if splits_path is not None:
      meta["split_rule"] = f"from {os.path.abspath(os.fspath(splits_path))}"
    spec = finish.SplitSpec(seed=seed, validation_fraction=validation_fraction, test_fraction=test_fraction,
                            validation_size=validation_size, test_size=test_size)
    return finish.finish_dataset(tmp, meta=meta, splits=splits, split_spec=spec, vocab_size=vocab_size,
                                 spm_path=spm_path, prompt_max_chars=prompt_max_chars)


def _user_splits(splits_path, valid: set[str], on_error: str, ignore: set[str]) -> dict[str, list[str]]:
  """The user's splits restricted to the playlists written (those skipped for an empty prompt are
  dropped quietly: they were counted already)."""
  splits = formats.read_splits(splits_path)
  for split, ids in splits.items():
    missing = [i for i in ids if i not in valid and i not in ignore]
    if missing and on_error == "raise":
      raise UserInputError(f"{splits_path}: split {split!r} names unknown playlist {missing[0]!r} "
                           f"({len(missing)} unknown)")
    splits[split] = [i for i in ids if i in valid]
  return splits
