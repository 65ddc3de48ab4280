"""The trained retriever: what a user holds once Text2Tracks has trained (TF-free).

`GenerativeRetriever` = model + parameters + vocabularies + ID table + the catalog trie on device +
jitted constrained top-k functions, built once:

  GenerativeRetriever.from_model_dir(DIR)   a model dir (checkpoint + assets/): `t2t recommend`,
                                            `t2t export`, `t2t serve`, the infer run, the studies
  GenerativeRetriever(model=, params=, ...) a training run's or a study's model, parameters (None:
                                            passed per call, as the trainer's eval hook does), ID
                                            table and vocabulary

and then

  encode(prompts)                 prompts as the model reads them, int32 [B, inputs_length]
  recommend(prompts, k)           ranked `Recommendation`s per prompt (with the model dir's lexical
                                  and dense priors when it has them: `lexical_prior`, `dense_prior`)
  recommend_rows(prompts, k)      ID-table rows [B, k] and scores [B, k]
  rank_inputs(inputs_NxL, k, ...) the same over already tokenised prompts in fixed-shape batches
                                  (evaluation, studies, decoding variants, the eval hook)
  score(prompts, rows_BxR)        teacher-forced log-probability of given table rows (re-ranking)
  topk_fn(k, ...)                 the jitted `fn(params, inputs_BxL) -> (rows, scores)` behind them
  decode_fn(k, ...)               its pure, un-jitted form (`t2t export` lowers it)

The priors ride inside that one jitted function: the BM25 shares of a batch (host-side bm25s) go in as a
[B, rows] array, the dense table as weight x unit rows; the function adds the prompt's cosine under
the encoder it has just run (the encoder runs once per prompt) and spreads the sum over the trie on
the device (`index.subtree_max_device`).

Every decode goes through one place (`decode_fn`): trie-constrained beam search by default, free
or grouped (diverse) beam search as options.  The trie is passed to the jitted function as an
argument, not folded into the program as a constant, so large catalogs do not bloat compilation.
`GenerativeRetriever` satisfies the `protocols.TrackRecommender` Protocol.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Sequence

import jax
import numpy as np

from t2t_jax import evaluation, models
from t2t_jax.models import bert
from t2t_jax.data import prompts as prompts_lib
from t2t_jax.decoding import generate, index as index_lib
from t2t_jax.errors import UserInputError
from t2t_jax.ids.table import IdTable
from t2t_jax.serving import assets as assets_lib
from t2t_jax.training import checkpoints


@dataclasses.dataclass(frozen=True)
class Recommendation:
  rank: int
  track_id: str
  artist: str
  title: str
  score: float

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
  """How `decode_fn` searches: its compiled functions are cached per distinct options."""
  k: int
  beam_size: int
  constrained: bool = True
  num_groups: int = 1
  diversity_penalty: float = 0.0
  max_decode_len: int | None = None
  scoring: str = "log_prob"


class GenerativeRetriever:
  """Prompt -> ranked catalog tracks by constrained generative retrieval with a trained model."""

  def __init__(self, *, model, params, id_table, vocab, inputs_length: int, beam_size: int,
               input_vocab=None, tracks: dict | None = None, settings: dict | None = None,
               max_prompt_chars: int | None = None, lexical=None, dense=None):
    """model: an `EncoderDecoderModel` (a config is built once here); params: its parameters, or
    None when every call passes them; vocab: the output vocabulary (`id_token_offset`,
    `vocab_size`); input_vocab: the prompts' (`encode_prompt`; default `vocab`); tracks: track_id ->
    catalog Track (artist and title of recommendations); lexical: a `serving.lexical.LexicalIndex` over
    the ID table's rows, which `recommend` adds to the search at settings' "lexical_prior_weight";
    dense: one unit vector per ID-table row [R, E] in the space of the model's encoder (the tuned
    bi-encoder's track embeddings when the encoder is that bi-encoder's, frozen), whose cosine with
    the prompt's mean-pooled encoder states `recommend` adds at settings' "dense_prior_weight"."""
    self.model = models.build_model(model)
    self.params, self.vocab, self.id_table = params, vocab, id_table
    self.input_vocab = input_vocab if input_vocab is not None else vocab
    self.tracks = tracks or {}
    self.settings = dict(settings or {"inputs_length": inputs_length, "beam_size": beam_size})
    self.inputs_length, self.beam_size = int(inputs_length), int(beam_size)
    # How beams are ranked unless a call says otherwise (recommend.json "beam_scoring", `beam_search`).
    self.beam_scoring = self.settings.get("beam_scoring", "log_prob")
    # The BM25 prior of `recommend` (recommend.json "lexical_prior_weight"; 0: none).
    self.lexical = lexical
    self.lexical_prior_weight = assets_lib.check_prior_weight(self.settings.get("lexical_prior_weight", 0.0),
                                                              "lexical_prior_weight")
    if self.lexical_prior_weight and lexical is None:
      raise UserInputError("lexical_prior_weight > 0 needs a lexical index (MODEL_DIR/assets/lexical)")
    if lexical is not None and lexical.num_docs != id_table.num_tracks:
      raise UserInputError(f"lexical index of {lexical.num_docs} rows for an ID table of {id_table.num_tracks}")
    # The dense prior of `recommend` (recommend.json "dense_prior_weight"; 0: none).
    self.dense = None if dense is None else assets_lib.check_dense_table(dense, id_table.num_tracks, "dense table")
    self.dense_prior_weight = assets_lib.check_prior_weight(self.settings.get("dense_prior_weight", 0.0),
                                                            "dense_prior_weight")
    if self.dense_prior_weight and self.dense is None:
      raise UserInputError("dense_prior_weight > 0 needs a dense track table (MODEL_DIR/assets/dense_tracks.npy)")
    self._embed_fn = None
    self._weighted_dense: dict = {}  # weight -> weight x the dense table, on the device
    self.max_prompt_chars = int(max_prompt_chars or self.settings.get("max_prompt_chars")
                                or prompts_lib.DEFAULT_MAX_CHARS)
    t = time.perf_counter()
    self._host_index = index_lib.build_table_index(id_table, vocab.id_token_offset, vocab.vocab_size)
    self.index = self._host_index.to_device()
    self.index_build_seconds = time.perf_counter() - t
    self._fns: dict = {}

  @classmethod
  def from_model_dir(cls, model_dir: str, *, beam_size: int | None = None, verify: bool | None = None,
                     lexical_prior_weight: float | None = None,
                     dense_prior_weight: float | None = None) -> "GenerativeRetriever":
    """Loads config, checkpoint, vocabularies, ID table, catalog (and lexical index) from a model dir.

    beam_size: replaces the model dir's default beam.  verify: check the checkpoint's parameter
    files against their manifest first (None: $T2T_VERIFY_CHECKPOINTS, default on); a damaged file
    raises CheckpointIntegrityError naming it.  lexical_prior_weight: replaces recommend.json's (0:
    no lexical prior; > 0 needs the model dir's lexical index, `assets.add_lexical_prior`).
    dense_prior_weight: replaces recommend.json's (0: none; > 0 needs the model dir's dense table,
    `assets.add_dense_prior`).
    """
    settings = assets_lib.read_settings(model_dir, beam_size=beam_size)
    for key, value, flag in (("lexical_prior_weight", lexical_prior_weight, "--lexical_prior"),
                             ("dense_prior_weight", dense_prior_weight, "--dense_prior")):
      if value is not None:
        settings[key] = assets_lib.check_prior_weight(value, flag)
    assets = assets_lib.local_assets(model_dir)  # a gs:// / s3:// MODEL_DIR's are copied here
    id_table = IdTable.load(os.path.join(assets, assets_lib.IDS_DIR))
    input_vocab, vocab = assets_lib.load_vocabs(assets, settings, id_table)
    config, params = checkpoints.load_params(model_dir, verify=verify)
    if vocab.vocab_size > config.output_vocab_size:
      raise UserInputError(f"--model_dir {model_dir}: its ID table needs {vocab.vocab_size} output "
                           f"tokens but the model has {config.output_vocab_size}")
    return cls(model=models.build_model(config), params=params, vocab=vocab, id_table=id_table,
               input_vocab=input_vocab, tracks=assets_lib.read_catalog(assets), settings=settings,
               inputs_length=settings["inputs_length"], beam_size=settings["beam_size"],
               lexical=assets_lib.load_lexical(assets, settings),
               dense=assets_lib.load_dense(assets, settings, id_table.num_tracks))

  # ------------------------------------------------------------------------------ decoding

  def options(self, k: int, *, beam_size: int | None = None, **kwargs) -> DecodeOptions:
    """Decode options with the default beam, max(this retriever's beam, k), and the model dir's beam
    scoring unless given."""
    return DecodeOptions(k=int(k), beam_size=int(beam_size or max(self.beam_size, k)),
                         **{"scoring": self.beam_scoring, **kwargs})

  def decode_fn(self, k: int, **kwargs) -> Callable:
    """Pure `fn(params, inputs_BxL, index=None, node_prior_BxS=None, row_prior_BxR=None, dense_RxE=None)
    -> (rows_BxK, scores_BxK)` (see `options`, `generate.make_recommend_fn`)."""
    o = self.options(k, **kwargs)
    return generate.make_recommend_fn(self.model, self.index, beam_size=o.beam_size, top_k=o.k,
                                      max_decode_len=o.max_decode_len, constrained=o.constrained,
                                      num_groups=o.num_groups,
                                      diversity_penalty=float(o.diversity_penalty),
                                      scoring=o.scoring)

  def topk_fn(self, k: int, **kwargs) -> Callable:
    """Jitted `fn(params, inputs_BxL, node_prior_BxS=None, *, row_prior_BxR=None, dense_RxE=None) ->
    (rows_BxK, scores_BxK)`, compiled once per options, padded batch size and priors given; the trie
    is a jit argument."""
    o = self.options(k, **kwargs)
    if o not in self._fns:
      jitted = jax.jit(self.decode_fn(**dataclasses.asdict(o)))
      index = self.index

      def fn(params, inputs_BxL, node_prior_BxS=None, *, row_prior_BxR=None, dense_RxE=None):
        return jitted(params, inputs_BxL, index, node_prior_BxS, row_prior_BxR, dense_RxE)
      self._fns[o] = fn
    return self._fns[o]

  def weighted_dense(self, weight: float | None = None):
    """weight (default: the model dir's dense prior weight) x the dense table, on the device: the
    `dense_RxE` the search adds as a weighted cosine; None at weight 0."""
    weight = self.dense_prior_weight if weight is None else assets_lib.check_prior_weight(weight, "dense prior weight")
    if not weight:
      return None
    if self.dense is None:
      raise UserInputError("a dense prior needs the model dir's dense track table (MODEL_DIR/assets/dense_tracks.npy)")
    if weight not in self._weighted_dense:
      self._weighted_dense[weight] = jax.device_put(np.float32(weight) * self.dense)
    return self._weighted_dense[weight]

  def _params(self, params):
    params = self.params if params is None else params
    if params is None:
      raise UserInputError("this retriever holds no parameters: pass params=")
    return params

  def rank_inputs(self, inputs_NxL: np.ndarray, k: int, *, params=None, batch_size: int = 32,
                  progress: Callable | None = None, row_prior_NxR: np.ndarray | None = None,
                  dense_RxE=None, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """(rows [N, k], scores [N, k]) of tokenised prompts in batches of one fixed shape (the last
    one padded with copies of a real row), so the decoder compiles once.

    Priors that guide the search (`beam_search`'s node prior, built inside the jitted function:
    `generate.make_recommend_fn`); none by default, whatever the model dir keeps:
      row_prior_NxR: a per-prompt bonus of every ID-table row (in log-prob units, e.g. a weighted
        BM25 share, `lexical_prior`);
      dense_RxE: weighted unit track vectors [rows, E] whose dot with each prompt's mean-pooled encoder
        states is added (`weighted_dense(w)`: the model dir's table; or e.g. w x a bi-encoder's
        normalised track embeddings, `assets.unit_rows`)."""
    inputs_NxL = np.asarray(inputs_NxL, np.int32)
    if not len(inputs_NxL):
      raise UserInputError("no prompts to rank")
    if row_prior_NxR is not None:
      row_prior_NxR = np.asarray(row_prior_NxR, np.float32)
      if row_prior_NxR.shape != (len(inputs_NxL), self.id_table.num_tracks):
        raise UserInputError(f"row prior of shape {row_prior_NxR.shape}: expected "
                             f"{(len(inputs_NxL), self.id_table.num_tracks)} (prompts x catalog rows)")
      if not np.isfinite(row_prior_NxR).all():
        raise UserInputError("row prior: values must be finite")
    if dense_RxE is not None:
      if not isinstance(dense_RxE, jax.Array):  # (a device table, `weighted_dense`, was checked at load)
        dense_RxE = np.asarray(dense_RxE, np.float32)
        if not np.isfinite(dense_RxE).all():
          raise UserInputError("dense table: values must be finite")
      if dense_RxE.ndim != 2 or dense_RxE.shape[0] != self.id_table.num_tracks:
        raise UserInputError(f"dense table of shape {tuple(dense_RxE.shape)}: expected "
                             f"({self.id_table.num_tracks}, encoder width)")
      dense_RxE = jax.device_put(dense_RxE)
    topk = self.topk_fn(k, **kwargs)
    fn = lambda params, inputs_BxL, row_prior_BxR=None: topk(params, inputs_BxL, row_prior_BxR=row_prior_BxR,
                                                              dense_RxE=dense_RxE)
    return evaluation.batched_topk(fn, self._params(params), inputs_NxL,
                                   batch_size=max(1, min(batch_size, len(inputs_NxL))),
                                   progress=progress, side_NxR=row_prior_NxR)

  # ------------------------------------------------------------------------------ prompts

  def normalize(self, prompts: Sequence[str]) -> list[str]:
    """Prompts as the model reads them (`prompts.normalize_prompt`, cut as in training)."""
    out = []
    for i, p in enumerate(prompts):
      try:
        out.append(prompts_lib.normalize_prompt(p, max_chars=self.max_prompt_chars))
      except UserInputError as e:
        raise UserInputError(f"prompt #{i + 1}: {e}") from None
    return out

  def encode(self, prompts: Sequence[str]) -> np.ndarray:
    """Normalised, tokenised prompts (+EOS) as [B, inputs_length] int32."""
    # Plain text, as training prompts: user-typed "<id_l_c>" must not become ID tokens.
    toks = [self.input_vocab.encode_prompt(text) for text in self.normalize(prompts)]
    return evaluation.pad_inputs(toks, self.inputs_length)

  def lexical_prior(self, prompts: Sequence[str], weight: float | None = None) -> np.ndarray | None:
    """[B, num_rows] `weight` (default: the model dir's) x each row's BM25 share of each prompt, or None
    (weight 0 or no index): the `row_prior_NxR` that `recommend` adds to the search."""
    weight = self.lexical_prior_weight if weight is None else assets_lib.check_prior_weight(weight, "lexical prior weight")
    if not weight:
      return None
    if self.lexical is None:
      raise UserInputError("a lexical prior needs the model dir's lexical index (MODEL_DIR/assets/lexical)")
    return np.float32(weight) * self.lexical.shares(self.normalize(prompts))

  def embed_inputs(self, inputs_NxL: np.ndarray, *, params=None, batch_size: int = 32) -> np.ndarray:
    """L2-normalised mean-pooled encoder states of tokenised prompts, float32 [N, E]: the model's
    encoder as a sentence encoder (sentence-transformers' pooling, `bert.mean_pool`), in fixed-shape
    batches."""
    if self._embed_fn is None:
      model = self.model
      self._embed_fn = jax.jit(lambda p, x: bert.mean_pool(model.encode(p, x), x))
    inputs_NxL = np.asarray(inputs_NxL, np.int32)
    params, b = self._params(params), max(1, min(batch_size, len(inputs_NxL)))
    out = []
    for start in range(0, len(inputs_NxL), b):
      chunk = inputs_NxL[start:start + b]
      padded = np.concatenate([chunk, np.repeat(chunk[:1], b - len(chunk), axis=0)]) if len(chunk) < b else chunk
      out.append(np.asarray(jax.device_get(self._embed_fn(params, padded)), np.float32)[:len(chunk)])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

  def dense_prior(self, prompts: Sequence[str] | None = None, weight: float | None = None, *,
                  inputs_NxL: np.ndarray | None = None, params=None) -> np.ndarray | None:
    """[B, num_rows] `weight` (default: the model dir's) x the cosine of each prompt's encoder
    embedding (`embed_inputs`; prompts or already tokenised `inputs_NxL`) with each row of the dense
    table, or None (weight 0 or no table): on the host, what `recommend` adds inside its jitted search
    (`weighted_dense`)."""
    weight = self.dense_prior_weight if weight is None else assets_lib.check_prior_weight(weight, "dense prior weight")
    if not weight:
      return None
    if self.dense is None:
      raise UserInputError("a dense prior needs the model dir's dense track table (MODEL_DIR/assets/dense_tracks.npy)")
    q_BxE = self.embed_inputs(self.encode(prompts) if inputs_NxL is None else inputs_NxL, params=params)
    if q_BxE.shape[1] != self.dense.shape[1]:
      raise UserInputError(f"dense track table of width {self.dense.shape[1]} for an encoder of width {q_BxE.shape[1]}")
    return np.float32(weight) * (q_BxE @ self.dense.T)

  def _check_k(self, k) -> int:
    if (isinstance(k, bool) or not isinstance(k, (int, np.integer))
        or not 1 <= k <= self.id_table.num_tracks):
      raise UserInputError(f"k must be an integer in [1, {self.id_table.num_tracks}], got {k!r}")
    return int(k)

  def recommend_rows(self, prompts: Sequence[str], k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Top-k ID-table rows and scores, [B, k] each (row -1 if fewer than k valid IDs).

    `prompts` is a sequence of strings (a single string is one prompt).
    """
    if isinstance(prompts, str):
      prompts = [prompts]
    k = self._check_k(k)
    if not prompts:
      raise UserInputError("no prompts given")
    inputs = self.encode(prompts)
    prior = self.lexical_prior(prompts)  # host-side bm25s; the dense prior is added on the device
    # Pad the batch to a power of two so a few compiled shapes serve every batch size.
    b = len(prompts)
    padded = 1 << (b - 1).bit_length()
    if padded > b:
      inputs = np.concatenate([inputs, np.repeat(inputs[:1], padded - b, axis=0)])
      if prior is not None:
        prior = np.concatenate([prior, np.repeat(prior[:1], padded - b, axis=0)])
    rows, scores = jax.device_get(self.topk_fn(k)(self._params(None), inputs, row_prior_BxR=prior,
                                                  dense_RxE=self.weighted_dense()))
    return np.asarray(rows)[:b], np.asarray(scores)[:b]

  def recommend(self, prompts: Sequence[str], k: int = 10) -> list[list[Recommendation]]:
    """Ranked recommendations per prompt (a single string is one prompt)."""
    rows, scores = self.recommend_rows(prompts, k)
    out = []
    for r_K, s_K in zip(rows, scores):
      recs = []
      for rank, (r, s) in enumerate(((r, s) for r, s in zip(r_K, s_K) if r >= 0), 1):
        tid = self.id_table.track_ids[int(r)]
        t = self.tracks.get(tid)
        recs.append(Recommendation(rank, tid, t.artist if t else "", t.title if t else "", float(s)))
      out.append(recs)
    return out

  def score(self, prompts, rows_BxR, *, params=None) -> np.ndarray:
    """Teacher-forced log-probability (sum over the ID's tokens) of R table rows per prompt, float32
    [B, R]: what beam search scores them (prompts: strings, or int32 [B, L] already encoded)."""
    inputs = (np.asarray(prompts, np.int32) if isinstance(prompts, np.ndarray)
              else self.encode([prompts] if isinstance(prompts, str) else prompts))
    rows_BxR = np.asarray(rows_BxR, np.int64)
    if rows_BxR.ndim != 2 or len(rows_BxR) != len(inputs):
      raise UserInputError(f"rows must be [{len(inputs)}, R], got shape {rows_BxR.shape}")
    if rows_BxR.size and not (0 <= rows_BxR.min() and rows_BxR.max() < self.id_table.num_tracks):
      raise UserInputError(f"rows must be ID-table rows in [0, {self.id_table.num_tracks})")
    seqs_NxL = index_lib.token_seqs_for_table(self.id_table, self.vocab.id_token_offset)
    out = generate.score_rows(self.model, self._params(params), inputs, seqs_NxL[rows_BxR])
    return np.asarray(jax.device_get(out))
