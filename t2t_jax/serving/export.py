"""`t2t export`: a model dir -> a portable export dir (jax.export function + arrays + vocabulary + IDs).

The whole recommend function (tokenised prompts in, top-K ID-table rows and scores out: T5 encoder,
KV-cached decoder, constrained beam search over the catalog trie) is lowered once with a symbolic
batch dimension and serialized with `jax.export`.  Weights and the trie arrays are *arguments* of that
function, stored beside it in `arrays.safetensors`, not constants baked into the StableHLO: the module
then stays the same size whatever the catalog (baking measured +2.3 KB of module for the 2.1 KB
trie of the 300-track quickstart catalog: the trie's bytes again, inside a protobuf capped at 2 GB),
and the arrays stay readable by other tools.

The export dir is read by `t2t_jax.export_runtime` (numpy + jax + sentencepiece only), which is copied
into it; see that module for the layout.  The weights are also written in Hugging Face T5 naming
(`hf/model.safetensors` + `hf/config.json`, by `t2t_jax.models.hf_convert.export_hf_t5`; loadable by
`transformers.T5ForConditionalGeneration`).
The output dir is written atomically; the manifest records every file's size and sha256, which the
runtime checks before it uses a byte.
"""

import dataclasses
import json
import os
import shlex
import shutil
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from t2t_jax import export_runtime as rt
from t2t_jax import io_utils, storage
from t2t_jax.models import hf_convert
from t2t_jax.serving import retriever, assets as assets_lib
from t2t_jax.errors import UserInputError

DEFAULT_PLATFORMS = ("cpu", "cuda")
KNOWN_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
HF_DIR = "hf"
# The dense prior's table among the exported function's index arrays (weight x unit track vectors, [rows, E]).
DENSE_ARRAY = "dense_tracks"


def flatten_params(params) -> dict:
  """Nested param dict -> {"encoder/layers_0/attention/query/kernel": np.ndarray}."""
  import flax  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  flat = flax.traverse_util.flatten_dict(nn.unbox(params), sep="/")
  return {k: np.asarray(jax.device_get(v)) for k, v in sorted(flat.items())}


def _unflatten(flat: dict) -> dict:
  """{"a/b": x} -> {"a": {"b": x}}."""
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    *parents, leaf = path.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def _write_safetensors(path: str, arrays: dict, metadata: dict | None = None) -> None:
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, path, metadata=metadata)


def _platforms(text) -> tuple:
  plats = tuple(p.strip() for p in (text.split(",") if isinstance(text, str) else text) if p.strip())
  bad = [p for p in plats if p not in KNOWN_PLATFORMS]
  if not plats or bad:
    raise UserInputError(f"--platforms must be a comma-separated subset of {KNOWN_PLATFORMS}, got {text!r}")
  return plats


