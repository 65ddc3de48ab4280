"""t2t_jax.baselines."""
