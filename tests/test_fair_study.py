"""The nested protocol (compare_ids.protocol='nested', t2t_jax/studies/fair_study.py) on the tests/data/cpcd
slice: seeds x folds rows, tuned baselines chosen on validation, Text2Tracks selected on validation,
runs.jsonl (one line per test run, no test conversation among the validation queries of any choice of
its fold), the seed-averaged bootstrap; and the tuning / hybrid helpers on hand-made rankings."""

import json
import os
import re
import shutil
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import compare_ids  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.baselines import hybrid  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.studies import fair_study, tuning  # pylint: disable=g-import-not-at-top,wrong-import-position

FAIR_TINY_GIN = os.path.join(ROOT, "gin", "experiments", "compare_cpcd_fair_tiny.gin")


def test_fuse_weighted_rrf():
  sparse = np.array([[1, 2, 3, -1]])
  dense = np.array([[3, 4, 1, 5]])
  # weight 0 / 1: the dense / sparse ranking alone.
  np.testing.assert_array_equal(hybrid.fuse(sparse, dense, 4, weight=0.0), [[3, 4, 1, 5]])
  np.testing.assert_array_equal(hybrid.fuse(sparse, dense, 3, weight=1.0), [[1, 2, 3]])
  # weight 0.5, k0 = 1: 1 -> 1/2 + 1/4, 3 -> 1/4 + 1/2 (tie: better dense rank first), 2 -> 1/3, 4 -> 1/3 (dense
  # rank 2 before sparse-only 2), 5 -> 1/5.
  np.testing.assert_array_equal(hybrid.fuse(sparse, dense, 5, weight=0.5, k0=1.0), [[3, 1, 4, 2, 5]])
  with pytest.raises(UserInputError, match="weight"):
    hybrid.fuse(sparse, dense, 2, weight=1.5)


class _Fixed:
  def __init__(self, rows):
    self.rows = np.asarray(rows)

  def recommend(self, prompts, k):
    out = np.full((len(prompts), k), -1)
    n = min(k, self.rows.shape[1])
    out[:, :n] = self.rows[:len(prompts), :n]
    return out


def test_tune_hybrid_picks_the_validation_best_weight():
  # Gold row 7 is BM25's 1st and the dense retriever's 30th: only a BM25-heavy fusion has it in the top 10.
  sparse = _Fixed([[7] + list(range(100, 129))] * 2)
  dense = _Fixed([list(range(200, 229)) + [7]] * 2)
  model, info = tuning.tune_hybrid(sparse, dense, ["a", "b"], [[7], [7]], weights=[0.0, 0.5, 1.0], depth=30)
  assert info["chosen"]["weight"] in (0.5, 1.0) and info["chosen"]["hits@10"] == 1.0
  assert [t["hits@10"] for t in info["trials"]][0] == 0.0
  assert model.recommend(["a"], 10)[0, 0] == 7
  with pytest.raises(UserInputError, match="no validation"):
    tuning.tune_hybrid(sparse, dense, [], [], weights=[0.5])


def test_paired_rows_averages_seeds_and_resamples_within_shared_folds():
  def row(vals_by_fold):  # {fold: [per-seed value lists]} -> per_query.json's shape, every key the same values
    return {f: {str(s): {k: v for k in ("hits@10", "map@10", "artist_hits@10", "artist_map@10")}
                for s, v in enumerate(seeds)} for f, seeds in vals_by_fold.items()}
  pq = {"v|a": row({"0": [[1, 1, 0], [1, 0, 0]], "1": [[1, 1]], "2": [[0, 0]]}),
        "v|b": row({"0": [[0, 1, 0], [0, 1, 0]], "1": [[0, 1]]})}
  bt = fair_study.paired_rows(pq, "v", "a", "b", num_samples=500, seed=3)
  assert bt["folds"] == ["0", "1"] and bt["baseline"] == "b" and bt["text2tracks"] == "a"
  # seed means: a = [1, .5, 0, 1, 1], b = [0, 1, 0, 0, 1] -> mean difference 1.5 / 5
  assert bt["hits@10"]["mean_diff"] == pytest.approx(0.3) and bt["hits@10"]["num_queries"] == 5
  from t2t_jax import stats  # pylint: disable=g-import-not-at-top
  assert bt["map@10"] == stats.paired_bootstrap([1, .5, 0, 1, 1], [0, 1, 0, 0, 1], num_samples=500, seed=3,
                                                groups=[0, 0, 0, 1, 1])
  assert fair_study.paired_rows(pq, "v", "a", "missing", num_samples=10, seed=0) is None


