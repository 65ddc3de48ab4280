"""T5.1.1 hyper-parameters (`T5Config`) and the named sizes (`PRESETS`), apart from the network.

`t2t_jax.models.t5` (the flax modules, `T5Model`) and `t2t_jax.models.hf_convert` (the Hugging Face
format, which `T5Model.init_from_pretrained` reads) both build on this module; gin files name the
class `t5.T5Config` (t5.py re-exports it).
"""

import dataclasses

from t2t_jax.errors import UserInputError
from t2t_jax.models import base


@dataclasses.dataclass(frozen=True)
class T5Config(base.ModelConfig):
  """T5.1.1 hyper-parameters (names as in T5X `T5Config`)."""
  family = "t5_1_1"
  vocab_size: int = 32128
  emb_dim: int = 512
  num_heads: int = 6
  head_dim: int = 64
  mlp_dim: int = 1024
  num_encoder_layers: int = 8
  num_decoder_layers: int = 8
  dropout_rate: float = 0.1
  dtype: str = "float32"  # activation / compute dtype
  param_dtype: str = "float32"  # storage dtype of the parameters
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6
  remat_policy: str = "none"  # none | full | minimal (save matmul outputs)

  def __post_init__(self):
    assert self.remat_policy in ("none", "full", "minimal"), self.remat_policy

  @classmethod
  def preset(cls, name: str, **overrides) -> "T5Config":
    """Named sizes, equal to gin/models/t5_1_1_{name}.gin (tests/test_train_entry.py checks it):
    micro (unit tests), tiny (the CPU quickstart), small, base, large, xl, xxl (T5 v1.1)."""
    if name not in PRESETS:
      raise UserInputError(f"unknown T5 size {name!r}; known: {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)

  @classmethod
  def tiny(cls, **overrides) -> "T5Config":
    return cls.preset("tiny", **overrides)

  @classmethod
  def micro(cls, **overrides) -> "T5Config":
    return cls.preset("micro", **overrides)

  def num_params(self) -> int:
    """Parameter count (embedding, relpos tables, layers, norms, LM head)."""
    e, f, hd = self.emb_dim, self.mlp_dim, self.num_heads * self.head_dim
    attn = 4 * e * hd
    mlp = 3 * e * f
    enc = self.num_encoder_layers * (attn + mlp + 2 * e) + e
    dec = self.num_decoder_layers * (2 * attn + mlp + 3 * e) + e
    rel = 2 * self.num_heads * self.relative_attention_num_buckets
    return 2 * self.vocab_size * e + enc + dec + rel


PRESETS = {
    "micro": T5Config(vocab_size=128, emb_dim=32, num_heads=4, head_dim=8, mlp_dim=64,
                      num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.0),
    "tiny": T5Config(vocab_size=128, emb_dim=128, num_heads=4, head_dim=32, mlp_dim=512,
                     num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.0),
    "small": T5Config(emb_dim=512, num_heads=6, head_dim=64, mlp_dim=1024, num_encoder_layers=8,
                      num_decoder_layers=8),
    "base": T5Config(emb_dim=768, num_heads=12, head_dim=64, mlp_dim=2048, num_encoder_layers=12,
                     num_decoder_layers=12),
    "large": T5Config(emb_dim=1024, num_heads=16, head_dim=64, mlp_dim=2816, num_encoder_layers=24,
                      num_decoder_layers=24),
    "xl": T5Config(emb_dim=2048, num_heads=32, head_dim=64, mlp_dim=5120, num_encoder_layers=24,
                   num_decoder_layers=24),
    "xxl": T5Config(emb_dim=4096, num_heads=64, head_dim=64, mlp_dim=10240, num_encoder_layers=24,
                    num_decoder_layers=24),
}
