"""t2t_jax.storage, io_utils and checkpoints on gs:// against a real local GCS server and on s3://
against moto's S3 server (tests/conftest.py `bucket`: each test runs on both): single objects appear
whole, directories commit with their marker last, a dir without its marker is refused as incomplete,
and the writers of dataset dirs, ID tables and checkpoints round-trip."""

import json
import os
import signal
import subprocess
import sys
import tempfile

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


def test_reports_and_results_are_written_into_the_bucket(bucket):
  """Study reports (report.md/json, results.json/csv/md, figures) with --out gs://... or s3://."""
  from t2t_jax import report  # pylint: disable=import-outside-toplevel
  out = f"{bucket}/reports/r1"
  rows = [{"method": "bm25", "hits@10": 0.5}, {"method": "t2t", "hits@10": 0.75}]
  report.write_report(out, title="t", rows=rows, examples=[], seconds=1.0)
  report.write_results(out, rows, columns=["method", "hits@10"], title="t", machine={}, config={})
  assert json.loads(storage.read_text(f"{out}/results.json")) == rows
  assert json.loads(storage.read_text(f"{out}/report.json"))[1]["hits@10"] == 0.75
  assert storage.read_text(f"{out}/results.csv").splitlines() == ["method,hits@10", "bm25,0.5", "t2t,0.75"]
  assert sorted(storage.listdir(out)) == ["examples.json", "report.json", "report.md", "results.csv",
                                          "results.json", "results.md"]


def test_t2t_import_writes_its_dataset_dir_into_the_bucket(bucket, capsys):
  """`t2t import jsonl ... --out gs://...`: the dataset dir (with its SentencePiece vocabulary) is
  committed in the bucket and loads from there; a second import over it is refused by kind."""
  from t2t_jax import cli  # pylint: disable=import-outside-toplevel
  from t2t_jax.data import formats  # pylint: disable=import-outside-toplevel
  data = os.path.join(os.path.dirname(__file__), "data")
  out = f"{bucket}/data/ds"
  assert cli.main(["import", "jsonl", os.path.join(data, "good", "catalog.jsonl"),
                   os.path.join(data, "bad", "playlists_duplicate_track.jsonl"), "--out", out,
                   "--vocab_size", "300", "--test_size", "1", "--validation_size", "1"]) == 0
  assert capsys.readouterr().out.startswith(f"Imported 4 tracks and 4 playlists into {out} ")
  assert set(storage.walk_files(out)) >= {io_utils.MARKER_FILE, "catalog.jsonl", "playlists.jsonl",
                                         "splits.json", "meta.json", "vocab/spm.model"}
  ds = formats.Dataset.load(out)
  assert len(ds.tracks) == 4 and sum(1 for _ in ds.playlists()) == 4
  with io_utils.atomic_write(f"{bucket}/data/other/notes.txt") as f:
    f.write("someone else's data")
  assert cli.main(["import", "jsonl", os.path.join(data, "good", "catalog.jsonl"),
                   os.path.join(data, "bad", "playlists_duplicate_track.jsonl"),
                   "--out", f"{bucket}/data/other"]) == 2
  assert "not a complete t2t output" in capsys.readouterr().err
  assert storage.listdir(f"{bucket}/data/other") == ["notes.txt"]


def test_the_local_server_sends_the_generation_tensorstore_conditions_on(gcs_bucket):
  """A read's generation is the one the next conditional write names (OCDBT's manifest update).
  The emulator alone answers reads without x-goog-generation: tensorstore then reads generation 0
  and refuses the write ("Malformed StorageGeneration"); t2t_jax/local_gcs.py adds the header."""
  ts = pytest.importorskip("tensorstore")
  bucket, prefix = gcs_bucket[len("gs://"):].split("/", 1)
  kv = ts.KvStore.open({"driver": "gcs", "bucket": bucket, "path": prefix + "/"}).result()
  written = kv.write("manifest.ocdbt", b"v1").result().generation
  read = kv.read("manifest.ocdbt").result()
  assert read.value == b"v1" and read.stamp.generation == written
  kv.write("manifest.ocdbt", b"v2", if_equal=read.stamp.generation).result()
  assert kv.read("manifest.ocdbt").result().value == b"v2"


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


