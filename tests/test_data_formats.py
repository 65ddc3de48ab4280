"""Tests for t2t_jax.data.formats: readers, validation errors naming file:line, writers, splits."""

import json
import os

import pytest

from t2t_jax.data import formats
from t2t_jax.errors import UserInputError

TRACKS = [
    {"track_id": "t1", "artist": "A", "title": "Song 1", "album": "X", "tags": ["rock"]},
    {"track_id": "t2", "artist": "B", "title": "Song 2", "album": "Y", "tags": []},
    {"track_id": "t3", "artist": "C", "title": "Lied 3", "album": "", "tags": ["jazz", "70s"]},
]
PLAYLISTS = [
    {"playlist_id": "p1", "title": "rock", "description": "", "track_ids": ["t1", "t2"]},
    {"playlist_id": "p2", "title": "jazz", "description": "smooth", "track_ids": ["t3"],
     "intent": {"genre": "jazz"}},
    {"playlist_id": "p3", "title": "mix", "description": "all", "track_ids": ["t2", "t3", "t1"]},
]


def _jsonl(path, recs):
  with open(path, "w", encoding="utf-8") as f:
    for r in recs:
      f.write(r if isinstance(r, str) else json.dumps(r))
      f.write("\n")
  return str(path)


def _dataset(tmp_path, tracks=TRACKS, playlists=PLAYLISTS, splits=None):
  d = tmp_path / "ds"
  d.mkdir()
  _jsonl(d / "catalog.jsonl", tracks)
  _jsonl(d / "playlists.jsonl", playlists)
  splits = splits or {"train": ["p1", "p3"], "validation": ["p2"], "test": []}
  (d / "splits.json").write_text(json.dumps(splits))
  return d


def test_read_catalog_values(tmp_path):
  path = _jsonl(tmp_path / "c.jsonl", TRACKS + [""])  # blank lines are ignored
  stats = formats.ReadStats()
  tracks = list(formats.read_catalog(path, stats=stats))
  assert tracks[0] == formats.Track("t1", "A", "Song 1", "X", ("rock",))
  assert tracks[2].tags == ("jazz", "70s")
  assert (stats.read, stats.skipped) == (3, 0)


@pytest.mark.parametrize("bad, message", [
    ('{"track_id": "t9", "artist": "A"', "malformed JSON"),
    ('[1, 2]', "expected a JSON object"),
    ('{"track_id": 5, "artist": "A", "title": "x"}', "'track_id' must be a string"),
    ('{"track_id": "t9", "title": "x"}', "missing field 'artist'"),
    ('{"track_id": "t9", "artist": "A", "title": "x", "tags": "rock"}', "'tags' must be a list"),
    ('{"track_id": "t1", "artist": "A", "title": "x"}', "duplicate track_id 't1'"),
    ('{"track_id": "", "artist": "A", "title": "x"}', "'track_id' is empty"),
])
def test_read_catalog_errors_name_file_and_line(tmp_path, bad, message):
  path = _jsonl(tmp_path / "c.jsonl", TRACKS[:2] + [bad])
  with pytest.raises(UserInputError, match=f"c.jsonl:3: .*{message}"):
    list(formats.read_catalog(path))
  stats = formats.ReadStats()
  kept = list(formats.read_catalog(path, on_error="skip", stats=stats))
  assert [t.track_id for t in kept] == ["t1", "t2"]
  assert (stats.read, stats.skipped) == (2, 1)
  assert stats.messages[0].startswith(f"{path}:3: ")


def test_non_utf8_line_is_named(tmp_path):
  path = tmp_path / "c.jsonl"
  path.write_bytes(json.dumps(TRACKS[0]).encode() + b"\n" + b'{"track_id": "t\xff"}\n')
  with pytest.raises(UserInputError, match=r"c.jsonl:2: not UTF-8"):
    list(formats.read_catalog(path))


