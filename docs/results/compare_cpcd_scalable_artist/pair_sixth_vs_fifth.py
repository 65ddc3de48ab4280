"""Paired bootstrap of this round's row against the fifth round's scalable row and against one token per
track + priors in each merged dir (the merge bootstraps only against the baselines and the best row),
with the merge's own resampling (`fair_study.paired_rows`). Run from the repository root; writes
sixth_vs_fifth.json."""
import json
import os
import sys

from t2t_jax import io_utils
from t2t_jax.studies import fair_study

D = "docs/results/compare_cpcd_scalable_artist"
A = "Text2Tracks, artist-prefixed or CF + text scalable IDs + priors, chosen on validation"
OTHERS = {"fifth_round": "Text2Tracks, scalable IDs + BM25 + dense prior, chosen on validation",
          "one_token_priors": "Text2Tracks + BM25 + dense prior (one token per track, chosen on validation)"}
out = {"command": "python3 " + " ".join(sys.argv), "text2tracks": A, "against": OTHERS, "pairs": {}}
for m in sorted(d for d in os.listdir(D) if d.startswith("merged_")):
  with open(f"{D}/{m}/per_query.json", encoding="utf-8") as f:
    per_query = json.load(f)
  out["pairs"][m] = {}
  for name, other in OTHERS.items():
    out["pairs"][m][name] = bt = fair_study.paired_rows(per_query, "as_written", A, other, num_samples=10000,
                                                        seed=0)
    print(m, name, {k: (round(bt[k]["mean_diff"], 3), (round(bt[k]["low"], 3), round(bt[k]["high"], 3)),
                        round(bt[k]["p_value"], 4)) for k in ("hits@10", "map@10")})
io_utils.write_json(f"{D}/sixth_vs_fifth.json", out)
