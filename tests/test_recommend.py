"""Recommender (t2t_jax/serving/recommend.py) on a tiny model dir; `build_model_dir` is shared with the
export and serve tests (a trained-for-a-few-steps T5 on a synthetic catalog, no SeqIO/TensorFlow, so
a test module builds it in seconds rather than running the whole quickstart)."""

import itertools
import json
import os
import shutil

import numpy as np
import pytest

from t2t_jax import cli
from t2t_jax.serving import assets as assets_lib, retriever
from t2t_jax.errors import UserInputError

PROMPTS = ["chill evening jazz 🎷", "GYM WORKOUT", "música para bailar", "old classics for slow dancing",
           "late night drive"]


def build_model_dir(root: str, *, seed: int = 0, num_tracks: int = 96, train_steps: int = 0) -> str:
  """Writes ROOT/model: a T5 (tiny shapes) for prompt -> 3-token semantic IDs.

  train_steps=0 saves the initialised weights (the tests compare code paths, not quality).
  """
  from t2t_jax.training import checkpoints, trainer  # pylint: disable=g-import-not-at-top
  from t2t_jax.data import formats, prompts as prompts_lib, synthetic, vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  from t2t_jax.evaluation import pad_inputs  # pylint: disable=g-import-not-at-top
  from t2t_jax.ids.table import IdTable  # pylint: disable=g-import-not-at-top
  from t2t_jax.models import t5  # pylint: disable=g-import-not-at-top

  ds_dir = os.path.join(root, "data")
  synthetic.generate(synthetic.SyntheticConfig(seed=seed, num_artists=30, num_tracks=num_tracks,
                                               num_playlists=120, num_intents=20, min_pool_size=5), ds_dir)
  ds = formats.Dataset.load(ds_dir)
  pls = list(ds.playlists("train"))
  texts = [prompts_lib.prompt_text(p.title, p.description, "both") for p in pls]
  texts += [f"{t.artist} {t.title} {' '.join(t.tags)}" for t in ds.tracks]
  spm_path = vocab_lib.train_sentencepiece(texts, os.path.join(root, "spm.model"), vocab_size=400)
  rng = np.random.default_rng(seed)
  levels = (6, 6, 4)
  flat = rng.permutation(int(np.prod(levels)))[:num_tracks]
  codes = np.stack(np.unravel_index(flat, levels), axis=1).astype(np.int32)
  table = IdTable(strategy="semantic_rq", track_ids=[t.track_id for t in ds.tracks], codes=codes,
                  level_sizes=levels, is_text=False, meta={})
  vocab = vocab_lib.TextAndIdVocab(spm_path, levels)
  cfg = t5.T5Config.preset("micro", vocab_size=vocab.vocab_size)
  model_dir = os.path.join(root, "model")
  if train_steps:  # prompt -> the ID of the playlist's first track
    ids_NxL = table.token_ids(vocab.id_token_offset)
    inputs_NxL = pad_inputs([vocab.encode(prompts_lib.make_prompt(p, "title")) + [1] for p in pls], 16)
    targets_NxT = np.asarray([ids_NxL[ds.track_row[p.track_ids[0]]].tolist() + [1] for p in pls], np.int32)

    def batches(batch=16):
      for i in itertools.count(0, batch):
        sel = np.arange(i, i + batch) % len(inputs_NxL)
        tgt = targets_NxT[sel]
        yield {"encoder_input_tokens": inputs_NxL[sel], "decoder_target_tokens": tgt,
               "decoder_input_tokens": np.concatenate([np.zeros_like(tgt[:, :1]), tgt[:, :-1]], 1),
               "decoder_loss_weights": (tgt > 0).astype(np.float32)}
    from t2t_jax.training.optimizers import OptimizerConfig  # pylint: disable=g-import-not-at-top
    trainer.train(model=cfg, train_iter=batches(), model_dir=model_dir,
                  config=trainer.TrainConfig(train_steps=train_steps, batch_size=16, seed=seed,
                                             log_period=train_steps, progress=False,
                                             tensorboard=False, handle_sigterm=False),
                  optimizer=OptimizerConfig(learning_rate=1e-2),
                  checkpoint=trainer.CheckpointConfig(period=train_steps, restore=False,
                                                      async_save=False))
  else:  # initialised weights, saved by the trainer's checkpoint writer (no train-step compile)
    import flax.linen as nn  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    params = nn.unbox(t5.init_params(cfg, jax.random.PRNGKey(seed)))
    checkpoints.save_model_config(model_dir, cfg)
    manager = checkpoints.CheckpointManager(model_dir, async_save=False)
    manager.save(0, params, {"step": np.zeros((), np.int32)}, {"step": 0})
    manager.close()
  assets_lib.write_assets(model_dir, spm_path=spm_path, id_table=table,
                         catalog_path=os.path.join(ds_dir, "catalog.jsonl"), inputs_length=16,
                         beam_size=6, prompt_field="title")
  return model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  return build_model_dir(str(tmp_path_factory.mktemp("rec")))


