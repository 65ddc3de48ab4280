"""TFDS builders for t2t datasets: `tfds build tasks/tfds_builders/t2t_synthetic` / `.../t2t_mpd`.

Both produce one example per playlist with the same features (see `common.py`), split into
train/validation/test by playlist.  The repository must be importable (`pip install -e .`, or
PYTHONPATH=<repo root>) because the builders reuse t2t_jax.data.
"""
