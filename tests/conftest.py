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
