"""The ceiling of semantic-ID designs over a dense retriever's space: how well could any decoder over
those IDs rank, if it scored an ID by the prompt's dot product with the sum of its tokens' vectors?

With ID_EMBEDDING_INIT='retrieval_residual' (t2t_jax/ids/token_vectors.py, residual=True) the tokens
of an ID carry residual means whose sum is the track's RQ reconstruction, and the first decoding
steps score exactly that; a track's ID can rank no better than its reconstruction lets it.  This
tool measures, on a fold's inner validation queries (never its test ones), Hits@10 / MAP@10 of
ranking every track by the prompt's dot product with its reconstruction, next to the dense
retriever itself ("dense": the tracks' own vectors), for each --level_sizes (balanced RQ, codes made
unique inside each prefix: the ID specs of gin/experiments/compare_cpcd_scalable.gin).

  python tools/semantic_id_ceiling.py --dataset_dir data/cpcd --fold 0 \\
    --encoder_dir WORK/models/as_written_fold0/bi_encoder_tuned_encoder/seed0 \\
    --level_sizes 128,128 --level_sizes 1024,1024 --json docs/results/compare_cpcd_scalable/ceiling_fold0.json

--encoder_dir: a sentence-transformers dir (the nested study's tuned bi-encoder of that fold and
seed, saved in its work dir); without it the zero-shot all-MiniLM-L6-v2.  Track texts: metadata.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from t2t_jax import console, evaluation, io_utils, report  # noqa: E402  pylint: disable=wrong-import-position
from t2t_jax.errors import UserInputError  # noqa: E402  pylint: disable=wrong-import-position
from t2t_jax.ids import specs as specs_lib  # noqa: E402  pylint: disable=wrong-import-position
from t2t_jax.ids import token_vectors  # noqa: E402  pylint: disable=wrong-import-position


def _sizes(text: str) -> tuple[int, ...]:
  try:
    sizes = tuple(int(x) for x in text.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(f"--level_sizes {text!r}: comma-separated integers, e.g. 128,128") from None
  if not sizes or min(sizes) < 2:
    raise argparse.ArgumentTypeError(f"--level_sizes {text!r}: every level needs >= 2 codes")
  return sizes


def reconstructions(table, vectors_NxD: np.ndarray) -> np.ndarray:
  """float32 [N, D]: each track's sum of its ID tokens' residual vectors (its RQ reconstruction)."""
  offset = 3  # any offset > 0: token ids only index the vectors
  vec, _ = token_vectors.id_token_vectors(table, vectors_NxD, id_token_offset=offset,
                                          vocab_size=offset + int(sum(table.level_sizes)), residual=True)
  tokens_NxL = table.token_ids(offset)
  return np.stack([np.where((t > 0)[:, None], vec[t], 0.0) for t in tokens_NxL.T]).sum(0).astype(np.float32)


def _scores(q_QxD, t_NxD, relevant, k: int = 10) -> dict:
  top = np.argsort(-(q_QxD @ t_NxD.T), axis=1, kind="stable")[:, :k]
  m = evaluation.evaluate_rankings(top, relevant, ks=(k,))
  return {f"hits@{k}": round(float(m[f"hits@{k}"]), 4), f"map@{k}": round(float(m[f"map@{k}"]), 4)}


def run(args) -> dict:
  from t2t_jax.baselines import bi_encoder  # pylint: disable=g-import-not-at-top  (torch: only when run)
  from t2t_jax.studies import fair_study, pipeline  # pylint: disable=g-import-not-at-top
  if args.encoder_dir and not os.path.isfile(os.path.join(args.encoder_dir, "config.json")):
    raise UserInputError(f"--encoder_dir {args.encoder_dir}: not a sentence-transformers dir (no config.json)")
  t0 = time.perf_counter()
  with tempfile.TemporaryDirectory(prefix="t2t_ceiling_") as work:
    f = fair_study.open_fold("ceiling", args.dataset_dir, args.fold, work, "title", pipeline.Stages(verbose=False))
    dense = bi_encoder.BiEncoderRetriever(model_dir=args.encoder_dir, track_text="metadata",
                                          max_seq_length=args.max_seq_length, threads=args.threads).fit(f.catalog,
                                                                                                       f.train)
    track_NxD = np.asarray(dense.track_emb_NxE, np.float32)
    q_QxD = dense.encode(f.val[0])
    rows = [{"level_sizes": None, "method": "dense (the tracks' own vectors)", **_scores(q_QxD, track_NxD, f.val[1])}]
    for sizes in args.level_sizes:
      (spec,) = specs_lib.parse_id_specs([("ceiling", "semantic_rq", {
          "level_sizes": sizes, "balanced": True, "unique_last_level": True, "disambiguation": "auto",
          "seed": args.seed})])
      table = specs_lib.build_table(spec, track_ids=f.ws.track_ids, embeddings_NxD=track_NxD)
      recon = reconstructions(table, track_NxD)
      unit = track_NxD / np.maximum(np.linalg.norm(track_NxD, axis=1, keepdims=True), 1e-12)
      cos = (recon * unit).sum(1) / np.maximum(np.linalg.norm(recon, axis=1), 1e-12)
      rows.append({"level_sizes": list(sizes), "method": "RQ reconstruction", "tokens_per_id": table.num_levels,
                   "id_vocab_size": int(sum(table.level_sizes)), "median_cosine_to_track": round(float(np.median(cos)), 4),
                   **_scores(q_QxD, recon, f.val[1])})
      print(f"{rows[-1]['level_sizes']}: hits@10 {rows[-1]['hits@10']:.3f} (dense {rows[0]['hits@10']:.3f}), "
            f"median cosine {rows[-1]['median_cosine_to_track']:.3f}", flush=True)
  return {"tool": "semantic_id_ceiling", "command": " ".join(["python", "tools/semantic_id_ceiling.py"] + sys.argv[1:]),
          "dataset_dir": args.dataset_dir, "fold": args.fold, "encoder_dir": args.encoder_dir or "all-MiniLM-L6-v2",
          "queries": "the fold's inner validation split", "num_queries": len(f.val[0]),
          "num_tracks": len(track_NxD), "rows": rows, "seconds": round(time.perf_counter() - t0, 1),
          "machine": report.machine_info()}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--dataset_dir", required=True, help="an imported dataset dir with folds.json (t2t import)")
  p.add_argument("--fold", type=int, default=0, help="the fold whose inner validation queries are scored")
  p.add_argument("--encoder_dir", default=None, help="sentence-transformers dir (default: zero-shot MiniLM)")
  p.add_argument("--level_sizes", type=_sizes, action="append", default=None,
                 help="codebook sizes, e.g. 128,128 (repeatable; default 128,128 and 1024,1024)")
  p.add_argument("--max_seq_length", type=int, default=512, help="prompt and track tokens (the encoder's positions)")
  p.add_argument("--threads", type=int, default=2)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--json", default=None, help="write the rows here (atomically)")
  args = p.parse_args(argv)
  args.level_sizes = args.level_sizes or [(128, 128), (1024, 1024)]

  def go():
    out = run(args)
    if args.json:
      io_utils.write_json(args.json, out)
  return console.run_main(go)


if __name__ == "__main__":
  sys.exit(main())
