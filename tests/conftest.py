"""Test configuration: 8 fake CPU devices, set before JAX is imported anywhere."""

import os

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

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


@pytest.fixture(scope="session")
def _gcs_server():
  """One real local GCS server for the session (gcp-storage-emulator in memory, its own thread, with
  the generation headers real GCS sends: t2t_jax/local_gcs.py); gcsfs (via etils.epath) and
  tensorstore are pointed at it through their environment variables, as a user points them at a
  bucket.  One server and one endpoint for the whole run: clients cache their connections
  (tensorstore's context, fsspec's instances)."""
  pytest.importorskip("gcsfs")
  pytest.importorskip("gcp_storage_emulator.server")
  from t2t_jax import local_gcs  # pylint: disable=import-outside-toplevel
  server, url = local_gcs.start("t2t-test")
  patch = pytest.MonkeyPatch()
  for name, value in local_gcs.client_env(url).items():
    patch.setenv(name, value)
  import fsspec  # pylint: disable=import-outside-toplevel
  from etils.epath import gpath  # pylint: disable=import-outside-toplevel
  fsspec.filesystem("gs").clear_instance_cache()
  gpath._is_tf_installed.cache_clear()  # pylint: disable=protected-access  (epath caches its EPATH_USE_TF reading)
  try:
    yield "gs://t2t-test"
  finally:
    server.stop()
    patch.undo()
    gpath._is_tf_installed.cache_clear()  # pylint: disable=protected-access


@pytest.fixture
def gcs_bucket(_gcs_server, request):  # pylint: disable=redefined-outer-name
  """A fresh prefix of gs://t2t-test on the session's local GCS server, one per test."""
  return f"{_gcs_server}/{request.node.name.replace('[', '_').replace(']', '')}"
