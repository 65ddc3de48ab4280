"""Tests for the model interface (t2t_jax.models.base) on the T5.1.1 family."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2t_jax import models
from t2t_jax.errors import UserInputError
from t2t_jax.models import base, t5


@pytest.fixture(scope="module")
def tiny():
  config = t5.T5Config.micro(vocab_size=48)
  model = models.build_model(config)
  params = nn.unbox(jax.jit(lambda k: model.init_params(k, input_length=6, target_length=4))(
      jax.random.PRNGKey(1)))
  rng = np.random.default_rng(0)
  prompts = jnp.asarray(rng.integers(3, 48, (3, 6)), jnp.int32).at[1, 4:].set(0)
  targets = jnp.asarray(rng.integers(3, 48, (3, 4)), jnp.int32)
  return model, params, prompts, targets


def test_config_json_round_trip_and_family():
  config = t5.T5Config.micro(vocab_size=77, dropout_rate=0.25)
  fields = json.loads(json.dumps(config.to_json()))
  assert fields["family"] == "t5_1_1"
  assert models.config_from_json(fields) == config
  # Model dirs written before families existed carry no "family": T5.1.1.
  del fields["family"]
  assert models.config_from_json(fields) == config
  with pytest.raises(UserInputError, match="unknown model family 'gpt'"):
    models.config_from_json({"family": "gpt"})
  with pytest.raises(UserInputError, match="unknown T5Config fields \\['colour'\\]"):
    models.config_from_json({"family": "t5_1_1", "colour": 3})


def test_build_model_builds_anew_and_accepts_models_and_modules():
  config = t5.T5Config.micro(vocab_size=48)
  model = models.build_model(config)
  assert isinstance(model, base.EncoderDecoderModel) and model.config == config
  again = models.build_model(config)
  assert again is not model and again.config == config  # no global cache: a run builds it once
  assert models.build_model(model) is model
  from_module = models.build_model(t5.Transformer(config))
  assert isinstance(from_module, t5.T5Model) and from_module.config == config


def test_incremental_decoding_equals_teacher_forcing(tiny):
  """decode_step over a prefix reproduces the teacher-forced logits, with beams sharing the
  per-prompt cross-attention keys/values."""
  model, params, prompts, targets = tiny
  beams = 2
  dec_in = jnp.concatenate([jnp.zeros((3, 1), jnp.int32), targets[:, :-1]], axis=1)
  ref = model.logits(params, {"encoder_input_tokens": prompts, "decoder_input_tokens": dec_in,
                              "decoder_target_tokens": targets})
  state = model.init_decode_state(params, prompts, beam_size=beams, max_decode_len=4)
  # Cross-attention keys/values are per prompt (batch 3), the self-attention cache per beam (6).
  leaves = jax.tree.leaves(state.context["cross_cache"])
  assert leaves and all(x.shape[0] == 3 for x in leaves)
  assert all(x.shape[0] == 6 for x in jax.tree.leaves(state.cache) if x.ndim)
  cache = state.cache
  for step in range(4):
    tok = jnp.repeat(dec_in[:, step:step + 1], beams, axis=0)
    logits, cache = model.decode_step(params, tok, cache, state.context)
    np.testing.assert_allclose(np.asarray(logits).reshape(3, beams, -1),
                               np.repeat(np.asarray(ref[:, step])[:, None], beams, axis=1),
                               rtol=2e-5, atol=2e-5)


def test_score_sequences_matches_logits(tiny):
  model, params, prompts, targets = tiny
  seqs = jnp.stack([targets, jnp.flip(targets, axis=1)], axis=1)  # [3, 2, 4]
  scores = np.asarray(model.score_sequences(params, prompts, seqs))
  dec_in = jnp.concatenate([jnp.zeros((3, 1), jnp.int32), targets[:, :-1]], axis=1)
  logp = jax.nn.log_softmax(model.logits(params, {"encoder_input_tokens": prompts,
                                                  "decoder_input_tokens": dec_in,
                                                  "decoder_target_tokens": targets}))
  want = np.take_along_axis(np.asarray(logp), np.asarray(targets)[..., None], -1)[..., 0].sum(1)
  np.testing.assert_allclose(scores[:, 0], want, rtol=1e-5, atol=1e-5)


def test_logits_from_cached_encoder_outputs_equal(tiny):
  model, params, prompts, targets = tiny
  dec_in = jnp.concatenate([jnp.zeros((3, 1), jnp.int32), targets[:, :-1]], axis=1)
  batch = {"encoder_input_tokens": prompts, "decoder_input_tokens": dec_in,
           "decoder_target_tokens": targets}
  cached = dict(batch, encoder_outputs=model.encode(params, prompts))
  np.testing.assert_allclose(np.asarray(model.logits(params, cached)),
                             np.asarray(model.logits(params, batch)), rtol=1e-6, atol=1e-6)


def test_frozen_encoder_cache_refuses_trainable_encoder(tiny):
  model, params, _, _ = tiny
  with pytest.raises(ValueError, match="does not freeze its encoder"):
    base.FrozenEncoderCache(model, params)


def test_multi_target_batches_equal_repeated_prompts(tiny):
  """T decoder rows per prompt (batch-major) attend to their prompt's encoder output, exactly as if
  the prompt were repeated T times: the encoder runs once per prompt."""
  model, params, prompts, targets = tiny
  t = 2
  dec_tgt = jnp.concatenate([targets, jnp.flip(targets, axis=1)], axis=0)
  dec_tgt = dec_tgt.reshape(2, 3, 4).transpose(1, 0, 2).reshape(6, 4)  # prompt-major
  dec_in = jnp.concatenate([jnp.zeros((6, 1), jnp.int32), dec_tgt[:, :-1]], axis=1)
  grouped = model.logits(params, {"encoder_input_tokens": prompts, "decoder_input_tokens": dec_in,
                                  "decoder_target_tokens": dec_tgt})
  repeated = model.logits(params, {"encoder_input_tokens": jnp.repeat(prompts, t, axis=0),
                                   "decoder_input_tokens": dec_in,
                                   "decoder_target_tokens": dec_tgt})
  np.testing.assert_allclose(np.asarray(grouped), np.asarray(repeated), rtol=1e-5, atol=1e-5)
