"""The Text2Tracks pipeline at one catalog size without TensorFlow/SeqIO (accelerator images).

  python tools/bench_scaling.py --num_tracks 1000000 --num_playlists 20000 --work_dir W --json scaling.json
  python tools/bench_scaling.py ... --prepare_only     # only the CPU stage (tools/gpu_suite.py runs it
                                                       # in the background while the GPU parts run)

Stages, each timed; the JSON is rewritten after every stage, so a run cut short keeps what it measured:
  prepare     synthetic catalog + playlists (t2t_jax.data.synthetic), loaded back; SentencePiece on the
              training prompts and up to --spm_track_texts track texts.  Pure CPU/Python; written to
              --work_dir with a marker file, reused when the same configuration is asked again.
  embeddings  CF track embeddings of the training playlists (JAX; cold tracks get random unit vectors)
  ids         semantic IDs: residual k-means, --levels levels of --codebook codes (default: chosen for
              N as in tools/scaling_study.py), the collision-aware last level (--unique_last_level 0:
              plain RQ), a disambiguation token only where IDs still collide
  train       T5 on `t2t_jax.data.batches.numpy_batches` of the `ExampleSource` (prompt -> ID tokens)
  decode      constrained beam search over the held-out prompts: Hits/MAP/NDCG@10, ms per batch
Rows use the column names of tools/scaling_study.py's results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common  # noqa: E402  pylint: disable=wrong-import-position

PROMPT_FIELD = "title"
IDS_NAME = "semantic"


def auto_codebook_size(num_tracks: int, levels: int, *, lo: int = 8, hi: int = 4096) -> int:
  """The power of two >= num_tracks ** (1 / levels), clipped to [lo, hi] and to num_tracks (as
  t2t_jax/studies/scaling.py; repeated here so this TF-free path imports no gin)."""
  import math  # pylint: disable=import-outside-toplevel
  k = 1 << max(0, math.ceil(math.log2(max(2.0, num_tracks ** (1.0 / levels)) - 1e-9)))
  return int(min(max(k, lo), hi, num_tracks))


def _prepare_key(args) -> dict:
  return {k: getattr(args, k) for k in ("num_tracks", "num_playlists", "num_artists", "seed", "vocab_size",
                                        "spm_track_texts")}


def prepare(args) -> dict:
  """Dataset dir + SentencePiece model under work_dir (reused when prepared.json matches)."""
  from t2t_jax import io_utils  # pylint: disable=import-outside-toplevel
  from t2t_jax.data import formats, prompts, synthetic, vocab  # pylint: disable=import-outside-toplevel
  ds_dir = os.path.join(args.work_dir, "data")
  marker = os.path.join(args.work_dir, "prepared.json")
  if os.path.exists(marker):
    with open(marker, encoding="utf-8") as f:
      done = json.load(f)
    if done.get("key") == _prepare_key(args):
      return dict(done["seconds"], reused=True)
  seconds = {}
  t = time.perf_counter()
  cfg = synthetic.SyntheticConfig(seed=args.seed, num_tracks=args.num_tracks, num_playlists=args.num_playlists,
                                  num_artists=args.num_artists)
  synthetic.generate(cfg, ds_dir)
  seconds["generate_s"] = time.perf_counter() - t
  t = time.perf_counter()
  ds = formats.Dataset.load(ds_dir)
  train = list(ds.playlists("train"))
  seconds["load_s"] = time.perf_counter() - t
  t = time.perf_counter()

  def texts():
    for p in train:
      yield prompts.prompt_text(p.title, p.description, "both")
    step = max(1, len(ds.tracks) // max(args.spm_track_texts, 1))
    for tr in ds.tracks[::step][:args.spm_track_texts]:
      yield f"{tr.artist} {tr.title} {tr.album} {' '.join(tr.tags)}"
  vocab.train_sentencepiece(texts(), os.path.join(ds_dir, "vocab", "spm.model"), vocab_size=args.vocab_size)
  seconds["sentencepiece_s"] = time.perf_counter() - t
  io_utils.write_json(marker, {"key": _prepare_key(args), "seconds": seconds})
  return seconds


def build_ids(args, ds, row, stage):
  from t2t_jax.ids import embeddings, strategies  # pylint: disable=import-outside-toplevel
  rows_train = [[ds.track_row[t] for t in p.track_ids] for p in ds.playlists("train")]
  with stage("embeddings"):
    emb = embeddings.cooccurrence_embeddings(rows_train, len(ds.tracks), dim=args.embedding_dim, seed=args.seed)
  row["embedding_seconds"] = stage.seconds["embeddings"]
  row["cold_tracks"] = int(len(ds.tracks) - len({r for p in rows_train for r in p}))
  cb = args.codebook or auto_codebook_size(len(ds.tracks), args.levels)
  with stage("ids"):
    table = strategies.build_ids("semantic_rq", track_ids=[t.track_id for t in ds.tracks], embeddings=emb,
                                 level_sizes=(cb,) * args.levels, unique_last_level=bool(args.unique_last_level),
                                 disambiguation="auto",
                                 seed=args.seed)
    table.save(os.path.join(args.work_dir, "data", "ids", IDS_NAME))
  row["id_build_seconds"] = stage.seconds["ids"]
  return table


class _Stages:
  """Times named stages; prints one line each."""

  def __init__(self):
    self.seconds = {}

  def __call__(self, name):
    import contextlib  # pylint: disable=import-outside-toplevel

    @contextlib.contextmanager
    def ctx():
      print(f"[scaling] {name} ...", flush=True)
      t = time.perf_counter()
      yield
      self.seconds[name] = round(time.perf_counter() - t, 2)
      print(f"[scaling] {name}: {self.seconds[name]:.1f} s", flush=True)
    return ctx()


def train_and_decode(args, ds, table, row, stage, write):
  import jax  # pylint: disable=import-outside-toplevel
  from t2t_jax import evaluation  # pylint: disable=import-outside-toplevel
  from t2t_jax.models import t5  # pylint: disable=import-outside-toplevel
  from t2t_jax.data import batches, examples  # pylint: disable=import-outside-toplevel
  from t2t_jax.decoding import generate, index as index_lib  # pylint: disable=import-outside-toplevel
  ds_dir = os.path.join(args.work_dir, "data")  # the string load_dataset was cached under
  ids_dir = os.path.join(ds_dir, "ids", IDS_NAME)
  source = examples.ExampleSource(ds_dir, ids_dir, os.path.join(ds_dir, "vocab", "spm.model"), PROMPT_FIELD)
  vocab = source.vocab
  lengths = {"inputs": args.inputs_length, "targets": int(table.lengths.max()) + 1}
  config = t5.T5Config.preset(args.model, vocab_size=vocab.vocab_size, dropout_rate=0.0)
  it = batches.numpy_batches(source, split="train", task_feature_lengths=lengths, batch_size=args.batch_size,
                             seed=args.seed)
  with stage("train"):
    res = bench_common.train_model(config, train_iter=it, model_dir=os.path.join(args.work_dir, "model"),
                                   train_steps=args.train_steps, batch_size=args.batch_size,
                                   learning_rate=args.learning_rate, seed=args.seed)
  loss = res.history[-1].get("loss") if res.history else None
  row.update(train_examples_per_s=res.examples_per_second, train_wall_seconds=stage.seconds["train"],
             train_steps=args.train_steps, batch_size=args.batch_size, final_loss=None if loss is None else float(loss),
             params=config.num_params(), model=args.model)
  write()
  evals = list(source.examples("test"))[:args.eval_playlists]
  inputs = evaluation.pad_inputs([list(e["inputs"]) + [1] for e in evals], args.inputs_length)
  with stage("index"):
    index = index_lib.build_table_index(table, vocab.id_token_offset, vocab.vocab_size)
  dindex = index.to_device()
  fn = jax.jit(generate.make_recommend_fn(bench_common.make_model(config), index, beam_size=args.beam_size,
                                          top_k=args.k))
  call = lambda x: fn(res.params, x, dindex)
  warm = np.resize(inputs, (args.decode_batch_size, inputs.shape[1]))
  jax.block_until_ready(call(warm))
  t = time.perf_counter()
  rows_NxK = _topk(call, inputs, args.decode_batch_size)
  secs = time.perf_counter() - t
  metrics = evaluation.evaluate_rankings(rows_NxK, [e["relevant_rows"] for e in evals], ks=(1, 5, 10))
  nb = -(-len(inputs) // args.decode_batch_size)
  row.update({"hits@10": metrics.get("hits@10"), "map@10": metrics.get("map@10"), "ndcg@10": metrics.get("ndcg@10"),
              "num_queries": len(evals), "index_bytes": int(index.nbytes),
              "index_bytes_per_track": round(index.nbytes / len(ds.tracks), 2),
              "index_build_seconds": stage.seconds["index"], "decode_ms_per_batch": round(1e3 * secs / nb, 2),
              "decode_batch_size": args.decode_batch_size, "prompts_per_s": round(len(inputs) / secs, 1)})


def _topk(call, inputs_NxL, batch_size):
  """batched_topk with the index bound in `call` (last batch padded to the same shape)."""
  import jax  # pylint: disable=import-outside-toplevel
  rows = []
  for s in range(0, len(inputs_NxL), batch_size):
    chunk = inputs_NxL[s:s + batch_size]
    real = len(chunk)
    if real < batch_size:
      chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch_size - real, axis=0)])
    r, _ = jax.device_get(call(chunk))
    rows.append(np.asarray(r)[:real])
  return np.concatenate(rows)


def run(args) -> dict:
  watch = bench_common.LoadWatch("bench_scaling")
  out = {"benchmark": "bench_scaling", "command": "python tools/bench_scaling.py " + " ".join(args.argv),
         "config": {k: v for k, v in vars(args).items() if k not in ("argv", "json")}, "row": {}}
  write = lambda: bench_common.write_json(args.json, out)
  out["machine"] = bench_common.machine_info(with_jax=not args.prepare_only)
  t = time.perf_counter()
  print(f"[scaling] prepare {args.num_tracks:,d} tracks, {args.num_playlists:,d} playlists ...", flush=True)
  out["prepare"] = prepare(args)
  out["prepare"]["wall_s"] = time.perf_counter() - t
  print(f"[scaling] prepare: {out['prepare']}", flush=True)
  write()
  if args.prepare_only:
    return out
  from t2t_jax.ids import table as table_lib  # pylint: disable=import-outside-toplevel  (gin-free, unlike studies.pipeline)
  from t2t_jax.data import examples  # pylint: disable=import-outside-toplevel
  stage = _Stages()
  row = out["row"]
  with stage("load"):  # cached: the ExampleSource of the same dir reuses it
    ds = examples.load_dataset(os.path.join(args.work_dir, "data"))
  row.update(num_tracks=len(ds.tracks), num_playlists=args.num_playlists)
  table = build_ids(args, ds, row, stage)
  row.update(level_sizes=list(table.level_sizes), **table_lib.decode_steps(table))
  write()
  train_and_decode(args, ds, table, row, stage, write)
  out["stage_seconds"] = stage.seconds
  out["load"] = watch.report()
  write()
  print("[scaling] " + ", ".join(f"{k}={v}" for k, v in row.items()), flush=True)
  return out


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--num_tracks", type=int, default=100_000)
  p.add_argument("--num_playlists", type=int, default=20_000)
  p.add_argument("--num_artists", type=int, default=None, help="default: num_tracks // 10 (at least 300)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--vocab_size", type=int, default=2000)
  p.add_argument("--spm_track_texts", type=int, default=50_000, help="track texts in the SentencePiece corpus")
  p.add_argument("--embedding_dim", type=int, default=64)
  p.add_argument("--levels", type=int, default=2)
  p.add_argument("--codebook", type=int, default=None, help="codes per level (default: chosen for N)")
  p.add_argument("--unique_last_level", type=int, default=1, choices=[0, 1],
                 help="1: the collision-aware last level (a host pass per colliding prefix); 0: plain RQ")
  p.add_argument("--model", default="small", help="T5.1.1 size: micro, tiny, small, base, ...")
  p.add_argument("--train_steps", type=int, default=300)
  p.add_argument("--batch_size", type=int, default=256)
  p.add_argument("--learning_rate", type=float, default=1e-3)
  p.add_argument("--inputs_length", type=int, default=32)
  p.add_argument("--beam_size", type=int, default=20)
  p.add_argument("-k", "--k", type=int, default=10)
  p.add_argument("--eval_playlists", type=int, default=512)
  p.add_argument("--decode_batch_size", type=int, default=128)
  p.add_argument("--work_dir", required=True, help="dataset, vocabulary, ID table and model go here")
  p.add_argument("--prepare_only", action="store_true", help="only the CPU stage (data + SentencePiece)")
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)
  args.argv = list(argv)
  if args.num_artists is None:
    args.num_artists = max(300, args.num_tracks // 10)
  return args


def main(argv=None) -> int:
  from t2t_jax import console  # pylint: disable=import-outside-toplevel
  args = parse_args(list(sys.argv[1:] if argv is None else argv))
  return console.run_main(lambda: _run(args))


def _run(args) -> None:
  run(args)  # its results go to --json; the exit code is 0


if __name__ == "__main__":
  sys.exit(main())