def test_check_beam_scorings():
  assert fair_study.check_beam_scorings(None) is None
  assert fair_study.check_beam_scorings(["logit", "log_prob", "logit"]) == ("logit", "log_prob")  # order kept
  for bad in ([], "logit", ["log_prob", "prob"], [1]):
    with pytest.raises(UserInputError, match="compare_ids.beam_scorings"):
      fair_study.check_beam_scorings(bad)


def test_check_prior_weights():
  assert fair_study.check_prior_weights(None) is None
  assert fair_study.check_prior_weights([0, 2.5, 0.0]) == (0.0, 2.5)
  for bad in ([], "2", [-1.0], [float("inf")], [True], ["2"]):
    with pytest.raises(UserInputError, match="compare_ids.lexical_prior_weights"):
      fair_study.check_prior_weights(bad)
  with pytest.raises(UserInputError, match="compare_ids.dense_prior_weights"):
    fair_study.check_prior_weights([-2.0], "dense_prior_weights")


def test_check_beam_sizes():
  assert fair_study.check_beam_sizes(None, k=10) is None
  assert fair_study.check_beam_sizes([100, 20, 20], k=10) == (20, 100)  # sorted: ties go to the smaller
  for bad, words in (([], "non-empty"), ("20", "non-empty"), ([5], "[5]"), ([20, 2.5], "[2.5]"), ([True], "[True]")):
    with pytest.raises(UserInputError, match=re.escape(words)):
      fair_study.check_beam_sizes(bad, k=10)


def test_check_grid_errors():
  assert tuning.check_grid({"epochs": 3})["learning_rate"] == tuning.DEFAULT_GRID["learning_rate"]
  with pytest.raises(UserInputError, match="unknown keys"):
    tuning.check_grid({"lr": [1e-5]})
  with pytest.raises(UserInputError, match="epochs"):
    tuning.check_grid({"epochs": 0})
  with pytest.raises(UserInputError, match="learning_rate"):
    tuning.check_grid({"learning_rate": []})


@pytest.fixture(scope="module")
def fair_result(tmp_path_factory):
  pytest.importorskip("sentence_transformers")
  import gin  # pylint: disable=g-import-not-at-top
  from test_bi_encoder import _tiny_model_dir  # pylint: disable=g-import-not-at-top
  from test_compare_cpcd import _import  # pylint: disable=g-import-not-at-top
  tmp = str(tmp_path_factory.mktemp("fair"))
  dirs = {"as_written": _import(tmp, "as_written")}
  st_dir = _tiny_model_dir(os.path.join(tmp, "st"))
  out = os.path.join(tmp, "out")
  gin.clear_config()
  try:
    rc = compare_ids.main(["--gin_file", FAIR_TINY_GIN, "--out", out, "--work_dir", os.path.join(tmp, "work"),
                           "--no_progress", "--gin_bindings", f"compare_ids.dataset_dirs = {dirs!r}",
                           "--gin_bindings", f"compare_ids.bi_encoder_kwargs = {{'model_dir': {st_dir!r}, "
                           "'track_text': 'metadata', 'threads': 1}"])
  finally:
    gin.clear_config()
  assert rc == 0
  with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
    rows = json.load(f)
  with open(os.path.join(out, "runs.jsonl"), encoding="utf-8") as f:
    runs = [json.loads(line) for line in f]
  return dirs, out, rows, runs


