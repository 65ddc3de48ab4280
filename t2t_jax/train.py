r"""Train entry point (T5X style): `python -m t2t_jax.train --gin_file=... --gin.MODEL_DIR=\"...\"`.

The same entry runs runs/eval.gin, runs/infer.gin and runs/export.gin: their gin macro RUN names
the function (evaluate, infer, export); without RUN it trains (runs/pretrain.gin, finetune.gin).

An experiment is a model file plus a run file (plus, optionally, an experiment file):
  python -m t2t_jax.train \
    --gin_file=models/t5_1_1_small.gin --gin_file=runs/finetune.gin \
    --gin.MODEL_DIR=\"/tmp/t2t/small\" \
    --gin.MIXTURE_OR_TASK_NAME=\"t2t.synthetic.semantic_rq.title\"
This is the one training path: `run(gin_files, bindings)` below is what `t2t quickstart` and the
studies (t2t_jax/studies) call too.  Training writes MODEL_DIR/config.gin (rerun with
--gin_file=MODEL_DIR/config.gin) and, for a t2t task, MODEL_DIR/assets (t2t recommend / export /
serve read them).

Multi-host (one process per host, same command everywhere): pass --coordinator_address=HOST:PORT
--num_processes=N --process_id=I, or set JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
JAX_PROCESS_ID, or --multihost to let JAX detect the cluster (Cloud TPU pods, SLURM, Open MPI, k8s).
Each process reads its own shard of the data; batches are assembled into global arrays.

Exit status: 0 done (or preempted by SIGTERM after saving), 2 user error (one line on stderr),
3 training diverged (non-finite loss, with the step).
"""

import argparse
import dataclasses
import itertools
import json
import logging
import os
import sys
from typing import Callable, Mapping, Sequence

import flax.linen as nn
import gin
import jax
import numpy as np

from t2t_jax import console, gin_utils, io_utils, models, storage
from t2t_jax import evaluation as evaluation_lib
from t2t_jax.data import batches as batches_lib
from t2t_jax.data import examples, resumable
from t2t_jax.errors import UserInputError
from t2t_jax.ids import token_vectors
from t2t_jax.models import base, hf_convert, pretrained
from t2t_jax.serving import retriever
from t2t_jax.training import checkpoints, losses, model_dir_lock, optimizers, partitioning
from t2t_jax.training import train_state, trainer

log = logging.getLogger("t2t_jax.train")


