"""CPCD's turn-level study: methods fitted on an imported CPCD dataset dir, scored turn by turn with the
protocol of studies/cpcd_turns.py (the command: tools/cpcd_turns.py; its flags name the arguments here).

  run             scores `methods` on the dataset dir's test conversations; returns the results document
  query_text_fn   a turn query's text as the dataset dir's prompts were made (masking, normalisation, cut)
  reference_rows  the dataset authors' published development-set figures, labelled as a reference

Methods (fitted on the train split: prompt = the playlist title as the tasks cut it, catalog texts as
studies/baselines.py): most_popular, bm25, bi_encoder (zero-shot MiniLM-L6), bi_encoder_tuned and hybrid
(studies/tuning.py, chosen on the validation split), text2tracks (a model dir whose ID table holds the
dataset's catalog in its order), text2tracks_tuned (trained on the train split: `fair_study.ADAPTED_FAMILY`,
warm-started from the tuned bi-encoder).  Every row also carries the conversation-level scores of the
fold study (the whole conversation as one query, the goal playlist as gold) under "conversation".
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from typing import Any, Callable, Sequence

import numpy as np

from t2t_jax import evaluation
from t2t_jax.serving import assets as assets_lib, retriever
from t2t_jax.baselines import bi_encoder, bm25, popularity
from t2t_jax.baselines.catalog import CatalogTexts
from t2t_jax.data import cpcd, formats, prompts as prompts_lib
from t2t_jax.errors import UserInputError
from t2t_jax.studies import baselines as baselines_study
from t2t_jax.studies import cpcd_turns, fair_study, pipeline, tuning

METHODS = ("most_popular", "bm25", "bi_encoder", "bi_encoder_tuned", "hybrid", "text2tracks", "text2tracks_tuned")
LABELS = {"most_popular": baselines_study.BASELINE_LABELS["most_popular"],
          "bm25": baselines_study.BASELINE_LABELS["bm25"],
          "bi_encoder": baselines_study.BASELINE_LABELS["bi_encoder"],
          "bi_encoder_tuned": "Bi-encoder fine-tuned, chosen on validation (MiniLM-L6)",
          "hybrid": "Hybrid BM25 + tuned bi-encoder, weight chosen on validation",
          "text2tracks": "Text2Tracks (--model_dir)",
          "text2tracks_tuned": "Text2Tracks over the tuned bi-encoder's encoder (per-track IDs fixed at its embeddings)"}
ROUND = 4


def _split_prompts(ds: formats.Dataset, split: str, max_chars: int) -> tuple[list[str], list[list[int]]]:
  """(prompts as the tasks cut them, catalog rows) of a split's playlists."""
  playlists = list(ds.playlists(split))
  return ([prompts_lib.make_prompt(p, "title", max_chars=max_chars) for p in playlists],
          [[ds.track_row[t] for t in p.track_ids] for p in playlists])


def query_text_fn(ds: formats.Dataset, dialogs: list[cpcd_turns.Dialog], max_chars: int) -> cpcd_turns.TextFn:
  """A query text as D's prompts were made: the importer's masking (meta.json "artists": "masked" with
  the catalog's artists, "entities_masked" also with the conversation's own names), then the tasks'
  cleaning, normalisation and cut (`prompts.make_prompt`)."""
  mode = ds.meta.get("artists", "as_written")
  songs = cpcd._songs([d.conversation for d in dialogs])[1]  # pylint: disable=protected-access
  artists = [a for s in songs.values() for a in s[1]]  # the importer's catalog artists
  if mode == "as_written":
    mask = None
  elif mode == "masked":
    masker = cpcd.ArtistMasker(artists)
    mask = lambda text, conv: masker.mask(text)[0]  # noqa: E731
  elif mode == "entities_masked":
    entity_masker = cpcd.EntityMasker(songs.values())
    names = cpcd._conversation_names  # pylint: disable=protected-access  (the importer's own choice of names)
    mask = lambda text, conv: entity_masker.mask(text, *names(conv))[0]  # noqa: E731
  else:
    raise UserInputError(f"--dataset_dir {ds.directory}: meta.json artists={mode!r}: this tool cannot "
                         "redo that masking on turn queries")

  def fn(text: str, conv) -> str:
    if mask is not None:
      text = mask(text, conv)
    text = prompts_lib.normalize_text(prompts_lib.clean_text(text))
    return prompts_lib.truncate(text, max_chars)
  return fn


