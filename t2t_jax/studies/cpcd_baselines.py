"""The paper's retrieval baselines on CPCD's development set, read directly from its two JSONL files
(no dataset conversion); the library behind tools/cpcd_baselines.py (its docstring: the protocol).

  load_cpcd      the two files -> (CatalogTexts, train [(prompt, rows)], test [(prompt, rows)], info):
                 tracks deduplicated by normalised (title, artists) (`track_key`)
  method_specs   (name, factory) per method: most popular, BM25 and bi-encoders over each track text
  evaluate       one method fitted and scored (t2t_jax.metrics, track and artist level) on one split
  folds_of       fold index per example for k-fold cross-validation
  run            every method on the canonical split or on k folds, with paired bootstraps vs. a reference
"""

from __future__ import annotations

import glob
import json
import os
import re
import time

import numpy as np

from t2t_jax import metrics, stats
from t2t_jax.baselines import bi_encoder, bm25, popularity
from t2t_jax.baselines.catalog import CatalogTexts
from t2t_jax.errors import UserInputError
from t2t_jax.models import pretrained

KS = (1, 5, 10)


def _norm(text: str) -> str:
  return " ".join(re.sub(r"[^\w]+", " ", str(text).casefold()).split())


def track_key(track: dict) -> tuple:
  return _norm(track.get("track_titles", "")), tuple(sorted(_norm(a) for a in track.get("track_artists") or []))


def _read(path: str) -> list[dict]:
  out = []
  with open(path, encoding="utf-8") as f:
    for i, line in enumerate(f, 1):
      if line.strip():
        try:
          out.append(json.loads(line))
        except json.JSONDecodeError as e:
          raise UserInputError(f"{path}:{i}: not JSON ({e.msg})") from None
  return out


def load_cpcd(cpcd_dir: str):
  """(CatalogTexts, train [(prompt, rows)], test [(prompt, rows)], info)."""
  paths = {}
  for split in ("train", "val"):
    found = sorted(glob.glob(os.path.join(cpcd_dir, f"*dialogs.dev.{split}.jsonl")))
    if not found:
      raise UserInputError(f"{cpcd_dir}: no *dialogs.dev.{split}.jsonl")
    paths[split] = found[0]
  convs = {split: _read(p) for split, p in paths.items()}
  row_of, meta, artists = {}, [], []
  for split in ("train", "val"):
    for c in convs[split]:
      for tr in c.get("tracks", {}).values():
        key = track_key(tr)
        if key not in row_of:
          row_of[key] = len(meta)
          names = tr.get("track_artists") or []
          meta.append(f"{', '.join(names)} - {tr.get('track_titles', '')} ({tr.get('track_release_titles', '')})")
          artists.append(_norm(names[0]) if names else "")

  def examples(split):
    out, skipped = [], 0
    for c in convs[split]:
      prompt = " ".join(t.get("user_query", "") for t in c.get("turns", [])).strip()
      rows = sorted({row_of[track_key(c["tracks"][t])] for t in c.get("goal_playlist", []) if t in c["tracks"]})
      if rows and prompt:
        out.append((prompt, rows))
      else:
        skipped += 1
    return out, skipped
  (train, skip_train), (test, skip_test) = examples("train"), examples("val")
  info = {"files": {k: os.path.basename(v) for k, v in paths.items()}, "num_tracks": len(meta),
          "num_artists": len(set(artists)), "train_conversations": len(train), "test_conversations": len(test),
          "skipped_empty": skip_train + skip_test,
          "test_goal_tracks_in_train_goals": _overlap(train, test)}
  return CatalogTexts(metadata=meta, artists=artists), train, test, info


def _overlap(train, test) -> float:
  seen = {r for _, rows in train for r in rows}
  test_rows = [r for _, rows in test for r in rows]
  return round(float(np.mean([r in seen for r in test_rows])), 3)


def method_specs(finetune_epochs: int, threads: int | None, cache_dir: str | None, modes: list[str],
                 mpnet_modes: list[str] = ()) -> list:
  """(name, factory) per method, cheapest first."""
  specs = [("most_popular", popularity.MostPopular)]
  for mode in ("metadata", "playlist_titles", "metadata_and_titles"):
    specs.append((f"bm25:{mode}", lambda m=mode: bm25.BM25Retriever(track_text=m)))
  for mode in ("metadata", "playlist_titles", "prompt_mean"):
    specs.append((f"bi_encoder:{mode}", lambda m=mode: bi_encoder.BiEncoderRetriever(
        track_text=m, threads=threads, cache_dir=cache_dir)))
  if finetune_epochs > 0:
    for mode in modes:
      specs.append((f"bi_encoder_ft{finetune_epochs}:{mode}", lambda m=mode: bi_encoder.BiEncoderRetriever(
          track_text=m, finetune=True, epochs=finetune_epochs, threads=threads, seed=0)))
  for mode in mpnet_modes:  # the paper's encoder; about 5x MiniLM-L6's compute per text
    specs.append((f"bi_encoder_mpnet:{mode}", lambda m=mode: bi_encoder.BiEncoderRetriever(
        pretrained.mpnet_dir(), track_text=m, threads=threads, cache_dir=cache_dir)))
  return specs


