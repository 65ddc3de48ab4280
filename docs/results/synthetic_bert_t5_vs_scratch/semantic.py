"""The pretrained-encoder family with the from-scratch model's IDs on the synthetic benchmark: the
quickstart's catalog, splits and semantic IDs for each seed (`quickstart._data` / `quickstart._ids`,
identical to `t2t quickstart --model tiny --seed S`), the bert_t5_minilm model file with the quickstart's
pretrained recipe (PRETRAINED_BINDINGS), the quickstart's default 800 steps x 128 and learning rate.
So the only differences from the tiny rows of run.py are the encoder and its WordPiece prompts.
Nothing tuned on these test playlists.  Run from the repo root:
    python docs/results/synthetic_bert_t5_vs_scratch/semantic.py [SEED ...]
Appends its rows (model "bert_t5_minilm_semantic_ids") to summary.json's runs (run.py's summary)."""
import json
import os
import sys
import time

sys.path.insert(0, os.getcwd())
from t2t_jax import quickstart  # noqa: E402
from t2t_jax.studies import pipeline  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
KEYS = ("hits@10", "map@10", "ndcg@10", "mrr")
MODEL = "bert_t5_minilm_semantic_ids"
path = os.path.join(HERE, "summary.json")
for seed in [int(s) for s in sys.argv[1:]] or [0, 1, 2]:
  summary = json.load(open(path))
  if any(r["seed"] == seed and r["model"] == MODEL for r in summary["runs"]):
    continue
  cfg = quickstart.QuickstartConfig(seed=seed, work_dir=f"t2t_runs/synthetic_bert_t5_vs_scratch/{MODEL}_seed{seed}",
                                    progress=False)
  t = time.time()
  stage = pipeline.Stages()
  ws, _ = quickstart._data(cfg, stage)  # pylint: disable=protected-access
  table, _ = quickstart._ids(cfg, ws, stage)  # pylint: disable=protected-access
  task = pipeline.make_task(ws, table, quickstart.STRATEGY, prompt_field=cfg.prompt_field,
                            eval_playlists=cfg.eval_playlists, input_vocab="minilm")
  model_dir = os.path.join(cfg.work_dir, "model")
  pipeline.train_text2tracks(task, model_dir=model_dir, model_gin="models/bert_t5_minilm.gin",
                             train_steps=quickstart.TRAIN_STEPS, batch_size=quickstart.BATCH_SIZE,
                             learning_rate=cfg.learning_rate, seed=seed,
                             extra_bindings=quickstart.PRETRAINED_BINDINGS, tensorboard=False)
  m = pipeline.evaluate_text2tracks(task, model_dir, beam_size=cfg.beam_size, k=cfg.k)["metrics"]
  summary = json.load(open(path))
  summary["runs"].append({"seed": seed, "model": MODEL, "method": "Text2Tracks (semantic IDs, pretrained MiniLM "
                          "encoder)", "seconds": round(time.time() - t, 1), "num_queries": len(task.prompts),
                          **{k: m[k] for k in KEYS}})
  print(json.dumps(summary["runs"][-1]), flush=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(summary, f, indent=1)
  os.replace(tmp, path)
