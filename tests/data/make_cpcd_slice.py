"""Writes tests/data/cpcd/ (a trimmed subset of the CPCD development set) from a CPCD folder.

  python tests/data/make_cpcd_slice.py CPCD_DIR

Takes the first 35 conversations of the train file plus its conversations without goal tracks
(37) and the first 10 of the val file; each turn's search results are cut to their first 2 ids and
`tracks` keeps only the tracks still referenced.  The tests read only the output, never CPCD_DIR.
"""

import json
import os
import sys

TRAIN, VAL = "cpcd_v1.dialogs.dev.train.jsonl", "cpcd_v1.dialogs.dev.val.jsonl"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpcd")


def trim(conv: dict) -> dict:
  referenced = set(conv["goal_playlist"])
  for turn in conv["turns"]:
    turn["search_results"] = [group[:2] for group in turn["search_results"]]
    for group in turn["search_results"]:
      referenced.update(group)
    referenced.update(turn["liked_results"])
    referenced.update(turn["disliked_results"])
  conv["tracks"] = {k: v for k, v in conv["tracks"].items() if k in referenced}
  return conv


def main(src: str) -> None:
  os.makedirs(OUT, exist_ok=True)
  for name, n in ((TRAIN, 35), (VAL, 10)):
    with open(os.path.join(src, name), encoding="utf-8") as f:
      convs = [json.loads(line) for line in f]
    keep = convs[:n] + ([c for c in convs[n:] if not c["goal_playlist"]] if name == TRAIN else [])
    with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
      for conv in keep:
        f.write(json.dumps(trim(conv), ensure_ascii=False) + "\n")
    print(name, len(keep))


if __name__ == "__main__":
  main(sys.argv[1])
