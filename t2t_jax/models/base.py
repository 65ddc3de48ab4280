"""The model interface every part of t2t_jax talks to (T5X `BaseTransformerModel` pattern).

The trainer, checkpoints, evaluation, decoding, recommend, export and serve never name a model
family: they hold an `EncoderDecoderModel` (made by `t2t_jax.models.build_model(config)`) and call

  init_params(rng)                       boxed (logically partitioned) parameters
  abstract_params()                      their shapes, without materialising anything
  logits(params, batch, ...)             teacher-forced float32 [B, L, V] for a training batch
  score_sequences(params, inputs, seqs)  sum of log-probs of candidate sequences (re-ranking, tests)
  encode(params, inputs)                 encoder output
  init_decode_state(params, inputs, beam_size=, max_decode_len=)
                                         -> DecodeState(cache, context): the self-attention cache
                                         for B * beam rows (gathered by beam search) and the
                                         per-prompt context (encoder output, cross-attention
                                         keys/values computed ONCE per prompt, not per beam/step)
  decode_step(params, tokens_Mx1, cache, context) -> (logits_MxV, cache)
  trainable_mask(params)                 which parameters the optimizer updates (None: all)
  learning_rate_scales(params)           per-parameter learning-rate multipliers (None: all 1)

A family is a config dataclass (`ModelConfig`: JSON round trip with a "family" key) plus a subclass
of `EncoderDecoderModel` naming its `config_class` and `module_class`: a flax.linen module that
satisfies `FamilyModule` (`encode`, `decode`, `__call__`; `EncoderDecoderModule` implements `decode`
and `__call__` over the module's `decoder` stack, so a family writes `setup` and `encode`).  The
module's decode path follows one convention, so this base class implements decoding for every
family:
  decode(encoded, encoder_tokens, decoder_tokens, decoder_target_tokens=None, enable_dropout=...,
         decode=False, ...)
  with decode=True the self-attention key/value cache lives in the mutable 'cache' collection
  (leading dim B * beam, scalar `cache_index` leaves) and the cross-attention keys/values in the
  'cross_cache' collection (leading dim B: beams of one prompt share them; the module folds the
  beam axis into the query axis).  A decode call without 'cross_cache' computes and stores them.

Batches may carry `encoder_outputs` (float [B, S, E]) instead of running the encoder: models with
a frozen encoder train from cached encoder outputs (`FrozenEncoderCache`).
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from typing import Any, Callable, ClassVar, NamedTuple, Protocol, runtime_checkable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t2t_jax.errors import UserInputError

ENCODER_OUTPUTS = "encoder_outputs"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Base of every family's config: a frozen dataclass of JSON-friendly fields."""
  family: ClassVar[str] = ""

  def replace(self, **kwargs) -> "ModelConfig":
    return dataclasses.replace(self, **kwargs)

  def to_json(self) -> dict:
    return {"family": self.family, **dataclasses.asdict(self)}

  @classmethod
  def from_json(cls, fields: dict, *, source: str = "model config") -> "ModelConfig":
    return dataclass_from_json(cls, {k: v for k, v in fields.items() if k != "family"}, source=source)

  def num_params(self) -> int:
    raise NotImplementedError

  @property
  def output_vocab_size(self) -> int:
    """Decoder vocabulary size (ID tokens, + text pieces for text IDs)."""
    return int(getattr(self, "vocab_size"))

  @property
  def input_vocab_size(self) -> int:
    """Encoder vocabulary size (the same as the decoder's when the embedding is shared)."""
    return int(getattr(self, "vocab_size"))


