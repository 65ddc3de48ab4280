"""Training losses (T5X `losses.compute_weighted_cross_entropy` semantics) and their normaliser.

  LossConfig            label_smoothing, z_loss, loss_normalizing_factor (T5X names; gin-bindable)
  cross_entropy_sums    weighted (loss, z-loss, correct, weight) sums of a [B, L, V] logits batch
  normalizer_of         the loss normalising factor of a (full, not micro-) batch
  make_loss_fn          loss_fn(params, batch, dropout_rng, normalizer, enable_dropout) for a model

Cross entropy with optional label smoothing (the smoothed distribution's entropy subtracted, so a
perfect model has loss 0) plus z-loss `z_loss * logsumexp(logits)^2`, weighted by
decoder_loss_weights, summed, divided by the normaliser (`loss_normalizing_factor`):
  'NUM_REAL_TARGET_TOKENS'   weighted target tokens of the global batch (our default),
  'NUM_TOTAL_TARGET_TOKENS'  batch_size * target length,
  'AVERAGE_PER_SEQUENCE'     each sequence (packed: each segment) averaged over its own tokens, then
                             averaged over the sequences of the global batch,
  a number                   that constant (T5X: e.g. pretraining batch * target length),
  None                       no division (the sum; T5X's default in its model gin files).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from t2t_jax import models
from t2t_jax.errors import UserInputError

NORMALIZERS = ("NUM_REAL_TARGET_TOKENS", "NUM_TOTAL_TARGET_TOKENS", "AVERAGE_PER_SEQUENCE")
AUX_KEYS = ("loss_sum", "z_loss_sum", "correct", "weight_sum")


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Loss hyper-parameters (T5X `EncoderDecoderModel` names; gin: LABEL_SMOOTHING, Z_LOSS,
  LOSS_NORMALIZING_FACTOR)."""
  label_smoothing: float = 0.0
  z_loss: float = 1e-4
  loss_normalizing_factor: Any = "NUM_REAL_TARGET_TOKENS"

  def __post_init__(self):
    if isinstance(self.label_smoothing, bool) or not isinstance(self.label_smoothing, (int, float)) \
        or not 0.0 <= self.label_smoothing < 1.0:
      raise UserInputError(f"LABEL_SMOOTHING must be a number in [0, 1), got {self.label_smoothing!r}")
    if isinstance(self.z_loss, bool) or not isinstance(self.z_loss, (int, float)) or self.z_loss < 0:
      raise UserInputError(f"Z_LOSS must be a number >= 0, got {self.z_loss!r}")
    check_normalizer(self.loss_normalizing_factor)


def check_normalizer(value) -> None:
  if value is None or value in NORMALIZERS:
    return
  if not isinstance(value, (bool, str)):
    try:
      if float(value) > 0:
        return
    except (TypeError, ValueError):
      pass
  raise UserInputError(f"LOSS_NORMALIZING_FACTOR={value!r}: use None, a positive number or one of "
                       f"{NORMALIZERS}")


def cross_entropy_sums(logits_BxLxV, targets_BxL, weights_BxL, *, label_smoothing: float = 0.0,
                       z_loss: float = 0.0) -> dict:
  """{'loss_sum', 'z_loss_sum', 'correct', 'weight_sum'}: weighted float32 sums over the batch."""
  ce_BxL, z_BxL, correct_BxL = cross_entropy_per_token(
      logits_BxLxV, targets_BxL, label_smoothing=label_smoothing, z_loss=z_loss)
  w = weights_BxL.astype(jnp.float32)
  return {"loss_sum": jnp.sum((ce_BxL + z_BxL) * w), "z_loss_sum": jnp.sum(z_BxL * w),
          "correct": jnp.sum(correct_BxL * w), "weight_sum": jnp.sum(w)}


