"""Dense dual-encoder baseline in JAX: the project's T5 encoder, mean-pooled, trained with in-batch
softmax on (prompt, track text) pairs; exact nearest-neighbour search over every track.

One tower encodes both sides (shared weights, as GTR / Sentence-T5): T5.1.1 encoder
(`t2t_jax.models.t5.Encoder`) -> mean over non-padding positions -> L2 normalisation.  A training
example is a (training-playlist prompt, text of one of its tracks) pair; a batch of B pairs gives the
B x B similarity matrix q_i . d_j / temperature, and the loss is the softmax cross-entropy of each
prompt against its own track (the other B - 1 tracks of the batch are the negatives; a negative that
is the same track as the positive is masked out).  Pairs are drawn uniformly, so popular tracks are
seen (and used as negatives) in proportion to their playlist counts.

Retrieval: all track texts are encoded once into `track_emb_NxE`; a prompt's top-K rows are
`lax.top_k(q . track_emb^T)` computed in catalog chunks (so the N-wide score row never has to exist
for very large catalogs), merged exactly.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from t2t_jax import evaluation
from t2t_jax.baselines import catalog as catalog_lib
from t2t_jax.data.vocab import EOS_ID
from t2t_jax.errors import UserInputError
from t2t_jax.models import t5


def default_config(vocab_size: int) -> t5.T5Config:
  """The quickstart's 'tiny' T5.1.1 encoder shape (emb 128, 4 heads x 32, MLP 512, 2 layers)."""
  return t5.T5Config.preset("tiny", vocab_size=vocab_size, emb_dim=128, num_heads=4, head_dim=32, mlp_dim=512,
                            num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.0)



def _fixed_batches(tokens_NxL: np.ndarray, batch: int):
  """(chunk [batch, L], real rows) over `tokens_NxL`, the last chunk zero-padded: one compiled shape."""
  for s in range(0, len(tokens_NxL), batch):
    chunk = tokens_NxL[s:s + batch]
    real = len(chunk)
    if real < batch:
      chunk = np.concatenate([chunk, np.zeros((batch - real, chunk.shape[1]), np.int32)])
    yield chunk, real

class Tower(nn.Module):
  """tokens [B, L] (0 = padding) -> L2-normalised mean-pooled T5 encoder output [B, E] (float32)."""
  config: t5.T5Config

  def setup(self):
    cfg = self.config
    self.token_embedder = nn.Embed(
        num_embeddings=cfg.vocab_size, features=cfg.emb_dim, dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.dtype(cfg.param_dtype),
        embedding_init=nn.with_logical_partitioning(nn.initializers.normal(stddev=1.0), ("vocab", "embed")))
    self.encoder = t5.Encoder(cfg, self.token_embedder)

  def __call__(self, tokens_BxL, enable_dropout: bool = False):
    encoded_BxLxE = self.encoder(tokens_BxL, None, enable_dropout).astype(jnp.float32)
    mask_BxL = (tokens_BxL > 0).astype(jnp.float32)
    pooled_BxE = (encoded_BxLxE * mask_BxL[..., None]).sum(1) / jnp.maximum(mask_BxL.sum(1, keepdims=True), 1.0)
    return pooled_BxE / jnp.maximum(jnp.linalg.norm(pooled_BxE, axis=-1, keepdims=True), 1e-6)


def in_batch_softmax_loss(q_BxE, d_BxE, rows_B, temperature: float):
  """Mean cross-entropy of prompt i against track i among the batch's tracks; duplicates of the
  positive track elsewhere in the batch are masked (they are not negatives)."""
  logits_BxB = q_BxE @ d_BxE.T / temperature
  same_BxB = rows_B[:, None] == rows_B[None, :]
  eye_BxB = jnp.eye(rows_B.shape[0], dtype=bool)
  logits_BxB = jnp.where(same_BxB & ~eye_BxB, -1e9, logits_BxB)
  logp_BxB = jax.nn.log_softmax(logits_BxB, axis=-1)
  return -jnp.mean(jnp.diagonal(logp_BxB))


def pad_tokens(token_lists: Sequence[Sequence[int]], length: int) -> np.ndarray:
  """int32 [N, length]: each list + EOS, 0-padded / truncated keeping EOS (evaluation.pad_inputs)."""
  return evaluation.pad_inputs([list(t) + [EOS_ID] for t in token_lists], length)


