"""Tests for t2t_jax.data.examples.ExampleSource: indexing examples and retrieval texts."""

import os

import numpy as np
import pytest

from t2t_jax.data import examples, prompts
from t2t_jax.errors import UserInputError


def _source(root, **kw):
  ds_dir = os.path.join(root, "tiny-syn")
  return examples.ExampleSource(ds_dir, os.path.join(ds_dir, "ids", "sem"),
                                os.path.join(ds_dir, "vocab", "spm.model"), "title", **kw)


def test_indexing_examples_name_every_track_and_artist(tiny_data_root):
  root, ds = tiny_data_root
  src = _source(root, indexing="tracks_and_artists")
  items = src.indexing_examples()
  table_rows = {t: r for r, t in enumerate(examples.load_table(src.ids_dir).track_ids)}
  tracks = items[:len(ds.tracks)]
  assert [rows for _, rows in tracks] == [[table_rows[t.track_id]] for t in ds.tracks]
  t0 = ds.tracks[0]
  assert tracks[0][0] == prompts.normalize_text(f"{t0.artist} - {t0.title} ({t0.album})" if t0.album
                                                else f"{t0.artist} - {t0.title}")
  artists = dict(items[len(ds.tracks):])
  assert sorted(r for rows in artists.values() for r in rows) == sorted(table_rows.values())
  assert sorted(artists[prompts.normalize_text(t0.artist)]) == sorted(
      table_rows[t.track_id] for t in ds.tracks if t.artist == t0.artist)


def test_indexing_share_repeats_whole_sets(tiny_data_root):
  root, ds = tiny_data_root
  real = sum(len(p.track_ids) for p in ds.playlists("train"))
  plain = _source(root).train_index()
  assert len(plain[2]) == real
  src = _source(root, indexing="tracks", indexing_share=0.9)
  _, playlist_E, row_E, _ = src.train_index()
  rep_real, rep_index = src._repeats(real, len(ds.tracks))  # pylint: disable=protected-access
  assert len(row_E) == real * rep_real + len(ds.tracks) * rep_index
  share = len(ds.tracks) * rep_index / len(row_E)
  assert abs(share - 0.9) < abs(len(ds.tracks) / (real + len(ds.tracks)) - 0.9)
  # The indexing examples come after the real ones; each is its own prompt.
  assert len(np.unique(playlist_E[real * rep_real:])) == len(ds.tracks) * rep_index
  with pytest.raises(UserInputError, match="indexing must be one of"):
    _source(root, indexing="albums")
  with pytest.raises(UserInputError, match="indexing_share must be in"):
    _source(root, indexing_share=1.0)


def test_retrieval_texts(tiny_data_root):
  root, ds = tiny_data_root
  src = _source(root)
  meta, prompt_tokens, prompt_rows = src.retrieval_texts()
  table = examples.load_table(src.ids_dir)
  row0 = table.row_of(ds.tracks[0].track_id)
  t0 = ds.tracks[0]
  text = prompts.normalize_text(f"{t0.artist} - {t0.title}" + (f" ({t0.album})" if t0.album else ""))
  assert meta[row0].tolist() == src._tokens(text).tolist()  # pylint: disable=protected-access
  train = list(ds.playlists("train"))
  assert len(prompt_tokens) == len(train)
  assert prompt_rows[0] == [table.row_of(t) for t in train[0].track_ids]