def dataclass_from_json(cls, fields: dict, *, source: str = "model config"):
  """`cls(**fields)` for a config dataclass, its JSON values checked against the fields' defaults'
  types (no bool for an int, no 0 for a positive int but those in the class's
  `zero_allowed_fields`); UserInputError naming `source` otherwise."""
  known = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(fields) - set(known))
  if unknown:
    raise UserInputError(f"{source}: unknown {cls.__name__} fields {unknown}")
  for name, value in fields.items():  # JSON types must match the fields' (no bool for int, ...)
    default = known[name].default
    want = type(default) if default is not None and default is not dataclasses.MISSING else None
    if want is None:
      continue
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) if want is float else
          isinstance(value, want) and (want is bool or not isinstance(value, bool)))
    # A positive default means a positive field, unless the class lists it in zero_allowed_fields.
    floor = -1 if name in getattr(cls, "zero_allowed_fields", ()) else 0
    if not ok or (want is int and value <= floor and default > 0):
      raise UserInputError(f"{source}: {cls.__name__} field {name}={value!r} is not a valid "
                           f"{want.__name__}")
  try:
    return cls(**fields)
  except (TypeError, ValueError, AssertionError) as e:
    raise UserInputError(f"{source}: bad {cls.__name__} ({e})") from None


class DecodeState(NamedTuple):
  """What beam search carries: `cache` (gathered by beam) and `context` (fixed per prompt)."""
  cache: Any
  context: Any


@runtime_checkable
class FamilyModule(Protocol):
  """The flax module of a model family (`EncoderDecoderModel.module`): the decode convention of the
  module docstring.  Logits are float32 [B, L, V] whatever the compute dtype."""

  def encode(self, encoder_input_tokens, enable_dropout=True, encoder_segment_ids=None):
    """Encoder output [B, S, E] of tokens [B, S] (0 = padding)."""

  def decode(self, encoded, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens=None,
             enable_dropout=True, decode=False, max_decode_length=None, encoder_segment_ids=None,
             decoder_segment_ids=None):
    """Decoder logits [B, L, V] (decode=True: one step of [M, 1] tokens, the caches mutable)."""

  def __call__(self, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens=None,
               enable_dropout=True, decode=False, encoder_segment_ids=None, decoder_segment_ids=None):
    """`decode(encode(...), ...)`: what `init` traces."""


class EncoderDecoderModule(nn.Module):
  """`FamilyModule`'s `decode` and `__call__` for a family whose `setup` makes a `decoder` stack
  (`t2t_jax.models.t5.Decoder`); the family module defines `setup` and `encode`."""

  def encode(self, encoder_input_tokens, enable_dropout=True, encoder_segment_ids=None):
    raise NotImplementedError

  def decode(self, encoded, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens=None,
             enable_dropout=True, decode=False, max_decode_length=None, encoder_segment_ids=None,
             decoder_segment_ids=None):
    """Returns `logits_BxLxV` (float32).

    decode=True: `decoder_input_tokens` is [M, 1], M = B * beams; the self-attention cache
    (mutable 'cache') fixes the maximum decode length and the cross-attention keys/values come from
    'cross_cache' (see `EncoderDecoderModel.init_decode_state`); `max_decode_length` is accepted for
    API compatibility only.
    """
    del max_decode_length  # with decode=True the cache shapes fix the length.
    return self.decoder(encoded, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens,
                        encoder_segment_ids, decoder_segment_ids, enable_dropout, decode)

  def __call__(self, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens=None,
               enable_dropout=True, decode=False, encoder_segment_ids=None,
               decoder_segment_ids=None):
    encoded = self.encode(encoder_input_tokens, enable_dropout, encoder_segment_ids)
    return self.decode(encoded, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens,
                       enable_dropout, decode, encoder_segment_ids=encoder_segment_ids,
                       decoder_segment_ids=decoder_segment_ids)


