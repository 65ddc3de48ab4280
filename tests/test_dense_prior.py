"""The serve-time dense prior (assets.add_dense_prior, GenerativeRetriever.dense_prior): one vector per
ID-table row kept in the model dir, the prompt embedded by the model's own encoder (mean-pooled,
normalised), weight x their cosine added inside beam search by recommend / the CLI."""

import dataclasses
import json
import os
import shutil

import jax
import numpy as np
import pytest

from t2t_jax import cli, export_runtime
from t2t_jax.errors import UserInputError
from t2t_jax.ids.table import IdTable
from t2t_jax.models import bert
from t2t_jax.serving import assets as assets_lib, retriever
from test_recommend import PROMPTS, build_model_dir  # pylint: disable=g-import-not-at-top

PROMPT_A, PROMPT_B = "songs for a rainy sunday", "loud gym metal"


def _table(rec, n: int) -> np.ndarray:
  """Row 7 = PROMPT_A's embedding, row 42 = PROMPT_B's, every other row orthogonal to both."""
  q = rec.embed_inputs(rec.encode([PROMPT_A, PROMPT_B]))
  rng = np.random.default_rng(0)
  table = rng.normal(size=(n, q.shape[1])).astype(np.float32)
  basis, _ = np.linalg.qr(q.T)  # [E, 2]
  table -= (table @ basis) @ basis.T
  table[7], table[42] = 3.0 * q[0], q[1]  # not unit: add_dense_prior normalises the rows
  return table


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory):
  model_dir = build_model_dir(str(tmp_path_factory.mktemp("dense")))
  plain = retriever.GenerativeRetriever.from_model_dir(model_dir)
  assets_lib.add_dense_prior(model_dir, _table(plain, plain.id_table.num_tracks), 1000.0,
                             evidence={"chosen_among": [0.0, 1000.0]})
  return model_dir


def test_add_dense_prior_keeps_the_assets_and_normalises_rows(dense_dir):
  assets = os.path.join(dense_dir, assets_lib.ASSETS)
  assert {assets_lib.DENSE_FILE, assets_lib.SETTINGS_FILE, assets_lib.IDS_DIR, assets_lib.SPM_FILE,
          assets_lib.CATALOG_FILE} <= set(os.listdir(assets))
  settings = assets_lib.read_settings(dense_dir)
  assert settings["dense_prior_weight"] == 1000.0 and settings["dense_prior"] == {"chosen_among": [0.0, 1000.0]}
  table = np.load(os.path.join(assets, assets_lib.DENSE_FILE))
  n = IdTable.load(os.path.join(assets, assets_lib.IDS_DIR)).num_tracks
  assert table.shape[0] == n and table.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(table, axis=1), 1.0, rtol=1e-5)


def test_bad_tables_and_weights_are_refused_with_the_assets_untouched(dense_dir):
  assets = os.path.join(dense_dir, assets_lib.ASSETS)
  before = sorted(os.listdir(assets))
  table = np.load(os.path.join(assets, assets_lib.DENSE_FILE))
  with pytest.raises(UserInputError, match=r"expected float \[96, E\]"):
    assets_lib.add_dense_prior(dense_dir, table[:5], 1.0)
  bad = table.copy()
  bad[3, 0] = np.nan
  with pytest.raises(UserInputError, match="NaN"):
    assets_lib.add_dense_prior(dense_dir, bad, 1.0)
  with pytest.raises(UserInputError, match="dense prior weight must be a finite number"):
    assets_lib.add_dense_prior(dense_dir, table, -1.0)
  assert sorted(os.listdir(assets)) == before and assets_lib.read_settings(dense_dir)["dense_prior_weight"] == 1000.0


