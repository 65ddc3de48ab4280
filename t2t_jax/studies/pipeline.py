"""The Text2Tracks pipeline as steps shared by `t2t quickstart`, tools/compare_ids.py and
tools/scaling_study.py.

  prepare_synthetic     synthetic catalog + playlists, SentencePiece vocabulary     -> Workspace
  open_dataset          an imported dataset dir (`t2t import`), one of its folds    -> Workspace
  load_workspace        a dataset dir already in place (an open_dataset copy, reopened) -> Workspace
  check_dataset_dir     open_dataset's pre-flight (reads only): dataset dir, fold, output overlap
  catalog_cf_embeddings CF track embeddings of the training playlists (JAX), cold tracks placed
  build_table           one ID spec (`ids.specs.IdSpec`) -> IdTable saved under {dataset}/ids/{name}
  make_task             the SeqIO task of that table + its held-out examples        -> Task
  train_text2tracks     training through the gin entry (`t2t_jax.train.run`)       -> TrainOutcome
  load_retriever        a model dir's trained model over a task's ID table (built once for a decoding grid)
  evaluate_text2tracks  constrained beam search over the held-out prompts, metrics, prompts/s

Training composes gin/models/t5_1_1_{size}.gin + gin/runs/finetune.gin + RECIPE_GIN (the CPU recipe
of every README and docs/ figure) + bindings, exactly what a pod user passes to `python -m t2t_jax.train`;
each model dir holds the resulting config.gin and its assets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
import time
from typing import Any, Callable, Sequence

import numpy as np

from t2t_jax import evaluation, io_utils, models
from t2t_jax import train as train_script
from t2t_jax.data import finish, formats, synthetic
from t2t_jax.data import prompts as prompts_lib
from t2t_jax.data import vocab as vocab_lib
from t2t_jax.errors import UserInputError
from t2t_jax.ids import catalog, specs
from t2t_jax.ids import table as table_lib
from t2t_jax.serving import retriever as retriever_lib
from t2t_jax.training import checkpoints

TASK_DATASET = "synthetic"
RECIPE_GIN = "experiments/synthetic_cpu.gin"


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


def track_text(track) -> str:
  """A track's metadata as one string (BM25 documents, dual-encoder track tower, SentencePiece)."""
  return f"{track.artist} {track.title} {track.album} {' '.join(track.tags)}"


def cli_overrides(args) -> dict:
  """Keyword overrides from the --out / --work_dir / --no_progress flags shared by the study tools:
  flags given on the command line beat the gin file."""
  overrides = {}
  if getattr(args, "out", None):
    overrides["out_dir"] = args.out
  if getattr(args, "work_dir", None):
    overrides["work_dir"] = args.work_dir
  if getattr(args, "no_progress", False):
    overrides["progress"] = False
  return overrides


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
  name: str = TASK_DATASET  # the dataset's name in task names: t2t.{name}.{strategy}.{field}

  @property
  def num_tracks(self) -> int:
    return len(self.ds.tracks)

  @property
  def track_ids(self) -> list[str]:
    return [t.track_id for t in self.ds.tracks]

  def popularity(self) -> np.ndarray:
    """int64 [N]: training playlists containing each catalog row."""
    counts_N = np.zeros(self.num_tracks, np.int64)
    for rows in self.rows_train:
      np.add.at(counts_N, np.unique(np.asarray(rows, np.int64)), 1)
    return counts_N


def prepare_synthetic(work_dir: str, *, seed: int = 0, num_tracks: int = 3000,
                      num_playlists: int = 5000, vocab_size: int = 2000,
                      synthetic_overrides: dict | None = None,
                      stage: Stages | None = None) -> Workspace:
  """Generates the synthetic dataset under {work_dir}/data/synthetic (replacing it) + SentencePiece."""
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
  return Workspace(data_root=data_root, ds_dir=ds_dir, ds=ds, train_playlists=train_pl,
                   test_playlists=test_pl, rows_train=rows_train, spm_path=spm_path, seconds=seconds)