@pytest.fixture(scope="module")
def rec(model_dir):
  return retriever.GenerativeRetriever.from_model_dir(model_dir)


# Compiles are the cost on a loaded CPU: the tests share the (k, padded batch) shapes (5, 1), (5, 4),
# (3, 1) and (8, 1) on one Recommender.

def test_rows_are_distinct_catalog_tracks_best_first(rec):
  rows, scores = rec.recommend_rows(PROMPTS[:3], k=5)
  assert rows.shape == scores.shape == (3, 5)
  assert (rows >= 0).all() and (rows < rec.id_table.num_tracks).all()
  for r, s in zip(rows, scores):
    assert len(set(r.tolist())) == 5
    assert np.all(np.diff(s) <= 1e-6) and np.all(s < 0)


def test_answers_do_not_depend_on_batch_padding(rec):
  """Each prompt gets the same tracks alone and in a batch of 3 padded to 4 with copies of row 0."""
  rows, scores = rec.recommend_rows(PROMPTS[:3], k=5)
  for i, p in enumerate(PROMPTS[:3]):
    alone_rows, alone_scores = rec.recommend_rows([p], k=5)
    np.testing.assert_array_equal(rows[i], alone_rows[0])
    np.testing.assert_allclose(scores[i], alone_scores[0], rtol=1e-5, atol=1e-5)


def test_k_beyond_the_beam_widens_it_and_smaller_k_is_a_prefix(rec):
  assert rec.beam_size == 6
  rows, _ = rec.recommend_rows(PROMPTS[:1], k=8)
  assert len(set(rows[0].tolist())) == 8
  # Same beam width for k <= beam: the top-3 are the first 3 of the top-5.
  r3, s3 = rec.recommend_rows(PROMPTS[:1], k=3)
  r5, s5 = rec.recommend_rows(PROMPTS[:1], k=5)
  np.testing.assert_array_equal(r3, r5[:, :3])
  np.testing.assert_allclose(s3, s5[:, :3], rtol=1e-6)


def test_recommend_maps_rows_to_catalog_tracks(rec):
  rows, scores = rec.recommend_rows(PROMPTS[3:4], k=5)
  recs = rec.recommend(PROMPTS[3:4], k=5)[0]
  assert [r.rank for r in recs] == [1, 2, 3, 4, 5]
  assert [r.track_id for r in recs] == [rec.id_table.track_ids[int(i)] for i in rows[0]]
  assert [r.score for r in recs] == pytest.approx(scores[0].tolist())
  for r in recs:
    t = rec.tracks[r.track_id]
    assert (r.artist, r.title) == (t.artist, t.title) and r.title
  # A single string is one prompt, not a sequence of characters.
  assert [r.track_id for r in rec.recommend(PROMPTS[3], k=5)[0]] == [r.track_id for r in recs]


def test_bad_inputs_raise_user_errors(model_dir, rec, tmp_path):
  with pytest.raises(UserInputError, match="k must be"):
    rec.recommend(["x"], k=0)
  with pytest.raises(UserInputError, match="k must be"):
    rec.recommend(["x"], k=rec.id_table.num_tracks + 1)
  with pytest.raises(UserInputError, match="k must be"):
    rec.recommend(["x"], k=2.5)
  with pytest.raises(UserInputError, match="no prompts"):
    rec.recommend([], k=3)
  with pytest.raises(UserInputError, match=r"prompt #2: empty prompt"):
    rec.recommend(["fine", " \t\u200b "], k=3)
  with pytest.raises(UserInputError, match="prompt must be a string"):
    rec.recommend(["fine", 7], k=3)
  with pytest.raises(UserInputError, match="no such directory"):
    retriever.GenerativeRetriever.from_model_dir(str(tmp_path / "nope"))
  with pytest.raises(UserInputError, match="not a t2t model dir"):
    retriever.GenerativeRetriever.from_model_dir(str(tmp_path))
  bad = tmp_path / "bad" / assets_lib.ASSETS
  bad.mkdir(parents=True)
  (bad / assets_lib.SETTINGS_FILE).write_text('{"inputs_length": 16,\n "beam_size": }', encoding="utf-8")
  with pytest.raises(UserInputError, match=r"recommend.json:2: malformed JSON"):
    retriever.GenerativeRetriever.from_model_dir(str(tmp_path / "bad"))
  (bad / assets_lib.SETTINGS_FILE).write_text('{"inputs_length": 16}', encoding="utf-8")
  with pytest.raises(UserInputError, match=r"missing \['beam_size'\]"):
    retriever.GenerativeRetriever.from_model_dir(str(tmp_path / "bad"))
  with pytest.raises(UserInputError, match="beam_size must be a positive integer"):
    retriever.GenerativeRetriever.from_model_dir(model_dir, beam_size=0)