def _text2tracks_rank_fn(model_dir: str, beam_size: int | None, track_ids: list[str], batch_size: int):
  """rank_fn over a Text2Tracks model dir whose ID table rows are the dataset's catalog rows."""
  rec = retriever.GenerativeRetriever.from_model_dir(model_dir, beam_size=beam_size)
  table_ids = list(rec.id_table.track_ids)
  if table_ids != track_ids:
    diff = next((i for i, (a, b) in enumerate(zip(table_ids, track_ids)) if a != b),
                min(len(table_ids), len(track_ids)))
    raise UserInputError(f"--model_dir {model_dir}: its ID table's tracks are not --dataset_dir's catalog "
                         f"({len(table_ids)} vs {len(track_ids)} tracks, first difference at row {diff})")

  def rank(texts: list[str], n: int):
    return np.concatenate([rec.recommend_rows(texts[s:s + batch_size], n)[0]
                           for s in range(0, len(texts), batch_size)])
  return rank


def _row(name: str, result: dict, train_seconds: float | None, **extra) -> dict:
  row = {"method": LABELS[name], "name": name,
         "macro": {k: round(v, ROUND) for k, v in result["macro"].items()},
         "micro": {k: round(v, ROUND) for k, v in result["micro"].items()},
         **{k: result[k] for k in ("num_conversations", "num_turns", "turns_skipped", "empty_queries",
                                   "candidates", "rank_seconds")},
         "per_turn": {k: [round(x, ROUND) for x in v] if k.startswith("hit@") else v
                      for k, v in result["per_turn"].items()},
         # for paired tests between methods and seeds; ordered as the document's data.conversation_ids
         "per_conversation": {k: v for k, v in result["per_conversation"].items() if k != "conversation_id"},
         "train_seconds": None if train_seconds is None else round(train_seconds, 1), **extra}
  print(f"{name:18s} macro hit@10 {row['macro'].get('hit@10', float('nan')):.3f}  "
        f"micro hit@10 {row['micro'].get('hit@10', float('nan')):.3f}  "
        f"macro recall@10 {row['macro'].get('recall@10', float('nan')):.3f}  "
        f"macro map@10 {row['macro'].get('map@10', float('nan')):.3f}  "
        f"train {row['train_seconds'] if train_seconds is not None else '-'} s", flush=True)
  return row


def reference_rows() -> dict:
  """The dataset authors' published development-set figures, labelled as a reference."""
  return {"label": "reference, not a comparison: " + cpcd_turns.PUBLISHED_DEV_SOURCE,
          "rows": [{"method": name, "macro": {k: v[0] for k, v in m.items()}, "micro": {k: v[1] for k, v in m.items()},
                    "num_conversations": 448, "num_turns": 2396}
                   for name, m in cpcd_turns.PUBLISHED_DEV.items()]}


def _check_methods(methods: list[str], model_dir: str | None) -> list[str]:
  unknown = [m for m in methods if m not in METHODS]
  if unknown or not methods:
    raise UserInputError(f"--methods: unknown {unknown or methods!r}; choose from {', '.join(METHODS)}")
  if "text2tracks" in methods and not model_dir:
    raise UserInputError("--methods text2tracks needs --model_dir")
  return list(dict.fromkeys(methods))


def _clusters_path(cpcd_dir: str, clusters: str | None) -> str | None:
  if clusters == "none":
    return None
  if clusters:
    if not os.path.isfile(clusters):
      raise UserInputError(f"--clusters {clusters}: no such file")
    return clusters
  found = os.path.join(cpcd_dir, cpcd_turns.CLUSTERS_FILE)
  return found if os.path.isfile(found) else None


