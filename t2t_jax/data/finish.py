"""The last step of every importer: splits, SentencePiece vocabulary and meta.json for a dataset dir.

Importers (`convert.import_dataset` for JSONL/CSV/Parquet, `mpd.convert_mpd`, `cpcd.convert_cpcd`)
write catalog.jsonl and playlists.jsonl into the temporary dir of `io_utils.atomic_dir`, then call
`finish_dataset`, which makes the dir complete for training:
  splits.json      given (a user's file, CPCD's canonical split) or drawn by `draw_splits`;
  vocab/spm.model  SentencePiece (T5 ids) trained on the *training* prompts and the catalog metadata
                   only (never validation/test prompts), or a user's model checked and copied;
  meta.json        the importer's provenance + counts, split sizes and rule, vocabulary, prompt
                   length statistics (characters and tokens) and `prompt_max_chars`, the prompt cut
                   tasks should apply (`prompts.DEFAULT_MAX_CHARS` unless the importer says more).

Default split sizes (`draw_splits`): validation and test get max(10%, 50) playlists each when that
leaves at least 60% for training; otherwise 10% each and a warning (too few playlists for a
reliable test set).  Fractions or counts set either split explicitly.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Any, Iterable, Iterator

import numpy as np

from t2t_jax import console, io_utils
from t2t_jax.data import formats, prompts
from t2t_jax.data import vocab as vocab_lib
from t2t_jax.errors import UserInputError

DEFAULT_VOCAB_SIZE = 8000
MIN_HELD_OUT = 50          # playlists per held-out split under the default rule
HELD_OUT_FRACTION = 0.1
MIN_TRAIN_FRACTION = 0.6
STATS_FIELD = "both"       # prompts measured and used for the vocabulary: title + description
PERCENTILES = (50, 90, 95, 99)


@dataclasses.dataclass(frozen=True)
class SplitSpec:
  """How to draw splits: None everywhere is the default rule (module docstring)."""
  seed: int = 0
  validation_fraction: float | None = None
  test_fraction: float | None = None
  validation_size: int | None = None
  test_size: int | None = None


def _explicit_size(name: str, n: int, fraction: float | None, size: int | None) -> int | None:
  if fraction is not None and size is not None:
    raise UserInputError(f"--{name}_fraction and --{name}_size both given; use one")
  if size is not None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
      raise UserInputError(f"--{name}_size must be a non-negative integer, got {size!r}")
    return size
  if fraction is not None:
    if not 0 <= fraction < 1:
      raise UserInputError(f"--{name}_fraction must be in [0, 1), got {fraction}")
    k = int(round(fraction * n))
    return max(k, 1) if fraction > 0 and n >= 3 else k
  return None


def draw_splits(playlist_ids: Iterable[str], spec: SplitSpec) -> tuple[dict[str, list[str]], str, list[str]]:
  """(splits, rule text, warnings) for `playlist_ids` under `spec` (seeded, order-independent)."""
  ids = sorted(set(playlist_ids))
  n = len(ids)
  warnings = []
  want = max(int(round(HELD_OUT_FRACTION * n)), MIN_HELD_OUT)
  if n - 2 * want >= MIN_TRAIN_FRACTION * n:
    default, rule = want, f"max({HELD_OUT_FRACTION:.0%}, {MIN_HELD_OUT}) playlists each"
  else:
    default = max(int(round(HELD_OUT_FRACTION * n)), 1 if n >= 3 else 0)
    rule = f"{HELD_OUT_FRACTION:.0%} each (too few playlists for {MIN_HELD_OUT} each)"
    warnings.append(f"only {n} playlists: validation and test get {default} each ({HELD_OUT_FRACTION:.0%}); "
                    f"metrics on so few test playlists are noisy (set --test_size to choose)")
  n_val = _explicit_size("validation", n, spec.validation_fraction, spec.validation_size)
  n_test = _explicit_size("test", n, spec.test_fraction, spec.test_size)
  if n_val is not None or n_test is not None:
    rule = "as requested" + ("" if n_val is not None and n_test is not None else f"; otherwise {rule}")
  n_val = default if n_val is None else n_val
  n_test = default if n_test is None else n_test
  if n_val + n_test >= n:
    raise UserInputError(f"validation ({n_val}) + test ({n_test}) playlists leave none for training "
                         f"(the dataset has {n})")
  splits = formats.make_splits(ids, seed=spec.seed, validation_size=n_val, test_size=n_test)
  return splits, rule, warnings


def _track_text(track: formats.Track) -> str:
  # The text of experiment.track_text (BM25 documents, the quickstart's vocabulary), markup cleaned.
  return prompts.clean_text(f"{track.artist} {track.title} {track.album} {' '.join(track.tags)}")


def _prompt(playlist: formats.Playlist, max_chars: int) -> str:
  return prompts.make_prompt(playlist, STATS_FIELD, max_chars=max_chars)


def _percentiles(values: list[int]) -> dict[str, float]:
  if not values:
    return {}
  arr = np.asarray(values, np.float64)
  out = {f"p{q}": float(np.percentile(arr, q)) for q in PERCENTILES}
  out.update(mean=float(arr.mean()), max=int(arr.max()))
  return out


def write_vocab(tmp_dir: str, *, train_prompts: Iterable[str], tracks: Iterable[formats.Track],
                vocab_size: int | None, spm_path: str | os.PathLike | None) -> dict[str, Any] | None:
  """Writes tmp_dir/vocab/spm.model (trained, or the user's copied); returns its meta entry."""
  out = os.path.join(tmp_dir, formats.VOCAB_DIR, formats.SPM_FILE)
  if spm_path is not None:
    vocab_lib.load_sentencepiece(spm_path)  # checks the T5 special ids
    os.makedirs(os.path.dirname(out), exist_ok=True)
    shutil.copyfile(spm_path, out)
    source = {"source": "user", "copied_from": os.path.abspath(os.fspath(spm_path))}
  elif vocab_size:
    counts = {"train_prompts": 0, "tracks": 0}

    def texts() -> Iterator[str]:
      for text in train_prompts:
        counts["train_prompts"] += 1
        yield text
      for t in tracks:
        counts["tracks"] += 1
        yield _track_text(t)

    vocab_lib.train_sentencepiece(texts(), out, vocab_size=vocab_size)
    source = {"source": "trained", "requested_size": vocab_size, "trained_on": counts}
  else:
    return None
  size = vocab_lib.load_sentencepiece(out).GetPieceSize()
  return {"path": f"{formats.VOCAB_DIR}/{formats.SPM_FILE}", "size": int(size), **source}


def _playlists(tmp_dir: str) -> Iterator[formats.Playlist]:
  return formats.read_playlists(os.path.join(tmp_dir, formats.PLAYLISTS_FILE))


def prompt_stats(tmp_dir: str, *, max_chars: int, spm_file: str | None,
                 total: int | None = None) -> dict[str, Any]:
  """Prompt lengths (field "both", before the cut) in characters and, with a vocabulary, tokens.
  `total`: the playlists, for the progress bar."""
  sp = None
  if spm_file:
    sp = vocab_lib.load_sentencepiece(spm_file)
  chars, tokens = [], []
  for p in console.progress(_playlists(tmp_dir), "prompt lengths", total=total, unit="playlists"):
    text = _prompt(p, formats.MAX_TEXT_CHARS * 2)
    chars.append(len(text))
    if sp is not None:
      tokens.append(len(sp.EncodeAsIds(text)))
  return {"field": STATS_FIELD, "chars": _percentiles(chars), "tokens": _percentiles(tokens),
          "over_max_chars": int(sum(c > max_chars for c in chars))}


def finish_dataset(tmp_dir: str, *, meta: dict[str, Any], splits: dict[str, list[str]] | None = None,
                   split_spec: SplitSpec = SplitSpec(), vocab_size: int | None = DEFAULT_VOCAB_SIZE,
                   spm_path: str | os.PathLike | None = None,
                   prompt_max_chars: int = prompts.DEFAULT_MAX_CHARS) -> dict[str, Any]:
  """Completes the dataset dir being written in `tmp_dir` (catalog.jsonl and playlists.jsonl are
  there): splits.json, vocab/spm.model and meta.json.  Returns the meta written."""
  ids = [p.playlist_id
         for p in console.progress(_playlists(tmp_dir), "check playlists", unit="playlists")]
  if not ids:
    raise UserInputError("no valid playlists to write")
  warnings = list(meta.get("warnings", []))
  if splits is None:
    splits, rule, more = draw_splits(ids, split_spec)
    warnings += more
  else:
    rule = meta.get("split_rule", "given")
  formats.write_splits(os.path.join(tmp_dir, formats.SPLITS_FILE), splits)
  train = set(splits.get("train", []))
  catalog = os.path.join(tmp_dir, formats.CATALOG_FILE)
  read = console.progress(_playlists(tmp_dir), "vocabulary texts", total=len(ids), unit="playlists")
  vocab_meta = write_vocab(
      tmp_dir, train_prompts=(_prompt(p, prompt_max_chars) for p in read if p.playlist_id in train),
      tracks=formats.read_catalog(catalog), vocab_size=vocab_size, spm_path=spm_path)
  spm_file = os.path.join(tmp_dir, formats.VOCAB_DIR, formats.SPM_FILE) if vocab_meta else None
  num_tracks = sum(1 for _ in formats.read_catalog(catalog))
  out = dict(meta)
  out.update({
      "num_tracks": num_tracks, "num_playlists": len(ids), "seed": split_spec.seed,
      "split_sizes": {k: len(v) for k, v in splits.items()}, "split_rule": rule,
      "vocab": vocab_meta, "prompt_max_chars": int(prompt_max_chars),
      "prompt_stats": prompt_stats(tmp_dir, max_chars=prompt_max_chars, spm_file=spm_file, total=len(ids)),
      "warnings": warnings})
  io_utils.write_json(os.path.join(tmp_dir, formats.META_FILE), out)
  return out


def materialize_fold(dataset_dir: str | os.PathLike, fold: int, out_dir: str | os.PathLike, *,
                     overwrite: bool = False, validation_fraction: float = 0.1,
                     min_validation: int = 20) -> dict[str, Any]:
  """Writes a complete dataset dir for one fold of `dataset_dir`'s folds.json: the same catalog,
  playlists (and track_aliases.json when present), that fold's splits.json, and a vocabulary
  retrained on that fold's training prompts (or the user's model copied, as at import); returns meta.
  """
  dataset_dir = os.fspath(dataset_dir)
  folds = formats.read_folds(os.path.join(dataset_dir, formats.FOLDS_FILE))
  splits = formats.fold_splits(folds, fold, validation_fraction=validation_fraction,
                               min_validation=min_validation)
  meta_path = os.path.join(dataset_dir, formats.META_FILE)
  meta = formats.read_json_file(meta_path, "meta file") if os.path.exists(meta_path) else {}
  vocab = meta.get("vocab") or {}
  spm_path = None
  if vocab.get("source") == "user":
    spm_path = os.path.join(dataset_dir, formats.VOCAB_DIR, formats.SPM_FILE)
  vocab_size = vocab.get("requested_size", DEFAULT_VOCAB_SIZE) if vocab or not meta else None
  with io_utils.atomic_dir(out_dir, kind="dataset", inputs=(dataset_dir,), overwrite=overwrite) as tmp:
    for name in (formats.CATALOG_FILE, formats.PLAYLISTS_FILE, formats.FOLDS_FILE, "track_aliases.json"):
      src = os.path.join(dataset_dir, name)
      if name in (formats.CATALOG_FILE, formats.PLAYLISTS_FILE) or os.path.exists(src):
        shutil.copyfile(formats.check_input_file(src), os.path.join(tmp, name))
    base = {k: v for k, v in meta.items() if k not in ("vocab", "prompt_stats", "split_sizes", "warnings")}
    base.update(fold=fold, num_folds=len(folds["folds"]), parent=os.path.abspath(dataset_dir),
                split_rule=f"fold {fold} of {len(folds['folds'])} (test); validation {validation_fraction:.0%} "
                           f"(at least {min_validation}) of the other folds, seed {folds['seed']}")
    return finish_dataset(tmp, meta=base, splits=splits, split_spec=SplitSpec(seed=folds["seed"]),
                          vocab_size=vocab_size, spm_path=spm_path,
                          prompt_max_chars=meta.get("prompt_max_chars", prompts.DEFAULT_MAX_CHARS))