DATA_CACHE_ENV = "T2T_DATA_DIR"


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """The training data (T5X DatasetConfig names; gin: MIXTURE_OR_TASK_NAME, TASK_FEATURE_LENGTHS,
  PACK, USE_CACHED_TASKS, DATA_DIR).

  data_dir: the data root whose t2t tasks are registered first (None: T2T_DATA_DIR).
  data_fn: replaces the task reader (`get_numpy_batches`' signature), e.g.
    `@train_script.copy_task_batches` for smoke runs without a dataset.
  input_vocab: the tasks' input vocabulary (INPUT_VOCAB, set by model files: None = the dataset's
    SentencePiece model; 'minilm' = the pretrained encoder's WordPiece, task names end '.minilm').
  targets_per_prompt: TARGETS_PER_PROMPT > 1 trains on multi-target batches (a playlist's tracks in
    groups of T share one encoding of its prompt; BATCH_SIZE still counts (prompt, track) examples).
  indexing, indexing_share: INDEXING examples in the training split ('none', 'tracks', 'artists',
    'tracks_and_artists'; see t2t_jax.data.examples.ExampleSource).
  """
  mixture_or_task_name: str
  task_feature_lengths: Mapping[str, int]
  split: str = "train"
  shuffle: bool = True
  pack: bool = False
  use_cached: bool = False
  data_dir: str | None = None
  data_fn: Callable | None = None
  input_vocab: str | None = None
  targets_per_prompt: int = 1
  indexing: str = "none"
  indexing_share: float = 0.3

  def __post_init__(self):
    if not isinstance(self.mixture_or_task_name, str) or not self.mixture_or_task_name:
      raise UserInputError(f"MIXTURE_OR_TASK_NAME must be a task name, got {self.mixture_or_task_name!r}")
    lengths = self.task_feature_lengths
    if not isinstance(lengths, Mapping) or any(
        k not in lengths or isinstance(lengths[k], bool) or not isinstance(lengths[k], int)
        or lengths[k] < 2 for k in ("inputs", "targets")):
      raise UserInputError("TASK_FEATURE_LENGTHS must give integer 'inputs' and 'targets' lengths "
                           f">= 2, got {lengths!r}")
    t = self.targets_per_prompt
    if isinstance(t, bool) or not isinstance(t, int) or t < 1:
      raise UserInputError(f"TARGETS_PER_PROMPT must be an integer >= 1, got {t!r}")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Evaluation during training (gin: EVAL_SPLIT, EVAL_STEPS; EVAL_PERIOD is in TrainConfig).

  steps: batches of `split` for the teacher-forced loss (None: all; the last may be partial).
  fn_factory(model=, mixture_or_task_name=, task_feature_lengths=, partitioner=) ->
    eval_fn(params, step): replaces that loss, e.g. `@eval_hooks.hits_eval_fn_factory` (Hits@K).
  """
  split: str = "validation"
  steps: int | None = 10
  fn_factory: Callable | None = None


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def copy_task_batches(mixture_or_task_name: str = "copy", *, split: str = "train",
                      task_feature_lengths: Mapping[str, int], batch_size: int,
                      shuffle: bool = True, seed: int = 0, shard_index: int = 0,
                      num_shards: int = 1, pack: bool = False, num_epochs: int | None = None,
                      use_cached: bool = False, pad_final: bool = False, vocab_size: int = 128,
                      num_examples: int = 4096):
  """A learnable toy task with `get_numpy_batches`' interface: targets = reversed input prefix.

  Deterministic in (seed, split); every host draws the same global batch and keeps its own rows, so
  any number of hosts sees the same data.  A checkpointable `IndexedBatches` (resumes without
  replay).  For smoke runs, benchmarks and tests; not a SeqIO task.
  """
  del mixture_or_task_name, pack, use_cached
  in_len, tgt_len = int(task_feature_lengths["inputs"]), int(task_feature_lengths["targets"])
  rng = np.random.default_rng([seed, {"train": 0, "validation": 1, "test": 2}.get(split, 3)])
  lengths = rng.integers(2, in_len, size=num_examples)
  inputs = rng.integers(3, vocab_size, size=(num_examples, in_len)).astype(np.int32)
  inputs[np.arange(in_len)[None, :] >= lengths[:, None]] = 0
  inputs[np.arange(num_examples), lengths - 1] = 1  # EOS
  targets = np.zeros((num_examples, tgt_len), np.int32)
  for i, n in enumerate(lengths):
    body = inputs[i, :n - 1][::-1][:tgt_len - 1]
    targets[i, :len(body)] = body
    targets[i, len(body)] = 1
  return resumable.IndexedBatches(
      num_examples, lambda ids: (inputs[ids], targets[ids]), batches_lib.unpacked_features,
      batch_size=batch_size, seed=seed, shuffle=shuffle, shard_index=shard_index,
      num_shards=num_shards, num_epochs=num_epochs, pad_final=pad_final)


def _numpy_batches(data: DataConfig, *, split: str, batch_size: int, shuffle: bool, seed: int,
                   partitioner, num_epochs: int | None, pack: bool, pad_final: bool = False,
                   targets_per_prompt: int = 1):
  """This process's batches: `data.data_fn`, else the task's checkpointable index-ordered reader
  (tasks.pipeline.indexed_batches), else (mixtures, augmented tasks) `get_numpy_batches`."""
  shard_index, num_shards = partitioner.host_shard()
  kw = dict(split=split, task_feature_lengths=dict(data.task_feature_lengths),
            batch_size=batch_size, shuffle=shuffle, seed=seed, shard_index=shard_index,
            num_shards=num_shards, pack=pack, num_epochs=num_epochs)
  if data.data_fn is not None:
    if targets_per_prompt > 1:
      raise UserInputError("TARGETS_PER_PROMPT > 1 needs a t2t task (not a data_fn)")
    try:
      return data.data_fn(data.mixture_or_task_name, use_cached=data.use_cached,
                          pad_final=pad_final, **kw)
    except TypeError:  # a data_fn without pad_final
      return data.data_fn(data.mixture_or_task_name, use_cached=data.use_cached, **kw)
  from tasks import pipeline  # pylint: disable=import-outside-toplevel  (lazy: tasks loads TensorFlow)
  if not data.use_cached:
    it = pipeline.indexed_batches(data.mixture_or_task_name, pad_final=pad_final,
                                  targets_per_prompt=targets_per_prompt, **kw)
    if it is not None:
      return it
  if targets_per_prompt > 1:
    raise UserInputError(f"TARGETS_PER_PROMPT > 1 needs a single t2t task without augmentation or "
                         f"cache; {data.mixture_or_task_name!r} is not one")
  return pipeline.get_numpy_batches(data.mixture_or_task_name, use_cached=data.use_cached, **kw)


def _register_data(data: DataConfig) -> None:
  """Registers the t2t tasks of DATA_DIR (or T2T_DATA_DIR) before the task is looked up."""
  if data.data_fn is not None:
    return
  from tasks import t2t_tasks  # pylint: disable=import-outside-toplevel  (lazy: tasks loads TensorFlow)
  if data.data_dir or data.input_vocab or data.indexing != "none":
    t2t_tasks.register_tasks(data.data_dir, input_vocab=data.input_vocab, indexing=data.indexing,
                             indexing_share=data.indexing_share)


def _task_vocab_size(mixture_or_task_name: str, feature: str = "targets") -> int:
  """A SeqIO task's vocabulary size for `feature` (lazy `tasks` import: TensorFlow lives there)."""
  from tasks import pipeline  # pylint: disable=import-outside-toplevel  (lazy: tasks loads TensorFlow)
  return pipeline.vocab_size(mixture_or_task_name, feature)


