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
See t2t_jax/studies/decoding_variants.py for the definitions (misses, artist entropy in bits); the
study run is t2t_jax/studies/decoding_variants_run.py.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from t2t_jax import console  # noqa: E402  pylint: disable=wrong-import-position
from t2t_jax.errors import UserInputError  # noqa: E402  pylint: disable=wrong-import-position
from t2t_jax.studies import decoding_variants_run  # noqa: E402  pylint: disable=wrong-import-position


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
  args = p.parse_args(argv)  # _Parser's errors are UserInputErrors: parsed inside run_main
  penalties = parse_penalties(args.penalties)
  for flag, v in (("--k", args.k), ("--beam_size", args.beam_size), ("--num_groups", args.num_groups),
                  ("--max_prompts", args.max_prompts), ("--batch_size", args.batch_size),
                  ("--group_size", args.group_size)):
    _positive(flag, v)
  decoding_variants_run.run(
      args.model_dir, args.dataset_dir, args.out, split=args.split, penalties=penalties,
      num_groups=args.num_groups, group_size=args.group_size, k=args.k, beam_size=args.beam_size,
      max_prompts=args.max_prompts, batch_size=args.batch_size, unconstrained_sweep=args.unconstrained_sweep)


if __name__ == "__main__":
  sys.exit(main())
