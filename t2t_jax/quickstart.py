"""`t2t quickstart`: Text2Tracks end to end on the built-in synthetic catalog.

playlists -> CF track embeddings -> semantic IDs -> SeqIO task -> trained T5 -> constrained beam
search -> ranked tracks -> metrics, next to BM25 and most-popular on the same held-out playlists.
This is an entry point (layer 3): it may import the TensorFlow-based `tasks` package, lazily.
"""

import dataclasses
import os
import sys
import time

from t2t_jax import experiment
from t2t_jax import io_utils
from t2t_jax import report as report_lib
from t2t_jax.errors import UserInputError

TASK_DATASET = experiment.TASK_DATASET
STRATEGY = "semantic_rq"
ID_OPTIONS = {"balanced": True, "unique_last_level": True, "disambiguation": "auto"}
REPORT_KIND, WORK_KIND = "report", "quickstart_work"


@dataclasses.dataclass
class QuickstartConfig:
  out: str = "report"
  work_dir: str = "t2t_runs/quickstart"
  seed: int = 0
  num_tracks: int = 3000
  num_playlists: int = 5000
  vocab_size: int = 2000
  embedding_dim: int = 64
  id_levels: tuple = (64, 64)
  model: str = "tiny"
  train_steps: int = 800
  batch_size: int = 128
  learning_rate: float = 3e-3
  beam_size: int = 20
  k: int = 10
  eval_playlists: int = 400
  prompt_field: str = "title"
  inputs_length: int | None = None  # None: the 99.9th percentile of training prompt lengths
  progress: bool = True
  overwrite: bool = False  # replace a non-empty --out / --work_dir that quickstart did not write


model_config = experiment.model_config


def run(cfg: QuickstartConfig) -> list[dict]:
  """Runs the whole pipeline; returns the result rows (also written to cfg.out)."""
  import jax  # pylint: disable=g-import-not-at-top
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top

  from t2t_jax import recommend  # pylint: disable=g-import-not-at-top

  if cfg.beam_size < cfg.k:
    raise UserInputError(f"--beam_size ({cfg.beam_size}) must be >= --k ({cfg.k})")
  _check_outputs(cfg)
  stage = experiment.Stages()
  bar = (lambda it, **kw: tqdm(it, **kw)) if cfg.progress else (lambda it, **kw: it)
  model_dir = os.path.join(cfg.work_dir, "model")

  # Stages 1-2: synthetic data and the SentencePiece vocabulary (the work dir is rebuilt from scratch).
  ws = experiment.prepare_synthetic(cfg.work_dir, seed=cfg.seed, num_tracks=cfg.num_tracks,
                                    num_playlists=cfg.num_playlists, vocab_size=cfg.vocab_size, stage=stage)
  with stage("3/8 CF track embeddings (normalised co-occurrence SVD, JAX)"):
    emb = experiment.cf_embeddings(ws, dim=cfg.embedding_dim, seed=cfg.seed)

  with stage("4/8 semantic IDs (residual k-means, JAX)"):
    # Balanced levels + the collision-aware last level: unique IDs without a disambiguation token when
    # every prefix fits its codebook (the best ID of tools/compare_ids.py; README "Results").
    spec = experiment.IdSpec(STRATEGY, STRATEGY, {"level_sizes": tuple(cfg.id_levels), **ID_OPTIONS})
    table, _ = experiment.build_table(ws, spec, embeddings_NxD=emb, seed=cfg.seed)
    print(f"      {table.num_tracks} IDs of {table.num_levels} tokens; "
          f"{table.meta.get('num_disambiguated', '?')} tracks needed the disambiguation token")

  with stage(f"5/8 SeqIO task t2t.{TASK_DATASET}.{STRATEGY}.{cfg.prompt_field}"):
    task = experiment.make_task(ws, table, STRATEGY, prompt_field=cfg.prompt_field,
                                inputs_length=cfg.inputs_length, eval_playlists=cfg.eval_playlists)
    if not cfg.inputs_length:
      cfg.inputs_length = task.feature_lengths["inputs"]
      print(f"      inputs_length={cfg.inputs_length} (99.9th percentile of training prompts)")

  mcfg = model_config(cfg.model, task.vocab.vocab_size)
  with stage(f"6/8 train T5.1.1-{cfg.model} ({mcfg.num_params() / 1e6:.1f}M params, {cfg.train_steps} steps)"):
    experiment.train_text2tracks(task, model_dir=model_dir, model=cfg.model, train_steps=cfg.train_steps,
                                 batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, seed=cfg.seed,
                                 progress=cfg.progress)
    recommend.write_assets(model_dir, spm_path=ws.spm_path, id_table=table, catalog_path=ws.ds.catalog_path,
                           inputs_length=cfg.inputs_length, beam_size=cfg.beam_size, prompt_field=cfg.prompt_field)

  relevant, prompts = task.relevant, task.prompts
  rows = []
  with stage(f"7/8 constrained beam search on {len(prompts)} held-out playlists"):
    ev = experiment.evaluate_text2tracks(task, model_dir, beam_size=cfg.beam_size, k=cfg.k,
                                         progress=lambda it: bar(it, desc="decode", unit="batch"))
    rows.append({"method": "Text2Tracks (semantic IDs)", **ev["metrics"], "decode_steps_per_id": table.num_levels,
                 "prompts_per_s": ev["prompts_per_s"]})

  with stage("8/8 baselines: BM25 and most-popular"):
    for row in experiment.run_baselines(ws, prompts, relevant, k=cfg.k, prompt_field=cfg.prompt_field,
                                        which=("bm25", "most_popular"), seed=cfg.seed):
      rows.append({key: v for key, v in row.items()
                   if key not in ("id_strategy", "train_seconds", "prompts_per_s")})

  # Example recommendations straight from the saved model dir (what `t2t recommend` does).
  rec = recommend.Recommender.load(model_dir)
  example_prompts = prompts[:5]
  examples = []
  for p, recs, rel in zip(example_prompts, rec.recommend(example_prompts, k=5), relevant[:5]):
    rel_ids = {table.track_ids[int(r)] for r in rel}
    examples.append({"prompt": p, "tracks": [f"{r.artist} - {r.title}" + (" ✓" if r.track_id in rel_ids else "")
                                             for r in recs]})
  seconds = time.time() - stage.t0
  details = {"task": task.name, "model_dir": model_dir, "model": dataclasses.asdict(mcfg),
             "id_levels": list(table.level_sizes), "eval_playlists": len(prompts),
             "stage_seconds": stage.times, "devices": str(jax.devices())}
  io_utils.write_marker(cfg.out, kind=REPORT_KIND)
  report_lib.write_report(cfg.out, title="Text2Tracks quickstart (synthetic catalog)", rows=rows,
                          examples=examples, seconds=seconds, details=details)
  print()
  print(report_lib.markdown_table(rows))
  print()
  print(report_lib.examples_markdown(examples))
  print(f"Total {seconds:.1f} s. Report: {os.path.join(cfg.out, 'report.md')}; model dir: {model_dir}")
  print(f'Try: t2t recommend --model_dir {model_dir} "{example_prompts[0]}"')
  return rows