class EncoderDecoderModel(abc.ABC):
  """A family's model: a config and its flax module, seen through the interface above.

  A family sets `config_class` (its `ModelConfig`) and `module_class` (its `FamilyModule`, called
  with the config).
  """
  config_class: ClassVar[type]
  module_class: ClassVar[Callable[[Any], FamilyModule]]

  def __init__(self, config: ModelConfig):
    self.config = config
    self.module = self.make_module(config)

  # ---- family hooks -----------------------------------------------------------------------------

  def make_module(self, config: ModelConfig) -> FamilyModule:
    """The flax module `module_class(config)` (`FamilyModule`); TypeError for another family's config."""
    if not isinstance(config, self.config_class):
      raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, "
                      f"got {type(config).__name__}")
    return self.module_class(config)

  @property
  def frozen_encoder(self) -> bool:
    """True when the encoder's parameters are not trained (its outputs may be cached)."""
    return False

  def trainable_mask(self, params) -> Any | None:
    """Pytree of bools like `params` (True = trained), or None when every parameter trains."""
    del params
    return None

  def learning_rate_scales(self, params) -> Any | None:
    """Pytree of floats like `params` (each parameter's learning-rate multiplier), or None: all 1."""
    del params
    return None

  def init_from_pretrained(self, path: str, *, seed: int = 0) -> dict | None:
    """Unboxed warm-start parameters from the family's pretrained format in the directory `path`
    (INITIAL_CHECKPOINT_PATH; parameters the source lacks start fresh, drawn with `seed`), or None
    when `path` holds none: the caller then reads it as a t2t_jax MODEL_DIR
    (`t2t_jax.train.load_initial_params`)."""
    del path, seed
    return None

  # ---- parameters -------------------------------------------------------------------------------

  def init_params(self, rng, *, batch_size: int = 1, input_length: int = 8, target_length: int = 8):
    """Boxed (nn.Partitioned) parameters; unbox with `nn.unbox`."""
    enc = jnp.ones((batch_size, input_length), jnp.int32)
    dec = jnp.ones((batch_size, target_length), jnp.int32)
    return self.module.init(rng, enc, dec, enable_dropout=False)["params"]

  def abstract_params(self):
    """Boxed ShapeDtypeStructs of the parameters (nothing materialised)."""
    return jax.eval_shape(lambda: self.init_params(jax.random.PRNGKey(0)))

  # ---- training / scoring -----------------------------------------------------------------------

  def encode(self, params, encoder_input_tokens_BxS, *, enable_dropout: bool = False,
             encoder_segment_ids=None, dropout_rng=None):
    """Encoder output [B, S, E] (compute dtype)."""
    return self.module.apply({"params": nn.unbox(params)}, encoder_input_tokens_BxS, enable_dropout,
                             encoder_segment_ids, method=self.module.encode,
                             rngs={"dropout": dropout_rng} if dropout_rng is not None else None)

  def logits(self, params, batch: dict, *, dropout_rng=None, enable_dropout: bool = False):
    """Teacher-forced logits float32 [B, L, V] of a training batch (CONTRACTS.md keys).

    Uses `batch['encoder_outputs']` instead of the encoder when present (frozen encoders).
    """
    params = nn.unbox(params)
    rngs = {"dropout": dropout_rng} if (enable_dropout and dropout_rng is not None) else None
    enc_seg = batch.get("encoder_segment_ids")
    encoded = batch.get(ENCODER_OUTPUTS)
    if encoded is None:
      encoded = self.module.apply({"params": params}, batch["encoder_input_tokens"], enable_dropout,
                                  enc_seg, method=self.module.encode, rngs=rngs)
    elif self.frozen_encoder:
      encoded = jax.lax.stop_gradient(encoded)
    return self.module.apply(
        {"params": params}, encoded, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
        batch.get("decoder_target_tokens"), enable_dropout=enable_dropout,
        encoder_segment_ids=enc_seg, decoder_segment_ids=batch.get("decoder_segment_ids"),
        method=self.module.decode, rngs=rngs).astype(jnp.float32)

  def score_sequences(self, params, encoder_input_tokens_BxS, token_seqs_BxRxL, *,
                      decoder_start_id: int = 0):
    """Teacher-forced sum of log-probs of R candidate sequences per prompt: float32 [B, R].

    Sequences are 0-padded; padding contributes nothing.  The encoder runs once per prompt.
    """
    b, r, length = token_seqs_BxRxL.shape
    targets_NxL = token_seqs_BxRxL.reshape(b * r, length).astype(jnp.int32)
    inputs_NxL = jnp.concatenate(
        [jnp.full((b * r, 1), decoder_start_id, jnp.int32), targets_NxL[:, :-1]], axis=1)
    encoded = self.encode(params, encoder_input_tokens_BxS)
    batch = {"encoder_input_tokens": jnp.repeat(encoder_input_tokens_BxS, r, axis=0),
             ENCODER_OUTPUTS: jnp.repeat(encoded, r, axis=0),
             "decoder_input_tokens": inputs_NxL, "decoder_target_tokens": targets_NxL}
    logp_NxLxV = jax.nn.log_softmax(self.logits(params, batch), axis=-1)
    lp_NxL = jnp.take_along_axis(logp_NxLxV, targets_NxL[..., None], axis=-1)[..., 0]
    return jnp.where(targets_NxL > 0, lp_NxL, 0.0).sum(axis=1).reshape(b, r)

  # ---- decoding ---------------------------------------------------------------------------------

  def init_decode_state(self, params, encoder_input_tokens_BxS, *, beam_size: int,
                        max_decode_len: int, encoded=None) -> DecodeState:
    """Encodes the prompts and prepares decoding of `beam_size` beams per prompt.

    The cross-attention keys/values are projected once per prompt ([B, ...], shared by its beams);
    the self-attention cache is zeros for B * beam_size rows and `max_decode_len` positions.
    """
    params = nn.unbox(params)
    b = encoder_input_tokens_BxS.shape[0]
    if encoded is None:
      encoded = self.encode(params, encoder_input_tokens_BxS)
    # One decoder call on a dummy token computes and stores the cross-attention keys/values.
    _, variables = self.module.apply(
        {"params": params}, encoded, encoder_input_tokens_BxS, jnp.zeros((b, 1), jnp.int32),
        enable_dropout=False, decode=True, mutable=["cache", "cross_cache"],
        method=self.module.decode)
    cache = self._zero_cache(b * beam_size, max_decode_len, encoder_input_tokens_BxS.shape[1])
    context = {"encoded": encoded, "encoder_tokens": encoder_input_tokens_BxS,
               "cross_cache": variables["cross_cache"]}
    return DecodeState(cache, context)

  def _zero_cache(self, rows: int, max_decode_len: int, encoder_length: int):
    shapes = _cache_shapes(self, rows, max_decode_len, encoder_length)
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

  def decode_step(self, params, tokens_Mx1, cache, context):
    """One autoregressive step for M = B * beam rows: (logits float32 [M, V], new cache)."""
    logits_Mx1xV, mutated = self.module.apply(
        {"params": nn.unbox(params), "cache": cache, "cross_cache": context["cross_cache"]},
        context["encoded"], context["encoder_tokens"], tokens_Mx1, enable_dropout=False,
        decode=True, mutable=["cache"], method=self.module.decode)
    return logits_Mx1xV[:, 0, :].astype(jnp.float32), mutated["cache"]

  def __repr__(self) -> str:
    return f"{type(self).__name__}({self.config})"


