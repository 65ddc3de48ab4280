"""The decoding-variants study run on a trained model dir (tools/decoding_variants.py): the rows of
t2t_jax/studies/decoding_variants.py (constrained, unconstrained, the grouped-beam diversity sweep(s))
on the prompts of a dataset dir's split, written as results.{json,csv,md} + fig3.png.

  load_prompts      the split's playlists -> prompts, their tracks' ID-table rows (others skipped)
  artists_of_table  the artist of every ID-table row (model dir's catalog, else the dataset's)
  run               the study: rows, config, notes and the figure, replaced as one output folder
"""

from __future__ import annotations

import math
import os
import time
from typing import Sequence

from t2t_jax import io_utils, report
from t2t_jax.data import formats, prompts as prompts_lib
from t2t_jax.errors import UserInputError
from t2t_jax.serving import retriever
from t2t_jax.studies import decoding_variants as dv

OUTPUT_KIND = "decoding_variants"
COLUMNS = ("decoding", "num_groups", "diversity_penalty", "beam_size", "valid_id_share",
           "top1_valid_share", "duplicate_share", "hits@10", "map@10", "ndcg@10",
           "artist_entropy@10", "distinct_artists@10")


def load_prompts(rec, dataset_dir: str, split: str, max_prompts: int | None):
  """(prompts, relevant table rows, skipped count) of the split's playlists."""
  ds = formats.Dataset.load(dataset_dir)
  field = rec.settings.get("prompt_field", "title")
  row_of = {tid: r for r, tid in enumerate(rec.id_table.track_ids)}
  prompts, relevant, skipped = [], [], 0
  for p in ds.playlists(split):
    if max_prompts and len(prompts) >= max_prompts:
      break
    rows = sorted({row_of[t] for t in p.track_ids if t in row_of})
    try:
      prompt = prompts_lib.make_prompt(p, field, max_chars=rec.max_prompt_chars)
    except UserInputError:
      prompt = ""
    if not rows or not prompt:
      skipped += 1
      continue
    prompts.append(prompt)
    relevant.append(rows)
  if not prompts:
    raise UserInputError(f"--dataset_dir {dataset_dir}: split {split!r} has no playlist with a prompt "
                         f"and a track in the model's ID table ({skipped} skipped)")
  return prompts, relevant, skipped, ds


def artists_of_table(rec, ds) -> list[str]:
  """Artist of every ID-table row: the model dir's catalog, else the dataset's, else the track id
  (an unknown artist counts as its own)."""
  out = []
  for tid in rec.id_table.track_ids:
    t = rec.tracks.get(tid)
    if t is None and tid in ds.track_row:
      t = ds.tracks[ds.track_row[tid]]
    out.append(t.artist if t is not None and t.artist else f"?{tid}")
  return out


def run(model_dir: str, dataset_dir: str, out: str, *, split: str = "test",
        penalties: Sequence[float] = (0.0, 0.5, 1.0, 2.0, 4.0), num_groups: int = 2,
        group_size: int | None = None, k: int = 10, beam_size: int | None = None,
        max_prompts: int | None = None, batch_size: int = 32, unconstrained_sweep: bool = False) -> list[dict]:
  """The study on a model dir (anything `t2t recommend` accepts) and the prompts of a dataset dir's
  split: rows (constrained, unconstrained, the sweep(s)) written with fig3.png to `out` as one folder."""
  inputs = [model_dir, dataset_dir]
  io_utils.check_output_dir(out, kind=OUTPUT_KIND, inputs=inputs)
  t0 = time.time()
  rec = retriever.GenerativeRetriever.from_model_dir(model_dir)
  if k > rec.id_table.num_tracks:
    raise UserInputError(f"--k {k}: the ID table has only {rec.id_table.num_tracks} tracks")
  beam = beam_size or rec.beam_size
  prompts, relevant, skipped, ds = load_prompts(rec, dataset_dir, split, max_prompts)
  artist_of_N = artists_of_table(rec, ds)
  inputs_NxL = rec.encode(prompts)
  common = dict(retriever=rec, inputs=inputs_NxL, relevant=relevant, artist_of_N=artist_of_N,
                batch_size=batch_size)
  print(f"[decoding_variants] {len(prompts)} prompts ({skipped} skipped), beam {beam}, k {k}",
        flush=True)
  rows = []
  for name, fn in (("constrained", dv.constrained_row), ("unconstrained", dv.unconstrained_row)):
    t = time.time()
    rows.append({**fn(beam_size=beam, k=k, **common), "seconds": round(time.time() - t, 2)})
    print(f"[decoding_variants] {name}: hits@{k} {rows[-1].get(f'hits@{k}', 0):.4f}, "
          f"valid {rows[-1]['valid_id_share']:.3f}", flush=True)
  group_size = group_size or max(1, k // num_groups)
  sweep = []
  for constrained in (True, False) if unconstrained_sweep else (True,):
    t = time.time()
    part = dv.diversity_sweep(beam_size=beam, k=k, penalties=penalties,
                              num_groups=num_groups, group_size=group_size,
                              constrained=constrained, **common)
    for r in part:
      r["seconds"] = round((time.time() - t) / len(part), 2)
    sweep += part
    print(f"[decoding_variants] {part[0]['decoder']} sweep over {len(penalties)} penalties: "
          f"{time.time() - t:.1f} s", flush=True)
  rows += sweep
  config = {"model_dir": os.path.abspath(model_dir), "dataset_dir": os.path.abspath(dataset_dir),
            "split": split, "num_prompts": len(prompts), "skipped_playlists": skipped,
            "prompt_field": rec.settings.get("prompt_field", "title"), "k": k, "beam_size": beam,
            "num_groups": num_groups, "penalties": list(penalties),
            "unconstrained_sweep": bool(unconstrained_sweep),
            "seconds": round(time.time() - t0, 1)}
  notes = [
      "Invalid (-1) or repeated outputs count as misses at their rank; valid_id_share = valid / "
      "produced outputs, top1_valid_share = prompts whose best output is a real ID.",
      f"artist_entropy@{k}: mean Shannon entropy (bits, log2) of the artists of each prompt's "
      f"distinct valid top {k}; log2({k}) = {math.log2(k):.2f} is the maximum.",
      f"Grouped rows: {num_groups} groups of {group_size} beams (penalty 0 = the constrained "
      f"row only when the groups are as wide as its beam, {beam}); "
      + ("the 'grouped (diverse) unconstrained' rows decode freely, as the paper's sweep did."
         if unconstrained_sweep else
         "grouped beam search is constrained here (the paper swept unconstrained: "
         "--unconstrained_sweep)."),
      f"{len(prompts)} prompts from split {split!r} ({skipped} playlists skipped: no prompt or "
      "no track in the ID table).",
  ]
  columns = tuple(c.replace("@10", f"@{k}") for c in COLUMNS)
  with io_utils.atomic_dir(out, kind=OUTPUT_KIND, inputs=inputs) as tmp:
    report.write_results(tmp, rows, columns=columns, title="Text2Tracks decoding variants",
                         machine=report.machine_info(), config=config, notes=notes)
    dv.plot_sweep(sweep, os.path.join(tmp, "fig3.png"), k=k)
  print(f"[decoding_variants] wrote {out}", flush=True)
  return rows
