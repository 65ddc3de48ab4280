"""The Text2Tracks pipeline as reusable steps, shared by `t2t quickstart`, tools/compare_ids.py and
tools/scaling_study.py.

  prepare_synthetic     synthetic catalog + playlists, SentencePiece vocabulary     -> Workspace
  cf_embeddings         CF track embeddings of the training playlists (JAX)
  build_table           one ID strategy (an `IdSpec`) -> IdTable saved under {dataset}/ids/{name}
  make_task             the SeqIO task of that table: train batches + held-out examples -> Task
  train_text2tracks     T5 training on the task (t2t_jax.trainer)                  -> TrainOutcome
  evaluate_text2tracks  constrained beam search over the held-out prompts, metrics, prompts/s
  run_baselines         BM25, dense dual encoder and most-popular on the same held-out prompts

Every method is scored by `evaluation.evaluate_rankings` (t2t_jax.metrics) on the same test
playlists, with the same relevance sets (ID-table rows are catalog rows for every strategy).
This module is an entry-point helper (layer 3): it imports the TensorFlow-based `tasks` package
lazily, inside `make_task`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from typing import Any, Callable, Sequence

import numpy as np

from t2t_jax.errors import UserInputError

TASK_DATASET = "synthetic"
EOS_ID = 1


class Stages:
  """Context manager factory printing one line per stage with its wall time (kept in `times`)."""

  def __init__(self, verbose: bool = True):
    self.t0 = time.time()
    self.times: dict[str, float] = {}
    self.verbose = verbose

  @contextlib.contextmanager
  def __call__(self, name: str):
    if self.verbose:
      print(f"[t2t] {name} ...", flush=True)
    t = time.time()
    yield
    self.times[name] = round(time.time() - t, 2)
    if self.verbose:
      print(f"[t2t] {name}: {self.times[name]:.1f} s", flush=True)


def model_config(size: str, vocab_size: int):
  """T5.1.1 shapes by name; 'tiny' is the quickstart's CPU size (trains in a few CPU minutes)."""
  from t2t_jax.models import t5  # pylint: disable=g-import-not-at-top
  if size == "tiny":
    return t5.T5Config.preset("tiny", vocab_size=vocab_size, emb_dim=128, num_heads=4, head_dim=32,
                              mlp_dim=512, num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.0)
  if size == "micro":  # unit tests: compiles and trains in seconds
    return t5.T5Config.preset("tiny", vocab_size=vocab_size, emb_dim=32, num_heads=2, head_dim=16,
                              mlp_dim=64, num_encoder_layers=1, num_decoder_layers=1, dropout_rate=0.0)
  return t5.T5Config.preset(size, vocab_size=vocab_size)


def track_text(track) -> str:
  """A track's metadata as one string (BM25 documents, dual-encoder track tower, SentencePiece)."""
  return f"{track.artist} {track.title} {track.album} {' '.join(track.tags)}"


# ----------------------------------------------------------------------------------------------- #
# Data.


@dataclasses.dataclass
class Workspace:
  """A dataset dir with its loaded playlists and text vocabulary (the data every method shares)."""
  data_root: str
  ds_dir: str
  ds: Any  # formats.Dataset
  train_playlists: list
  test_playlists: list
  rows_train: list[list[int]]  # catalog rows of each training playlist
  spm_path: str
  seconds: dict = dataclasses.field(default_factory=dict)

  @property
  def num_tracks(self) -> int:
    return len(self.ds.tracks)

  @property
  def track_ids(self) -> list[str]:
    return [t.track_id for t in self.ds.tracks]


