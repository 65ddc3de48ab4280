r"""Train entry point (T5X style): `python -m t2t_jax.train --gin_file=... --gin.MODEL_DIR=\"...\"`.

The same entry runs runs/eval.gin, runs/infer.gin and runs/export.gin: their gin macro RUN names
the function (evaluate, infer, export); without RUN it trains (runs/pretrain.gin, finetune.gin).

An experiment is a model size plus a run:
  python -m t2t_jax.train \
    --gin_file=models/t5_1_1_small.gin --gin_file=runs/finetune.gin \
    --gin.MODEL_DIR=\"/tmp/t2t/small\" \
    --gin.MIXTURE_OR_TASK_NAME=\"t2t.synthetic.semantic_rq.title\"

Multi-host (one process per host, same command everywhere): pass --coordinator_address=HOST:PORT
--num_processes=N --process_id=I, or set JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
JAX_PROCESS_ID, or --multihost to let JAX detect the cluster (Cloud TPU pods, SLURM, Open MPI, k8s).
Each process reads its own shard of the data; batches are assembled into global arrays.

Exit status: 0 done (or preempted by SIGTERM after saving), 2 user error (one line on stderr),
3 training diverged (non-finite loss, with the step).
"""

import argparse
import logging
import os
import shutil
import sys
from typing import Any, Callable, Mapping

from t2t_jax import gin_utils
from t2t_jax.errors import UserInputError

log = logging.getLogger("t2t_jax.train")


def _task_vocab_size(mixture_or_task_name: str) -> int:
  """The targets vocabulary size of a SeqIO task (lazy `tasks` import: TensorFlow lives there)."""
  import seqio  # pylint: disable=import-outside-toplevel
  from tasks import t2t_tasks  # pylint: disable=import-outside-toplevel
  try:
    provider = seqio.get_mixture_or_task(mixture_or_task_name)
  except ValueError:
    t2t_tasks.register_tasks()
    try:
      provider = seqio.get_mixture_or_task(mixture_or_task_name)
    except ValueError:
      raise UserInputError(f"unknown MIXTURE_OR_TASK_NAME {mixture_or_task_name!r}") from None
  return int(provider.output_features["targets"].vocabulary.vocab_size)


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def copy_task_batches(mixture_or_task_name: str = "copy", *, split: str = "train",
                      task_feature_lengths: Mapping[str, int], batch_size: int,
                      shuffle: bool = True, seed: int = 0, shard_index: int = 0,
                      num_shards: int = 1, pack: bool = False, num_epochs: int | None = None,
                      use_cached: bool = False, vocab_size: int = 128, num_examples: int = 4096):
  """A learnable toy task with `get_numpy_batches`' interface: targets = reversed input prefix.

  Deterministic in (seed, split); every host draws the same global batch and keeps its own rows, so
  any number of hosts sees the same data.  For smoke runs, benchmarks and tests; not a SeqIO task.
  """
  del mixture_or_task_name, shuffle, pack, use_cached
  import numpy as np  # pylint: disable=import-outside-toplevel
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
  dec_in = np.concatenate([np.zeros((num_examples, 1), np.int32), targets[:, :-1]], axis=1)
  per_host = batch_size // num_shards
  epoch = 0
  while num_epochs is None or epoch < num_epochs:
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    for start in range(0, num_examples - batch_size + 1, batch_size):
      rows = order[start:start + batch_size][shard_index * per_host:(shard_index + 1) * per_host]
      yield {"encoder_input_tokens": inputs[rows], "decoder_input_tokens": dec_in[rows],
             "decoder_target_tokens": targets[rows],
             "decoder_loss_weights": (targets[rows] > 0).astype(np.int32)}
    epoch += 1


def _numpy_batches(mixture_or_task_name, *, split, task_feature_lengths, batch_size, shuffle,
                   seed, shard_index, num_shards, pack, num_epochs, use_cached, data_fn=None):
  if data_fn is not None:
    return data_fn(mixture_or_task_name, split=split, task_feature_lengths=task_feature_lengths,
                   batch_size=batch_size, shuffle=shuffle, seed=seed, shard_index=shard_index,
                   num_shards=num_shards, pack=pack, num_epochs=num_epochs, use_cached=use_cached)
  from tasks import pipeline  # pylint: disable=import-outside-toplevel
  return pipeline.get_numpy_batches(
      mixture_or_task_name, split=split, task_feature_lengths=dict(task_feature_lengths),
      batch_size=batch_size, shuffle=shuffle, seed=seed, shard_index=shard_index,
      num_shards=num_shards, pack=pack, num_epochs=num_epochs, use_cached=use_cached)


