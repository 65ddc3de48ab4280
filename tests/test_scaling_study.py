"""tools/scaling_study.py (t2t_jax/studies/scaling.py) end to end on two tiny catalogs: rows, measured
sizes, files, errors."""

import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import scaling_study  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.studies import scaling  # pylint: disable=g-import-not-at-top,wrong-import-position

pytestmark = pytest.mark.entry
TINY_GIN = os.path.join(ROOT, "gin", "experiments", "scaling_study_tiny.gin")


def _run(out, *args):
  import gin  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  try:
    return scaling_study.main(["--gin_file", TINY_GIN, "--out", str(out), "--work_dir", os.path.join(out, "work"),
                               "--no_progress", *args])
  finally:
    gin.clear_config()


@pytest.fixture(scope="module")
def result(tmp_path_factory):
  out = tmp_path_factory.mktemp("scaling")
  assert _run(out, "--gin_bindings", "scaling_study.keep_work = True") == 0
  with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
    return out, json.load(f)


def test_auto_codebook_size():
  assert scaling.auto_codebook_size(10_000, 2) == 128  # sqrt = 100 -> 128
  assert scaling.auto_codebook_size(1_000_000, 2) == 1024
  assert scaling.auto_codebook_size(1_000_000, 3) == 128  # cube root = 100
  assert scaling.auto_codebook_size(10_000_000, 2) == 4096  # capped
  assert scaling.auto_codebook_size(50, 2) == 8  # floor
  assert scaling.auto_codebook_size(5, 1) == 5  # never more codes than tracks


def test_rows(result):
  out, rows = result
  assert [r["num_tracks"] for r in rows] == [200, 400]
  assert [r["num_playlists"] for r in rows] == [300, 400]  # max(min_playlists=300, 1.0 * N)
  for r in rows:
    assert 0.0 <= r["hits@10"] <= 1.0 and r["num_queries"] == 8
    assert r["level_sizes"][:2] == [8, 8] and r["decode_steps_per_id"] == 3.0
    assert r["id_build_seconds"] > 0 and r["embedding_seconds"] > 0
    assert r["train_examples_per_s"] > 0 and r["decode_ms_per_batch"] > 0 and r["prompts_per_s"] > 0
    assert r["id_table_bytes"] == r["num_tracks"] * 3 * 4  # int32 [N, 3]
  # The trie index grows with the catalog, and its size is what build_index gives for the saved table.
  assert rows[1]["index_bytes"] > rows[0]["index_bytes"]
  from t2t_jax.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  from t2t_jax.decoding import index as index_lib  # pylint: disable=g-import-not-at-top
  from t2t_jax.ids.table import IdTable  # pylint: disable=g-import-not-at-top
  ds_dir = os.path.join(out, "work", "n400", "data", "synthetic")
  table = IdTable.load(os.path.join(ds_dir, "ids", "semantic_rq"))
  vocab = vocab_lib.TextAndIdVocab(os.path.join(ds_dir, "vocab", "spm.model"), table.level_sizes)
  index = index_lib.build_table_index(table, vocab.id_token_offset, vocab.vocab_size)
  assert rows[1]["index_bytes"] == index.nbytes
  assert rows[1]["index_bytes_per_track"] == pytest.approx(index.nbytes / 400, abs=0.01)


def test_files(result):
  out, rows = result
  md = open(os.path.join(out, "results.md"), encoding="utf-8").read()
  assert "| num_tracks | num_playlists | hits@10 |" in md and "| 400 | 400 |" in md
  with open(os.path.join(out, "scaling.png"), "rb") as f:
    png = f.read()
  assert png.startswith(b"\x89PNG") and len(png) < 200_000
  with open(os.path.join(out, "results.csv"), encoding="utf-8") as f:
    lines = f.read().strip().splitlines()
  assert len(lines) == 1 + len(rows) and lines[0].startswith("num_tracks,num_playlists,hits@10")
  assert np.isfinite([r["ndcg@10"] for r in rows]).all()


def test_bad_inputs(tmp_path, capsys):
  assert _run(tmp_path, "--sizes", "100,abc") == 2
  assert "--sizes" in capsys.readouterr().err
  assert _run(tmp_path, "--sizes", "1") == 2
  assert "catalog_sizes" in capsys.readouterr().err
  assert _run(tmp_path, "--gin_bindings", "scaling_study.strategy = 'integer'") == 2
  assert "strategy" in capsys.readouterr().err
  assert _run(tmp_path, "--gin_bindings", "scaling_study.nope = 1") == 2
  assert "bad gin binding 'scaling_study.nope = 1'" in capsys.readouterr().err