def prepare_synthetic(work_dir: str, *, seed: int = 0, num_tracks: int = 3000, num_playlists: int = 5000,
                      vocab_size: int = 2000, synthetic_overrides: dict | None = None,
                      stage: Stages | None = None) -> Workspace:
  """Generates the synthetic dataset under {work_dir}/data/synthetic (replacing it) + SentencePiece."""
  from t2t_jax.data import formats, prompts as prompts_lib, synthetic, vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  stage = stage or Stages(verbose=False)
  data_root = os.path.join(work_dir, "data")
  ds_dir = os.path.join(data_root, TASK_DATASET)
  shutil.rmtree(ds_dir, ignore_errors=True)  # never start from stale state
  seconds = {}
  with stage("generate synthetic catalog and playlists"):
    t = time.time()
    try:
      cfg = synthetic.SyntheticConfig(seed=seed, num_tracks=num_tracks, num_playlists=num_playlists,
                                      **(synthetic_overrides or {}))
    except TypeError as e:
      raise UserInputError(f"synthetic_overrides {synthetic_overrides}: {e}") from None
    synthetic.generate(cfg, ds_dir)
    ds = formats.Dataset.load(ds_dir)
    train_pl = list(ds.playlists("train"))
    test_pl = list(ds.playlists("test"))
    seconds["generate"] = time.time() - t
    if stage.verbose:
      print(f"      {len(ds.tracks)} tracks, {len(train_pl)} train / {len(test_pl)} test playlists")

  with stage("train SentencePiece text vocabulary"):
    t = time.time()

    def texts():
      for p in train_pl:
        yield prompts_lib.prompt_text(p.title, p.description, "both")
      for tr in ds.tracks:
        yield track_text(tr)
    spm_path = vocab_lib.train_sentencepiece(texts(), os.path.join(ds_dir, "vocab", "spm.model"),
                                             vocab_size=vocab_size)
    seconds["sentencepiece"] = time.time() - t
  rows_train = [[ds.track_row[t] for t in p.track_ids] for p in train_pl]
  return Workspace(data_root=data_root, ds_dir=ds_dir, ds=ds, train_playlists=train_pl, test_playlists=test_pl,
                   rows_train=rows_train, spm_path=spm_path, seconds=seconds)


def cf_embeddings(ws: Workspace, *, dim: int = 64, seed: int = 0) -> np.ndarray:
  """float32 [N, dim] CF embeddings (normalised co-occurrence SVD, JAX) of the training playlists."""
  from t2t_jax.ids import embeddings  # pylint: disable=g-import-not-at-top
  return embeddings.cooccurrence_embeddings(ws.rows_train, ws.num_tracks, dim=dim, seed=seed)


# ----------------------------------------------------------------------------------------------- #
# ID strategies.


@dataclasses.dataclass(frozen=True)
class IdSpec:
  """One ID strategy of the comparison: a name (table dir, task, row label), a `build_ids` strategy
  and its keyword arguments (e.g. IdSpec("integer_random", "integer", {"order": "random"}))."""
  name: str
  strategy: str
  kwargs: dict = dataclasses.field(default_factory=dict)

  @property
  def family(self) -> str:
    return self.strategy.split("_")[0]


def parse_id_specs(specs: Sequence) -> list[IdSpec]:
  """IdSpecs from gin-friendly values: IdSpec, (name, strategy, kwargs) or (name, strategy)."""
  from t2t_jax.ids import strategies  # pylint: disable=g-import-not-at-top
  out = []
  for s in specs:
    if not isinstance(s, IdSpec):
      if not isinstance(s, (tuple, list)) or len(s) not in (2, 3):
        raise UserInputError(f"ID spec {s!r}: expected (name, strategy[, kwargs])")
      s = IdSpec(str(s[0]), str(s[1]), dict(s[2]) if len(s) == 3 else {})
    if s.strategy not in strategies.STRATEGIES:
      raise UserInputError(f"ID spec {s.name!r}: unknown strategy {s.strategy!r}; choose one of "
                           f"{strategies.STRATEGIES}")
    if not s.name or not all(c.isalnum() or c == "_" for c in s.name):
      raise UserInputError(f"ID spec name {s.name!r}: use letters, digits and '_' only")
    out.append(s)
  names = [s.name for s in out]
  if len(set(names)) != len(names):
    raise UserInputError(f"ID spec names must be unique, got {names}")
  if not out:
    raise UserInputError("no ID strategies given")
  return out


