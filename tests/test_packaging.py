"""A non-editable `pip install` ships the gin configs: installed in a fresh venv, the package finds them,
`t2t quickstart --help` runs and a gin file (with an include) parses."""

import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # a venv and a pip build: ~30 s

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ("setup.py", "README.md", "t2t_jax", "tasks", "gin")


def _gin_files(root):
  return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs if f.endswith(".gin"))


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
  """A venv (system site-packages, so no downloads) with t2t_jax installed from a copy of the sources."""
  tmp = tmp_path_factory.mktemp("pkg")
  src = tmp / "src"
  for name in SOURCES:  # a copy: the build writes build/ and *.egg-info beside setup.py
    path = os.path.join(ROOT, name)
    if os.path.isdir(path):
      shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
      os.makedirs(src, exist_ok=True)
      shutil.copy(path, src / name)
  env_dir = tmp / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(env_dir)], check=True)
  python = env_dir / "bin" / "python"
  subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(src)],
                 check=True, capture_output=True, text=True, env=_env())
  return tmp, python


def _env():
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # no worktree on the path
  env["PIP_NO_INDEX"] = "1"
  return env


def _run(venv, code):
  tmp, python = venv
  return subprocess.run([str(python), "-c", code], cwd=tmp, env=_env(), capture_output=True, text=True,
                        check=False)


def test_installed_package_has_every_gin_file(venv):
  proc = _run(venv, "import os, t2t_jax, t2t_jax.gin_utils as g; print(t2t_jax.__file__); print(g.PACKAGE_GIN_DIR)")
  assert proc.returncode == 0, proc.stderr
  module, gin_dir = proc.stdout.split()
  assert module.startswith(str(venv[0] / "venv")), module  # the installed copy, not the source tree
  assert _gin_files(gin_dir) == _gin_files(os.path.join(ROOT, "gin")) and len(_gin_files(gin_dir)) > 20


def test_installed_cli_help(venv):
  tmp, python = venv
  proc = subprocess.run([str(python.parent / "t2t"), "quickstart", "--help"], cwd=tmp, env=_env(),
                        capture_output=True, text=True, check=False)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.startswith("usage: t2t quickstart") and "--num_tracks" in proc.stdout


def test_installed_gin_file_parses_with_its_include(venv):
  """runs/pretrain.gin includes runs/finetune.gin: both resolve inside the installed package."""
  code = ("import gin; from t2t_jax import gin_utils; "
          "gin_utils.parse_gin(['runs/pretrain.gin', 'models/t5_1_1_small.gin'], finalize=False); "
          "q = lambda m: gin.query_parameter(m + '/gin.macro.value'); "
          "print(q('TRAIN_STEPS'), q('TASK_FEATURE_LENGTHS')['targets'], q('PARAM_DTYPE'))")
  proc = _run(venv, code)
  assert proc.returncode == 0, proc.stderr
  # pretrain.gin's own value, finetune.gin's (only reachable through the include), the model file's.
  assert proc.stdout.split() == ["100000", "8", "float32"]


def test_installed_gin_file_with_a_repo_root_include(venv):
  """experiments/scaling_study_tiny.gin includes 'gin/experiments/scaling_study.gin': bundled too."""
  # A stand-in configurable takes the bindings (t2t_jax/studies/scaling.py's is the real one).
  proc = _run(venv, "import gin; from t2t_jax import gin_utils; "
                    "gin.external_configurable(lambda **kw: kw, name='scaling_study'); "
                    "gin_utils.parse_gin(['experiments/scaling_study_tiny.gin'], finalize=False); "
                    "print(gin.query_parameter('scaling_study.catalog_sizes'), gin.query_parameter('scaling_study.k'))")
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.split() == ["(200,", "400)", "10"]  # the tiny file's sizes, the included file's k
