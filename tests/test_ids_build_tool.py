"""Entry test for tools/build_ids.py: gin files per strategy -> ID table dirs with stats and plots."""

import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import build_ids  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import gin  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

from t2t_jax.ids import compare  # noqa: E402
from t2t_jax.ids import embeddings as emb_lib  # noqa: E402
from t2t_jax.ids.table import IdTable  # noqa: E402


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  from t2t_jax.data import synthetic
  d = tmp_path_factory.mktemp("ds") / "tiny"
  synthetic.generate(synthetic.SyntheticConfig(seed=0, num_artists=30, num_tracks=300, num_playlists=300,
                                               num_intents=12), d)
  return str(d)


def _run(argv):
  gin.clear_config()
  return build_ids.main(argv + ["--no_progress"])


@pytest.mark.entry
@pytest.mark.slow
def test_semantic_rq_from_dataset(dataset, tmp_path):
  out = str(tmp_path / "ids" / "semantic_rq")
  assert _run(["--gin_file", os.path.join(ROOT, "gin/ids/semantic_rq.gin"), "--dataset_dir", dataset,
               "--out", out, "--gin_bindings", "build_id_table.embedding_dim = 16",
               "--gin_bindings", "build_id_table.strategy_kwargs = {'level_sizes': (8, 8), 'iterations': 5}"]) == 0
  t = IdTable.load(out)
  assert t.num_tracks == 300 and t.level_sizes[:2] == (8, 8) and t.num_duplicate_ids() == 0
  files = set(os.listdir(out))
  assert {"codes.npy", "track_ids.txt", "meta.json", "stats.json", "cluster_sizes.png", "id_tokens.txt"} <= files
  with open(os.path.join(out, "cluster_sizes.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  stats = json.load(open(os.path.join(out, "stats.json")))
  assert stats["collision_rate"] == pytest.approx(t.meta["num_disambiguated"] / 300)
  assert [b["level"] for b in stats["balance"]] == [0, 1, 2]
  assert stats["balance"][2]["max"] == 1  # Unique after disambiguation.
  assert stats["levels"][0]["used"] <= 8 and 0 < stats["levels"][0]["entropy_bits"] <= 3.0
  lines = open(os.path.join(out, "id_tokens.txt")).read().split()
  assert len(lines) == t.num_id_tokens and lines[0] == "<id_0_0>"
  # The CF embeddings were saved beside the table and feed the --embeddings path too.
  emb, ids = emb_lib.load_embeddings(out + ".embeddings")
  assert emb.shape == (300, 16) and ids == t.track_ids
  out2 = str(tmp_path / "ids" / "hk")
  assert _run(["--gin_file", os.path.join(ROOT, "gin/ids/semantic_hkmeans.gin"), "--embeddings", out + ".embeddings",
               "--out", out2,
               "--gin_bindings", "build_id_table.strategy_kwargs = {'level_sizes': (8, 8), 'iterations': 5}"]) == 0
  assert IdTable.load(out2).strategy == "semantic_hkmeans"


@pytest.mark.entry
def test_integer_and_content(dataset, tmp_path):
  out = str(tmp_path / "int")
  assert _run(["--gin_file", os.path.join(ROOT, "gin/ids/integer_digits.gin"), "--dataset_dir", dataset,
               "--out", out, "--no_plots"]) == 0
  t = IdTable.load(out)
  assert t.level_sizes == (64, 64) and t.num_duplicate_ids() == 0  # 64 < 300 <= 64**2
  from t2t_jax.data import formats, vocab
  ds = formats.Dataset.load(dataset)
  spm = vocab.train_sentencepiece((f"{x.artist} - {x.title}" for x in ds.tracks), tmp_path / "spm.model",
                                  vocab_size=400)
  out = str(tmp_path / "content")
  assert _run(["--gin_file", os.path.join(ROOT, "gin/ids/content.gin"), "--dataset_dir", dataset,
               "--spm_model", spm, "--out", out]) == 0
  t = IdTable.load(out)
  assert t.is_text and t.num_duplicate_ids() == 0
  sp = vocab.TextAndIdVocab(spm)
  row = t.row_of(ds.tracks[5].track_id)
  assert sp.decode([c for c in t.codes[row] if c >= 0]) == f"{ds.tracks[5].artist} - {ds.tracks[5].title}"


@pytest.mark.entry
def test_semantic_rq_unique_gin_from_embeddings(tmp_path):
  """gin/ids/semantic_rq_unique.gin: unique IDs with no disambiguation level on clustered embeddings."""
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(12, 8)) * 4
  emb = (centers[rng.integers(12, size=500)] + rng.normal(size=(500, 8))).astype(np.float32)
  np.save(tmp_path / "e.npy", emb)
  (tmp_path / "track_ids.txt").write_text("".join(f"t{i}\n" for i in range(500)))
  out = str(tmp_path / "uniq")
  assert _run(["--gin_file", os.path.join(ROOT, "gin/ids/semantic_rq_unique.gin"), "--embeddings",
               str(tmp_path / "e.npy"), "--out", out, "--no_plots",
               "--gin_bindings", "build_id_table.strategy_kwargs = {'level_sizes': (32, 32), 'iterations': 5, "
               "'balanced': True, 'unique_last_level': True, 'disambiguation': 'auto'}"]) == 0
  t = IdTable.load(out)
  assert t.level_sizes == (32, 32) and t.num_duplicate_ids() == 0 and t.meta["num_disambiguated"] == 0
  stats = json.load(open(os.path.join(out, "stats.json")))
  assert stats["collision_rate"] == 0.0


@pytest.mark.entry
@pytest.mark.slow
def test_new_strategy_gin_files(dataset, tmp_path):
  """gin/ids/artist_*.gin, integer_text.gin, semantic_dict.gin, semantic_rq_most_popular.gin end to end."""
  from t2t_jax.data import formats, vocab
  ds = formats.Dataset.load(dataset)
  spm = vocab.train_sentencepiece((f"{x.artist} - {x.title} 1234567890_" for x in ds.tracks), tmp_path / "spm.model",
                                  vocab_size=400)
  for name, bindings in (("artist_iid_track_seq", []), ("artist_int_track_seq", []), ("integer_text", []),
                         ("semantic_dict", ["build_id_table.embedding_dim = 8",
                                            "build_id_table.strategy_kwargs = {'dict_size': 16, 'num_nonzero': 2, "
                                            "'max_iter': 1, 'collisions': 'most_popular'}"]),
                         ("semantic_rq_most_popular", ["build_id_table.embedding_dim = 8",
                                                       "build_id_table.strategy_kwargs = {'level_sizes': (8, 8), "
                                                       "'iterations': 5, 'collisions': 'most_popular'}"])):
    out = str(tmp_path / name)
    argv = ["--gin_file", os.path.join(ROOT, f"gin/ids/{name}.gin"), "--dataset_dir", dataset, "--spm_model", spm,
            "--out", out, "--no_plots"]
    for b in bindings:
      argv += ["--gin_bindings", b]
    assert _run(argv) == 0, name
    t = IdTable.load(out)
    stats = json.load(open(os.path.join(out, "stats.json")))
    assert len(t.decodable_rows()) == 300 - stats["num_unreachable_tracks"], name
    if name.startswith("semantic"):
      assert stats["cold_start"]["num_cold"] == stats["cold_start"]["by_artist"] + stats["cold_start"]["fallback"]
      assert t.collision_policy == "most_popular" and stats["tracks_per_id"]["max"] >= 1
    else:
      assert t.num_duplicate_ids() == 0, name
  assert IdTable.load(str(tmp_path / "artist_iid_track_seq")).level_sizes[0] == len({x.artist for x in ds.tracks})
  assert IdTable.load(str(tmp_path / "integer_text")).is_text


def test_errors_are_one_line(tmp_path, capsys):
  assert _run(["--strategy", "semantic_rq", "--out", str(tmp_path / "x")]) == 2
  assert "needs --embeddings or --dataset_dir" in capsys.readouterr().err
  assert _run(["--gin_file", "nope.gin", "--out", str(tmp_path / "x")]) == 2
  np.save(tmp_path / "e.npy", np.ones((3, 2), np.float32))
  (tmp_path / "track_ids.txt").write_text("a\nb\n")
  assert _run(["--strategy", "semantic_rq", "--embeddings", str(tmp_path / "e.npy"), "--out", str(tmp_path / "y")]) == 2
  assert "has 3 rows but" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_strategies_rows(dataset):
  rows = compare.compare_strategies(dataset, embedding_dim=8, level_sizes=(16, 32), dict_size=16)
  labels = [r["strategy"] for r in rows]
  assert labels == ["content", "integer order=sequential", "integer order=random base=64",
                    "integer text_digits=True (track-int)", "artist_iid_track_seq", "artist_int_track_seq",
                    "semantic_rq", "semantic_rq balanced=True", "semantic_rq balanced=True unique_last_level=True",
                    "semantic_rq balanced=True collisions=most_popular",
                    "semantic_rq word2vec balanced=True unique_last_level=True",
                    "semantic_hkmeans", "semantic_hkmeans balanced=True", "semantic_dict",
                    "semantic_dict collisions=most_popular"]
  assert all(r["duplicate_ids"] == 0 for r in rows)
  by = dict(zip(labels, rows))
  assert by["integer order=sequential"]["new_vocab_tokens"] == 300
  assert by["integer order=random base=64"]["tokens_per_id_mean"] == 2.0  # 64 < 300 <= 64**2
  # Balanced level 0 leaves ceil(300 / 16) = 19 <= 32 tracks per prefix, so the collision-aware last
  # level makes every ID unique with 2 tokens; plain RQ needs the extra token for many tracks.
  uniq = by["semantic_rq balanced=True unique_last_level=True"]
  assert uniq["disambiguated_tracks"] == 0 and uniq["tokens_per_id_mean"] == 2.0
  assert uniq["disambiguation_size"] == 0 and by["semantic_rq"]["disambiguation_size"] > 1
  assert by["semantic_rq word2vec balanced=True unique_last_level=True"]["tokens_per_id_mean"] == 2.0
  assert by["semantic_rq balanced=True"]["disambiguated_tracks"] > 50
  popular = by["semantic_rq balanced=True collisions=most_popular"]
  assert popular["tokens_per_id_mean"] == 2.0 and popular["unreachable_tracks"] > 0
  # The artist token is the first decoding step: one per artist name, 2 tokens per ID, no collisions.
  from t2t_jax.data import formats
  num_artists = len({t.artist for t in formats.Dataset.load(dataset).tracks})  # 29: two artists share a name
  artist = by["artist_iid_track_seq"]
  assert artist["tokens_per_id_mean"] == 2.0 and artist["tracks_per_first_token"] == 300 / num_artists
  assert by["integer text_digits=True (track-int)"]["new_vocab_tokens"] == 0
  assert by["semantic_dict"]["tokens_per_id_max"] >= 2 and by["semantic_dict collisions=most_popular"][
      "tokens_per_id_mean"] == 2.0
  assert all(0.0 < r["prefix_purity"] <= 1.0 for r in rows)
