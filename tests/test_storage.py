"""t2t_jax.storage, io_utils and checkpoints on gs:// against a real local GCS server and on s3://
against moto's S3 server (tests/conftest.py `bucket`: each test runs on both): single objects appear
whole, directories commit with their marker last, a dir without its marker is refused as incomplete,
and the writers of dataset dirs, ID tables and checkpoints round-trip."""

import json
import os

import numpy as np
import pytest

from t2t_jax import io_utils, storage
from t2t_jax.errors import UserInputError


def test_paths_are_local_unless_they_are_urls(tmp_path):
  assert storage.is_remote("gs://b/x") and storage.is_remote("s3://b/x")
  assert not storage.is_remote(str(tmp_path)) and not storage.is_remote("relative/dir")
  assert storage.join("gs://b/x/", "y", "z.json") == "gs://b/x/y/z.json"
  assert storage.join(str(tmp_path), "y") == os.path.join(str(tmp_path), "y")
  assert storage.dirname("gs://b/x/y.json") == "gs://b/x" and storage.basename("gs://b/x/y.json") == "y.json"
  (tmp_path / "d" / "e").mkdir(parents=True)
  (tmp_path / "d" / "e" / "f.txt").write_text("x")
  (tmp_path / "d" / "a.txt").write_text("y")
  assert list(storage.walk_files(str(tmp_path / "d"))) == ["a.txt", "e/f.txt"]


def test_atomic_write_uploads_one_object_only_on_success(bucket):
  url = f"{bucket}/run/metrics.json"
  io_utils.write_json(url, {"a": 1})
  assert json.loads(storage.read_text(url)) == {"a": 1}
  with pytest.raises(RuntimeError):
    with io_utils.atomic_write(url) as f:
      f.write('{"a": 2, "partial"')
      raise RuntimeError("killed midway")
  assert json.loads(storage.read_text(url)) == {"a": 1}  # the old object, whole
  with io_utils.atomic_write(f"{bucket}/run/blob.bin", "wb") as f:
    f.write(b"\x00\x01")
  assert storage.read_bytes(f"{bucket}/run/blob.bin") == b"\x00\x01"
  assert storage.getsize(f"{bucket}/run/blob.bin") == 2


def test_atomic_dir_commits_with_its_marker_last(bucket, monkeypatch):
  url = f"{bucket}/out/ids"
  order = []
  real = storage.upload_file
  monkeypatch.setattr(storage, "upload_file", lambda local, dst: (order.append(dst), real(local, dst)))
  with io_utils.atomic_dir(url, kind="ids") as tmp:
    os.makedirs(os.path.join(tmp, "sub"))
    for name in ("codes.npy", "sub/track_ids.txt"):
      with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
        f.write(name)
  assert order[-1] == f"{url}/{io_utils.MARKER_FILE}" and len(order) == 3
  assert io_utils.read_marker(url)["kind"] == "ids"
  assert storage.listdir(url) == [io_utils.MARKER_FILE, "codes.npy", "sub"]
  # The same kind replaces it (the old objects go); another kind is refused, before any work.
  with io_utils.atomic_dir(url, kind="ids") as tmp:
    with open(os.path.join(tmp, "codes.npy"), "w", encoding="utf-8") as f:
      f.write("v2")
  assert storage.listdir(url) == [io_utils.MARKER_FILE, "codes.npy"]
  assert storage.read_text(f"{url}/codes.npy") == "v2"
  with pytest.raises(UserInputError, match="holds a t2t_jax 'ids' output, not 'dataset'"):
    with io_utils.atomic_dir(url, kind="dataset"):
      pass
  # A failed writer uploads nothing; a prefix without a marker (an interrupted upload, someone
  # else's data) is not replaced.
  with pytest.raises(RuntimeError):
    with io_utils.atomic_dir(f"{bucket}/out/never", kind="ids") as tmp:
      raise RuntimeError("bad input found late")
  assert not storage.exists(f"{bucket}/out/never")
  storage.upload_dir  # pylint: disable=pointless-statement
  with io_utils.atomic_write(f"{bucket}/out/half/codes.npy") as f:
    f.write("x")
  with pytest.raises(UserInputError, match="not a complete t2t output"):
    io_utils.check_output_dir(f"{bucket}/out/half", kind="ids")
  with pytest.raises(UserInputError, match="overlaps the input"):
    io_utils.check_output_dir(f"{bucket}/out/ids/inner", kind="ids", inputs=[url])