def _load_workspace(ds_dir: str, name: str, stage: Stages, seconds: dict) -> Workspace:
  ds = formats.Dataset.load(ds_dir)
  train_pl, test_pl = list(ds.playlists("train")), list(ds.playlists("test"))
  if not train_pl or not test_pl:
    raise UserInputError(f"dataset {ds_dir}: needs training and test playlists, has "
                         f"{len(train_pl)} / {len(test_pl)} (splits.json)")
  spm_path = os.path.join(ds_dir, formats.VOCAB_DIR, formats.SPM_FILE)
  if not os.path.isfile(spm_path):
    raise UserInputError(f"dataset {ds_dir}: missing {formats.VOCAB_DIR}/{formats.SPM_FILE} "
                         "(import it with `t2t import`, which trains the vocabulary)")
  if stage.verbose:
    print(f"      {len(ds.tracks)} tracks, {len(train_pl)} train / {len(test_pl)} test playlists")
  rows_train = [[ds.track_row[t] for t in p.track_ids] for p in train_pl]
  return Workspace(data_root=os.path.dirname(ds_dir), ds_dir=ds_dir, ds=ds, train_playlists=train_pl,
                   test_playlists=test_pl, rows_train=rows_train, spm_path=spm_path, seconds=seconds,
                   name=name)


def check_dataset_dir(dataset_dir: str, *, fold: int | None = None,
                      outputs: Sequence[tuple[str, str]] = ()) -> None:
  """Pre-flight of `open_dataset` that reads but writes nothing: `dataset_dir` is an imported dataset
  dir (`t2t import`), `fold` one of its folds.json folds, and no output dir (flag, path) overlaps it.
  Raises UserInputError naming the flag and the path."""
  path = os.path.abspath(os.fspath(dataset_dir))
  if not os.path.isdir(path):
    raise UserInputError(f"--dataset_dir {dataset_dir}: not a directory (make one with `t2t import`)")
  missing = [f for f in (formats.CATALOG_FILE, formats.PLAYLISTS_FILE, formats.SPLITS_FILE)
             if not os.path.isfile(os.path.join(path, f))]
  if missing:
    raise UserInputError(f"--dataset_dir {dataset_dir}: not a dataset dir (missing {', '.join(missing)}; "
                         "make one with `t2t import`)")
  if fold is None:
    spm = os.path.join(formats.VOCAB_DIR, formats.SPM_FILE)
    if not os.path.isfile(os.path.join(path, spm)):
      raise UserInputError(f"--dataset_dir {dataset_dir}: missing {spm} (import it with `t2t import`, "
                           "which trains the vocabulary)")
  else:
    folds_path = os.path.join(path, formats.FOLDS_FILE)
    if not os.path.isfile(folds_path):
      raise UserInputError(f"--fold {fold}: {dataset_dir} has no {formats.FOLDS_FILE} (`t2t import cpcd` "
                           "writes one; other formats have splits.json only: drop --fold)")
    try:
      formats.fold_splits(folds_path, fold)
    except UserInputError as e:
      raise UserInputError(f"--fold {fold}: {e}") from None
  for flag, out in outputs:
    out = os.path.abspath(os.fspath(out))
    if os.path.commonpath([out, path]) in (out, path):
      raise UserInputError(f"{flag} {out} overlaps --dataset_dir {path}: the dataset dir is only read, "
                           "use an output dir outside it")


