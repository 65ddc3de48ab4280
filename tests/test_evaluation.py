"""Tests for t2t_jax.evaluation and the one trie rule (decoding.index.token_seqs_for_table):
evaluation, recommend, export and serve decode the same IDs."""

import types

import jax
import numpy as np
import pytest

from t2t_jax import evaluation, models
from t2t_jax.decoding import generate, index as index_lib
from t2t_jax.errors import UserInputError
from t2t_jax.training import partitioning
from t2t_jax.ids.table import IdTable
from t2t_jax.models import t5
from t2t_jax.serving import retriever

VOCAB = 64


def _content_table():
  """Text IDs where one ID is a prefix of another ([5, 6] and [5, 6, 7]): EOS must end them."""
  codes = np.array([[5, 6, -1], [5, 6, 7], [8, -1, -1], [9, 10, 11], [12, 13, -1]], np.int32)
  return IdTable(strategy="content", track_ids=[f"t{i}" for i in range(5)], codes=codes,
                 level_sizes=(), is_text=True)


def test_token_seqs_end_with_eos_for_text_and_variable_length_ids():
  seqs = index_lib.token_seqs_for_table(_content_table(), 3)
  assert seqs.tolist() == [[5, 6, 1, 0], [5, 6, 7, 1], [8, 1, 0, 0], [9, 10, 11, 1], [12, 13, 1, 0]]
  fixed = IdTable(strategy="semantic_rq", track_ids=["a", "b"], codes=np.array([[0, 1], [1, 0]]),
                  level_sizes=(2, 2))
  assert index_lib.token_seqs_for_table(fixed, 10).tolist() == [[10, 13], [11, 12]]  # no EOS
  varlen = IdTable(strategy="integer", track_ids=["a", "b"], codes=np.array([[0, -1], [1, 0]]),
                   level_sizes=(2, 2))
  assert index_lib.token_seqs_for_table(varlen, 10).tolist() == [[10, 1, 0], [11, 12, 1]]


def test_evaluation_and_recommend_decode_the_same_content_ids():
  table = _content_table()
  config = t5.T5Config.micro(vocab_size=VOCAB)
  params = models.build_model(config).init_params(jax.random.PRNGKey(0))
  inputs = np.array([[7, 8, 9, 1, 0, 0], [20, 21, 1, 0, 0, 0], [30, 1, 0, 0, 0, 0]], np.int32)
  model = models.build_model(config)
  # The primitive: constrained beam search over the table's trie.
  index = index_lib.build_table_index(table, 0, VOCAB)
  ref_rows, ref_scores = jax.device_get(jax.jit(generate.make_recommend_fn(
      model, index, beam_size=5, top_k=5))(params, inputs))
  # The trained retriever, as the eval hook holds it (parameters per call) and as served (its own).
  vocab = types.SimpleNamespace(id_token_offset=0, vocab_size=VOCAB)
  hook = retriever.GenerativeRetriever(model=model, params=None, vocab=vocab, id_table=table,
                                       inputs_length=6, beam_size=5)
  eval_rows, eval_scores = hook.rank_inputs(inputs, 5, params=params, batch_size=2)
  with pytest.raises(UserInputError, match="no parameters"):
    hook.rank_inputs(inputs, 5)
  rec = retriever.GenerativeRetriever(model=model, params=params, vocab=vocab, id_table=table,
                                      inputs_length=6, beam_size=5)
  rec_rows, rec_scores = jax.device_get(rec.topk_fn(5)(params, inputs))
  np.testing.assert_array_equal(eval_rows, ref_rows)
  np.testing.assert_array_equal(rec_rows, ref_rows)
  np.testing.assert_allclose(eval_scores, ref_scores, rtol=1e-6)
  np.testing.assert_allclose(rec_scores, ref_scores, rtol=1e-6)
  # score(): the teacher-forced log-probability of each returned row is its beam score.
  np.testing.assert_allclose(rec.score(inputs, rec_rows), rec_scores, rtol=1e-4, atol=1e-4)
  with pytest.raises(UserInputError, match="ID-table rows"):
    rec.score(inputs, np.full((3, 1), table.num_tracks))
  # All 5 IDs are reachable, both [5, 6] and its extension [5, 6, 7].
  assert sorted(eval_rows[0].tolist()) == [0, 1, 2, 3, 4]
  # A per-row prior (batched like the prompts, the last batch padded): beam 5 finds all 5 IDs, so each
  # row's score is its log-prob + prior - the prompt's best prior, and the order follows.
  prior = np.random.default_rng(0).random((3, 5)).astype(np.float32) * 3
  p_rows, p_scores = hook.rank_inputs(inputs, 5, params=params, batch_size=2, row_prior_NxR=prior)
  base = np.take_along_axis(eval_scores, np.argsort(eval_rows, axis=1), 1)  # [3, 5] by row
  want = base + prior - prior.max(axis=1, keepdims=True)
  np.testing.assert_array_equal(p_rows, np.argsort(-want, axis=1))
  np.testing.assert_allclose(p_scores, -np.sort(-want, axis=1), rtol=1e-5, atol=1e-5)
  with pytest.raises(UserInputError, match="row prior of shape \\(3, 4\\)"):
    hook.rank_inputs(inputs, 5, params=params, row_prior_NxR=prior[:, :4])


