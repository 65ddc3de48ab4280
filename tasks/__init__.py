"""SeqIO tasks, vocabularies and TFDS builders for t2t_jax (TensorFlow lives here)."""
