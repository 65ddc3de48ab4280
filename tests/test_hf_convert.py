"""Hugging Face T5 v1.1 parity: a tiny random transformers T5 gives our logits (fp32, 1e-4)."""

import json

import jax
import numpy as np
import pytest

from t2t_jax.errors import UserInputError
from t2t_jax.models import hf_convert, t5

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _hf_model(tmp_path, vocab=96):
  torch.manual_seed(0)
  cfg = transformers.T5Config(
      vocab_size=vocab, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=3,
      num_heads=4, feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
      relative_attention_num_buckets=32, relative_attention_max_distance=128,
      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
  model = transformers.T5ForConditionalGeneration(cfg).eval()
  # transformers 5 ties lm_head to the embedding by default; T5 v1.1 checkpoints have their own.
  model.lm_head.weight = torch.nn.Parameter(0.2 * torch.randn(vocab, 32))
  with torch.no_grad():  # norms and relpos tables away from their init values
    for name, p in model.named_parameters():
      if "layer_norm" in name or "relative_attention_bias" in name:
        p.add_(0.3 * torch.randn_like(p))
  path = tmp_path / "hf"
  model.save_pretrained(path, safe_serialization=True)
  return model, str(path)


def _inputs(vocab):
  rng = np.random.default_rng(0)
  enc = rng.integers(2, vocab, size=(2, 9)).astype(np.int32)
  enc[1, 6:] = 0  # padding
  dec = rng.integers(2, vocab, size=(2, 5)).astype(np.int32)
  dec[:, 0] = 0
  return enc, dec


def _hf_logits(model, enc, dec):
  with torch.no_grad():
    out = model(input_ids=torch.tensor(enc, dtype=torch.long),
                attention_mask=torch.tensor(enc > 0, dtype=torch.long),
                decoder_input_ids=torch.tensor(dec, dtype=torch.long))
  return out.logits.numpy()


def test_logits_match_transformers(tmp_path):
  model, path = _hf_model(tmp_path)
  config = hf_convert.config_from_hf(hf_convert.read_hf_config(path), dropout_rate=0.0)
  assert (config.emb_dim, config.num_encoder_layers, config.num_decoder_layers) == (32, 2, 3)
  params = hf_convert.load_hf_t5(path, config)
  enc, dec = _inputs(config.vocab_size)
  ours = t5.Transformer(config).apply({"params": params}, enc, dec, enable_dropout=False)
  theirs = _hf_logits(model, enc, dec)
  assert np.abs(theirs).max() > 0.1  # not a trivially small comparison
  np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4, rtol=1e-4)


def test_vocab_extension_keeps_old_logits_and_round_trips(tmp_path):
  model, path = _hf_model(tmp_path)
  config = hf_convert.config_from_hf(hf_convert.read_hf_config(path), dropout_rate=0.0,
                                     vocab_size=128)
  params = hf_convert.load_hf_t5(path, config)
  emb = params["token_embedder"]["embedding"]
  assert emb.shape == (128, 32) and params["decoder"]["logits_dense"]["kernel"].shape == (32, 128)
  assert abs(emb[96:].std() - emb[:96].std()) < 0.5 * emb[:96].std()
  enc, dec = _inputs(96)
  ours = np.asarray(t5.Transformer(config).apply({"params": params}, enc, dec,
                                                 enable_dropout=False))
  np.testing.assert_allclose(ours[..., :96], _hf_logits(model, enc, dec), atol=1e-4, rtol=1e-4)

  out = tmp_path / "exported"
  hf_convert.export_hf_t5(params, config, str(out))
  again = hf_convert.load_hf_t5(str(out), config)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(again)):
    np.testing.assert_array_equal(a, b)
  # transformers loads the export and computes the same logits, ID tokens included.
  reloaded = transformers.T5ForConditionalGeneration.from_pretrained(str(out)).eval()
  np.testing.assert_allclose(_hf_logits(reloaded, enc, dec), ours, atol=1e-4, rtol=1e-4)


def test_export_round_trip_is_exact_on_the_original_tensors(tmp_path):
  model, path = _hf_model(tmp_path)
  config = hf_convert.config_from_hf(hf_convert.read_hf_config(path))
  params = hf_convert.load_hf_t5(path, config)
  out = tmp_path / "rt"
  hf_convert.export_hf_t5(params, config, str(out))
  original = hf_convert.read_safetensors(path)
  exported = hf_convert.read_safetensors(str(out))
  for k, v in exported.items():
    np.testing.assert_array_equal(v, original[k], err_msg=k)
  assert json.loads((out / "config.json").read_text())["d_ff"] == 48


def test_user_errors_name_the_problem(tmp_path):
  with pytest.raises(UserInputError, match="no config.json"):
    hf_convert.load_hf_t5(str(tmp_path))
  (tmp_path / "config.json").write_text(json.dumps({"feed_forward_proj": "relu",
                                                    "tie_word_embeddings": True}))
  with pytest.raises(UserInputError, match="feed_forward_proj='relu'"):
    hf_convert.load_hf_t5(str(tmp_path))
  (tmp_path / "config.json").write_text(json.dumps({"feed_forward_proj": "gated-gelu"}))
  with pytest.raises(UserInputError, match="T5 v1.0"):
    hf_convert.load_hf_t5(str(tmp_path))
  _, path = _hf_model(tmp_path)
  with pytest.raises(UserInputError, match="checkpoint has emb_dim=32, the model config 64"):
    hf_convert.load_hf_t5(path, t5.T5Config.micro(emb_dim=64))
  with pytest.raises(UserInputError, match="smaller than the checkpoint's 96"):
    hf_convert.load_hf_t5(path, hf_convert.config_from_hf(hf_convert.read_hf_config(path),
                                                          vocab_size=64))


def test_warm_start_path_of_the_train_entry(tmp_path):
  from t2t_jax import train as train_script
  _, path = _hf_model(tmp_path)
  config = hf_convert.config_from_hf(hf_convert.read_hf_config(path), vocab_size=128)
  params = train_script.load_initial_params(path, config)
  direct = hf_convert.load_hf_t5(path, config)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(direct)):
    np.testing.assert_array_equal(a, b)
  # The tree matches the model's own parameter tree exactly (names, shapes).
  expect = jax.eval_shape(lambda: t5.init_params(config, jax.random.PRNGKey(0)))
  import flax.linen as nn
  assert jax.tree.structure(nn.unbox(expect)) == jax.tree.structure(params)
  for e, p in zip(jax.tree.leaves(nn.unbox(expect)), jax.tree.leaves(params)):
    assert e.shape == p.shape
  with pytest.raises(UserInputError, match="INITIAL_CHECKPOINT_PATH '/nope' does not exist"):
    train_script.load_initial_params("/nope", config)
