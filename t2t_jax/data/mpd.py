"""Spotify Million Playlist Dataset (MPD) slices -> a dataset dir.

The public MPD schema: files `mpd.slice.<a>-<b>.json`, each
  {"info": {...}, "playlists": [{"name", "description" (optional), "pid", "num_tracks", ...,
    "tracks": [{"pos", "artist_name", "track_uri", "artist_uri", "track_name", "album_uri",
                "duration_ms", "album_name"}]}]}
`read_mpd(path)` takes one slice or a folder of slices (read in slice order, one file in memory at a
time: a slice is ~30 MB, so json.load per file is fine) and yields (Playlist, [Track]) pairs:
playlist_id = str(pid), title = name, description = description or "", track_ids = track URIs in
`pos` order.  A track repeated inside a playlist (MPD has them) keeps its first position and is
counted in `MpdStats.duplicate_tracks_in_playlists`; a playlist with no prompt text (blank or
`<MISSING>` name and description) is skipped and counted in `empty_prompt_playlists`.  A malformed
playlist (missing/wrong-typed field, no tracks, duplicate pid, a pid or track_uri breaking the id
rule of `formats.id_problem`) raises UserInputError naming file, playlist index and pid, or with
`on_error="skip"` is skipped and counted.  A file that is not JSON names file:line.

`convert_mpd(path, out_dir)` writes catalog.jsonl (tracks in first-seen order, the catalog is the
only thing held in memory: one (artist, title, album) tuple per distinct track), playlists.jsonl
(streamed), then `finish.finish_dataset` adds splits.json, the vocabulary and meta.json (with the
read/skip counts); the dir appears atomically.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Iterator

from t2t_jax import console, io_utils
from t2t_jax.data import finish, formats
from t2t_jax.data.prompts import DEFAULT_MAX_CHARS, clean_text, normalize_text
from t2t_jax.errors import UserInputError, where

SLICE_RE = re.compile(r"^mpd\.slice\.(\d+)-(\d+)\.json$")
TRACK_FIELDS = ("track_uri", "track_name", "artist_name", "album_name")


@dataclasses.dataclass
class MpdStats(formats.ReadStats):
  """`formats.ReadStats` of an MPD read (read / skipped count playlists), plus slice files, track
  rows, duplicate rows dropped and distinct tracks."""
  files: int = 0
  rows_read: int = 0
  tracks: int = 0

  @property
  def playlists_read(self) -> int:
    return self.read

  @playlists_read.setter
  def playlists_read(self, value: int) -> None:
    self.read = value

  @property
  def playlists_skipped(self) -> int:
    return self.skipped

  def as_dict(self) -> dict[str, Any]:
    return {"files": self.files, "playlists_read": self.read, "playlists_skipped": self.skipped,
            "rows_read": self.rows_read,
            "duplicate_tracks_in_playlists": self.duplicate_tracks_in_playlists,
            "empty_prompt_playlists": self.empty_prompt_playlists, "tracks": self.tracks,
            "messages": list(self.messages), "max_messages": self.max_messages}


def slice_files(path: str | os.PathLike) -> list[str]:
  """The slice files of `path` (a file, or a folder of mpd.slice.*.json), in slice order."""
  path = os.fspath(path)
  if not os.path.isdir(path):
    return [formats.check_input_file(path, "MPD slice file or folder")]
  found = []
  for name in os.listdir(path):
    m = SLICE_RE.match(name)
    if m:
      found.append((int(m.group(1)), name))
  if not found:
    raise UserInputError(f"{path}: no files named mpd.slice.<a>-<b>.json")
  return [os.path.join(path, name) for _, name in sorted(found)]


def _load_slice(path: str) -> list:
  formats.check_input_file(path, "MPD slice file")
  try:
    with open(path, "rb") as f:
      data = f.read()
    obj = json.loads(data.decode("utf-8"))
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b"\n") + 1
    raise UserInputError(f"{where(path, line)}: not UTF-8 (byte offset {e.start})") from None
  except json.JSONDecodeError as e:
    raise UserInputError(f"{where(path, e.lineno)}: malformed JSON ({e.msg} at column {e.colno})") from None
  except RecursionError:
    raise UserInputError(f"{path}: JSON nested too deeply") from None
  if not isinstance(obj, dict) or not isinstance(obj.get("playlists"), list):
    raise UserInputError(f"{path}: not an MPD slice (expected an object with a 'playlists' list)")
  return obj["playlists"]


_Bad = formats._BadRecord  # pylint: disable=protected-access


class _EmptyPrompt(_Bad):
  pass


def _text(rec: dict, key: str, what: str, required: bool = True) -> str:
  v = rec.get(key)
  if v is None:
    if required:
      raise _Bad(f"{what}: missing field {key!r}")
    return ""
  if not isinstance(v, str):
    raise _Bad(f"{what}: field {key!r} must be a string, got {type(v).__name__}")
  if len(v) > formats.MAX_TEXT_CHARS:
    raise _Bad(f"{what}: field {key!r} is {len(v)} characters long (limit {formats.MAX_TEXT_CHARS})")
  try:
    formats.check_text(v, key)
  except _Bad as e:
    raise _Bad(f"{what}: {e}") from None
  return v


def parse_mpd_playlist(rec: Any, stats: MpdStats) -> tuple[formats.Playlist, list[formats.Track]]:
  """One MPD playlist object -> (Playlist, its Tracks); raises _Bad with a message."""
  if not isinstance(rec, dict):
    raise _Bad(f"expected a playlist object, got {type(rec).__name__}")
  pid = rec.get("pid")
  if isinstance(pid, bool) or not isinstance(pid, (int, str)) or (isinstance(pid, str) and formats.id_problem(pid)):
    problem = formats.id_problem(pid) if isinstance(pid, str) else None
    raise _Bad(f"missing or bad 'pid' ({pid!r}{': ' + problem if problem else ''})")
  what = f"pid {pid}"
  name = _text(rec, "name", what)
  description = _text(rec, "description", what, required=False)
  tracks = rec.get("tracks")
  if not isinstance(tracks, list):
    raise _Bad(f"{what}: 'tracks' must be a list, got {type(tracks).__name__}")
  if not tracks:
    raise _Bad(f"{what}: empty playlist (no tracks)")
  rows = []
  for i, t in enumerate(tracks):
    if not isinstance(t, dict):
      raise _Bad(f"{what}: tracks[{i}] must be an object")
    tw = f"{what} tracks[{i}]"
    uri = _text(t, "track_uri", tw)
    problem = formats.id_problem(uri)
    if problem:
      raise _Bad(f"{tw}: track_uri {problem}")
    pos = t.get("pos", i)
    if isinstance(pos, bool) or not isinstance(pos, int):
      raise _Bad(f"{tw}: 'pos' must be an integer, got {pos!r}")
    rows.append((pos, i, formats.Track(uri, _text(t, "artist_name", tw), _text(t, "track_name", tw),
                                       _text(t, "album_name", tw, required=False))))
  if not normalize_text(clean_text(name)) and not normalize_text(clean_text(description)):
    raise _EmptyPrompt(f"{what} has no title or description (empty prompt)")
  rows.sort(key=lambda r: (r[0], r[1]))
  seen, ids, out_tracks = set(), [], []
  for _, _, track in rows:
    stats.rows_read += 1
    if track.track_id in seen:
      stats.duplicate_tracks_in_playlists += 1
      continue
    seen.add(track.track_id)
    ids.append(track.track_id)
    out_tracks.append(track)
  return formats.Playlist(str(pid), name, description, tuple(ids)), out_tracks


def read_mpd(path: str | os.PathLike, *, on_error: str = "raise",
             stats: MpdStats | None = None) -> Iterator[tuple[formats.Playlist, list[formats.Track]]]:
  """Streams (Playlist, Tracks) from MPD slices; see the module docstring for validation."""
  if on_error not in formats.ON_ERROR:
    raise UserInputError(f"on_error must be one of {formats.ON_ERROR}, got {on_error!r}")
  stats = stats if stats is not None else MpdStats()
  seen_pids: set[str] = set()
  files = slice_files(path)
  for file in console.progress(files, "MPD slices", total=len(files), unit="files"):
    playlists = _load_slice(file)
    stats.files += 1
    for index, rec in enumerate(playlists):
      try:
        playlist, tracks = parse_mpd_playlist(rec, stats)
        if playlist.playlist_id in seen_pids:
          raise _Bad(f"pid {playlist.playlist_id}: duplicate pid")
      except _Bad as e:
        msg = f"{file}: playlists[{index}]: {e}"
        if isinstance(e, _EmptyPrompt):
          stats.empty_prompt_playlists += 1
          if len(stats.messages) < stats.max_messages:
            stats.messages.append(msg)
          continue
        if on_error == "raise":
          raise UserInputError(msg) from None
        stats.skip(msg)
        continue
      seen_pids.add(playlist.playlist_id)
      stats.playlists_read += 1
      yield playlist, tracks
    del playlists


def convert_mpd(path: str | os.PathLike, out_dir: str | os.PathLike, *, seed: int = 0,
                validation_fraction: float | None = None, test_fraction: float | None = None,
                validation_size: int | None = None, test_size: int | None = None,
                on_error: str = "raise", vocab_size: int | None = finish.DEFAULT_VOCAB_SIZE,
                spm_path: str | os.PathLike | None = None, prompt_max_chars: int = DEFAULT_MAX_CHARS,
                overwrite: bool = False) -> dict[str, Any]:
  """MPD slice(s) -> dataset dir (atomic).  Returns meta (source, counts, skip messages)."""
  stats = MpdStats()
  catalog: dict[str, tuple[str, str, str]] = {}
  pids: list[str] = []

  def playlists():
    for playlist, tracks in read_mpd(path, on_error=on_error, stats=stats):
      for t in tracks:
        if t.track_id not in catalog:
          catalog[t.track_id] = (t.artist, t.title, t.album)
      pids.append(playlist.playlist_id)
      yield playlist

  with io_utils.atomic_dir(out_dir, kind="dataset", inputs=(path, spm_path), overwrite=overwrite) as tmp:
    formats.write_playlists(os.path.join(tmp, formats.PLAYLISTS_FILE), playlists())
    if not pids:
      raise UserInputError(f"{path}: no valid playlists ({stats.playlists_skipped} skipped, "
                           f"{stats.empty_prompt_playlists} with an empty prompt)")
    stats.tracks = len(catalog)
    formats.write_catalog(os.path.join(tmp, formats.CATALOG_FILE),
                          (formats.Track(uri, *info) for uri, info in catalog.items()))
    catalog.clear()
    meta = {"source": "mpd", "input": os.path.abspath(os.fspath(path)), "read_stats": stats.as_dict()}
    spec = finish.SplitSpec(seed=seed, validation_fraction=validation_fraction, test_fraction=test_fraction,
                            validation_size=validation_size, test_size=test_size)
    return finish.finish_dataset(tmp, meta=meta, split_spec=spec, vocab_size=vocab_size, spm_path=spm_path,
                                 prompt_max_chars=prompt_max_chars)
