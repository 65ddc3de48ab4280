"""The serve-time lexical prior (t2t_jax/serving/lexical.py, assets.add_lexical_prior): the BM25 index a
model dir keeps, its round trip through disk, and recommend / the CLI ranking with it."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from t2t_jax import cli
from t2t_jax.errors import UserInputError
from t2t_jax.ids.table import IdTable
from t2t_jax.serving import assets as assets_lib, lexical, retriever
from test_recommend import PROMPTS, build_model_dir  # pylint: disable=g-import-not-at-top

DOCS = ["metallica master of puppets workout", "calm sleep piano", "daft punk one more time", "the beatles hey jude"]


def test_index_scores_shares_and_round_trip(tmp_path):
  ix = lexical.LexicalIndex.build(DOCS)
  prompts = ["workout music", "piano to sleep", "zzz unknown", "the hey"]
  raw = ix.scores(prompts)
  assert raw.shape == (4, 4) and raw.dtype == np.float32
  assert [int(np.argmax(r)) for r in raw[[0, 1, 3]]] == [0, 1, 3]
  assert (raw[2] == 0).all()  # no known word ("the" is a stopword): zeros, not an error
  shares = ix.shares(prompts)
  np.testing.assert_allclose(shares[[0, 1, 3]].max(axis=1), 1.0)
  np.testing.assert_allclose(shares[0], raw[0] / raw[0].max())
  ix.save(str(tmp_path / "ix"))
  back = lexical.LexicalIndex.load(str(tmp_path / "ix"))
  assert back.num_docs == 4 and (back.k1, back.b) == (ix.k1, ix.b)
  np.testing.assert_array_equal(back.scores(prompts), raw)  # the same index, stopwords and vocabulary
  with pytest.raises(UserInputError, match="no documents"):
    lexical.LexicalIndex.build([])
  with pytest.raises(UserInputError, match="lexical.json"):
    lexical.LexicalIndex.load(str(tmp_path / "missing"))
  (tmp_path / "ix" / "lexical.json").write_text(json.dumps({"format": "other"}), encoding="utf-8")
  with pytest.raises(UserInputError, match="not a t2t_jax.lexical.v1 index"):
    lexical.LexicalIndex.load(str(tmp_path / "ix"))


@pytest.fixture(scope="module")
def prior_dir(tmp_path_factory):
  """A tiny model dir (random weights) whose assets hold a BM25 index: row r's document names only
  'trackword{r}', so a prompt naming one row's word has exactly one lexical match."""
  model_dir = build_model_dir(str(tmp_path_factory.mktemp("lex")))
  n = IdTable.load(os.path.join(model_dir, assets_lib.ASSETS, assets_lib.IDS_DIR)).num_tracks
  docs = [f"trackword{r}" for r in range(n)]
  assets_lib.add_lexical_prior(model_dir, lexical.LexicalIndex.build(docs), 50.0, evidence={"chosen_among": [50.0]})
  return model_dir


def test_add_lexical_prior_keeps_the_assets_and_sets_the_weight(prior_dir, tmp_path):
  assets = os.path.join(prior_dir, assets_lib.ASSETS)
  names = set(os.listdir(assets))
  assert {assets_lib.LEXICAL_DIR, assets_lib.SETTINGS_FILE, assets_lib.IDS_DIR, assets_lib.SPM_FILE,
          assets_lib.CATALOG_FILE} <= names
  settings = assets_lib.read_settings(prior_dir)
  assert settings["lexical_prior_weight"] == 50.0 and settings["lexical_prior"] == {"chosen_among": [50.0]}
  assert settings["inputs_length"] == 16 and settings["beam_size"] == 6  # the rest kept
  # Bad input: a document count that is not the ID table's, a negative weight; nothing changes.
  before = sorted(os.listdir(assets))
  with pytest.raises(UserInputError, match="3 documents for an ID table of"):
    assets_lib.add_lexical_prior(prior_dir, lexical.LexicalIndex.build(["a", "b", "c"]), 1.0)
  with pytest.raises(UserInputError, match="finite number >= 0"):
    assets_lib.add_lexical_prior(prior_dir, lexical.LexicalIndex.build(["a"]), -1.0)
  assert sorted(os.listdir(assets)) == before and assets_lib.read_settings(prior_dir)["lexical_prior_weight"] == 50.0
  # recommend.json with a weight but no index, or a bad weight: one clear message.
  copy = tmp_path / "copy"
  shutil.copytree(prior_dir, copy)
  shutil.rmtree(copy / assets_lib.ASSETS / assets_lib.LEXICAL_DIR)
  with pytest.raises(UserInputError, match="lexical_prior_weight but lexical/ is missing"):
    retriever.GenerativeRetriever.from_model_dir(str(copy))
  path = copy / assets_lib.ASSETS / assets_lib.SETTINGS_FILE
  path.write_text(json.dumps({**settings, "lexical_prior_weight": "high"}), encoding="utf-8")
  with pytest.raises(UserInputError, match="lexical_prior_weight must be a finite number"):
    retriever.GenerativeRetriever.from_model_dir(str(copy))


