"""TFDS builder of the synthetic t2t dataset (t2t_jax.data.synthetic)."""
