"""BERT-family encoder in flax.linen, loadable from Hugging Face / sentence-transformers weights.

The module reproduces `transformers.BertModel`'s encoder (post-LayerNorm blocks, learned absolute
positions, token-type embeddings, exact-erf GELU) with T5X-style logical axis names on every
parameter, so it shards with the same rules table as T5.  `SentenceEncoder` adds
sentence-transformers' mean pooling and L2 normalisation (all-MiniLM-L6-v2's modules.json), so
`SentenceEncoder.load(pretrained.minilm_dir()).encode(texts)` equals
`SentenceTransformer(dir).encode(texts)` (tested to 1e-4 on real text).

`BertConfig(model_type="mpnet")` is `transformers.MPNetModel`'s encoder instead (all-mpnet-base-v2,
`pretrained.mpnet_dir()`): the same blocks, no token-type embeddings, positions counted from
padding_idx + 1 = 2 over the non-pad tokens, and a T5-style bucketed relative position bias
(bidirectional, 32 buckets, max_distance 128; `t5.RelativePositionBiases`) computed once and added
to every layer's attention logits.  MPNet's <pad> is id 1 and <s> id 0; the framework's inputs are
0-padded, so `WordPieceVocab` swaps the two ids and `hf_to_params` the two word-embedding rows
(`BertConfig.pad_token_id` = the checkpoint's pad id).

Parameters (HF name -> ours; HF Linear weights are [out, in], our kernels [in, out]):
  embeddings.word_embeddings.weight          word_embeddings/embedding         [V, H]
  embeddings.position_embeddings.weight      position_embeddings/embedding     [P, H]
  embeddings.token_type_embeddings.weight    token_type_embeddings/embedding   [T, H]
  embeddings.LayerNorm.{weight,bias}         embeddings_layer_norm/{scale,bias}
  encoder.relative_attention_bias.weight     relative_attention_bias/rel_embedding [heads, 32] (mpnet)
  encoder.layer.i.attention.self.{query,key,value}   layers_i/attention/{query,key,value}
  encoder.layer.i.attention.output.dense     layers_i/attention/out
  encoder.layer.i.attention.output.LayerNorm layers_i/attention_layer_norm
  encoder.layer.i.intermediate.dense         layers_i/mlp/wi
  encoder.layer.i.output.dense               layers_i/mlp/wo
  encoder.layer.i.output.LayerNorm           layers_i/output_layer_norm
MPNet names its attention encoder.layer.i.attention.attn.{q,k,v,o} and attention.LayerNorm (the rest
as BERT's) and has no token-type embeddings.
Tokenisation is the model's own WordPiece tokenizer (`tokenizer.json`, through the `tokenizers`
library): `t2t_jax.data.wordpiece.WordPieceVocab`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t2t_jax.data import wordpiece
from t2t_jax.errors import UserInputError
from t2t_jax.models import t5

DType = Any


MODEL_TYPES = ("bert", "mpnet")
# MPNet's fixed relative-position bucketing (transformers' MPNetEncoder.relative_position_bucket).
MPNET_NUM_BUCKETS = 32
MPNET_MAX_DISTANCE = 128


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """`transformers.BertConfig` fields that shape the encoder (defaults: all-MiniLM-L6-v2).

  model_type "mpnet": MPNet's encoder (type_vocab_size 0, relative_attention_num_buckets 32).
  pad_token_id: the checkpoint's pad id (MPNet: 1); our inputs pad with 0 (see the module doc)."""
  vocab_size: int = 30522
  hidden_size: int = 384
  num_layers: int = 6
  num_heads: int = 12
  intermediate_size: int = 1536
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  dropout_rate: float = 0.1
  dtype: str = "float32"
  param_dtype: str = "float32"
  model_type: str = "bert"
  relative_attention_num_buckets: int = 0
  pad_token_id: int = 0
  # Fields whose JSON value may be 0 although their default is positive (base.dataclass_from_json).
  zero_allowed_fields = ("type_vocab_size",)

  def __post_init__(self):
    if self.model_type not in MODEL_TYPES:
      raise ValueError(f"model_type {self.model_type!r} is not one of {MODEL_TYPES}")
    if self.model_type == "mpnet" and (self.type_vocab_size, self.relative_attention_num_buckets) != (
        0, MPNET_NUM_BUCKETS):
      raise ValueError(f"an mpnet encoder has type_vocab_size 0 and {MPNET_NUM_BUCKETS} relative "
                       f"attention buckets, got {self.type_vocab_size}, "
                       f"{self.relative_attention_num_buckets}")
    if self.model_type == "bert" and self.relative_attention_num_buckets:
      raise ValueError("a bert encoder has no relative attention buckets")

  @property
  def position_offset(self) -> int:
    """The position id of the first token (MPNet: padding_idx + 1 = 2)."""
    return 2 if self.model_type == "mpnet" else 0

  @property
  def max_length(self) -> int:
    """The longest input (tokens, [CLS]/[SEP] included) the position table covers."""
    return self.max_position_embeddings - self.position_offset

  @classmethod
  def from_hf(cls, path: str, **overrides) -> "BertConfig":
    """Reads `config.json` of a Hugging Face BERT directory."""
    cfg_path = os.path.join(path, "config.json")
    try:
      with open(cfg_path, encoding="utf-8") as f:
        hf = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise UserInputError(f"{cfg_path}: not a readable Hugging Face config ({e})") from None
    model_type = hf.get("model_type") or "bert"
    if model_type not in MODEL_TYPES:
      raise UserInputError(f"{cfg_path}: model_type {model_type!r} is not a BERT or MPNet encoder")
    if model_type == "mpnet" and hf.get("relative_attention_num_buckets",
                                        MPNET_NUM_BUCKETS) != MPNET_NUM_BUCKETS:
      raise UserInputError(f"{cfg_path}: only {MPNET_NUM_BUCKETS} relative attention buckets are "
                           "supported (transformers' MPNet always buckets into 32)")
    if hf.get("hidden_act", "gelu") != "gelu" or hf.get("position_embedding_type",
                                                          "absolute") != "absolute":
      raise UserInputError(f"{cfg_path}: only gelu / absolute-position BERT encoders are supported")
    fields = dict(vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
                  num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
                  intermediate_size=hf["intermediate_size"],
                  max_position_embeddings=hf["max_position_embeddings"],
                  type_vocab_size=hf.get("type_vocab_size", 2) if model_type == "bert" else 0,
                  layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
                  dropout_rate=hf.get("hidden_dropout_prob", 0.1), model_type=model_type,
                  relative_attention_num_buckets=MPNET_NUM_BUCKETS if model_type == "mpnet" else 0,
                  pad_token_id=hf.get("pad_token_id") or 0)
    fields.update(overrides)
    return cls(**fields)


