"""Every study config under gin/experiments/ that binds `compare_ids.*` parses, its model families and ID
specs are valid, and each family's training bindings name macros its training gin files define (a
misspelt or renamed macro, e.g. "FREEZE_ENCODER" in a family's bindings, would otherwise only fail when
that family starts training, hours into a study)."""

import os

import gin
import pytest

from t2t_jax import gin_utils
from t2t_jax import train as _train  # pylint: disable=unused-import  (registers the training configurables)
from t2t_jax.errors import UserInputError
from t2t_jax.ids import specs as specs_lib
from t2t_jax.studies import compare_ids as _compare_ids  # pylint: disable=unused-import  (registers compare_ids)
from t2t_jax.studies import folds_study, pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = os.path.join(ROOT, "gin", "experiments")


def _study_gins():
  out = []
  for name in sorted(n for n in os.listdir(EXPERIMENTS) if n.endswith(".gin")):
    with open(os.path.join(EXPERIMENTS, name), encoding="utf-8") as fh:
      if "compare_ids." in fh.read():
        out.append(name)
  return out


def _query(name, default=None):
  try:
    return gin.query_parameter(f"compare_ids.{name}")
  except ValueError:
    return default


def _family_gins(path):
  """(families, ID specs) of one study gin, parsed as tools/compare_ids.py parses it."""
  gin_utils.parse_gin([path], finalize=False)
  try:
    fams = _query("model_families")
    specs = _query("id_specs")
    return (folds_study.parse_model_families(fams) if fams else [],
            specs_lib.parse_id_specs(specs) if specs else [])
  finally:
    gin.clear_config()


def test_there_are_study_gins_to_check():
  names = _study_gins()
  assert "compare_cpcd_fair_small.gin" in names and "compare_cpcd_unfreeze.gin" in names and len(names) > 15


@pytest.mark.parametrize("name", _study_gins())
def test_study_gin_parses_and_its_families_bindings_are_defined(name):
  families, specs = _family_gins(os.path.join(EXPERIMENTS, name))
  names = {s.name for s in specs}
  for fam in families:
    if fam.id_specs is not None and specs:
      assert set(fam.id_specs) <= names, (name, fam.name, fam.id_specs, sorted(names))
    model_gin = fam.model_gin or f"models/t5_1_1_{fam.model}.gin"
    # The files pipeline.train_gin trains a family with, and the family's own bindings after them:
    # parse_gin refuses a macro binding that none of them defines.
    gin_utils.parse_gin([model_gin, "runs/finetune.gin", pipeline.RECIPE_GIN], list(fam.bindings),
                        finalize=False)
    gin.clear_config()


def test_a_family_binding_to_an_undefined_macro_is_refused():
  """The check above can fail: a family binding a macro no training gin file defines is refused."""
  with pytest.raises(UserInputError, match="FREEZE_ENCODR"):
    gin_utils.parse_gin(["models/bert_t5_minilm.gin", "runs/finetune.gin", pipeline.RECIPE_GIN],
                        ["FREEZE_ENCODR=False"], finalize=False)
  gin.clear_config()