def test_dataset_dir_and_id_table_round_trip_through_the_bucket(bucket, tmp_path):
  """What `t2t import` writes and tasks/training read: a dataset dir and an ID table in gs://."""
  from t2t_jax.data import formats, synthetic  # pylint: disable=import-outside-toplevel
  from t2t_jax.ids import table as table_lib  # pylint: disable=import-outside-toplevel
  config = synthetic.SyntheticConfig(num_artists=8, num_tracks=40, num_playlists=30, num_intents=4)
  synthetic.generate(config, str(tmp_path / "local"))
  local = formats.Dataset.load(str(tmp_path / "local"))
  url = f"{bucket}/data/syn"
  formats.write_dataset(url, local.tracks, list(local.playlists()), local.splits, local.meta)
  assert io_utils.read_marker(url)["kind"] == "dataset"
  remote = formats.Dataset.load(url)
  assert remote.name == "syn" and [t.track_id for t in remote.tracks] == [t.track_id for t in local.tracks]
  assert [p.playlist_id for p in remote.playlists("train", shuffle_seed=3)] == [
      p.playlist_id for p in local.playlists("train", shuffle_seed=3)]  # seeks by byte offset
  codes = np.arange(80, dtype=np.int32).reshape(40, 2) % 7
  table = table_lib.IdTable(strategy="semantic_rq", track_ids=[t.track_id for t in local.tracks],
                            codes=codes, level_sizes=(7, 7), meta={"note": "bucket"})
  table.save(f"{url}/ids/sem")
  back = table_lib.IdTable.load(f"{url}/ids/sem")
  assert back.track_ids == table.track_ids and back.meta == {"note": "bucket"}
  np.testing.assert_array_equal(back.codes, codes)
  with pytest.raises(UserInputError, match="missing"):
    table_lib.IdTable.load(f"{url}/ids/none")


# tensorstore's OCDBT writes and gcp-storage-emulator disagree now and then ("Malformed
# StorageGeneration", about 1 run in 5 on this VM, with sync or async saves; 2 in 20 on 2026-12-05):
# the tests that write checkpoints to the GCS emulator are in the slow tier until they run against a
# stricter GCS server.  moto's S3 server has not shown it (0 in 20 the same day).
@pytest.mark.parametrize("bucket", [pytest.param("gs", marks=pytest.mark.slow), "s3"], indirect=True)
def test_checkpoints_in_the_bucket_are_sealed_verified_and_restored(bucket):
  """orbax writes the step (tensorstore speaks gs:// and s3:// itself), t2t seals it with its
  manifest and a later load verifies every object against it: a changed object is named."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from t2t_jax.models import t5  # pylint: disable=import-outside-toplevel
  from t2t_jax.training import checkpoints  # pylint: disable=import-outside-toplevel
  model_dir = f"{bucket}/runs/micro"
  config = t5.T5Config.micro(num_encoder_layers=1, num_decoder_layers=1)
  checkpoints.save_model_config(model_dir, config)
  params = jax.tree.map(lambda a: jnp.full(a.shape, 0.5, a.dtype), checkpoints.abstract_params(config))
  manager = checkpoints.CheckpointManager(model_dir, async_save=False)
  manager.save(3, params, {"step": jnp.int32(3)}, {"batches_consumed": 3})
  manager.close()
  step_dir = f"{model_dir}/checkpoints/3"
  manifest = json.loads(storage.read_text(f"{step_dir}/{checkpoints.MANIFEST_FILE}"))
  assert manifest["files"] and all(not rel.startswith("/") for rel in manifest["files"])
  assert checkpoints.verify_step(step_dir)
  got_config, got = checkpoints.load_params(model_dir)
  assert got_config == config
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  victim = sorted(rel for rel in manifest["files"] if rel.startswith("params/"))[-1]
  with storage.open(f"{step_dir}/{victim}", "wb") as f:
    f.write(b"tampered")
  with pytest.raises(checkpoints.CheckpointIntegrityError, match=victim.replace(".", r"\.")):
    checkpoints.verify_step(step_dir)


def test_s3_checkpoints_take_their_endpoint_from_the_environment(monkeypatch):
  """tensorstore reads no endpoint variable: the one boto3 / s3fs use is put in its s3 spec."""
  from t2t_jax.training import checkpoints  # pylint: disable=import-outside-toplevel
  for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"):
    monkeypatch.delenv(name, raising=False)
  assert checkpoints.s3_kvstore_spec("s3://b/runs/x/") == {"driver": "s3", "bucket": "b", "path": "runs/x/"}
  monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio:9000")
  monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
  assert checkpoints.s3_kvstore_spec("s3://b/x") == {"driver": "s3", "bucket": "b", "path": "x",
                                                     "endpoint": "http://minio:9000", "aws_region": "eu-west-1"}
  monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3only:9000")  # botocore's precedence
  assert checkpoints.s3_kvstore_spec("s3://b/x")["endpoint"] == "http://s3only:9000"


def test_recommend_from_a_model_dir_in_the_bucket(bucket, tmp_path):
  """`t2t recommend --model_dir gs://...` (or s3://): the same ranked tracks as from the local copy (the
  checkpoint is read in place, the small assets are copied to a local temporary dir)."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  from t2t_jax.serving import retriever  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location("t2t_test_recommend",
                                                os.path.join(os.path.dirname(__file__), "test_recommend.py"))
  test_recommend = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(test_recommend)
  local = test_recommend.build_model_dir(str(tmp_path))
  url = f"{bucket}/models/micro"
  storage.upload_dir(local, url)
  prompts = ["chill evening jazz", "gym workout"]
  want = retriever.GenerativeRetriever.from_model_dir(local).recommend(prompts, k=5)
  got = retriever.GenerativeRetriever.from_model_dir(url).recommend(prompts, k=5)
  assert got == want and all(len(r) == 5 for r in got)
  with pytest.raises(UserInputError, match="no such directory"):
    retriever.GenerativeRetriever.from_model_dir(f"{bucket}/models/none")


