"""tools/compare_ids.py end to end at a tiny size: rows, files, charts, and the shared-split guarantee."""

import csv
import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import compare_ids  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.studies import compare_ids as study  # pylint: disable=g-import-not-at-top,wrong-import-position

pytestmark = pytest.mark.entry
TINY_GIN = os.path.join(ROOT, "gin", "experiments", "compare_ids_tiny.gin")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(out, *bindings):
  import gin  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  try:
    return compare_ids.main(["--gin_file", TINY_GIN, "--out", str(out), "--work_dir", os.path.join(out, "work"),
                             "--no_progress",
                             *[x for b in bindings for x in ("--gin_bindings", b)]])
  finally:
    gin.clear_config()


@pytest.fixture(scope="module")
def result(tmp_path_factory):
  out = tmp_path_factory.mktemp("cmp")
  rc = _run(out, 'compare_ids.id_specs = [("semantic_rq", "semantic_rq", '
                 '{"level_sizes": (8, 8), "iterations": 5, "last_level_order": "popularity"})]',
            "compare_ids.train_steps = 6",
            'compare_ids.dual_encoder_kwargs = {"train_steps": 4, "batch_size": 8}')
  assert rc == 0
  with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
    rows = json.load(f)
  return out, rows


def test_rows_and_columns(result):
  _, rows = result
  assert [r["method"] for r in rows] == ["Text2Tracks (semantic_rq)", "BM25 (bm25s)",
                                         "Dual encoder (T5 enc, in-batch softmax)", "Most popular"]
  assert [r["id_strategy"] for r in rows] == ["semantic_rq", None, None, None]
  for r in rows:
    for key in ("method", "id_strategy", "hits@10", "map@10", "ndcg@10", "decode_steps_per_id",
                "train_seconds", "prompts_per_s"):
      assert key in r, (r["method"], key)
    assert r["hits@1"] <= r["hits@5"] <= r["hits@10"] and r["recall@10"] <= r["hits@10"]
    assert r["num_queries"] == 12  # compare_ids_tiny.gin: eval_playlists = 12, for every method
    assert r["prompts_per_s"] > 0
  t2t = rows[0]
  # (8, 8) residual k-means + one disambiguation level: 3 fixed decoding steps.
  assert t2t["decode_steps_per_id"] == 3.0 and t2t["decode_steps_max"] == 3
  assert t2t["train_examples_per_s"] > 0 and t2t["index_bytes"] > 0 and t2t["id_build_seconds"] > 0
  assert rows[2]["final_loss"] is not None and rows[2]["train_examples_per_s"] > 0
  assert rows[3]["train_seconds"] >= 0 and rows[1]["decode_steps_per_id"] is None


def test_methods_scored_on_the_same_split(result):
  """The Text2Tracks, BM25 and most-popular rows equal a direct recomputation on the task's test
  prompts (Text2Tracks through its trained model dir, as `t2t recommend` serves it)."""
  from t2t_jax.serving import retriever  # pylint: disable=g-import-not-at-top
  from t2t_jax import evaluation  # pylint: disable=g-import-not-at-top
  from t2t_jax.baselines import bm25, popularity  # pylint: disable=g-import-not-at-top
  from t2t_jax.baselines.catalog import CatalogTexts  # pylint: disable=g-import-not-at-top
  from t2t_jax.studies import pipeline  # pylint: disable=g-import-not-at-top
  from t2t_jax.data import formats, prompts as prompts_lib  # pylint: disable=g-import-not-at-top
  out, rows = result
  ds = formats.Dataset.load(os.path.join(out, "work", "data", "synthetic"))
  test = list(ds.playlists("test"))[:12]
  prompts = [prompts_lib.make_prompt(p, "title") for p in test]
  relevant = [[ds.track_row[t] for t in p.track_ids] for p in test]
  train = list(ds.playlists("train"))
  train_rows = [[ds.track_row[t] for t in p.track_ids] for p in train]
  catalog = CatalogTexts.from_tracks(ds.tracks, pipeline.track_text)
  train_prompts = [(prompts_lib.make_prompt(p, "title"), r) for p, r in zip(train, train_rows)]
  bm = bm25.BM25Retriever().fit(catalog, train_prompts)
  rec = retriever.GenerativeRetriever.from_model_dir(os.path.join(out, "work", "models", "semantic_rq"))
  assert rec.beam_size == 10  # compare_ids_tiny.gin's beam, written to the model dir's assets
  t2t = evaluation.evaluate_rankings(rec.recommend_rows(prompts, 10)[0], relevant, ks=(1, 5, 10))
  for key in ("hits@10", "map@10", "ndcg@10", "mrr"):
    assert rows[0][key] == pytest.approx(t2t[key]), key
  want = evaluation.evaluate_rankings(bm.recommend(prompts, 10), relevant, ks=(1, 5, 10))
  got = next(r for r in rows if r["method"].startswith("BM25"))
  for key in ("hits@10", "map@10", "ndcg@10", "mrr"):
    assert got[key] == pytest.approx(want[key])
  pop = popularity.MostPopular().fit(catalog, train_prompts)
  want = evaluation.evaluate_rankings(pop.recommend(prompts, 10), relevant, ks=(1, 5, 10))
  got = next(r for r in rows if r["method"] == "Most popular")
  assert got["hits@10"] == pytest.approx(want["hits@10"]) and got["map@10"] == pytest.approx(want["map@10"])