def _check_outputs(cfg: QuickstartConfig) -> None:
  """Refuses --out / --work_dir that would destroy data, before any work; marks the work dir."""
  if os.path.realpath(cfg.out) == os.path.realpath(cfg.work_dir):
    raise UserInputError(f"--out and --work_dir must be different directories, both are {cfg.out}")
  for flag, path, kind in (("--out", cfg.out, REPORT_KIND), ("--work_dir", cfg.work_dir, WORK_KIND)):
    try:
      io_utils.check_output_dir(path, kind=kind, overwrite=cfg.overwrite)
    except UserInputError as e:
      raise UserInputError(f"{flag}: {e}") from None
  io_utils.write_marker(cfg.work_dir, kind=WORK_KIND)  # its data/ and model/ are rebuilt each run


def _levels(text: str) -> tuple:
  try:
    levels = tuple(int(x) for x in text.split(","))
  except ValueError:
    raise UserInputError(f"--id_levels must be comma-separated integers, got {text!r}") from None
  if not levels or any(l < 2 for l in levels):
    raise UserInputError(f"--id_levels entries must be >= 2, got {text!r}")
  return levels


def run_from_args(args) -> None:
  cfg = QuickstartConfig(
      out=args.out, work_dir=args.work_dir, seed=args.seed, num_tracks=args.num_tracks,
      num_playlists=args.num_playlists, vocab_size=args.vocab_size, embedding_dim=args.embedding_dim,
      id_levels=_levels(args.id_levels), model=args.model, train_steps=args.train_steps,
      batch_size=args.batch_size, learning_rate=args.learning_rate, beam_size=args.beam_size, k=args.k,
      eval_playlists=args.eval_playlists, prompt_field=args.prompt_field, progress=not args.no_progress,
      overwrite=args.overwrite)
  for name in ("num_tracks", "num_playlists", "train_steps", "batch_size", "k", "vocab_size", "embedding_dim"):
    if getattr(cfg, name) <= 0:
      raise UserInputError(f"--{name} must be positive, got {getattr(cfg, name)}")
  run(cfg)
  sys.stdout.flush()