@pytest.mark.entry
def test_nested_rows_and_runs_log(fair_result):
  dirs, out, rows, runs = fair_result
  per_seed = [r for r in rows if r.get("seeds") is None and r["fold"] != "all"]
  methods = {r["method"] for r in per_seed}
  t2t = [m for m in methods if m.startswith("Text2Tracks (selected on validation)")]
  assert t2t == ["Text2Tracks (selected on validation)"], methods  # one method whatever each fold picked
  assert {"Most popular", "BM25 (bm25s; docs: metadata + training prompts)",
          "Bi-encoder fine-tuned, tuned (MiniLM-L6, all pairs, MNRL)",
          "Hybrid BM25 + tuned bi-encoder (RRF, weight tuned)"} <= methods
  # Seeded methods: one test run per (fold, seed); fixed baselines: one per fold.  Nothing else ran on test.
  expected = 2 * (2 + 2 + 2) + 2 * 2  # folds x (tuned bi-encoder, hybrid, Text2Tracks) x seeds + fixed x folds
  assert len(runs) == len(per_seed) == expected
  seen = {(r["fold"], r["seed"], r["method"]) for r in runs}
  assert len(seen) == len(runs)  # each test fold once per configuration and seed
  for r in runs:
    assert not set(r["test_conversations"]) & set(r["validation_conversations"]), r["method"]
  # Every choice of a fold saw only that fold's validation conversations, none of which is a test one.
  with open(os.path.join(dirs["as_written"], "folds.json"), encoding="utf-8") as f:
    folds = json.load(f)["folds"]
  for r in runs:
    assert set(r["test_conversations"]) == set(folds[r["fold"]])
    if r["method"].startswith(("Bi-encoder fine-tuned", "Hybrid")):
      assert len(r["validation_conversations"]) >= 1
  # The tuned bi-encoder's configuration comes from its grid, chosen on validation; seed 1 reuses it.
  bi = [r for r in per_seed if r["method"].startswith("Bi-encoder fine-tuned")]
  for fold in (0, 1):
    chosen = [r["tuned"] for r in bi if r["fold"] == fold]
    assert len(chosen) == 2 and chosen[0] == chosen[1]
    assert chosen[0]["learning_rate"] in (1e-3, 1e-4) and 1 <= chosen[0]["epochs"] <= 2
  t2t_rows = [r for r in per_seed if r["method"] in t2t]
  assert all(r["decode_steps_per_id"] and r["id_vocab_size"] for r in t2t_rows)
  # 2 candidates x 2 scorings x 2 beams x 2 lexical x 2 dense prior weights (multi-step IDs)
  assert all(len(r["validation_choice"]) == 32 for r in t2t_rows)
  assert all(r["selected"] == f"{r['family']} ({r['id_strategy']})" for r in t2t_rows)
  # Every candidate's validation figures at every beam, per fold (the first seed trains them).
  with open(os.path.join(out, "validation.json"), encoding="utf-8") as f:
    val = json.load(f)
  assert sorted((v["fold"], v["family"], v["beam_scoring"], v["beam_size"], v["lexical_prior_weight"],
                 v["dense_prior_weight"]) for v in val) == [
      (fold, fam, scoring, beam, w, wd) for fold in (0, 1) for fam in ("micro_a", "micro_b")
      for scoring in ("log_prob", "logit") for beam in (10, 12) for w in (0.0, 2.0) for wd in (0.0, 20.0)]
  keys = ("family", "beam_size", "beam_scoring", "lexical_prior_weight", "dense_prior_weight", "val_hits@10",
          "val_map@10")
  for r in t2t_rows:
    mine = [v for v in val if v["fold"] == r["fold"]]
    assert [{k: v[k] for k in keys} for v in mine] == [{k: v[k] for k in keys} for v in r["validation_choice"]]
    # The pick is the best (candidate, scoring, beam) on validation, the earlier one on ties (candidate, then
    # log-probs before logits, then the smaller beam); test used its beam and scoring.
    best = max(mine, key=lambda v: (v["val_hits@10"], v["val_map@10"], -mine.index(v)))
    assert ((r["family"], r["beam_size"], r["beam_scoring"], r["lexical_prior_weight"], r["dense_prior_weight"])
            == (best["family"], best["beam_size"], best["beam_scoring"], best["lexical_prior_weight"],
                best["dense_prior_weight"]))
  for run in runs:
    if run["method"] in t2t:
      assert run["config"]["beam_size"] in (10, 12)
      assert run["config"]["beam_scoring"] in ("log_prob", "logit")
      assert run["config"]["lexical_prior_weight"] in (0.0, 2.0)
      assert run["config"]["dense_prior_weight"] in (0.0, 20.0)


