"""SeqIO's offline Beam cache job (seqio.scripts.cache_tasks_main) on a tiny t2t task, and reading it back.

Needs apache-beam (+ google-crc32c for TFRecord checksums); skipped without them.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("apache_beam")
pytest.importorskip("google_crc32c")
seqio = pytest.importorskip("seqio")

from t2t_jax.data import formats, prompts, synthetic, vocab  # noqa: E402
from t2t_jax.errors import UserInputError  # noqa: E402
from t2t_jax.ids.table import IdTable  # noqa: E402
from tasks import pipeline, t2t_tasks  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK = "t2t.cachesyn.sem.title"


@pytest.mark.slow
def test_cache_job_roundtrip(tmp_path):
  root = tmp_path / "root"
  cfg = synthetic.SyntheticConfig(seed=2, num_artists=20, num_tracks=100, num_playlists=30, num_intents=6,
                                  min_playlist_len=3, max_playlist_len=5, min_pool_size=5,
                                  validation_fraction=0.1, test_fraction=0.1)
  synthetic.generate(cfg, root / "cachesyn")
  ds = formats.Dataset.load(root / "cachesyn")
  vocab.train_sentencepiece((prompts.make_prompt(p, "both") for p in ds.playlists()),
                            root / "cachesyn" / "vocab" / "spm.model", vocab_size=350)
  n = len(ds.tracks)
  codes = np.stack([np.arange(n) % 10, np.arange(n) // 10], 1)
  IdTable("sem", [t.track_id for t in ds.tracks], codes, (10, 10)).save(root / "cachesyn" / "ids" / "sem")
  cache = tmp_path / "cache"
  env = dict(os.environ, PYTHONPATH=REPO, T2T_DATA_DIR=str(root))
  subprocess.run([sys.executable, "-m", "seqio.scripts.cache_tasks_main", "--module_import=tasks.register_env",
                  r"--tasks=t2t\.cachesyn\.sem\.title$", f"--output_cache_dir={cache}", "--min_shards=1"],
                 cwd=REPO, env=env, check=True, capture_output=True)
  assert "COMPLETED" in os.listdir(cache / TASK)

  t2t_tasks.register_tasks(root, prompt_fields=("title",), shuffle_buffer_size=16)
  with pytest.raises(UserInputError, match="no SeqIO cache"):
    next(pipeline.get_numpy_batches(TASK, split="train", task_feature_lengths={"inputs": 16, "targets": 3},
                                    batch_size=2, use_cached=True))
  pipeline.add_cache_dir(str(cache))
  task = seqio.get_mixture_or_task(TASK)
  key = lambda ex: (tuple(ex["inputs"].tolist()), tuple(ex["targets"].tolist()), ex["playlist_id"])
  fresh = sorted(key(e) for e in task.get_dataset(None, split="train", shuffle=False).as_numpy_iterator())
  cached = sorted(key(e) for e in task.get_dataset(None, split="train", shuffle=False, use_cached=True)
                  .as_numpy_iterator())
  assert cached == fresh and len(fresh) == sum(len(p.track_ids) for p in ds.playlists("train"))
  batch = next(pipeline.get_numpy_batches(TASK, split="train", task_feature_lengths={"inputs": 16, "targets": 3},
                                          batch_size=2, use_cached=True, pack=True))
  assert batch["encoder_input_tokens"].shape == (2, 16)
  ev = pipeline.get_eval_examples(TASK, "validation", use_cached=True)
  ref = pipeline.get_eval_examples(TASK, "validation")
  assert [e["relevant_rows"].tolist() for e in ev] == [e["relevant_rows"].tolist() for e in ref]