def test_files(result):
  out, rows = result
  with open(os.path.join(out, "results.csv"), encoding="utf-8") as f:
    table = list(csv.DictReader(f))
  assert [r["method"] for r in table] == [r["method"] for r in rows]
  assert float(table[0]["hits@10"]) == pytest.approx(rows[0]["hits@10"])
  md = open(os.path.join(out, "results.md"), encoding="utf-8").read()
  assert "| method | id_strategy | hits@10 |" in md and "| Text2Tracks (semantic_rq) | semantic_rq |" in md
  assert "Machine:" in md
  for name in ("metrics.png", "efficiency.png"):
    with open(os.path.join(out, name), "rb") as f:
      data = f.read()
    assert data.startswith(PNG_MAGIC) and len(data) < 200_000
  with open(os.path.join(out, "summary.json"), encoding="utf-8") as f:
    summary = json.load(f)
  assert summary["best_semantic"] == "semantic_rq" and summary["best_integer"] is None
  assert summary["semantic_minus_bm25_hits"] == pytest.approx(rows[0]["hits@10"] - rows[1]["hits@10"])
  assert "Best semantic vs. BM25" in md
  assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


def test_parse_id_specs_and_bad_config(tmp_path, capsys):
  from t2t_jax.ids import specs as specs_lib  # pylint: disable=g-import-not-at-top
  from t2t_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top
  specs = specs_lib.parse_id_specs([("a", "integer", {"order": "random"}), ("b", "content")])
  assert [(s.name, s.strategy, s.kwargs, s.family) for s in specs] == [
      ("a", "integer", {"order": "random"}, "integer"), ("b", "content", {}, "content")]
  for bad, match in (([("x", "semantic_pq")], "unknown strategy"), ([("x", "integer"), ("x", "content")], "unique"),
                     ([("x y", "integer")], "letters"), ([], "no ID strategies"), (["integer"], "expected")):
    with pytest.raises(UserInputError, match=match):
      specs_lib.parse_id_specs(bad)
  assert _run(tmp_path, 'compare_ids.id_specs = [("x", "semantic_pq")]') == 2
  assert "semantic_pq" in capsys.readouterr().err
  assert _run(tmp_path, "compare_ids.beam_size = 5") == 2
  assert "beam_size" in capsys.readouterr().err
  assert compare_ids.main(["--gin_file", str(tmp_path / "nope.gin"), "--out", str(tmp_path)]) == 2
  assert "nope.gin" in capsys.readouterr().err


def test_id_spec_embeddings_option(tmp_path, capsys):
  """Semantic specs name the embeddings they quantise; studies that cannot provide them say so."""
  from t2t_jax.ids import specs as specs_lib  # pylint: disable=g-import-not-at-top
  from t2t_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top
  sem, enc, integer = specs_lib.parse_id_specs([("s", "semantic_rq", {"level_sizes": (4, 4)}),
                                                ("e", "semantic_rq", {"level_sizes": (4, 4), "embeddings": "encoder"}),
                                                ("i", "integer")])
  assert (sem.embeddings, enc.embeddings, integer.embeddings) == ("cf", "encoder", None)
  for bad in ([("x", "semantic_rq", {"embeddings": "audio"})], [("x", "integer", {"embeddings": "cf"})]):
    with pytest.raises(UserInputError, match="embeddings="):
      specs_lib.parse_id_specs(bad)
  specs_lib.check_embeddings([sem, integer], ("cf",), "here")
  with pytest.raises(UserInputError, match="'e'.*not available in here.*nested"):
    specs_lib.check_embeddings([sem, enc], ("cf",), "here")
  assert _run(tmp_path, 'compare_ids.id_specs = [("e", "semantic_rq", {"embeddings": "encoder"})]') == 2
  assert "not available in the synthetic benchmark" in capsys.readouterr().err
  # The option is the caller's, not the builder's: the table is the same as without it.
  emb = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
  ids = [f"t{i}" for i in range(40)]
  a = specs_lib.build_table(enc, track_ids=ids, embeddings_NxD=emb)
  b = specs_lib.build_table(sem, track_ids=ids, embeddings_NxD=emb)
  np.testing.assert_array_equal(a.codes, b.codes)
  # Fused: unit rows, each part weighing the same.
  x, y = np.array([[3.0, 4.0]]), np.array([[0.0, 0.0, 2.0]])
  np.testing.assert_allclose(specs_lib.fused_embeddings(x, y), [[0.6, 0.8, 0.0, 0.0, 1.0]] / np.sqrt(2), rtol=1e-6)