def test_beam_scoring_comes_from_the_model_dir(model_dir, rec, tmp_path):
  assert rec.beam_scoring == "log_prob" and rec.options(5).scoring == "log_prob"
  copy = tmp_path / "copy"
  shutil.copytree(model_dir, copy)
  path = copy / assets_lib.ASSETS / assets_lib.SETTINGS_FILE
  settings = json.loads(path.read_text(encoding="utf-8"))
  path.write_text(json.dumps({**settings, "beam_scoring": "logit"}), encoding="utf-8")
  logit = retriever.GenerativeRetriever.from_model_dir(str(copy))
  assert logit.options(5).scoring == "logit" and logit.options(5, scoring="log_prob").scoring == "log_prob"
  # The search reports raw logit sums, not the log-probs of the same model dir.
  rows, scores = logit.recommend_rows(PROMPTS[:2], k=5)
  _, ref_scores = rec.recommend_rows(PROMPTS[:2], k=5)
  assert all(len(set(r)) == 5 and (r >= 0).all() for r in rows.tolist() for r in [np.asarray(r)])
  assert not np.allclose(scores, ref_scores)
  path.write_text(json.dumps({**settings, "beam_scoring": "prob"}), encoding="utf-8")
  with pytest.raises(UserInputError, match="beam_scoring 'prob' is not one of"):
    retriever.GenerativeRetriever.from_model_dir(str(copy))


def test_cli_input_file_and_json(model_dir, rec, tmp_path, capsys, monkeypatch):
  loaded = []
  monkeypatch.setattr(retriever.GenerativeRetriever, "from_model_dir",
                      classmethod(lambda cls, d, **kw: loaded.append(d) or rec))  # reuse compiles
  path = tmp_path / "prompts.txt"
  path.write_text("late night drive\n\n  \nGYM WORKOUT\r\n", encoding="utf-8")
  assert cli.main(["recommend", "--model_dir", model_dir, "--input", str(path), "-k", "5", "--json",
                   "chill evening jazz 🎷"]) == 0
  assert loaded == [model_dir]
  lines = [json.loads(l) for l in capsys.readouterr().out.strip().splitlines()]
  assert [l["prompt"] for l in lines] == ["chill evening jazz 🎷", "late night drive", "GYM WORKOUT"]
  want = rec.recommend([l["prompt"] for l in lines], k=5)
  for line, recs in zip(lines, want):
    assert [t["track_id"] for t in line["tracks"]] == [r.track_id for r in recs]
    assert [t["rank"] for t in line["tracks"]] == [1, 2, 3, 4, 5]
  assert cli.main(["recommend", "--model_dir", model_dir, "--input", str(tmp_path / "missing.txt")]) == 2
  err = capsys.readouterr().err.strip()
  assert "missing.txt" in err and len(err.splitlines()) == 1


class _Echo:
  """Stands in for a loaded model dir (no compiling): keeps the prompts it is asked about."""

  def __init__(self):
    self.seen = []

  def recommend(self, prompts, k):  # pylint: disable=unused-argument
    self.seen += list(prompts)
    return [[retriever.Recommendation(1, "t1", "Artist", "Title", 0.5)] for _ in prompts]


def test_cli_prompts_are_cleaned_before_the_echo_and_the_model(tmp_path, capsys, monkeypatch):
  """Issue 23: escape sequences went raw to the terminal, blank --input lines vanished silently, and
  a lone surrogate was reported as an "empty prompt"."""
  fake = _Echo()
  monkeypatch.setattr(retriever.GenerativeRetriever, "from_model_dir", classmethod(lambda cls, d, **kw: fake))
  path = tmp_path / "prompts.txt"
  path.write_text("\x1b[31mred\x1b[0m alert\n\n \t\nbell\x07 \x9b2J\n", encoding="utf-8")
  assert cli.main(["recommend", "--model_dir", "m", "--input", str(path), "jazz\x1b]0;title\x07"]) == 0
  out, err = capsys.readouterr()
  assert fake.seen == ["jazz]0;title", "[31mred[0m alert", "bell 2J"]
  assert [l for l in out.splitlines() if l.startswith("# ")] == [f"# {p}" for p in fake.seen]
  assert not any(c in out for c in "\x1b\x07\x9b")
  assert err.strip().splitlines() == [f"t2t recommend: skipped 2 blank line(s) of {path}"]
  assert cli.main(["recommend", "--model_dir", "m", "\ud800"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ["t2t: error: prompt #1: prompt is not valid text: lone surrogate '\\ud800' at position 0 "
                 "(not Unicode: a bad JSON escape, or bytes that are not UTF-8)"], err
  path.write_text("fine\n\x07\x1b\n", encoding="utf-8")
  assert cli.main(["recommend", "--model_dir", "m", "--input", str(path)]) == 2
  assert capsys.readouterr().err.strip().splitlines() == [f"t2t: error: {path}:2: empty prompt"]


def test_user_typed_id_markup_stays_text(rec):
  """A prompt that spells an ID token ("<id_0_1>") is tokenised as plain text, like training prompts."""
  toks = rec.encode(["play <id_0_1> now"])[0]
  assert not any(t >= rec.vocab.id_token_offset for t in toks.tolist())
  assert toks.tolist()[: len(toks[toks > 0])][-1] == 1  # EOS-terminated
