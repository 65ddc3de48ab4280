"""Benchmark the retrieval priors inside beam search: built in the jitted search vs on the host.

  python tools/bench_priors.py [--rows 8175,100000] [--batches 8,32] [--json PATH]
  python tools/bench_priors.py --tiny --json PATH     # the same steps at toy sizes (a smoke run, tests)

What `t2t recommend` / `t2t serve` do with a model dir that keeps a BM25 and a dense prior
(`GenerativeRetriever.recommend_rows`), two ways, on the same model, catalog and prompts:
  * in_function (ours now): the BM25 shares go into the jitted search as a [B, rows] array and the dense
    table (weight x unit rows) as a device array; the function adds the prompt's cosine under the
    encoder it runs anyway and spreads the sum over the trie on the device (`index.subtree_max_device`);
  * host (the path before it, kept as the peer): the encoder runs once to embed the prompts
    (`embed_inputs`), the cosines and the trie's node prior are numpy on the host (`index.subtree_max`),
    then the search runs the encoder again.
The model is the adapted recipe's shape (`BertT5Config`: a MiniLM-L6-shaped encoder, 2 decoder layers,
one ID token per catalog row) with random weights: the cost does not depend on their values.  Both paths'
top-k rows are compared (`agreement`: the share of equal ranked lists).  Timing: `bench_common.time_windows`
(warm-up, then windows of steps; median, min, max), load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common  # noqa: E402  pylint: disable=wrong-import-position

ID_OFFSET = 3  # PAD, EOS, UNK before the ID tokens, as the t2t vocabularies
INPUTS_LENGTH = 64  # about a CPCD conversation's WordPiece length (median 270 characters)
DENSE_WEIGHT, LEXICAL_WEIGHT = 10.0, 4.0


def _model(rows: int, tiny: bool):
  from t2t_jax.models import bert, bert_t5  # pylint: disable=import-outside-toplevel
  vocab = -(-(rows + ID_OFFSET) // 128) * 128
  if tiny:
    enc = bert.BertConfig(vocab_size=1000, hidden_size=32, num_layers=1, num_heads=2,
                          intermediate_size=64, max_position_embeddings=INPUTS_LENGTH)
    return bert_t5.BertT5Config(vocab_size=vocab, emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64,
                                num_decoder_layers=1, encoder=enc)
  return bert_t5.BertT5Config(vocab_size=vocab)


def _retriever(rows: int, beam: int, tiny: bool, seed: int = 0):
  import jax  # pylint: disable=import-outside-toplevel
  from t2t_jax import models  # pylint: disable=import-outside-toplevel
  from t2t_jax.ids.table import IdTable  # pylint: disable=import-outside-toplevel
  from t2t_jax.serving import retriever  # pylint: disable=import-outside-toplevel
  config = _model(rows, tiny)
  model = models.build_model(config)
  params = jax.jit(lambda k: model.init_params(k, input_length=INPUTS_LENGTH, target_length=2))(
      jax.random.PRNGKey(seed))
  table = IdTable(strategy="integer", track_ids=[f"t{i}" for i in range(rows)],
                  codes=np.arange(rows, dtype=np.int32)[:, None], level_sizes=(rows,))
  rng = np.random.default_rng(seed)
  dense = rng.normal(size=(rows, config.encoder.hidden_size)).astype(np.float32)
  dense /= np.linalg.norm(dense, axis=1, keepdims=True)
  vocab = types.SimpleNamespace(id_token_offset=ID_OFFSET, vocab_size=config.vocab_size)
  settings = {"inputs_length": INPUTS_LENGTH, "beam_size": beam, "dense_prior_weight": DENSE_WEIGHT}
  return retriever.GenerativeRetriever(model=model, params=params, id_table=table, vocab=vocab,
                                       inputs_length=INPUTS_LENGTH, beam_size=beam, settings=settings, dense=dense)


def _inputs(rng, batch: int, vocab: int) -> np.ndarray:
  lengths = rng.integers(INPUTS_LENGTH // 2, INPUTS_LENGTH, batch)
  out = np.zeros((batch, INPUTS_LENGTH), np.int32)
  for i, n in enumerate(lengths):
    out[i, :n] = rng.integers(1000 if vocab > 2000 else 5, vocab, n)
  return out


def run_case(rec, *, batch: int, k: int, warmup: int, steps: int, windows: int, seed: int = 0) -> dict:
  """Both paths on one (catalog, batch): per-batch seconds, the speed-up and the rows' agreement."""
  import jax  # pylint: disable=import-outside-toplevel
  from t2t_jax.decoding import index as index_lib  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  inputs = _inputs(rng, batch, rec.model.config.encoder.vocab_size)
  # A BM25 share per row: mostly 0, a few matches in (0, 1] (as `LexicalIndex.shares`).
  shares = np.where(rng.random((batch, rec.id_table.num_tracks)) < 0.01,
                    rng.random((batch, rec.id_table.num_tracks)), 0.0).astype(np.float32)
  lexical = LEXICAL_WEIGHT * shares
  topk, params, dense = rec.topk_fn(k), rec.params, rec.weighted_dense()

  def in_function():
    return jax.device_get(topk(params, inputs, row_prior_BxR=lexical, dense_RxE=dense))

  def host():
    q_BxE = rec.embed_inputs(inputs, batch_size=batch)
    prior = lexical + np.float32(DENSE_WEIGHT) * (q_BxE @ rec.dense.T)
    return jax.device_get(topk(params, inputs, index_lib.subtree_max(rec._host_index, prior)))  # pylint: disable=protected-access

  ours, peer = in_function(), host()
  agreement = float(np.mean([np.array_equal(a, b) for a, b in zip(np.asarray(ours[0]), np.asarray(peer[0]))]))
  times = {}
  for name, step in (("in_function", in_function), ("host", host)):
    secs = bench_common.time_windows(step, warmup=warmup, steps=steps, windows=windows)
    times[name] = bench_common.summary([s / steps for s in secs])
  speedup = times["host"]["median"] / times["in_function"]["median"]
  return {"rows": rec.id_table.num_tracks, "batch": batch, "k": k, "beam": max(rec.beam_size, k),
          "seconds_per_batch": times, "speedup_host_over_in_function": round(speedup, 3),
          "rows_agreement": agreement,
          "max_abs_score_diff": float(np.abs(np.asarray(ours[1]) - np.asarray(peer[1])).max())}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--rows", default="8175,100000", help="catalog sizes, comma separated (8,175: CPCD)")
  p.add_argument("--batches", default="8,32", help="prompts per call, comma separated")
  p.add_argument("--beam", type=int, default=20)
  p.add_argument("-k", type=int, default=10)
  p.add_argument("--windows", type=int, default=bench_common.MIN_WINDOWS)
  p.add_argument("--steps", type=int, default=2, help="calls per timed window")
  p.add_argument("--tiny", action="store_true", help="toy sizes (smoke run; numbers mean nothing)")
  p.add_argument("--json", default=None, help="write the results here")
  a = p.parse_args(argv)
  try:
    rows = [int(x) for x in a.rows.split(",")]
    batches = [int(x) for x in a.batches.split(",")]
  except ValueError:
    p.error(f"--rows / --batches must be comma-separated integers, got {a.rows!r} / {a.batches!r}")
  if min(rows) < a.k or min(batches) < 1:
    p.error(f"every --rows must be >= -k ({a.k}) and every --batches >= 1")
  if a.tiny:
    rows, batches, a.windows, a.steps = [200], [2], 2, 1
  watch = bench_common.LoadWatch("bench_priors")
  cases = []
  for n in rows:
    rec = _retriever(n, a.beam, a.tiny)
    for b in batches:
      case = run_case(rec, batch=b, k=a.k, warmup=1, steps=a.steps, windows=a.windows)
      t = case["seconds_per_batch"]
      print(f"rows {n:>7,} batch {b:>3}: in_function {t['in_function']['median'] * 1e3:8.1f} ms, host "
            f"{t['host']['median'] * 1e3:8.1f} ms per batch (x{case['speedup_host_over_in_function']:.2f}); "
            f"rows agree on {case['rows_agreement']:.0%} of prompts", flush=True)
      cases.append(case)
  out = {"benchmark": "bench_priors", "tiny": a.tiny, "model": "BertT5Config (MiniLM-L6 encoder, 2 decoder layers)"
         if not a.tiny else "toy", "inputs_length": INPUTS_LENGTH, "dense_weight": DENSE_WEIGHT,
         "lexical_weight": LEXICAL_WEIGHT, "cases": cases, "machine": bench_common.machine_info(),
         "load": watch.report()}
  if a.json:
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    tmp = a.json + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(out, f, indent=1)
    os.replace(tmp, a.json)
  return 0


if __name__ == "__main__":
  sys.exit(main())