def export_model(model_dir: str, out_dir: str, *, k: int = 10, beam_size: int | None = None,
                 platforms=DEFAULT_PLATFORMS, hf_weights: bool = True, overwrite: bool = False,
                 verify: bool | None = None) -> dict:
  """Exports MODEL_DIR's recommender to OUT_DIR (atomically); returns the manifest.

  Args:
    model_dir: a model dir (checkpoint + assets/, see t2t_jax.serving.recommend).
    out_dir: the export dir to write; a previous export there is replaced, anything else only with
      `overwrite` (and never the model dir, a dir holding it or one inside it).
    k: tracks returned per prompt by the exported function (the runtime may ask for fewer).
    beam_size: beam width (default: the model dir's; at least k).
    platforms: lowering targets, e.g. ("cpu", "cuda"); lowering needs no such device.
    hf_weights: also write hf/model.safetensors + hf/config.json.
    overwrite: replace a non-empty OUT_DIR that is not a previous export.
    verify: refuse a checkpoint whose files fail its integrity manifest (None: $T2T_VERIFY_CHECKPOINTS,
      default on), so an export never seals damaged weights with fresh sha256 values.
  """
  io_utils.check_output_dir(out_dir, kind="export", inputs=[model_dir], overwrite=overwrite)  # before any work
  plats = _platforms(platforms)
  rec = retriever.GenerativeRetriever.from_model_dir(model_dir, beam_size=beam_size, verify=verify)
  if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= rec.id_table.num_tracks:
    raise UserInputError(f"-k must be in [1, {rec.id_table.num_tracks}], got {k!r}")
  beam = max(rec.beam_size, k)
  params_flat = flatten_params(rec.params)
  index_arrays = {"child_start": np.asarray(rec.index.child_start), "token": np.asarray(rec.index.token),
                  "terminal_row": np.asarray(rec.index.terminal_row)}
  if rec.dense_prior_weight:  # the dense prior rides in the function: weight x the unit track table
    index_arrays[DENSE_ARRAY] = np.asarray(rec.weighted_dense(), np.float32)
  t0 = time.time()
  exported = _lower(rec, params_flat, index_arrays, beam=beam, k=k, platforms=plats)
  serialized = exported.serialize()
  manifest = _manifest(rec, exported, k=k, beam=beam, model_dir=model_dir, lower_s=time.time() - t0)
  with io_utils.atomic_dir(out_dir, kind="export", inputs=[model_dir], overwrite=overwrite) as tmp:
    with open(os.path.join(tmp, rt.FUNCTION_FILE), "wb") as f:
      f.write(serialized)
    arrays = {rt.PARAMS_PREFIX + n: a for n, a in params_flat.items()}
    arrays.update({rt.INDEX_PREFIX + n: a for n, a in index_arrays.items()})
    _write_safetensors(os.path.join(tmp, rt.ARRAYS_FILE), arrays, {"format": rt.FORMAT})
    _write_vocab_and_catalog(rec, model_dir, tmp, manifest)
    shutil.copyfile(rt.__file__, os.path.join(tmp, "export_runtime.py"))
    config = rec.model.config
    if hf_weights and config.family == "t5_1_1":  # Hugging Face T5 naming, via the converter
      hf_convert.export_hf_t5(_unflatten(params_flat), config, os.path.join(tmp, HF_DIR),
                              dtype="float16" if config.param_dtype == "float16" else "float32")
      manifest["hf"] = {"dir": HF_DIR, "files": sorted(os.listdir(os.path.join(tmp, HF_DIR))),
                        "loadable_by": "transformers.T5ForConditionalGeneration.from_pretrained"}
    _seal(tmp, manifest)
  return manifest


def _lower(rec, params_flat: dict, index_arrays: dict, *, beam: int, k: int, platforms: tuple):
  """`jax.export` of the recommend function (flat params, trie arrays [+ the weighted dense table],
  tokens[b, L]) -> (rows, scores), batch dimension b symbolic."""
  index = rec.index
  fn = rec.decode_fn(k, beam_size=beam)

  def recommend_fn(params_flat, index_arrays, tokens_BxL):
    params = _unflatten(params_flat)
    arrays = dict(index_arrays)
    dense_RxE = arrays.pop(DENSE_ARRAY, None)
    ix = dataclasses.replace(index, **arrays)
    return fn(params, tokens_BxL, index=ix, dense_RxE=dense_RxE)

  spec = lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype)
  tokens_spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape(f"b, {rec.inputs_length}"), jnp.int32)
  return jax.export.export(jax.jit(recommend_fn), platforms=platforms)(
      jax.tree.map(spec, params_flat), jax.tree.map(spec, index_arrays), tokens_spec)


def _manifest(rec, exported, *, k: int, beam: int, model_dir: str, lower_s: float) -> dict:
  """The manifest's fields known before any file is written (file sizes and hashes come last)."""
  return {
      "format": rt.FORMAT, "format_version": rt.FORMAT_VERSION,
      "function": rt.FUNCTION_FILE, "arrays": rt.ARRAYS_FILE, "tracks": rt.TRACKS_FILE,
      "inputs_length": rec.inputs_length, "top_k": k, "beam_size": beam, "beam_scoring": rec.beam_scoring,
      # The dense prior is in the exported function (its table, weight x unit rows, is the index array
      # DENSE_ARRAY); the BM25 one is not (host-side bm25s): an export ranks as `t2t recommend
      # --lexical_prior 0` does (its weight is kept here for whoever adds it back).
      "lexical_prior": {"weight": rec.lexical_prior_weight, "in_function": False},
      "dense_prior": {"weight": rec.dense_prior_weight, "in_function": bool(rec.dense_prior_weight),
                      **({"array": rt.INDEX_PREFIX + DENSE_ARRAY} if rec.dense_prior_weight else {})},
      "max_decode_len": int(rec.index.max_depth), "max_prompt_chars": rec.max_prompt_chars,
      "num_tracks": rec.id_table.num_tracks, "id_strategy": rec.id_table.strategy,
      "vocab": {"spm": rt.SPM_FILE, "text_vocab_size": rec.vocab.text_vocab_size,
                "id_level_sizes": list(rec.vocab.id_level_sizes), "vocab_size": rec.vocab.vocab_size,
                "pad_id": 0, "eos_id": 1, "unk_id": 2},
      "signature": {"inputs": ["params", "index", f"tokens int32[b, {rec.inputs_length}]"],
                    "outputs": [f"rows int32[b, {k}]", f"scores float32[b, {k}]"]},
      "platforms": list(exported.platforms),
      "calling_convention_version": exported.calling_convention_version,
      "input_vocab": _input_vocab_entry(rec),
      "jax_version": jax.__version__, "model_config": rec.model.config.to_json(),
      "source_model_dir": storage.abspath(model_dir), "lowering_seconds": round(lower_s, 2),
  }