@pytest.mark.parametrize("bad, message", [
    ({"playlist_id": "p9", "title": "x", "track_ids": []}, "is empty"),
    ({"playlist_id": "p9", "title": "x", "track_ids": ["zzz"]}, "unknown track 'zzz'"),
    ({"playlist_id": "p1", "title": "x", "track_ids": ["t1"]}, "duplicate playlist_id 'p1'"),
    ({"playlist_id": "p9", "title": "x", "track_ids": "t1"}, "must be a list"),
    ({"playlist_id": "p9", "title": 3, "track_ids": ["t1"]}, "'title' must be a string"),
    ({"playlist_id": "p9", "title": "x", "track_ids": ["t1", 7]}, r"track_ids\[1\] must be a string, got int"),
    ({"playlist_id": "p9", "title": "x", "track_ids": ["t1", "t2\u2028"]}, r"track_ids\[1\] contains"),
    ({"playlist_id": "p9", "title": "a\ud800", "track_ids": ["t1"]}, r"'title' contains a lone surrogate"),
    ({"playlist_id": "p9 ", "title": "x", "track_ids": ["t1"]}, r"'playlist_id' has leading/trailing"),
    ({"playlist_id": "p9", "title": "x"}, "missing field 'track_ids'"),
    ({"playlist_id": "p9", "title": "x", "track_ids": ["t1"], "intent": [1]}, "'intent' must be an object"),
    ({"playlist_id": "p9", "title": "x" * (formats.MAX_TEXT_CHARS + 1), "track_ids": ["t1"]}, "characters long"),
])
def test_read_playlists_errors(tmp_path, bad, message):
  path = _jsonl(tmp_path / "p.jsonl", PLAYLISTS + [bad])
  known = {"t1", "t2", "t3"}
  with pytest.raises(UserInputError, match=f"p.jsonl:4: .*{message}"):
    list(formats.read_playlists(path, known))
  stats = formats.ReadStats()
  kept = list(formats.read_playlists(path, known, on_error="skip", stats=stats))
  assert [p.playlist_id for p in kept] == ["p1", "p2", "p3"]
  assert (stats.read, stats.skipped) == (3, 1)


def test_duplicate_and_unknown_tracks(tmp_path):
  recs = PLAYLISTS + [{"playlist_id": "p4", "title": "x", "track_ids": ["t1", "t2", "t1", "zzz", "t2"]},
                      {"playlist_id": "p5", "title": "y", "track_ids": ["zzz", "yyy"]}]
  path = _jsonl(tmp_path / "p.jsonl", recs)
  known = {"t1", "t2", "t3"}
  with pytest.raises(UserInputError, match=r"p.jsonl:4: playlist 'p4': unknown track 'zzz' \(track_ids\[3\]"):
    list(formats.read_playlists(path, known))
  stats = formats.ReadStats()
  kept = list(formats.read_playlists(path, known, on_error="skip", stats=stats))
  # A repeat is kept once (first position); an unknown track is dropped, not its playlist; a
  # playlist left with no track is skipped.
  assert [p.playlist_id for p in kept] == ["p1", "p2", "p3", "p4"]
  assert kept[3].track_ids == ("t1", "t2")
  d = stats.as_dict()
  assert (d["read"], d["skipped"], d["duplicate_tracks_in_playlists"], d["unknown_tracks_dropped"],
          d["playlists_without_known_tracks"]) == (4, 1, 2, 3, 1)
  assert "p.jsonl:5: playlist 'p5': none of its 2 tracks" in d["messages"][0]
  dup_only = _jsonl(tmp_path / "d.jsonl", [{"playlist_id": "p9", "title": "x", "track_ids": ["t1", "t1"]}])
  stats = formats.ReadStats()
  assert [p.track_ids for p in formats.read_playlists(dup_only, known, stats=stats)] == [("t1",)]
  assert stats.duplicate_tracks_in_playlists == 1


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\u2028b", "a\u2029b", "a\x85b", "a\x0bb", "a\x0cb", "a\x1cb",
                                 "a\x1db", "a\x1eb", "a\tb", "a\x00b", " a", "a ", "a\u00a0", "", "x" * 513,
                                 "a\ud800"])
def test_id_rule(bad):
  assert formats.id_problem(bad) is not None
  assert not formats.all_ids_valid(["ok", bad, "fine"])
  # The rule is what keeps one-id-a-line files intact: str.splitlines never splits a valid id.
  assert formats.id_problem("a b") is None and formats.id_problem("spotify:track:1") is None
  assert formats.all_ids_valid(["a b", "Ärtist – ü", "x" * 512, "🎵"])
  assert len("\n".join(["a b", "Ärtist – ü", "🎵"]).splitlines()) == 3