def train(*, model_dir: str, mixture_or_task_name: str,
          task_feature_lengths: Mapping[str, int], train_steps: int, batch_size: int,
          model_config, partitioner=None, learning_rate: float = 1e-3,
          schedule: str = "constant", warmup_steps: int = 0, optimizer: str = "adafactor",
          weight_decay: float = 0.0, max_grad_norm: float | None = None,
          num_microbatches: int = 1, label_smoothing: float = 0.0, z_loss: float = 1e-4,
          loss_normalizing_factor: Any = "NUM_REAL_TARGET_TOKENS",
          initial_checkpoint_path: str | None = None, checkpoint_period: int = 1000,
          keep_checkpoints: int | None = 3, best_metric: str | None = None,
          best_mode: str = "max", eval_period: int | None = None, eval_split: str = "validation",
          eval_steps: int = 10, eval_fn_factory: Callable | None = None,
          log_period: int = 100, train_split: str = "train", pack: bool = False,
          use_cached: bool = False, shuffle: bool = True, seed: int = 0,
          progress: bool = True, data_fn: Callable | None = None):
  """Trains on a SeqIO task; every argument is bound by gin (runs/*.gin, models/*.gin).

  model_config.vocab_size None means: the task's vocabulary size rounded up to a multiple of 128.
  initial_checkpoint_path: warm start from a t2t_jax MODEL_DIR or a Hugging Face T5 directory
  (config.json + *.safetensors), used only when MODEL_DIR has no checkpoint yet.
  eval_fn_factory(model_config=, mixture_or_task_name=, task_feature_lengths=, partitioner=) ->
  eval_fn(params, step); default: teacher-forced loss/accuracy on `eval_steps` batches of eval_split.
  data_fn: replaces `tasks.pipeline.get_numpy_batches` (same signature), e.g.
  `@train_script.copy_task_batches` for smoke runs without a dataset.
  """
  import jax  # pylint: disable=import-outside-toplevel
  from t2t_jax import partitioning, trainer  # pylint: disable=import-outside-toplevel

  for key in ("inputs", "targets"):
    if key not in task_feature_lengths:
      raise UserInputError(f"TASK_FEATURE_LENGTHS needs {key!r}, got {dict(task_feature_lengths)}")
  partitioner = partitioner or partitioning.Partitioner()
  if model_config.vocab_size is None and data_fn is None:
    model_config = model_config.replace(
        vocab_size=_round_up(_task_vocab_size(mixture_or_task_name), 128))
  shard_index, num_shards = partitioner.host_shard()
  if model_config.vocab_size is None:
    raise UserInputError("VOCAB_SIZE is None and there is no SeqIO task to take it from")
  train_iter = _numpy_batches(
      mixture_or_task_name, split=train_split, task_feature_lengths=task_feature_lengths,
      batch_size=batch_size, shuffle=shuffle, seed=seed, shard_index=shard_index,
      num_shards=num_shards, pack=pack, num_epochs=None, use_cached=use_cached, data_fn=data_fn)

  init_params = None
  if initial_checkpoint_path:
    init_params = load_initial_params(initial_checkpoint_path, model_config, seed=seed)

  eval_fn = None
  if eval_period:
    if eval_fn_factory is not None:
      eval_fn = eval_fn_factory(model_config=model_config,
                                mixture_or_task_name=mixture_or_task_name,
                                task_feature_lengths=task_feature_lengths,
                                partitioner=partitioner)
    else:
      eval_batches = list(_take(_numpy_batches(
          mixture_or_task_name, split=eval_split, task_feature_lengths=task_feature_lengths,
          batch_size=batch_size, shuffle=False, seed=seed, shard_index=shard_index,
          num_shards=num_shards, pack=False, num_epochs=1, use_cached=use_cached, data_fn=data_fn),
          eval_steps))
      if not eval_batches:
        raise UserInputError(f"split {eval_split!r} of {mixture_or_task_name} has no full batch of "
                             f"{batch_size} examples for evaluation")
      eval_fn = trainer.make_eval_loss_fn(model_config, partitioner, eval_batches, batch_size)

  result = trainer.train(
      model_config=model_config, train_iter=train_iter, model_dir=model_dir,
      train_steps=train_steps, batch_size=batch_size, learning_rate=learning_rate,
      schedule=schedule, warmup_steps=warmup_steps, optimizer=optimizer,
      weight_decay=weight_decay, max_grad_norm=max_grad_norm, num_microbatches=num_microbatches,
      label_smoothing=label_smoothing, z_loss=z_loss,
      loss_normalizing_factor=loss_normalizing_factor, partitioner=partitioner,
      checkpoint_period=checkpoint_period, keep_checkpoints=keep_checkpoints,
      best_metric=best_metric, best_mode=best_mode, eval_fn=eval_fn, eval_period=eval_period,
      log_period=log_period, init_params=init_params, seed=seed,
      progress=progress and jax.process_index() == 0)
  return result


