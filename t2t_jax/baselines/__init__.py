"""Retrieval baselines scored by the same metric code as Text2Tracks (t2t_jax.metrics)."""
