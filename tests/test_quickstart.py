"""Entry test: `t2t quickstart` end to end on a tiny catalog, then `t2t recommend` on its model dir."""

import json
import os

import numpy as np
import pytest

from t2t_jax import cli, quickstart

pytestmark = pytest.mark.entry


@pytest.fixture(scope="module")
def qs(tmp_path_factory):
  root = tmp_path_factory.mktemp("qs")
  cfg = quickstart.QuickstartConfig(
      out=str(root / "report"), work_dir=str(root / "work"), num_tracks=300, num_playlists=400,
      vocab_size=600, embedding_dim=16, id_levels=(8, 8), train_steps=40, batch_size=32, beam_size=12,
      k=10, eval_playlists=16, inputs_length=24, progress=False)
  rows = quickstart.run(cfg)
  return cfg, rows


def test_report_rows_and_files(qs):
  cfg, rows = qs
  methods = [r["method"] for r in rows]
  assert methods == ["Text2Tracks (semantic IDs)", "BM25 (bm25s)", "Most popular"]
  with open(os.path.join(cfg.out, "report.json"), encoding="utf-8") as f:
    saved = json.load(f)
  assert isinstance(saved, list) and len(saved) == 3
  for row in saved:
    for key in ("method", "hits@10", "map@10", "ndcg@10", "decode_steps_per_id", "seconds"):
      assert key in row
    for key in ("hits@10", "map@10", "ndcg@10"):
      assert 0.0 <= row[key] <= 1.0
  # (8, 8) codes for 300 tracks: prefixes hold more tracks than codes, so "auto" keeps the
  # disambiguation level: 2 levels + 1.
  assert saved[0]["decode_steps_per_id"] == 3
  md = open(os.path.join(cfg.out, "report.md"), encoding="utf-8").read()
  assert "| Text2Tracks (semantic IDs) |" in md and "Example prompts" in md
  # No temp files left behind by the atomic writers.
  assert not [f for f in os.listdir(cfg.out) if f.endswith(".tmp")]


def test_recommender_returns_distinct_catalog_tracks(qs):
  from t2t_jax import recommend
  cfg, _ = qs
  rec = recommend.Recommender.load(os.path.join(cfg.work_dir, "model"))
  prompts = ["chill evening jazz 🎷", "GYM WORKOUT", "música para bailar"]
  rows, scores = rec.recommend_rows(prompts, k=10)
  assert rows.shape == (3, 10)
  assert (rows >= 0).all() and (rows < rec.id_table.num_tracks).all()
  for r, s in zip(rows, scores):
    assert len(set(r.tolist())) == 10  # no track twice
    assert np.all(np.diff(s) <= 1e-6)  # sorted by score
  recs = rec.recommend(prompts[:1], k=5)[0]
  assert [r.rank for r in recs] == [1, 2, 3, 4, 5]
  catalog_ids = set(rec.tracks)
  assert all(r.track_id in catalog_ids and r.title for r in recs)
  # Deterministic.
  rows2, _ = rec.recommend_rows(prompts, k=10)
  np.testing.assert_array_equal(rows, rows2)


def test_cli_recommend_json(qs, capsys):
  cfg, _ = qs
  assert cli.main(["recommend", "--model_dir", os.path.join(cfg.work_dir, "model"), "-k", "3", "--json",
                   "late night drive"]) == 0
  line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert line["prompt"] == "late night drive" and len(line["tracks"]) == 3


def test_cli_recommend_bad_input(qs, capsys, tmp_path):
  cfg, _ = qs
  model_dir = os.path.join(cfg.work_dir, "model")
  assert cli.main(["recommend", "--model_dir", str(tmp_path / "nope"), "x"]) == 2
  assert "nope" in capsys.readouterr().err
  assert cli.main(["recommend", "--model_dir", model_dir, "   "]) == 2
  err = capsys.readouterr().err
  assert "empty prompt" in err and len(err.strip().splitlines()) == 1
  assert cli.main(["recommend", "--model_dir", model_dir, "-k", "0", "x"]) == 2
  assert "k must be" in capsys.readouterr().err
