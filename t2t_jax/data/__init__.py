"""t2t_jax.data."""
