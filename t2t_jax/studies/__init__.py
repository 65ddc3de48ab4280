"""Studies: the Text2Tracks pipeline as reusable steps, a layer above the core.

`t2t quickstart` (t2t_jax/quickstart.py) and the studies' tools/ scripts (compare_ids, scaling_study,
cpcd_turns, cpcd_baselines, decoding_variants: argument parsing and a call) build on these; every
model they train goes through the gin train entry (`t2t_jax.train.run`), so each figure they report
is reproducible with `python -m t2t_jax.train --gin_file=MODEL_DIR/config.gin`.

  pipeline           synthetic or imported workspace, CF embeddings, ID tables, SeqIO task, training, evaluation
  baselines          BM25, dual encoder, most-popular and the pretrained bi-encoder on the same held-out prompts
  compare_ids        the paper's comparison (gin `compare_ids.*`): ID strategies vs. baselines, synthetic or folds
  folds_study        compare_ids on imported datasets (e.g. CPCD): variants x folds x families x ID strategies
  fair_study         compare_ids' nested protocol: every choice on inner validation, each test fold once
  tuning             the fine-tuned bi-encoder and the hybrid, tuned on inner validation
  cpcd_turns         CPCD's own turn-level evaluation protocol (tracks compared by cluster)
  turns_study        that protocol run: methods fitted on a CPCD dataset dir, scored turn by turn
  decoding_variants  the paper's decoding variants as result rows (unconstrained, grouped-beam sweep)
  decoding_variants_run  that study on a trained model dir and a dataset split (tools/decoding_variants.py)
  cpcd_baselines     the retrieval baselines on CPCD's development files, canonical split or k folds
  scaling            the catalog scaling study (gin `scaling_study.*`): the pipeline at several catalog sizes
This package may import the TensorFlow-based `tasks` package, lazily.
"""
