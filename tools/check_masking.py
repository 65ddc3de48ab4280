"""How many prompts of an imported CPCD dataset still name a goal artist or a goal title.

  t2t import cpcd /path/cpcd --artists entities_masked --out data/cpcd_em
  python tools/check_masking.py --dataset_dir data/cpcd_em --cpcd_dir /path/cpcd [--json out.json]

Runs the independent checker (t2t_jax/data/entity_check.py: its own normalisation, exact token runs
and difflib fuzzy windows; nothing of the masker's code) on every prompt of --dataset_dir, with the
goal artists and titles of each conversation read from the raw CPCD files in --cpcd_dir.  Prints, per
split (train, validation, test) and over all conversations, the prompts with residue and their share,
and examples (conversation id, kind, goal entity, matching prompt words); --json writes it all.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from t2t_jax import console, io_utils  # noqa: E402  pylint: disable=wrong-import-position
from t2t_jax.data import entity_check, formats  # noqa: E402  pylint: disable=wrong-import-position

SPLITS = ("train", "validation", "test")


def check(dataset_dir: str, cpcd_dir: str, *, max_examples: int = 10) -> dict:
  """{"artists": the import's --artists, "splits": {split or "all": residue_report}}."""
  prompts, splits = entity_check.dataset_prompts(dataset_dir)
  goals = entity_check.goal_entities(cpcd_dir)
  meta = formats.read_json_file(os.path.join(dataset_dir, "meta.json"), "meta.json")
  reports = {name: entity_check.residue_report(prompts, goals, ids=splits.get(name, []), max_examples=max_examples)
             for name in SPLITS}
  reports["all"] = entity_check.residue_report(prompts, goals, max_examples=max_examples)
  return {"dataset_dir": os.path.abspath(dataset_dir), "cpcd_dir": os.path.abspath(cpcd_dir),
          "artists": meta.get("artists") if isinstance(meta, dict) else None, "splits": reports}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--dataset_dir", required=True, help="a `t2t import cpcd` output")
  p.add_argument("--cpcd_dir", required=True, help="the raw CPCD folder it was imported from")
  p.add_argument("--json", help="write the report here (atomically)")
  p.add_argument("--max_examples", type=int, default=10, help="examples kept per split")
  args = p.parse_args(argv)
  return console.run_main(lambda: _run(args), "check_masking")


def _run(args) -> None:
  out = check(args.dataset_dir, args.cpcd_dir, max_examples=args.max_examples)
  print(f"{out['dataset_dir']} (--artists {out['artists']}): prompts naming a goal artist or title")
  for name, r in out["splits"].items():
    print(f"  {name:10s} {r['num_with_residue']:4d} / {r['num_prompts']:4d}  {r['share']:6.1%}  "
          f"(artist {r['by_kind']['artist']}, title {r['by_kind']['title']})")
  for e in out["splits"]["all"]["examples"]:
    print(f"    {e['id']}  {e['kind']:6s}  {e['entity']!r}  found {e['text']!r}{'' if e['exact'] else ' (fuzzy)'}")
  if args.json:
    io_utils.write_json(args.json, out)


if __name__ == "__main__":
  sys.exit(main())