def _resolve_model(model, data: DataConfig):
  """The model config with VOCAB_SIZE None replaced by the task's, rounded up to 128."""
  if not isinstance(model, base.ModelConfig):
    raise UserInputError(f"MODEL must be a model config (e.g. @t5.T5Config()), got {model!r}")
  if getattr(model, "vocab_size", 0) is None:
    if data.data_fn is not None:
      raise UserInputError("VOCAB_SIZE is None and there is no SeqIO task to take it from")
    model = model.replace(vocab_size=_round_up(_task_vocab_size(data.mixture_or_task_name), 128))
  if data.data_fn is None and model.input_vocab_size != model.output_vocab_size:
    inputs = _task_vocab_size(data.mixture_or_task_name, "inputs")
    if inputs != model.input_vocab_size:
      raise UserInputError(
          f"task {data.mixture_or_task_name!r} tokenises its inputs with a vocabulary of {inputs} "
          f"tokens but MODEL's {model.family} encoder reads {model.input_vocab_size}: use the task "
          f"of the encoder's vocabulary (INPUT_VOCAB, e.g. a name ending '.minilm')")
  return model


# 'retrieval': track vectors from metadata; 'retrieval_with_prompts': + their training prompts;
# 'retrieval_residual': ID-token vectors that sum to their tracks' vectors (residual means, for RQ
# semantic IDs: `ids.token_vectors`).
ID_EMBEDDING_INITS = ("retrieval", "retrieval_with_prompts", "retrieval_residual")


