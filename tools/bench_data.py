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
`write_mpd_corpus(..., profile=MpdProfile())` draws a corpus with the Million Playlist Dataset's
reported statistics instead (track popularity, lengths, artists, titles; tools/bench_mpd_scale.py).

  python tools/bench_data.py --sizes 10000,100000 --json bench_data.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
# MPD's stats.txt (1,000,000 playlists): the figures the "mpd" profile is fitted to, and that
# `corpus_stats` compares a generated corpus with.
MPD_REPORTED = {"playlists": 1_000_000, "rows": 66_346_428, "unique_tracks": 2_262_292,
                "unique_albums": 734_684, "unique_artists": 295_860, "unique_titles": 92_944,
                "unique_normalized_titles": 17_381, "playlists_with_descriptions": 18_760,
                "mean_length": 66.346428, "top_track_playlists": 46_574,
                "top_titles": {"country": 10000, "chill": 10000, "rap": 8493, "workout": 8481, "oldies": 8146,
                               "christmas": 8015, "rock": 6848, "party": 6157, "throwback": 5883, "jams": 5063,
                               "worship": 5052, "summer": 4907, "feels": 4677, "new": 4612, "disney": 4186,
                               "lit": 4124, "throwbacks": 4030, "music": 3886, "sleep": 3513, "vibes": 3500}}


class BenchProfile:
  """The default corpus of this benchmark: n distinct tracks a playlist (negative binomial, mean
  `mean_len`, 5..250), Zipf(1.05) popularity over a 2M-track universe, 60,000 artists, albums of 8
  tracks, titles from the synthetic genre/mood/activity words, 20% with a description."""

  name = "bench"
  universe = UNIVERSE

  def __init__(self, mean_len: float = 66.0):
    ranks = np.arange(1, UNIVERSE + 1, dtype=np.float64)
    self.cum = np.cumsum(1.0 / ranks ** 1.05)
    self.cum /= self.cum[-1]
    self.mean_len = mean_len
    self.words = list(synthetic.GENRES), list(synthetic.MOODS), list(synthetic.ACTIVITIES)

  def playlist(self, rng) -> tuple[str, str | None, np.ndarray]:
    """(name, description or None, track indices in playlist order) of the next playlist."""
    genres, moods, acts = self.words
    n = int(np.clip(rng.negative_binomial(2, 2 / (2 + self.mean_len)), 5, 250))
    draws = np.searchsorted(self.cum, rng.random(2 * n + 20))
    _, first = np.unique(draws, return_index=True)
    tracks = draws[np.sort(first)][:n]  # n distinct tracks, in draw order
    g, m, a = genres[rng.integers(len(genres))], moods[rng.integers(len(moods))], acts[rng.integers(len(acts))]
    kind = rng.integers(3)
    name = f"{m} {g}" if kind == 0 else (f"{g} for {a}" if kind == 1 else f"{a} {m}")
    return name, (f"my {g} songs for {a}" if rng.random() < 0.2 else None), tracks

  def artists(self, tracks: np.ndarray) -> np.ndarray:
    return tracks % 60000

  def albums(self, tracks: np.ndarray) -> np.ndarray:
    return tracks // 8

  def names(self, track: int, artist: int, album: int) -> tuple[str, str, str]:
    """(track name, artist name, album name)."""
    return f"Song {track}", f"Artist {artist}", f"Album {album}"


def _zipf_cum(n: int, exponent: float, offset: float = 0.0) -> np.ndarray:
  """Cumulative probabilities of ranks 1..n under p(r) ~ (r + offset) ** -exponent."""
  cum = np.cumsum((np.arange(1, n + 1, dtype=np.float64) + offset) ** -exponent)
  return cum / cum[-1]


