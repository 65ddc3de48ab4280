"""Design choice on VALIDATION (CPCD as_written, folds 0 and 1, 36 validation conversations each; not the
test split): does bert_t5 gain from an encoder first adapted in-domain by the bi-encoder's contrastive
fine-tuning (MNRL, 1 epoch, training prompts only), and from keeping its ID-token tables at their
retrieval initialisation (ID_EMB_LR_SCALE=0)?  Rows: the fine-tuned bi-encoder itself and the VARIANTS.
Run from the repo root:  CPCD_DATASET=data/cpcd python docs/results/cpcd_adapted_encoder_probe/exp.py FOLD [VARIANT ...]
"""
import json, os, sys, time
sys.path.insert(0, os.getcwd())
import numpy as np
from t2t_jax import evaluation
from t2t_jax.baselines import bi_encoder
from t2t_jax.baselines.catalog import CatalogTexts
from t2t_jax.data import prompts as prompts_lib
from t2t_jax.ids import specs
from t2t_jax.studies import pipeline
from tasks import t2t_tasks

fold = int(sys.argv[1])
# (label, encoder, learning rate, ID_EMB_LR_SCALE, steps); rows already in the fold's JSON are kept.
VARIANTS = {"adapted_3e-3": ("bert_t5 adapted encoder", "adapted", 3e-3, 1.0, 150),
            "adapted_1e-3": ("bert_t5 adapted encoder", "adapted", 1e-3, 1.0, 150),
            "stock_3e-3": ("bert_t5 stock encoder", None, 3e-3, 1.0, 150),
            "adapted_init": ("bert_t5 adapted encoder at its initialisation (1 step, lr 1e-9)", "adapted",
                             1e-9, 1.0, 1),
            "adapted_3e-3_fixed_ids": ("bert_t5 adapted encoder, ID tables fixed", "adapted", 3e-3, 0.0, 150),
            "stock_3e-3_fixed_ids": ("bert_t5 stock encoder, ID tables fixed", None, 3e-3, 0.0, 150),
            "adapted_3e-3_fixed_ids_300": ("bert_t5 adapted encoder, ID tables fixed, 300 steps", "adapted",
                                           3e-3, 0.0, 300),
            "adapted_3e-3_ids_0.1": ("bert_t5 adapted encoder, ID tables at 0.1x the rate", "adapted", 3e-3, 0.1,
                                     150),
            "adapted_3e-3_fixed_prompt_ids": ("bert_t5 adapted encoder, ID tables fixed at metadata + "
                                              "training prompts", "adapted", 3e-3, 0.0, 150,
                                              ["ID_EMBEDDING_INIT='retrieval_with_prompts'"])}
wanted = sys.argv[2:] or list(VARIANTS)
work = f"t2t_runs/cpcd_adapted_probe/fold{fold}"
out_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"fold{fold}.json")
ws = pipeline.open_dataset(os.environ.get("CPCD_DATASET", "data/cpcd"), work, fold=fold)
spec = specs.IdSpec("integer_atomic", "integer", {"order": "random", "base": None})
table, _ = pipeline.build_table(ws, spec, seed=0)
task = pipeline.make_task(ws, table, "integer_atomic", prompt_field="both", eval_split="validation",
                          input_vocab="minilm")
artist_of_row = [t.artist for t in ws.ds.tracks]
rows = json.load(open(out_path))["rows"] if os.path.exists(out_path) else []
done = {r.get("variant", "bi_encoder_ft" if r["method"] == "bi_encoder_ft" else None) for r in rows}
if rows and rows[0].get("variant") is None:  # the first run's rows: name them
  for r, v in zip(rows, ["bi_encoder_ft", "adapted_3e-3", "adapted_1e-3", "stock_3e-3"]):
    r["variant"] = v
  done = {r["variant"] for r in rows}

def record(name, ranked, seconds, **extra):
  m = evaluation.evaluate_rankings(np.asarray(ranked), task.relevant, ks=(10,), artist_of_row=artist_of_row)
  rows.append({"method": name, "hits@10": m["hits@10"], "map@10": m["map@10"],
               "artist_hits@10": m["artist_hits@10"], "seconds": round(seconds, 1),
               "num_queries": len(task.prompts), **extra})
  print(json.dumps(rows[-1]), flush=True)
  with open(out_path, "w") as f:
    json.dump({"fold": fold, "split": "validation", "rows": rows}, f, indent=1)

adapted = os.path.join(work, "adapted_encoder")
if "bi_encoder_ft" not in done or not os.path.isdir(adapted):
  catalog = CatalogTexts.from_tracks(ws.ds.tracks, pipeline.track_text)
  max_chars = t2t_tasks.dataset_prompt_max_chars(ws.ds_dir)
  train_prompts = [(prompts_lib.make_prompt(p, "both", max_chars=max_chars), r)
                   for p, r in zip(ws.train_playlists, ws.rows_train)]
  t = time.time()
  bi = bi_encoder.BiEncoderRetriever(track_text="metadata", finetune=True, epochs=1, threads=1,
                                     max_seq_length=128, seed=0).fit(catalog, train_prompts)
  bi.save(adapted)
  if "bi_encoder_ft" not in done:
    record("bi_encoder_ft", bi.recommend(task.prompts, 10), time.time() - t, variant="bi_encoder_ft")

b = ["TARGETS_PER_PROMPT=8", "INDEXING='artists'", "INDEXING_SHARE=0.3", "ID_EMBEDDING_INIT='retrieval'"]
for v in wanted:
  if v in done:
    continue
  name, enc, lr, id_scale, steps, *more = VARIANTS[v]
  t = time.time()
  md = os.path.join(work, f"model_{v}")
  extra = ([f"INITIAL_CHECKPOINT_PATH={adapted!r}"] if enc else []) + [f"ID_EMB_LR_SCALE={id_scale}"] + (more[0] if more else [])
  out = pipeline.train_text2tracks(task, model_dir=md, model_gin="models/bert_t5_minilm.gin", train_steps=steps,
                                   batch_size=64, learning_rate=lr, seed=0, extra_bindings=b + extra,
                                   tensorboard=False)
  ev = pipeline.evaluate_text2tracks(task, md, beam_size=20, k=10)
  record(name, ev["rows_NxK"], time.time() - t, variant=v, lr=lr, id_emb_lr_scale=id_scale, steps=steps,
         final_loss=out.final_loss)
