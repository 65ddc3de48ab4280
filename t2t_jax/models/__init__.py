"""t2t_jax.models."""