def evaluate(*, model_dir: str, mixture_or_task_name: str, task_feature_lengths: Mapping[str, int],
             batch_size: int, split: str = "validation", eval_steps: int | None = None,
             checkpoint_step: int | None = None, partitioner=None,
             eval_fn_factory: Callable | None = None, output_dir: str | None = None,
             data_fn: Callable | None = None) -> dict:
  """Evaluates a MODEL_DIR checkpoint (runs/eval.gin): teacher-forced loss/accuracy on `split`
  (all of it, or `eval_steps` batches) plus eval_fn_factory's metrics (e.g. Hits@K); writes
  {output_dir or MODEL_DIR/eval_results}/{split}_step{N}.json."""
  import jax  # pylint: disable=import-outside-toplevel
  from t2t_jax import checkpoints, io_utils, partitioning, trainer  # pylint: disable=import-outside-toplevel
  partitioner = partitioner or partitioning.Partitioner()
  config, params = checkpoints.load_params(model_dir, step=checkpoint_step,
                                           partitioner=partitioner)
  step = checkpoint_step if checkpoint_step is not None else checkpoints.CheckpointManager(
      model_dir).latest_step()
  shard_index, num_shards = partitioner.host_shard()
  it = _numpy_batches(mixture_or_task_name, split=split, task_feature_lengths=task_feature_lengths,
                      batch_size=batch_size, shuffle=False, seed=0, shard_index=shard_index,
                      num_shards=num_shards, pack=False, num_epochs=1, use_cached=False,
                      data_fn=data_fn)
  batches = list(_take(it, eval_steps) if eval_steps else it)
  if not batches:
    raise UserInputError(f"split {split!r} of {mixture_or_task_name} has no full batch of "
                         f"{batch_size} examples")
  metrics = trainer.make_eval_loss_fn(config, partitioner, batches, batch_size)(params, step)
  if eval_fn_factory is not None:
    fn = eval_fn_factory(model_config=config, mixture_or_task_name=mixture_or_task_name,
                         task_feature_lengths=task_feature_lengths, partitioner=partitioner)
    metrics.update({k: float(v) for k, v in fn(params, step).items()})
  result = {"step": step, "split": split, "mixture_or_task_name": mixture_or_task_name, **metrics}
  if jax.process_index() == 0:
    out = output_dir or os.path.join(model_dir, "eval_results")
    io_utils.write_json(os.path.join(out, f"{split}_step{step}.json"), result)
  log.info("eval %s", result)
  return result


def infer(*, model_dir: str, input_file: str, output_file: str, k: int = 10,
          beam_size: int | None = None, batch_size: int = 64) -> int:
  """Recommends for each prompt of `input_file` (one a line) into JSONL `output_file`
  (runs/infer.gin): constrained beam search via `t2t_jax.recommend.Recommender`."""
  import json  # pylint: disable=import-outside-toplevel
  from t2t_jax import io_utils, recommend  # pylint: disable=import-outside-toplevel
  if not os.path.isfile(input_file):
    raise UserInputError(f"INFER_INPUT_FILE {input_file!r} does not exist")
  with open(input_file, encoding="utf-8") as f:
    prompts = [line.strip() for line in f if line.strip()]
  if not prompts:
    raise UserInputError(f"INFER_INPUT_FILE {input_file!r} has no prompts")
  rec = recommend.Recommender.load(model_dir, beam_size=beam_size)
  with io_utils.atomic_write(output_file) as f:
    for start in range(0, len(prompts), batch_size):
      chunk = prompts[start:start + batch_size]
      for prompt, recs in zip(chunk, rec.recommend(chunk, k)):
        f.write(json.dumps({"prompt": prompt, "tracks": [r.as_dict() for r in recs]}) + "\n")
  return len(prompts)