@pytest.mark.entry
def test_nested_aggregates_and_bootstrap(fair_result):
  _, out, rows, runs = fair_result
  agg = [r for r in rows if r["fold"] == "all"]
  for r in agg:
    assert r["folds"] == 2
    seeded = r["method"].startswith(("Text2Tracks", "Bi-encoder fine-tuned", "Hybrid"))
    assert r["seeds"] == (2 if seeded else 1)
    per_fold = [x for x in rows if x.get("seeds") is not None and x["fold"] != "all" and x["method"] == r["method"]]
    assert r["hits@10"] == pytest.approx(np.mean([x["hits@10"] for x in per_fold]))
  with open(os.path.join(out, "summary.json"), encoding="utf-8") as f:
    summary = json.load(f)
  baselines = {b["baseline"] for b in summary["bootstrap"]}
  assert baselines == {"Bi-encoder fine-tuned, tuned (MiniLM-L6, all pairs, MNRL)",
                       "Hybrid BM25 + tuned bi-encoder (RRF, weight tuned)"}
  # Running again appends to runs.jsonl: reuse of a test fold is visible.
  assert os.path.getsize(os.path.join(out, "runs.jsonl")) > 0


def test_nested_needs_dataset_dirs_and_known_baselines(tmp_path, capsys):
  import gin  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  try:
    rc = compare_ids.main(["--gin_file", FAIR_TINY_GIN, "--out", str(tmp_path / "o"), "--gin_bindings",
                           "compare_ids.dataset_dirs = {'x': '/nonexistent'}", "--gin_bindings",
                           "compare_ids.baselines = ('dual_encoder',)"])
  finally:
    gin.clear_config()
  assert rc == 2
  assert "the nested protocol runs" in capsys.readouterr().err


@pytest.mark.entry
def test_merge_of_fold_split_runs_reproduces_the_single_run(fair_result, tmp_path):
  """Folds run in separate sessions merge into the study one run over every fold would have written."""
  _, out, rows, runs = fair_result
  with open(os.path.join(out, "per_query.json"), encoding="utf-8") as f:
    per_query = json.load(f)
  parts = []
  for fold in (0, 1):
    d = tmp_path / f"fold{fold}"
    d.mkdir()
    (d / "results.json").write_text(json.dumps([r for r in rows if r["fold"] == fold]))
    (d / "per_query.json").write_text(json.dumps(
        {m: {k: v for k, v in by_fold.items() if k == str(fold)} for m, by_fold in per_query.items()}))
    (d / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs if r["fold"] == fold))
    shutil.copy(os.path.join(out, "summary.json"), d / "summary.json")  # the runs' bootstrap size
    parts.append(str(d))
  merged = str(tmp_path / "merged")
  assert compare_ids.main(["--merge", *parts, "--out", merged]) == 0
  with open(os.path.join(merged, "results.json"), encoding="utf-8") as f:
    got = {(r["method"]): r for r in json.load(f) if r["fold"] == "all"}
  want = {r["method"]: r for r in rows if r["fold"] == "all"}
  assert sorted(got) == sorted(want)
  for method, r in want.items():
    for key in ("hits@10", "map@10", "hits@10_std", "folds", "seeds", "num_queries"):
      assert got[method].get(key) == pytest.approx(r.get(key)), (method, key)
  with open(os.path.join(merged, "summary.json"), encoding="utf-8") as f, \
       open(os.path.join(out, "summary.json"), encoding="utf-8") as g:
    assert json.load(f)["bootstrap"] == json.load(g)["bootstrap"]
  with open(os.path.join(merged, "runs.jsonl"), encoding="utf-8") as f:
    assert len(f.readlines()) == len(runs)
  # the same fold twice, or a dir that is not a result dir, is refused with one line
  assert compare_ids.main(["--merge", parts[0], parts[0], "--out", str(tmp_path / "twice")]) == 2
  assert compare_ids.main(["--merge", str(tmp_path), "--out", str(tmp_path / "x")]) == 2