def evaluate(name: str, factory, catalog, train, test) -> tuple[dict, dict]:
  """(row of averaged metrics and timings, per-query metric vectors) of one method on one split."""
  prompts, relevant = [p for p, _ in test], [set(r) for _, r in test]
  t = time.perf_counter()
  model = factory().fit(catalog, train)
  fit_s = time.perf_counter() - t
  t = time.perf_counter()
  ranked = model.recommend(prompts, 10)
  rec_s = time.perf_counter() - t
  m = metrics.ranking_metrics([list(r) for r in ranked], relevant, KS, artist_of_row=catalog.artists,
                              per_query=True)
  vectors = m.pop("per_query")
  row = {"method": name, **{k: round(v, 4) for k, v in m.items() if k != "num_queries"},
         "num_queries": m["num_queries"], "fit_seconds": round(fit_s, 1), "recommend_seconds": round(rec_s, 2),
         "num_cold_tracks": getattr(model, "num_cold_tracks", None)}
  if getattr(model, "stats", None):
    row["model_stats"] = model.stats
  print(f"{name:34s} hits@10 {row['hits@10']:.3f}  map@10 {row['map@10']:.3f}  "
        f"artist hits@10 {row['artist_hits@10']:.3f}  artist map@10 {row['artist_map@10']:.3f}  "
        f"fit {fit_s:7.1f} s  recommend {rec_s:6.2f} s", flush=True)
  return row, vectors


def folds_of(examples: list, num_folds: int, seed: int = 0) -> list[int]:
  """Fold index per example: a seeded permutation dealt round-robin (fold sizes differ by <= 1)."""
  fold = np.empty(len(examples), np.int64)
  fold[np.random.default_rng(seed).permutation(len(examples))] = np.arange(len(examples)) % num_folds
  return fold.tolist()


def _bootstrap(per_query: dict, reference: str, samples: int, groups=None) -> dict:
  out = {}
  for name, vectors in per_query.items():
    if name != reference and reference in per_query:
      out[name] = {key: stats.paired_bootstrap(vectors[key], per_query[reference][key], num_samples=samples,
                                               seed=0, groups=groups)
                   for key in ("hits@10", "map@10", "artist_hits@10")}
  return out


def run(cpcd_dir: str, *, finetune_epochs: int = 1, finetune_modes=("playlist_titles",), threads: int | None = 1,
        cache_dir: str | None = None, reference: str = "bm25:playlist_titles", only: list[str] | None = None,
        bootstrap_samples: int = 10000, mpnet_modes=(), folds: int = 0) -> dict:
  """The canonical split (folds=0), or k-fold cross-validation over all development conversations:
  per-fold rows, their mean_and_spread, and the paired bootstrap over the concatenated queries both
  pooled and resampled within folds."""
  catalog, train, test, info = load_cpcd(cpcd_dir)
  print(json.dumps(info), flush=True)
  specs = [(n, f) for n, f in method_specs(finetune_epochs, threads, cache_dir, list(finetune_modes),
                                           list(mpnet_modes)) if not only or n in only or n == reference]
  if folds == 0:
    rows, per_query = {}, {}
    for name, factory in specs:
      rows[name], per_query[name] = evaluate(name, factory, catalog, train, test)
    return {"data": info, "results": list(rows.values()), "reference": reference,
            "paired_bootstrap_vs_reference": _bootstrap(per_query, reference, bootstrap_samples)}
  if folds < 2:
    raise UserInputError(f"--folds must be 0 or >= 2, got {folds}")
  examples = train + test
  fold_of = folds_of(examples, folds)
  fold_rows = {name: [] for name, _ in specs}
  per_query = {name: [] for name, _ in specs}
  for f in range(folds):
    tr = [e for e, g in zip(examples, fold_of) if g != f]
    te = [e for e, g in zip(examples, fold_of) if g == f]
    print(f"fold {f}: {len(tr)} train / {len(te)} test conversations", flush=True)
    for name, factory in specs:
      row, vectors = evaluate(name, factory, catalog, tr, te)
      fold_rows[name].append({"fold": f, **row})
      per_query[name].append(vectors)
  groups = np.repeat(np.arange(folds), np.bincount(fold_of, minlength=folds))  # fold of each joined query
  joined = {name: {k: np.concatenate([v[k] for v in vs]) for k in vs[0]} for name, vs in per_query.items()}
  summary = [{"method": name, "num_queries": int(joined[name]["hits@10"].size),
              **{key: stats.mean_and_spread([r[key] for r in fold_rows[name]])
                 for key in ("hits@10", "map@10", "artist_hits@10", "artist_map@10")}} for name, _ in specs]
  return {"data": {**info, "folds": folds, "fold_sizes": np.bincount(fold_of).tolist()},
          "results": summary, "fold_results": fold_rows, "reference": reference,
          "paired_bootstrap_vs_reference": _bootstrap(joined, reference, bootstrap_samples, groups),
          "paired_bootstrap_vs_reference_pooled": _bootstrap(joined, reference, bootstrap_samples)}