def order_last_level_by_popularity(table, counts_N: np.ndarray):
  """Re-numbers the last ID level inside every prefix group by training popularity (code 0 = the
  group's most popular track; ties by row), keeping IDs unique and every code within its level size.

  Semantic IDs end with a level that only tells apart the tracks of one prefix group (the
  disambiguation level, or the leaf level of hierarchical k-means); its codes carry no meaning of
  their own (distance order).  Popularity order gives the same code the same meaning in every group
  ("the most popular track here"), which a generative model learns once for all groups.
  """
  from t2t_jax.ids.table import IdTable  # pylint: disable=g-import-not-at-top
  codes_NxL = table.codes.copy()
  if table.is_text or codes_NxL.shape[1] < 2:
    raise UserInputError(f"last_level_order='popularity' needs an ID of >= 2 fixed levels ({table.strategy})")
  n = codes_NxL.shape[0]
  prefix_N = np.unique(codes_NxL[:, :-1], axis=0, return_inverse=True)[1].reshape(-1)
  order = np.lexsort((np.arange(n), -np.asarray(counts_N, np.int64), prefix_N))  # group, then popularity
  sorted_prefix = prefix_N[order]
  starts = np.r_[0, np.flatnonzero(np.diff(sorted_prefix)) + 1]
  rank_sorted = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
  codes_NxL[order, -1] = rank_sorted
  meta = dict(table.meta, last_level_order="popularity")
  return IdTable(strategy=table.strategy, track_ids=table.track_ids, codes=codes_NxL, level_sizes=table.level_sizes,
                 is_text=False, meta=meta)


def build_table(ws: Workspace, spec: IdSpec, *, embeddings_NxD: np.ndarray | None = None, seed: int = 0):
  """Builds `spec`'s IdTable over the catalog (rows in catalog order) and saves it under
  {dataset}/ids/{spec.name}.  Returns (table, seconds).

  `spec.kwargs` go to `strategies.build_ids`, except `last_level_order`: "popularity" re-numbers the
  last level of semantic IDs by training popularity (`order_last_level_by_popularity`).
  """
  from t2t_jax.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  from t2t_jax.ids import strategies  # pylint: disable=g-import-not-at-top
  t = time.time()
  kwargs = dict(spec.kwargs)
  last_level_order = kwargs.pop("last_level_order", None)
  if last_level_order not in (None, "default", "popularity"):
    raise UserInputError(f"ID spec {spec.name!r}: last_level_order must be 'default' or 'popularity', "
                         f"got {last_level_order!r}")
  tracks = ws.ds.tracks
  if spec.strategy == "content":
    vocab = vocab_lib.TextAndIdVocab(ws.spm_path)
    table = strategies.build_ids("content", track_ids=ws.track_ids, artists=[x.artist for x in tracks],
                                 titles=[x.title for x in tracks], encode_fn=vocab.sp.EncodeAsIds, **kwargs)
  elif spec.strategy == "integer":
    kwargs.setdefault("seed", seed)
    table = strategies.build_ids("integer", track_ids=ws.track_ids, **kwargs)
  else:
    if embeddings_NxD is None:
      raise UserInputError(f"ID spec {spec.name!r} ({spec.strategy}) needs CF embeddings")
    kwargs.setdefault("seed", seed)
    table = strategies.build_ids(spec.strategy, track_ids=ws.track_ids, embeddings=embeddings_NxD, **kwargs)
  if last_level_order == "popularity":
    counts_N = np.zeros(ws.num_tracks, np.int64)
    for rows in ws.rows_train:
      np.add.at(counts_N, np.unique(np.asarray(rows, np.int64)), 1)
    table = order_last_level_by_popularity(table, counts_N)
  seconds = time.time() - t
  assert table.track_ids == ws.track_ids, "ID-table rows must be catalog rows"
  table.save(os.path.join(ws.ds_dir, "ids", spec.name))
  return table, seconds