def test_deep_nesting_folder_and_symlink_loop(tmp_path):
  path = tmp_path / "c.jsonl"
  path.write_text(json.dumps(TRACKS[0]) + "\n" + "[" * 100_000 + "]" * 100_000 + "\n")
  with pytest.raises(UserInputError, match=r"c.jsonl:2: JSON nested too deeply"):
    list(formats.read_catalog(path))
  (tmp_path / "folder.jsonl").mkdir()
  with pytest.raises(UserInputError, match=r"folder.jsonl: is a folder"):
    list(formats.read_catalog(tmp_path / "folder.jsonl"))
  os.symlink(tmp_path / "loop", tmp_path / "loop")
  with pytest.raises(UserInputError, match=r"loop: unreadable symbolic link"):
    list(formats.read_catalog(tmp_path / "loop"))
  (tmp_path / "s.json").write_text("[" * 100_000)
  with pytest.raises(UserInputError, match=r"s.json: JSON nested too deeply|s.json:1: malformed"):
    formats.read_splits(tmp_path / "s.json")


def test_on_error_is_checked(tmp_path):
  path = _jsonl(tmp_path / "p.jsonl", PLAYLISTS)
  with pytest.raises(UserInputError, match="on_error"):
    list(formats.read_playlists(path, on_error="ignore"))


def test_write_read_roundtrip_and_atomicity(tmp_path):
  tracks = [formats.Track("a", "Ärtist", "タイトル 🎵", "", ("x",)), formats.Track("b", "B", "t")]
  path = tmp_path / "c.jsonl"
  assert formats.write_catalog(path, tracks) == 2
  assert list(formats.read_catalog(path)) == tracks

  def failing():
    yield tracks[0]
    raise RuntimeError("boom")

  with pytest.raises(RuntimeError):
    formats.write_catalog(path, failing())
  assert list(formats.read_catalog(path)) == tracks  # old file untouched
  assert sorted(os.listdir(tmp_path)) == ["c.jsonl"]  # no temporary left behind


def test_make_splits_deterministic_and_disjoint():
  ids = [f"p{i}" for i in range(100)]
  a = formats.make_splits(ids, seed=3, validation_fraction=0.1, test_fraction=0.2)
  b = formats.make_splits(list(reversed(ids)), seed=3, validation_fraction=0.1, test_fraction=0.2)
  assert a == b
  assert (len(a["train"]), len(a["validation"]), len(a["test"])) == (70, 10, 20)
  assert set(a["train"]) | set(a["validation"]) | set(a["test"]) == set(ids)
  assert not set(a["validation"]) & set(a["test"])
  c = formats.make_splits(ids, seed=4, validation_fraction=0.1, test_fraction=0.2)
  assert c["test"] != a["test"]
  small = formats.make_splits(["x", "y", "z"], seed=0, validation_fraction=0.01, test_fraction=0.01)
  assert [len(small[k]) for k in formats.SPLITS] == [1, 1, 1]
  with pytest.raises(UserInputError, match="fractions"):
    formats.make_splits(ids, seed=0, validation_fraction=0.6, test_fraction=0.6)
  sized = formats.make_splits(ids, seed=3, validation_size=7, test_size=0)
  assert [len(sized[k]) for k in formats.SPLITS] == [93, 7, 0]
  with pytest.raises(UserInputError, match="leave no training playlist"):
    formats.make_splits(ids, seed=0, validation_size=50, test_size=50)


def test_folds_and_fold_splits(tmp_path):
  ids = [f"c{i}" for i in range(53)]
  folds = formats.make_folds(reversed(ids), num_folds=5, seed=1)
  assert folds == formats.make_folds(ids, num_folds=5, seed=1)
  assert sorted(len(f) for f in folds["folds"]) == [10, 10, 11, 11, 11]
  assert sorted(i for f in folds["folds"] for i in f) == sorted(ids)
  tests = []
  for k in range(5):
    s = formats.fold_splits(folds, k, validation_fraction=0.1, min_validation=5)
    assert s["test"] == folds["folds"][k] and len(s["validation"]) == 5
    assert not (set(s["train"]) & set(s["validation"]) or set(s["train"]) & set(s["test"])
                or set(s["validation"]) & set(s["test"]))
    assert sorted(s["train"] + s["validation"] + s["test"]) == sorted(ids)
    tests += s["test"]
  assert sorted(tests) == sorted(ids)  # every playlist is tested exactly once
  path = tmp_path / "folds.json"
  path.write_text(json.dumps(folds))
  assert formats.fold_splits(path, 2) == formats.fold_splits(folds, 2)
  with pytest.raises(UserInputError, match="fold must be an integer in"):
    formats.fold_splits(folds, 5)
  path.write_text(json.dumps({"folds": [["a", "b"], ["b"]]}))
  with pytest.raises(UserInputError, match="'b' is in folds 0 and 1"):
    formats.read_folds(path)
  with pytest.raises(UserInputError, match="num_folds"):
    formats.make_folds(ids, num_folds=1, seed=0)


