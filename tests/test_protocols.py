"""The module seams as Protocols (docs/CONTRACTS.md): the implementations satisfy them, by isinstance /
issubclass (method names) and by signature (parameter names, kinds and order; extra parameters
only with defaults)."""

import inspect

import pytest

from t2t_jax import export_runtime, models
from t2t_jax.serving import protocols, retriever
from t2t_jax.baselines import base as baselines_base
from t2t_jax.baselines import bi_encoder, bm25, dual_encoder, hybrid, popularity
from t2t_jax.ids import strategies
from t2t_jax.models import base, bert_t5, t5

P = inspect.Parameter
VARIADIC = (P.VAR_POSITIONAL, P.VAR_KEYWORD)


def _members(proto) -> list[str]:
  """The methods a Protocol declares (its own and its Protocol bases')."""
  names = set()
  for cls in proto.__mro__:
    if cls is not object and getattr(cls, "_is_protocol", False) and cls.__name__ != "Protocol":
      names |= {n for n, v in vars(cls).items() if callable(v) and (not n.startswith("_") or n == "__call__")}
  return sorted(names)


def _params(fn) -> list[inspect.Parameter]:
  return [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]


def assert_signature(impl, spec) -> None:
  """`impl` accepts every call `spec`'s signature allows, with the same parameter names."""
  want, got = _params(spec), _params(impl)
  by_name = {p.name: p for p in got}
  for i, w in enumerate(want):
    if w.kind in VARIADIC:
      assert any(g.kind == w.kind for g in got), f"{impl}: no {w.kind.description} parameter"
      continue
    g = by_name.get(w.name)
    assert g is not None, f"{impl}: no parameter {w.name!r}"
    if w.kind == P.POSITIONAL_OR_KEYWORD:
      assert g.kind == P.POSITIONAL_OR_KEYWORD and got.index(g) == i, f"{impl}: {w.name!r} not at {i}"
    else:
      assert g.kind in (P.KEYWORD_ONLY, P.POSITIONAL_OR_KEYWORD), f"{impl}: {w.name!r} not by keyword"
  names = {w.name for w in want}
  extra = [g.name for g in got if g.name not in names and g.kind not in VARIADIC and g.default is P.empty]
  assert not extra, f"{impl}: parameters {extra} beyond {spec} have no default"


def assert_implements(cls, proto) -> None:
  assert issubclass(cls, proto), f"{cls.__name__} is not a {proto.__name__}"
  members = _members(proto)
  assert members, proto
  for name in members:
    assert_signature(getattr(cls, name), getattr(proto, name))


# ---- model family (models/base.py) --------------------------------------------------------------


@pytest.mark.parametrize("family", models.FAMILIES)
def test_model_families_satisfy_the_model_seam(family):
  config_cls, model_cls = models._family(family)  # pylint: disable=protected-access
  assert issubclass(model_cls, base.EncoderDecoderModel) and issubclass(config_cls, base.ModelConfig)
  assert model_cls.config_class is config_cls and config_cls.family == family
  assert issubclass(model_cls.module_class, base.EncoderDecoderModule)
  assert_implements(model_cls.module_class, base.FamilyModule)


def test_model_modules_are_family_modules():
  model = models.build_model(t5.T5Config.micro(vocab_size=16))
  assert isinstance(model.module, base.FamilyModule) and isinstance(model.module, t5.Transformer)
  assert isinstance(bert_t5.BertT5(bert_t5.BertT5Config()), base.FamilyModule)
  with pytest.raises(TypeError, match="T5Model needs a T5Config, got BertT5Config"):
    t5.T5Model(bert_t5.BertT5Config())


# ---- ID strategy (ids/strategies.py) ------------------------------------------------------------


@pytest.mark.parametrize("strategy", strategies.STRATEGIES)
def test_id_strategies_satisfy_the_id_strategy_seam(strategy):
  builder = strategies.BUILDERS[strategy]
  assert isinstance(builder, strategies.IdStrategy)
  assert_signature(builder, strategies.IdStrategy.__call__)
  assert inspect.signature(builder).return_annotation in (strategies.IdTable, "IdTable")


# ---- retriever (serving/protocols.py) and baseline (baselines/base.py) -----------------------------------


@pytest.mark.parametrize("cls", [bm25.BM25Retriever, popularity.MostPopular, dual_encoder.DualEncoderRetriever,
                                 bi_encoder.BiEncoderRetriever])
def test_baselines_satisfy_the_baseline_seam(cls):
  assert_implements(cls, baselines_base.Baseline)
  assert_implements(cls, protocols.Retriever)


def test_hybrid_is_a_retriever_not_a_baseline():
  assert_implements(hybrid.HybridRetriever, protocols.Retriever)
  assert not issubclass(hybrid.HybridRetriever, baselines_base.Baseline)
  fitted = popularity.MostPopular()
  assert isinstance(fitted, baselines_base.Baseline) and isinstance(fitted, protocols.Retriever)
  assert isinstance(hybrid.HybridRetriever(fitted, fitted), protocols.Retriever)


@pytest.mark.parametrize("cls", [retriever.GenerativeRetriever, export_runtime.ExportedRecommender])
def test_trained_model_recommenders_satisfy_the_track_recommender_seam(cls):
  assert_implements(cls, protocols.TrackRecommender)


def test_the_signature_check_catches_a_mismatch():
  class Renamed:
    def recommend(self, queries, k):  # pylint: disable=unused-argument
      return None

  class Extra:
    def recommend(self, prompts, k, depth):  # pylint: disable=unused-argument
      return None

  for cls in (Renamed, Extra):
    assert issubclass(cls, protocols.Retriever)  # names only: what isinstance can see
    with pytest.raises(AssertionError):
      assert_implements(cls, protocols.Retriever)
