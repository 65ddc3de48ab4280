"""Hugging Face T5 v1.1 / flan-T5 (safetensors) <-> t2t_jax parameters.

Reads a local `T5ForConditionalGeneration` directory (config.json + model.safetensors, or sharded
model-0000x-of-0000y.safetensors with model.safetensors.index.json) without torch or transformers,
and writes the same layout back.  HF Linear weights are `[out, in]`, ours `[in, out]`; HF's
relative_attention_bias (block 0 of each stack) is `[buckets, heads]`, ours `[heads, buckets]`.

The vocabulary can grow on the way in (`config.vocab_size` > the checkpoint's): the extra rows of
the input embedding and columns of the LM head (the ID tokens) are drawn from a normal distribution
with the per-dimension mean and standard deviation of the existing ones, so new tokens start in the
same range as the pretrained ones.
"""

import json
import os

import numpy as np

from t2t_jax import io_utils
from t2t_jax.errors import UserInputError
from t2t_jax.models import t5_config

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


# ----------------------------------------------------------------------------------- configs


def read_hf_config(path: str) -> dict:
  cfg_path = os.path.join(path, CONFIG_FILE)
  if not os.path.exists(cfg_path):
    raise UserInputError(f"{path!r} is not a Hugging Face model directory: no {CONFIG_FILE}")
  with open(cfg_path, encoding="utf-8") as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise UserInputError(f"{cfg_path}:{e.lineno}: invalid JSON ({e.msg})") from None


def config_from_hf(hf: dict, **overrides) -> t5_config.T5Config:
  """T5Config for a HF T5 v1.1 config dict (gated-GELU, untied LM head)."""
  proj = hf.get("feed_forward_proj", "relu")
  if proj not in ("gated-gelu",):
    raise UserInputError(f"HF config feed_forward_proj={proj!r}: only T5 v1.1 / flan-T5 "
                         "('gated-gelu') checkpoints are supported")
  # T5 v1.0 scales decoder outputs by d_model**-0.5 before the (tied) LM head; v1.1 does not.
  # transformers < 5 signalled v1.1 by tie_word_embeddings=false; transformers 5 writes
  # scale_decoder_outputs=false (and always tie_word_embeddings=true, untying when the checkpoint
  # holds a distinct lm_head.weight).
  if "scale_decoder_outputs" in hf:
    scaled = bool(hf["scale_decoder_outputs"])
  else:
    scaled = hf.get("tie_word_embeddings", True) is not False
  if scaled:
    raise UserInputError("HF config describes T5 v1.0 (decoder outputs scaled before a tied LM "
                         "head): only T5 v1.1 / flan-T5 checkpoints are supported")
  fields = dict(
      vocab_size=int(hf["vocab_size"]), emb_dim=int(hf["d_model"]), num_heads=int(hf["num_heads"]),
      head_dim=int(hf["d_kv"]), mlp_dim=int(hf["d_ff"]), num_encoder_layers=int(hf["num_layers"]),
      num_decoder_layers=int(hf.get("num_decoder_layers") or hf["num_layers"]),
      dropout_rate=float(hf.get("dropout_rate", 0.1)),
      relative_attention_num_buckets=int(hf.get("relative_attention_num_buckets", 32)),
      relative_attention_max_distance=int(hf.get("relative_attention_max_distance", 128)),
      layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-6)))
  fields.update(overrides)
  return t5_config.T5Config(**fields)


def config_to_hf(config: t5_config.T5Config) -> dict:
  return {
      "architectures": ["T5ForConditionalGeneration"], "model_type": "t5",
      "vocab_size": config.vocab_size, "d_model": config.emb_dim, "d_kv": config.head_dim,
      "d_ff": config.mlp_dim, "num_layers": config.num_encoder_layers,
      "num_decoder_layers": config.num_decoder_layers, "num_heads": config.num_heads,
      "relative_attention_num_buckets": config.relative_attention_num_buckets,
      "relative_attention_max_distance": config.relative_attention_max_distance,
      "dropout_rate": config.dropout_rate, "layer_norm_epsilon": config.layer_norm_epsilon,
      "initializer_factor": 1.0, "feed_forward_proj": "gated-gelu", "dense_act_fn": "gelu_new",
      "is_gated_act": True, "tie_word_embeddings": False, "scale_decoder_outputs": False,
      "is_encoder_decoder": True,
      "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0, "use_cache": True,
  }


# --------------------------------------------------------------------------------- state dicts


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """All tensors of a HF model dir as float32 numpy arrays (bf16/fp16 upcast)."""
  from safetensors import safe_open  # pylint: disable=import-outside-toplevel
  index = os.path.join(path, INDEX_FILE)
  if os.path.exists(index):
    with open(index, encoding="utf-8") as f:
      files = sorted(set(json.load(f)["weight_map"].values()))
  elif os.path.exists(os.path.join(path, WEIGHTS_FILE)):
    files = [WEIGHTS_FILE]
  else:
    raise UserInputError(f"no {WEIGHTS_FILE} or {INDEX_FILE} in {path!r} (only safetensors "
                         "checkpoints are read; convert pytorch_model.bin with transformers first)")
  out = {}
  for name in files:
    with safe_open(os.path.join(path, name), framework="flax") as f:
      for key in f.keys():
        out[key] = np.asarray(f.get_tensor(key), dtype=np.float32)
  return out


