"""Retrieval baselines on the same held-out prompts as Text2Tracks: BM25 (bm25s), a dense dual
encoder (T5 encoder towers, in-batch softmax) and most-popular, scored by the same metric code."""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from t2t_jax.errors import UserInputError
from t2t_jax.studies import pipeline

BASELINES = ("bm25", "dual_encoder", "most_popular")
BASELINE_LABELS = {"bm25": "BM25 (bm25s)", "dual_encoder": "Dual encoder (T5 enc, in-batch softmax)",
                   "most_popular": "Most popular"}


def run_baselines(ws: pipeline.Workspace, prompts: Sequence[str], relevant: Sequence[Sequence[int]], *,
                  k: int = 10, prompt_field: str = "title", which: Sequence[str] = ("bm25", "most_popular"),
                  dual_encoder_kwargs: dict | None = None, seed: int = 0, ks: Sequence[int] = (1, 5, 10),
                  progress: bool = False) -> list[dict]:
  """Rows (method, metrics, train_seconds, prompts_per_s) of the baselines on the same prompts."""
  from t2t_jax import evaluation  # pylint: disable=g-import-not-at-top
  from t2t_jax.baselines import bm25, popularity  # pylint: disable=g-import-not-at-top
  from t2t_jax.data import prompts as prompts_lib  # pylint: disable=g-import-not-at-top
  unknown = [w for w in which if w not in BASELINES]
  if unknown:
    raise UserInputError(f"unknown baselines {unknown}; choose from {BASELINES}")
  from t2t_jax.baselines.catalog import CatalogTexts  # pylint: disable=g-import-not-at-top
  catalog = CatalogTexts.from_tracks(ws.ds.tracks, pipeline.track_text)
  train_prompts = [(prompts_lib.make_prompt(p, prompt_field), r) for p, r in zip(ws.train_playlists, ws.rows_train)]
  rows = []
  for name in which:
    t = time.time()
    extra = {}
    if name == "bm25":
      model = bm25.BM25Retriever().fit(catalog, train_prompts)
    elif name == "most_popular":
      model = popularity.MostPopular().fit(catalog, train_prompts)
    else:
      from t2t_jax.baselines import dual_encoder  # pylint: disable=g-import-not-at-top
      from t2t_jax.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
      vocab = vocab_lib.TextAndIdVocab(ws.spm_path)
      kw = dict(dual_encoder_kwargs or {})
      kw.setdefault("seed", seed)
      kw.setdefault("progress", progress)
      model = dual_encoder.DualEncoderRetriever(encode_fn=vocab.sp.EncodeAsIds, vocab_size=vocab.vocab_size,
                                                **kw).fit(catalog, train_prompts)
      extra = {"final_loss": model.final_loss, "train_examples_per_s": model.examples_per_second}
    train_s = time.time() - t
    if extra.get("train_examples_per_s"):  # steady-state training time, as for Text2Tracks rows
      extra["train_wall_seconds"] = round(train_s, 1)
      train_s = model.train_steps * model.batch_size / extra["train_examples_per_s"]
    model.recommend(list(prompts[:8]), k)  # warm-up (jit compile) outside the timing
    t = time.time()
    ranked = model.recommend(list(prompts), k)
    secs = max(time.time() - t, 1e-9)
    rows.append({"method": BASELINE_LABELS[name], "id_strategy": None,
                 **evaluation.evaluate_rankings(np.asarray(ranked), relevant, ks=ks),
                 "decode_steps_per_id": None, "train_seconds": round(train_s, 1),
                 "prompts_per_s": round(len(prompts) / secs, 1), **extra})
  return rows