@pytest.mark.entry
def test_merge_keeps_one_selected_method_when_folds_pick_differently(fair_result, tmp_path):
  """Runs written before 2026-12-05 named the validation pick in the method: a fold whose inner
  validation picked another family became another method (and fell out of the bootstrap).  The
  merge makes them one `SELECTED` method and records each fold's pick."""
  from t2t_jax.studies import fair_study  # pylint: disable=g-import-not-at-top
  _, out, rows, runs = fair_result
  with open(os.path.join(out, "per_query.json"), encoding="utf-8") as f:
    per_query = json.load(f)
  sel = fair_study.SELECTED
  parts = []
  for fold, pick in ((0, None), (1, "other_family")):
    def old_name(method, r=None, pick=pick):
      if method != sel:
        return method
      family = pick or (r or {}).get("family") or "fam"
      return f"{sel}: {family} (integer_atomic)"
    fold_rows = []
    for r in rows:
      if r["fold"] == fold:
        r = {k: v for k, v in r.items() if k != "selected"}
        if r["method"] == sel and pick:
          r["family"] = pick
        fold_rows.append(dict(r, method=old_name(r["method"], r)))
    d = tmp_path / f"fold{fold}"
    d.mkdir()
    (d / "results.json").write_text(json.dumps(fold_rows))
    (d / "per_query.json").write_text(json.dumps(
        {f"{m.split('|')[0]}|{old_name(m.split('|', 1)[1])}": {k: v for k, v in by_fold.items() if k == str(fold)}
         for m, by_fold in per_query.items()}))
    (d / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs if r["fold"] == fold))
    shutil.copy(os.path.join(out, "summary.json"), d / "summary.json")
    parts.append(str(d))
  merged = str(tmp_path / "merged")
  assert compare_ids.main(["--merge", *parts, "--out", merged]) == 0
  with open(os.path.join(merged, "results.json"), encoding="utf-8") as f:
    agg = {r["method"]: r for r in json.load(f) if r["fold"] == "all"}
  want = {r["method"]: r for r in rows if r["fold"] == "all"}[sel]
  got = agg[sel]
  assert not [m for m in agg if m.startswith(sel + ":")]
  assert got["folds"] == 2 and got["hits@10"] == pytest.approx(want["hits@10"])
  spec = next(r["id_strategy"] for r in rows if r["fold"] == 1 and r["method"] == sel)
  assert got["selected_by_fold"]["1"] == f"other_family ({spec})"  # from the row's own fields
  assert got["family"] == "per fold"
  with open(os.path.join(merged, "summary.json"), encoding="utf-8") as f:
    boots = json.load(f)["bootstrap"]
  assert {b["text2tracks"] for b in boots} == {sel} and all(b["folds"] == ["0", "1"] for b in boots)