def index_token_seqs(table, id_token_offset: int) -> np.ndarray:
  """int32 [N, L'] token sequences for the trie: fixed-length IDs as they are; variable-length
  (content) IDs end with EOS, so that one ID being a prefix of another stays decodable."""
  tokens_NxL = table.token_ids(id_token_offset)
  lengths_N = table.lengths
  if lengths_N.min() == lengths_N.max() and not table.is_text:
    return tokens_NxL
  out_NxL = np.zeros((tokens_NxL.shape[0], tokens_NxL.shape[1] + 1), np.int32)
  out_NxL[:, :-1] = tokens_NxL
  out_NxL[np.arange(len(lengths_N)), lengths_N] = EOS_ID
  return out_NxL


def id_stats(table) -> dict:
  """Decoding steps per ID (tokens generated per ID: mean and max; +1 EOS step for content IDs)."""
  lengths_N = table.lengths.astype(np.float64)
  extra = 1 if table.is_text else 0
  return {"decode_steps_per_id": round(float(lengths_N.mean()) + extra, 2),
          "decode_steps_max": int(lengths_N.max()) + extra,
          "id_tokens_added": int(table.num_id_tokens),
          "num_disambiguated": int(table.meta.get("num_disambiguated", 0) or 0)}


# ----------------------------------------------------------------------------------------------- #
# Task, training, evaluation.


@dataclasses.dataclass
class Task:
  """A registered SeqIO task with its vocabulary, lengths and held-out examples."""
  name: str
  table: Any
  vocab: Any
  feature_lengths: dict
  eval_examples: list

  @property
  def prompts(self) -> list[str]:
    return [ex["prompt"] for ex in self.eval_examples]

  @property
  def relevant(self) -> list[np.ndarray]:
    return [ex["relevant_rows"] for ex in self.eval_examples]

  def eval_inputs(self) -> np.ndarray:
    from t2t_jax import evaluation  # pylint: disable=g-import-not-at-top
    return evaluation.pad_inputs([ex["inputs"] for ex in self.eval_examples], self.feature_lengths["inputs"])


