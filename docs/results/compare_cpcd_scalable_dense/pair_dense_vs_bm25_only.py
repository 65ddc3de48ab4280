"""Paired bootstrap of the scalable + BM25 + dense row against the fourth round's scalable + BM25 row in
each merged dir (the merge bootstraps only against the baselines and the best row), with the merge's own
resampling (`fair_study.paired_rows`). Run from the repository root; writes dense_vs_bm25_only.json."""
import json
import sys

from t2t_jax import io_utils
from t2t_jax.studies import fair_study

D = "docs/results/compare_cpcd_scalable_dense"
A = "Text2Tracks, scalable IDs + BM25 + dense prior, chosen on validation"
B = "Text2Tracks bert_t5_rq_fixed (semantic_rq_2048x2)"
out = {"command": "python3 " + " ".join(sys.argv), "pairs": {}}
for m in ["merged_fold0", "merged_fold1", "merged_fold2", "merged_fold3", "merged_fold4", "merged_folds0123",
          "merged_folds01234"]:
  with open(f"{D}/{m}/per_query.json", encoding="utf-8") as f:
    out["pairs"][m] = bt = fair_study.paired_rows(json.load(f), "as_written", A, B, num_samples=10000, seed=0)
  print(m, {k: (round(bt[k]["mean_diff"], 3), round(bt[k]["p_value"], 4)) for k in ("hits@10", "map@10")})
io_utils.write_json(f"{D}/dense_vs_bm25_only.json", out)