@dataclasses.dataclass
class _TurnData:
  """The dataset dir read against the raw CPCD folder: turn queries, catalog keys, split prompts."""
  ds: formats.Dataset
  clusters_file: str | None
  keys: cpcd_turns.TrackKeys
  cat_keys: list[str]
  test_ids: list[str]
  queries: list[cpcd_turns.TurnQuery]
  catalog: CatalogTexts
  max_chars: int
  train: list[tuple[str, list[int]]]
  val_prompts: list[str]
  val_rows: list[list[int]]


def _load(dataset_dir: str, cpcd_dir: str, clusters: str | None, max_turns: int | None) -> _TurnData:
  files = [os.path.join(cpcd_dir, f) for f in (cpcd.TRAIN_FILE, cpcd.VAL_FILE)]
  if not os.path.isdir(cpcd_dir) or not all(os.path.isfile(f) for f in files):
    raise UserInputError(f"--cpcd_dir {cpcd_dir}: expected a folder with {cpcd.TRAIN_FILE} and {cpcd.VAL_FILE}")
  clusters_file = _clusters_path(cpcd_dir, clusters)
  ds = formats.Dataset.load(dataset_dir)
  if ds.meta.get("source") != "cpcd":
    raise UserInputError(f"--dataset_dir {dataset_dir}: not a CPCD import (meta.json source "
                         f"{ds.meta.get('source')!r}; make one with `t2t import cpcd`)")
  dialogs = [d for f in files for d in cpcd_turns.read_dialogs(f)]
  keys = cpcd_turns.TrackKeys.from_dialogs(
      dialogs, clusters=cpcd_turns.read_clusters(clusters_file) if clusters_file else None,
      aliases=cpcd_turns.read_aliases(dataset_dir))
  try:
    cat_keys = cpcd_turns.catalog_keys(ds.tracks, keys)
  except UserInputError as e:
    raise UserInputError(f"--dataset_dir {dataset_dir} and --cpcd_dir {cpcd_dir}: {e}") from None
  max_chars = int(ds.meta.get("prompt_max_chars") or prompts_lib.DEFAULT_MAX_CHARS)
  test_ids = ds.split_ids("test")
  if not test_ids:
    raise UserInputError(f"--dataset_dir {dataset_dir}: its test split is empty")
  try:
    queries = cpcd_turns.turn_queries(dialogs, keys, max_turns=max_turns, conversation_ids=test_ids,
                                      text_fn=query_text_fn(ds, dialogs, max_chars))
  except UserInputError as e:
    raise UserInputError(f"--dataset_dir {dataset_dir} test split vs --cpcd_dir {cpcd_dir}: {e}") from None
  catalog = CatalogTexts.from_tracks(ds.tracks, pipeline.track_text)
  train_prompts, train_rows = _split_prompts(ds, "train", max_chars)
  val_prompts, val_rows = _split_prompts(ds, "validation", max_chars)
  return _TurnData(ds=ds, clusters_file=clusters_file, keys=keys, cat_keys=cat_keys, test_ids=test_ids,
                   queries=queries, catalog=catalog, max_chars=max_chars,
                   train=list(zip(train_prompts, train_rows)), val_prompts=val_prompts, val_rows=val_rows)


