"""t2t_jax: Text2Tracks (prompt -> track IDs by generative retrieval) in JAX.

The core package imports without TensorFlow; SeqIO/TFDS code lives in the top-level `tasks` package.
"""

__version__ = "0.1.0"
