"""Issue 13's third target on the synthetic benchmark: the pretrained-encoder family (`t2t quickstart
--model bert_t5_minilm`, its defaults as chosen on CPCD validation) against the same pipeline's
from-scratch model (`--model tiny`, semantic IDs), both with the quickstart's default steps and batch,
on the same synthetic catalogs, one per seed (catalog, splits, IDs and training seeded together).
Nothing here was tuned on these test playlists.  Run from the repo root (about 35 min on 2 cores):
    python docs/results/synthetic_bert_t5_vs_scratch/run.py [SEED ...]
Writes summary.json beside this file after every run (per-seed rows, means, paired differences)."""
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = ("tiny", "bert_t5_minilm")
KEYS = ("hits@10", "map@10", "ndcg@10", "mrr")
seeds = [int(s) for s in sys.argv[1:]] or [0, 1, 2]
summary_path = os.path.join(HERE, "summary.json")
runs = json.load(open(summary_path))["runs"] if os.path.exists(summary_path) else []


def save():
  """Means and spreads over the seeds every model has, and each model minus tiny per seed (rows of
  semantic.py, model bert_t5_minilm_semantic_ids, included)."""
  models = sorted({r["model"] for r in runs}, key=lambda m: (m != "tiny", m))
  by = {m: {r["seed"]: r for r in runs if r["model"] == m} for m in models}
  common = sorted(set.intersection(*(set(v) for v in by.values()))) if by else []
  agg = {m: {k: {"mean": float(np.mean([by[m][s][k] for s in common])) if common else None,
                 "std": float(np.std([by[m][s][k] for s in common], ddof=1)) if len(common) > 1 else None}
             for k in KEYS} for m in models}
  diff = {m: {k: [by[m][s][k] - by["tiny"][s][k] for s in common] for k in KEYS}
          for m in models if m != "tiny" and "tiny" in by}
  out = {"command": "python docs/results/synthetic_bert_t5_vs_scratch/run.py", "seeds": common, "runs": runs,
         "mean_std_over_seeds": agg, "minus_tiny_per_seed": diff,
         "num_queries_per_seed": sorted({r["num_queries"] for r in runs})}
  tmp = summary_path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(out, f, indent=1)
  os.replace(tmp, summary_path)


for seed in seeds:
  for model in MODELS:
    if any(r["seed"] == seed and r["model"] == model for r in runs):
      continue
    work = os.path.join("t2t_runs", "synthetic_bert_t5_vs_scratch", f"{model}_seed{seed}")
    t = time.time()
    subprocess.run([sys.executable, "-m", "t2t_jax.cli", "quickstart", "--model", model, "--seed", str(seed),
                    "--out", work + "_report", "--work_dir", work, "--no_progress", "--overwrite"], check=True)
    rows = json.load(open(os.path.join(work + "_report", "report.json")))
    t2t = rows[0]
    runs.append({"seed": seed, "model": model, "method": t2t["method"], "seconds": round(time.time() - t, 1),
                 "num_queries": t2t["num_queries"], **{k: t2t[k] for k in KEYS},
                 "bm25_hits@10": rows[1]["hits@10"]})
    print(json.dumps(runs[-1]), flush=True)
    save()
save()