def _init_id_embeddings(mm, params, data: DataConfig, mode: str):
  """ID_EMBEDDING_INIT='retrieval': warm-start parameters under which the model starts as the
  zero-shot dense retriever of its pretrained encoder (`retrieval_init` of the family).

  A track's vector is the encoder's sentence embedding of its metadata "artist - title (album)"
  (with 'retrieval_with_prompts', plus those of the training prompts it is relevant to), normalised;
  an ID token's vector is the mean of its tracks' (`ids.token_vectors`)."""
  if mode not in ID_EMBEDDING_INITS:
    raise UserInputError(f"ID_EMBEDDING_INIT must be None or one of {ID_EMBEDDING_INITS}, got {mode!r}")
  if not hasattr(mm, "retrieval_init"):
    raise UserInputError(f"ID_EMBEDDING_INIT={mode!r}: the {mm.config.family} family has no pretrained "
                         "encoder to initialise from")
  if data.data_fn is not None:
    raise UserInputError(f"ID_EMBEDDING_INIT={mode!r} needs a t2t task (its catalog and prompts)")
  from tasks import t2t_tasks  # pylint: disable=import-outside-toplevel  (lazy: tasks loads TensorFlow)
  t2t_tasks.prepare(data.mixture_or_task_name)
  source = t2t_tasks.task_source(data.mixture_or_task_name)
  meta, prompt_tokens, prompt_rows = source.retrieval_texts()
  track_NxH = mm.embed_texts(params, meta)
  if mode == "retrieval_with_prompts":
    for vec, rows in zip(mm.embed_texts(params, prompt_tokens), prompt_rows):
      track_NxH[rows] += vec
  vectors, mask = token_vectors.id_token_vectors(
      examples.load_table(source.ids_dir), track_NxH, id_token_offset=source.vocab.id_token_offset,
      vocab_size=mm.config.output_vocab_size, residual=mode == "retrieval_residual")
  log.info("ID_EMBEDDING_INIT=%s: %d ID tokens from %d track and %d prompt embeddings", mode,
           int(mask.sum()), len(meta), len(prompt_tokens))
  return mm.retrieval_init(params, vectors, mask, normalize=mode != "retrieval_residual")


def _check_model_dir(model_dir) -> str:
  if not isinstance(model_dir, str) or not model_dir.strip():
    raise UserInputError(f"MODEL_DIR must be a directory path, got {model_dir!r}")
  if storage.isfile(model_dir):
    raise UserInputError(f"MODEL_DIR {model_dir!r} exists and is not a directory")
  return model_dir


def train(*, model_dir: str, model, data: DataConfig, config, optimizer=None, loss=None,
          checkpoint=None, evaluation: EvalConfig | None = None, partitioner=None,
          initial_checkpoint_path: str | None = None, beam_size: int = 20,
          id_embedding_init: str | None = None):
  """Trains on a SeqIO task (runs/finetune.gin, runs/pretrain.gin bind every argument).

  model: a model config (MODEL); its vocab_size None means the task's vocabulary size rounded up
    to a multiple of 128.  config / optimizer / loss / checkpoint: trainer.TrainConfig,
    optimizers.OptimizerConfig, losses.LossConfig, trainer.CheckpointConfig.
  initial_checkpoint_path: warm start (INITIAL_CHECKPOINT_PATH, see `load_initial_params`), used
    only when MODEL_DIR has no checkpoint yet; required for a frozen encoder.
  beam_size: the decoding setting written to MODEL_DIR/assets (t2t recommend / export / serve).
  id_embedding_init: ID_EMBEDDING_INIT 'retrieval' (model files of pretrained-encoder families):
    the warm-started model starts as the zero-shot dense retriever of its encoder (see
    `_init_id_embeddings`); None: fresh ID-token embeddings.
  Writes MODEL_DIR/config.gin and, for a t2t task, MODEL_DIR/assets before training.
  """
  _check_model_dir(model_dir)
  optimizer = optimizer or optimizers.OptimizerConfig()
  loss = loss or losses.LossConfig()
  checkpoint = checkpoint or trainer.CheckpointConfig()
  partitioner = partitioner or partitioning.Partitioner()
  _register_data(data)
  model = models.build_model(_resolve_model(model, data))  # the run's one model object
  config = dataclasses.replace(config, seed=trainer.resolve_seed(config.seed))
  train_iter = _numpy_batches(data, split=data.split, batch_size=config.batch_size,
                              shuffle=data.shuffle, seed=config.seed, partitioner=partitioner,
                              num_epochs=None, pack=data.pack,
                              targets_per_prompt=data.targets_per_prompt)
  init_params = (load_initial_params(initial_checkpoint_path, model, seed=config.seed)
                 if initial_checkpoint_path else None)
  if id_embedding_init and init_params is not None and not _has_checkpoint(model_dir):
    init_params = _init_id_embeddings(model, init_params, data, id_embedding_init)
  train_iter, spec = _model_inputs(model, train_iter, init_params, data, config, partitioner)
  eval_fn = _eval_fn(model, data, evaluation, config, partitioner)
  if jax.process_index() == 0:
    storage.makedirs(model_dir)
    gin_utils.write_config(model_dir)
    _write_assets(model_dir, data, beam_size)
  return trainer.train(model=model, train_iter=train_iter, model_dir=model_dir,
                       config=config, optimizer=optimizer, loss=loss, checkpoint=checkpoint,
                       partitioner=partitioner, eval_fn=eval_fn, init_params=init_params,
                       feature_spec=spec)


