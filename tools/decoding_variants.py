"""The paper's decoding variants on a trained model dir: constrained (reference), unconstrained with
its share of valid IDs, and the diversity-penalty sweep of grouped beam search (Figure 3).

  python tools/decoding_variants.py --model_dir M --dataset_dir D [--split test]
      [--penalties 0,0.5,1,2,4] [--num_groups 2] [--k 10] [--beam_size B] [--max_prompts N]
      [--unconstrained_sweep] --out DIR

M: anything `t2t recommend` accepts (its assets give the vocabulary, the ID table, the catalog, the
input length and the prompt field).  D: a dataset dir (`t2t import`): the playlists of --split are
the prompts, their tracks (those in the model's ID table) the relevant rows; playlists with no
track in the table, or an empty prompt, are skipped (counted in results.md).

DIR gets results.json (a list of rows: constrained, unconstrained, then one per penalty of the
constrained sweep and, with --unconstrained_sweep, one per penalty of the same sweep decoded freely,
the paper's setting), results.csv, results.md and fig3.png (both sweeps, the unconstrained one
dotted), replaced as one folder (a DIR holding other data is refused).
See t2t_jax/studies/decoding_variants.py for the definitions (misses, artist entropy in bits).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from t2t_jax import console  # noqa: E402  pylint: disable=wrong-import-position
from t2t_jax.errors import UserInputError  # noqa: E402  pylint: disable=wrong-import-position

OUTPUT_KIND = "decoding_variants"
COLUMNS = ("decoding", "num_groups", "diversity_penalty", "beam_size", "valid_id_share",
           "top1_valid_share", "duplicate_share", "hits@10", "map@10", "ndcg@10",
           "artist_entropy@10", "distinct_artists@10")


class _Parser(argparse.ArgumentParser):
  """argparse whose errors are one UserInputError line (exit 2 from `main`), not usage + message."""

  def error(self, message):
    raise UserInputError(message)


def parse_penalties(text: str) -> tuple[float, ...]:
  try:
    out = tuple(float(x) for x in text.split(",") if x.strip())
  except ValueError:
    raise UserInputError(f"--penalties {text!r}: expected comma-separated numbers, e.g. 0,0.5,1,2,4") from None
  if not out or any(not math.isfinite(p) or p < 0 for p in out):
    raise UserInputError(f"--penalties {text!r}: need at least one finite penalty >= 0")
  return out


def _positive(flag: str, v):
  if v is not None and v < 1:
    raise UserInputError(f"{flag} must be >= 1, got {v}")


def load_prompts(rec, dataset_dir: str, split: str, max_prompts: int | None):
  """(prompts, relevant table rows, skipped count) of the split's playlists."""
  from t2t_jax.data import formats, prompts as prompts_lib  # pylint: disable=g-import-not-at-top
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


