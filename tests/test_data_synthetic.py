"""Tests for t2t_jax.data.synthetic: determinism, format, intent signal, streaming/atomic output."""

import collections
import hashlib
import os

import pytest

from t2t_jax.data import formats, prompts, synthetic
from t2t_jax.errors import UserInputError

TINY = synthetic.SyntheticConfig(seed=5, num_artists=30, num_tracks=300, num_playlists=200, num_intents=20,
                                 min_playlist_len=5, max_playlist_len=15, min_pool_size=8)


def _digest(d):
  h = hashlib.sha256()
  for name in ("catalog.jsonl", "playlists.jsonl", "splits.json"):
    h.update((d / name).read_bytes())
  return h.hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  d = tmp_path_factory.mktemp("syn") / "tiny"
  meta = synthetic.generate(TINY, d)
  return d, meta


def test_deterministic(tiny, tmp_path):
  d, _ = tiny
  synthetic.generate(TINY, tmp_path / "again")
  assert _digest(d) == _digest(tmp_path / "again")
  synthetic.generate(synthetic.SyntheticConfig(**{**TINY.__dict__, "seed": 6}), tmp_path / "other")
  assert _digest(d) != _digest(tmp_path / "other")


def test_files_and_counts(tiny):
  d, meta = tiny
  assert sorted(os.listdir(d)) == [".t2t_output.json", "catalog.jsonl", "meta.json", "playlists.jsonl", "splits.json"]
  ds = formats.Dataset.load(d)  # validates every record, unknown tracks, splits
  assert len(ds.tracks) == 300 and meta["num_tracks"] == 300 and meta["num_playlists"] == 200
  lengths = [len(p.track_ids) for p in ds.playlists()]
  assert len(lengths) == 200 and min(lengths) >= 5 and max(lengths) <= 15
  assert sum(lengths) == meta["num_playlist_tracks"]
  assert meta["split_sizes"] == {"train": 180, "validation": 10, "test": 10}
  assert len(meta["intents"]) == 20
  assert all(len(t.tags) == 3 for t in ds.tracks)


def test_intent_signal(tiny):
  """Titles name the intent; most tracks of a playlist match it; intent co-occurrence is strong."""
  d, _ = tiny
  ds = formats.Dataset.load(d)
  match, total, named = 0, 0, 0
  for p in ds.playlists():
    intent = {k: v for k, v in p.intent.items() if k != "intent_id"}
    assert intent and set(intent) <= set(synthetic.FIELDS)
    text = prompts.normalize_text(p.title + " " + p.description).lower()
    words = []
    for field, value in intent.items():
      table = {"genre": synthetic.GENRES, "mood": synthetic.MOODS, "era": synthetic.ERAS}.get(field)
      syns = table[value] if table else synthetic.ACTIVITIES[value][0]
      words.append(any(s.lower()[:3] in text for s in syns))
    named += all(words)
    for t in p.track_ids:
      genre, era, mood = ds.tracks[ds.track_row[t]].tags
      ok = intent.get("genre", genre) == genre and intent.get("era", era) == era
      ok &= intent.get("mood", mood) == mood
      if "activity" in intent:
        ok &= mood in synthetic.ACTIVITIES[intent["activity"]][1]
      match += ok
      total += 1
  assert named / 200 > 0.85  # typos may hide a word now and then
  assert 0.7 < match / total < 0.97  # mostly intent tracks, plus popular and random noise


def test_popularity_is_skewed(tiny):
  d, _ = tiny
  counts = collections.Counter(t for p in formats.Dataset.load(d).playlists() for t in p.track_ids)
  top = sum(c for _, c in counts.most_common(30))
  assert top / sum(counts.values()) > 0.2  # 10% of tracks take far more than 10% of slots


def test_text_variety(tiny):
  d, _ = tiny
  titles = [p.title for p in formats.Dataset.load(d).playlists()]
  assert len(set(titles)) > 100
  assert any(t.isupper() for t in titles) and any(t.islower() for t in titles)
  assert any(ord(c) > 0x2000 for t in titles for c in t)  # emoji


def test_bad_config_leaves_nothing(tmp_path):
  with pytest.raises(UserInputError, match="max_playlist_len"):
    synthetic.generate(synthetic.SyntheticConfig(num_tracks=10, max_playlist_len=40), tmp_path / "x")
  with pytest.raises(UserInputError, match="popular_noise"):
    synthetic.generate(synthetic.SyntheticConfig(popular_noise=1.5), tmp_path / "x")
  assert os.listdir(tmp_path) == []
