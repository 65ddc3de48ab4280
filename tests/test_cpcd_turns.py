"""t2t_jax/studies/cpcd_turns.py (CPCD's turn-level protocol) on hand-made conversations, and
tools/cpcd_turns.py (t2t_jax/studies/turns_study.py) on the CPCD slice in tests/data/cpcd."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from t2t_jax import cli, stats
from t2t_jax.baselines import popularity
from t2t_jax.data import cpcd, formats, prompts as prompts_lib
from t2t_jax.errors import UserInputError
from t2t_jax.studies import cpcd_turns as ct
from t2t_jax.studies import turns_study

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPCD_SLICE = os.path.join(ROOT, "tests", "data", "cpcd")
sys.path.insert(0, os.path.join(ROOT, "tools"))

import cpcd_turns as tool  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def _track(title, artists):
  return {"track_titles": title, "track_artists": artists, "track_release_titles": "LP"}


def _conv(cid, turns, goal, tracks=None):
  """turns: [(user query, liked ids)]; every id of `goal` gets metadata "Song <id>" by "Band <id>"."""
  tracks = dict(tracks or {})
  for v in goal:
    tracks.setdefault(v, _track(f"Song {v}", [f"Band {v}"]))
  return {"id": cid, "turns": [{"user_query": q, "search_results": [], "liked_results": liked,
                                "disliked_results": []} for q, liked in turns],
          "tracks": tracks, "goal_playlist": goal}


def _write(path, convs):
  with open(path, "w", encoding="utf-8") as f:
    f.write("".join(json.dumps(c) + "\n" for c in convs))
  return str(path)


def _q(cid, turn, gold, seeds=()):
  return ct.TurnQuery(cid, turn, f"{cid} {turn}", frozenset(seeds), frozenset(gold))


# ----------------------------------------------------------------------------------------------- #
# Metric definitions.


def test_turn_metrics_exact_values():
  m = ct.turn_metrics(["a", "x", "b", "y"], {"a", "b", "c"}, ks=(1, 2, 4))
  assert m["hit@1"] == m["precision@1"] == m["mrr@1"] == m["map@1"] == 1.0
  assert m["recall@1"] == pytest.approx(1 / 3)
  assert m["precision@2"] == 0.5 and m["recall@2"] == pytest.approx(1 / 3)
  assert m["map@2"] == pytest.approx(1 / 2)  # (1/1) / min(3, 2)
  assert m["recall@4"] == pytest.approx(2 / 3) and m["precision@4"] == 0.5 and m["mrr@4"] == 1.0
  assert m["map@4"] == pytest.approx((1 / 1 + 2 / 3) / 3)  # hits at ranks 1 and 3, / min(3, 4)

  m = ct.turn_metrics(["x", "y", "a"], {"a"}, ks=(1, 2, 3))
  assert (m["hit@1"], m["hit@2"], m["hit@3"]) == (0.0, 0.0, 1.0)
  assert m["mrr@2"] == 0.0 and m["mrr@3"] == pytest.approx(1 / 3) and m["map@3"] == pytest.approx(1 / 3)
  assert m["precision@3"] == pytest.approx(1 / 3) and m["recall@3"] == 1.0

  # A ranking shorter than k: its empty places are misses for precision; AP divides by min(|G|, k).
  m = ct.turn_metrics(["a"], {"a", "b"}, ks=(5,))
  assert m == {"hit@5": 1.0, "recall@5": 0.5, "precision@5": 0.2, "mrr@5": 1.0, "map@5": 0.5}
  m = ct.turn_metrics(["b", "a"], {"a", "b"}, ks=(10,))
  assert m["map@10"] == 1.0 and m["precision@10"] == pytest.approx(0.2)
  assert ct.turn_metrics([], {"a"}, ks=(1,)) == {"hit@1": 0.0, "recall@1": 0.0, "precision@1": 0.0,
                                                "mrr@1": 0.0, "map@1": 0.0}


def test_macro_and_micro_differ_with_unequal_turn_counts():
  queries = [_q("A", 0, {"g"}), _q("B", 0, {"g"}), _q("B", 1, {"g"}), _q("B", 2, {"g"})]
  ranked = [["g"], ["x"], ["x"], ["x"]]
  out = ct.evaluate_turns(ranked, queries, ks=(1,))
  assert out["micro"]["hit@1"] == 0.25  # 1 of 4 turns
  assert out["macro"]["hit@1"] == 0.5  # A: 1.0, B: 0.0
  assert (out["num_conversations"], out["num_turns"], out["turns_skipped"]) == (2, 4, 0)
  assert out["per_turn"] == {"turn": [0, 1, 2], "num_turns": [2, 1, 1], "hit@1": [0.5, 0.0, 0.0]}
  # B's turn 0 hits: macro = (1 + 1/3) / 2, micro = 2 / 4.
  out = ct.evaluate_turns([["g"], ["g"], ["x"], ["x"]], queries, ks=(1,))
  assert out["macro"]["hit@1"] == pytest.approx(2 / 3) and out["micro"]["hit@1"] == 0.5
  # per conversation (what a paired test resamples): A 1.0, B 1/3; their mean is the macro value
  per = out["per_conversation"]
  assert per["conversation_id"] == ["A", "B"] and per["hit@1"] == [1.0, round(1 / 3, 6)]
  assert per["mrr@1"] == per["hit@1"] and len(per["recall@1"]) == len(per["map@1"]) == 2
  with pytest.raises(UserInputError, match="3 rankings for 4 queries"):
    ct.evaluate_turns(ranked[:3], queries)


def test_result_rows_carry_per_conversation_values_whose_mean_is_the_macro_value():
  """A results row (turns_study._row) on hand-made rankings: conversation A has 2 scored turns, B 3
  (its turn 2 skipped: its seed is its only gold key), C 1; ids listed once, per-row values in their order."""
  queries = [_q("A", 0, {"g", "h"}), _q("A", 1, {"g", "h"}, seeds={"g"}),
             _q("B", 0, {"b"}), _q("B", 1, {"b"}), _q("B", 2, {"b"}, seeds={"b"}), _q("B", 3, {"b"}),
             _q("C", 0, {"c"})]
  ranked = [["x", "g"], ["h"], ["b"], ["x", "x2", "b"], ["b"], ["y"], ["y"]]
  rows, ids = [], []
  for name, ranking in (("bm25", ranked), ("most_popular", [["z"]] * len(queries))):
    result = {**ct.evaluate_turns(ranking, queries, ks=(1, 10)), "empty_queries": 0, "candidates": 11,
              "rank_seconds": 0.0}  # rank_turns' info
    rows.append(turns_study._row(name, result, None))  # pylint: disable=protected-access
    ids.append(result["per_conversation"]["conversation_id"])
  assert turns_study.scored_conversations(ids) == ["A", "B", "C"]
  bm25 = rows[0]
  assert "conversation_id" not in bm25["per_conversation"]
  # A: turn 0 hit at rank 2 (recall 1/2, MRR 1/2, AP (1/2)/2), turn 1 (gold {h}) hit at rank 1;
  # B: turns 0, 1, 3 -> hit at 1, hit at 3, miss; C: miss.
  assert bm25["per_conversation"]["hit@10"] == [1.0, round(2 / 3, 6), 0.0]
  assert bm25["per_conversation"]["recall@10"] == [0.75, round(2 / 3, 6), 0.0]
  assert bm25["per_conversation"]["mrr@10"] == [0.75, round((1 + 1 / 3) / 3, 6), 0.0]
  assert bm25["per_conversation"]["map@10"] == [0.625, round((1 + 1 / 3) / 3, 6), 0.0]
  assert bm25["macro"]["hit@10"] == round((1 + 2 / 3 + 0) / 3, 4) == 0.5556
  assert bm25["macro"]["mrr@10"] == round((0.75 + 4 / 9) / 3, 4) == 0.3981
  for row in rows:
    for name, values in row["per_conversation"].items():
      assert np.mean(values) == pytest.approx(row["macro"][name], abs=1e-4)
  assert rows[1]["per_conversation"]["hit@10"] == [0.0, 0.0, 0.0] and rows[1]["macro"]["hit@10"] == 0.0
  with pytest.raises(RuntimeError, match="different conversations"):
    turns_study.scored_conversations([["A", "B"], ["B", "A"]])


def test_seeds_leave_ranking_and_gold_and_duplicates_are_dropped():
  q = _q("A", 1, {"s", "g1", "g2"}, seeds={"s"})
  out = ct.evaluate_turns([["s", "x", "x", "g1"]], [q], ks=(1, 2))
  # Ranking -> [x, g1]; gold -> {g1, g2}.
  assert out["micro"]["hit@1"] == 0.0 and out["micro"]["hit@2"] == 1.0
  assert out["micro"]["recall@2"] == 0.5 and out["micro"]["mrr@2"] == 0.5
  assert out["micro"]["map@2"] == pytest.approx(0.5 / 2)


def test_a_turn_without_gold_left_is_skipped():
  queries = [_q("A", 0, {"g"}), _q("A", 1, {"g"}, seeds={"g"})]
  out = ct.evaluate_turns([["x"], ["g"]], queries, ks=(1,))
  assert (out["num_turns"], out["turns_skipped"], out["micro"]["hit@1"]) == (1, 1, 0.0)
  with pytest.raises(UserInputError, match="no turn to score"):
    ct.evaluate_turns([["g"]], queries[1:])


# ----------------------------------------------------------------------------------------------- #
# Queries from raw conversations.


def test_read_turn_queries_texts_seeds_gold_and_max_turns(tmp_path):
  conv = _conv("c1", [("  Hi,\n I need\tsongs ", ["v1", "v2", "v3", "v4"]), ("", ["v5"]), ("more rock", []),
                      ("and jazz", ["v6"])], ["v1", "v2", "v3", "v4", "v5", "v6", "v7"])
  path = _write(tmp_path / "d.jsonl", [conv, _conv("empty", [("nothing", [])], [])])
  qs = ct.read_turn_queries(path)
  assert [(q.conversation_id, q.turn) for q in qs] == [("c1", t) for t in range(4)]  # no goal: no queries
  assert [q.text for q in qs] == ["Hi, I need songs", "Hi, I need songs", "Hi, I need songs more rock",
                                  "Hi, I need songs more rock and jazz"]
  key = ct.TrackKeys.from_dialogs(ct.read_dialogs(path)).key
  assert all(q.gold == {key(f"v{i}") for i in range(1, 8)} and len(q.gold) == 7 for q in qs)
  # Seeds: the first 3 liked tracks of each EARLIER turn (v4 is the 4th; the current turn's are unknown).
  assert [q.seeds for q in qs] == [frozenset(), {key("v1"), key("v2"), key("v3")},
                                   {key(v) for v in ("v1", "v2", "v3", "v5")},
                                   {key(v) for v in ("v1", "v2", "v3", "v5")}]
  assert [q.turn for q in ct.read_turn_queries(path, max_turns=2)] == [0, 1]
  assert len(ct.read_turn_queries(path, max_turns=None)) == 4
  shout = ct.read_turn_queries(path, text_fn=lambda text, conv: f"{conv.conversation_id}: {text.upper()}")
  assert shout[0].text == "c1: HI, I NEED SONGS"
  assert [q.conversation_id for q in ct.read_turn_queries(path, conversation_ids=["empty"])] == []
  with pytest.raises(UserInputError, match="not in the CPCD files read, e.g. 'nope'"):
    ct.read_turn_queries(path, conversation_ids=["c1", "nope"])
  # The seeds of a turn with every goal track liked before leave nothing: skipped at evaluation.
  short = _write(tmp_path / "s.jsonl", [_conv("c2", [("a", ["v1", "v2"]), ("b", [])], ["v1", "v2"])])
  qs = ct.read_turn_queries(short)
  out = ct.evaluate_turns([[key("v1")], [key("v1")]], qs, ks=(1,))
  assert (out["num_turns"], out["turns_skipped"], out["micro"]["hit@1"]) == (1, 1, 1.0)


def test_cluster_keys_merge_video_ids_of_one_song(tmp_path):
  tracks = {"v1": _track("Enter Sandman", ["Metallica"]),
            "v2": _track("enter  sandman", ["METALLICA"]),  # same song key as v1
            "v3": _track("Enter Sandman (Remastered)", ["Metallica"]),  # other title: only the cluster joins
            "v4": _track("So What", ["Miles Davis"])}
  conv = _conv("c", [("metal", ["v3"]), ("more", [])], ["v1", "v2", "v3", "v4", "v9"], tracks)
  del conv["tracks"]["v9"]  # a goal id without metadata and cluster keeps its own id
  path = _write(tmp_path / "d.jsonl", [conv])
  clusters = _write(tmp_path / "clusters.jsonl", [{"track_id": "v3", "cluster_id": "c1", "canonical_id": "v3"},
                                                  {"track_id": "v2", "cluster_id": "c1", "canonical_id": "v3"}])
  plain = ct.read_turn_queries(path)
  assert len(plain[0].gold) == 4  # v1 = v2 by title + artists; v3, v4, v9 apart
  qs = ct.read_turn_queries(path, clusters_file=clusters)
  assert qs[0].gold == {"cluster:c1", 'song:["so what", ["miles davis"]]', "id:v9"}
  assert qs[1].seeds == {"cluster:c1"}
  # Liking v3 at turn 0 removes v1, v2 and v3 (one cluster) from turn 1's gold.
  out = ct.evaluate_turns([["cluster:c1"], ['song:["so what", ["miles davis"]]']], qs, ks=(1,))
  assert out["per_turn"]["hit@1"] == [1.0, 1.0] and out["micro"]["recall@1"] == pytest.approx((1 / 3 + 1 / 2) / 2)
  # Aliases join ids that have neither metadata nor a cluster.
  keys = ct.TrackKeys(metadata={"v1": ("A", ("B",))}, aliases={"x2": "x1", "v7": "v1"})
  assert keys.key("x2") == keys.key("x1") == "id:x1" and keys.key("v7") == keys.key("v1")
  assert keys.key("unseen") == "id:unseen" and "unseen" not in keys
  bad = _write(tmp_path / "bad.jsonl", [{"track_id": "v1", "cluster_id": "c1"}, {"track_id": "v1", "cluster_id": "c2"}])
  with pytest.raises(UserInputError, match=r"bad.jsonl:2: track 'v1' is in two clusters"):
    ct.read_clusters(bad)
  with pytest.raises(UserInputError, match=r"d.jsonl:1: .*goal_playlist"):
    ct.read_dialogs(_write(tmp_path / "d.jsonl", [{**conv, "goal_playlist": "v1"}]))


# ----------------------------------------------------------------------------------------------- #
# Ranking catalog rows.


def test_rank_turns_asks_for_enough_rows_and_dedups_by_key():
  queries = [_q("A", 0, {"g"}), _q("A", 1, {"g", "h"}, seeds={"s1", "s2"})]
  catalog_keys = ["s1", "x", "x", "s2", "g", "h", "y", "z"]  # rows 1 and 2 share a key
  asked = []

  def rank_fn(texts, n):
    asked.append((list(texts), n))
    return np.tile(np.arange(n, dtype=np.int32), (len(texts), 1))

  out = ct.rank_turns(rank_fn, queries, catalog_keys, 2, ks=(1, 2))
  assert ct.candidates_needed(queries, 2) == 4
  # 4 rows -> keys [s1, x, s2]: turn 0 has its 2; turn 1 keeps [x] once its seeds go, so it alone is
  # asked again, for twice as many rows.
  assert asked == [(["A 0", "A 1"], 4), (["A 1"], 8)]
  assert out["calls"] == 2 and out["candidates"] == 4
  # Turn 0: [s1, x, s2, g, ...]: no gold in the top 2.  Turn 1: [x, g, h, ...]: g at rank 2.
  assert out["per_turn"]["hit@2"] == [0.0, 1.0] and out["micro"]["mrr@2"] == 0.25
  assert out["micro"]["recall@2"] == pytest.approx(0.25) and out["micro"]["precision@2"] == 0.25
  with pytest.raises(UserInputError, match="catalog row 9"):
    ct.rank_turns(lambda texts, n: np.full((len(texts), 1), 9), queries, catalog_keys, 2)
  # Empty texts are not sent; -1 rows are "none".
  empty = [ct.TurnQuery("B", 0, "", frozenset(), frozenset({"g"}))]
  out = ct.rank_turns(lambda texts, n: np.full((len(texts), n), -1), queries[:1] + empty, catalog_keys, 1)
  assert out["empty_queries"] == 1 and out["micro"]["hit@1"] == 0.0 and out["num_turns"] == 2


# ----------------------------------------------------------------------------------------------- #
# The tool on the CPCD slice.


@pytest.fixture(scope="module")
def slice_dataset(tmp_path_factory):
  out = tmp_path_factory.mktemp("cpcd_turns") / "cpcd"
  assert cli.main(["import", "cpcd", CPCD_SLICE, "--out", str(out), "--vocab_size", "600"]) == 0
  return str(out)


def test_catalog_keys_and_query_texts_match_the_import(slice_dataset):
  ds = formats.Dataset.load(slice_dataset)
  files = [os.path.join(CPCD_SLICE, f) for f in ("cpcd_v1.dialogs.dev.train.jsonl", "cpcd_v1.dialogs.dev.val.jsonl")]
  dialogs = [d for f in files for d in ct.read_dialogs(f)]
  keys = ct.TrackKeys.from_dialogs(dialogs, aliases=ct.read_aliases(slice_dataset))
  cat = ct.catalog_keys(ds.tracks, keys)
  assert len(cat) == len(set(cat)) == 1010  # one key per song
  assert keys.key("3mwiO5st-us") == cat[ds.track_row["2ulp_AMut14"]]  # an alias has its song's key
  queries = ct.turn_queries(dialogs, keys, max_turns=None, conversation_ids=ds.split_ids("test"))
  last = {q.conversation_id: q for q in queries}
  titles = {p.playlist_id: p.title for p in ds.playlists("test")}
  assert len(titles) == 10 and {cid: q.text for cid, q in last.items()} == titles
  # Every goal track of a test conversation is one catalog row's key.
  for p in ds.playlists("test"):
    assert last[p.playlist_id].gold == {cat[ds.track_row[t]] for t in p.track_ids}
  with pytest.raises(UserInputError, match="in none of the CPCD conversations read"):
    ct.catalog_keys(ds.tracks, ct.TrackKeys.from_dialogs(dialogs[:3]))


@pytest.mark.parametrize("mode", [m for m in ("masked", "entities_masked") if m in cpcd.ARTISTS])
def test_tool_query_texts_get_the_import_masking(mode, tmp_path):
  out = tmp_path / mode
  assert cli.main(["import", "cpcd", CPCD_SLICE, "--out", str(out), "--artists", mode, "--vocab_size", "600"]) == 0
  ds = formats.Dataset.load(out)
  files = [os.path.join(CPCD_SLICE, f) for f in (cpcd.TRAIN_FILE, cpcd.VAL_FILE)]
  dialogs = [d for f in files for d in ct.read_dialogs(f)]
  queries = ct.turn_queries(dialogs, ct.TrackKeys.from_dialogs(dialogs), max_turns=None,
                            conversation_ids=ds.split_ids("test"),
                            text_fn=turns_study.query_text_fn(ds, dialogs, 2048))
  last = {q.conversation_id: q.text for q in queries}
  prompts = {p.playlist_id: prompts_lib.make_prompt(p, "title", max_chars=2048) for p in ds.playlists("test")}
  assert last == prompts and len(prompts) == 10
  unmasked = {p.playlist_id: p.title for p in formats.Dataset.load(_plain_import(tmp_path)).playlists("test")}
  assert sum(last[c] != unmasked[c] for c in last) >= 5  # the masking did something


def _plain_import(tmp_path):
  out = tmp_path / "plain"
  assert cli.main(["import", "cpcd", CPCD_SLICE, "--out", str(out), "--vocab_size", "600"]) == 0
  return out


def test_tool_writes_results(slice_dataset, tmp_path, capsys):
  out = tmp_path / "results" / "results.json"
  assert tool.main(["--dataset_dir", slice_dataset, "--cpcd_dir", CPCD_SLICE, "--methods", "most_popular,bm25",
                    "--json", str(out)]) == 0
  doc = json.loads(out.read_text(encoding="utf-8"))
  assert set(doc) == {"protocol", "data", "results", "reference", "machine", "seed", "command"}
  assert doc["seed"] == 0 and doc["command"].startswith("python tools/cpcd_turns.py --dataset_dir ")
  with open(os.path.join(CPCD_SLICE, "cpcd_v1.dialogs.dev.val.jsonl"), encoding="utf-8") as f:
    raw = [json.loads(line) for line in f]
  num_turns = sum(min(len(c["turns"]), 10) for c in raw if c["goal_playlist"])
  assert (doc["data"]["test_conversations"], doc["data"]["turn_queries"]) == (10, num_turns) == (10, 57)
  assert doc["data"]["goal_keys"] == doc["data"]["goal_keys_in_catalog"] == 172
  rows = {r["name"]: r for r in doc["results"]}
  assert list(rows) == ["most_popular", "bm25"]
  names = {f"{m}@{k}" for m in ("hit", "recall", "precision", "mrr", "map") for k in (1, 5, 10)}
  for row in rows.values():
    assert set(row["macro"]) == set(row["micro"]) == names
    assert (row["num_conversations"], row["num_turns"] + row["turns_skipped"]) == (10, 57)
    assert row["train_seconds"] is not None and row["candidates"] >= 10
    per = row["per_conversation"]  # the macro value is the mean of the per-conversation values
    assert set(per) == {"hit@10", "recall@10", "mrr@10", "map@10"}
    for name, values in per.items():
      assert len(values) == 10 and np.mean(values) == pytest.approx(row["macro"][name], abs=1e-4)
  # the conversation ids the per-conversation values follow, listed once: the test split's, in file order
  assert doc["data"]["conversation_ids"] == [c["id"] for c in raw if c["goal_playlist"]]
  # Pinned: BM25 over metadata + training titles on this slice (15 training conversations).
  assert rows["bm25"]["macro"]["hit@10"] == pytest.approx(0.305, abs=1e-4)
  assert rows["bm25"]["micro"]["hit@10"] == pytest.approx(0.2632, abs=1e-4)
  assert rows["most_popular"]["macro"]["hit@10"] == 0.0
  ref = doc["reference"]
  assert ref["label"].startswith("reference, not a comparison")
  assert [r["macro"]["hit@10"] for r in ref["rows"]] == [0.2189, 0.2499, 0.2590]
  assert "cpu_count" in doc["machine"]
  assert "reference" in capsys.readouterr().out


def test_tool_tuned_and_hybrid_go_through_the_tuning_module(slice_dataset, tmp_path, monkeypatch):
  """The signatures of t2t_jax/studies/tuning.py, with fakes: what the tool passes and reports."""
  calls = {}

  def tune_bi_encoder(catalog, train, val_prompts, val_relevant, *, grid, seed, base_kwargs):
    calls["bi"] = (catalog.num_tracks, len(train), len(val_prompts), val_relevant, grid, seed, base_kwargs)
    return popularity.MostPopular().fit(catalog, train), {"best": {"epochs": 1}}

  def tune_hybrid(bm25_retriever, dense_retriever, val_prompts, val_relevant, *, weights, depth):
    calls["hybrid"] = (type(bm25_retriever).__name__, type(dense_retriever).__name__, len(val_prompts), weights, depth)
    return dense_retriever, {"best_weight": 0.5}

  fake = types.SimpleNamespace(tune_bi_encoder=tune_bi_encoder, tune_hybrid=tune_hybrid)
  monkeypatch.setattr(turns_study, "tuning", fake)
  out = tmp_path / "r.json"
  assert tool.main(["--dataset_dir", slice_dataset, "--cpcd_dir", CPCD_SLICE, "--methods", "hybrid,bi_encoder_tuned",
                    "--tune_grid", '{"epochs": [1, 2]}', "--hybrid_weights", "0,0.5", "--hybrid_depth", "30",
                    "--seed", "3", "--json", str(out)]) == 0
  num_tracks, num_train, num_val, val_relevant, grid, seed, base = calls["bi"]
  assert (num_tracks, num_train, num_val, grid, seed) == (1010, 15, 20, {"epochs": [1, 2]}, 3)
  assert len(val_relevant) == 20 and all(rows and min(rows) >= 0 for rows in val_relevant)
  assert base["track_text"] == "metadata" and "seed" not in base
  assert calls["hybrid"] == ("BM25Retriever", "MostPopular", 20, [0.0, 0.5], 30)
  rows = {r["name"]: r for r in json.loads(out.read_text(encoding="utf-8"))["results"]}
  assert list(rows) == ["hybrid", "bi_encoder_tuned"]  # the order asked for; each fitted once
  assert rows["bi_encoder_tuned"]["tuning"] == {"best": {"epochs": 1}}
  assert rows["hybrid"]["tuning"] == {"best_weight": 0.5}
  assert rows["hybrid"]["macro"] == rows["bi_encoder_tuned"]["macro"]  # the fake hybrid is the dense model


def test_tool_errors_name_the_flag(slice_dataset, tmp_path, capsys):
  assert tool.main(["--dataset_dir", slice_dataset, "--cpcd_dir", CPCD_SLICE, "--methods", "bm25,nope"]) == 2
  assert "--methods: unknown ['nope']" in capsys.readouterr().err
  assert tool.main(["--dataset_dir", slice_dataset, "--cpcd_dir", CPCD_SLICE, "--methods", "text2tracks"]) == 2
  assert "needs --model_dir" in capsys.readouterr().err
  assert tool.main(["--dataset_dir", slice_dataset, "--cpcd_dir", str(tmp_path), "--methods", "bm25"]) == 2
  assert f"--cpcd_dir {tmp_path}" in capsys.readouterr().err
  for bad in ("2,x", "-1"):
    assert tool.main(["--dataset_dir", slice_dataset, "--cpcd_dir", CPCD_SLICE, "--methods", "bm25",
                      "--t2t_lexical_prior_weights", bad]) == 2
    assert "--t2t_lexical_prior_weights: expected" in capsys.readouterr().err
  assert tool.main(["--dataset_dir", slice_dataset, "--cpcd_dir", CPCD_SLICE, "--methods", "bm25",
                    "--t2t_dense_prior_weights", "1,nan"]) == 2
  assert "--t2t_dense_prior_weights: expected" in capsys.readouterr().err


@pytest.mark.slow
def test_tool_tuned_bi_encoder_hybrid_and_text2tracks_over_it(slice_dataset, tmp_path):
  """The real route (MiniLM fine-tuned over all pairs, epochs chosen on validation; the hybrid; Text2Tracks
  warm-started from that encoder), tiny: 1 epoch, 8 decoder steps (needs sentence-transformers + MiniLM)."""
  pytest.importorskip("sentence_transformers")
  out = tmp_path / "r.json"
  assert tool.main(["--dataset_dir", slice_dataset, "--cpcd_dir", CPCD_SLICE,
                    "--methods", "bm25,bi_encoder_tuned,hybrid,text2tracks_tuned", "--tune_grid", '{"epochs": 1}',
                    "--work_dir", str(tmp_path / "work"), "--t2t_train_steps", "8", "--threads", "2",
                    "--t2t_lexical_prior_weights", "0,2", "--t2t_dense_prior_weights", "0,20",
                    "--json", str(out)]) == 0
  rows = {r["name"]: r for r in json.loads(out.read_text(encoding="utf-8"))["results"]}
  assert rows["bi_encoder_tuned"]["tuning"]["chosen"]["epochs"] == 1
  assert 0.0 <= rows["hybrid"]["tuning"]["chosen"]["weight"] <= 1.0
  t2t = rows["text2tracks_tuned"]
  assert t2t["decode_steps_per_id"] == 1 and t2t["id_vocab_size"] == 1010 and t2t["train_steps"] == 8
  assert os.path.isfile(os.path.join(t2t["model_dir"], "config.gin"))
  # The BM25 and dense priors' weights chosen together on the validation split (every pair) and kept in
  # the model dir the turns were ranked with.
  lex, dense = t2t["lexical_prior"], t2t["dense_prior"]
  assert [(t["weight"], t["dense_weight"]) for t in lex["trials"]] == [(0.0, 0.0), (0.0, 20.0), (2.0, 0.0), (2.0, 20.0)]
  assert lex["validation_playlists"] == 20 and dense["trials"] == lex["trials"]
  best = max(lex["trials"], key=lambda t: (t["val_hits@10"], t["val_map@10"], -(t["weight"] + t["dense_weight"]),
                                           -t["dense_weight"]))
  assert (lex["weight"], dense["weight"]) == (best["weight"], best["dense_weight"])
  # The model's frozen encoder is the tuned bi-encoder's: the served query embeddings are its own.
  assert dense["query_max_abs_diff"] < 1e-3
  from t2t_jax.serving import assets  # pylint: disable=import-outside-toplevel
  settings = assets.read_settings(t2t["model_dir"])
  assert (settings["lexical_prior_weight"], settings["dense_prior_weight"]) == (lex["weight"], dense["weight"])
  for row in rows.values():
    assert row["conversation"]["num_queries"] == 10 and 0.0 <= row["conversation"]["hits@10"] <= 1.0


def _run_result(seed, hit, convs=50, turns=283, per_conversation=None, conversation_ids=None):
  """A fake results file: rows bm25 and t2t (macro/micro hit@10 = `hit` etc.); with per_conversation
  {name: {metric: values}}, those rows' per-conversation values and data.conversation_ids."""
  def row(name, h):
    out = {"name": name, "method": name.upper(), "conversation": {"hits@10": h + 0.2},
           **{level: {"hit@10": h, "recall@10": h / 4, "mrr@10": h / 2, "map@10": h / 3}
              for level in ("macro", "micro")}}
    if per_conversation and name in per_conversation:
      out["per_conversation"] = per_conversation[name]
    return out
  names = ("bm25", "t2t") if not per_conversation else tuple(per_conversation)
  data = {"test_conversations": convs, "turn_queries": turns}
  if conversation_ids is not None:
    data["conversation_ids"] = conversation_ids
  return {"seed": seed, "data": data,
          "results": [row(name, 0.3 if name == "bm25" else hit) for name in names]}