def default_inputs_length(ws: Workspace, vocab, prompt_field: str) -> int:
  """The 99.9th percentile of training prompt lengths (+EOS), rounded up to a multiple of 8:
  encoder FLOPs grow with the padded length."""
  from t2t_jax.data import prompts as prompts_lib  # pylint: disable=g-import-not-at-top
  lengths = [len(vocab.encode(prompts_lib.make_prompt(p, prompt_field))) + 1 for p in ws.train_playlists]
  return int(-(-np.percentile(lengths, 99.9) // 8) * 8)


def make_task(ws: Workspace, table, spec_name: str, *, prompt_field: str = "title",
              inputs_length: int | None = None, eval_playlists: int | None = None,
              eval_split: str = "test") -> Task:
  """Registers `t2t.synthetic.{spec_name}.{prompt_field}` for the table saved by `build_table`."""
  from t2t_jax.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  from tasks import pipeline, t2t_tasks  # pylint: disable=g-import-not-at-top
  vocab = vocab_lib.TextAndIdVocab(ws.spm_path, table.level_sizes)
  inputs_length = inputs_length or default_inputs_length(ws, vocab, prompt_field)
  name = t2t_tasks.task_name(TASK_DATASET, spec_name, prompt_field)
  t2t_tasks.register_task(name, ws.ds_dir, os.path.join(ws.ds_dir, "ids", spec_name), ws.spm_path, prompt_field)
  eval_examples = pipeline.get_eval_examples(name, eval_split, max_examples=eval_playlists or None)
  # Targets: the longest ID + EOS.
  lengths = {"inputs": int(inputs_length), "targets": int(table.lengths.max()) + 1}
  return Task(name=name, table=table, vocab=vocab, feature_lengths=lengths, eval_examples=eval_examples)


def train_batches(task: Task, *, batch_size: int, seed: int = 0):
  from tasks import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.get_numpy_batches(task.name, split="train", task_feature_lengths=task.feature_lengths,
                                    batch_size=batch_size, shuffle=True, seed=seed)


@dataclasses.dataclass
class TrainOutcome:
  model_dir: str
  config: Any  # T5Config
  seconds: float
  examples_per_second: float | None
  final_loss: float | None


def train_text2tracks(task: Task, *, model_dir: str, model: str = "tiny", train_steps: int = 1500,
                      batch_size: int = 128, learning_rate: float = 3e-3, warmup_steps: int | None = None,
                      seed: int = 0, progress: bool = False, model_overrides: dict | None = None,
                      tensorboard: bool = True, num_devices: int | None = None,
                      handle_sigterm: bool = True) -> TrainOutcome:
  """Trains T5 (fresh, replacing model_dir) on the task with the rsqrt schedule; returns timings.

  num_devices: data-parallel over the first n local devices (None: all of them).
  handle_sigterm: on SIGTERM save a checkpoint and return early (False: SIGTERM ends the process).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from t2t_jax import partitioning, trainer  # pylint: disable=g-import-not-at-top
  partitioner = None
  if num_devices is not None:
    if not 1 <= num_devices <= jax.local_device_count() or batch_size % num_devices:
      raise UserInputError(f"num_devices={num_devices}: need 1..{jax.local_device_count()} dividing "
                           f"batch_size={batch_size}")
    partitioner = partitioning.Partitioner(devices=jax.local_devices()[:num_devices])
  shutil.rmtree(model_dir, ignore_errors=True)
  mcfg = model_config(model, task.vocab.vocab_size)
  if model_overrides:
    mcfg = mcfg.replace(**model_overrides)
  t = time.time()
  result = trainer.train(
      model_config=mcfg, train_iter=train_batches(task, batch_size=batch_size, seed=seed), model_dir=model_dir,
      train_steps=train_steps, batch_size=batch_size, learning_rate=learning_rate, seed=seed, schedule="rsqrt",
      warmup_steps=min(200, train_steps // 5) if warmup_steps is None else warmup_steps,
      checkpoint_period=max(train_steps, 1), log_period=max(1, train_steps // 10), progress=progress,
      restore=False, tensorboard=tensorboard, partitioner=partitioner,
      handle_sigterm=handle_sigterm)
  seconds = time.time() - t
  loss = result.history[-1].get("loss") if result.history else None
  return TrainOutcome(model_dir=model_dir, config=mcfg, seconds=seconds,
                      examples_per_second=result.examples_per_second,
                      final_loss=None if loss is None else float(loss))


def evaluate_text2tracks(task: Task, model_dir: str, *, beam_size: int = 20, k: int = 10, batch_size: int = 32,
                         ks: Sequence[int] = (1, 5, 10), progress: Callable | None = None) -> dict:
  """Constrained beam search over the task's held-out prompts; metrics + prompts/s + index bytes.

  Returns {"metrics": {...}, "rows_NxK": ..., "prompts_per_s", "decode_ms_per_batch", "index_bytes"}.
  The decoder is compiled outside the timing (one warm-up batch).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from t2t_jax import evaluation, trainer  # pylint: disable=g-import-not-at-top
  from t2t_jax.decoding import index as index_lib  # pylint: disable=g-import-not-at-top
  if beam_size < k:
    raise UserInputError(f"beam_size ({beam_size}) must be >= k ({k})")
  config, params = trainer.load_params(model_dir)
  t = time.time()
  index = index_lib.build_index(index_token_seqs(task.table, task.vocab.id_token_offset), task.vocab.vocab_size)
  index_seconds = time.time() - t
  index_bytes = index.nbytes
  fn = evaluation.constrained_topk_fn(config, index, beam_size=beam_size, k=k)
  inputs = task.eval_inputs()
  warm = inputs[:batch_size] if len(inputs) >= batch_size else np.resize(inputs, (batch_size, inputs.shape[1]))
  jax.block_until_ready(fn(params, warm))
  t = time.time()
  rows_NxK, _ = evaluation.batched_topk(fn, params, inputs, batch_size=batch_size, progress=progress)
  secs = time.time() - t
  metrics = evaluation.evaluate_rankings(rows_NxK, task.relevant, ks=ks)
  num_batches = -(-len(inputs) // batch_size)
  return {"metrics": metrics, "rows_NxK": rows_NxK, "prompts_per_s": round(len(inputs) / secs, 1),
          "decode_ms_per_batch": round(1000 * secs / num_batches, 1), "index_bytes": int(index_bytes),
          "index_build_seconds": round(index_seconds, 3)}


# ----------------------------------------------------------------------------------------------- #
# Baselines.


BASELINES = ("bm25", "dual_encoder", "most_popular")
BASELINE_LABELS = {"bm25": "BM25 (bm25s)", "dual_encoder": "Dual encoder (T5 enc, in-batch softmax)",
                   "most_popular": "Most popular"}


def run_baselines(ws: Workspace, prompts: Sequence[str], relevant: Sequence[Sequence[int]], *,
                  k: int = 10, prompt_field: str = "title", which: Sequence[str] = ("bm25", "most_popular"),
                  dual_encoder_kwargs: dict | None = None, seed: int = 0, ks: Sequence[int] = (1, 5, 10),
                  progress: bool = False) -> list[dict]:
  """Rows (method, metrics, train_seconds, prompts_per_s) of the baselines on the same prompts."""
  from t2t_jax import evaluation  # pylint: disable=g-import-not-at-top
  from t2t_jax.baselines import bm25, popularity  # pylint: disable=g-import-not-at-top
  from t2t_jax.data import prompts as prompts_lib  # pylint: disable=g-import-not-at-top
  unknown = [w for w in which if w not in BASELINES]
  if unknown:
    raise UserInputError(f"unknown baselines {unknown}; choose from {BASELINES}")
  from t2t_jax.baselines.catalog import CatalogTexts  # pylint: disable=g-import-not-at-top
  catalog = CatalogTexts.from_tracks(ws.ds.tracks, track_text)
  train_prompts = [(prompts_lib.make_prompt(p, prompt_field), r) for p, r in zip(ws.train_playlists, ws.rows_train)]
  rows = []
  for name in which:
    t = time.time()
    extra = {}
    if name == "bm25":
      model = bm25.BM25Retriever().fit(catalog, train_prompts)
    elif name == "most_popular":
      model = popularity.MostPopular().fit(catalog, train_prompts)
    else:
      from t2t_jax.baselines import dual_encoder  # pylint: disable=g-import-not-at-top
      from t2t_jax.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
      vocab = vocab_lib.TextAndIdVocab(ws.spm_path)
      kw = dict(dual_encoder_kwargs or {})
      kw.setdefault("seed", seed)
      kw.setdefault("progress", progress)
      model = dual_encoder.DualEncoderRetriever(encode_fn=vocab.sp.EncodeAsIds, vocab_size=vocab.vocab_size,
                                                **kw).fit(catalog, train_prompts)
      extra = {"final_loss": model.final_loss, "train_examples_per_s": model.examples_per_second}
    train_s = time.time() - t
    if extra.get("train_examples_per_s"):  # steady-state training time, as for Text2Tracks rows
      extra["train_wall_seconds"] = round(train_s, 1)
      train_s = model.train_steps * model.batch_size / extra["train_examples_per_s"]
    model.recommend(list(prompts[:8]), k)  # warm-up (jit compile) outside the timing
    t = time.time()
    ranked = model.recommend(list(prompts), k)
    secs = max(time.time() - t, 1e-9)
    rows.append({"method": BASELINE_LABELS[name], "id_strategy": None,
                 **evaluation.evaluate_rankings(np.asarray(ranked), relevant, ks=ks),
                 "decode_steps_per_id": None, "train_seconds": round(train_s, 1),
                 "prompts_per_s": round(len(prompts) / secs, 1), **extra})
  return rows


# ----------------------------------------------------------------------------------------------- #
# Results files.


def cli_overrides(args) -> dict:
  """Keyword overrides from the --out / --work_dir / --no_progress flags shared by the experiment tools
  (tools/compare_ids.py, tools/scaling_study.py): flags given on the command line beat the gin file."""
  overrides = {}
  if getattr(args, "out", None):
    overrides["out_dir"] = args.out
  if getattr(args, "work_dir", None):
    overrides["work_dir"] = args.work_dir
  if getattr(args, "no_progress", False):
    overrides["progress"] = False
  return overrides


def machine_info() -> dict:
  """Where a benchmark ran: host CPU, cores, load, JAX backend and devices, time."""
  import platform  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    cpu = names[0] if names else cpu
  except OSError:
    pass
  try:
    load = [round(x, 2) for x in os.getloadavg()]
  except OSError:
    load = None
  return {"cpu": cpu, "cpu_count": os.cpu_count(), "load_avg_1_5_15": load, "platform": platform.platform(),
          "python": platform.python_version(), "jax": jax.__version__, "backend": jax.default_backend(),
          "devices": [str(d) for d in jax.devices()], "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _cell(v) -> str:
  if v is None:
    return "-"
  if isinstance(v, float):
    return f"{v:.4f}" if abs(v) < 10 else f"{v:,.1f}"
  if isinstance(v, (list, tuple)):
    return "x".join(str(x) for x in v)
  return str(v)


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
  """GitHub-markdown table of `rows` restricted to `columns` ('-' for missing)."""
  lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
  lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
  return "\n".join(lines)


def write_results(out_dir: str, rows: Sequence[dict], *, columns: Sequence[str], title: str, machine: dict,
                  config: dict, notes: Sequence[str] = ()) -> None:
  """results.json (list of rows), results.csv (all keys), results.md (table + machine + config)."""
  import csv  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  from t2t_jax import io_utils  # pylint: disable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)
  io_utils.write_json(os.path.join(out_dir, "results.json"), list(rows))
  keys = list(dict.fromkeys(k for r in rows for k in r))
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
  writer.writeheader()
  for r in rows:
    writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})
  with io_utils.atomic_write(os.path.join(out_dir, "results.csv")) as f:
    f.write(buf.getvalue())
  md = [f"# {title}", "", markdown_table(rows, columns), ""]
  md += [f"- {n}" for n in notes]
  md += ["", f"Machine: {machine.get('cpu')} ({machine.get('cpu_count')} cores, "
         f"load {machine.get('load_avg_1_5_15')} at the start), "
         f"JAX {machine.get('jax')} on {machine.get('backend')}, {machine.get('date_utc')}.", "",
         "## Config", "", "```json", json.dumps(config, indent=2, default=str), "```", ""]
  with io_utils.atomic_write(os.path.join(out_dir, "results.md")) as f:
    f.write("\n".join(md))


def save_figure(fig, path: str, dpi: int = 80) -> None:
  """Saves a matplotlib figure as PNG atomically and closes it."""
  import io  # pylint: disable=g-import-not-at-top
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from t2t_jax import io_utils  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  fig.tight_layout()
  fig.savefig(buf, format="png", dpi=dpi)
  plt.close(fig)
  with io_utils.atomic_write(path, "wb", encoding=None) as f:
    f.write(buf.getvalue())
