"""Test configuration: 8 fake CPU devices, set before JAX is imported anywhere."""

import os

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import contextlib  # noqa: E402
import importlib.util  # noqa: E402

import pytest  # noqa: E402


def load_tiny_root():
  """tests/data/tiny_root.py as a module (tests/ is not a package)."""
  spec = importlib.util.spec_from_file_location(
      "t2t_tiny_root", os.path.join(os.path.dirname(__file__), "data", "tiny_root.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def tiny_data_root(tmp_path_factory):
  """(root, Dataset): a tiny data root with dataset `tiny-syn` and ID tables `sem` and `title`."""
  root = tmp_path_factory.mktemp("root")
  return root, load_tiny_root().build(root)


@contextlib.contextmanager
def _clients_pointed_at(env: dict, *, unset=(), clear_instances=lambda: None):
  """Sets `env` (and unsets `unset`) as a user would for a bucket's clients, and drops the clients'
  cached instances (fsspec's) and epath's cached EPATH_USE_TF reading, on entry and on exit."""
  from etils.epath import gpath  # pylint: disable=import-outside-toplevel

  def reset():
    clear_instances()
    gpath._is_tf_installed.cache_clear()  # pylint: disable=protected-access

  patch = pytest.MonkeyPatch()
  for name, value in env.items():
    patch.setenv(name, value)
  for name in unset:
    patch.delenv(name, raising=False)
  reset()
  try:
    yield
  finally:
    patch.undo()
    reset()


@pytest.fixture(scope="session")
def _gcs_server():
  """One real local GCS server for the session (gcp-storage-emulator in memory, its own thread, with
  the generation headers real GCS sends: t2t_jax/local_gcs.py); gcsfs (via etils.epath) and
  tensorstore are pointed at it through their environment variables, as a user points them at a
  bucket.  One server and one endpoint for the whole run: clients cache their connections
  (tensorstore's context, fsspec's instances)."""
  pytest.importorskip("gcsfs")
  pytest.importorskip("gcp_storage_emulator.server")
  import fsspec  # pylint: disable=import-outside-toplevel
  from t2t_jax import local_gcs  # pylint: disable=import-outside-toplevel
  server, url = local_gcs.start("t2t-test")
  try:
    with _clients_pointed_at(local_gcs.client_env(url),
                             clear_instances=lambda: fsspec.filesystem("gs").clear_instance_cache()):
      yield "gs://t2t-test"
  finally:
    server.stop()


def _test_prefix(request) -> str:
  return request.node.name.replace("[", "_").replace("]", "")


@pytest.fixture
def gcs_bucket(_gcs_server, request):  # pylint: disable=redefined-outer-name
  """A fresh prefix of gs://t2t-test on the session's local GCS server, one per test."""
  return f"{_gcs_server}/{_test_prefix(request)}"


@pytest.fixture(scope="session")
def _s3_server():
  """One S3 server for the session (moto's server mode, in memory, its own thread), with bucket
  t2t-test; s3fs (via etils.epath) is pointed at it the way a user points it at an S3-compatible
  store (MinIO, Ceph): AWS_ENDPOINT_URL plus credentials and region from the environment."""
  import logging  # pylint: disable=import-outside-toplevel
  import socket  # pylint: disable=import-outside-toplevel
  pytest.importorskip("s3fs")
  moto_server = pytest.importorskip("moto.server")
  boto3 = pytest.importorskip("boto3")
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
  server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
  server.start()
  url = f"http://127.0.0.1:{port}"
  import s3fs  # pylint: disable=import-outside-toplevel
  env = {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "t2t-test", "AWS_SECRET_ACCESS_KEY": "t2t-test",
         "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "EPATH_USE_TF": "false"}
  try:
    with _clients_pointed_at(env, unset=("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_S3"),
                             clear_instances=s3fs.S3FileSystem.clear_instance_cache):
      boto3.client("s3").create_bucket(Bucket="t2t-test")
      yield "s3://t2t-test"
  finally:
    server.stop()


@pytest.fixture
def s3_bucket(_s3_server, request):  # pylint: disable=redefined-outer-name
  """A fresh prefix of s3://t2t-test on the session's moto S3 server, one per test."""
  return f"{_s3_server}/{_test_prefix(request)}"


@pytest.fixture(params=["gs", "s3"])
def bucket(request):
  """A fresh bucket prefix on each of the tests' servers in turn: gs:// (gcs_bucket), s3:// (s3_bucket)."""
  return request.getfixturevalue({"gs": "gcs_bucket", "s3": "s3_bucket"}[request.param])