def _model_inputs(mm, train_iter, init_params, data: DataConfig, config, partitioner):
  """(batches, per-host feature spec); a frozen encoder's outputs are cached and fed as a feature."""
  per_host = config.batch_size // partitioner.host_shard()[1]
  enc_dim = None
  if mm.frozen_encoder:
    if init_params is None:
      raise UserInputError(f"{mm.config.family} with a frozen encoder needs INITIAL_CHECKPOINT_PATH "
                           "(the pretrained encoder whose outputs are cached)")
    train_iter = base.FrozenEncoderCache(mm, init_params).wrap(train_iter)
    enc_dim = _encoder_dim(mm, data.task_feature_lengths["inputs"])
  spec = train_state.batch_spec(data.task_feature_lengths, batch_size=per_host, pack=data.pack,
                                encoder_outputs_dim=enc_dim,
                                targets_per_prompt=data.targets_per_prompt)
  return train_iter, spec


def _encoder_dim(model, inputs_length: int) -> int:
  params = nn.unbox(model.abstract_params())
  out = jax.eval_shape(lambda p, t: model.encode(p, t), params,
                       jax.ShapeDtypeStruct((1, inputs_length), np.int32))
  return int(out.shape[-1])


def _eval_fn(model, data: DataConfig, evaluation: EvalConfig | None, config, partitioner):
  """The periodic evaluation: EvalConfig.fn_factory's, else the teacher-forced loss on its split."""
  if evaluation is None or not config.eval_period:
    return None
  if evaluation.fn_factory is not None:
    return evaluation.fn_factory(model=model, mixture_or_task_name=data.mixture_or_task_name,
                                 task_feature_lengths=data.task_feature_lengths,
                                 partitioner=partitioner)
  batches = _eval_batches(data, evaluation.split, evaluation.steps, config.batch_size, partitioner)
  return evaluation_lib.make_eval_loss_fn(model, partitioner, batches, config.batch_size)


def _eval_batches(data: DataConfig, split: str, steps: int | None, batch_size: int, partitioner):
  it = _numpy_batches(data, split=split, batch_size=batch_size, shuffle=False, seed=0,
                      partitioner=partitioner, num_epochs=1, pack=False, pad_final=True)
  batches = list(itertools.islice(it, steps) if steps else it)
  if not batches:
    raise UserInputError(f"split {split!r} of {data.mixture_or_task_name} has no examples for "
                         "evaluation")
  return batches


