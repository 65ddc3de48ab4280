"""Baselines tuned on inner validation (never on test): the fine-tuned bi-encoder and the hybrid.

  tune_bi_encoder(catalog, train, val_prompts, val_relevant, grid=..., seed=0, base_kwargs=...)
      -> (fitted BiEncoderRetriever, info)
  refit_bi_encoder(catalog, train, info["chosen"], seed=1, base_kwargs=...) -> BiEncoderRetriever
  tune_hybrid(bm25, dense, val_prompts, val_relevant, weights=..., depth=100) -> (HybridRetriever, info)

The bi-encoder is fine-tuned over ALL (prompt, goal track) pairs (`BiEncoderRetriever(pairs="all")`,
MNRL without same-prompt collisions).  `grid` (every key optional, DEFAULT_GRID fills the rest):
  learning_rate, batch_size, positives_per_prompt   lists: every combination is one training run
  epochs                                            an int: the most epochs a run trains; each run is
                                                    scored on validation after every epoch and the
                                                    best epoch is its result (so epochs are chosen on
                                                    validation at the cost of one run per combination)
The chosen configuration is the (combination, epoch) with the best validation Hits@10 (ties: MAP@10,
then the earlier epoch, then grid order).  `refit_bi_encoder` trains another seed of it: the chosen
number of epochs on the same learning-rate schedule (`schedule_epochs` = the grid's epochs).

Each choice's figures go to `info` (the validation table behind it), for results files.
"""

from __future__ import annotations

import itertools
import time
from typing import Sequence

import numpy as np

from t2t_jax import metrics as metrics_lib
from t2t_jax.baselines import bi_encoder
from t2t_jax.baselines import hybrid as hybrid_lib
from t2t_jax.errors import UserInputError

DEFAULT_GRID = {"learning_rate": [5e-5], "batch_size": [32], "positives_per_prompt": [8], "epochs": 2}
GRID_LISTS = ("learning_rate", "batch_size", "positives_per_prompt")
HYBRID_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def check_grid(grid: dict | None) -> dict:
  """DEFAULT_GRID updated by `grid`; one message naming a bad key or value."""
  grid = dict(grid or {})
  unknown = set(grid) - set(DEFAULT_GRID)
  if unknown:
    raise UserInputError(f"bi-encoder tuning grid: unknown keys {sorted(unknown)}; allowed {sorted(DEFAULT_GRID)}")
  out = {**DEFAULT_GRID, **grid}
  for key in GRID_LISTS:
    vals = out[key]
    if not isinstance(vals, (list, tuple)) or not vals:
      raise UserInputError(f"bi-encoder tuning grid: {key} must be a non-empty list, got {vals!r}")
    out[key] = list(vals)
  if isinstance(out["epochs"], bool) or not isinstance(out["epochs"], int) or out["epochs"] < 1:
    raise UserInputError(f"bi-encoder tuning grid: epochs must be a positive integer, got {out['epochs']!r}")
  return out


def _bi_encoder(base_kwargs: dict, *, seed: int, epochs: int, schedule_epochs: int, **hparams):
  kw = {k: v for k, v in dict(base_kwargs).items() if k not in ("epochs", "cache_dir", "finetune", "pairs")}
  return bi_encoder.BiEncoderRetriever(finetune=True, pairs="all", seed=seed, epochs=epochs,
                                       schedule_epochs=schedule_epochs, **kw, **hparams)


def tune_bi_encoder(catalog, train, val_prompts: Sequence[str], val_relevant, *, grid: dict | None = None,
                    seed: int = 0, base_kwargs: dict | None = None):
  """(the best fitted bi-encoder, info {grid, trials, chosen, train_seconds}) (module docstring)."""
  grid = check_grid(grid)
  if not len(val_prompts):
    raise UserInputError("bi-encoder tuning: no validation prompts (the dataset's validation split is empty)")
  t0 = time.perf_counter()
  best, best_key, trials = None, None, []
  for values in itertools.product(*(grid[k] for k in GRID_LISTS)):
    hp = dict(zip(GRID_LISTS, values))
    model = _bi_encoder(base_kwargs or {}, seed=seed, epochs=grid["epochs"], schedule_epochs=grid["epochs"], **hp)
    model.fit(catalog, train, validation=(list(val_prompts), val_relevant))
    for ep in model.stats["val_by_epoch"]:
      trials.append({**hp, **ep})
    top = next(e for e in model.stats["val_by_epoch"] if e["epoch"] == model.stats["best_epoch"])
    key = (top["hits@10"], top["map@10"])
    if best_key is None or key > best_key:
      best, best_key = model, key
      chosen = {**hp, "epochs": model.stats["best_epoch"], "schedule_epochs": grid["epochs"],
                "val_hits@10": top["hits@10"], "val_map@10": top["map@10"]}
    else:
      del model
  info = {"grid": grid, "trials": trials, "chosen": chosen, "val_queries": len(val_prompts),
          "train_seconds": round(time.perf_counter() - t0, 1), "selection": "validation Hits@10, then MAP@10"}
  return best, info


def refit_bi_encoder(catalog, train, chosen: dict, *, seed: int, base_kwargs: dict | None = None):
  """Another seed of the chosen configuration (its epochs, on the grid's schedule)."""
  hp = {k: chosen[k] for k in GRID_LISTS}
  return _bi_encoder(base_kwargs or {}, seed=seed, epochs=int(chosen["epochs"]),
                     schedule_epochs=int(chosen["schedule_epochs"]), **hp).fit(catalog, train)


def tune_hybrid(sparse, dense, val_prompts: Sequence[str], val_relevant, *,
                weights: Sequence[float] = HYBRID_WEIGHTS, depth: int = 100, k0: float = 60.0):
  """(HybridRetriever with the RRF weight of the best validation Hits@10 (ties: MAP@10, then the
  weight closest to 0.5), info {trials, chosen})."""
  weights = [float(w) for w in weights]
  if not weights:
    raise UserInputError("hybrid tuning: no weights to try")
  if not len(val_prompts):
    raise UserInputError("hybrid tuning: no validation prompts (the dataset's validation split is empty)")
  model = hybrid_lib.HybridRetriever(sparse, dense, weight=weights[0], depth=depth, k0=k0)
  s, d = model.rankings(val_prompts)
  relevant = [set(map(int, r)) for r in val_relevant]
  trials = []
  for w in weights:
    rows = hybrid_lib.fuse(s, d, 10, weight=w, k0=k0)
    m = metrics_lib.ranking_metrics([list(r) for r in rows], relevant, (10,))
    trials.append({"weight": w, "hits@10": round(float(m["hits@10"]), 4), "map@10": round(float(m["map@10"]), 4)})
  top = max(trials, key=lambda t: (t["hits@10"], t["map@10"], -abs(t["weight"] - 0.5)))
  model.weight = top["weight"]
  return model, {"trials": trials, "chosen": top, "depth": depth, "k0": k0, "val_queries": len(val_prompts),
                 "selection": "validation Hits@10, then MAP@10"}


def mean_over_seeds(vectors: Sequence[Sequence[float]]) -> np.ndarray:
  """Per-query mean over seeds (the paired bootstrap's unit is the query, seeds averaged)."""
  arr = np.asarray(vectors, np.float64)
  if arr.ndim != 2:
    raise ValueError(f"expected [seeds, queries], got shape {arr.shape}")
  return arr.mean(0)