class _Fitted:
  """The retrievers, each fitted once on the train split (tuned ones chosen on validation), memoized:
  `get(name)` -> (retriever, fit seconds, extra row fields)."""

  def __init__(self, data: _TurnData, *, seed: int, track_text: str, threads: int | None, cache_dir: str | None,
               tune_grid: dict | None, hybrid_weights, hybrid_depth: int):
    self.data, self.seed, self.track_text, self.cache_dir = data, seed, track_text, cache_dir
    self.tune_grid, self.hybrid_weights, self.hybrid_depth = tune_grid, hybrid_weights, hybrid_depth
    # prompts uncut (max_seq_length), as Text2Tracks reads them
    self.bi_kw = {**baselines_study.BI_ENCODER_DEFAULTS, "track_text": track_text, "threads": threads,
                  "seed": seed, "max_seq_length": pipeline.MAX_WORDPIECE_LENGTH}
    self.bi_kw.pop("epochs", None)
    self.fitted: dict[str, tuple[Any, float, dict]] = {}

  def get(self, name: str) -> tuple[Any, float, dict]:
    if name not in self.fitted:
      t = time.perf_counter()
      model, extra, before_s = self._fit(name)
      self.fitted[name] = (model, time.perf_counter() - t + before_s, extra)
    return self.fitted[name]

  def _fit(self, name: str) -> tuple[Any, dict, float]:
    """(retriever, extra row fields, seconds of the fits it builds on)."""
    d = self.data
    if name == "most_popular":
      return popularity.MostPopular().fit(d.catalog, d.train), {}, 0.0
    if name == "bm25":
      return bm25.BM25Retriever().fit(d.catalog, d.train), {}, 0.0
    if name == "bi_encoder":
      model = bi_encoder.BiEncoderRetriever(cache_dir=self.cache_dir, **self.bi_kw).fit(d.catalog, d.train)
      return model, {"track_text": self.track_text}, 0.0
    if name == "bi_encoder_tuned":
      model, info = tuning.tune_bi_encoder(d.catalog, d.train, d.val_prompts, d.val_rows,
                                           grid=dict(self.tune_grid or {}), seed=self.seed,
                                           base_kwargs={k: v for k, v in self.bi_kw.items() if k != "seed"})
      return model, {"tuning": info}, 0.0
    # hybrid: its own time plus the fit times of the two retrievers it fuses
    sparse, dense = self.get("bm25"), self.get("bi_encoder_tuned")
    model, info = tuning.tune_hybrid(sparse[0], dense[0], d.val_prompts, d.val_rows,
                                     weights=list(self.hybrid_weights), depth=self.hybrid_depth)
    return model, {"tuning": info, "train_seconds_includes": "bm25 and bi_encoder_tuned fits"}, sparse[1] + dense[1]


def _scorer(data: _TurnData, rows: list[dict], k: int) -> tuple[Callable[..., None], list[list[str]]]:
  """(score, conversation ids): score(name, rank_fn, fit seconds, **row fields) appends a row of
  turn-level and conversation-level scores to `rows` and the ids its per-conversation values follow
  to the returned list."""
  test_prompts, test_rows = _split_prompts(data.ds, "test", data.max_chars)

  def score(name, rank_fn, fit_s, **extra):
    result = cpcd_turns.rank_turns(rank_fn, data.queries, data.cat_keys, k)
    conv = evaluation.evaluate_rankings(np.asarray(rank_fn(test_prompts, k)), test_rows, ks=(1, 5, k))
    extra["conversation"] = {m: round(float(conv[m]), ROUND) for m in (f"hits@{k}", f"map@{k}", "num_queries")}
    rows.append(_row(name, result, fit_s, **extra))
    conversation_ids.append(result["per_conversation"]["conversation_id"])
  conversation_ids: list[list[str]] = []
  return score, conversation_ids


