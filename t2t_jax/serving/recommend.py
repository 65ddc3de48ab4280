"""`t2t recommend`: prompts -> ranked tracks from a model dir (TF-free: usable on serving images).

A model dir holds everything needed: the checkpoint and config (written by the trainer) and its
assets (`t2t_jax.serving.assets`).  `GenerativeRetriever.from_model_dir(DIR).recommend(prompts,
k=10)` encodes each prompt once and runs constrained beam search, so every returned track is a
catalog track.
"""

import json
import sys

from t2t_jax.data import prompts as prompts_lib
from t2t_jax.errors import UserInputError
from t2t_jax.serving.retriever import GenerativeRetriever


def read_prompts(args) -> list[str]:
  """The prompts of `t2t recommend` (arguments, then --input lines), normalised: what the model reads
  and what is echoed (no control characters or escape sequences reach the terminal raw).  Blank
  --input lines are skipped and counted on stderr; any other bad prompt is an error naming its
  argument number or file:line."""
  items = [(f"prompt #{i}", p) for i, p in enumerate(args.prompts, 1)]
  if args.input:
    blank = 0
    try:
      with open(args.input, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
          if line.strip():
            items.append((f"{args.input}:{lineno}", line.rstrip("\n")))
          else:
            blank += 1
    except (OSError, UnicodeDecodeError) as e:
      raise UserInputError(f"--input {args.input}: {e}") from None
    if blank:
      print(f"t2t recommend: skipped {blank} blank line(s) of {args.input}", file=sys.stderr)
  if not items:
    raise UserInputError("no prompts: pass them as arguments or with --input FILE")
  prompts = []
  for where, text in items:
    try:
      prompts.append(prompts_lib.normalize_prompt(text, max_chars=sys.maxsize))  # cut later, as trained
    except UserInputError as e:
      raise UserInputError(f"{where}: {e}") from None
  return prompts


def run_from_args(args) -> None:
  """`t2t recommend` entry."""
  prompts = read_prompts(args)
  rec = GenerativeRetriever.from_model_dir(args.model_dir, verify=False if getattr(args, "no_verify", False) else None,
                                           lexical_prior_weight=getattr(args, "lexical_prior", None),
                                           dense_prior_weight=getattr(args, "dense_prior", None))
  results = rec.recommend(prompts, k=args.k)
  for prompt, recs in zip(prompts, results):
    if args.json:
      print(json.dumps({"prompt": prompt, "tracks": [r.as_dict() for r in recs]}, ensure_ascii=False))
    else:
      print(f"# {prompt}")
      for r in recs:
        print(f"{r.rank:3d}. {r.artist} - {r.title}  [{r.track_id}]  {r.score:.3f}")
  sys.stdout.flush()