def _attn_from_hf(sd, prefix):
  return {name: {"kernel": sd[f"{prefix}.{hf}.weight"].T}
          for name, hf in (("query", "q"), ("key", "k"), ("value", "v"), ("out", "o"))}


def _mlp_from_hf(sd, prefix):
  return {n: {"kernel": sd[f"{prefix}.DenseReluDense.{n}.weight"].T} for n in ("wi_0", "wi_1", "wo")}


def hf_to_params(sd: dict[str, np.ndarray], config: t5_config.T5Config) -> dict:
  """HF state dict (numpy) -> our parameter tree (numpy float32), same vocabulary."""
  try:
    embed = sd["shared.weight"] if "shared.weight" in sd else sd["encoder.embed_tokens.weight"]
    enc, dec = {}, {}
    enc["relpos_bias"] = {"rel_embedding": sd[
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].T}
    for i in range(config.num_encoder_layers):
      p = f"encoder.block.{i}.layer"
      enc[f"layers_{i}"] = {
          "pre_attention_layer_norm": {"scale": sd[f"{p}.0.layer_norm.weight"]},
          "attention": _attn_from_hf(sd, f"{p}.0.SelfAttention"),
          "pre_mlp_layer_norm": {"scale": sd[f"{p}.1.layer_norm.weight"]},
          "mlp": _mlp_from_hf(sd, f"{p}.1"),
      }
    enc["encoder_norm"] = {"scale": sd["encoder.final_layer_norm.weight"]}
    dec["relpos_bias"] = {"rel_embedding": sd[
        "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].T}
    for i in range(config.num_decoder_layers):
      p = f"decoder.block.{i}.layer"
      dec[f"layers_{i}"] = {
          "pre_self_attention_layer_norm": {"scale": sd[f"{p}.0.layer_norm.weight"]},
          "self_attention": _attn_from_hf(sd, f"{p}.0.SelfAttention"),
          "pre_cross_attention_layer_norm": {"scale": sd[f"{p}.1.layer_norm.weight"]},
          "encoder_decoder_attention": _attn_from_hf(sd, f"{p}.1.EncDecAttention"),
          "pre_mlp_layer_norm": {"scale": sd[f"{p}.2.layer_norm.weight"]},
          "mlp": _mlp_from_hf(sd, f"{p}.2"),
      }
    dec["decoder_norm"] = {"scale": sd["decoder.final_layer_norm.weight"]}
    # A checkpoint saved with tied weights has no lm_head.weight: the head is the embedding.
    dec["logits_dense"] = {"kernel": sd.get("lm_head.weight", embed).T}
  except KeyError as e:
    raise UserInputError(f"HF checkpoint lacks tensor {e.args[0]!r} (is it a T5 v1.1 "
                         "T5ForConditionalGeneration with the config's layer counts?)") from None
  params = {"token_embedder": {"embedding": embed}, "encoder": enc, "decoder": dec}
  return _to_contiguous(params)


def _to_contiguous(tree):
  if isinstance(tree, dict):
    return {k: _to_contiguous(v) for k, v in tree.items()}
  return np.ascontiguousarray(tree, dtype=np.float32)


def params_to_hf(params, config: t5_config.T5Config) -> dict[str, np.ndarray]:
  """Our parameter tree -> HF T5ForConditionalGeneration state dict (float32 numpy)."""
  p = _to_contiguous(_to_numpy(params))
  sd = {"shared.weight": p["token_embedder"]["embedding"]}
  sd["encoder.embed_tokens.weight"] = sd["shared.weight"]
  sd["decoder.embed_tokens.weight"] = sd["shared.weight"]

  def attn(prefix, tree):
    for name, hf in (("query", "q"), ("key", "k"), ("value", "v"), ("out", "o")):
      sd[f"{prefix}.{hf}.weight"] = tree[name]["kernel"].T

  def mlp(prefix, tree):
    for n in ("wi_0", "wi_1", "wo"):
      sd[f"{prefix}.DenseReluDense.{n}.weight"] = tree[n]["kernel"].T

  enc, dec = p["encoder"], p["decoder"]
  for i in range(config.num_encoder_layers):
    layer, pre = enc[f"layers_{i}"], f"encoder.block.{i}.layer"
    sd[f"{pre}.0.layer_norm.weight"] = layer["pre_attention_layer_norm"]["scale"]
    attn(f"{pre}.0.SelfAttention", layer["attention"])
    sd[f"{pre}.1.layer_norm.weight"] = layer["pre_mlp_layer_norm"]["scale"]
    mlp(f"{pre}.1", layer["mlp"])
  sd["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = (
      enc["relpos_bias"]["rel_embedding"].T)
  sd["encoder.final_layer_norm.weight"] = enc["encoder_norm"]["scale"]
  for i in range(config.num_decoder_layers):
    layer, pre = dec[f"layers_{i}"], f"decoder.block.{i}.layer"
    sd[f"{pre}.0.layer_norm.weight"] = layer["pre_self_attention_layer_norm"]["scale"]
    attn(f"{pre}.0.SelfAttention", layer["self_attention"])
    sd[f"{pre}.1.layer_norm.weight"] = layer["pre_cross_attention_layer_norm"]["scale"]
    attn(f"{pre}.1.EncDecAttention", layer["encoder_decoder_attention"])
    sd[f"{pre}.2.layer_norm.weight"] = layer["pre_mlp_layer_norm"]["scale"]
    mlp(f"{pre}.2", layer["mlp"])
  sd["decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = (
      dec["relpos_bias"]["rel_embedding"].T)
  sd["decoder.final_layer_norm.weight"] = dec["decoder_norm"]["scale"]
  sd["lm_head.weight"] = dec["logits_dense"]["kernel"].T
  return {k: np.ascontiguousarray(v) for k, v in sd.items()}


def _to_numpy(tree):
  if isinstance(tree, dict):
    return {k: _to_numpy(v) for k, v in tree.items()}
  return np.asarray(tree)


# ------------------------------------------------------------------------------ vocabulary


def extend_vocab(params, new_vocab_size: int, *, seed: int = 0):
  """Grows the input embedding (rows) and LM head (columns) to `new_vocab_size`."""
  emb = params["token_embedder"]["embedding"]
  head = params["decoder"]["logits_dense"]["kernel"]
  old = emb.shape[0]
  if new_vocab_size < old:
    raise UserInputError(f"vocab_size {new_vocab_size} is smaller than the checkpoint's {old}")
  if new_vocab_size == old:
    return params
  rng = np.random.default_rng(seed)
  extra = new_vocab_size - old
  new_rows = rng.normal(emb.mean(0), emb.std(0) + 1e-12, size=(extra, emb.shape[1]))
  new_cols = rng.normal(head.mean(1, keepdims=True), head.std(1, keepdims=True) + 1e-12,
                        size=(head.shape[0], extra))
  out = {**params, "token_embedder": {"embedding": np.concatenate([emb, new_rows], 0)
                                      .astype(np.float32)}}
  dec = dict(params["decoder"])
  dec["logits_dense"] = {"kernel": np.concatenate([head, new_cols], 1).astype(np.float32)}
  out["decoder"] = dec
  return out


# --------------------------------------------------------------------------------- public API


def load_hf_t5(path: str, config: t5_config.T5Config | None = None, *, seed: int = 0):
  """Parameters from a local HF T5 v1.1 / flan-T5 directory.

  With `config`, its dimensions must match the checkpoint's (a UserInputError names the field),
  and its vocab_size may be larger (ID tokens: see `extend_vocab`). Returns a numpy tree in
  `config.param_dtype`.
  """
  hf = read_hf_config(path)
  ckpt_config = config_from_hf(hf)
  if config is None:
    config = ckpt_config
  for field in ("emb_dim", "num_heads", "head_dim", "mlp_dim", "num_encoder_layers",
                "num_decoder_layers", "relative_attention_num_buckets",
                "relative_attention_max_distance"):
    ours, theirs = getattr(config, field), getattr(ckpt_config, field)
    if ours != theirs:
      raise UserInputError(f"{path}: checkpoint has {field}={theirs}, the model config {ours}")
  params = hf_to_params(read_safetensors(path), ckpt_config)
  params = extend_vocab(params, config.vocab_size, seed=seed)
  dtype = np.dtype(config.param_dtype) if config.param_dtype != "bfloat16" else None
  if dtype is None:
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    dtype = jnp.bfloat16
  return _cast(params, dtype)


def _cast(tree, dtype):
  if isinstance(tree, dict):
    return {k: _cast(v, dtype) for k, v in tree.items()}
  return np.asarray(tree).astype(dtype)


def export_hf_t5(params, config: t5_config.T5Config, out_dir: str, *, dtype: str = "float32",
                 inputs=(), overwrite: bool = False) -> str:
  """Writes config.json + model.safetensors loadable by `T5ForConditionalGeneration`.

  `inputs`: paths the params came from (out_dir may not be, contain or lie inside them).

  The tied-by-name embed_tokens copies are left out (transformers re-ties them to `shared`).
  """
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  sd = params_to_hf(params, config)
  sd = {k: v for k, v in sd.items() if not k.endswith("embed_tokens.weight")}
  if dtype not in ("float32", "float16"):
    raise UserInputError(f"export dtype {dtype!r}: use float32 or float16")
  sd = {k: v.astype(dtype) for k, v in sd.items()}
  with io_utils.atomic_dir(out_dir, kind="hf_weights", inputs=inputs, overwrite=overwrite) as tmp:
    save_file(sd, os.path.join(tmp, WEIGHTS_FILE), metadata={"format": "pt"})
    with open(os.path.join(tmp, CONFIG_FILE), "w", encoding="utf-8") as f:
      json.dump(config_to_hf(config) | {"torch_dtype": dtype}, f, indent=2)
  return out_dir
