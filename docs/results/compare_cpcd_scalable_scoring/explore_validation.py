"""Validation-only design exploration (never test): re-decodes a study's trained seed-0 models on their
fold's inner validation queries with other decoding options.  Made the explore_*_validation.json files
here and in ../compare_cpcd_scalable_prior:

  PYTHONPATH=. python docs/results/compare_cpcd_scalable_scoring/explore_validation.py scoring 0,1 \
      WORK_OF_FOLD_0,WORK_OF_FOLD_1 OUT.json   # beam ranking x beam, second-round models
  PYTHONPATH=. python docs/results/compare_cpcd_scalable_scoring/explore_validation.py prior 2 WORK_OF_FOLD_2 OUT.json
      # BM25 prior weight: third-round 2,048^2 model and fair_small's one-token-per-track model

WORK_OF_FOLD_k: the work dir of that fold's runs (its data/ working copy is rebuilt from the imported
dataset, as the study does; the ID tables come from each model dir's assets).
"""
import dataclasses
import json
import os
import shutil
import sys
import time

from t2t_jax.baselines import bm25
from t2t_jax.ids.table import IdTable
from t2t_jax.studies import fair_study, pipeline
from tasks import pipeline as tasks_pipeline

MODELS = {"scoring": [("bert_t5_rq_fixed", "semantic_rq_2048x2", "semantic_rq_2048x2_seed0"),
                      ("bert_t5_rq_fixed", "semantic_rq_1024x2", "semantic_rq_1024x2_seed0")],
          "prior": [("bert_t5_rq_fixed", "semantic_rq_2048x2", "semantic_rq_2048x2_seed0"),
                    ("bert_t5_adapted", "integer_atomic", "integer_atomic")]}


def main(mode, folds, work_dirs, out_path, dataset_dir="data/cpcd"):
  out = []
  for fold, work in zip(folds, work_dirs):
    f = fair_study.open_fold("as_written", dataset_dir, fold, work, "title", pipeline.Stages(False))
    lexical = bm25.BM25Retriever().fit(f.catalog, f.train)  # the fold's training part only
    for fam, spec, name in MODELS[mode]:
      md = os.path.join(work, "models", f"as_written_fold{fold}", fam, spec, "seed0")
      dst = os.path.join(f.ws.ds_dir, "ids", name)
      if not os.path.exists(dst):
        shutil.copytree(os.path.join(md, "assets", "ids"), dst)
      task = pipeline.make_task(f.ws, IdTable.load(dst), name, prompt_field="title", input_vocab="minilm")
      val = dataclasses.replace(task, eval_examples=tasks_pipeline.get_eval_examples(task.name, "validation"))
      assert sorted(val.prompts) == sorted(f.val[0]), "validation prompts differ"
      one_step = spec == "integer_atomic"
      if mode == "scoring":
        grid = [(s, b, 0.0) for s in ("log_prob", "logit") for b in (20, 100, 200)]
      else:
        grid = [(s, b, w) for s in (["log_prob"] if one_step else ["log_prob", "logit"])
                for b in ([10] if one_step else [10, 20]) for w in (0.0, 1.0, 2.0, 4.0, 8.0)]
      prior = lexical.prior(val.prompts)
      for scoring, beam, w in grid:
        t = time.time()
        m = pipeline.evaluate_text2tracks(val, md, beam_size=beam, k=10, scoring=scoring,
                                          row_prior_NxR=w * prior if w else None)["metrics"]
        row = {"fold": fold, "spec": spec, "scoring": scoring, "beam": beam, "hits@10": round(m["hits@10"], 4),
               "map@10": round(m["map@10"], 4), "n": m["num_queries"], "s": round(time.time() - t, 1)}
        if mode == "prior":
          row["prior_weight"] = w
        print(json.dumps(row), flush=True)
        out.append(row)
  with open(out_path, "w", encoding="utf-8") as fh:
    json.dump(out, fh, indent=1)


if __name__ == "__main__":
  main(sys.argv[1], [int(x) for x in sys.argv[2].split(",")], sys.argv[3].split(","), sys.argv[4])
