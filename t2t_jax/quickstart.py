"""`t2t quickstart`: Text2Tracks end to end on the built-in synthetic catalog.

playlists -> CF track embeddings -> semantic IDs -> SeqIO task -> trained T5 -> constrained beam
search -> ranked tracks -> metrics, next to BM25 and most-popular on the same held-out playlists.
This is an entry point (layer 3): it may import the TensorFlow-based `tasks` package, lazily.
"""

import contextlib
import dataclasses
import os
import shutil
import sys
import time

import numpy as np

from t2t_jax import report as report_lib
from t2t_jax.errors import UserInputError

TASK_DATASET = "synthetic"
STRATEGY = "semantic_rq"


@dataclasses.dataclass
class QuickstartConfig:
  out: str = "report"
  work_dir: str = "t2t_runs/quickstart"
  seed: int = 0
  num_tracks: int = 3000
  num_playlists: int = 5000
  vocab_size: int = 2000
  embedding_dim: int = 64
  id_levels: tuple = (64, 64, 64)
  model: str = "tiny"
  train_steps: int = 1500
  batch_size: int = 128
  learning_rate: float = 3e-3
  beam_size: int = 20
  k: int = 10
  eval_playlists: int = 400
  prompt_field: str = "title"
  inputs_length: int | None = None  # None: the 99.9th percentile of training prompt lengths
  progress: bool = True


def model_config(size: str, vocab_size: int):
  """The quickstart's T5.1.1 shapes: 'tiny' trains in a few CPU minutes."""
  from t2t_jax.models import t5  # pylint: disable=g-import-not-at-top
  if size == "tiny":
    return t5.T5Config.preset("tiny", vocab_size=vocab_size, emb_dim=128, num_heads=4, head_dim=32,
                              mlp_dim=512, num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.0)
  return t5.T5Config.preset(size, vocab_size=vocab_size)


class _Stages:
  """Prints one line per stage with its wall time."""

  def __init__(self):
    self.t0 = time.time()
    self.times = {}

  @contextlib.contextmanager
  def __call__(self, name: str):
    print(f"[t2t] {name} ...", flush=True)
    t = time.time()
    yield
    self.times[name] = round(time.time() - t, 2)
    print(f"[t2t] {name}: {self.times[name]:.1f} s", flush=True)