def _write_assets(model_dir: str, data: DataConfig, beam_size: int) -> None:
  """MODEL_DIR/assets for t2t tasks, so `t2t recommend --model_dir` works on any trained dir."""
  if data.data_fn is not None:
    return
  from tasks import assets  # pylint: disable=import-outside-toplevel  (lazy: tasks loads TensorFlow)
  assets.write_model_assets(model_dir, data.mixture_or_task_name, data.task_feature_lengths,
                            beam_size=beam_size)


def evaluate(*, model_dir: str, mixture_or_task_name: str, task_feature_lengths: Mapping[str, int],
             batch_size: int, split: str = "validation", eval_steps: int | None = None,
             checkpoint_step: int | None = None, partitioner=None,
             eval_fn_factory: Callable | None = None, output_dir: str | None = None,
             data_dir: str | None = None, data_fn: Callable | None = None) -> dict:
  """Evaluates a MODEL_DIR checkpoint (runs/eval.gin): teacher-forced loss/accuracy on `split`
  (all of it, or `eval_steps` batches; the last batch may be partial) plus eval_fn_factory's
  metrics (e.g. Hits@K); writes {output_dir or MODEL_DIR/eval_results}/{split}_step{N}.json."""
  partitioner = partitioner or partitioning.Partitioner()
  data = DataConfig(mixture_or_task_name, dict(task_feature_lengths), split=split, data_dir=data_dir,
                    data_fn=data_fn)
  _register_data(data)
  config, params = checkpoints.load_params(model_dir, step=checkpoint_step,
                                           partitioner=partitioner)
  model = models.build_model(config)
  step = checkpoint_step if checkpoint_step is not None else checkpoints.CheckpointManager(
      model_dir).latest_step()
  batches = _eval_batches(data, split, eval_steps, batch_size, partitioner)
  metrics = evaluation_lib.make_eval_loss_fn(model, partitioner, batches, batch_size)(params, step)
  if eval_fn_factory is not None:
    fn = eval_fn_factory(model=model, mixture_or_task_name=mixture_or_task_name,
                         task_feature_lengths=task_feature_lengths, partitioner=partitioner)
    metrics.update({k: float(v) for k, v in fn(params, step).items()})
  result = {"step": step, "split": split, "mixture_or_task_name": mixture_or_task_name, **metrics}
  if jax.process_index() == 0:
    out = output_dir or storage.join(model_dir, "eval_results")
    io_utils.write_json(os.path.join(out, f"{split}_step{step}.json"), result)
  log.info("eval %s", result)
  return result


def infer(*, model_dir: str, input_file: str, output_file: str, k: int = 10,
          beam_size: int | None = None, batch_size: int = 64) -> int:
  """Recommends for each prompt of `input_file` (one a line) into JSONL `output_file`
  (runs/infer.gin): constrained beam search via `t2t_jax.serving.retriever.GenerativeRetriever`."""
  if not os.path.isfile(input_file):
    raise UserInputError(f"INFER_INPUT_FILE {input_file!r} does not exist")
  with open(input_file, encoding="utf-8") as f:
    prompts = [line.strip() for line in f if line.strip()]
  if not prompts:
    raise UserInputError(f"INFER_INPUT_FILE {input_file!r} has no prompts")
  rec = retriever.GenerativeRetriever.from_model_dir(model_dir, beam_size=beam_size)
  with io_utils.atomic_write(output_file) as f:
    for start in range(0, len(prompts), batch_size):
      chunk = prompts[start:start + batch_size]
      for prompt, recs in zip(chunk, rec.recommend(chunk, k)):
        f.write(json.dumps({"prompt": prompt, "tracks": [r.as_dict() for r in recs]}) + "\n")
  return len(prompts)


def export(*, model_dir: str, export_dir: str, checkpoint_step: int | None = None,
           dtype: str = "float32") -> str:
  """Writes a MODEL_DIR checkpoint as a Hugging Face T5 directory (runs/export.gin)."""
  config, params = checkpoints.load_params(model_dir, step=checkpoint_step)
  return hf_convert.export_hf_t5(params, config, export_dir, dtype=dtype, inputs=[model_dir])