def open_dataset(dataset_dir: str, work_dir: str, *, fold: int | None = None,
                 name: str | None = None, stage: Stages | None = None) -> Workspace:
  """A working copy of an imported dataset dir (`t2t import`) under {work_dir}/data/{name}.

  The input dir is never written to: the IDs, tasks and caches of a study live in the copy
  (catalog, playlists, splits, meta, vocabulary).  `fold`: the dataset's folds.json fold k as the
  test split (`finish.materialize_fold`: validation from the other folds, vocabulary retrained on
  that fold's training prompts); None keeps splits.json.
  """
  stage = stage or Stages(verbose=False)
  dataset_dir = os.path.abspath(os.fspath(dataset_dir))
  if not os.path.isdir(dataset_dir):
    raise UserInputError(f"--dataset_dir {dataset_dir}: not a directory (make one with `t2t import`)")
  base = name or os.path.basename(os.path.normpath(dataset_dir))
  name = base if fold is None else f"{base}_fold{fold}"
  data_root = os.path.abspath(os.path.join(work_dir, "data"))
  ds_dir = os.path.join(data_root, name)
  if os.path.commonpath([ds_dir, dataset_dir]) in (ds_dir, dataset_dir):
    raise UserInputError(f"--work_dir {work_dir} overlaps the dataset dir {dataset_dir}")
  # Never start from stale state, but only replace a copy this function made (its marker): a
  # folder of the user's at that path is refused with one line.
  io_utils.check_output_dir(ds_dir, kind="dataset", inputs=(dataset_dir,))
  shutil.rmtree(ds_dir, ignore_errors=True)
  os.makedirs(data_root, exist_ok=True)
  t = time.time()
  with stage(f"dataset {name} from {dataset_dir}"):
    if fold is not None:
      finish.materialize_fold(dataset_dir, fold, ds_dir)
    else:
      formats.Dataset.load(dataset_dir)  # validate before copying
      tmp = ds_dir + ".copy.tmp"
      shutil.rmtree(tmp, ignore_errors=True)
      os.makedirs(tmp)
      for entry in (formats.CATALOG_FILE, formats.PLAYLISTS_FILE, formats.SPLITS_FILE, formats.META_FILE,
                    formats.FOLDS_FILE, "track_aliases.json", formats.VOCAB_DIR):
        src = os.path.join(dataset_dir, entry)
        if os.path.isdir(src):
          shutil.copytree(src, os.path.join(tmp, entry))
        elif os.path.isfile(src):
          shutil.copyfile(src, os.path.join(tmp, entry))
      io_utils.write_marker(tmp, kind="dataset")
      os.rename(tmp, ds_dir)
    return _load_workspace(ds_dir, name, stage, {"open_dataset": time.time() - t})


def load_workspace(ds_dir: str, *, name: str | None = None, stage: Stages | None = None) -> Workspace:
  """The Workspace of a dataset dir already in place, e.g. an `open_dataset` copy reopened by a later
  process (its ids/ stay): loaded and checked as `open_dataset` loads its copy, nothing written."""
  ds_dir = os.path.abspath(os.fspath(ds_dir))
  if not os.path.isdir(ds_dir):
    raise UserInputError(f"{ds_dir}: not a directory (make one with `t2t import` or `open_dataset`)")
  seconds: dict = {}
  t = time.time()
  ws = _load_workspace(ds_dir, name or os.path.basename(ds_dir), stage or Stages(verbose=False), seconds)
  seconds["load_workspace"] = time.time() - t
  return ws


def catalog_cf_embeddings(ws: Workspace, *, dim: int = 64, seed: int = 0,
                          cold_start: str = "auto") -> tuple[np.ndarray, dict]:
  """(float32 [N, dim] CF embeddings of the training playlists (normalised co-occurrence SVD, JAX),
  info) with the tracks in no training playlist placed by `ids.catalog.catalog_embeddings`
  (cold_start "auto" without text vectors: their artist's warm tracks, else near the warm centre;
  info["cold_start"] counts them; no downloaded model needed)."""
  return catalog.catalog_embeddings(tracks=ws.ds.tracks, rows_train=ws.rows_train, source="svd",
                                    dim=dim, seed=seed, cold_start=cold_start)


def cf_embeddings(ws: Workspace, *, dim: int = 64, seed: int = 0) -> np.ndarray:
  """float32 [N, dim]: `catalog_cf_embeddings` without its info."""
  return catalog_cf_embeddings(ws, dim=dim, seed=seed)[0]