def run(dataset_dir: str, cpcd_dir: str, *, methods=("most_popular", "bm25"), clusters: str | None = None,
        model_dir: str | None = None, beam_size: int | None = None, k: int = 10,
        max_turns: int | None = cpcd_turns.MAX_TURNS, seed: int = 0, track_text: str = "metadata",
        threads: int | None = 1, cache_dir: str | None = None, tune_grid: dict | None = None,
        hybrid_weights=tuning.HYBRID_WEIGHTS, hybrid_depth: int = 100,
        batch_size: int = 64, work_dir: str | None = None, t2t_train_steps: int | None = None,
        t2t_lexical_prior_weights: Sequence[float] | None = None,
        t2t_dense_prior_weights: Sequence[float] | None = None) -> dict:
  """Scores `methods` on D's test conversations turn by turn; returns the results document.

  `t2t_lexical_prior_weights`: text2tracks_tuned gets a BM25 prior inside beam search (the bm25 row's
  index); `t2t_dense_prior_weights`: a dense prior (its tuned bi-encoder's track vectors, the query
  embedded by the model's frozen encoder, which is that bi-encoder's); every (lexical, dense) pair of
  weights is scored on D's validation split and the best kept in its model dir (`choose_priors`);
  None: none."""
  methods = _check_methods(list(methods), model_dir)
  data = _load(dataset_dir, cpcd_dir, clusters, max_turns)
  ds = data.ds
  print(f"{len(data.queries)} turn queries of {len(data.test_ids)} test conversations; catalog {len(ds.tracks)} "
        f"tracks ({len(set(data.cat_keys))} keys); {len(data.train)} train / {len(data.val_prompts)} validation "
        "playlists", flush=True)
  fitted = _Fitted(data, seed=seed, track_text=track_text, threads=threads, cache_dir=cache_dir,
                   tune_grid=tune_grid, hybrid_weights=hybrid_weights, hybrid_depth=hybrid_depth)
  if "text2tracks_tuned" in methods and not work_dir:
    raise UserInputError("--methods text2tracks_tuned needs --work_dir (its model dir goes there)")
  track_ids = [t.track_id for t in ds.tracks]
  t2t_rank_fn = None
  if "text2tracks" in methods:  # loaded (and checked against the catalog) before anything is fitted
    t2t_rank_fn = _text2tracks_rank_fn(model_dir, beam_size, track_ids, batch_size)
  rows: list[dict] = []
  score, per_row_ids = _scorer(data, rows, k)
  for name in methods:
    if name == "text2tracks":
      score(name, t2t_rank_fn, None, model_dir=os.path.abspath(model_dir), beam_size=beam_size)
    elif name == "text2tracks_tuned":
      dense, dense_s, dense_extra = fitted.get("bi_encoder_tuned")
      t = time.perf_counter()
      t2t_dir, extra = fair_study.train_adapted(dataset_dir, work_dir, dense, seed=seed, train_steps=t2t_train_steps)
      extra["decoder_train_seconds"] = extra.pop("train_seconds")  # steady-state decoder time; the row's: all
      if t2t_lexical_prior_weights or t2t_dense_prior_weights:
        extra.update(choose_priors(t2t_dir, data.val_prompts, data.val_rows, beam_size=beam_size,
                                   lexical=fitted.get("bm25")[0] if t2t_lexical_prior_weights else None,
                                   lexical_weights=t2t_lexical_prior_weights,
                                   dense=dense if t2t_dense_prior_weights else None,
                                   dense_weights=t2t_dense_prior_weights))
      rank_fn = _text2tracks_rank_fn(t2t_dir, beam_size, track_ids, batch_size)
      score(name, rank_fn, time.perf_counter() - t + dense_s, model_dir=os.path.abspath(t2t_dir), **extra,
            train_seconds_includes="bi_encoder_tuned fit (its encoder)", encoder=dense_extra.get("tuning", {}).get("chosen"))
    else:
      model, fit_s, extra = fitted.get(name)
      score(name, model.recommend, fit_s, **extra)
  return _document(data, dataset_dir, cpcd_dir, max_turns, k, rows, scored_conversations(per_row_ids))