class LayerNorm(nn.Module):
  """BERT LayerNorm (mean and variance, scale and bias), statistics in float32."""
  epsilon: float
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  @nn.compact
  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon)
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                       (x.shape[-1],), self.param_dtype)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                      (x.shape[-1],), self.param_dtype)
    return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(self.dtype)


class DenseBias(nn.Module):
  """Dense layer with bias; `[in, out]` kernel named by logical axes."""
  features: int
  kernel_axes: tuple[str, str]
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.with_logical_partitioning(
        nn.initializers.normal(stddev=0.02), self.kernel_axes), (x.shape[-1], self.features),
        self.param_dtype)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                                           (self.kernel_axes[1],)),
                      (self.features,), self.param_dtype)
    y = jnp.einsum("...i,io->...o", x.astype(self.dtype), kernel.astype(self.dtype))
    return y + bias.astype(self.dtype)


class BertLayer(nn.Module):
  """Post-LayerNorm block: x = LN(x + attn(x)); x = LN(x + mlp(x))."""
  config: BertConfig

  @nn.compact
  def __call__(self, x_BxSxH, mask_Bx1x1xS, enable_dropout: bool = False, bias_1xHxSxS=None):
    cfg = self.config
    dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    drop = lambda y: nn.Dropout(cfg.dropout_rate)(y, deterministic=not enable_dropout)
    y = _SelfAttention(cfg, name="attention")(x_BxSxH, mask_Bx1x1xS, enable_dropout, bias_1xHxSxS)
    x_BxSxH = LayerNorm(cfg.layer_norm_eps, dt, pdt, name="attention_layer_norm")(x_BxSxH + drop(y))
    y = _Mlp(cfg, name="mlp")(x_BxSxH)
    x_BxSxH = LayerNorm(cfg.layer_norm_eps, dt, pdt, name="output_layer_norm")(x_BxSxH + drop(y))
    return nn.with_logical_constraint(x_BxSxH, ("batch", "length", "embed"))