def _test_module(name: str):
  """tests/NAME.py as a module (tests/ is not a package)."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location(f"t2t_{name}", os.path.join(os.path.dirname(__file__), f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


PROMPTS = ["chill evening jazz", "gym workout", "old classics for slow dancing"]


@pytest.fixture(scope="module")
def local_model(tmp_path_factory):
  """(a local model dir, its retriever's top-5 rows and scores for PROMPTS)."""
  from t2t_jax.serving import retriever  # pylint: disable=import-outside-toplevel
  local = _test_module("test_recommend").build_model_dir(str(tmp_path_factory.mktemp("bucket_model")))
  return local, retriever.GenerativeRetriever.from_model_dir(local).recommend_rows(PROMPTS, k=5)


@pytest.fixture(scope="module", params=["gs", "s3"])
def bucket_model(request, local_model):  # pylint: disable=redefined-outer-name
  """(local model dir, the same uploaded to gs:// or s3://, the local retriever's top-5 rows)."""
  server = request.getfixturevalue({"gs": "_gcs_server", "s3": "_s3_server"}[request.param])
  local, want = local_model
  url = f"{server}/bucket_model/models/micro"
  storage.upload_dir(local, url)
  return local, url, want


def test_recommend_from_a_model_dir_in_the_bucket(bucket_model):
  """`t2t recommend --model_dir gs://...` (or s3://): the same ranked tracks as from the local copy (the
  checkpoint is read in place, the small assets are copied to a local temporary dir)."""
  from t2t_jax.serving import retriever  # pylint: disable=import-outside-toplevel
  local, url, (want_rows, want_scores) = bucket_model
  rec = retriever.GenerativeRetriever.from_model_dir(url)
  rows, scores = rec.recommend_rows(PROMPTS, k=5)
  np.testing.assert_array_equal(rows, want_rows)
  np.testing.assert_allclose(scores, want_scores, rtol=1e-6)
  assert rec.recommend(PROMPTS, k=5) == retriever.GenerativeRetriever.from_model_dir(local).recommend(PROMPTS, k=5)
  with pytest.raises(UserInputError, match="no such directory"):
    retriever.GenerativeRetriever.from_model_dir(f"{storage.dirname(url)}/none")


def test_export_from_the_bucket_into_the_bucket(bucket_model, tmp_path):
  """`t2t export --model_dir gs://... --out gs://...` (or s3://): the export is committed with its marker last,
  and its runtime (after a copy to local disk: it reads local files only) answers like the model."""
  from t2t_jax import cli, export_runtime  # pylint: disable=import-outside-toplevel
  _, url, (want_rows, want_scores) = bucket_model
  out = f"{storage.dirname(url)}/exports/micro"
  assert cli.main(["export", "--model_dir", url, "--out", out, "-k", "5", "--no_hf"]) == 0
  assert io_utils.read_marker(out)["kind"] == "export"
  manifest = json.loads(storage.read_text(f"{out}/{export_runtime.MANIFEST_FILE}"))
  assert manifest["source_model_dir"] == url and export_runtime.SPM_FILE in manifest["sha256"]
  rows, scores = export_runtime.load(storage.download_dir(out, str(tmp_path / "export"))).recommend_rows(PROMPTS)
  np.testing.assert_array_equal(rows, want_rows)
  np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)