def test_model_dir_lease_on_the_bucket(bucket, caplog):
  """The MODEL_DIR lock on an object store is a lease: a record whose heartbeat is recent refuses a
  second writer, an expired one is taken over with a warning, release empties it."""
  import time  # pylint: disable=import-outside-toplevel
  from t2t_jax.training import model_dir_lock  # pylint: disable=import-outside-toplevel
  model_dir = f"{bucket}/runs/leased"
  path = f"{model_dir}/{model_dir_lock.LOCK_FILE}"
  other = {"host": "host-b", "pid": 7, "started_utc": "2026-12-05 00:00:00 UTC", "what": "training",
           "job": "ab" * 16, "command": "python -m t2t_jax.train", "heartbeat": time.time()}
  model_dir_lock._write_remote_holder(path, other)  # pylint: disable=protected-access
  with pytest.raises(model_dir_lock.ModelDirBusyError, match="in use by pid 7 on host-b"):
    model_dir_lock.acquire(model_dir, lease_seconds=60)
  other["heartbeat"] = time.time() - 120
  model_dir_lock._write_remote_holder(path, other)  # pylint: disable=protected-access
  with caplog.at_level("WARNING"):
    lock = model_dir_lock.acquire(model_dir, lease_seconds=60)
  assert "taking over the expired lease" in caplog.text
  assert json.loads(storage.read_text(path))["job"] == lock.job
  assert model_dir_lock.acquire(model_dir, lease_seconds=60) is lock  # re-entrant
  lock.release()
  lock.release()
  assert storage.read_text(path) == ""


@pytest.mark.slow  # ~20 s per scheme; on gs:// also the emulator's flake above
def test_gin_train_entry_with_model_dir_in_the_bucket(bucket):
  """`python -m t2t_jax.train --gin.MODEL_DIR='gs://...'` (or s3://): config.gin, model_config.json,
  metrics.jsonl, checkpoints with manifests and the lease all land in the bucket (nothing on local
  disk), and a second run resumes from the bucket's last checkpoint."""
  from t2t_jax import train as train_script  # pylint: disable=import-outside-toplevel
  from t2t_jax.training import summaries  # pylint: disable=import-outside-toplevel
  model_dir = f"{bucket}/runs/entry"
  base = ["--gin_file=models/t5_1_1_micro.gin", "--gin_file=runs/finetune.gin",
          "--gin.MIXTURE_OR_TASK_NAME='copy'", "--gin.VOCAB_SIZE=128", "--gin.PACK=False",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 10, 'targets': 5}",
          "--gin.train_script.DataConfig.data_fn=@train_script.copy_task_batches",
          "--gin.BATCH_SIZE=8", "--gin.LOG_PERIOD=5", "--gin.EVAL_STEPS=2", "--gin.EVAL_PERIOD=5",
          "--gin.CHECKPOINT_PERIOD=5", "--gin.trainer.Trainer.tensorboard=False",
          "--gin.trainer.CheckpointConfig.async_save=False",
          f"--gin.MODEL_DIR='{model_dir}'"]
  assert train_script.main(base + ["--gin.TRAIN_STEPS=10"]) == 0
  assert not os.path.exists(model_dir.split("//")[0])  # no local folder named after the URL ("gs:")
  names = set(storage.walk_files(model_dir))
  assert {"config.gin", "model_config.json", "metrics.jsonl", "checkpoints/10/t2t_manifest.json",
          "checkpoints/5/t2t_manifest.json", ".t2t_lock"} <= names
  assert storage.read_text(f"{model_dir}/.t2t_lock") == ""  # released
  assert [(r["step"], r["split"]) for r in summaries.read_metrics(model_dir)] == [
      (5, "train"), (5, "eval"), (10, "train"), (10, "eval")]
  assert train_script.main(base + ["--gin.TRAIN_STEPS=15"]) == 0
  rows = summaries.read_metrics(model_dir, "train")
  assert [r["step"] for r in rows] == [5, 10, 15]  # resumed at 10, not retrained from 0
  from t2t_jax.training import checkpoints  # pylint: disable=import-outside-toplevel
  assert checkpoints.CheckpointManager(model_dir, read_only=True).all_steps()[-1] == 15
