"""SeqIO's offline Beam cache job (seqio.scripts.cache_tasks_main) on tiny t2t tasks, and reading it back.

The job runs once per module as docs/scaling_out.md states it: Beam's DirectRunner with 2 worker
processes (`--pipeline_options=--runner=DirectRunner,--direct_num_workers=2,
--direct_running_mode=multi_processing`, the pass-through a Dataflow or Flink user gives
`--runner=DataflowRunner,...`), two tasks, two output shards per split.
Needs apache-beam (+ google-crc32c for TFRecord checksums): the `beam` extra; skipped without it.
"""

import glob
import os
import re
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("apache_beam")
pytest.importorskip("google_crc32c")
seqio = pytest.importorskip("seqio")
tf = pytest.importorskip("tensorflow")

from t2t_jax.data import formats, prompts, synthetic, vocab  # noqa: E402
from t2t_jax.errors import UserInputError  # noqa: E402
from t2t_jax.ids.table import IdTable  # noqa: E402
from tasks import pipeline, t2t_tasks  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK = "t2t.cachesyn.sem.title"
TASKS = (TASK, "t2t.cachesyn.sem.description")
WORKERS = 2
PIPELINE_OPTIONS = f"--runner=DirectRunner,--direct_num_workers={WORKERS},--direct_running_mode=multi_processing"


@pytest.fixture(scope="module")
def cache_job(tmp_path_factory):
  """A tiny data root, and the cache job's output for TASKS: (root, cache dir, dataset, job)."""
  tmp = tmp_path_factory.mktemp("beam_cache")
  root = tmp / "root"
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
  cache = tmp / "cache"
  env = dict(os.environ, PYTHONPATH=REPO, T2T_DATA_DIR=str(root))
  job = subprocess.run([sys.executable, "-m", "seqio.scripts.cache_tasks_main", "--module_import=tasks.register_env",
                        r"--tasks=t2t\.cachesyn\.sem\.(title|description)", f"--output_cache_dir={cache}",
                        "--min_shards=2", f"--pipeline_options={PIPELINE_OPTIONS}"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert job.returncode == 0, job.stderr[-4000:]
  t2t_tasks.register_tasks(root, prompt_fields=("title", "description"), shuffle_buffer_size=16)
  return root, cache, ds, job


def _values(v) -> tuple:
  """A feature's values, flat: ints as int, strings as bytes (what a tf.train.Example holds)."""
  return tuple(x if isinstance(x, bytes) else int(x) for x in np.asarray(v).ravel().tolist())


def _records(paths) -> list[dict]:
  """The tf.train.Examples in TFRecord files, read without seqio: {feature: values}."""
  out = []
  for rec in tf.data.TFRecordDataset(sorted(paths)).as_numpy_iterator():
    feats = tf.train.Example.FromString(rec).features.feature
    out.append({k: tuple(getattr(f, f.WhichOneof("kind")).value) for k, f in feats.items()})
  return out


def _key(ex: dict) -> tuple:
  return tuple(sorted(ex.items()))


def test_two_workers_cache_exactly_the_uncached_examples(cache_job):
  root, cache, ds, job = cache_job
  # Both worker processes ran (each SDK harness logs its start), with the options passed through.
  assert len(re.findall(r"^INFO:__main__:Python sdk harness starting\.$", job.stderr, re.M)) == WORKERS
  assert f"'direct_num_workers': {WORKERS}, 'direct_running_mode': 'multi_processing'" in job.stderr
  sizes = {"train": sum(len(p.track_ids) for p in ds.playlists("train")),
           "validation": len(list(ds.playlists("validation"))), "test": len(list(ds.playlists("test")))}
  for name in TASKS:
    task_dir = cache / name
    assert "COMPLETED" in os.listdir(task_dir)
    task = seqio.get_mixture_or_task(name)
    for split, size in sizes.items():
      shards = glob.glob(str(task_dir / f"{split}.tfrecord-*-of-*"))
      assert sorted(os.path.basename(s) for s in shards) == [f"{split}.tfrecord-0000{i}-of-00002" for i in range(2)]
      cached = sorted(_key(r) for r in _records(shards))
      # The task's examples before the cache placeholder, computed here without Beam.
      fresh_ds = task.preprocess_precache(task.source.get_dataset(split=split, shuffle=False))
      fresh = sorted(_key({k: _values(v) for k, v in ex.items()}) for ex in fresh_ds.as_numpy_iterator())
      assert len(fresh) == size and cached == fresh, (name, split)
      assert dict(fresh[0])["inputs"] and dict(fresh[0])["targets"]


def test_cache_job_roundtrip(cache_job):
  """Tasks read the cache through seqio (use_cached): the same examples, batches and eval examples."""
  root, cache, ds, _ = cache_job
  old_dirs = list(seqio.get_global_cache_dirs())
  try:
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
    # A cache of several shards holds the held-out playlists in its own order (see get_eval_examples).
    rows = lambda exs: sorted((e["playlist_id"], e["relevant_rows"].tolist(), e["inputs"].tolist()) for e in exs)
    ev = pipeline.get_eval_examples(TASK, "validation", use_cached=True)
    ref = pipeline.get_eval_examples(TASK, "validation")
    assert rows(ev) == rows(ref) and len(ref) == len(list(ds.playlists("validation")))
  finally:
    seqio.set_global_cache_dirs(old_dirs)