def export(*, model_dir: str, export_dir: str, checkpoint_step: int | None = None,
           dtype: str = "float32") -> str:
  """Writes a MODEL_DIR checkpoint as a Hugging Face T5 directory (runs/export.gin)."""
  from t2t_jax import checkpoints, hf_convert  # pylint: disable=import-outside-toplevel
  config, params = checkpoints.load_params(model_dir, step=checkpoint_step)
  return hf_convert.export_hf_t5(params, config, export_dir, dtype=dtype)


RUNS = {"train": train, "evaluate": evaluate, "infer": infer, "export": export}


def _take(it, n):
  for i, x in enumerate(it):
    if i >= n:
      return
    yield x


# INITIAL_CHECKPOINT_PATH values that name a pip-installed pretrained model instead of a path.
PRETRAINED_ALIASES = {"pretrained:all-MiniLM-L6-v2": lambda p: p.minilm_dir()}


def load_initial_params(path: str, model_config, *, seed: int = 0):
  """Warm-start parameters (INITIAL_CHECKPOINT_PATH): the model family decides what it reads
  (`EncoderDecoderModel.init_from_pretrained`)."""
  from t2t_jax import models  # pylint: disable=import-outside-toplevel
  if path in PRETRAINED_ALIASES:
    from t2t_jax.models import pretrained  # pylint: disable=import-outside-toplevel
    path = PRETRAINED_ALIASES[path](pretrained)
  if not os.path.exists(path):
    raise UserInputError(f"INITIAL_CHECKPOINT_PATH {path!r} does not exist")
  return models.get_model(model_config).init_from_pretrained(path, seed=seed)


# ------------------------------------------------------------------------------ distributed


def maybe_initialize_distributed(args) -> None:
  """jax.distributed.initialize from flags, JAX_* environment, or cluster auto-detection."""
  import jax  # pylint: disable=import-outside-toplevel
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
  parser.add_argument("--log_level", default="INFO")
  args = parser.parse_args(rest)
  args.gin_bindings = list(args.gin_bindings) + gin_bindings
  args.gin_search_paths = [p for p in args.gin_search_paths.split(",") if p]
  if not args.gin_file:
    parser.error("at least one --gin_file is required")
  return args


def _has_checkpoint(model_dir: str) -> bool:
  return any(name != "config.gin" for name in os.listdir(model_dir)) if os.path.isdir(model_dir) else False


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  created_model_dir = None
  try:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "jax._src.xla_bridge"):
      logging.getLogger(noisy).setLevel(logging.WARNING)
    gin_utils.parse_gin(args.gin_file, args.gin_bindings, args.gin_search_paths)
    maybe_initialize_distributed(args)
    import gin  # pylint: disable=import-outside-toplevel
    import jax  # pylint: disable=import-outside-toplevel
    run = gin.query_parameter("RUN/macro.value") if _has_macro("RUN") else "train"
    if run not in RUNS:
      raise UserInputError(f"gin macro RUN={run!r}: use one of {sorted(RUNS)}")
    model_dir = gin.query_parameter("MODEL_DIR/macro.value") if _has_macro("MODEL_DIR") else None
    if run == "train" and model_dir and jax.process_index() == 0:
      if not os.path.exists(model_dir):
        created_model_dir = model_dir
      os.makedirs(model_dir, exist_ok=True)
      gin_utils.write_config(model_dir)
    # Under `python -m` this file is __main__; gin registered the importable module's functions.
    from t2t_jax import train as train_module  # pylint: disable=import-outside-toplevel,import-self
    result = gin_utils.call_configured(train_module.RUNS[run])
  except UserInputError as e:
    # gin appends "In call to configurable ..." lines to exceptions; the first line says it all.
    print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
    if created_model_dir and not _has_checkpoint(created_model_dir):
      shutil.rmtree(created_model_dir, ignore_errors=True)  # leave no half-made MODEL_DIR behind
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


def _has_macro(name):
  import gin  # pylint: disable=import-outside-toplevel
  try:
    gin.query_parameter(f"{name}/macro.value")
    return True
  except ValueError:
    return False


if __name__ == "__main__":
  sys.exit(main())
