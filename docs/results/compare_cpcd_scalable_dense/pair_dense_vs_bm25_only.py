# Paired bootstrap of the scalable + BM25 + dense row against the fourth round's scalable + BM25 row,
# the same resampling as fair_study (within folds, per-query values averaged over seeds).
import json, sys
import numpy as np
from t2t_jax import stats
from t2t_jax.studies import tuning
D = "docs/results/compare_cpcd_scalable_dense"
A = "as_written|Text2Tracks, scalable IDs + BM25 + dense prior, chosen on validation"
B = "as_written|Text2Tracks bert_t5_rq_fixed (semantic_rq_2048x2)"
out = {"command": "python3 " + " ".join(sys.argv), "a": A, "b": B, "resampling": "within folds, per-query values averaged over seeds", "pairs": {}}
for m in ["merged_fold0", "merged_fold1", "merged_fold2", "merged_fold3", "merged_folds0123"]:
  pq = json.load(open(f"{D}/{m}/per_query.json"))
  a, b = pq[A], pq[B]
  folds = sorted(set(a) & set(b))
  sm = lambda d, f, k: tuning.mean_over_seeds([v[k] for v in d[f].values()])
  groups = np.concatenate([np.full(len(sm(a, f, "hits@10")), i) for i, f in enumerate(folds)])
  out["pairs"][m] = {k: stats.paired_bootstrap(np.concatenate([sm(a, f, k) for f in folds]), np.concatenate([sm(b, f, k) for f in folds]), num_samples=10000, seed=0, groups=groups) for k in ("hits@10", "map@10")}
  out["pairs"][m]["folds"] = folds
  print(m, {k: (round(v["mean_diff"], 3), round(v["p_value"], 4)) for k, v in out["pairs"][m].items() if k != "folds"})
json.dump(out, open(f"{D}/dense_vs_bm25_only.json", "w"), indent=1)
