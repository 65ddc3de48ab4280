"""Evaluation: ranking metrics of held-out prompts, and the trainer's periodic evaluations.

The same `ranking_metrics` scores Text2Tracks and every baseline on the same held-out playlists.
Decoding itself is the trained retriever's (`t2t_jax.serving.retriever.GenerativeRetriever`); here
are its batching (`batched_topk`: batches padded to one fixed shape, so the jitted decoder compiles
once), the Hits@K eval fn over a retriever and the teacher-forced loss eval fn.
"""

from typing import Callable, Sequence

import jax
import numpy as np

from t2t_jax import metrics as metrics_lib
from t2t_jax.errors import UserInputError
from t2t_jax.training import losses, train_state


def pad_inputs(token_lists: Sequence[Sequence[int]], length: int) -> np.ndarray:
  """0-pads (or truncates, keeping the final EOS) token lists to [N, length] int32."""
  out = np.zeros((len(token_lists), length), dtype=np.int32)
  for i, toks in enumerate(token_lists):
    toks = list(toks)
    if len(toks) > length:
      toks = toks[: length - 1] + [toks[-1]]
    out[i, : len(toks)] = toks
  return out


def batched_topk(recommend_fn: Callable, params, inputs_NxL: np.ndarray, *, batch_size: int,
                 progress: Callable | None = None, side_NxR: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Runs a jitted `recommend_fn(params, inputs_BxL) -> (rows_BxK, scores_BxK)` over all rows.

  The last batch is padded with copies of a real row (then dropped), so every call has one shape.
  side_NxR: optional per-prompt array whose batch rows (padded the same way) are `recommend_fn`'s
  third argument (e.g. a per-prompt row prior).
  """
  n = len(inputs_NxL)
  rows, scores = [], []
  steps = range(0, n, batch_size)

  def pad(chunk, real):
    return chunk if real == batch_size else np.concatenate([chunk, np.repeat(chunk[:1], batch_size - real, axis=0)])

  for start in (progress(steps) if progress else steps):
    chunk = inputs_NxL[start:start + batch_size]
    real = len(chunk)
    extra = () if side_NxR is None else (pad(side_NxR[start:start + batch_size], real),)
    r, s = jax.device_get(recommend_fn(params, pad(chunk, real), *extra))
    rows.append(np.asarray(r)[:real])
    scores.append(np.asarray(s)[:real])
  return np.concatenate(rows), np.concatenate(scores)


def evaluate_rankings(rows_NxK: np.ndarray, relevant: Sequence[Sequence[int]],
                      ks: Sequence[int] = (1, 5, 10, 20), *, artist_of_row: Sequence | None = None,
                      per_query: bool = False) -> dict:
  """Ranking metrics of ranked rows against the held-out tracks of each prompt (artist level too
  when `artist_of_row` is given; per-query vectors under 'per_query' when asked)."""
  ks = tuple(k for k in ks if k <= rows_NxK.shape[1]) or (rows_NxK.shape[1],)
  return metrics_lib.ranking_metrics([list(r) for r in rows_NxK], [set(map(int, r)) for r in relevant], ks,
                                     artist_of_row=artist_of_row, per_query=per_query)


def make_generative_eval_fn(retriever, inputs_QxL: np.ndarray, relevant: Sequence[Sequence[int]], *,
                            beam_size: int = 20, k: int = 10, batch_size: int = 32,
                            ks: Sequence[int] = (1, 5, 10)) -> Callable:
  """`eval_fn(params, step) -> metrics`: Hits/MAP/NDCG@K of constrained beam search on Q prompts.

  `retriever`: a `t2t_jax.serving.retriever.GenerativeRetriever` of the model being trained (its
  parameters come with each call).  Plugs into the trainer's EvalHook for periodic evaluation; the
  decoder is compiled once.
  """
  if beam_size < k:
    raise UserInputError(f"beam_size ({beam_size}) must be >= k ({k})")

  def eval_fn(params, step):
    del step
    rows, _ = retriever.rank_inputs(inputs_QxL, k, beam_size=beam_size, params=params,
                                    batch_size=batch_size)
    m = evaluate_rankings(rows, relevant, ks)
    return {f"gen_{key}": v for key, v in m.items() if key != "num_queries"}

  return eval_fn


def make_eval_loss_fn(model_config, partitioner, batches: list[dict], batch_size: int) -> Callable:
  """eval_fn(params, step) -> {'loss', 'accuracy', 'num_tokens'}: teacher-forced, no dropout, per
  target token over a fixed list of this process's batches (jitted once).  Rows with zero loss
  weight (the padding of a partial final batch) count for nothing."""
  loss_fn = losses.make_loss_fn(model_config)

  def sums(params, batch):
    _, aux = loss_fn(params, batch, jax.random.PRNGKey(0), 1.0, False)
    return aux

  keys = [k for k in batches[0] if k in train_state.REQUIRED_KEYS + train_state.OPTIONAL_KEYS]
  jitted = jax.jit(sums, out_shardings=partitioner.replicated)

  def eval_fn(params, step):  # pylint: disable=unused-argument
    total = {"loss_sum": 0.0, "correct": 0.0, "weight_sum": 0.0}
    with partitioner.activation_context():
      for b in batches:
        aux = jax.device_get(jitted(params, partitioner.shard_batch({k: b[k] for k in keys},
                                                                    batch_size)))
        for k in total:
          total[k] += float(aux[k])
    tokens = max(total["weight_sum"], 1.0)
    return {"loss": total["loss_sum"] / tokens, "accuracy": total["correct"] / tokens,
            "num_tokens": total["weight_sum"]}

  return eval_fn
