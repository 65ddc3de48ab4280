"""Design choice on VALIDATION (fold 0 of CPCD as_written): bert_t5 frozen encoder (the study's recipe)
vs. fine-tuned encoder. Not the test split."""
import json, os, sys, time
sys.path.insert(0, os.getcwd())  # run from the repo root
from t2t_jax.ids import specs
from t2t_jax.studies import pipeline
variant = sys.argv[1]  # frozen | unfrozen
lr = float(sys.argv[2])
work = f"t2t_runs/cpcd_encoder_probe/{variant}_{lr}_{sys.argv[3] if len(sys.argv) > 3 else 1}"
ws = pipeline.open_dataset(os.environ.get("CPCD_DATASET", "data/cpcd"), work, fold=0)
spec = specs.IdSpec("integer_atomic", "integer", {"order": "random", "base": None})
table, _ = pipeline.build_table(ws, spec, seed=0)
task = pipeline.make_task(ws, table, "integer_atomic", prompt_field="both", eval_split="validation",
                          input_vocab="minilm")
print("val queries", len(task.prompts), task.feature_lengths, flush=True)
b = ["TARGETS_PER_PROMPT=8", "INDEXING='artists'", "INDEXING_SHARE=0.3", "ID_EMBEDDING_INIT='retrieval'"]
if variant.startswith("unfrozen"):
  b.append("FREEZE_ENCODER=False")
  if len(sys.argv) > 3:
    b.append(f"ENCODER_LR_SCALE={float(sys.argv[3])}")
t = time.time()
out = pipeline.train_text2tracks(task, model_dir=os.path.join(work, "model"), model_gin="models/bert_t5_minilm.gin",
                                 train_steps=150, batch_size=64, learning_rate=lr, seed=0, extra_bindings=b,
                                 tensorboard=False)
ev = pipeline.evaluate_text2tracks(task, os.path.join(work, "model"), beam_size=20, k=10)
res = {"variant": variant, "lr": lr, "train_s": time.time() - t, **{k: ev["metrics"][k] for k in ("hits@10", "map@10")},
       "num_queries": len(task.prompts), "final_loss": out.final_loss}
print(json.dumps(res), flush=True)
json.dump(res, open(work + ".json", "w"))