@pytest.fixture(scope="module")
def slice_fold(tmp_path_factory):
  from test_compare_cpcd import _import  # pylint: disable=g-import-not-at-top
  from t2t_jax.studies import fair_study, pipeline  # pylint: disable=g-import-not-at-top
  tmp = str(tmp_path_factory.mktemp("slice_fold"))
  return tmp, fair_study.open_fold("as_written", _import(tmp, "as_written"), 0, os.path.join(tmp, "work"), "title",
                                   pipeline.Stages(verbose=False))


def test_candidates_build_encoder_id_tables_per_seed(slice_fold):
  """A semantic spec over "encoder" embeddings gets one table (and task) per training seed, from that
  seed's tuned-encoder track vectors; a "cf" spec one per fold; without an encoder, a clear error."""
  from t2t_jax.ids import specs as specs_lib  # pylint: disable=g-import-not-at-top
  from t2t_jax.studies import fair_study, folds_study  # pylint: disable=g-import-not-at-top
  _, f = slice_fold
  specs = {s.name: s for s in specs_lib.parse_id_specs([
      ("enc", "semantic_rq", {"level_sizes": (4, 4), "embeddings": "encoder"}),
      ("cf", "semantic_rq", {"level_sizes": (4, 4), "embeddings": "cf"})])}
  (fam,) = folds_study.parse_model_families([("m", "micro", {"id_specs": ["enc", "cf"]})])
  n = len(f.ws.track_ids)
  rng = np.random.default_rng(0)
  state = {"track_emb": {0: rng.normal(size=(n, 8)).astype(np.float32), 1: rng.normal(size=(n, 8)).astype(np.float32)}}
  cands = fair_study.Candidates(f, [fam], specs, prompt_field="title", seed=0, state=state, cf_dim=4)
  assert len(cands) == 2 and cands.inputs_length() == 256  # no pretrained-encoder family
  (t0, task0), (t1, task1) = cands.get(fam, specs["enc"], 0), cands.get(fam, specs["enc"], 1)
  assert ".enc_seed0." in task0.name and ".enc_seed1." in task1.name
  assert t0.meta["embedding"]["source"] == "encoder" and t0.track_ids == f.ws.track_ids
  assert not np.array_equal(t0.codes, t1.codes)  # different encoders, different IDs
  assert cands.get(fam, specs["enc"], 0)[0] is t0  # built once per seed
  c0, c1 = cands.get(fam, specs["cf"], 0)[0], cands.get(fam, specs["cf"], 1)[0]
  assert c0 is c1 and c0.meta["embedding"]["source"] == "cf" and "cold_start" in c0.meta["embedding"]
  assert task0.prompts == f.test[0]
  with pytest.raises(UserInputError, match="encoder='bi_encoder_tuned'"):
    fair_study.Candidates(f, [fam], specs, prompt_field="title", seed=0, state={}).get(fam, specs["enc"], 0)


def test_tuned_encoder_saved_with_its_tuning_and_reused(slice_fold):
  """_tuned_baselines saves each seed's tuned encoder with its tuning record and keeps its track
  vectors; reuse_encoders loads it back (same vectors, same chosen config) instead of tuning again."""
  pytest.importorskip("sentence_transformers")
  from test_bi_encoder import _tiny_model_dir  # pylint: disable=g-import-not-at-top
  from t2t_jax.studies import fair_study  # pylint: disable=g-import-not-at-top
  tmp, f = slice_fold
  st_dir = _tiny_model_dir(os.path.join(tmp, "st"))
  log = fair_study.Log(os.path.join(tmp, "out"), config={}, notes=[], bootstrap_samples=10, seed=0)
  enc_dir = os.path.join(tmp, "enc")
  kw = dict(which=(), bi_kwargs={"track_text": "metadata", "threads": 1, "max_seq_length": 32, "model_dir": st_dir},
            tune_grid={"learning_rate": [1e-3], "batch_size": [4], "positives_per_prompt": [4], "epochs": 1},
            hybrid_weights=(0.5,), hybrid_depth=10, encoder_dir=enc_dir)
  first: dict = {}
  fair_study._tuned_baselines(f, log, 0, True, first, **kw)  # pylint: disable=protected-access
  assert os.path.isfile(os.path.join(enc_dir, "seed0", "model.safetensors"))
  with open(os.path.join(enc_dir, "seed0.tuning.json"), encoding="utf-8") as fh:
    record = json.load(fh)
  assert record["chosen"] == first["bi_tuning"]["chosen"] and record["validation_conversations"] == f.val_ids
  again: dict = {}
  fair_study._tuned_baselines(f, log, 0, True, again, reuse_encoders=True, **kw)  # pylint: disable=protected-access
  assert again["bi_tuning"]["chosen"] == first["bi_tuning"]["chosen"]
  np.testing.assert_allclose(again["track_emb"][0], first["track_emb"][0], atol=1e-5)
  assert log.rows == []  # no baseline asked for: nothing ran on test