def test_shared_ids_decode_to_their_owner_row():
  """A table whose IDs several tracks share (decodable_rows): only owners enter the trie and the
  decoded rows are table rows."""
  codes = np.array([[0, 1], [0, 1], [1, 0], [1, 1]], np.int32)
  table = IdTable(strategy="semantic_rq", track_ids=["a", "b", "c", "d"], codes=codes,
                  level_sizes=(2, 2))
  table.decodable_rows = lambda: np.array([1, 2, 3])  # row 0 shares row 1's ID and does not own it
  index = index_lib.build_table_index(table, 10, 20)
  assert index.num_rows == 4
  terminal = sorted(int(r) for r in np.asarray(index.terminal_row) if r >= 0)
  assert terminal == [1, 2, 3]


def test_pad_inputs_keeps_eos_and_batched_topk_pads_the_last_batch():
  out = evaluation.pad_inputs([[5, 6, 1], [5, 6, 7, 8, 9, 1]], 4)
  assert out.tolist() == [[5, 6, 1, 0], [5, 6, 7, 1]]
  calls = []

  def fn(params, x):
    calls.append(x.shape)
    return x[:, :2], x[:, :2].astype(np.float32)
  rows, _ = evaluation.batched_topk(fn, None, np.arange(10).reshape(5, 2), batch_size=2)
  assert calls == [(2, 2)] * 3 and rows.tolist() == np.arange(10).reshape(5, 2).tolist()
  # A per-prompt side array: each batch gets its own rows, the last one padded like the inputs.
  seen = []

  def with_side(params, x, side):
    seen.append(side.tolist())
    return x[:, :1] + side[:, :1], x[:, :1].astype(np.float32)
  side = 100 * np.arange(5).reshape(5, 1)
  rows, _ = evaluation.batched_topk(with_side, None, np.arange(10).reshape(5, 2), batch_size=2, side_NxR=side)
  assert seen == [[[0], [100]], [[200], [300]], [[400], [400]]]
  assert rows[:, 0].tolist() == [0, 102, 204, 306, 408]


def test_eval_loss_ignores_zero_weight_padding_rows():
  from t2t_jax.train import copy_task_batches
  config = t5.T5Config.micro()
  params = models.build_model(config).init_params(jax.random.PRNGKey(1))
  part = partitioning.Partitioner(devices=jax.devices()[:1])
  kw = dict(task_feature_lengths={"inputs": 10, "targets": 5}, split="validation", num_examples=5,
            shuffle=False, num_epochs=1)
  padded = list(copy_task_batches(batch_size=4, pad_final=True, **kw))  # 4 + 1 real, 3 padding
  exact = list(copy_task_batches(batch_size=5, **kw))
  assert len(padded) == 2 and (padded[1]["decoder_loss_weights"][1:] == 0).all()
  got = evaluation.make_eval_loss_fn(config, part, padded, 4)(params, 0)
  want = evaluation.make_eval_loss_fn(config, part, exact, 5)(params, 0)
  assert got["num_tokens"] == want["num_tokens"]
  assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
  assert got["accuracy"] == pytest.approx(want["accuracy"], rel=1e-5)