def choose_priors(model_dir: str, val_prompts: Sequence[str], val_rows: Sequence[Sequence[int]], *,
                  lexical: bm25.BM25Retriever | None = None, lexical_weights: Sequence[float] | None = None,
                  dense: bi_encoder.BiEncoderRetriever | None = None, dense_weights: Sequence[float] | None = None,
                  beam_size: int | None = None) -> dict:
  """The weights of a BM25 prior (`lexical.prior`, BM25 shares) and of a dense prior (cosine of the
  prompt's embedding under the model's own encoder with `dense`'s track vectors: the query side
  `GenerativeRetriever.dense_prior` computes when serving) inside the model's beam search: every
  pair scored on the validation playlists (Hits@10, then MAP@10; ties: the smaller weights,
  `baselines.best_prior_trial`), the pick kept in the model dir with the index / the track table
  (`assets.add_lexical_prior`, `assets.add_dense_prior`) so its recommend ranks with it.  Returns
  {"lexical_prior": evidence, "dense_prior": evidence} for the priors given; the dense evidence
  records how far the model's query embeddings are from `dense`'s own (`query_max_abs_diff`)."""
  if not val_prompts:
    raise UserInputError("the priors' weights are chosen on the validation split, which is empty")
  if (lexical is None) != (not lexical_weights) or (dense is None) != (not dense_weights):
    raise ValueError("choose_priors: each prior needs both its retriever and its weights")
  rec = retriever.GenerativeRetriever.from_model_dir(model_dir, beam_size=beam_size, lexical_prior_weight=0,
                                                     dense_prior_weight=0)
  inputs = rec.encode(val_prompts)
  shares = lexical.prior(val_prompts) if lexical is not None else None
  table, parity = None, None
  if dense is not None:
    table = baselines_study.dense_table(dense.track_emb_NxE, rec.id_table.num_tracks)
    # The search embeds the prompt with the model's own encoder: how far that is from the bi-encoder's.
    with bi_encoder.torch_threads(dense.threads):
      parity = float(np.abs(rec.embed_inputs(inputs) - dense.encode(list(val_prompts))).max())
  trials = []
  for w, wd in itertools.product(lexical_weights or (0.0,), dense_weights or (0.0,)):
    rows, _ = rec.rank_inputs(inputs, 10, **baselines_study.prior_args(w, shares, wd, table))
    m = evaluation.evaluate_rankings(rows, [np.asarray(r) for r in val_rows], ks=(10,))
    trials.append({"weight": float(w), **({"dense_weight": float(wd)} if dense is not None else {}),
                   "val_hits@10": round(m["hits@10"], 4), "val_map@10": round(m["map@10"], 4)})
  best = baselines_study.best_prior_trial(trials)
  out = {}
  if lexical is not None:
    out["lexical_prior"] = {"weight": best["weight"], "trials": trials, "validation_playlists": len(val_prompts),
                            "documents": "metadata + training prompts (the bm25 row's)"}
    assets_lib.add_lexical_prior(model_dir, lexical.index, best["weight"], evidence=out["lexical_prior"])
  if dense is not None:
    out["dense_prior"] = {"weight": best["dense_weight"], "trials": trials, "validation_playlists": len(val_prompts),
                          "table": "the tuned bi-encoder's track vectors (bi_encoder_tuned row)",
                          "query_max_abs_diff": round(parity, 6)}
    assets_lib.add_dense_prior(model_dir, table, best["dense_weight"], evidence=out["dense_prior"])
  return out


def scored_conversations(per_row_ids: list[list[str]]) -> list[str]:
  """The conversation ids the rows' per-conversation values follow, stored once in the document.

  Which turns are scored depends on the queries only (a turn is skipped when its seeds leave no gold),
  so every method scores the same conversations in the same order; raises RuntimeError otherwise.
  """
  if any(ids != per_row_ids[0] for ids in per_row_ids):
    raise RuntimeError("methods scored different conversations: per-conversation values would not align")
  return list(per_row_ids[0]) if per_row_ids else []


def _document(data: _TurnData, dataset_dir: str, cpcd_dir: str, max_turns: int | None, k: int,
              rows: list[dict], conversation_ids: list[str]) -> dict:
  """The results document: protocol, data (with the scored conversations' ids, the order of every
  row's per_conversation values), one row per method, the published reference."""
  return {
      "protocol": ("CPCD's turn-level evaluation (t2t_jax/studies/cpcd_turns.py): query = user turns 0..t, "
                   f"t < {max_turns}; seeds = first {cpcd_turns.NUM_SEEDS} liked tracks of each earlier turn, "
                   "removed from ranking and gold; gold = the goal playlist; tracks compared by cluster / "
                   "title + artists; macro = per conversation then averaged, micro = over turns"),
      "data": {"dataset_dir": os.path.abspath(dataset_dir), "cpcd_dir": os.path.abspath(cpcd_dir),
               "clusters": os.path.abspath(data.clusters_file) if data.clusters_file else None,
               "prompt": data.ds.meta.get("prompt"), "artists": data.ds.meta.get("artists"),
               "test_conversations": len(data.test_ids), "turn_queries": len(data.queries),
               "max_turns": max_turns, "catalog_tracks": len(data.ds.tracks),
               "catalog_keys": len(set(data.cat_keys)), "train_playlists": len(data.train),
               "validation_playlists": len(data.val_prompts), "k": k,
               "track_keys": data.keys.stats, **cpcd_turns.gold_coverage(data.queries, data.cat_keys),
               "conversation_ids": conversation_ids},
      "results": rows,
      "reference": reference_rows(),
  }