def build_table(ws: Workspace, spec, *, embeddings_NxD: np.ndarray | None = None, seed: int = 0,
                embedding_info: dict | None = None):
  """`spec`'s IdTable over the catalog (`ids.specs.build_table`), saved under
  {dataset}/ids/{spec.name} (`embedding_info`, e.g. `catalog_cf_embeddings`' info, goes to its
  meta and stats.json).  Returns (table, seconds)."""
  t = time.time()
  tracks = ws.ds.tracks
  table = specs.build_table(
      spec, track_ids=ws.track_ids, artists=[x.artist for x in tracks],
      titles=[x.title for x in tracks], encode_fn=vocab_lib.TextAndIdVocab(ws.spm_path).sp.EncodeAsIds,
      embeddings_NxD=embeddings_NxD, popularity_N=ws.popularity(), seed=seed,
      embedding_info=embedding_info)
  seconds = time.time() - t
  assert table.track_ids == ws.track_ids, "ID-table rows must be catalog rows"
  table.save(os.path.join(ws.ds_dir, "ids", spec.name))
  return table, seconds


decode_steps = table_lib.decode_steps  # lives beside id_stats: gin-free tools (bench_scaling) use it


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
  data_root: str

  @property
  def prompts(self) -> list[str]:
    return [ex["prompt"] for ex in self.eval_examples]

  @property
  def relevant(self) -> list[np.ndarray]:
    return [ex["relevant_rows"] for ex in self.eval_examples]

  def eval_inputs(self) -> np.ndarray:
    return evaluation.pad_inputs([ex["inputs"] for ex in self.eval_examples],
                                 self.feature_lengths["inputs"])


MAX_WORDPIECE_LENGTH = 512  # BERT-style encoders' absolute positions