def test_dataset_load(tmp_path):
  d = _dataset(tmp_path)
  ds = formats.Dataset.load(d)
  assert [t.track_id for t in ds.tracks] == ["t1", "t2", "t3"]
  assert ds.track_row == {"t1": 0, "t2": 1, "t3": 2}
  assert [p.playlist_id for p in ds.playlists()] == ["p1", "p2", "p3"]
  assert [p.playlist_id for p in ds.playlists("train")] == ["p1", "p3"]
  assert [p.intent for p in ds.playlists("validation")] == [{"genre": "jazz"}]
  assert ds.split_ids("test") == []
  assert ds.playlist_stats.read == 3
  with pytest.raises(UserInputError, match="unknown split"):
    ds.split_ids("dev")


def test_dataset_errors(tmp_path):
  d = _dataset(tmp_path, splits={"train": ["p1", "p9"], "validation": [], "test": []})
  with pytest.raises(UserInputError, match="splits.json: split 'train' names 1 playlist"):
    formats.Dataset.load(d)
  (d / "splits.json").write_text(json.dumps({"train": ["p1"], "test": ["p1"]}))
  with pytest.raises(UserInputError, match="'p1' is in both 'train' and 'test'"):
    formats.Dataset.load(d)
  (d / "catalog.jsonl").write_text("")
  with pytest.raises(UserInputError, match="catalog is empty"):
    formats.Dataset.load(d)
  os.remove(d / "catalog.jsonl")
  with pytest.raises(UserInputError, match="missing catalog.jsonl"):
    formats.Dataset.load(d)


def test_write_dataset_atomic(tmp_path):
  out = tmp_path / "out"
  tracks = [formats.Track("t1", "A", "x")]
  playlists = [formats.Playlist("p1", "t", "", ("t1",))]
  formats.write_dataset(out, tracks, playlists, {"train": ["p1"]}, {"source": "test"})
  ds = formats.Dataset.load(out)
  assert ds.meta == {"source": "test"} and ds.split_ids("train") == ["p1"]

  def bad_playlists():
    yield playlists[0]
    raise UserInputError("bad record")

  with pytest.raises(UserInputError):
    formats.write_dataset(tmp_path / "out2", tracks, bad_playlists(), {"train": ["p1"]})
  assert sorted(os.listdir(tmp_path)) == ["out"]


def test_shuffled_playlists(tmp_path):
  many = [{"playlist_id": f"p{i}", "title": f"t{i}", "track_ids": ["t1"]} for i in range(30)]
  d = _dataset(tmp_path, playlists=many + [{"playlist_id": "bad", "title": "x", "track_ids": []}],
               splits={"train": [f"p{i}" for i in range(25)], "validation": ["p25"], "test": []})
  with pytest.raises(UserInputError, match=r"playlists.jsonl:31: .*is empty"):
    formats.Dataset.load(d)
  ds = formats.Dataset.load(d, on_error="skip")
  assert ds.playlist_stats.skipped == 1
  a = [p.playlist_id for p in ds.playlists("train", shuffle_seed=1)]
  assert a == [p.playlist_id for p in ds.playlists("train", shuffle_seed=1)]
  assert sorted(a) == sorted(f"p{i}" for i in range(25)) and a != [f"p{i}" for i in range(25)]
  assert a != [p.playlist_id for p in ds.playlists("train", shuffle_seed=2)]
  assert [p.title for p in ds.playlists(shuffle_seed=0)] != [p.title for p in ds.playlists()]
