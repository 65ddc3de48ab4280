"""Validation chooses among both scalable rounds, per fold: the fifth round's RQ over the encoder
(`../compare_cpcd_scalable_dense/fold{k}`) and this round's artist-prefixed / CF + text candidates
(`fold{k}`) are scored on the same inner-validation split with the same seed-0 encoder; the round whose
best validation setting scores higher (Hits@10, then MAP@10; ties to the earlier round, as
`fair_study` breaks ties between candidates) supplies the fold's test vectors, already logged by its own
nested run (no new test run).  Bootstraps with the merge's resampling (`fair_study.paired_rows`) against
the tuned bi-encoder, the hybrid and one token per track + priors.  Run from the repository root:
    python3 docs/results/compare_cpcd_scalable_artist/pool_rounds.py MERGED_DIR  (e.g. .../merged_folds0123)
writes MERGED_DIR/pooled_rounds.json."""
import json
import sys

import numpy as np

from t2t_jax import io_utils
from t2t_jax.studies import fair_study

R = "docs/results"
ROUNDS = {  # earlier round first
    "fifth": ("Text2Tracks, scalable IDs + BM25 + dense prior, chosen on validation",
              R + "/compare_cpcd_scalable_dense/fold{k}/validation.json"),
    "sixth": ("Text2Tracks, artist-prefixed or CF + text scalable IDs + priors, chosen on validation",
              R + "/compare_cpcd_scalable_artist/fold{k}/validation.json"),
}
POOLED = "Text2Tracks, scalable IDs, round chosen on validation"
BASELINES = {"bi_encoder_tuned": "Bi-encoder fine-tuned, tuned (MiniLM-L6, all pairs, MNRL)",
             "hybrid": "Hybrid BM25 + tuned bi-encoder (RRF, weight tuned)",
             "one_token_priors": "Text2Tracks + BM25 + dense prior (one token per track, chosen on validation)",
             **{f"{r}_round": m for r, (m, _) in ROUNDS.items()}}

merged = sys.argv[1]
with open(f"{merged}/per_query.json", encoding="utf-8") as f:
  per_query = json.load(f)
folds = sorted(per_query[f"as_written|{ROUNDS['sixth'][0]}"])
pooled, picks = {}, {}
for k in folds:
  best = None
  for name, (method, path) in ROUNDS.items():
    with open(path.format(k=k), encoding="utf-8") as f:
      rows = [r for r in json.load(f) if r.get("fold") == int(k)]
    top = max(rows, key=lambda r: (r["val_hits@10"], r["val_map@10"]))
    score = (top["val_hits@10"], top["val_map@10"])
    picks.setdefault(k, {})[name] = {"val_hits@10": score[0], "val_map@10": score[1],
                                     "id_strategy": top["id_strategy"], "validation_rows": len(rows)}
    if best is None or score > best[0]:
      best = (score, name, method)
  picks[k]["picked"] = best[1]
  pooled[k] = per_query[f"as_written|{best[2]}"][k]
per_query[f"as_written|{POOLED}"] = pooled


def mean_metric(method, key):
  d = per_query[f"as_written|{method}"]
  return float(np.mean([np.mean([np.mean(v[key]) for v in d[k].values()]) for k in folds]))


out = {"command": "python3 " + " ".join(sys.argv), "merged_dir": merged, "folds": folds, "picks": picks,
       "rows": {m: {key: round(mean_metric(m, key), 4) for key in ("hits@10", "map@10")}
                for m in [POOLED, *BASELINES.values()]},
       "num_queries": int(sum(len(next(iter(pooled[k].values()))["hits@10"]) for k in folds)), "pairs": {}}
for name, other in BASELINES.items():
  out["pairs"][name] = bt = fair_study.paired_rows(per_query, "as_written", POOLED, other, num_samples=10000,
                                                   seed=0)
  print(name, {key: (round(bt[key]["mean_diff"], 3), (round(bt[key]["low"], 3), round(bt[key]["high"], 3)),
                     round(bt[key]["p_value"], 4)) for key in ("hits@10", "map@10")})
print(json.dumps(picks), json.dumps(out["rows"], indent=1))
io_utils.write_json(f"{merged}/pooled_rounds.json", out)