def _length_for(token_lists: Sequence[Sequence[int]], cap: int) -> int:
  """99.9th percentile of lengths (+EOS), rounded up to a multiple of 8, at most `cap`."""
  p = np.percentile([len(t) + 1 for t in token_lists], 99.9) if token_lists else 8
  return int(min(cap, max(8, -(-p // 8) * 8)))


@jax.jit
def _merge_topk(best_s_BxK, best_r_BxK, s_BxC, r_BxC):
  s = jnp.concatenate([best_s_BxK, s_BxC], axis=1)
  r = jnp.concatenate([best_r_BxK, r_BxC], axis=1)
  top_s, idx = jax.lax.top_k(s, best_s_BxK.shape[1])
  return top_s, jnp.take_along_axis(r, idx, axis=1)


class DualEncoderRetriever:
  """fit(catalog, train (prompt, track rows)) -> recommend(prompts, k) -> rows [len, k]."""

  def __init__(self, *, encode_fn: Callable[[str], Sequence[int]], vocab_size: int,
               config: t5.T5Config | None = None, train_steps: int = 1000, batch_size: int = 128,
               learning_rate: float = 1e-3, warmup_steps: int = 100, temperature: float = 0.05,
               max_query_length: int = 64, max_track_length: int = 48, search_chunk: int = 65536,
               seed: int = 0, progress: bool = False):
    if train_steps < 0 or batch_size < 2:
      raise UserInputError(f"dual encoder: train_steps must be >= 0 and batch_size >= 2, got "
                           f"{train_steps}, {batch_size}")
    if temperature <= 0:
      raise UserInputError(f"dual encoder: temperature must be positive, got {temperature}")
    self.encode_fn = encode_fn
    self.config = config or default_config(vocab_size)
    if self.config.vocab_size < vocab_size:
      raise UserInputError(f"dual encoder: config.vocab_size {self.config.vocab_size} < vocabulary {vocab_size}")
    self.train_steps, self.batch_size = int(train_steps), int(batch_size)
    self.learning_rate, self.warmup_steps, self.temperature = learning_rate, warmup_steps, temperature
    self.max_query_length, self.max_track_length = max_query_length, max_track_length
    self.search_chunk, self.seed, self.progress = int(search_chunk), seed, progress
    self.tower = Tower(self.config)
    self.history: list[float] = []
    self.final_loss = None
    self.examples_per_second = None
    self._embed = jax.jit(lambda p, x: self.tower.apply({"params": p}, x))

  # -- training ---------------------------------------------------------------------------------- #

  def _tokens(self, texts: Sequence[str]) -> list[list[int]]:
    return [list(self.encode_fn(t)) for t in texts]

  def fit(self, catalog: catalog_lib.CatalogTexts, train: catalog_lib.Train) -> "DualEncoderRetriever":
    """The track tower reads `catalog.metadata`; `train` = (prompt, track rows) of training playlists."""
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
    track_texts = catalog.metadata
    prompts, pair_prompt, pair_row = [], [], []
    for prompt, rows in catalog_lib.checked_train(train, catalog.num_tracks, "dual encoder"):
      pair_prompt.append(np.full(rows.size, len(prompts), np.int64))
      pair_row.append(rows)
      prompts.append(prompt)
    if not prompts or not sum(r.size for r in pair_row):
      raise UserInputError("dual encoder: no (prompt, track) training pairs")
    pair_prompt_P, pair_row_P = np.concatenate(pair_prompt), np.concatenate(pair_row)
    q_toks = self._tokens(prompts)
    d_toks = self._tokens(track_texts)
    self.query_length = _length_for(q_toks, self.max_query_length)
    self.track_length = _length_for(d_toks, self.max_track_length)
    queries_QxL = pad_tokens(q_toks, self.query_length)
    self.track_tokens_NxL = pad_tokens(d_toks, self.track_length)

    params = nn.unbox(self.tower.init(jax.random.PRNGKey(self.seed), jnp.ones((2, 8), jnp.int32))["params"])
    schedule = optax.warmup_cosine_decay_schedule(0.0, self.learning_rate, max(1, min(self.warmup_steps,
                                                                                      self.train_steps // 2)),
                                                  max(2, self.train_steps), self.learning_rate * 0.1)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=0.01))
    opt_state = opt.init(params)
    temperature = self.temperature

    def loss_fn(p, q_BxL, d_BxL, rows_B):
      q = self.tower.apply({"params": p}, q_BxL)
      d = self.tower.apply({"params": p}, d_BxL)
      return in_batch_softmax_loss(q, d, rows_B, temperature)

    @jax.jit
    def step(p, s, q_BxL, d_BxL, rows_B):
      loss, grads = jax.value_and_grad(loss_fn)(p, q_BxL, d_BxL, rows_B)
      updates, s = opt.update(grads, s, p)
      return optax.apply_updates(p, updates), s, loss

    rng = np.random.default_rng([self.seed, 29])
    b = self.batch_size
    it = range(self.train_steps)
    if self.progress:
      it = tqdm(it, desc="dual encoder", unit="step")
    losses = []
    t_start = None
    for i in it:
      pick = rng.integers(pair_row_P.size, size=b)
      rows_B = pair_row_P[pick]
      params, opt_state, loss = step(params, opt_state, queries_QxL[pair_prompt_P[pick]],
                                     self.track_tokens_NxL[rows_B], rows_B.astype(np.int32))
      losses.append(loss)
      if i == 1:  # steady-state throughput excludes the compiling first step
        jax.block_until_ready(loss)
        t_start = time.perf_counter()
    if losses:
      jax.block_until_ready(losses[-1])
    if t_start is not None and self.train_steps > 2:
      self.examples_per_second = round((self.train_steps - 2) * b / (time.perf_counter() - t_start), 1)
    self.history = [float(x) for x in jax.device_get(losses)]
    self.final_loss = float(np.mean(self.history[-max(1, len(self.history) // 10):])) if self.history else None
    self.params = params
    self.track_emb_NxE = self.embed_tokens(self.track_tokens_NxL)
    return self

  # -- retrieval --------------------------------------------------------------------------------- #

  def embed_tokens(self, tokens_NxL: np.ndarray, batch_size: int = 256) -> jax.Array:
    """Embeddings [N, E] of padded token rows (fixed-shape batches: one compilation)."""
    out = [self._embed(self.params, chunk)[:real] for chunk, real in _fixed_batches(tokens_NxL, batch_size)]
    return jnp.concatenate(out) if out else jnp.zeros((0, self.config.emb_dim), jnp.float32)

  def embed_prompts(self, prompts: Sequence[str]) -> jax.Array:
    """Embeddings [len(prompts), E]."""
    return self.embed_tokens(pad_tokens(self._tokens(prompts), self.query_length))

  def search(self, q_BxE: jax.Array, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (rows, cosine scores) over the whole catalog, in chunks of `search_chunk` tracks."""
    n = self.track_emb_NxE.shape[0]
    k_eff = min(k, n)
    b = q_BxE.shape[0]
    best_s = jnp.full((b, k_eff), -jnp.inf, jnp.float32)
    best_r = jnp.full((b, k_eff), -1, jnp.int32)
    for s in range(0, n, self.search_chunk):
      d_CxE = self.track_emb_NxE[s:s + self.search_chunk]
      scores_BxC = q_BxE @ d_CxE.T
      c = min(k_eff, d_CxE.shape[0])
      top_s, top_i = jax.lax.top_k(scores_BxC, c)
      best_s, best_r = _merge_topk(best_s, best_r, top_s, (top_i + s).astype(jnp.int32))
    rows = np.full((b, k), -1, np.int32)
    scores = np.full((b, k), -np.inf, np.float32)
    rows[:, :k_eff] = np.asarray(best_r)
    scores[:, :k_eff] = np.asarray(best_s)
    return rows, scores

  def recommend(self, prompts: Sequence[str], k: int, query_batch: int = 256) -> np.ndarray:
    """Returns rows [len(prompts), k] (nearest tracks by cosine similarity, best first).

    Prompts go in fixed batches of `query_batch` (the last one padded), so search compiles once.
    """
    if not hasattr(self, "params"):
      raise UserInputError("dual encoder: call fit() before recommend()")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
      raise UserInputError(f"dual encoder: k must be a positive integer, got {k!r}")
    tokens_QxL = pad_tokens(self._tokens(list(prompts)), self.query_length)
    out = []
    for chunk, real in _fixed_batches(tokens_QxL, query_batch):
      rows, _ = self.search(self._embed(self.params, chunk), k)
      out.append(rows[:real])
    return np.concatenate(out) if out else np.zeros((0, k), np.int32)