def test_a_missing_or_damaged_table_is_named(dense_dir, tmp_path):
  copy = tmp_path / "copy"
  shutil.copytree(dense_dir, copy)
  table = copy / assets_lib.ASSETS / assets_lib.DENSE_FILE
  table.write_bytes(b"not a numpy file")
  with pytest.raises(UserInputError, match="dense_tracks.npy: not a readable .npy table"):
    retriever.GenerativeRetriever.from_model_dir(str(copy))
  table.unlink()
  with pytest.raises(UserInputError, match="dense_prior_weight but dense_tracks.npy is missing"):
    retriever.GenerativeRetriever.from_model_dir(str(copy))
  # Off by flag: the missing table is not needed.
  assert retriever.GenerativeRetriever.from_model_dir(str(copy), dense_prior_weight=0).dense is None


def test_recommend_ranks_with_the_model_dirs_dense_prior(dense_dir):
  rec = retriever.GenerativeRetriever.from_model_dir(dense_dir)
  off = retriever.GenerativeRetriever.from_model_dir(dense_dir, dense_prior_weight=0)
  assert rec.dense_prior_weight == 1000.0 and off.dense_prior_weight == 0.0 and off.dense is None
  prompts = [PROMPT_A, PROMPT_B, PROMPTS[0]]
  # The prior is weight x cosine of the model's own mean-pooled encoder states with the unit rows.
  inputs = rec.encode(prompts)
  enc = rec.model.encode(rec.params, inputs)
  q = np.asarray(jax.device_get(bert.mean_pool(enc, inputs)))
  np.testing.assert_allclose(rec.dense_prior(prompts), 1000.0 * q @ rec.dense.T, rtol=1e-4, atol=1e-2)
  rows, _ = rec.recommend_rows(prompts, k=5)
  ref_rows, _ = off.recommend_rows(prompts, k=5)
  # Cosine 1 with its own row against ~0 for the rows orthogonal to it, x 1000: the row comes first.
  assert rows[0, 0] == 7 and rows[1, 0] == 42
  assert not np.array_equal(rows[:2], ref_rows[:2])
  # The same search as rank_inputs with the explicit row prior (host-side cosines, a host node prior
  # built from them on the device) and as rank_inputs with the weighted table (the in-function one).
  explicit, explicit_scores = off.rank_inputs(off.encode(prompts), 5, row_prior_NxR=rec.dense_prior(prompts))
  np.testing.assert_array_equal(explicit, rows)
  in_fn, in_fn_scores = off.rank_inputs(off.encode(prompts), 5, dense_RxE=1000.0 * rec.dense)
  np.testing.assert_array_equal(in_fn, rows)
  np.testing.assert_allclose(in_fn_scores, explicit_scores, rtol=1e-4, atol=1e-2)
  with pytest.raises(UserInputError, match=r"dense table of shape \(5, "):
    off.rank_inputs(off.encode(prompts), 5, dense_RxE=rec.dense[:5])
  with pytest.raises(UserInputError, match="dense table: values must be finite"):
    off.rank_inputs(off.encode(prompts), 5, dense_RxE=np.full_like(rec.dense, np.nan))
  assert rec.dense_prior(prompts, weight=0) is None
  with pytest.raises(UserInputError, match="dense track table"):
    off.dense_prior(prompts, weight=1.0)


def test_cli_dense_prior_flag_and_export_manifest(dense_dir, tmp_path, capsys):
  assert cli.main(["recommend", "--model_dir", dense_dir, "-k", "3", "--json", PROMPT_B]) == 0
  with_prior = json.loads(capsys.readouterr().out)
  assert cli.main(["recommend", "--model_dir", dense_dir, "-k", "3", "--json", "--dense_prior", "0", PROMPT_B]) == 0
  without = json.loads(capsys.readouterr().out)
  rec = retriever.GenerativeRetriever.from_model_dir(dense_dir)
  assert with_prior["tracks"][0]["track_id"] == rec.id_table.track_ids[42]
  assert [t["track_id"] for t in with_prior["tracks"]] != [t["track_id"] for t in without["tracks"]]
  assert cli.main(["recommend", "--model_dir", dense_dir, "--dense_prior", "-2", "x"]) == 2
  assert "--dense_prior must be a finite number >= 0" in capsys.readouterr().err
  out = tmp_path / "export"
  assert cli.main(["export", "--model_dir", dense_dir, "--out", str(out), "--no_hf"]) == 0
  assert "ranks with a dense prior (weight 1000); the exported function ranks with it too" in capsys.readouterr().out
  with open(out / "manifest.json", encoding="utf-8") as f:
    assert json.load(f)["dense_prior"] == {"weight": 1000.0, "in_function": True, "array": "index/dense_tracks"}
  # The export's runtime (no model code) ranks with the prior as recommend does.
  # (Past the first two, every row's prior is ~0 - 1000: which of those the beam keeps turns on float
  # noise between the two programs, so the decisive two are compared.)
  exported = export_runtime.load(str(out))
  rows, scores = exported.recommend_rows([PROMPT_A, PROMPT_B], k=3)
  ref_rows, ref_scores = rec.recommend_rows([PROMPT_A, PROMPT_B], k=3)
  np.testing.assert_array_equal(rows[:, :2], ref_rows[:, :2])
  np.testing.assert_allclose(scores[:, :2], ref_scores[:, :2], rtol=1e-4, atol=0.05)
  assert rows[0, 0] == 7 and rows[1, 0] == 42