def test_summarize_checks_the_papers_claims_on_rows():
  def row(strategy, hits, steps, method=None):
    return {"method": method or f"Text2Tracks ({strategy})", "id_strategy": strategy, "hits@10": hits,
            "decode_steps_per_id": steps}
  rows = [row("semantic_rq", 0.80, 3.0), row("semantic_hkmeans", 0.90, 2.0), row("integer_random", 0.60, 1.0),
          row("integer_tokenized", 0.50, 4.0), row("content", 0.40, 8.0),
          row("", 0.70, None, "BM25 (bm25s)"), row("", 0.65, None, "Dual encoder (T5 enc)")]
  for r in rows[-2:]:
    r["id_strategy"] = None
  out = study.summarize(rows)
  assert out["best_semantic"] == "semantic_hkmeans" and out["best_integer"] == "integer_random"
  assert out["semantic_vs_integer_rel_hits"] == pytest.approx(0.5)
  assert out["semantic_minus_bm25_hits"] == pytest.approx(0.2)
  assert out["semantic_minus_dual_encoder_hits"] == pytest.approx(0.25)
  assert out["content_over_semantic_steps"] == pytest.approx(4.0)  # best semantic: 2 steps
  assert out["content_over_semantic_steps_each"] == pytest.approx({"semantic_rq": 8 / 3, "semantic_hkmeans": 4.0})
  assert len(out["lines"]) == 4 and "+50.0% relative" in out["lines"][0]


def test_order_last_level_by_popularity():
  from t2t_jax.ids import specs  # pylint: disable=g-import-not-at-top
  from t2t_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top
  from t2t_jax.ids.table import IdTable  # pylint: disable=g-import-not-at-top
  codes = np.array([[0, 0], [0, 1], [1, 0], [0, 2], [1, 1], [1, 2]])
  table = IdTable(strategy="semantic_rq", track_ids=[f"t{i}" for i in range(6)], codes=codes, level_sizes=(2, 3))
  out = specs.order_last_level_by_popularity(table, np.array([1, 5, 3, 9, 3, 0]))
  # Group 0 (rows 0, 1, 3): counts 1, 5, 9 -> codes 2, 1, 0; group 1 (rows 2, 4, 5): 3, 3, 0 -> 0, 1, 2 (tie: row).
  assert out.codes.tolist() == [[0, 2], [0, 1], [1, 0], [0, 0], [1, 1], [1, 2]]
  assert out.level_sizes == (2, 3) and out.meta["last_level_order"] == "popularity"
  assert table.codes.tolist() == codes.tolist()  # input untouched
  one = IdTable(strategy="integer", track_ids=["a", "b"], codes=np.array([[0], [1]]), level_sizes=(2,))
  with pytest.raises(UserInputError, match="2 fixed levels"):
    specs.order_last_level_by_popularity(one, np.array([1, 2]))


@pytest.mark.slow
def test_all_strategies_tiny(tmp_path):
  """Every ID strategy of compare_ids_tiny.gin (six models) plus the three baselines."""
  assert _run(tmp_path, 'compare_ids.dual_encoder_kwargs = {"train_steps": 4, "batch_size": 8}') == 0
  with open(os.path.join(tmp_path, "results.json"), encoding="utf-8") as f:
    rows = json.load(f)
  by = {r["id_strategy"]: r for r in rows if r["id_strategy"]}
  assert list(by) == ["semantic_rq", "semantic_hkmeans", "integer_sequential", "integer_random",
                      "integer_tokenized", "content"]
  assert by["integer_sequential"]["decode_steps_per_id"] == 1.0
  assert by["integer_tokenized"]["decode_steps_per_id"] == 3.0  # 300 tracks: 3 decimal digits
  assert by["content"]["decode_steps_per_id"] > 3.0  # artist - title in text pieces, + EOS
  assert len(rows) == 9 and all(np.isfinite(r["hits@10"]) for r in rows)
  summary = study.summarize(rows)
  best_int = max(by[s]["hits@10"] for s in ("integer_sequential", "integer_random", "integer_tokenized"))
  best_sem = max(by[s]["hits@10"] for s in ("semantic_rq", "semantic_hkmeans"))
  sem_row = by[summary["best_semantic"]]
  assert sem_row["hits@10"] == best_sem
  assert summary["content_over_semantic_steps"] == pytest.approx(
      by["content"]["decode_steps_per_id"] / sem_row["decode_steps_per_id"])
  assert summary["content_over_semantic_steps_each"]["semantic_rq"] == pytest.approx(
      by["content"]["decode_steps_per_id"] / 3.0)
  if best_int > 0:
    assert summary["semantic_vs_integer_rel_hits"] == pytest.approx(best_sem / best_int - 1)
