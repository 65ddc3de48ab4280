"""Studies: the Text2Tracks pipeline as reusable steps, a layer above the core.

`t2t quickstart` (t2t_jax/quickstart.py), tools/compare_ids.py and tools/scaling_study.py build on
these; every model they train goes through the gin train entry (`t2t_jax.train.run`), so each
figure they report is reproducible with `python -m t2t_jax.train --gin_file=MODEL_DIR/config.gin`.

  pipeline   synthetic workspace, CF embeddings, ID tables, SeqIO task, training, evaluation
  baselines  BM25, dense dual encoder and most-popular on the same held-out prompts
This package may import the TensorFlow-based `tasks` package, lazily.
"""
