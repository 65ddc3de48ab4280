"""Optimizers (optax Adafactor / AdamW) and learning-rate schedules (T5X's, exactly).

`OptimizerConfig` (gin-bindable) holds every optimisation hyper-parameter; `from_config(config,
total_steps=)` returns (optax optimizer, schedule).

Schedules.  `schedule` is a T5X `utils.create_learning_rate_scheduler` factor string
('constant * rsqrt_decay', 'constant * linear_warmup * rsqrt_normalized_decay', ...: the product of
its factors, `learning_rate` being T5X's `base_learning_rate`, clipped below at
`min_learning_rate`), or one of these names:
  constant               'constant': learning_rate at every step (T5X fine-tuning).
  rsqrt                  'constant * rsqrt_decay': learning_rate / sqrt(max(step, warmup_steps)),
                         constant during warm-up (T5X pretraining with LEARNING_RATE = 1.0 and
                         WARMUP_STEPS = 10000: 0.01 for 10k steps, then inverse square root decay).
  linear_warmup_rsqrt    'constant * linear_warmup * rsqrt_normalized_decay': linear warm-up from 0
                         to learning_rate at warmup_steps, then learning_rate * sqrt(warmup / step).
  linear_warmup_constant 'constant * linear_warmup'.
  cosine                 (ours, not a T5X factor) linear warm-up from 0, then cosine decay to
                         final_learning_rate_fraction * learning_rate at total_steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from t2t_jax.errors import UserInputError

NAMED_SCHEDULES = {
    "constant": "constant",
    "rsqrt": "constant * rsqrt_decay",
    "linear_warmup_rsqrt": "constant * linear_warmup * rsqrt_normalized_decay",
    "linear_warmup_constant": "constant * linear_warmup",
}
SCHEDULES = tuple(NAMED_SCHEDULES) + ("cosine",)
T5X_FACTORS = ("constant", "linear_warmup", "linear_decay", "rsqrt_decay", "rsqrt_normalized_decay",
               "decay_every", "cosine_decay")
OPTIMIZERS = ("adafactor", "adamw")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Optimisation hyper-parameters (gin: OPTIMIZER, LEARNING_RATE, LR_SCHEDULE, WARMUP_STEPS, ...).

  learning_rate is T5X's base_learning_rate; decay_factor, steps_per_decay, steps_per_cycle,
  step_offset and min_learning_rate are T5X `create_learning_rate_scheduler`'s.  weight_decay pulls
  matrices toward 0, decay_to_init (gin DECAY_TO_INIT) every trained parameter toward its value when
  training started (`decay_to_init`).
  """
  optimizer: str = "adafactor"
  learning_rate: float = 1e-3
  schedule: str = "constant"
  warmup_steps: int = 0
  decay_factor: float = 0.5
  steps_per_decay: int = 20000
  steps_per_cycle: int = 100000
  step_offset: int = 0
  min_learning_rate: float = 1e-8
  final_learning_rate_fraction: float = 0.0
  weight_decay: float = 0.0
  max_grad_norm: float | None = None
  decay_to_init: float = 0.0

  def __post_init__(self):
    if self.optimizer not in OPTIMIZERS:
      raise UserInputError(f"unknown optimizer {self.optimizer!r}; known: {OPTIMIZERS}")
    for name in ("learning_rate", "decay_factor", "min_learning_rate", "final_learning_rate_fraction",
                 "weight_decay", "decay_to_init"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise UserInputError(f"{name} must be a number >= 0, got {v!r}")
    for name in ("warmup_steps", "steps_per_decay", "steps_per_cycle", "step_offset"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise UserInputError(f"{name} must be an integer >= 0, got {v!r}")
    if self.max_grad_norm is not None and (isinstance(self.max_grad_norm, bool) or
                                           not isinstance(self.max_grad_norm, (int, float)) or
                                           self.max_grad_norm <= 0):
      raise UserInputError(f"max_grad_norm must be None or > 0, got {self.max_grad_norm!r}")
    _factors(self.schedule)  # validates the name / factor string


def _factors(schedule) -> list[str] | None:
  """T5X factor names of a schedule (None for 'cosine'); UserInputError for unknown ones."""
  if not isinstance(schedule, str):
    raise UserInputError(f"learning-rate schedule must be a string, got {schedule!r}")
  if schedule == "cosine":
    return None
  text = NAMED_SCHEDULES.get(schedule, schedule)
  factors = [f.strip() for f in text.split("*")]
  bad = [f for f in factors if f not in T5X_FACTORS]
  if bad:
    raise UserInputError(f"unknown learning-rate schedule {schedule!r}; use one of {SCHEDULES} or a "
                         f"T5X factor string over {T5X_FACTORS}")
  return factors


def make_schedule(config: OptimizerConfig, *, total_steps: int | None = None
                  ) -> Callable[[jax.Array], jax.Array]:
  """Returns `step -> learning rate` (float32)."""
  factors = _factors(config.schedule)
  lr, w = float(config.learning_rate), int(config.warmup_steps)
  if factors is None:
    return _cosine(lr, w, total_steps, config.final_learning_rate_fraction)
  if w == 0 and any(f in factors for f in ("linear_warmup", "linear_decay", "rsqrt_decay",
                                             "rsqrt_normalized_decay")):
    raise UserInputError(f"learning-rate schedule {config.schedule!r} needs WARMUP_STEPS > 0")

  def schedule(step):  # T5X utils.create_learning_rate_scheduler
    step = jnp.maximum(0.0, jnp.asarray(step, jnp.float32) - config.step_offset)
    ret = jnp.float32(1.0)
    for name in factors:
      if name == "constant":
        ret *= lr
      elif name == "linear_warmup":
        ret *= jnp.minimum(1.0, step / w)
      elif name == "linear_decay":
        ret *= lr * jnp.minimum(step / w, 1.0 + config.decay_factor * (w - step))
      elif name == "rsqrt_decay":
        ret /= jnp.sqrt(jnp.maximum(step, w))
      elif name == "rsqrt_normalized_decay":
        ret *= jnp.sqrt(w) / jnp.sqrt(jnp.maximum(step, w))
      elif name == "decay_every":
        ret *= config.decay_factor ** (step // config.steps_per_decay)
      else:  # cosine_decay
        progress = jnp.maximum(0.0, (step - w) / float(config.steps_per_cycle))
        ret *= jnp.maximum(0.0, 0.5 * (1.0 + jnp.cos(jnp.pi * (progress % 1.0))))
    return jnp.maximum(ret, config.min_learning_rate).astype(jnp.float32)

  return schedule


def _cosine(lr: float, w: int, total_steps: int | None, end: float):
  if not total_steps:
    raise UserInputError("the cosine schedule needs total_steps (TRAIN_STEPS)")
  decay_steps = max(int(total_steps) - w, 1)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    frac = jnp.clip((step - w) / decay_steps, 0.0, 1.0)
    value = lr * (end + (1.0 - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac)))
    if w > 0:
      value = jnp.where(step < w, lr * step / w, value)
    return value.astype(jnp.float32)

  return schedule


def _decay_mask(params):
  """Weight decay only on matrices (not norms' scales)."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


class DecayToInitState(NamedTuple):
  count: jax.Array  # int32 steps taken (the schedule's argument)
  init_params: Any  # the parameters the optimizer was initialised with


def decay_to_init(rate: float, schedule: Callable) -> optax.GradientTransformation:
  """Decoupled weight decay toward the starting parameters (L2-SP: Li et al. 2018, "Explicit inductive
  bias for transfer learning with convolutional networks"): adds `-schedule(step) * rate * (params -
  params_at_init)` to the updates, as AdamW's decay adds `-lr * wd * params`.

  The start is what `init` sees: the warm-start parameters of a fine-tuning run (a pretrained encoder,
  `retrieval_init`'s dense-retriever decoder), kept in the optimizer state (one more copy of the trained
  parameters, sharded like them) so a resumed run decays toward the same start.  For a warm start whose
  good parameters are not near zero (retrieval_init's identity projections), plain weight decay would
  pull them away from the start; this keeps training a correction of it.  Hand-written: optax has
  decay toward zero only (`add_decayed_weights`).
  """
  rate = float(rate)

  def init_fn(params):
    # A copy, so the state never shares a buffer with the (donated) parameters.
    return DecayToInitState(jnp.zeros([], jnp.int32),
                            jax.tree.map(lambda p: jnp.array(p, copy=True), params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("decay_to_init needs the parameters: optimizer.update(updates, state, params)")
    step_rate = schedule(state.count) * rate
    updates = jax.tree.map(lambda u, p, p0: u - (step_rate * (p - p0)).astype(u.dtype),
                           updates, params, state.init_params)
    return updates, DecayToInitState(optax.safe_int32_increment(state.count), state.init_params)

  return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(name: str = "adafactor", *, schedule: Callable, weight_decay: float = 0.0,
                   decay_to_init_rate: float = 0.0, max_grad_norm: float | None = None,
                   b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, adafactor_decay_rate: float = 0.8,
                   adafactor_clipping_threshold: float | None = 1.0,
                   adafactor_multiply_by_parameter_scale: bool = True
                   ) -> optax.GradientTransformation:
  """Adafactor (T5X defaults: factored, decay 0.8, update clipping 1.0, parameter scaling) or AdamW.

  `max_grad_norm` adds global-norm gradient clipping before the optimizer; `decay_to_init_rate` > 0
  decays the parameters toward their starting values after it (`decay_to_init`).
  """
  if name not in OPTIMIZERS:
    raise UserInputError(f"unknown optimizer {name!r}; known: {OPTIMIZERS}")
  if name == "adafactor":
    opt = optax.adafactor(
        learning_rate=schedule, decay_rate=adafactor_decay_rate,
        multiply_by_parameter_scale=adafactor_multiply_by_parameter_scale,
        clipping_threshold=adafactor_clipping_threshold,
        weight_decay_rate=weight_decay or None,
        weight_decay_mask=_decay_mask if weight_decay else None)
  else:
    opt = optax.adamw(learning_rate=schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                      mask=_decay_mask)
  if decay_to_init_rate:
    opt = optax.chain(opt, decay_to_init(decay_to_init_rate, schedule))
  if max_grad_norm:
    opt = optax.chain(optax.clip_by_global_norm(max_grad_norm), opt)
  return opt


def from_config(config: OptimizerConfig, *, total_steps: int | None = None
                ) -> tuple[optax.GradientTransformation, Callable]:
  """(optimizer, schedule) of an OptimizerConfig."""
  schedule = make_schedule(config, total_steps=total_steps)
  opt = make_optimizer(config.optimizer, schedule=schedule, weight_decay=config.weight_decay,
                       decay_to_init_rate=config.decay_to_init, max_grad_norm=config.max_grad_norm)
  return opt, schedule


def mask_frozen(opt: optax.GradientTransformation, trainable_mask) -> optax.GradientTransformation:
  """`opt` on the parameters where `trainable_mask` is True; zero updates (and no optimizer state)
  for the others.  `trainable_mask` None: `opt` unchanged."""
  if trainable_mask is None:
    return opt
  labels = jax.tree.map(lambda t: "train" if t else "frozen", trainable_mask)
  return optax.multi_transform({"train": opt, "frozen": optax.set_to_zero()}, labels)


def scale_learning_rates(opt: optax.GradientTransformation, scales) -> optax.GradientTransformation:
  """`opt` with each parameter's update multiplied by `scales` (a pytree of floats like the params,
  e.g. `EncoderDecoderModel.learning_rate_scales`): the same as a per-parameter learning rate for
  optimizers whose update is proportional to it (Adafactor, AdamW).  None: `opt` unchanged."""
  if scales is None:
    return opt
  labels = jax.tree.map(lambda s: repr(float(s)), scales)
  transforms = {repr(float(s)): opt if float(s) == 1.0 else optax.chain(opt, optax.scale(float(s)))
                for s in jax.tree.leaves(scales)}
  return optax.multi_transform(transforms, labels)