RUNS = {"train": train, "evaluate": evaluate, "infer": infer, "export": export}


# INITIAL_CHECKPOINT_PATH values that name a pip-installed pretrained model instead of a path.
PRETRAINED_ALIASES = {"pretrained:all-MiniLM-L6-v2": lambda p: p.minilm_dir(),
                      "pretrained:all-mpnet-base-v2": lambda p: p.mpnet_dir()}


def load_initial_params(path: str, model_config, *, seed: int = 0):
  """Warm-start parameters (INITIAL_CHECKPOINT_PATH): the model family's pretrained format
  (`EncoderDecoderModel.init_from_pretrained`, e.g. a Hugging Face dir), else the latest checkpoint
  of a t2t_jax MODEL_DIR of the same config (dropout, dtypes, remat and freezing may differ)."""
  if path in PRETRAINED_ALIASES:
    path = PRETRAINED_ALIASES[path](pretrained)
  if not os.path.exists(path):
    raise UserInputError(f"INITIAL_CHECKPOINT_PATH {path!r} does not exist")
  model = models.build_model(model_config)
  params = model.init_from_pretrained(path, seed=seed)
  if params is not None:
    return params
  want = model.config
  if not os.path.exists(os.path.join(path, checkpoints.MODEL_CONFIG_FILE)):
    raise UserInputError(f"INITIAL_CHECKPOINT_PATH {path}: not a t2t_jax MODEL_DIR (no "
                         f"{checkpoints.MODEL_CONFIG_FILE}) and no {want.family} "
                         "pretrained format found there")
  config, params = checkpoints.load_params(path)
  ignore = {f: getattr(want, f) for f in ("dropout_rate", "dtype", "param_dtype", "remat_policy",
                                          "freeze_encoder") if hasattr(want, f)}
  if type(config) is not type(want) or config.replace(**ignore) != want:
    raise UserInputError(f"INITIAL_CHECKPOINT_PATH {path}: its model config {config} does not "
                         f"match this run's {want}")
  return params


# ------------------------------------------------------------------------------ distributed


def maybe_initialize_distributed(args) -> None:
  """jax.distributed.initialize from flags, JAX_* environment, or cluster auto-detection."""
  addr = args.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  nproc = args.num_processes or os.environ.get("JAX_NUM_PROCESSES")
  pid = args.process_id if args.process_id is not None else os.environ.get("JAX_PROCESS_ID")
  if addr or args.multihost:
    kwargs = {}
    if addr:
      if nproc is None or pid is None:
        raise UserInputError("--coordinator_address needs --num_processes and --process_id "
                             "(or JAX_NUM_PROCESSES / JAX_PROCESS_ID)")
      kwargs = dict(coordinator_address=addr, num_processes=int(nproc), process_id=int(pid))
    try:  # CPU processes need a collectives backend (gloo over TCP); harmless elsewhere.
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, ValueError):
      pass
    jax.distributed.initialize(**kwargs)
    log.info("jax.distributed: process %d of %d, %d local / %d global devices",
             jax.process_index(), jax.process_count(), jax.local_device_count(),
             jax.device_count())