class MpdProfile:
  """Synthetic playlists with the Million Playlist Dataset's reported statistics (`MPD_REPORTED`).

  Fitted by least squares on the expected distinct counts of independent draws:
    lengths     negative binomial (r=2, mean 66.51) clipped to MPD's 5..250: mean 66.35
    popularity  Zipf-Mandelbrot p(r) ~ (r + 476) ** -1.314 over 3.32M tracks: a top track in ~4.7% of
                playlists, 0.69M distinct tracks at 100k playlists (MPD's 10% sample: 0.68M) and 2.24M at
                1M (MPD: 2.26M); 1.3% of rows repeat a track of their playlist (the 10% sample's share)
    artists     each track's artist a fixed Zipf(1.08) draw over 1.07M artists (by a hash of the track):
                expected 37k / 117k / 267k at 10k / 100k / 1M playlists (MPD: 35.6k / 110k / 296k;
                generated at 10k: 37.9k); albums Zipf(0.80) over 1.03M: expected 308k / 628k at 100k / 1M
                (MPD: 271k / 735k)
    titles      MPD's 20 most common titles at their reported rates, then Zipf-Mandelbrot
                (i + 320) ** -2.32 over two- and three-word names: 17.5k distinct normalized titles at
                1M; each drawn title is one of 63 spellings (case x emoji/punctuation suffix, geometric
                p=0.164): 93k distinct raw titles (MPD: 92,944)
    descriptions  1.88% of playlists
    names       tracks, artists and albums named by pseudo-words fixed per id (`names`)
  Tracks are drawn independently of each other and of the title (no co-occurrence structure): the
  corpus measures cost, not recommendation quality.
  """

  name = "mpd"
  universe = 3_318_845
  WORDS = tuple(synthetic.GENRES) + tuple(synthetic.MOODS) + tuple(synthetic.ACTIVITIES) + (
      "summer", "winter", "spring", "fall", "night", "morning", "road", "beach", "car", "gym", "love", "feels",
      "vibes", "jams", "bops", "hits", "tunes", "songs", "mix", "music", "playlist", "throwback", "oldies",
      "favorites", "random", "good", "old", "new", "best", "slow", "dance", "hype", "lit", "worship", "christmas",
      "disney", "country", "rap", "girls", "boys", "sunday", "friday", "lake", "camp", "wedding", "bedtime",
      "focus", "shower", "sunset")
  SUFFIXES = ("", "!", "!!", "?", "...", " ~", " 🔥", " 💯", " ❤️", " ☀️", " 🎄", " 🎶", " 😎", " 🌊", " ✨", " 💕",
              " 🙏", " 🤘", " 🎉", " 😴", " 💪")

  def __init__(self):
    self.track_cum = _zipf_cum(self.universe, 1.3139850768884762, 475.6205219797576)
    self.artist_cum = _zipf_cum(1_071_754, 1.0801585231117319)
    self.album_cum = _zipf_cum(1_025_513, 0.7979023827284553)
    head = MPD_REPORTED["top_titles"]
    self.head_names = list(head)
    head_p = np.asarray(list(head.values()), np.float64) / MPD_REPORTED["playlists"]
    num_tail = len(self.WORDS) ** 2 + len(self.WORDS) ** 3
    tail = (np.arange(21, 21 + num_tail, dtype=np.float64) + 320.30205691925573) ** -2.3204931842937238
    p = np.concatenate([head_p, tail / tail.sum() * (1.0 - head_p.sum())])
    self.title_cum = np.cumsum(p) / p.sum()
    self._track_names, self._artist_names, self._album_names = {}, {}, {}

  def title(self, i: int) -> str:
    """The normalized title of rank i (0-based): MPD's top 20, then two- and three-word names."""
    if i < len(self.head_names):
      return self.head_names[i]
    j, w = i - len(self.head_names), len(self.WORDS)
    if j < w * w:
      return f"{self.WORDS[j // w]} {self.WORDS[j % w]}"
    j -= w * w
    return f"{self.WORDS[j // (w * w)]} {self.WORDS[(j // w) % w]} {self.WORDS[j % w]}"

  def playlist(self, rng) -> tuple[str, str | None, np.ndarray]:
    n = int(np.clip(rng.negative_binomial(2, 2 / (2 + 66.50592259128351)), 5, 250))
    tracks = np.searchsorted(self.track_cum, rng.random(n))
    repeat = np.flatnonzero(rng.random(n) < 0.0135)
    repeat = repeat[repeat > 0]
    tracks[repeat] = tracks[(rng.random(repeat.size) * repeat).astype(np.int64)]  # an earlier row again
    base = self.title(int(np.searchsorted(self.title_cum, rng.random())))
    variant = min(int(rng.geometric(0.16357337)) - 1, 3 * len(self.SUFFIXES) - 1)
    case = variant % 3
    name = (base if case == 0 else base.title() if case == 1 else base.upper()) + self.SUFFIXES[variant // 3]
    return name, (f"{base} songs i love" if rng.random() < 0.01876 else None), tracks

  def _hashed(self, cum: np.ndarray, tracks: np.ndarray) -> np.ndarray:
    """A fixed draw from `cum` per track: a multiplicative hash of the track index as the uniform."""
    with np.errstate(over="ignore"):
      h = (tracks.astype(np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
    return np.searchsorted(cum, (h >> np.uint64(11)).astype(np.float64) / float(1 << 53))

  def artists(self, tracks: np.ndarray) -> np.ndarray:
    return self._hashed(self.artist_cum, tracks)

  def albums(self, tracks: np.ndarray) -> np.ndarray:
    return self._hashed(self.album_cum, tracks ^ 0x5BD1E995)

  def names(self, track: int, artist: int, album: int) -> tuple[str, str, str]:
    """Word-like names (1-4 pseudo-words of 1-3 syllables, fixed per id), so the metadata has a real
    catalog's variety of pieces: SentencePiece fills its 8,000-piece vocabulary as on MPD's names."""
    return (self._name(self._track_names, track, 1, 4), self._name(self._artist_names, artist, 2, 2).title(),
            self._name(self._album_names, album, 3, 3).title())

  SYLLABLES = tuple(c + v for c in ("b", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v",
                                    "w", "z", "ch", "sh", "th", "br", "cr", "st", "tr")
                    for v in ("a", "e", "i", "o", "u", "ai", "ou", "y"))

  def _name(self, cache: dict, key: int, salt: int, max_words: int) -> str:
    name = cache.get(key)
    if name is None:
      h = ((key + 1) * 0x9E3779B97F4A7C15 + salt * 0xBF58476D1CE4E5B9) % (1 << 64)
      words = []
      for _ in range(1 + h % max_words):
        h = (h * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        syl, x = 1 + (h >> 20) % 3, h >> 24
        words.append("".join(self.SYLLABLES[(x >> (8 * i)) % len(self.SYLLABLES)] for i in range(syl)))
      name = cache[key] = " ".join(words)
    return name


def normalize_title(name: str) -> str:
  """MPD stats.txt's title normalisation: lower case, only word characters and spaces, single spaces."""
  return " ".join(re.sub(r"[^\w\s]", "", name.lower()).split())


def write_mpd_corpus(out_dir: str, num_playlists: int, *, seed: int = 0, mean_len: float = 66.0,
                     profile=None) -> dict:
  """Writes mpd.slice.<a>-<b>.json files (MPD schema) drawn from `profile` (default `BenchProfile`);
  returns counts: playlists, rows, and the distinct tracks, artists, albums, titles (raw and
  normalized as MPD's stats.txt counts them), descriptions and the top track's playlists."""
  profile = profile or BenchProfile(mean_len)
  rng = np.random.default_rng(seed)
  os.makedirs(out_dir, exist_ok=True)
  seen_tracks = np.zeros(profile.universe, np.int64)  # playlists holding each track
  artists_seen, albums_seen, titles = set(), set(), set()
  rows = descriptions = 0
  for start in range(0, num_playlists, SLICE):
    end = min(start + SLICE, num_playlists) - 1
    playlists = []
    for pid in range(start, end + 1):
      name, description, tracks = profile.playlist(rng)
      artists, albums = profile.artists(tracks).tolist(), profile.albums(tracks).tolist()
      p = {"name": name, "collaborative": "false", "pid": pid, "modified_at": 1500000000,
           "num_tracks": int(tracks.size), "num_albums": len(set(albums)), "num_followers": 1,
           "tracks": [{"pos": i, "artist_name": names[1], "track_uri": f"spotify:track:{t:022d}",
                       "artist_uri": f"spotify:artist:{ar:022d}", "track_name": names[0],
                       "album_uri": f"spotify:album:{al:022d}", "duration_ms": 180000 + int(t % 60000),
                       "album_name": names[2]}
                      for i, (t, ar, al) in enumerate(zip(tracks.tolist(), artists, albums))
                      for names in (profile.names(t, ar, al),)],
           "num_edits": 3, "duration_ms": 0, "num_artists": len(set(artists))}
      if description is not None:
        p["description"] = description
        descriptions += 1
      rows += int(tracks.size)
      seen_tracks[np.unique(tracks)] += 1
      artists_seen.update(artists)
      albums_seen.update(albums)
      titles.add(name)
      playlists.append(p)
    with io_utils.atomic_write(os.path.join(out_dir, f"mpd.slice.{start}-{end}.json")) as f:
      json.dump({"info": {"generated_on": "bench", "slice": f"{start}-{end}", "version": "v1"},
                 "playlists": playlists}, f)
  return {"profile": profile.name, "playlists": num_playlists, "rows": rows,
          "unique_tracks": int((seen_tracks > 0).sum()), "unique_artists": len(artists_seen),
          "unique_albums": len(albums_seen), "unique_titles": len(titles),
          "unique_normalized_titles": len({normalize_title(t) for t in titles}),
          "playlists_with_descriptions": descriptions, "mean_length": rows / max(num_playlists, 1),
          "top_track_playlists": int(seen_tracks.max()) if num_playlists else 0}


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