def wordpiece_inputs_length(ws: Workspace, source, prompt_field: str) -> int:
  """`default_inputs_length` in a pretrained encoder's WordPiece tokens ([CLS] ... [SEP] included,
  prompts cut at the task's max chars), capped at MAX_WORDPIECE_LENGTH."""
  del prompt_field  # the source's own
  source.vocab  # pylint: disable=pointless-statement  (loads the source's tokenizers)
  lengths = [len(source._tokens(source._prompt(p))) for p in ws.train_playlists]  # pylint: disable=protected-access
  return int(min(MAX_WORDPIECE_LENGTH, -(-np.percentile(lengths, 99.9) // 8) * 8))


def default_inputs_length(ws: Workspace, vocab, prompt_field: str) -> int:
  """The 99.9th percentile of training prompt lengths (+EOS), rounded up to a multiple of 8:
  encoder FLOPs grow with the padded length."""
  lengths = [len(vocab.encode(prompts_lib.make_prompt(p, prompt_field))) + 1
             for p in ws.train_playlists]
  return int(-(-np.percentile(lengths, 99.9) // 8) * 8)


def make_task(ws: Workspace, table, spec_name: str, *, prompt_field: str = "title",
              inputs_length: int | None = None, eval_playlists: int | None = None,
              eval_split: str = "test", input_vocab: str | None = None) -> Task:
  """Registers `t2t.{ws.name}.{spec_name}.{prompt_field}` for the table saved by `build_table`.

  `input_vocab` (e.g. 'minilm', for gin/models/bert_t5_minilm.gin): prompts in that pretrained
  encoder's WordPiece vocabulary, the task name ends '.{input_vocab}', targets use the ID-only
  vocabulary (`tasks.t2t_tasks.output_vocabulary`) and the default inputs length counts WordPiece
  tokens (at most `MAX_WORDPIECE_LENGTH`, the encoder's positions).
  """
  from tasks import pipeline, t2t_tasks  # pylint: disable=g-import-not-at-top  (lazy: tasks loads TensorFlow)
  name = t2t_tasks.task_name(ws.name, spec_name, prompt_field, input_vocab)
  t2t_tasks.register_task(name, ws.ds_dir, os.path.join(ws.ds_dir, "ids", spec_name), ws.spm_path,
                          prompt_field, input_vocab=input_vocab)
  if input_vocab is None:
    vocab = vocab_lib.TextAndIdVocab(ws.spm_path, table.level_sizes)
    inputs_length = inputs_length or default_inputs_length(ws, vocab, prompt_field)
  else:
    source = t2t_tasks.task_source(name)
    vocab = source.vocab  # IdOnlyVocab, or SentencePiece + IDs for text IDs
    inputs_length = inputs_length or wordpiece_inputs_length(ws, source, prompt_field)
  eval_examples = pipeline.get_eval_examples(name, eval_split, max_examples=eval_playlists or None)
  # Targets: the longest ID + EOS.
  lengths = {"inputs": int(inputs_length), "targets": int(table.lengths.max()) + 1}
  return Task(name=name, table=table, vocab=vocab, feature_lengths=lengths,
              eval_examples=eval_examples, data_root=ws.data_root)


@dataclasses.dataclass
class TrainOutcome:
  model_dir: str
  config: Any  # the model config
  seconds: float
  examples_per_second: float | None
  final_loss: float | None


def train_gin(task: Task, *, model_dir: str, model: str = "tiny", train_steps: int = 1500,
              batch_size: int = 128, learning_rate: float = 3e-3, warmup_steps: int | None = None,
              seed: int = 0, progress: bool = False, model_overrides: dict | None = None,
              tensorboard: bool = True, num_devices: int | None = None,
              handle_sigterm: bool = True, beam_size: int = 20,
              extra_bindings: Sequence[str] = (),
              model_gin: str | None = None) -> tuple[list[str], list[str]]:
  """(gin files, bindings) that train `task` with the CPU recipe: what `train_text2tracks` runs
  and what `python -m t2t_jax.train` accepts as --gin_file / --gin. flags.  `model_gin` replaces
  the model file models/t5_1_1_{model}.gin (e.g. "models/bert_t5_minilm.gin": its task must have
  been made with `make_task(..., input_vocab='minilm')`)."""
  files = [model_gin or f"models/t5_1_1_{model}.gin", "runs/finetune.gin", RECIPE_GIN]
  warmup = min(200, train_steps // 5) if warmup_steps is None else warmup_steps
  bindings = [f"MODEL_DIR={model_dir!r}", f"MIXTURE_OR_TASK_NAME={task.name!r}",
              f"TASK_FEATURE_LENGTHS={dict(task.feature_lengths)!r}",
              f"DATA_DIR={os.path.abspath(task.data_root)!r}", f"TRAIN_STEPS={int(train_steps)}",
              f"BATCH_SIZE={int(batch_size)}", f"LEARNING_RATE={float(learning_rate)!r}",
              f"WARMUP_STEPS={int(max(warmup, 1))}", f"RANDOM_SEED={int(seed)}",
              f"LOG_PERIOD={max(1, train_steps // 10)}",
              f"trainer.Trainer.progress={bool(progress)}",
              f"trainer.Trainer.tensorboard={bool(tensorboard)}",
              f"trainer.Trainer.handle_sigterm={bool(handle_sigterm)}",
              f"BEAM_SIZE={int(beam_size)}"]
  bindings += [f"t5.T5Config.{k}={v!r}" for k, v in (model_overrides or {}).items()]
  bindings += list(extra_bindings)
  if num_devices is not None:
    bindings.append(f"partitioning.PjitPartitioner.num_devices={int(num_devices)}")
  return files, bindings


def train_text2tracks(task: Task, *, model_dir: str, **kwargs) -> TrainOutcome:
  """Trains a fresh model (replacing model_dir) on the task through the gin train entry.

  kwargs: `train_gin`'s (model size, steps, batch size, learning rate, warm-up (default
  min(200, steps // 5)), seed, progress, model_overrides, tensorboard, num_devices,
  handle_sigterm, beam_size for the model dir's assets, extra_bindings).
  """
  shutil.rmtree(model_dir, ignore_errors=True)
  files, bindings = train_gin(task, model_dir=model_dir, **kwargs)
  t = time.time()
  result = train_script.run(files, bindings)
  seconds = time.time() - t
  loss = result.history[-1].get("loss") if result.history else None
  return TrainOutcome(model_dir=model_dir, config=result.config, seconds=seconds,
                      examples_per_second=result.examples_per_second,
                      final_loss=None if loss is None else float(loss))


def load_retriever(task: Task, model_dir: str, *, beam_size: int = 20) -> retriever_lib.GenerativeRetriever:
  """The trained model of `model_dir` over the task's ID table, as `evaluate_text2tracks` ranks with it.
  Build it once to score several decoding settings (beam, scoring, priors) of one model: its parameters
  load, its trie builds and each setting's decoder compiles once, not once per setting."""
  config, params = checkpoints.load_params(model_dir)
  return retriever_lib.GenerativeRetriever(
      model=models.build_model(config), params=params, id_table=task.table, vocab=task.vocab,
      inputs_length=task.feature_lengths["inputs"], beam_size=beam_size)


def evaluate_text2tracks(task: Task, model_dir: str, *, beam_size: int = 20, k: int = 10,
                         batch_size: int = 32, ks: Sequence[int] = (1, 5, 10),
                         progress: Callable | None = None, scoring: str = "log_prob",
                         row_prior_NxR: np.ndarray | None = None, dense_RxE: np.ndarray | None = None,
                         retriever: retriever_lib.GenerativeRetriever | None = None) -> dict:
  """Constrained beam search over the task's held-out prompts; metrics + prompts/s + index bytes.

  scoring: how beams are ranked ("log_prob" or "logit", `decoding.beam_search`); row_prior_NxR: a
  per-prompt bonus of every catalog row guiding the search; dense_RxE: weighted unit track vectors whose
  cosine with the prompt under the model's encoder is added to it (`GenerativeRetriever.rank_inputs`).
  retriever: `load_retriever(task, model_dir)` already built (a grid over one model's decoding settings;
  its ID table must be the task's); None: built here.

  Returns {"metrics": {...}, "rows_NxK": ..., "prompts_per_s", "decode_ms_per_batch",
  "index_bytes", "index_build_seconds"}.  The decoder is compiled outside the timing.
  """
  if beam_size < k:
    raise UserInputError(f"beam_size ({beam_size}) must be >= k ({k})")
  if retriever is None:
    retriever = load_retriever(task, model_dir, beam_size=beam_size)
  elif retriever.id_table is not task.table and (list(retriever.id_table.track_ids) != list(task.table.track_ids)
                                                 or not np.array_equal(retriever.id_table.codes, task.table.codes)):
    raise ValueError(f"evaluate_text2tracks: the retriever's ID table is not task {task.name}'s")
  inputs = task.eval_inputs()
  batch_size = max(1, min(batch_size, len(inputs)))
  rank = functools.partial(retriever.rank_inputs, k=k, beam_size=beam_size, batch_size=batch_size, scoring=scoring,
                           dense_RxE=None if dense_RxE is None else np.asarray(dense_RxE, np.float32))
  rank(inputs[:batch_size], row_prior_NxR=None if row_prior_NxR is None else row_prior_NxR[:batch_size])  # compile, untimed
  t = time.time()
  rows_NxK, _ = rank(inputs, progress=progress, row_prior_NxR=row_prior_NxR)
  secs = time.time() - t
  metrics = evaluation.evaluate_rankings(rows_NxK, task.relevant, ks=ks)
  num_batches = -(-len(inputs) // batch_size)
  return {"metrics": metrics, "rows_NxK": rows_NxK, "prompts_per_s": round(len(inputs) / secs, 1),
          "decode_ms_per_batch": round(1000 * secs / num_batches, 1),
          "index_bytes": int(retriever.index.nbytes),
          "index_build_seconds": round(retriever.index_build_seconds, 3)}
