"""Data-pipeline benchmark: MPD-format raw slices -> dataset dir -> SeqIO task -> packed numpy batches.

For each corpus size (playlists) this writes a synthetic corpus in the exact MPD slice format
(1,000 playlists a slice, ~66 tracks each, Zipf track popularity over a 2M-track universe), then, in a
fresh child process (so peak RSS is per size), times the stages:
  convert    mpd.convert_mpd: raw slices -> catalog.jsonl / playlists.jsonl / splits.json
  vocab      SentencePiece on the training prompts
  ids        a 3-level ID table for every catalog track (random codes: the ID strategy is not what is
             measured here)
  load       register the task and load/validate the dataset (first batch out)
  batches    get_numpy_batches(pack=True, shuffle=True) for up to --max_examples examples
and reports examples_per_s (steady-state batch throughput), end_to_end_examples_per_s (examples in
batches / wall time from raw files to the last batch) and peak_rss_mb.

  python tools/bench_data.py --sizes 10000,100000 --json bench_data.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from t2t_jax import io_utils  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common  # noqa: E402  pylint: disable=wrong-import-position
from t2t_jax.data import synthetic  # noqa: E402

UNIVERSE = 2_000_000
SLICE = 1000


def write_mpd_corpus(out_dir: str, num_playlists: int, *, seed: int = 0, mean_len: float = 66.0) -> dict:
  """Writes mpd.slice.<a>-<b>.json files (MPD schema); returns counts."""
  rng = np.random.default_rng(seed)
  ranks = np.arange(1, UNIVERSE + 1, dtype=np.float64)
  cum = np.cumsum(1.0 / ranks ** 1.05)
  cum /= cum[-1]
  genres, moods, acts = list(synthetic.GENRES), list(synthetic.MOODS), list(synthetic.ACTIVITIES)
  os.makedirs(out_dir, exist_ok=True)
  rows = 0
  for start in range(0, num_playlists, SLICE):
    end = min(start + SLICE, num_playlists) - 1
    playlists = []
    for pid in range(start, end + 1):
      n = int(np.clip(rng.negative_binomial(2, 2 / (2 + mean_len)), 5, 250))
      draws = np.searchsorted(cum, rng.random(2 * n + 20))
      _, first = np.unique(draws, return_index=True)
      tracks = draws[np.sort(first)][:n]  # n distinct tracks, in draw order
      g, m, a = genres[rng.integers(len(genres))], moods[rng.integers(len(moods))], acts[rng.integers(len(acts))]
      kind = rng.integers(3)
      name = f"{m} {g}" if kind == 0 else (f"{g} for {a}" if kind == 1 else f"{a} {m}")
      p = {"name": name, "collaborative": "false", "pid": pid, "modified_at": 1500000000,
           "num_tracks": int(tracks.size), "num_albums": int(tracks.size), "num_followers": 1,
           "tracks": [{"pos": i, "artist_name": f"Artist {t % 60000}", "track_uri": f"spotify:track:{t:022d}",
                       "artist_uri": f"spotify:artist:{t % 60000:022d}", "track_name": f"Song {t}",
                       "album_uri": f"spotify:album:{t // 8:022d}", "duration_ms": 180000 + int(t % 60000),
                       "album_name": f"Album {t // 8}"} for i, t in enumerate(tracks.tolist())],
           "num_edits": 3, "duration_ms": 0, "num_artists": int(tracks.size)}
      if rng.random() < 0.2:
        p["description"] = f"my {g} songs for {a}"
      rows += int(tracks.size)
      playlists.append(p)
    with io_utils.atomic_write(os.path.join(out_dir, f"mpd.slice.{start}-{end}.json")) as f:
      json.dump({"info": {"generated_on": "bench", "slice": f"{start}-{end}", "version": "v1"},
                 "playlists": playlists}, f)
  return {"playlists": num_playlists, "rows": rows}


def run_child(corpus: str, work: str, *, max_examples: int, batch_size: int, inputs_length: int,
              vocab_size: int) -> dict:
  """Times the stages in this process; returns the timings (RSS is measured by the parent)."""
  t0 = time.perf_counter()
  stages = {}
  from t2t_jax.data import formats, mpd, prompts, vocab  # pylint: disable=import-outside-toplevel
  from t2t_jax.ids.table import IdTable  # pylint: disable=import-outside-toplevel

  ds_dir = os.path.join(work, "root", "mpd")
  t = time.perf_counter()
  meta = mpd.convert_mpd(corpus, ds_dir, seed=0, validation_fraction=0.01, test_fraction=0.01)
  stages["convert_s"] = time.perf_counter() - t

  t = time.perf_counter()
  ds = formats.Dataset.load(ds_dir, validate=False)
  vocab.train_sentencepiece((prompts.prompt_text(p.title, p.description, "both") for p in ds.playlists("train")),
                            os.path.join(ds_dir, "vocab", "spm.model"), vocab_size=vocab_size,
                            max_sentences=200_000)
  stages["vocab_s"] = time.perf_counter() - t

  t = time.perf_counter()
  n = len(ds.tracks)
  rng = np.random.default_rng(0)
  codes = np.stack([rng.integers(256, size=n), rng.integers(256, size=n), np.arange(n) % 256], 1)
  IdTable("bench", [tr.track_id for tr in ds.tracks], codes, (256, 256, 256)).save(
      os.path.join(ds_dir, "ids", "bench"))
  del ds
  stages["ids_s"] = time.perf_counter() - t

  t = time.perf_counter()
  from tasks import pipeline, t2t_tasks  # pylint: disable=import-outside-toplevel
  t2t_tasks.register_tasks(os.path.join(work, "root"), prompt_fields=("title",))
  it = pipeline.get_numpy_batches("t2t.mpd.bench.title", split="train",
                                  task_feature_lengths={"inputs": inputs_length, "targets": 4},
                                  batch_size=batch_size, shuffle=True, seed=0, pack=True, num_epochs=1)
  first = next(it)
  stages["load_s"] = time.perf_counter() - t

  examples = int((first["decoder_segment_ids"].max(axis=1)).sum())
  batches = 1
  t = time.perf_counter()
  cpu = time.process_time()
  for batch in it:
    # Packed rows hold several examples: count them by their segment ids.
    examples += int(batch["decoder_segment_ids"].max(axis=1).sum())
    batches += 1
    if examples >= max_examples:
      break
  stages["batches_s"] = time.perf_counter() - t
  batches_cpu_s = time.process_time() - cpu  # All threads of this process (tf.data uses several).
  total = time.perf_counter() - t0
  return {"num_playlists": meta["num_playlists"], "num_tracks": meta["num_tracks"],
          "rows": meta["read_stats"]["rows_read"], "examples": examples, "batches": batches,
          "stages": stages, "examples_per_s": examples / max(stages["batches_s"], 1e-9),
          "examples_per_cpu_s": examples / max(batches_cpu_s, 1e-9), "loadavg_end": os.getloadavg(),
          "convert_rows_per_s": meta["read_stats"]["rows_read"] / max(stages["convert_s"], 1e-9),
          "end_to_end_examples_per_s": examples / total, "total_s": total}


def machine() -> dict:
  """bench_common.machine_info (cpu, cores, memory, load, versions, date) without importing JAX."""
  info = bench_common.machine_info(with_jax=False)
  info["cores"] = info["cpu_count"]
  return info


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--sizes", default="10000,100000", help="comma-separated corpus sizes (playlists)")
  ap.add_argument("--max_examples", type=int, default=300_000, help="examples to batch per size")
  ap.add_argument("--batch_size", type=int, default=128)
  ap.add_argument("--inputs_length", type=int, default=32)
  ap.add_argument("--vocab_size", type=int, default=2000)
  ap.add_argument("--work_dir", default=None, help="default: a temporary dir, removed afterwards")
  ap.add_argument("--json", default=None, help="write results here (atomically)")
  ap.add_argument("--child", nargs=2, metavar=("CORPUS", "WORK"), help=argparse.SUPPRESS)
  args = ap.parse_args(argv)

  if args.child:
    out = run_child(args.child[0], args.child[1], max_examples=args.max_examples, batch_size=args.batch_size,
                    inputs_length=args.inputs_length, vocab_size=args.vocab_size)
    print("RESULT " + json.dumps(out))
    return 0

  sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
  watch = bench_common.LoadWatch("bench_data")
  results = {"benchmark": "bench_data", "command": "python tools/bench_data.py " + " ".join(sys.argv[1:] if argv is None else argv),
             "machine": machine(), "settings": {k: getattr(args, k) for k in
                                                ("max_examples", "batch_size", "inputs_length", "vocab_size")},
             "sizes": {}}
  with tempfile.TemporaryDirectory(dir=args.work_dir) as work:
    for size in sizes:
      corpus = os.path.join(work, f"mpd_{size}")
      t = time.perf_counter()
      counts = write_mpd_corpus(corpus, size)
      gen_s = time.perf_counter() - t
      raw_mb = sum(os.path.getsize(os.path.join(corpus, f)) for f in os.listdir(corpus)) / 2**20
      child_work = os.path.join(work, f"work_{size}")
      cmd = [sys.executable, os.path.abspath(__file__), "--child", corpus, child_work,
             "--max_examples", str(args.max_examples), "--batch_size", str(args.batch_size),
             "--inputs_length", str(args.inputs_length), "--vocab_size", str(args.vocab_size)]
      env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
      proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
      stdout, stderr = proc.communicate()
      if proc.returncode != 0:
        sys.stderr.write(stderr[-4000:])
        raise SystemExit(f"benchmark child for size {size} failed (rc={proc.returncode})")
      line = next(l for l in stdout.splitlines() if l.startswith("RESULT "))
      res = json.loads(line[len("RESULT "):])
      res["peak_rss_mb"] = _child_peak_rss_mb(stdout)  # The child's own ru_maxrss, printed at its exit.
      res.update({"raw_mb": raw_mb, "generate_raw_s": gen_s, "raw_rows": counts["rows"]})
      results["sizes"][str(size)] = res
      print(f"{size:>8} playlists ({raw_mb:.0f} MB raw, {res['num_tracks']} tracks): "
            f"{res['examples_per_s']:.0f} examples/s batched ({res['examples_per_cpu_s']:.0f}/cpu-s), "
            f"{res['end_to_end_examples_per_s']:.0f} end-to-end, "
            f"peak RSS {res['peak_rss_mb']:.0f} MB; stages " +
            ", ".join(f"{k}={v:.1f}" for k, v in res["stages"].items()), flush=True)
  results["examples_per_s"] = {s: r["examples_per_s"] for s, r in results["sizes"].items()}
  results["peak_rss_mb"] = {s: r["peak_rss_mb"] for s, r in results["sizes"].items()}
  results["load"] = watch.report()
  if args.json:
    io_utils.write_json(args.json, results)
  return 0


def _child_peak_rss_mb(stdout: str) -> float:
  line = next((l for l in stdout.splitlines() if l.startswith("PEAK_RSS_KB ")), None)
  return int(line.split()[1]) / 1024 if line else float("nan")


if __name__ == "__main__":
  if "--child" in sys.argv:
    rc = main()
    # ru_maxrss of this process (kB on Linux): the child's own peak, printed for the parent.
    print(f"PEAK_RSS_KB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", flush=True)
    sys.exit(rc)
  sys.exit(main())