def cross_entropy_per_token(logits_BxLxV, targets_BxL, *, label_smoothing: float = 0.0,
                            z_loss: float = 0.0):
  """(cross entropy, z-loss term, correct) per token, float32 [B, L] each (unweighted)."""
  logits = logits_BxLxV.astype(jnp.float32)
  vocab = logits.shape[-1]
  confidence = 1.0 - label_smoothing
  low = label_smoothing / (vocab - 1)
  normalizing_constant = -(confidence * math.log(confidence) +
                           (vocab - 1) * low * math.log(low + 1e-20)) if label_smoothing else 0.0
  log_z_BxL = jax.nn.logsumexp(logits, axis=-1)
  target_logit_BxL = jnp.take_along_axis(logits, targets_BxL[..., None].astype(jnp.int32),
                                         axis=-1)[..., 0]
  nll_BxL = log_z_BxL - target_logit_BxL
  if label_smoothing:
    # -sum_v q_v log p_v with q = low everywhere, confidence at the target.
    sum_logp_BxL = jnp.sum(logits, axis=-1) - vocab * log_z_BxL
    ce_BxL = (confidence - low) * nll_BxL - low * sum_logp_BxL - normalizing_constant
  else:
    ce_BxL = nll_BxL
  correct_BxL = (jnp.argmax(logits, axis=-1) == targets_BxL).astype(jnp.float32)
  return ce_BxL, z_loss * jnp.square(log_z_BxL), correct_BxL


def loss_weights(batch):
  """decoder_loss_weights, or 1 on non-padding targets when the batch has none."""
  if "decoder_loss_weights" in batch:
    return batch["decoder_loss_weights"]
  return (batch["decoder_target_tokens"] > 0).astype(jnp.float32)


def _sequence_ids(batch):
  """int32 [B, L]: which sequence each target token belongs to (row, or row x segment if packed)."""
  targets = batch["decoder_target_tokens"]
  b, length = targets.shape
  seg = batch.get("decoder_segment_ids")
  rows = jnp.arange(b, dtype=jnp.int32)[:, None] * (length + 1)
  return rows + (seg.astype(jnp.int32) if seg is not None else jnp.ones_like(targets, jnp.int32))


def per_sequence_weights(batch):
  """AVERAGE_PER_SEQUENCE weights: each token's weight over its sequence's total weight."""
  w = loss_weights(batch).astype(jnp.float32)
  ids = _sequence_ids(batch).reshape(-1)
  totals = jax.ops.segment_sum(w.reshape(-1), ids, num_segments=w.shape[0] * (w.shape[1] + 1))
  return w / jnp.maximum(totals[ids].reshape(w.shape), 1e-9)


def normalizer_of(batch, loss_normalizing_factor):
  """The loss normaliser of a full (global) batch, float32 scalar."""
  if loss_normalizing_factor is None:
    return jnp.float32(1.0)
  if loss_normalizing_factor == "NUM_REAL_TARGET_TOKENS":
    return jnp.maximum(jnp.sum(loss_weights(batch).astype(jnp.float32)), 1.0)
  if loss_normalizing_factor == "NUM_TOTAL_TARGET_TOKENS":
    return jnp.float32(np.prod(batch["decoder_target_tokens"].shape))
  if loss_normalizing_factor == "AVERAGE_PER_SEQUENCE":
    return jnp.maximum(jnp.sum(per_sequence_weights(batch)), 1.0)  # = number of sequences
  return jnp.float32(loss_normalizing_factor)


def make_loss_fn(model, config: LossConfig = LossConfig()):
  """loss_fn(params, batch, dropout_rng, normalizer, enable_dropout) -> (objective, aux sums).

  `model` is an `EncoderDecoderModel` (or its config); aux holds `AUX_KEYS` sums with the batch's
  own loss weights (per-token metrics), the objective uses the normaliser's weighting.
  """
  model = models.build_model(model)

  def loss_fn(params, batch, dropout_rng, normalizer, enable_dropout):
    logits = model.logits(params, batch, dropout_rng=dropout_rng, enable_dropout=enable_dropout)
    ce_BxL, z_BxL, correct_BxL = cross_entropy_per_token(
        logits, batch["decoder_target_tokens"], label_smoothing=config.label_smoothing,
        z_loss=config.z_loss)
    w = loss_weights(batch).astype(jnp.float32)
    aux = {"loss_sum": jnp.sum((ce_BxL + z_BxL) * w), "z_loss_sum": jnp.sum(z_BxL * w),
           "correct": jnp.sum(correct_BxL * w), "weight_sum": jnp.sum(w)}
    if config.loss_normalizing_factor == "AVERAGE_PER_SEQUENCE":
      objective_sum = jnp.sum((ce_BxL + z_BxL) * per_sequence_weights(batch))
    else:
      objective_sum = aux["loss_sum"]
    return objective_sum / normalizer, aux

  return loss_fn
