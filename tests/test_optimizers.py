"""Tests for t2t_jax.training.optimizers: T5X's learning-rate schedules exactly, optimizers, frozen masks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from t2t_jax.training import optimizers
from t2t_jax.errors import UserInputError


def _sched(**kw):
  total = kw.pop("_t", None)
  return optimizers.make_schedule(optimizers.OptimizerConfig(**kw), total_steps=total)


def t5x_reference(step, factors, base, warmup, min_lr=1e-8):
  """T5X utils.create_learning_rate_scheduler, written out for the factors used here."""
  ret = 1.0
  for name in [f.strip() for f in factors.split("*")]:
    if name == "constant":
      ret *= base
    elif name == "linear_warmup":
      ret *= min(1.0, step / warmup)
    elif name == "rsqrt_decay":
      ret /= np.sqrt(max(step, warmup))
    elif name == "rsqrt_normalized_decay":
      ret *= np.sqrt(warmup) / np.sqrt(max(step, warmup))
  return max(ret, min_lr)


def test_rsqrt_is_t5x_rsqrt_decay():
  """'rsqrt' = T5X pretraining 'constant * rsqrt_decay': constant during warm-up, then 1/sqrt."""
  s = _sched(schedule="rsqrt", learning_rate=1.0, warmup_steps=10000)
  steps = [0, 1, 5000, 10000, 40000, 90000]
  np.testing.assert_allclose([float(s(t)) for t in steps],
                             [t5x_reference(t, "constant * rsqrt_decay", 1.0, 10000) for t in steps],
                             rtol=1e-6)
  np.testing.assert_allclose([float(s(0)), float(s(40000))], [0.01, 0.005], rtol=1e-6)


@pytest.mark.parametrize("schedule, factors", [
    ("linear_warmup_rsqrt", "constant * linear_warmup * rsqrt_normalized_decay"),
    ("linear_warmup_constant", "constant * linear_warmup"),
    ("constant", "constant"),
    ("constant * linear_warmup * rsqrt_decay", "constant * linear_warmup * rsqrt_decay"),
])
def test_named_and_factor_schedules_equal_t5x(schedule, factors):
  s = _sched(schedule=schedule, learning_rate=0.5, warmup_steps=100)
  steps = [0, 1, 50, 100, 400, 10000]
  np.testing.assert_allclose([float(s(t)) for t in steps],
                             [t5x_reference(t, factors, 0.5, 100) for t in steps], rtol=1e-6)


def test_linear_warmup_rsqrt_is_the_old_quickstart_schedule():
  s = _sched(schedule="linear_warmup_rsqrt", learning_rate=0.01, warmup_steps=100)
  np.testing.assert_allclose([float(s(50)), float(s(100)), float(s(400))], [0.005, 0.01, 0.005],
                             rtol=1e-6)


def test_cosine():
  s = _sched(schedule="cosine", learning_rate=1.0, warmup_steps=10, final_learning_rate_fraction=0.1,
             _t=110)
  np.testing.assert_allclose([float(s(t)) for t in (0, 5, 10, 60, 110, 500)],
                             [0.0, 0.5, 1.0, 0.55, 0.1, 0.1], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kwargs, match", [
    (dict(schedule="linear"), "unknown learning-rate schedule 'linear'"),
    (dict(schedule="constant * sqrt_decay"), "unknown learning-rate schedule"),
    (dict(optimizer="sgd"), "unknown optimizer 'sgd'"),
    (dict(learning_rate="fast"), "learning_rate must be a number"),
    (dict(warmup_steps=-1), "warmup_steps must be an integer >= 0"),
    (dict(max_grad_norm=0), "max_grad_norm"),
])
def test_bad_optimizer_config(kwargs, match):
  with pytest.raises(UserInputError, match=match):
    optimizers.OptimizerConfig(**kwargs)


def test_schedules_that_need_warmup_or_total_steps():
  with pytest.raises(UserInputError, match="needs WARMUP_STEPS > 0"):
    _sched(schedule="rsqrt", warmup_steps=0)
  with pytest.raises(UserInputError, match="needs total_steps"):
    _sched(schedule="cosine")


def test_from_config_and_frozen_mask():
  opt, sched = optimizers.from_config(optimizers.OptimizerConfig(optimizer="adamw", learning_rate=0.1,
                                                                 max_grad_norm=1.0))
  assert float(sched(7)) == pytest.approx(0.1)
  params = {"a": jnp.ones((2, 2)), "b": jnp.ones((2, 2))}
  masked = optimizers.mask_frozen(opt, {"a": True, "b": False})
  state = masked.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = masked.update(grads, state, params)
  new = optax.apply_updates(params, updates)
  assert not np.allclose(new["a"], 1.0) and np.array_equal(new["b"], np.ones((2, 2)))


def test_scale_learning_rates_scales_only_the_labelled_updates():
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from t2t_jax.training import optimizers as opt_lib  # pylint: disable=import-outside-toplevel
  params = {"encoder": {"w": jnp.ones((3,))}, "decoder": {"w": jnp.ones((3,))}}
  grads = {"encoder": {"w": jnp.full((3,), 0.5)}, "decoder": {"w": jnp.full((3,), 0.5)}}
  sgd = optax.sgd(0.1)
  scaled = opt_lib.scale_learning_rates(sgd, {"encoder": {"w": 0.01}, "decoder": {"w": 1.0}})
  upd, _ = scaled.update(grads, scaled.init(params), params)
  ref, _ = sgd.update(grads, sgd.init(params), params)
  np.testing.assert_allclose(upd["decoder"]["w"], ref["decoder"]["w"])
  np.testing.assert_allclose(upd["encoder"]["w"], 0.01 * ref["encoder"]["w"], rtol=1e-6)
  assert opt_lib.scale_learning_rates(sgd, None) is sgd


def test_decay_to_init_pulls_the_trained_parameters_toward_their_start():
  start = {"w": jnp.array([1.0, -2.0]), "b": jnp.array([0.5])}
  opt = optax.chain(optax.set_to_zero(), optimizers.decay_to_init(0.5, lambda step: 0.1 * (step + 1)))
  state = opt.init(start)
  moved = {"w": jnp.array([3.0, -2.0]), "b": jnp.array([-0.5])}
  upd, state = opt.update(jax.tree.map(jnp.ones_like, moved), state, moved)
  # step 0: lr 0.1 x rate 0.5 x (params - start)
  np.testing.assert_allclose(upd["w"], [-0.1, 0.0], rtol=1e-6)
  np.testing.assert_allclose(upd["b"], [0.05], rtol=1e-6)
  upd, state = opt.update(jax.tree.map(jnp.ones_like, moved), state, moved)
  np.testing.assert_allclose(upd["w"], [-0.2, 0.0], rtol=1e-6)  # step 1: lr 0.2, the same start
  np.testing.assert_array_equal(state[1].init_params["w"], [1.0, -2.0])
  with pytest.raises(ValueError, match="needs the parameters"):
    opt.update(moved, state)


def test_decay_to_init_from_config_only_on_trained_parameters():
  cfg = optimizers.OptimizerConfig(optimizer="adamw", learning_rate=0.1, decay_to_init=2.0)
  opt, _ = optimizers.from_config(cfg)
  params = {"a": jnp.zeros((2, 2)), "b": jnp.ones((2, 2))}
  masked = optimizers.mask_frozen(opt, {"a": True, "b": False})
  state = masked.init(params)
  kept = [leaf for leaf in jax.tree.leaves(state) if getattr(leaf, "shape", None) == (2, 2)]
  assert kept, "no copy of the trained parameter"
  # An update far from the start: AdamW's step (~lr) plus the decay, -0.1 x 2 x (5 - 0) = -1.
  far = {"a": jnp.full((2, 2), 5.0), "b": jnp.ones((2, 2))}
  upd, _ = masked.update(jax.tree.map(jnp.zeros_like, far), state, far)
  plain, _ = optimizers.from_config(optimizers.OptimizerConfig(optimizer="adamw", learning_rate=0.1))
  ref, _ = optimizers.mask_frozen(plain, {"a": True, "b": False}).update(
      jax.tree.map(jnp.zeros_like, far), optimizers.mask_frozen(plain, {"a": True, "b": False}).init(params), far)
  np.testing.assert_allclose(upd["a"] - ref["a"], -1.0, rtol=1e-6)
  np.testing.assert_array_equal(upd["b"], 0.0)
  with pytest.raises(UserInputError, match="decay_to_init must be a number >= 0"):
    optimizers.OptimizerConfig(decay_to_init=-1.0)
