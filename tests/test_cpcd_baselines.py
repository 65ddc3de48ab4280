"""t2t_jax/studies/cpcd_baselines.py (tools/cpcd_baselines.py's study): CPCD parsing (prompts,
deduplicated catalog and goals) and a run of the cheap methods with artist-level metrics and the
paired bootstrap, on a 3-conversation fixture."""

import json

import pytest

from t2t_jax.errors import UserInputError
from t2t_jax.studies import cpcd_baselines


def _track(tid, title, artists, album="LP"):
  return {"track_ids": tid, "track_titles": title, "track_artists": artists, "track_release_titles": album}


def _conv(cid, queries, tracks, goal):
  return {"id": cid, "turns": [{"user_query": q} for q in queries], "tracks": {t["track_ids"]: t for t in tracks},
          "goal_playlist": goal}


@pytest.fixture
def cpcd_dir(tmp_path):
  metal = _track("v1", "Enter Sandman", ["Metallica"])
  metal_dup = _track("v2", "Enter  Sandman!", ["metallica"])  # the same song under another video id
  jazz = _track("v3", "So What", ["Miles Davis"], "Kind of Blue")
  jazz2 = _track("v4", "Blue in Green", ["Miles Davis", "Bill Evans"], "Kind of Blue")
  searched = _track("v5", "Unrelated", ["Nobody"])  # referenced (a search result), never a goal
  train = [_conv("a", ["heavy metal", "loud please"], [metal, searched], ["v1"]),
           _conv("b", ["cool jazz"], [jazz, jazz2], ["v3", "v4"]),
           _conv("c", ["nothing kept"], [jazz], [])]
  val = [_conv("d", ["metallica", "more metal"], [metal_dup, jazz2], ["v2"])]
  for name, convs in (("cpcd_v1.dialogs.dev.train.jsonl", train), ("cpcd_v1.dialogs.dev.val.jsonl", val)):
    with open(tmp_path / name, "w", encoding="utf-8") as f:
      f.write("\n".join(json.dumps(c) for c in convs) + "\n")
  return str(tmp_path)


def test_load_cpcd(cpcd_dir):
  catalog, train, test, info = cpcd_baselines.load_cpcd(cpcd_dir)
  assert catalog.metadata == ("Metallica - Enter Sandman (LP)", "Nobody - Unrelated (LP)",
                              "Miles Davis - So What (Kind of Blue)",
                              "Miles Davis, Bill Evans - Blue in Green (Kind of Blue)")
  assert catalog.artists == ("metallica", "nobody", "miles davis", "miles davis")
  assert train == [("heavy metal loud please", [0]), ("cool jazz", [2, 3])]
  assert test == [("metallica more metal", [0])]  # v2 is v1 after normalisation
  assert info["skipped_empty"] == 1 and info["num_tracks"] == 4 and info["test_goal_tracks_in_train_goals"] == 1.0


def test_run_cheap_methods_with_bootstrap(cpcd_dir):
  out = cpcd_baselines.run(cpcd_dir, finetune_epochs=0, only=["most_popular", "bm25:metadata"],
                           reference="bm25:metadata", bootstrap_samples=200)
  rows = {r["method"]: r for r in out["results"]}
  assert set(rows) == {"most_popular", "bm25:metadata"}
  assert rows["bm25:metadata"]["hits@1"] == 1.0 and rows["bm25:metadata"]["artist_hits@1"] == 1.0
  # Most popular: rows 0, 2, 3 are in one training playlist each; the stable tie order puts row 0 first.
  assert rows["most_popular"]["hits@1"] == 1.0 and rows["most_popular"]["num_queries"] == 1
  comp = out["paired_bootstrap_vs_reference"]["most_popular"]["hits@10"]
  assert comp["mean_diff"] == 0.0 and comp["p_value"] == 1.0


def test_folds(cpcd_dir):
  assert sorted(cpcd_baselines.folds_of(list(range(10)), 3)) == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
  out = cpcd_baselines.run(cpcd_dir, finetune_epochs=0, only=["most_popular", "bm25:metadata"],
                           reference="bm25:metadata", bootstrap_samples=100, folds=3)
  assert out["data"]["fold_sizes"] == [1, 1, 1]  # the 3 usable conversations, one per fold
  summary = {r["method"]: r for r in out["results"]}
  assert summary["bm25:metadata"]["num_queries"] == 3 and summary["bm25:metadata"]["hits@10"]["n"] == 3
  assert len(out["fold_results"]["most_popular"]) == 3
  assert set(out["paired_bootstrap_vs_reference"]) == {"most_popular"}
  assert set(out["paired_bootstrap_vs_reference_pooled"]) == {"most_popular"}
  with pytest.raises(UserInputError, match="--folds"):
    cpcd_baselines.run(cpcd_dir, finetune_epochs=0, only=["most_popular"], folds=1)


def test_missing_files(tmp_path):
  with pytest.raises(UserInputError, match="dialogs.dev.train.jsonl"):
    cpcd_baselines.load_cpcd(str(tmp_path))
