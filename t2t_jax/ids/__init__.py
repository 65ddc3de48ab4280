"""t2t_jax.ids."""
