"""t2t_jax.training: the training stack under the gin train entry (`python -m t2t_jax.train`).

TensorFlow-free: the loop consumes numpy batches from any iterator (t2t_jax/data/batches.py, tasks/).

  trainer         the training loop around the compiled train step and its hooks (train, TrainConfig)
  train_state     the train state and the jitted train step, compiled ahead of time for a mesh
  partitioning    device mesh and logical-axis partitioning (T5X rules)
  optimizers      Adafactor / AdamW and T5X's learning-rate schedules
  losses          T5X-style cross-entropy with z-loss, label smoothing and its normaliser
  hooks           training-loop hooks: summaries, throughput, progress, preemption, evaluation, checkpoints, curves
  summaries       TensorBoard event files and metrics.jsonl
  checkpoints     orbax checkpoints in MODEL_DIR: async save, keep-N + best, verified restore
  model_dir_lock  one writer per MODEL_DIR (an exclusive, heartbeated lock)
"""