class _SelfAttention(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x_BxSxH, mask_Bx1x1xS, enable_dropout: bool = False, bias_1xHxSxS=None):
    cfg = self.config
    dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    h = cfg.num_heads
    d = cfg.hidden_size // h
    b, s, _ = x_BxSxH.shape

    def proj(name):
      y = DenseBias(h * d, ("embed", "joined_kv"), dt, pdt, name=name)(x_BxSxH)
      return nn.with_logical_constraint(y.reshape(b, s, h, d), ("batch", "length", "heads", "kv"))

    q, k, v = proj("query"), proj("key"), proj("value")
    logits_BxHxSxS = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    logits_BxHxSxS = logits_BxHxSxS / np.sqrt(d).astype(np.float32)
    if bias_1xHxSxS is not None:
      logits_BxHxSxS = logits_BxHxSxS + bias_1xHxSxS.astype(jnp.float32)
    logits_BxHxSxS = jnp.where(mask_Bx1x1xS, logits_BxHxSxS, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits_BxHxSxS, axis=-1).astype(dt)
    weights = nn.Dropout(cfg.dropout_rate)(weights, deterministic=not enable_dropout)
    ctx_BxSxHxD = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
    return DenseBias(cfg.hidden_size, ("joined_kv", "embed"), dt, pdt, name="out")(
        ctx_BxSxHxD.reshape(b, s, h * d))


class _Mlp(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x_BxSxH):
    cfg = self.config
    dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    y = DenseBias(cfg.intermediate_size, ("embed", "mlp"), dt, pdt, name="wi")(x_BxSxH)
    y = nn.with_logical_constraint(nn.gelu(y, approximate=False), ("batch", "length", "mlp"))
    return DenseBias(cfg.hidden_size, ("mlp", "embed"), dt, pdt, name="wo")(y)


class BertEncoder(nn.Module):
  """Token ids [B, S] (0 = padding, [CLS]/[SEP] included) -> hidden states [B, S, H]."""
  config: BertConfig

  @nn.compact
  def __call__(self, tokens_BxS, enable_dropout: bool = False):
    cfg = self.config
    dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    s = tokens_BxS.shape[1]
    if s > cfg.max_length:
      raise ValueError(f"input length {s} exceeds the {cfg.max_length} positions of "
                       f"max_position_embeddings {cfg.max_position_embeddings}")
    init = nn.initializers.normal(stddev=0.02)

    def embed(name, num, axes):
      return nn.Embed(num, cfg.hidden_size, dtype=dt, param_dtype=pdt, name=name,
                      embedding_init=nn.with_logical_partitioning(init, axes))

    x = embed("word_embeddings", cfg.vocab_size, ("vocab", "embed"))(tokens_BxS.astype(jnp.int32))
    valid_BxS = tokens_BxS > 0
    if cfg.model_type == "mpnet":  # create_position_ids_from_input_ids: pads at padding_idx (1)
      valid = valid_BxS.astype(jnp.int32)
      positions = jnp.cumsum(valid, axis=1) * valid + (cfg.position_offset - 1)
    else:
      positions = jnp.arange(s)[None]
    x = x + embed("position_embeddings", cfg.max_position_embeddings,
                  ("relpos_buckets", "embed"))(positions)
    if cfg.type_vocab_size:
      x = x + embed("token_type_embeddings", cfg.type_vocab_size,
                    ("relpos_buckets", "embed"))(jnp.zeros((1, s), jnp.int32))
    x = LayerNorm(cfg.layer_norm_eps, dt, pdt, name="embeddings_layer_norm")(x)
    x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not enable_dropout)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    bias = None
    if cfg.relative_attention_num_buckets:  # MPNet: one bias from token distances, every layer
      bias = t5.RelativePositionBiases(cfg.num_heads, cfg.relative_attention_num_buckets,
                                       MPNET_MAX_DISTANCE, bidirectional=True, dtype=jnp.float32,
                                       param_dtype=pdt, name="relative_attention_bias")(
                                           jnp.arange(s), jnp.arange(s))
    mask = valid_BxS[:, None, None, :]
    for i in range(cfg.num_layers):
      x = BertLayer(cfg, name=f"layers_{i}")(x, mask, enable_dropout, bias)
    return x