def test_aggregate_runs_mean_and_sample_std_over_seeds(tmp_path):
  runs = [(f"s{i}", _run_result(i, h)) for i, h in enumerate((0.5, 0.6, 0.7))]
  out = ct.aggregate_runs(runs)
  assert out["runs"] == ["s0", "s1", "s2"] and out["num_runs"] == 3 and out["turn_queries"] == 283
  t2t = {m["name"]: m for m in out["methods"]}["t2t"]
  assert t2t["macro"]["hit@10"] == {"mean": 0.6, "std": 0.1, "min": 0.5, "max": 0.7, "values": [0.5, 0.6, 0.7]}
  assert t2t["conversation_hits@10"]["mean"] == 0.8
  assert {m["name"]: m for m in out["methods"]}["bm25"]["micro"]["hit@10"]["std"] == 0.0
  assert out["paired_bootstrap"] == []  # no text2tracks* row beside a tuned bi-encoder or hybrid
  with pytest.raises(UserInputError, match="different test sets"):
    ct.aggregate_runs([("a", _run_result(0, 0.5)), ("b", _run_result(1, 0.5, convs=40))])
  # the tool's --aggregate writes the same summary, labelled by file and seed
  paths = []
  for label, result in runs:
    paths.append(str(tmp_path / f"{label}.json"))
    with open(paths[-1], "w", encoding="utf-8") as f:
      json.dump(result, f)
  res = subprocess.run([sys.executable, "tools/cpcd_turns.py", "--aggregate", *paths, "--json",
                        str(tmp_path / "summary.json")], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert res.returncode == 0, res.stderr
  with open(tmp_path / "summary.json", encoding="utf-8") as f:
    summary = json.load(f)
  assert summary["seeds"] == [0, 1, 2] and summary["methods"][1]["macro"]["hit@10"]["mean"] == 0.6
  assert "t2t" in res.stdout and "0.600 +- 0.100 over 3 runs" in res.stdout
  assert "no paired bootstrap" in res.stdout


# Per-conversation macro values of four conversations in two seeds (hit@10 and mrr@10; recall and MAP
# are not tested pairwise).  Seed 1 lists the conversations in another order: runs are aligned by id.
_IDS = ["c1", "c2", "c3", "c4"]
_PER_CONV = {
    0: {"bi_encoder_tuned": {"hit@10": [1.0, 0.5, 0.0, 0.5], "mrr@10": [0.5, 0.25, 0.0, 0.5]},
        "hybrid": {"hit@10": [1.0, 1.0, 0.0, 0.0], "mrr@10": [1.0, 0.5, 0.0, 0.0]},
        "text2tracks_tuned": {"hit@10": [1.0, 1.0, 0.5, 0.5], "mrr@10": [1.0, 0.5, 0.25, 0.5]}},
    1: {"bi_encoder_tuned": {"hit@10": [1.0, 0.5, 0.5, 0.5], "mrr@10": [1.0, 0.5, 0.5, 0.5]},
        "hybrid": {"hit@10": [1.0, 1.0, 0.0, 0.0], "mrr@10": [1.0, 0.5, 0.0, 0.0]},
        "text2tracks_tuned": {"hit@10": [1.0, 1.0, 1.0, 0.0], "mrr@10": [1.0, 1.0, 0.5, 0.0]}},
}
_ORDER = {0: [0, 1, 2, 3], 1: [3, 2, 1, 0]}  # seed 1's file order: c4, c3, c2, c1


def _paired_runs(tmp_path):
  paths = []
  for seed, per in _PER_CONV.items():
    reorder = lambda values, seed=seed: [values[i] for i in _ORDER[seed]]  # noqa: E731
    result = _run_result(seed, 0.5, convs=4, turns=9, conversation_ids=reorder(_IDS),
                         per_conversation={n: {m: reorder(v) for m, v in ms.items()} for n, ms in per.items()})
    paths.append(str(tmp_path / f"seed{seed}.json"))
    with open(paths[-1], "w", encoding="utf-8") as f:
      json.dump(result, f)
  return paths


def test_aggregate_paired_bootstrap_over_conversations_with_seeds_averaged(tmp_path):
  paths = _paired_runs(tmp_path)
  res = subprocess.run([sys.executable, "tools/cpcd_turns.py", "--aggregate", *paths, "--json",
                        str(tmp_path / "summary.json")], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert res.returncode == 0, res.stderr
  with open(tmp_path / "summary.json", encoding="utf-8") as f:
    summary = json.load(f)
  boots = {(b["text2tracks"], b["baseline"]): b for b in summary["paired_bootstrap"]}
  assert list(boots) == [("text2tracks_tuned", "bi_encoder_tuned"), ("text2tracks_tuned", "hybrid")]
  # Seeds averaged per conversation (c1..c4): text2tracks hit@10 [1, 1, 0.75, 0.25], bi-encoder
  # [1, 0.5, 0.25, 0.5], hybrid [1, 1, 0, 0]; differences vs the bi-encoder [0, 0.5, 0.5, -0.25]
  # (mean 0.1875), vs the hybrid [0, 0, 0.75, 0.25] (mean 0.25).
  bi, hy = boots[("text2tracks_tuned", "bi_encoder_tuned")], boots[("text2tracks_tuned", "hybrid")]
  assert bi["hit@10"]["delta"] == 0.1875 and hy["hit@10"]["delta"] == 0.25
  assert bi["hit@10"]["means"] == {"text2tracks_tuned": 0.75, "bi_encoder_tuned": 0.5625}
  assert hy["hit@10"]["means"] == {"text2tracks_tuned": 0.75, "hybrid": 0.5}
  # mrr@10: text2tracks [1, 0.75, 0.375, 0.25], bi-encoder [0.75, 0.375, 0.25, 0.5]: mean diff 0.125
  assert bi["mrr@10"]["delta"] == 0.125 and bi["mrr@10"]["means"]["bi_encoder_tuned"] == 0.4688
  for b in (bi, hy):
    for m in ("hit@10", "mrr@10"):
      assert b[m]["n"] == 4 and b[m]["num_samples"] == ct.BOOTSTRAP_SAMPLES and b[m]["ci_level"] == 0.95
      assert b[m]["ci"][0] <= b[m]["delta"] <= b[m]["ci"][1] and 0 < b[m]["p"] <= 1
  # exactly stats.paired_bootstrap on the seed-averaged vectors (seed 0)
  ref = stats.paired_bootstrap([1, 1, 0.75, 0.25], [1, 1, 0, 0], num_samples=ct.BOOTSTRAP_SAMPLES, seed=0)
  assert hy["hit@10"]["ci"] == [round(ref["low"], 4), round(ref["high"], 4)]
  assert hy["hit@10"]["p"] == round(ref["p_value"], 4)
  assert hy["hit@10"]["ci"][0] == 0.0  # 4 conversations: a resample of c1 and c2 only has no difference
  assert (f"paired bootstrap text2tracks_tuned - hybrid (4 conversations, each one's macro value (mean over its "
          f"turns) averaged over the 2 runs): macro hit@10 +0.250 [+0.000, {hy['hit@10']['ci'][1]:+.3f}] "
          f"p={hy['hit@10']['p']:.4f}; macro mrr@10 ") in res.stdout


def test_aggregate_paired_bootstrap_refuses_runs_of_other_conversations(tmp_path, capsys):
  paths = _paired_runs(tmp_path)
  with open(paths[1], encoding="utf-8") as f:
    other = json.load(f)
  other["data"]["conversation_ids"][0] = "c9"  # same number of conversations, one of them another
  with open(tmp_path / "other.json", "w", encoding="utf-8") as f:
    json.dump(other, f)
  assert tool.main(["--aggregate", paths[0], str(tmp_path / "other.json")]) == 2
  err = capsys.readouterr().err
  assert f"{tmp_path / 'other.json'} scored other conversations than {paths[0]}" in err
  assert "1 only in" in err and "'c9'" in err and "'c4'" in err and "the same conversations in every run" in err
  # a results file of the older tool (no per-conversation values) cannot enter a paired test
  del other["data"]["conversation_ids"]
  with open(tmp_path / "old.json", "w", encoding="utf-8") as f:
    json.dump(other, f)
  assert tool.main(["--aggregate", paths[0], str(tmp_path / "old.json")]) == 2
  assert "no per-conversation values" in capsys.readouterr().err
  # a row whose values do not match the conversation ids
  with open(paths[1], encoding="utf-8") as f:
    short = json.load(f)
  short["results"][0]["per_conversation"]["hit@10"].pop()
  with open(paths[0], encoding="utf-8") as f:
    first = json.load(f)
  with pytest.raises(UserInputError, match="row 'bi_encoder_tuned' has 3 per-conversation hit@10 values for 4"):
    ct.aggregate_runs([("a", first), ("b", short)])