def test_evaluate_with_a_reused_retriever_matches_a_fresh_one(dense_dir):
  """A decoding grid builds the model once (`pipeline.load_retriever`) and scores each setting with it:
  the same rankings and metrics as a retriever built per call, and a retriever over another ID table
  is refused."""
  from t2t_jax.studies import pipeline  # pylint: disable=g-import-not-at-top
  rec = retriever.GenerativeRetriever.from_model_dir(dense_dir, dense_prior_weight=0)
  prompts = [PROMPT_A, PROMPT_B] + PROMPTS[:3]
  inputs = rec.encode(prompts)
  examples = [{"prompt": p, "inputs": [int(t) for t in row if t], "relevant_rows": np.asarray([7 + i])}
              for i, (p, row) in enumerate(zip(prompts, inputs))]
  task = pipeline.Task(name="dense_test", table=rec.id_table, vocab=rec.vocab,
                       feature_lengths={"inputs": rec.inputs_length}, eval_examples=examples, data_root="")
  reused = pipeline.load_retriever(task, dense_dir, beam_size=6)
  prior = np.zeros((len(prompts), rec.id_table.num_tracks), np.float32)
  prior[:, 11] = 50.0  # one row lifted for every prompt: first wherever the prior counts
  for row_prior in (None, prior, None):  # back to no prior: nothing kept from the setting before
    fresh = pipeline.evaluate_text2tracks(task, dense_dir, beam_size=6, k=5, row_prior_NxR=row_prior)
    again = pipeline.evaluate_text2tracks(task, dense_dir, beam_size=6, k=5, row_prior_NxR=row_prior,
                                          retriever=reused)
    np.testing.assert_array_equal(again["rows_NxK"], fresh["rows_NxK"])
    assert again["metrics"] == fresh["metrics"]
    assert (fresh["rows_NxK"][:, 0] == 11).all() == (row_prior is not None)
  assert len(reused._fns) == 1  # pylint: disable=protected-access  (one decoder built, used by every setting)
  other = dataclasses.replace(rec.id_table, track_ids=list(reversed(rec.id_table.track_ids)))
  with pytest.raises(ValueError, match="the retriever's ID table is not task dense_test's"):
    pipeline.evaluate_text2tracks(dataclasses.replace(task, table=other), dense_dir, beam_size=6, k=5,
                                  retriever=reused)
  recoded = dataclasses.replace(rec.id_table, codes=rec.id_table.codes[::-1].copy())  # same tracks, other IDs
  with pytest.raises(ValueError, match="the retriever's ID table is not task dense_test's"):
    pipeline.evaluate_text2tracks(dataclasses.replace(task, table=recoded), dense_dir, beam_size=6, k=5,
                                  retriever=reused)
  same = dataclasses.replace(rec.id_table)  # an equal table, another object: accepted
  assert pipeline.evaluate_text2tracks(dataclasses.replace(task, table=same), dense_dir, beam_size=6, k=5,
                                       retriever=reused)["metrics"] == fresh["metrics"]