def mean_pool(hidden_BxSxH, tokens_BxS, normalize: bool = True):
  """sentence-transformers' mean pooling over non-pad tokens, then L2 normalisation."""
  mask = (tokens_BxS > 0).astype(jnp.float32)[..., None]
  pooled = (hidden_BxSxH.astype(jnp.float32) * mask).sum(1) / jnp.maximum(mask.sum(1), 1e-9)
  if normalize:
    pooled = pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
  return pooled


# ----------------------------------------------------------------------------------- weights


def _hf_state_dict(path: str) -> dict[str, np.ndarray]:
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors")) if os.path.isdir(
      path) else []
  if not files:
    raise UserInputError(f"{path}: no *.safetensors weights (a sentence-transformers / Hugging Face "
                         "BERT directory is expected)")
  sd = {}
  for name in files:
    try:
      sd.update(load_file(os.path.join(path, name)))
    except Exception as e:  # pylint: disable=broad-except  (safetensors raises several types)
      raise UserInputError(f"{os.path.join(path, name)}: unreadable safetensors ({e})") from None
  # BertForX / MPNetForX checkpoints prefix everything with "bert." / "mpnet."; sentence-transformers'
  # BertModel / MPNetModel do not.
  for prefix in ("bert.", "mpnet."):
    sd = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}
  return sd


# Per-layer HF names (after "encoder.layer.i.") of each model type: ours -> theirs.
HF_LAYER_NAMES = {
    "bert": {"query": "attention.self.query", "key": "attention.self.key",
             "value": "attention.self.value", "out": "attention.output.dense",
             "attention_layer_norm": "attention.output.LayerNorm"},
    "mpnet": {"query": "attention.attn.q", "key": "attention.attn.k", "value": "attention.attn.v",
              "out": "attention.attn.o", "attention_layer_norm": "attention.LayerNorm"},
}


def hf_to_params(sd: dict[str, np.ndarray], config: BertConfig) -> dict:
  """HF BertModel / MPNetModel state dict -> `BertEncoder` params (unboxed numpy tree)."""

  def get(name):
    if name not in sd:
      raise UserInputError(f"{config.model_type} weights lack {name!r} (have e.g. {sorted(sd)[:3]})")
    return np.asarray(sd[name], np.float32)

  def dense(prefix):
    return {"kernel": get(prefix + ".weight").T, "bias": get(prefix + ".bias")}

  def norm(prefix):
    return {"scale": get(prefix + ".weight"), "bias": get(prefix + ".bias")}

  words = get("embeddings.word_embeddings.weight")
  if config.pad_token_id:  # our pad is id 0: swap it with the checkpoint's (wordpiece.WordPieceVocab)
    words = words.copy()
    words[[0, config.pad_token_id]] = words[[config.pad_token_id, 0]]
  params = {
      "word_embeddings": {"embedding": words},
      "position_embeddings": {"embedding": get("embeddings.position_embeddings.weight")},
      "embeddings_layer_norm": norm("embeddings.LayerNorm"),
  }
  if config.type_vocab_size:
    params["token_type_embeddings"] = {"embedding": get("embeddings.token_type_embeddings.weight")}
  if config.relative_attention_num_buckets:
    params["relative_attention_bias"] = {
        "rel_embedding": get("encoder.relative_attention_bias.weight").T}
  names = HF_LAYER_NAMES[config.model_type]
  for i in range(config.num_layers):
    p = f"encoder.layer.{i}."
    params[f"layers_{i}"] = {
        "attention": {k: dense(p + names[k]) for k in ("query", "key", "value", "out")},
        "attention_layer_norm": norm(p + names["attention_layer_norm"]),
        "mlp": {"wi": dense(p + "intermediate.dense"), "wo": dense(p + "output.dense")},
        "output_layer_norm": norm(p + "output.LayerNorm"),
    }
  want = jax.tree.map(lambda x: x.shape, nn.unbox(jax.eval_shape(
      lambda: BertEncoder(config).init(jax.random.PRNGKey(0), jnp.ones((1, 4), jnp.int32))))
                      ["params"])
  got = jax.tree.map(lambda x: x.shape, params)
  if want != got:
    raise UserInputError(f"{config.model_type} weights do not match the config {config} "
                         "(shapes differ)")
  return params


