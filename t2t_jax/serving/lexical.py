"""The lexical prior of Text2Tracks' beam search: a BM25 index (bm25s) over the ID table's rows.

A generative retriever reads a prompt through its encoder and loses exact lexical cues a listener
types (an artist's name, a title): BM25 keeps them.  Beam search adds `weight * share` of each row
(`GenerativeRetriever.rank_inputs(row_prior_NxR=...)`, `decoding.index.subtree_max`), where a row's
share is its BM25 score divided by the prompt's best (in [0, 1]; BM25 scores are not comparable
across prompts).  The same index is the BM25 baseline's (`baselines.bm25.BM25Retriever`), and a model
dir keeps one in MODEL_DIR/assets/lexical/ with the weight in recommend.json
(`assets.add_lexical_prior`), so `t2t recommend`, `t2t serve` and the studies rank alike.

  index = LexicalIndex.build(docs)     one document per ID-table row, in row order
  index.scores(prompts)                [Q, N] float32 BM25 scores (a row of zeros: no known word)
  index.shares(prompts)                scores / each prompt's best
  index.save(dir); LexicalIndex.load(dir)

bm25s does the indexing and scoring; this module only fixes the row order, the normalisation and the
on-disk layout (bm25s' own save / load of the index and its tokenizer's vocabulary).
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

from t2t_jax.errors import UserInputError

# bm25s is imported where it is used: importing it initialises JAX's backend (it probes its jax top-k
# backend), which must not happen before `jax.distributed.initialize` in a multi-host train entry that
# imports serving.assets.
PARAMS_FILE = "lexical.json"
FORMAT = "t2t_jax.lexical.v1"


class LexicalIndex:
  """BM25 over one document per row (`build` or `load`)."""

  def __init__(self, model, tokenizer, num_docs: int, *, k1: float, b: float):
    self.model, self.tokenizer, self.num_docs = model, tokenizer, int(num_docs)
    self.k1, self.b = float(k1), float(b)

  @classmethod
  def build(cls, docs: Sequence[str], *, k1: float = 1.2, b: float = 0.75) -> "LexicalIndex":
    """Indexes `docs` (row r's document is docs[r]); English stopwords removed."""
    if not len(docs):
      raise UserInputError("lexical index: no documents to index")
    import bm25s  # pylint: disable=g-import-not-at-top  (lazy: see PARAMS_FILE's comment)
    tokenizer = bm25s.tokenization.Tokenizer(stopwords="en")
    corpus_ids = tokenizer.tokenize(list(docs), update_vocab=True, show_progress=False, return_as="ids")
    model = bm25s.BM25(k1=k1, b=b)
    model.index(corpus_ids, show_progress=False)
    return cls(model, tokenizer, len(docs), k1=k1, b=b)

  def query_ids(self, prompts: Sequence[str]) -> list[list[int]]:
    """Each prompt's known word ids (empty: no word of the prompt is in any document)."""
    return self.tokenizer.tokenize(list(prompts), update_vocab=False, show_progress=False, return_as="ids")

  def scores(self, prompts: Sequence[str]) -> np.ndarray:
    """BM25 score of every row for every prompt ([len(prompts), num_docs] float32)."""
    out = np.zeros((len(prompts), self.num_docs), np.float32)
    for i, q in enumerate(self.query_ids(prompts)):
      if q:
        out[i] = self.model.get_scores([int(t) for t in q])
    return out

  def shares(self, prompts: Sequence[str]) -> np.ndarray:
    """`scores` divided by each prompt's best, in [0, 1] (zeros for a prompt with no known word)."""
    raw = self.scores(prompts)
    return raw / np.maximum(raw.max(axis=1, keepdims=True), np.float32(1e-9))

  def save(self, path: str) -> None:
    """Writes the index, the tokenizer's vocabulary and stopwords and lexical.json into `path` (a
    fresh dir: callers write it inside an `io_utils.atomic_dir`)."""
    os.makedirs(path, exist_ok=True)
    # Indexed from word ids (as the BM25 baseline always was), bm25s keys its vocabulary by int, which
    # its JSON save refuses: saved with string keys, turned back into ints by `load`.
    vocab = self.model.vocab_dict
    self.model.vocab_dict = {str(k): v for k, v in vocab.items()}
    try:
      self.model.save(path, show_progress=False)
    finally:
      self.model.vocab_dict = vocab
    self.tokenizer.save_vocab(path)
    self.tokenizer.save_stopwords(path)
    with open(os.path.join(path, PARAMS_FILE), "w", encoding="utf-8") as f:
      json.dump({"format": FORMAT, "num_docs": self.num_docs, "k1": self.k1, "b": self.b}, f)

  @classmethod
  def load(cls, path: str) -> "LexicalIndex":
    params_path = os.path.join(path, PARAMS_FILE)
    try:
      with open(params_path, encoding="utf-8") as f:
        params = json.load(f)
    except (OSError, ValueError) as e:
      raise UserInputError(f"lexical index {path}: cannot read {PARAMS_FILE} ({e})") from None
    if not isinstance(params, dict) or params.get("format") != FORMAT:
      raise UserInputError(f"lexical index {path}: {PARAMS_FILE} is not a {FORMAT} index")
    import bm25s  # pylint: disable=g-import-not-at-top  (lazy: see PARAMS_FILE's comment)
    try:
      model = bm25s.BM25.load(path, show_progress=False)
      model.vocab_dict = {int(k): v for k, v in model.vocab_dict.items()}
      tokenizer = bm25s.tokenization.Tokenizer(stopwords=[])
      tokenizer.load_stopwords(path)
      tokenizer.load_vocab(path)
    except (OSError, ValueError, KeyError) as e:
      raise UserInputError(f"lexical index {path}: damaged ({type(e).__name__}: {e})") from None
    return cls(model, tokenizer, params["num_docs"], k1=params["k1"], b=params["b"])
