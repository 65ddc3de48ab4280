"""The bad-input corpus (tests/data/bad, manifest.json): every broken input raises a UserInputError
naming its file and record, or is skipped and counted under on_error="skip", and no run leaves
partial output (no dataset dir, no temporaries) behind."""

import json
import os
import re

import pytest

from t2t_jax.data import convert, mpd
from t2t_jax.errors import UserInputError

HERE = os.path.dirname(__file__)
BAD = os.path.join(HERE, "data", "bad")
GOOD = os.path.join(HERE, "data", "good")
with open(os.path.join(BAD, "manifest.json"), encoding="utf-8") as f:
  MANIFEST = json.load(f)


def _run(entry, out, on_error):
  path = os.path.join(BAD, entry["file"])
  kind = entry["kind"]
  if kind == "catalog":
    return convert.import_dataset(path, os.path.join(GOOD, "playlists.jsonl"), out, on_error=on_error)
  if kind == "playlists":
    return convert.import_dataset(os.path.join(GOOD, "catalog.jsonl"), path, out, on_error=on_error)
  if kind == "splits":
    return convert.import_dataset(os.path.join(GOOD, "catalog.jsonl"), os.path.join(GOOD, "playlists.jsonl"),
                                  out, splits_path=path, on_error=on_error)
  if kind == "mpd":
    return mpd.convert_mpd(path, out, on_error=on_error)
  raise AssertionError(kind)


def test_corpus_size():
  assert len(MANIFEST) >= 20
  assert sorted(e["file"] for e in MANIFEST) == sorted(f for f in os.listdir(BAD) if f != "manifest.json")


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["file"] for e in MANIFEST])
def test_bad_input_raises_and_leaves_nothing(entry, tmp_path):
  out = tmp_path / "out"
  with pytest.raises(UserInputError) as info:
    _run(entry, out, "raise")
  assert re.search(entry["error"], str(info.value)), str(info.value)
  assert entry["file"] in str(info.value)
  assert os.listdir(tmp_path) == []  # no dataset dir, no temporaries


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["file"] for e in MANIFEST])
def test_bad_input_skip_mode(entry, tmp_path):
  out = tmp_path / "out"
  if entry["skip"] == "raises":
    with pytest.raises(UserInputError, match=entry["error"]):
      _run(entry, out, "skip")
    assert os.listdir(tmp_path) == []
    return
  meta = _run(entry, out, "skip")
  assert sorted(os.listdir(tmp_path)) == ["out"]
  stats = meta["read_stats"]
  if entry["kind"] == "mpd":
    skipped, messages = stats["playlists_skipped"], stats["messages"]
  else:
    part = stats["catalog" if entry["kind"] == "catalog" else "playlists"]
    skipped, messages = part["skipped"], part["messages"]
  assert skipped == entry["skip"]
  if skipped:
    assert re.search(entry["error"], messages[0]), messages[0]