def run(args) -> list[dict]:
  from t2t_jax import io_utils, report  # pylint: disable=g-import-not-at-top
  from t2t_jax.serving import retriever  # pylint: disable=g-import-not-at-top
  from t2t_jax.studies import decoding_variants as dv  # pylint: disable=g-import-not-at-top
  penalties = parse_penalties(args.penalties)
  for flag, v in (("--k", args.k), ("--beam_size", args.beam_size), ("--num_groups", args.num_groups),
                  ("--max_prompts", args.max_prompts), ("--batch_size", args.batch_size),
                  ("--group_size", args.group_size)):
    _positive(flag, v)
  inputs = [args.model_dir, args.dataset_dir]
  io_utils.check_output_dir(args.out, kind=OUTPUT_KIND, inputs=inputs)
  t0 = time.time()
  rec = retriever.GenerativeRetriever.from_model_dir(args.model_dir)
  if args.k > rec.id_table.num_tracks:
    raise UserInputError(f"--k {args.k}: the ID table has only {rec.id_table.num_tracks} tracks")
  beam = args.beam_size or rec.beam_size
  prompts, relevant, skipped, ds = load_prompts(rec, args.dataset_dir, args.split, args.max_prompts)
  artist_of_N = artists_of_table(rec, ds)
  inputs_NxL = rec.encode(prompts)
  common = dict(retriever=rec, inputs=inputs_NxL, relevant=relevant, artist_of_N=artist_of_N,
                batch_size=args.batch_size)
  print(f"[decoding_variants] {len(prompts)} prompts ({skipped} skipped), beam {beam}, k {args.k}",
        flush=True)
  rows = []
  for name, fn in (("constrained", dv.constrained_row), ("unconstrained", dv.unconstrained_row)):
    t = time.time()
    rows.append({**fn(beam_size=beam, k=args.k, **common), "seconds": round(time.time() - t, 2)})
    print(f"[decoding_variants] {name}: hits@{args.k} {rows[-1].get(f'hits@{args.k}', 0):.4f}, "
          f"valid {rows[-1]['valid_id_share']:.3f}", flush=True)
  group_size = args.group_size or max(1, args.k // args.num_groups)
  sweep = []
  for constrained in (True, False) if args.unconstrained_sweep else (True,):
    t = time.time()
    part = dv.diversity_sweep(beam_size=beam, k=args.k, penalties=penalties,
                              num_groups=args.num_groups, group_size=group_size,
                              constrained=constrained, **common)
    for r in part:
      r["seconds"] = round((time.time() - t) / len(part), 2)
    sweep += part
    print(f"[decoding_variants] {part[0]['decoder']} sweep over {len(penalties)} penalties: "
          f"{time.time() - t:.1f} s", flush=True)
  rows += sweep
  config = {"model_dir": os.path.abspath(args.model_dir), "dataset_dir": os.path.abspath(args.dataset_dir),
            "split": args.split, "num_prompts": len(prompts), "skipped_playlists": skipped,
            "prompt_field": rec.settings.get("prompt_field", "title"), "k": args.k, "beam_size": beam,
            "num_groups": args.num_groups, "penalties": list(penalties),
            "unconstrained_sweep": bool(args.unconstrained_sweep),
            "seconds": round(time.time() - t0, 1)}
  notes = [
      "Invalid (-1) or repeated outputs count as misses at their rank; valid_id_share = valid / "
      "produced outputs, top1_valid_share = prompts whose best output is a real ID.",
      f"artist_entropy@{args.k}: mean Shannon entropy (bits, log2) of the artists of each prompt's "
      f"distinct valid top {args.k}; log2({args.k}) = {math.log2(args.k):.2f} is the maximum.",
      f"Grouped rows: {args.num_groups} groups of {group_size} beams (penalty 0 = the constrained "
      f"row only when the groups are as wide as its beam, {beam}); "
      + ("the 'grouped (diverse) unconstrained' rows decode freely, as the paper's sweep did."
         if args.unconstrained_sweep else
         "grouped beam search is constrained here (the paper swept unconstrained: "
         "--unconstrained_sweep)."),
      f"{len(prompts)} prompts from split {args.split!r} ({skipped} playlists skipped: no prompt or "
      "no track in the ID table).",
  ]
  columns = tuple(c.replace("@10", f"@{args.k}") for c in COLUMNS)
  with io_utils.atomic_dir(args.out, kind=OUTPUT_KIND, inputs=inputs) as tmp:
    report.write_results(tmp, rows, columns=columns, title="Text2Tracks decoding variants",
                         machine=report.machine_info(), config=config, notes=notes)
    dv.plot_sweep(sweep, os.path.join(tmp, "fig3.png"), k=args.k)
  print(f"[decoding_variants] wrote {args.out}", flush=True)
  return rows


def main(argv=None) -> int:
  p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model_dir", required=True)
  p.add_argument("--dataset_dir", required=True)
  p.add_argument("--split", default="test", choices=("train", "validation", "test"))
  p.add_argument("--penalties", default="0,0.5,1,2,4", help="diversity penalties, comma-separated")
  p.add_argument("--num_groups", type=int, default=2, help="beam groups of the sweep")
  p.add_argument("--group_size", type=int, default=None,
                 help="beams per group (default k // num_groups: k beams in all, as in the paper, so "
                      "every group's results reach the top k; the beam size: penalty 0 = the constrained row)")
  p.add_argument("--k", type=int, default=10)
  p.add_argument("--beam_size", type=int, default=None, help="default: the model dir's")
  p.add_argument("--max_prompts", type=int, default=None)
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--unconstrained_sweep", action="store_true",
                 help="also sweep the penalties with unconstrained (free) grouped beam search, the "
                      "paper's setting: more rows, and dotted lines in fig3.png")
  p.add_argument("--out", required=True)
  return console.run_main(lambda: _run(p, argv))


def _run(p: argparse.ArgumentParser, argv) -> None:
  run(p.parse_args(argv))  # _Parser's errors are UserInputErrors: parsed inside run_main


if __name__ == "__main__":
  sys.exit(main())