def test_serve_a_model_dir_in_the_bucket(bucket_model):
  """`t2t serve --model_dir gs://...` (the same retriever and Server the CLI builds): /health names
  the bucket, /recommend answers like the local model."""
  import urllib.request  # pylint: disable=import-outside-toplevel
  from t2t_jax.serving import retriever, serve  # pylint: disable=import-outside-toplevel
  _, url, (want_rows, _) = bucket_model
  rec = retriever.GenerativeRetriever.from_model_dir(url)
  config = serve.ServeConfig(host="127.0.0.1", port=0, default_k=5, max_k=5, max_batch=4, max_prompts=4,
                             warmup=False)
  with serve.BackgroundServer(rec, config, model_dir=storage.abspath(url)) as s:
    with urllib.request.urlopen(s.url + "/health", timeout=60) as resp:
      assert json.loads(resp.read())["model_dir"] == url
    req = urllib.request.Request(s.url + "/recommend", data=json.dumps({"prompts": PROMPTS}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
      body = json.loads(resp.read())
  got = [[t["track_id"] for t in r["tracks"]] for r in body["results"]]
  assert got == [[rec.id_table.track_ids[int(i)] for i in row] for row in want_rows]


def test_tensorboard_events_in_the_bucket_are_readable(bucket, tmp_path, monkeypatch):
  """MetricsWriter on a bucket MODEL_DIR: the event files are uploaded whole at each logged step (a
  reader sees every step logged so far, before the writer closes), next to metrics.jsonl."""
  tf = pytest.importorskip("tensorflow")
  from t2t_jax.training import summaries  # pylint: disable=import-outside-toplevel
  model_dir = f"{bucket}/runs/tb"
  (tmp_path / "tmp").mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where the local event copies go

  def scalars(split):
    local = storage.download_dir(f"{model_dir}/{split}", str(tmp_path / f"{split}{len(os.listdir(tmp_path))}"))
    out = {}
    for name in sorted(os.listdir(local)):
      for event in tf.compat.v1.train.summary_iterator(os.path.join(local, name)):
        for value in event.summary.value:
          out.setdefault(value.tag, []).append((event.step, round(value.simple_value, 4)))
    return out

  writer = summaries.MetricsWriter(model_dir)
  writer.write_scalars(1, {"loss": 2.5, "learning_rate": 0.01})
  writer.write_scalars(2, {"loss": 2.0, "learning_rate": 0.01})
  assert scalars("train")["loss"] == [(1, 2.5), (2, 2.0)]  # visible while the run goes on
  writer.write_scalars(2, {"hits@10": 0.25}, split="eval")
  writer.close()
  assert scalars("train") == {"loss": [(1, 2.5), (2, 2.0)], "learning_rate": [(1, 0.01), (2, 0.01)]}
  assert scalars("eval") == {"hits@10": [(2, 0.25)]}
  assert [r["step"] for r in summaries.read_metrics(model_dir)] == [1, 2, 2]
  assert not os.listdir(tmp_path / "tmp")  # the local copies are removed at close


def test_seqio_tasks_read_a_data_root_in_the_bucket(bucket, tiny_data_root):
  """T2T_DATA_DIR / register_tasks(gs://...): the same tasks and the same examples as from local
  disk; the dataset and ID tables stream from the bucket, the SentencePiece model is copied once."""
  pytest.importorskip("tensorflow")
  seqio = pytest.importorskip("seqio")
  from tasks import t2t_tasks  # pylint: disable=import-outside-toplevel
  root, _ = tiny_data_root
  url = f"{bucket}/data_root"
  storage.upload_dir(str(root), url)

  def examples(data_root):
    names = t2t_tasks.register_tasks(data_root, prompt_fields=("title",), shuffle_buffer_size=16)
    task = seqio.get_mixture_or_task("t2t.tiny_syn.sem.title")
    got = {split: [{k: np.asarray(v).tolist() for k, v in ex.items()}
                   for ex in task.get_dataset(None, split=split, shuffle=False).as_numpy_iterator()]
           for split in ("train", "validation")}
    return names, got, t2t_tasks.task_source("t2t.tiny_syn.sem.title")

  try:
    want_names, want, _ = examples(str(root))
    names, got, source = examples(url)
  finally:
    t2t_tasks.register_tasks(str(root), shuffle_buffer_size=32)  # as the tasks' own tests left them
  assert names == want_names and got == want and len(got["train"]) > 20
  assert source.dataset_dir == f"{url}/tiny-syn" and source.ids_dir == f"{url}/tiny-syn/ids/sem"
  assert not storage.is_remote(source.spm_path)
  # The train entry then writes MODEL_DIR/assets from the task: into a bucket MODEL_DIR too.
  from tasks import assets as task_assets  # pylint: disable=import-outside-toplevel
  from t2t_jax.serving import assets as assets_lib  # pylint: disable=import-outside-toplevel
  model_dir = f"{bucket}/runs/with_assets"
  assert task_assets.write_model_assets(model_dir, "t2t.tiny_syn.sem.title", {"inputs": 24, "targets": 4})
  assert assets_lib.read_settings(model_dir)["inputs_length"] == 24
  assert storage.read_bytes(f"{model_dir}/assets/catalog.jsonl") == storage.read_bytes(
      f"{url}/tiny-syn/catalog.jsonl")
  with pytest.raises(UserInputError, match="not a directory"):
    t2t_tasks.register_tasks(f"{bucket}/no_root")


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
  # A holder on this machine whose process is gone (kill -9) is known dead: no wait for the lease.
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                        text=True, check=True)
  mine = dict(model_dir_lock._new_holder("training"), pid=int(dead.stdout), pid_start=None,  # pylint: disable=protected-access
              heartbeat=time.time())
  model_dir_lock._write_remote_holder(path, mine)  # pylint: disable=protected-access
  with caplog.at_level("WARNING"):
    lock = model_dir_lock.acquire(model_dir, lease_seconds=60)
  assert "no longer runs on this machine" in caplog.text
  lock.release()


@pytest.mark.slow  # 20-50 s per scheme
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
          "--gin.CHECKPOINT_PERIOD=5", "--gin.trainer.CheckpointConfig.async_save=False",
          f"--gin.MODEL_DIR='{model_dir}'"]
  assert train_script.main(base + ["--gin.TRAIN_STEPS=10"]) == 0
  assert not os.path.exists(model_dir.split("//")[0])  # no local folder named after the URL ("gs:")
  names = set(storage.walk_files(model_dir))
  assert {"config.gin", "model_config.json", "metrics.jsonl", "checkpoints/10/t2t_manifest.json",
          "checkpoints/5/t2t_manifest.json", ".t2t_lock", "training_curves.png"} <= names
  assert any(n.startswith("train/events.out.tfevents.") for n in names)
  assert any(n.startswith("eval/events.out.tfevents.") for n in names)
  assert storage.read_text(f"{model_dir}/.t2t_lock") == ""  # released
  assert [(r["step"], r["split"]) for r in summaries.read_metrics(model_dir)] == [
      (5, "train"), (5, "eval"), (10, "train"), (10, "eval")]
  assert train_script.main(base + ["--gin.TRAIN_STEPS=15"]) == 0
  rows = summaries.read_metrics(model_dir, "train")
  assert [r["step"] for r in rows] == [5, 10, 15]  # resumed at 10, not retrained from 0
  from t2t_jax.training import checkpoints  # pylint: disable=import-outside-toplevel
  assert checkpoints.CheckpointManager(model_dir, read_only=True).all_steps()[-1] == 15


