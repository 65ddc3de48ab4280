"""t2t_jax.decoding."""