def test_recommend_ranks_with_the_model_dirs_prior(prior_dir):
  rec = retriever.GenerativeRetriever.from_model_dir(prior_dir)
  off = retriever.GenerativeRetriever.from_model_dir(prior_dir, lexical_prior_weight=0)
  assert rec.lexical_prior_weight == 50.0 and off.lexical_prior_weight == 0.0 and off.lexical is None
  prompts = ["songs like trackword7", "trackword42 please", PROMPTS[0]]
  rows, scores = rec.recommend_rows(prompts, k=5)
  ref_rows, ref_scores = off.recommend_rows(prompts, k=5)
  # Weight 50 on a share of 1 outweighs a random model: the named row comes first; a prompt without a
  # known word has no prior (shares 0) and ranks as without one.
  assert rows[0, 0] == 7 and rows[1, 0] == 42
  np.testing.assert_array_equal(rows[2], ref_rows[2])
  np.testing.assert_allclose(scores[2], ref_scores[2], rtol=1e-5, atol=1e-5)
  # The prior is what the search adds: the same rows as rank_inputs with the explicit row prior.
  explicit, _ = off.rank_inputs(off.encode(prompts[:2]), 5, row_prior_NxR=rec.lexical_prior(prompts[:2]))
  np.testing.assert_array_equal(explicit, rows[:2])
  assert rec.lexical_prior(prompts, weight=0) is None
  with pytest.raises(UserInputError, match="lexical index"):
    off.lexical_prior(prompts, weight=1.0)


def test_cli_lexical_prior_flag(prior_dir, capsys):
  assert cli.main(["recommend", "--model_dir", prior_dir, "-k", "3", "--json", "trackword7 now"]) == 0
  with_prior = json.loads(capsys.readouterr().out)
  assert cli.main(["recommend", "--model_dir", prior_dir, "-k", "3", "--json", "--lexical_prior", "0",
                   "trackword7 now"]) == 0
  without = json.loads(capsys.readouterr().out)
  rec = retriever.GenerativeRetriever.from_model_dir(prior_dir)
  assert with_prior["tracks"][0]["track_id"] == rec.id_table.track_ids[7]
  assert [t["track_id"] for t in with_prior["tracks"]] != [t["track_id"] for t in without["tracks"]]
  assert cli.main(["recommend", "--model_dir", prior_dir, "--lexical_prior", "-2", "x"]) == 2
  assert "--lexical_prior must be a finite number >= 0" in capsys.readouterr().err


def test_importing_the_train_entry_leaves_jax_uninitialised():
  # bm25s initialises JAX's backend when imported; the multi-host train entry (which writes model assets)
  # must still be able to call jax.distributed.initialize first (tests/test_train_multihost.py).
  code = ("import t2t_jax.train, t2t_jax.serving.assets, t2t_jax.serving.retriever\n"
          "from jax._src import xla_bridge as xb\n"
          "assert not xb._backends, 'the XLA backend was initialised at import'\n")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=root,
                        env={**os.environ, "PYTHONPATH": root})
  assert proc.returncode == 0, proc.stderr[-2000:]