def test_merge_of_a_second_candidate_set_on_the_same_folds(fair_result, tmp_path):
  """A second set of Text2Tracks candidates run on the same folds under another `selected_name`
  merges beside the first: both methods aggregated, each bootstrapped against the tuned baselines
  and the weaker one against the best."""
  from t2t_jax.studies import fair_study  # pylint: disable=g-import-not-at-top
  _, out, rows, runs = fair_result
  sel, new = fair_study.SELECTED, "Text2Tracks, second set (selected on validation)"
  other = tmp_path / "other"
  other.mkdir()
  (other / "results.json").write_text(json.dumps(
      [dict(r, method=new) for r in rows if r["method"] == sel and r.get("seeds") is None and r["fold"] != "all"]))
  with open(os.path.join(out, "per_query.json"), encoding="utf-8") as f:
    per_query = json.load(f)
  second = {k: [v * 0.5 for v in vals] for k, vals in per_query[f"as_written|{sel}"]["0"]["0"].items()}
  pq = {"0": {seed: second for seed in per_query[f"as_written|{sel}"]["0"]},
        **{fold: v for fold, v in per_query[f"as_written|{sel}"].items() if fold != "0"}}
  (other / "per_query.json").write_text(json.dumps({f"as_written|{new}": pq}))
  (other / "runs.jsonl").write_text("".join(json.dumps(dict(r, method=new)) + "\n" for r in runs if r["method"] == sel))
  shutil.copy(os.path.join(out, "summary.json"), other / "summary.json")
  merged = str(tmp_path / "merged")
  assert compare_ids.main(["--merge", out, str(other), "--out", merged]) == 0
  with open(os.path.join(merged, "results.json"), encoding="utf-8") as f:
    agg = {r["method"]: r for r in json.load(f) if r["fold"] == "all"}
  assert agg[new]["hits@10"] == pytest.approx(agg[sel]["hits@10"]) and agg[new]["folds"] == 2
  with open(os.path.join(merged, "summary.json"), encoding="utf-8") as f:
    pairs = {(b["text2tracks"], b["baseline"]): b for b in json.load(f)["bootstrap"]}
  bi, hyb = fair_study.label("bi_encoder_tuned"), fair_study.label("hybrid")
  assert {(sel, bi), (sel, hyb), (new, bi), (new, hyb)} <= set(pairs)
  (weaker, best), = [p for p in pairs if p[1] in (sel, new)]
  assert {weaker, best} == {sel, new}
  with open(os.path.join(merged, "runs.jsonl"), encoding="utf-8") as f:
    assert sum(1 for _ in f) == len(runs) + sum(r["method"] == sel for r in runs)


def test_dense_prior_needs_the_tuned_bi_encoder():
  # Refused before any training: no seed has a tuned bi-encoder to score with.
  with pytest.raises(UserInputError, match="compare_ids.dense_prior_weights.*bi_encoder_tuned"):
    fair_study._text2tracks(None, None, [0], None, encoder_dir=None, work_dir="", progress=False,  # pylint: disable=protected-access
                            defaults={"beam_size": 10, "dense_prior_weights": (0.0, 20.0)}, dense=None)
