"""BERT-family encoder in flax.linen, loadable from Hugging Face / sentence-transformers weights.

The module reproduces `transformers.BertModel`'s encoder (post-LayerNorm blocks, learned absolute
positions, token-type embeddings, exact-erf GELU) with T5X-style logical axis names on every
parameter, so it shards with the same rules table as T5.  `SentenceEncoder` adds
sentence-transformers' mean pooling and L2 normalisation (all-MiniLM-L6-v2's modules.json), so
`SentenceEncoder.load(pretrained.minilm_dir()).encode(texts)` equals
`SentenceTransformer(dir).encode(texts)` (tested to 1e-4 on real text).

Parameters (HF name -> ours; HF Linear weights are [out, in], our kernels [in, out]):
  embeddings.word_embeddings.weight          word_embeddings/embedding         [V, H]
  embeddings.position_embeddings.weight      position_embeddings/embedding     [P, H]
  embeddings.token_type_embeddings.weight    token_type_embeddings/embedding   [T, H]
  embeddings.LayerNorm.{weight,bias}         embeddings_layer_norm/{scale,bias}
  encoder.layer.i.attention.self.{query,key,value}   layers_i/attention/{query,key,value}
  encoder.layer.i.attention.output.dense     layers_i/attention/out
  encoder.layer.i.attention.output.LayerNorm layers_i/attention_layer_norm
  encoder.layer.i.intermediate.dense         layers_i/mlp/wi
  encoder.layer.i.output.dense               layers_i/mlp/wo
  encoder.layer.i.output.LayerNorm           layers_i/output_layer_norm
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

DType = Any


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """`transformers.BertConfig` fields that shape the encoder (defaults: all-MiniLM-L6-v2)."""
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

  @classmethod
  def from_hf(cls, path: str, **overrides) -> "BertConfig":
    """Reads `config.json` of a Hugging Face BERT directory."""
    cfg_path = os.path.join(path, "config.json")
    try:
      with open(cfg_path, encoding="utf-8") as f:
        hf = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise UserInputError(f"{cfg_path}: not a readable Hugging Face config ({e})") from None
    if hf.get("model_type") not in ("bert", None):
      raise UserInputError(f"{cfg_path}: model_type {hf.get('model_type')!r} is not a BERT encoder")
    if hf.get("hidden_act", "gelu") != "gelu" or hf.get("position_embedding_type",
                                                          "absolute") != "absolute":
      raise UserInputError(f"{cfg_path}: only gelu / absolute-position BERT encoders are supported")
    fields = dict(vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
                  num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
                  intermediate_size=hf["intermediate_size"],
                  max_position_embeddings=hf["max_position_embeddings"],
                  type_vocab_size=hf.get("type_vocab_size", 2),
                  layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
                  dropout_rate=hf.get("hidden_dropout_prob", 0.1))
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
  def __call__(self, x_BxSxH, mask_Bx1x1xS, enable_dropout: bool = False):
    cfg = self.config
    dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    drop = lambda y: nn.Dropout(cfg.dropout_rate)(y, deterministic=not enable_dropout)
    y = _SelfAttention(cfg, name="attention")(x_BxSxH, mask_Bx1x1xS, enable_dropout)
    x_BxSxH = LayerNorm(cfg.layer_norm_eps, dt, pdt, name="attention_layer_norm")(x_BxSxH + drop(y))
    y = _Mlp(cfg, name="mlp")(x_BxSxH)
    x_BxSxH = LayerNorm(cfg.layer_norm_eps, dt, pdt, name="output_layer_norm")(x_BxSxH + drop(y))
    return nn.with_logical_constraint(x_BxSxH, ("batch", "length", "embed"))


class _SelfAttention(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x_BxSxH, mask_Bx1x1xS, enable_dropout: bool = False):
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
    if s > cfg.max_position_embeddings:
      raise ValueError(f"input length {s} exceeds max_position_embeddings "
                       f"{cfg.max_position_embeddings}")
    init = nn.initializers.normal(stddev=0.02)

    def embed(name, num, axes):
      return nn.Embed(num, cfg.hidden_size, dtype=dt, param_dtype=pdt, name=name,
                      embedding_init=nn.with_logical_partitioning(init, axes))

    x = embed("word_embeddings", cfg.vocab_size, ("vocab", "embed"))(tokens_BxS.astype(jnp.int32))
    x = x + embed("position_embeddings", cfg.max_position_embeddings,
                  ("relpos_buckets", "embed"))(jnp.arange(s))[None]
    x = x + embed("token_type_embeddings", cfg.type_vocab_size,
                  ("relpos_buckets", "embed"))(jnp.zeros((1, s), jnp.int32))
    x = LayerNorm(cfg.layer_norm_eps, dt, pdt, name="embeddings_layer_norm")(x)
    x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not enable_dropout)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    mask = (tokens_BxS > 0)[:, None, None, :]
    for i in range(cfg.num_layers):
      x = BertLayer(cfg, name=f"layers_{i}")(x, mask, enable_dropout)
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
  # BertForX checkpoints prefix everything with "bert."; sentence-transformers' BertModel does not.
  return {k[len("bert."):] if k.startswith("bert.") else k: v for k, v in sd.items()}


def hf_to_params(sd: dict[str, np.ndarray], config: BertConfig) -> dict:
  """HF BertModel state dict -> `BertEncoder` params (unboxed numpy tree)."""

  def get(name):
    if name not in sd:
      raise UserInputError(f"BERT weights lack {name!r} (have e.g. {sorted(sd)[:3]})")
    return np.asarray(sd[name], np.float32)

  def dense(prefix):
    return {"kernel": get(prefix + ".weight").T, "bias": get(prefix + ".bias")}

  def norm(prefix):
    return {"scale": get(prefix + ".weight"), "bias": get(prefix + ".bias")}

  params = {
      "word_embeddings": {"embedding": get("embeddings.word_embeddings.weight")},
      "position_embeddings": {"embedding": get("embeddings.position_embeddings.weight")},
      "token_type_embeddings": {"embedding": get("embeddings.token_type_embeddings.weight")},
      "embeddings_layer_norm": norm("embeddings.LayerNorm"),
  }
  for i in range(config.num_layers):
    p = f"encoder.layer.{i}"
    params[f"layers_{i}"] = {
        "attention": {"query": dense(p + ".attention.self.query"),
                      "key": dense(p + ".attention.self.key"),
                      "value": dense(p + ".attention.self.value"),
                      "out": dense(p + ".attention.output.dense")},
        "attention_layer_norm": norm(p + ".attention.output.LayerNorm"),
        "mlp": {"wi": dense(p + ".intermediate.dense"), "wo": dense(p + ".output.dense")},
        "output_layer_norm": norm(p + ".output.LayerNorm"),
    }
  want = jax.tree.map(lambda x: x.shape, nn.unbox(jax.eval_shape(
      lambda: BertEncoder(config).init(jax.random.PRNGKey(0), jnp.ones((1, 4), jnp.int32))))
                      ["params"])
  got = jax.tree.map(lambda x: x.shape, params)
  if want != got:
    raise UserInputError(f"BERT weights do not match the config {config} (shapes differ)")
  return params


def load_hf_bert(path: str, config: BertConfig | None = None) -> tuple[BertConfig, dict]:
  """(config, params) of a Hugging Face / sentence-transformers BERT directory."""
  if not os.path.isdir(path):
    raise UserInputError(f"{path}: no such directory (a BERT / sentence-transformers model dir)")
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
    return cls(config, jax.device_put(params), wordpiece.WordPieceVocab(path),
               max_length=max_length)

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