def run(cfg: QuickstartConfig) -> list[dict]:
  """Runs the whole pipeline; returns the result rows (also written to cfg.out)."""
  import jax  # pylint: disable=g-import-not-at-top
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top

  from t2t_jax import evaluation, recommend, trainer  # pylint: disable=g-import-not-at-top
  from t2t_jax.baselines import bm25, popularity  # pylint: disable=g-import-not-at-top
  from t2t_jax.data import formats, prompts as prompts_lib, synthetic, vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  from t2t_jax.decoding import generate, index as index_lib  # pylint: disable=g-import-not-at-top
  from t2t_jax.ids import embeddings, semantic  # pylint: disable=g-import-not-at-top
  from t2t_jax.models import t5  # pylint: disable=g-import-not-at-top

  if cfg.beam_size < cfg.k:
    raise UserInputError(f"--beam_size ({cfg.beam_size}) must be >= --k ({cfg.k})")
  stage = _Stages()
  bar = (lambda it, **kw: tqdm(it, **kw)) if cfg.progress else (lambda it, **kw: it)
  data_root = os.path.join(cfg.work_dir, "data")
  ds_dir = os.path.join(data_root, TASK_DATASET)
  model_dir = os.path.join(cfg.work_dir, "model")
  # The work dir belongs to the quickstart: a rerun starts from scratch, never from stale state.
  for d in (ds_dir, model_dir):
    shutil.rmtree(d, ignore_errors=True)

  with stage("1/8 generate synthetic catalog and playlists"):
    synthetic.generate(synthetic.SyntheticConfig(seed=cfg.seed, num_tracks=cfg.num_tracks,
                                                 num_playlists=cfg.num_playlists), ds_dir)
    ds = formats.Dataset.load(ds_dir)
    train_pl = list(ds.playlists("train"))
    test_pl = list(ds.playlists("test"))
    print(f"      {len(ds.tracks)} tracks, {len(train_pl)} train / {len(test_pl)} test playlists")

  with stage("2/8 train SentencePiece text vocabulary"):
    def texts():
      for p in train_pl:
        yield prompts_lib.prompt_text(p.title, p.description, "both")
      for t in ds.tracks:
        yield f"{t.artist} {t.title} {t.album} {' '.join(t.tags)}"
    spm_path = vocab_lib.train_sentencepiece(texts(), os.path.join(ds_dir, "vocab", "spm.model"),
                                             vocab_size=cfg.vocab_size)

  with stage("3/8 CF track embeddings (PPMI + randomized SVD, JAX)"):
    rows_train = [[ds.track_row[t] for t in p.track_ids] for p in train_pl]
    emb = embeddings.cooccurrence_embeddings(rows_train, len(ds.tracks), dim=cfg.embedding_dim, seed=cfg.seed)

  with stage("4/8 semantic IDs (residual k-means, JAX)"):
    table = semantic.build_semantic_ids(emb, [t.track_id for t in ds.tracks], level_sizes=tuple(cfg.id_levels),
                                        seed=cfg.seed)
    table.save(os.path.join(ds_dir, "ids", STRATEGY))
    print(f"      {table.num_tracks} IDs of {table.num_levels} tokens; "
          f"{table.meta.get('num_disambiguated', '?')} tracks needed the disambiguation token")

  vocab = vocab_lib.TextAndIdVocab(spm_path, table.level_sizes)
  if not cfg.inputs_length:
    # Encoder FLOPs grow with the padded length: size it to the prompts (a multiple of 8).
    lengths = [len(vocab.encode(prompts_lib.make_prompt(p, cfg.prompt_field))) + 1 for p in train_pl]
    cfg.inputs_length = int(-(-np.percentile(lengths, 99.9) // 8) * 8)
    print(f"      inputs_length={cfg.inputs_length} (99.9th percentile of training prompts)")
  task_name = f"t2t.{TASK_DATASET}.{STRATEGY}.{cfg.prompt_field}"
  feature_lengths = {"inputs": cfg.inputs_length, "targets": table.num_levels + 1}
  with stage(f"5/8 SeqIO task {task_name}"):
    from tasks import pipeline, t2t_tasks  # pylint: disable=g-import-not-at-top
    t2t_tasks.register_tasks(data_root)
    train_iter = pipeline.get_numpy_batches(task_name, split="train", task_feature_lengths=feature_lengths,
                                            batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed)
    eval_examples = pipeline.get_eval_examples(task_name, "test")
    if cfg.eval_playlists:
      eval_examples = eval_examples[: cfg.eval_playlists]

  mcfg = model_config(cfg.model, vocab.vocab_size)
  with stage(f"6/8 train T5.1.1-{cfg.model} ({mcfg.num_params() / 1e6:.1f}M params, {cfg.train_steps} steps)"):
    trainer.train(model_config=mcfg, train_iter=train_iter, model_dir=model_dir, train_steps=cfg.train_steps,
                  batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, seed=cfg.seed,
                  schedule="rsqrt", warmup_steps=min(200, cfg.train_steps // 5), checkpoint_period=cfg.train_steps,
                  log_period=max(1, cfg.train_steps // 10), progress=cfg.progress, restore=False)
    recommend.write_assets(model_dir, spm_path=spm_path, id_table=table,
                           catalog_path=os.path.join(ds_dir, "catalog.jsonl"), inputs_length=cfg.inputs_length,
                           beam_size=cfg.beam_size, prompt_field=cfg.prompt_field)

  relevant = [ex["relevant_rows"] for ex in eval_examples]
  prompts = [ex["prompt"] for ex in eval_examples]
  inputs = evaluation.pad_inputs([ex["inputs"] for ex in eval_examples], cfg.inputs_length)
  rows = []
  with stage(f"7/8 constrained beam search on {len(eval_examples)} held-out playlists"):
    _, params = trainer.load_params(model_dir)
    model = t5.Transformer(mcfg)
    index = index_lib.build_index(table.token_ids(vocab.id_token_offset), vocab.vocab_size).to_device()
    fn = jax.jit(generate.make_recommend_fn(model, index, beam_size=cfg.beam_size, top_k=cfg.k))
    batch = 32
    jax.block_until_ready(fn(params, inputs[:batch] if len(inputs) >= batch else
                             np.resize(inputs, (batch, inputs.shape[1]))))  # compile outside the timing
    t = time.time()
    t2t_rows, _ = evaluation.batched_topk(fn, params, inputs, batch_size=batch,
                                          progress=lambda it: bar(it, desc="decode", unit="batch"))
    secs = time.time() - t
    m = evaluation.evaluate_rankings(t2t_rows, relevant, ks=(1, 5, 10))
    rows.append({"method": "Text2Tracks (semantic IDs)", **m, "decode_steps_per_id": table.num_levels,
                 "prompts_per_s": round(len(inputs) / secs, 1)})

  with stage("8/8 baselines: BM25 and most-popular"):
    track_texts = [f"{t.artist} {t.title} {t.album} {' '.join(t.tags)}" for t in ds.tracks]
    train_prompts = [(prompts_lib.make_prompt(p, cfg.prompt_field), r) for p, r in zip(train_pl, rows_train)]
    bm = bm25.BM25Retriever().fit(track_texts, train_prompts)
    rows.append({"method": "BM25 (bm25s)", **evaluation.evaluate_rankings(bm.recommend(prompts, cfg.k), relevant,
                                                                          ks=(1, 5, 10)),
                 "decode_steps_per_id": None})
    pop = popularity.MostPopular(len(ds.tracks)).fit(rows_train)
    rows.append({"method": "Most popular", **evaluation.evaluate_rankings(pop.recommend(prompts, cfg.k), relevant,
                                                                          ks=(1, 5, 10)),
                 "decode_steps_per_id": None})

  # Example recommendations straight from the saved model dir (what `t2t recommend` does).
  rec = recommend.Recommender.load(model_dir)
  example_prompts = prompts[:5]
  examples = []
  for p, recs, rel in zip(example_prompts, rec.recommend(example_prompts, k=5), relevant[:5]):
    rel_ids = {table.track_ids[int(r)] for r in rel}
    examples.append({"prompt": p, "tracks": [f"{r.artist} - {r.title}" + (" ✓" if r.track_id in rel_ids else "")
                                             for r in recs]})
  seconds = time.time() - stage.t0
  details = {"task": task_name, "model_dir": model_dir, "model": dataclasses.asdict(mcfg),
             "id_levels": list(table.level_sizes), "eval_playlists": len(eval_examples),
             "stage_seconds": stage.times, "devices": str(jax.devices())}
  report_lib.write_report(cfg.out, title="Text2Tracks quickstart (synthetic catalog)", rows=rows,
                          examples=examples, seconds=seconds, details=details)
  print()
  print(report_lib.markdown_table(rows))
  print()
  print(report_lib.examples_markdown(examples))
  print(f"Total {seconds:.1f} s. Report: {os.path.join(cfg.out, 'report.md')}; model dir: {model_dir}")
  print(f'Try: t2t recommend --model_dir {model_dir} "{example_prompts[0]}"')
  return rows


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
      eval_playlists=args.eval_playlists, prompt_field=args.prompt_field, progress=not args.no_progress)
  for name in ("num_tracks", "num_playlists", "train_steps", "batch_size", "k", "vocab_size", "embedding_dim"):
    if getattr(cfg, name) <= 0:
      raise UserInputError(f"--{name} must be positive, got {getattr(cfg, name)}")
  run(cfg)
  sys.stdout.flush()
