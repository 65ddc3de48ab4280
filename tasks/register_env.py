"""Importing this module registers every t2t task under $T2T_DATA_DIR (for seqio's --module_import).

SeqIO's offline cache job (Apache Beam) then preprocesses tasks once:
  T2T_DATA_DIR=/data/t2t python -m seqio.scripts.cache_tasks_main \\
    --module_import=tasks.register_env --tasks='t2t\\.mpd\\.semantic\\..*' \\
    --output_cache_dir=/data/seqio_cache --pipeline_options=--runner=DirectRunner
and training reads the cache with `pipeline.get_numpy_batches(..., use_cached=True)` after
`pipeline.add_cache_dir('/data/seqio_cache')` (or T2T_SEQIO_CACHE_DIR=/data/seqio_cache).
Optional: T2T_SPM_PATH (a user's SentencePiece model for every dataset), T2T_AUGMENT=1.
"""

import os

from tasks import t2t_tasks

REGISTERED = t2t_tasks.register_tasks(
    spm_path=os.environ.get("T2T_SPM_PATH") or None,
    augment=os.environ.get("T2T_AUGMENT", "0") not in ("", "0", "false", "False"))