def _write_vocab_and_catalog(rec, model_dir: str, tmp: str, manifest: dict) -> None:
  """The prompt tokenizer, the ID table and tracks.jsonl (one line per ID-table row) into `tmp`."""
  assets = assets_lib.local_assets(model_dir)  # a bucket model dir's: a local copy (small files)
  if os.path.exists(os.path.join(assets, assets_lib.SPM_FILE)):
    shutil.copyfile(os.path.join(assets, assets_lib.SPM_FILE), os.path.join(tmp, rt.SPM_FILE))
  if manifest["input_vocab"]["kind"] == "wordpiece":
    shutil.copyfile(rec.input_vocab.path, os.path.join(tmp, rt.TOKENIZER_FILE))
  rec.id_table.save(os.path.join(tmp, assets_lib.IDS_DIR))
  manifest["ids_dir"] = assets_lib.IDS_DIR
  with open(os.path.join(tmp, rt.TRACKS_FILE), "w", encoding="utf-8") as f:
    for tid in rec.id_table.track_ids:
      t = rec.tracks.get(tid)
      f.write(json.dumps({"track_id": tid, "artist": t.artist if t else "",
                          "title": t.title if t else ""}, ensure_ascii=False) + "\n")


def _seal(tmp: str, manifest: dict) -> None:
  """One file mode for every file, their sizes and sha256 in the manifest (checked at load), and the
  manifest written last."""
  files = sorted(os.path.relpath(os.path.join(d, n), tmp) for d, _, names in os.walk(tmp) for n in names)
  for f in files:  # one mode for every file (safetensors writes 0600, open() the umask's 0644)
    os.chmod(os.path.join(tmp, f), io_utils.file_mode())
  manifest["file_bytes"] = {f: os.path.getsize(os.path.join(tmp, f)) for f in files}
  manifest["sha256"] = {f: rt.file_sha256(os.path.join(tmp, f)) for f in files}  # checked at load
  io_utils.write_json(os.path.join(tmp, rt.MANIFEST_FILE), manifest)


def _input_vocab_entry(rec) -> dict:
  """How the runtime tokenises prompts: the SentencePiece model + EOS (T5), or a pretrained
  encoder's WordPiece tokenizer ([CLS] ... [SEP], needs the `tokenizers` package)."""
  if getattr(rec.input_vocab, "kind", None) == "wordpiece":
    return {"kind": "wordpiece", "file": rt.TOKENIZER_FILE}
  return {"kind": "sentencepiece", "file": rt.SPM_FILE}


def run_from_args(args) -> None:
  """`t2t export` entry."""
  manifest = export_model(args.model_dir, args.out, k=args.k, beam_size=args.beam_size,
                          platforms=args.platforms, hf_weights=not args.no_hf, overwrite=args.overwrite,
                          verify=False if getattr(args, "no_verify", False) else None)
  total = sum(manifest["file_bytes"].values())
  print(f"exported {args.model_dir} -> {args.out} ({total / 1e6:.2f} MB; top_k={manifest['top_k']}, "
        f"beam={manifest['beam_size']}, platforms={','.join(manifest['platforms'])}, batch: symbolic)")
  for key, what, flag in (("lexical_prior", "a BM25 prior", "--lexical_prior 0"),
                          ("dense_prior", "a dense prior", "--dense_prior 0")):
    entry = manifest.get(key, {})
    if entry.get("weight"):
      print(f"note: {args.model_dir} ranks with {what} (weight {entry['weight']:g}); the exported function "
            + ("ranks with it too" if entry.get("in_function") else f"ranks without it (as `t2t recommend {flag}`)"))
  print(f"try: {try_command(args.out)}")
  sys.stdout.flush()


def try_command(out_dir: str, prompt: str = "old classics for slow dancing") -> str:
  """The shell command that runs an export dir's runtime on `prompt`, quoted for copy and paste."""
  return shlex.join(["python", os.path.join(out_dir, "export_runtime.py"), out_dir, prompt])
