"""SeqIO postprocessors and metrics: decoded ID tokens -> ID-table rows -> ranking metrics.

A model output for one prompt is a decoded string ("<id_0_3><id_1_7><id_2_0>" for semantic/integer
IDs, plain text for content IDs), a list of token ids, or a list of those (the top-K beams, best
first).  `RowResolver.rows(...)` maps it to a ranked list of ID-table rows (-1 where the output is
not the ID of a catalog track).  Targets are taken from the example's `relevant_rows` feature.
`ranking_metric_fn(targets, predictions)` calls `t2t_jax.metrics.ranking_metrics` (Hits, Recall,
MAP, NDCG @ 1/5/10/20 and MRR) and returns seqio-style scalars.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Sequence

import numpy as np

from t2t_jax import metrics as t2t_metrics
from t2t_jax.data import vocab as t2t_vocab
from t2t_jax.errors import UserInputError
from t2t_jax.ids.table import IdTable

KS = (1, 5, 10, 20)


class RowResolver:
  """Maps decoded model outputs of one (vocabulary, ID table) pair to ID-table rows."""

  def __init__(self, spm_path: str, ids_dir: str, ids_only: bool = False):
    self.spm_path = spm_path
    self.ids_dir = ids_dir
    self.ids_only = ids_only  # the task's targets use an ID-only vocabulary (bert_t5)
    self._lock = threading.Lock()
    self._state = None

  def _load(self):
    with self._lock:
      if self._state is None:
        table = IdTable.load(self.ids_dir)
        vocab = (t2t_vocab.IdOnlyVocab(table.level_sizes) if self.ids_only and not table.is_text
                 else t2t_vocab.TextAndIdVocab(self.spm_path, table.level_sizes))
        tokens_NxL = table.token_ids(vocab.id_token_offset)
        by_tokens = {}
        for r, row in enumerate(tokens_NxL.tolist()):
          by_tokens.setdefault(tuple(t for t in row if t > 0), r)
        self._state = (vocab, by_tokens)
    return self._state

  def row(self, output: Any) -> int:
    """One decoded output (str or token ids) -> row, or -1."""
    vocab, by_tokens = self._load()
    if isinstance(output, bytes):
      output = output.decode("utf-8")
    if isinstance(output, str):
      try:
        tokens = vocab.encode(output)
      except UserInputError:  # "<id_l_c>" markup outside the vocabulary: not a catalog track.
        return -1
    else:
      tokens = [int(t) for t in np.asarray(output).reshape(-1)]
    clean = []
    for t in tokens:
      if t == t2t_vocab.EOS_ID:
        break
      if t != t2t_vocab.PAD_ID:
        clean.append(t)
    return by_tokens.get(tuple(clean), -1)

  def rows(self, output: Any) -> list[int]:
    """A single output or a list of beams -> ranked rows."""
    if isinstance(output, (str, bytes)):
      return [self.row(output)]
    if isinstance(output, np.ndarray) and output.ndim == 1:
      return [self.row(output)]
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], (int, np.integer)):
      return [self.row(output)]
    return [self.row(o) for o in output]


@functools.lru_cache(maxsize=64)
def get_resolver(spm_path: str, ids_dir: str, ids_only: bool = False) -> RowResolver:
  return RowResolver(spm_path, ids_dir, ids_only)


def postprocess_rows(output: Any, example: dict | None = None, is_target: bool = False, *,
                     spm_path: str, ids_dir: str, ids_only: bool = False) -> list[int]:
  """seqio postprocess_fn: targets -> the example's relevant rows; predictions -> ranked rows."""
  if is_target:
    if example is None or "relevant_rows" not in example:
      raise ValueError("targets need an example with 'relevant_rows' (validation/test splits)")
    return [int(r) for r in np.asarray(example["relevant_rows"]).reshape(-1)]
  return get_resolver(spm_path, ids_dir, ids_only).rows(output)


def ranking_metric_fn(targets: Sequence[Sequence[int]], predictions: Sequence[Any]) -> dict[str, float]:
  """seqio predict metric: Hits/Recall/MAP/NDCG@K and MRR of ranked rows against relevant rows."""
  ranked = [[p] if isinstance(p, (int, np.integer)) else list(p) for p in predictions]
  out = t2t_metrics.ranking_metrics(ranked, [list(t) for t in targets], ks=KS)
  return {k: float(v) for k, v in out.items()}