def load_hf_bert(path: str, config: BertConfig | None = None) -> tuple[BertConfig, dict]:
  """(config, params) of a Hugging Face / sentence-transformers BERT or MPNet directory."""
  if not os.path.isdir(path):
    raise UserInputError(f"{path}: no such directory (a BERT / MPNet / sentence-transformers "
                         "model dir)")
  config = config or BertConfig.from_hf(path)
  return config, hf_to_params(_hf_state_dict(path), config)


class SentenceEncoder:
  """Texts -> L2-normalised mean-pooled embeddings float32 [N, H] (sentence-transformers' output)."""

  def __init__(self, config: BertConfig, params, vocab, *, max_length: int = 256):
    self.config, self.params, self.vocab = config, params, vocab
    self.max_length = int(max_length)
    module = BertEncoder(config)
    self._fn = jax.jit(lambda p, t: mean_pool(module.apply({"params": p}, t), t))

  @classmethod
  def load(cls, path: str, *, max_length: int | None = None) -> "SentenceEncoder":
    config, params = load_hf_bert(path)
    if max_length is None:
      max_length = 256
      st_cfg = os.path.join(path, "sentence_bert_config.json")
      if os.path.exists(st_cfg):
        with open(st_cfg, encoding="utf-8") as f:
          max_length = int(json.load(f).get("max_seq_length", max_length))
    vocab = wordpiece.WordPieceVocab(path)
    if vocab.hf_pad_id != config.pad_token_id:
      raise UserInputError(f"{path}: the tokenizer pads with id {vocab.hf_pad_id}, config.json with "
                           f"{config.pad_token_id}")
    return cls(config, jax.device_put(params), vocab, max_length=min(max_length, config.max_length))

  def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
    """float32 [N, H]; batches are padded to `batch_size` rows and to powers of two in length."""
    ids = [self.vocab.encode(t, max_length=self.max_length) for t in texts]
    return pooled_embeddings(lambda t: self._fn(self.params, t), ids, batch_size=batch_size,
                             dim=self.config.hidden_size, max_length=self.max_length)


def pooled_embeddings(fn, token_lists: Sequence[Sequence[int]], *, batch_size: int, dim: int,
                      max_length: int) -> np.ndarray:
  """`fn(tokens_BxS) -> [B, dim]` over variable-length token lists: rows sorted by length share a
  batch, each batch cut to a power of two >= its longest row (few compiled shapes, little padding)."""
  out = np.zeros((len(token_lists), dim), np.float32)
  order = np.argsort([len(t) for t in token_lists], kind="stable")
  for start in range(0, len(token_lists), batch_size):
    idx = order[start:start + batch_size]
    length = min(max(8, 1 << (max(len(token_lists[i]) for i in idx) - 1).bit_length()), max_length)
    tokens = np.zeros((batch_size, length), np.int32)
    for r, i in enumerate(idx):
      row = list(token_lists[i])[:length]
      tokens[r, :len(row)] = row
    tokens[len(idx):, 0] = 101  # keep padding rows non-empty ([CLS])
    out[idx] = np.asarray(fn(tokens))[:len(idx)]
  return out