def parse_args(argv):
  gin_bindings, rest = gin_utils.rewrite_gin_args(argv)
  parser = argparse.ArgumentParser(prog="python -m t2t_jax.train", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--gin_file", action="append", default=[], help="gin file (repeatable)")
  parser.add_argument("--gin_bindings", action="append", default=[], help="gin binding")
  parser.add_argument("--gin_search_paths", default="", help="comma-separated gin directories")
  parser.add_argument("--coordinator_address", default=None)
  parser.add_argument("--num_processes", type=int, default=None)
  parser.add_argument("--process_id", type=int, default=None)
  parser.add_argument("--multihost", action="store_true",
                      help="jax.distributed.initialize() with cluster auto-detection")
  parser.add_argument("--log_level", default="INFO", help="level of t2t_jax's own logs")
  parser.add_argument("--verbose", action="store_true",
                      help="show the logs of TensorFlow, JAX, orbax and the other libraries "
                           "(quiet by default)")
  args = parser.parse_args(rest)
  args.gin_bindings = list(args.gin_bindings) + gin_bindings
  args.gin_search_paths = [p for p in args.gin_search_paths.split(",") if p]
  if not args.gin_file:
    parser.error("at least one --gin_file is required")
  return args


def _has_checkpoint(model_dir: str) -> bool:
  path = storage.join(model_dir, checkpoints.CHECKPOINT_SUBDIR)
  return storage.isdir(path) and any(name.isdigit() for name in storage.listdir(path))


def _configured_run() -> tuple[str, Callable]:
  run = _macro("RUN", "train")
  if run not in RUNS:
    raise UserInputError(f"gin macro RUN={run!r}: use one of {sorted(RUNS)}")
  # Under `python -m` this file is __main__; gin registered the importable module's functions.
  from t2t_jax import train as train_module  # pylint: disable=import-outside-toplevel,import-self  (lazy: self)
  return run, train_module.RUNS[run]


def run(gin_files: Sequence[str], gin_bindings: Sequence[str] = (), *,
        gin_search_paths: Sequence[str] = (), before_run: Callable[[], None] | None = None):
  """The one training path: parses gin files + bindings and calls the configured run (RUN macro:
  train by default, evaluate, infer, export).  `python -m t2t_jax.train`, `t2t quickstart` and the
  studies (t2t_jax/studies) all call this.  Training writes MODEL_DIR/config.gin (the operative
  config: rerun it with `--gin_file=MODEL_DIR/config.gin`) and MODEL_DIR/assets.

  A UserInputError leaves no MODEL_DIR behind that this call created and that holds no checkpoint.
  """
  gin_utils.parse_gin(gin_files, gin_bindings, gin_search_paths)
  name, fn = _configured_run()
  model_dir = _macro("MODEL_DIR", None)
  # None: no MODEL_DIR to write (not a training run, or a bad value train() reports itself).
  created = (not storage.exists(model_dir) if name == "train" and isinstance(model_dir, str)
             and model_dir.strip() != "" else None)
  if before_run is not None:
    before_run()
  lock = None
  if name == "train" and created is not None:
    # One writer per MODEL_DIR, held from before config.gin is written until the last checkpoint.
    lock = model_dir_lock.acquire_for_job(_check_model_dir(model_dir))
  try:
    return gin_utils.call_configured(fn)
  except UserInputError:
    if created and storage.isdir(model_dir) and not _has_checkpoint(model_dir):
      storage.rmtree(model_dir)  # leave no half-made MODEL_DIR behind (lock held)
    raise
  finally:
    if lock is not None:
      lock.release()


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  try:
    args = parse_args(argv)
    console.configure(args.verbose, level=args.log_level.upper())  # before TensorFlow is imported
    result = run(args.gin_file, args.gin_bindings, gin_search_paths=args.gin_search_paths,
                 before_run=lambda: maybe_initialize_distributed(args))
  except UserInputError as e:
    # gin appends "In call to configurable ..." lines to exceptions; the first line says it all.
    print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
    return 2
  except Exception as e:  # pylint: disable=broad-except
    if type(e).__name__ == "TrainingDivergedError":
      print(f"error: {e}", file=sys.stderr)
      return 3
    raise
  if hasattr(result, "stopped"):
    log.info("finished at step %d (%s)", result.step, result.stopped)
  else:
    log.info("finished: %s", result)
  return 0


def _macro(name: str, default):
  try:
    return gin.query_parameter(f"{name}/macro.value")
  except ValueError:
    return default


if __name__ == "__main__":
  sys.exit(main())
