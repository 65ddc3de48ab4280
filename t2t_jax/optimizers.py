"""Optimizers (optax Adafactor / AdamW) and learning-rate schedules with warmup.

Schedules (`make_schedule`), all starting with `warmup_steps` of linear warmup from 0 when
warmup_steps > 0:
  constant: learning_rate.
  rsqrt:    learning_rate * sqrt(max(warmup_steps, 1) / max(step, warmup_steps, 1)) (T5's inverse
            square root decay; with learning_rate = 0.01 and warmup 10k this is T5X's pretraining
            rsqrt_decay(1.0)).
  cosine:   cosine decay from learning_rate to final_learning_rate_fraction * learning_rate at
            total_steps.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from t2t_jax.errors import UserInputError

SCHEDULES = ("constant", "rsqrt", "cosine")
OPTIMIZERS = ("adafactor", "adamw")


def make_schedule(name: str = "constant", *, learning_rate: float, warmup_steps: int = 0,
                  total_steps: int | None = None,
                  final_learning_rate_fraction: float = 0.0) -> Callable[[jax.Array], jax.Array]:
  """Returns `step -> learning rate` (float32)."""
  if name not in SCHEDULES:
    raise UserInputError(f"unknown learning-rate schedule {name!r}; known: {SCHEDULES}")
  if warmup_steps < 0:
    raise UserInputError(f"warmup_steps must be >= 0, got {warmup_steps}")
  lr = float(learning_rate)
  w = int(warmup_steps)

  if name == "cosine":
    if not total_steps:
      raise UserInputError("the cosine schedule needs total_steps (TRAIN_STEPS)")
    decay_steps = max(int(total_steps) - w, 1)

    def decay(step):
      frac = jnp.clip((step - w) / decay_steps, 0.0, 1.0)
      end = final_learning_rate_fraction
      return lr * (end + (1.0 - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac)))
  elif name == "rsqrt":

    def decay(step):
      return lr * jnp.sqrt(max(w, 1) / jnp.maximum(step, max(w, 1)))
  else:

    def decay(step):
      return jnp.full((), lr)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    value = decay(step)
    if w > 0:
      value = jnp.where(step < w, lr * step / w, value)
    return value.astype(jnp.float32)

  return schedule


def _decay_mask(params):
  """Weight decay only on matrices (not norms' scales)."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(name: str = "adafactor", *, schedule: Callable, weight_decay: float = 0.0,
                   max_grad_norm: float | None = None, b1: float = 0.9, b2: float = 0.999,
                   eps: float = 1e-8, adafactor_decay_rate: float = 0.8,
                   adafactor_clipping_threshold: float | None = 1.0,
                   adafactor_multiply_by_parameter_scale: bool = True
                   ) -> optax.GradientTransformation:
  """Adafactor (T5X defaults: factored, decay 0.8, update clipping 1.0, parameter scaling) or AdamW.

  `max_grad_norm` adds global-norm gradient clipping before the optimizer.
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
  if max_grad_norm:
    opt = optax.chain(optax.clip_by_global_norm(max_grad_norm), opt)
  return opt


def mask_frozen(opt: optax.GradientTransformation, trainable_mask) -> optax.GradientTransformation:
  """`opt` on the parameters where `trainable_mask` is True; zero updates (and no optimizer state)
  for the others.  `trainable_mask` None: `opt` unchanged."""
  if trainable_mask is None:
    return opt
  labels = jax.tree.map(lambda t: "train" if t else "frozen", trainable_mask)
  return optax.multi_transform({"train": opt, "frozen": optax.set_to_zero()}, labels)