KILLABLE_TRAIN = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from t2t_jax import train
from t2t_jax.data import resumable
kill_at, drawn = int(os.environ["T2T_TEST_KILL_AT_BATCH"]), [0]
real_next = resumable.IndexedBatches.__next__
def next_or_die(self):
  drawn[0] += 1
  if drawn[0] == kill_at:
    os.kill(os.getpid(), signal.SIGKILL)
  return real_next(self)
resumable.IndexedBatches.__next__ = next_or_die
sys.exit(train.main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.multiprocess
def test_kill_9_then_resume_from_the_bucket_is_bit_identical(bucket, tmp_path):
  """`python -m t2t_jax.train` with MODEL_DIR in the bucket, killed with SIGKILL while it trains
  (asynchronous checkpoint saves in flight), then started again: it resumes from the bucket's last
  sealed step, and its final parameters equal, bit for bit, those of a run never interrupted."""
  from t2t_jax.training import checkpoints, summaries  # pylint: disable=import-outside-toplevel
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  script = tmp_path / "killable_train.py"
  script.write_text(KILLABLE_TRAIN.format(repo=repo))

  def run(model_dir, kill_at):
    args = ["--gin_file=models/t5_1_1_micro.gin", "--gin_file=runs/finetune.gin",
            "--gin.MIXTURE_OR_TASK_NAME='copy'", "--gin.VOCAB_SIZE=128", "--gin.PACK=False",
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 10, 'targets': 5}",
            "--gin.train_script.DataConfig.data_fn=@train_script.copy_task_batches",
            "--gin.BATCH_SIZE=8", "--gin.TRAIN_STEPS=12", "--gin.CHECKPOINT_PERIOD=2",
            "--gin.EVAL_PERIOD=None", "--gin.LOG_PERIOD=1", "--gin.LEARNING_RATE=0.01",
            f"--gin.MODEL_DIR='{model_dir}'"]
    env = dict(os.environ, PYTHONPATH=repo, T2T_TEST_KILL_AT_BATCH=str(kill_at),
               JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    return subprocess.run([sys.executable, str(script), *args], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=300, check=False)

  model_dir = f"{bucket}/runs/killed"
  killed = run(model_dir, kill_at=9)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  steps = checkpoints.CheckpointManager(model_dir, read_only=True).all_steps()
  assert steps and max(steps) <= 8, steps
  resumed = run(model_dir, kill_at=-1)  # the killed holder's lease is known dead on this machine
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "no longer runs on this machine" in resumed.stderr, resumed.stderr[-3000:]
  restored = int(resumed.stderr.split("restored checkpoint step ")[1].split()[0])
  assert restored in steps, (restored, steps)  # the bucket's last sealed step, not a retrain from 0
  reference = run(str(tmp_path / "uninterrupted"), kill_at=-1)
  assert reference.returncode == 0, reference.stderr[-3000:]

  assert checkpoints.CheckpointManager(model_dir, read_only=True).all_steps()[-1] == 12
  _, got = checkpoints.load_params(model_dir)
  _, want = checkpoints.load_params(str(tmp_path / "uninterrupted"))
  for (path, a), b in zip(jax_leaves_with_path(got), jax_leaves(want)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=path)
  rows = summaries.read_metrics(model_dir, "train")
  assert [r["step"] for r in rows] == list(range(1, 13))  # each step once, the killed run's tail dropped
  want_rows = summaries.read_metrics(str(tmp_path / "uninterrupted"), "train")
  assert [r["loss"] for r in rows] == [r["loss"] for r in want_rows]


def jax_leaves_with_path(tree):
  import jax  # pylint: disable=import-outside-toplevel
  return [(jax.tree_util.keystr(p), x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]]


def jax_leaves(tree):
  import jax  # pylint: disable=import-outside-toplevel
  return jax.tree.leaves(tree)