def _cache_shapes(model: EncoderDecoderModel, rows: int, max_decode_len: int, encoder_length: int):
  """ShapeDtypeStructs of the self-attention cache for `rows` rows (eval_shape, no compute)."""
  return _cache_shapes_cached(type(model), model.config, rows, max_decode_len, encoder_length)


@functools.lru_cache(maxsize=64)
def _cache_shapes_cached(cls, config, rows, max_decode_len, encoder_length):
  model = cls(config)
  enc = jnp.ones((rows, encoder_length), jnp.int32)
  dec = jnp.ones((rows, max_decode_len), jnp.int32)

  def init():
    variables = model.module.init(jax.random.PRNGKey(0), enc, dec, enable_dropout=False, decode=True)
    return variables["cache"]

  return jax.eval_shape(init)


class FrozenEncoderCache:
  """Adds `encoder_outputs` to training batches of a model whose encoder is frozen.

  The encoder runs once per distinct prompt (token row) and its output (up to the last non-pad
  token) is kept in host memory; later batches reuse it.  A prompt seen in every epoch of a small
  dataset (CPCD: 450 conversations, ~15 target tracks each) is encoded once instead of once per
  (prompt, track) example and step: on 2 CPU cores that is the difference between minutes and hours.
  Parameters are those the cache was built with: valid only while the encoder does not train.
  """

  def __init__(self, model: EncoderDecoderModel, params, *, batch_size: int = 64,
               dtype=np.float32, max_entries: int = 1_000_000):
    if not model.frozen_encoder:
      raise ValueError(f"{model} does not freeze its encoder; its outputs cannot be cached")
    self.model = model
    self.params = jax.device_get(nn.unbox(params))
    self.batch_size = batch_size
    self.dtype = dtype
    self.max_entries = max_entries
    self._store: dict[bytes, np.ndarray] = {}
    self._encode = jax.jit(lambda p, t: model.encode(p, t))
    self.hits = 0
    self.misses = 0

  def _fill(self, rows_NxS: np.ndarray) -> None:
    """Encodes rows in chunks of similar length, each cut to a power of two >= its longest row
    (padding positions change nothing for the rows' real tokens), so short texts cost little."""
    lengths_N = (rows_NxS > 0).shape[1] - np.argmax((rows_NxS > 0)[:, ::-1], axis=1)
    lengths_N = np.where((rows_NxS > 0).any(axis=1), lengths_N, 0)
    order = np.argsort(lengths_N, kind="stable")
    for start in range(0, len(order), self.batch_size):
      idx = order[start:start + self.batch_size]
      width = min(rows_NxS.shape[1], max(8, 1 << int(max(lengths_N[idx].max(), 1) - 1).bit_length()))
      chunk = rows_NxS[idx, :width]
      real = len(chunk)
      # Few compiled shapes: rows padded to a power of two (a training step usually brings a few new
      # prompts; padding them to the full batch_size cost up to 8x the encoder work on CPCD).
      rows = min(self.batch_size, 1 << max(real - 1, 0).bit_length())
      if real < rows:
        chunk = np.concatenate([chunk, np.zeros((rows - real, width), chunk.dtype)])
      out = np.asarray(jax.device_get(self._encode(self.params, chunk)), self.dtype)
      for r, i in enumerate(idx):
        if len(self._store) < self.max_entries:
          self._store[rows_NxS[i].tobytes()] = out[r, :lengths_N[i]].copy()

  def __call__(self, batch: dict) -> dict:
    tokens_BxS = np.asarray(batch["encoder_input_tokens"])
    keys = [row.tobytes() for row in tokens_BxS]
    uniq = {k: i for i, k in enumerate(keys) if k not in self._store}  # distinct new prompts
    self.misses += len(uniq)  # prompts encoded
    self.hits += len(keys) - len(uniq)  # rows served without encoding
    if uniq:
      self._fill(tokens_BxS[list(uniq.values())])
    b, s = tokens_BxS.shape
    first = self._store.get(keys[0])
    width = first.shape[-1] if first is not None else None
    out = None
    for i, k in enumerate(keys):
      enc = self._store.get(k)
      if enc is None:  # cache full: encode this row alone
        enc = np.asarray(jax.device_get(self._encode(self.params, tokens_BxS[i:i + 1])), self.dtype)[0]
      if out is None:
        width = enc.shape[-1]
        out = np.zeros((b, s, width), self.dtype)
      out[i, :enc.shape[0]] = enc
    return {**batch, ENCODER_OUTPUTS: out}

  def wrap(self, batches):
    """Maps `self` over an iterator of batches (keeps get_state/set_state when present)."""
    return _MappedIterator(batches, self)


class _MappedIterator:
  def __init__(self, it, fn):
    self._it = iter(it)
    self._fn = fn
    if hasattr(it, "get_state"):
      self.get_state = it.get_state
      self.set_state = it.set_state

  def __iter__(self):
    return self

  def __next__(self):
    return self._fn(next(self._it))
