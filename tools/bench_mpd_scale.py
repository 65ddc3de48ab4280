"""MPD-scale dress rehearsal: the user's route, stage by stage, on synthetic MPD slices of growing size.

  python tools/bench_mpd_scale.py --playlists 1000000 --json docs/results/bench/mpd_scale.json
      # sizes 10,000 / 100,000 / 1,000,000: each decade from 10,000 up to --playlists
  python tools/bench_mpd_scale.py --sizes 100000 --json mpd_scale.json      # exactly these sizes
  python tools/bench_mpd_scale.py --tiny --json tiny.json   # 1,000 playlists, 20 steps, 100 prompts

For each size the corpus is written in MPD's own slice format (`mpd.slice.<a>-<b>.json`, 1,000
playlists a file) by tools/bench_data.py's generator with its `MpdProfile`: lengths, track popularity,
artists, albums, titles and descriptions fitted to what MPD's stats.txt reports (the JSON puts the
generated counts beside MPD's).  Then, each stage in a process of its own:
  generate     the slices (setup, not part of the route)
  import       `t2t import mpd SLICES --out DATASET` (the CLI: its splits and 8,000-piece vocabulary)
  workspace    `pipeline.open_dataset`: quickstart's working copy of the dataset dir, loaded and checked
  embeddings   CF track embeddings of the training playlists (`pipeline.catalog_cf_embeddings`: JAX
               randomized SVD of the normalised playlist x track matrix, cold tracks by artist)
  ids          semantic IDs over all tracks with quickstart's spec (residual JAX k-means, balanced,
               unique last level, levels `quickstart.auto_levels(N)` unless --id_levels)
  task         the SeqIO task (`pipeline.make_task`, held-out examples) and --train_steps numpy
               batches of the reader training uses (`tasks.pipeline.indexed_batches`)
  train        --train_steps steps through the gin entry (`pipeline.train_text2tracks`: t5_1_1_tiny +
               runs/finetune.gin + the CPU recipe, what `t2t quickstart` runs)
  decode       constrained beam search over --prompts held-out prompts (`pipeline.evaluate_text2tracks`)
  export       `t2t export --model_dir MODEL --out EXPORT` (the CLI)
  serve_check  the export dir loaded by its export_runtime.py (numpy + jax + sentencepiece), answering
               the held-out prompts
A later stage reads what the earlier ones wrote, as a user's next command would.  Per stage the JSON
holds wall and CPU seconds and the peak RSS of that process (`bench_common.run_measured`: ru_maxrss
from wait4), what it processed (rows, tracks, steps, prompts), the child's own split of its time
(loading vs work), and between consecutive sizes the growth: time ratio against the ratio of what
the stage scales with (track rows or catalog tracks) and the O(n log n) bound.

Targets (issue 25) on the 2-core, 24 GB machine: peak RSS <= 16 GB per stage at 1M playlists, no
stage growing faster than O(rows log rows), the whole 1M rehearsal within 3 hours.  A stage past
--rss_limit_gb (default 20) or --stage_timeout_s is stopped and recorded as such; the stages after
it are skipped and no larger size is run.  Measured violations go to the JSON's "notes"; what reading
the code shows, before any size runs, is in its "known_limits" (`KNOWN_LIMITS`).

The scratch dir (--scratch; default a temporary dir) holds each size's files until the size is done
(1M playlists: ~18 GB of slices, removed after the import unless --keep, and ~13 GB of dataset dir
and its copy); a --scratch that exists must be empty or one this tool made.  --export_dir keeps the
last size's export dir.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_common  # noqa: E402  pylint: disable=wrong-import-position
import bench_data  # noqa: E402  pylint: disable=wrong-import-position
from t2t_jax import console, io_utils  # noqa: E402  pylint: disable=wrong-import-position
from t2t_jax.errors import UserInputError  # noqa: E402  pylint: disable=wrong-import-position

STAGES = ("generate", "import", "workspace", "embeddings", "ids", "task", "train", "decode", "export",
          "serve_check")
# What each stage's work grows with (the growth summary compares its time ratio with this one's).
DRIVERS = {"generate": "rows", "import": "rows", "workspace": "rows", "embeddings": "rows", "ids": "tracks",
           "task": "rows", "train": "rows", "decode": "rows", "export": "tracks", "serve_check": "tracks"}
USER_ROUTE = {s: s != "generate" for s in STAGES}
SCRATCH_KIND = "bench_mpd_scale"
DATASET = "mpd"  # the dataset's name: task t2t.mpd.semantic_rq.{field}
BYTES_PER_PLAYLIST = 30_000  # scratch at the peak, the import: 17.7 KB of slices + 6.6 KB of dataset (measured)
RSS_TARGET_GB = 16.0
HOURS_TARGET = 3.0
FLOOR_S = 5.0  # growth below this wall time is start-up and compilation, not the stage's work

# Found by reading the code (and one measurement at 10,000 playlists); each stage still runs in full.
KNOWN_LIMITS = (
    "workspace, embeddings, ids, task, decode: `pipeline.Workspace` holds the train and test playlists as "
    "Python objects: ~10 B per track row (their track ids are interned, `formats.parse_playlist`: one "
    "string per track, shared with the catalog's; before that, ~100 B a row) plus ~530 B per catalog "
    "track (measured at 100,000 playlists): ~1.8 GB at MPD's 60M train+test rows and 2.26M tracks",
    "ids: quickstart's auto levels (`quickstart.auto_levels`) make each codebook ~sqrt(N) wide, so a k-means "
    "pass costs O(N^1.5 d) in the catalog size N, above O(n log n); fixed --id_levels (e.g. 256,256,256) "
    "keep it O(N)",
    "embeddings: C_hat (track x track) is never formed: products are streamed over playlist blocks, O(nnz); "
    "cold tracks by artist copy the warm rows to float64 (~1.1 GB at 2M tracks)",
)

SETTINGS = {  # quickstart's defaults where it has one
    "seed": 0, "train_steps": 200, "batch_size": 128, "learning_rate": 3e-3, "model": "tiny",
    "beam_size": 20, "k": 10, "prompts": 1000, "embedding_dim": 64, "vocab_size": 8000,
    "platforms": "cpu,cuda", "id_levels": "auto", "prompt_field": "both", "inputs_length": None}
TINY = {"train_steps": 20, "batch_size": 16, "model": "micro", "beam_size": 10, "prompts": 100,
        "platforms": "cpu"}
TINY_PLAYLISTS = 1000


# ----------------------------------------------------------------------------------------------- #
# The stages that run in a child process (`--stage NAME --size_dir D`); each writes D/stages/NAME.json.


class Paths:
  """Where one size's files live under its dir D."""

  def __init__(self, size_dir: str):
    self.root = size_dir
    self.raw = os.path.join(size_dir, "raw")  # the MPD slices
    self.dataset = os.path.join(size_dir, DATASET)  # `t2t import` output
    self.work = os.path.join(size_dir, "work")  # quickstart's work dir
    self.ws = os.path.join(self.work, "data", DATASET)  # its working copy of the dataset
    self.embeddings = os.path.join(self.work, "embeddings")
    self.model = os.path.join(self.work, "model")
    self.export = os.path.join(size_dir, "export")
    self.stages = os.path.join(size_dir, "stages")
    self.logs = os.path.join(size_dir, "logs")

  def stage_json(self, stage: str) -> str:
    return os.path.join(self.stages, f"{stage}.json")

  def read(self, stage: str) -> dict:
    with open(self.stage_json(stage), encoding="utf-8") as f:
      return json.load(f)


def _ids_dir(p: Paths) -> str:
  from t2t_jax import quickstart  # pylint: disable=import-outside-toplevel  (loads the studies lazily)
  return os.path.join(p.ws, "ids", quickstart.STRATEGY)


def stage_generate(p: Paths, cfg: dict) -> dict:
  t = time.perf_counter()
  counts = bench_data.write_mpd_corpus(p.raw, cfg["playlists"], seed=cfg["seed"], profile=bench_data.MpdProfile())
  raw = sum(os.path.getsize(os.path.join(p.raw, f)) for f in os.listdir(p.raw))
  return {"rows": counts["rows"], "corpus": counts, "raw_bytes": raw, "seconds": {"write": time.perf_counter() - t}}


def stage_workspace(p: Paths, cfg: dict) -> dict:
  from t2t_jax.studies import pipeline  # pylint: disable=import-outside-toplevel
  del cfg
  ws = pipeline.open_dataset(p.dataset, p.work)
  assert ws.ds_dir == p.ws, (ws.ds_dir, p.ws)
  return _ws_counts(ws)


def _ws_counts(ws) -> dict:
  return {"tracks": ws.num_tracks, "train_playlists": len(ws.train_playlists),
          "test_playlists": len(ws.test_playlists), "train_rows": sum(len(r) for r in ws.rows_train)}


def _load(p: Paths) -> tuple:
  from t2t_jax.studies import pipeline  # pylint: disable=import-outside-toplevel
  t = time.perf_counter()
  ws = pipeline.load_workspace(p.ws)
  return ws, time.perf_counter() - t


def stage_embeddings(p: Paths, cfg: dict) -> dict:
  """quickstart's CF stage: dim capped by the training playlists and warm tracks, cold tracks placed."""
  from t2t_jax.ids import embeddings as emb_lib  # pylint: disable=import-outside-toplevel
  from t2t_jax.studies import pipeline  # pylint: disable=import-outside-toplevel
  ws, load_s = _load(p)
  t = time.perf_counter()
  num_warm = int((ws.popularity() > 0).sum())
  dim = max(1, min(cfg["embedding_dim"], len(ws.rows_train) - 1, num_warm - 1))
  emb, info = pipeline.catalog_cf_embeddings(ws, dim=dim, seed=cfg["seed"])
  fit_s = time.perf_counter() - t
  emb_lib.save_embeddings(p.embeddings, emb, ws.track_ids)
  io_utils.write_json(os.path.join(p.work, "embedding_info.json"), info)
  return {**_ws_counts(ws), "dim": dim, "warm_tracks": num_warm, "cold_start": info.get("cold_start"),
          "seconds": {"load_workspace": load_s, "embeddings": fit_s}}


def stage_ids(p: Paths, cfg: dict) -> dict:
  from t2t_jax import quickstart  # pylint: disable=import-outside-toplevel
  from t2t_jax.ids import embeddings as emb_lib  # pylint: disable=import-outside-toplevel
  from t2t_jax.ids import specs  # pylint: disable=import-outside-toplevel
  from t2t_jax.studies import pipeline  # pylint: disable=import-outside-toplevel
  ws, load_s = _load(p)
  emb, _ = emb_lib.load_embeddings(p.embeddings)
  with open(os.path.join(p.work, "embedding_info.json"), encoding="utf-8") as f:
    info = json.load(f)
  levels = (quickstart.auto_levels(ws.num_tracks) if cfg["id_levels"] == "auto"
            else tuple(int(x) for x in cfg["id_levels"].split(",")))
  spec = specs.IdSpec(quickstart.STRATEGY, quickstart.STRATEGY, {"level_sizes": levels, **quickstart.ID_OPTIONS})
  table, build_s = pipeline.build_table(ws, spec, embeddings_NxD=emb, seed=cfg["seed"], embedding_info=info)
  detail = (table.meta.get("stats") or {}).get("levels_detail") or []
  return {"tracks": table.num_tracks, "level_sizes": list(table.level_sizes), "num_levels": table.num_levels,
          "num_disambiguated": table.meta.get("num_disambiguated"),
          "kmeans": [{k: lv.get(k) for k in ("k", "kmeans_iterations", "kmeans_seconds")} for lv in detail],
          "seconds": {"load_workspace": load_s, "build_table": build_s}}


def stage_task(p: Paths, cfg: dict) -> dict:
  """The task and the batches training will read: the first (its index over all rows) and the rest."""
  from t2t_jax import quickstart  # pylint: disable=import-outside-toplevel
  from t2t_jax.ids.table import IdTable  # pylint: disable=import-outside-toplevel
  from t2t_jax.studies import pipeline  # pylint: disable=import-outside-toplevel
  from tasks import pipeline as task_pipeline  # pylint: disable=import-outside-toplevel
  ws, load_s = _load(p)
  t = time.perf_counter()
  table = IdTable.load(_ids_dir(p))
  task = pipeline.make_task(ws, table, quickstart.STRATEGY, prompt_field=cfg["prompt_field"],
                            inputs_length=cfg["inputs_length"], eval_playlists=cfg["prompts"])
  task_s = time.perf_counter() - t
  io_utils.write_json(os.path.join(p.work, "task.json"),
                      {"name": task.name, "feature_lengths": task.feature_lengths, "data_root": task.data_root})
  t = time.perf_counter()
  it = task_pipeline.indexed_batches(task.name, split="train", task_feature_lengths=task.feature_lengths,
                                     batch_size=cfg["batch_size"], shuffle=True, seed=cfg["seed"])
  next(it)
  first_s = time.perf_counter() - t
  t = time.perf_counter()
  for _ in range(cfg["train_steps"] - 1):
    next(it)
  rest_s = time.perf_counter() - t
  return {**_ws_counts(ws), "task": task.name, "feature_lengths": task.feature_lengths,
          "eval_examples": len(task.eval_examples), "batches": cfg["train_steps"],
          "examples_per_s": (cfg["train_steps"] - 1) * cfg["batch_size"] / max(rest_s, 1e-9),
          "seconds": {"load_workspace": load_s, "make_task": task_s, "first_batch": first_s,
                      "other_batches": rest_s}}


def _task_stub(p: Paths):
  """The task as train_text2tracks needs it (name, lengths, data root), from the task stage's file."""
  from t2t_jax.studies import pipeline  # pylint: disable=import-outside-toplevel
  with open(os.path.join(p.work, "task.json"), encoding="utf-8") as f:
    t = json.load(f)
  return pipeline.Task(name=t["name"], table=None, vocab=None, feature_lengths=t["feature_lengths"],
                       eval_examples=[], data_root=t["data_root"])


def stage_train(p: Paths, cfg: dict) -> dict:
  from t2t_jax.studies import pipeline  # pylint: disable=import-outside-toplevel
  out = pipeline.train_text2tracks(_task_stub(p), model_dir=p.model, model=cfg["model"],
                                   train_steps=cfg["train_steps"], batch_size=cfg["batch_size"],
                                   learning_rate=cfg["learning_rate"], seed=cfg["seed"], progress=False,
                                   beam_size=cfg["beam_size"])
  return {"steps": cfg["train_steps"], "batch_size": cfg["batch_size"], "params": out.config.num_params(),
          "examples_per_s": out.examples_per_second, "final_loss": out.final_loss,
          "seconds": {"train_text2tracks": out.seconds}}


def stage_decode(p: Paths, cfg: dict) -> dict:
  from t2t_jax import quickstart  # pylint: disable=import-outside-toplevel
  from t2t_jax.ids.table import IdTable  # pylint: disable=import-outside-toplevel
  from t2t_jax.studies import pipeline  # pylint: disable=import-outside-toplevel
  ws, load_s = _load(p)
  t = time.perf_counter()
  stub = _task_stub(p)
  task = pipeline.make_task(ws, IdTable.load(_ids_dir(p)), quickstart.STRATEGY, prompt_field=cfg["prompt_field"],
                            inputs_length=stub.feature_lengths["inputs"], eval_playlists=cfg["prompts"])
  task_s = time.perf_counter() - t
  t = time.perf_counter()
  ev = pipeline.evaluate_text2tracks(task, p.model, beam_size=cfg["beam_size"], k=cfg["k"])
  decode_s = time.perf_counter() - t
  io_utils.write_json(os.path.join(p.work, "prompts.json"), task.prompts)
  return {"prompts": len(task.prompts), "prompts_per_s": ev["prompts_per_s"],
          "decode_ms_per_batch": ev["decode_ms_per_batch"], "index_bytes": ev["index_bytes"],
          "metrics": {k: v for k, v in ev["metrics"].items() if k in ("hits@10", "map@10", "ndcg@10")},
          "seconds": {"load_workspace": load_s, "make_task": task_s, "evaluate": decode_s,
                      "index_build": ev["index_build_seconds"]}}


def stage_serve_check(p: Paths, cfg: dict, export_dir: str) -> dict:
  """The export dir as a deployment loads it: its own export_runtime.py, no t2t_jax model code."""
  with open(os.path.join(p.work, "prompts.json"), encoding="utf-8") as f:
    prompts = json.load(f)
  sys.path.insert(0, export_dir)
  import export_runtime  # pylint: disable=import-outside-toplevel,import-error
  t = time.perf_counter()
  rec = export_runtime.load(export_dir)
  load_s = time.perf_counter() - t
  rec.recommend(prompts[:1], k=cfg["k"])  # compile
  t = time.perf_counter()
  answers = rec.recommend(prompts, k=cfg["k"])
  answer_s = time.perf_counter() - t
  assert len(answers) == len(prompts) and all(len(a) == cfg["k"] for a in answers), "short answers"
  return {"prompts": len(prompts), "runtime": export_runtime.__file__, "first_answer": answers[0][:3],
          "prompts_per_s": len(prompts) / max(answer_s, 1e-9), "seconds": {"load": load_s, "answer": answer_s}}


CHILD_STAGES = {"generate": stage_generate, "workspace": stage_workspace, "embeddings": stage_embeddings,
                "ids": stage_ids, "task": stage_task, "train": stage_train, "decode": stage_decode}


def run_child_stage(stage: str, size_dir: str) -> int:
  p = Paths(size_dir)
  with open(os.path.join(size_dir, "config.json"), encoding="utf-8") as f:
    cfg = json.load(f)
  console.configure(False)
  out = (stage_serve_check(p, cfg, cfg["export_dir"]) if stage == "serve_check"
         else CHILD_STAGES[stage](p, cfg))
  io_utils.write_json(p.stage_json(stage), out)
  return 0


# ----------------------------------------------------------------------------------------------- #
# The parent: one size = the stages in order, each measured in its own process.


def _command(stage: str, p: Paths, cfg: dict) -> list[str]:
  if stage == "import":
    return [sys.executable, "-m", "t2t_jax.cli", "import", "mpd", p.raw, "--out", p.dataset,
            "--seed", str(cfg["seed"]), "--vocab_size", str(cfg["vocab_size"])]
  if stage == "export":
    return [sys.executable, "-m", "t2t_jax.cli", "export", "--model_dir", p.model, "--out", cfg["export_dir"],
            "-k", str(cfg["k"]), "--platforms", cfg["platforms"]]
  return [sys.executable, os.path.abspath(__file__), "--stage", stage, "--size_dir", p.root]


def _cli_detail(stage: str, p: Paths, cfg: dict) -> dict:
  """What the CLI stages (import, export) wrote, read from their outputs."""
  if stage == "import":
    with open(os.path.join(p.dataset, "meta.json"), encoding="utf-8") as f:
      meta = json.load(f)
    rs = meta.get("read_stats", {})
    return {"rows": rs.get("rows_read"), "tracks": meta.get("num_tracks"), "playlists": meta.get("num_playlists"),
            "split_sizes": meta.get("split_sizes"), "duplicate_rows": rs.get("duplicate_tracks_in_playlists"),
            "vocab_size": (meta.get("vocab") or {}).get("size")}
  with open(os.path.join(cfg["export_dir"], "manifest.json"), encoding="utf-8") as f:
    manifest = json.load(f)
  return {"tracks": manifest["num_tracks"], "export_bytes": sum(manifest["file_bytes"].values()),
          "platforms": manifest["platforms"], "seconds": {"lowering": manifest["lowering_seconds"]}}


def _log_tail(path: str, lines: int = 15) -> list[str]:
  try:
    with open(path, encoding="utf-8", errors="replace") as f:
      return [l.rstrip("\n") for l in f.readlines()[-lines:]]
  except OSError:
    return []


def run_size(size: int, size_dir: str, settings: dict, args) -> dict:
  """All stages of one size; a failed stage skips the rest.  Returns the size's result."""
  p = Paths(size_dir)
  for d in (p.stages, p.logs):
    os.makedirs(d, exist_ok=True)
  cfg = dict(settings, playlists=size, export_dir=os.path.abspath(args.export_dir or p.export))
  io_utils.write_json(os.path.join(size_dir, "config.json"), cfg)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  rss_limit = int(args.rss_limit_gb * 2**30) if args.rss_limit_gb else None
  stages, failed = [], None
  for stage in STAGES:
    row = {"stage": stage, "user_route": USER_ROUTE[stage], "driver": DRIVERS[stage]}
    if failed:
      stages.append({**row, "status": f"skipped ({failed} failed)"})
      continue
    log = os.path.join(p.logs, f"{stage}.log")
    m = bench_common.run_measured(_command(stage, p, cfg), log_path=log, timeout_s=args.stage_timeout_s,
                                  env=env, rss_limit_bytes=rss_limit)
    row.update(status=m["status"], wall_s=round(m["wall_s"], 3), cpu_s=round(m["cpu_s"], 3),
               peak_rss_gb=round(m["peak_rss_bytes"] / 1e9, 4),
               polled_peak_rss_gb=round(m["polled_peak_rss_bytes"] / 1e9, 4))
    if m["status"] == "ok":
      row["detail"] = (_cli_detail(stage, p, cfg) if stage in ("import", "export") else p.read(stage))
    else:
      failed = stage
      row["log_tail"] = _log_tail(log)
    stages.append(row)
    print(f"{size:>9} {stage:<11} {m['status']:<4} {m['wall_s']:9.1f} s wall {m['cpu_s']:9.1f} s cpu "
          f"{m['peak_rss_bytes'] / 1e9:7.2f} GB peak RSS", flush=True)
    if failed:
      print("\n".join(f"    | {l}" for l in row["log_tail"]), flush=True)
    if stage == "import" and not args.keep:
      shutil.rmtree(p.raw, ignore_errors=True)  # the slices are only read by the import
  return _size_summary(size, stages)


def _size_summary(size: int, stages: list[dict]) -> dict:
  by = {s["stage"]: s for s in stages}
  gen = by["generate"].get("detail", {})
  imp = by["import"].get("detail", {})
  ran = [s for s in stages if "wall_s" in s]
  route = [s for s in ran if s["user_route"]]
  return {"playlists": size, "rows": imp.get("rows") or gen.get("rows"), "tracks": imp.get("tracks"),
          "corpus": gen.get("corpus"), "stages": stages,
          "ok": all(s.get("status") == "ok" for s in stages),
          "route_wall_s": round(sum(s["wall_s"] for s in route), 2),
          "total_wall_s": round(sum(s["wall_s"] for s in ran), 2),
          "peak_rss_gb": max([s["peak_rss_gb"] for s in ran], default=None),
          "peak_rss_stage": max(ran, key=lambda s: s["peak_rss_gb"])["stage"] if ran else None}


def growth(sizes: dict) -> list[dict]:
  """Per pair of consecutive sizes and stage: time and RSS ratios against the ratio of the stage's
  driver (rows or tracks), the exponent log(time ratio) / log(driver ratio) and the O(n log n) bound
  r * log(n2) / log(n1); `within_n_log_n` is None where the smaller size ran under FLOOR_S (start-up
  and compilation, not the stage's work, dominate it)."""
  keys = sorted(sizes, key=int)
  out = []
  for a, b in zip(keys, keys[1:]):
    sa, sb = sizes[a], sizes[b]
    if not (sa.get("rows") and sb.get("rows")):
      continue
    pair = {"from": int(a), "to": int(b), "rows_ratio": sb["rows"] / sa["rows"],
            "tracks_ratio": (sb["tracks"] / sa["tracks"]) if sa.get("tracks") and sb.get("tracks") else None,
            "stages": {}}
    rows_a = {s["stage"]: s for s in sa["stages"]}
    for s in sb["stages"]:
      r = rows_a.get(s["stage"], {})
      if s.get("status") != "ok" or r.get("status") != "ok":
        continue
      n1, n2 = sa.get(s["driver"]), sb.get(s["driver"])
      if not n1 or not n2 or n1 < 2:
        continue
      ratio = n2 / n1
      t_ratio = s["wall_s"] / max(r["wall_s"], 1e-9)
      bound = ratio * math.log(n2) / math.log(n1)
      pair["stages"][s["stage"]] = {
          "driver": s["driver"], "driver_ratio": round(ratio, 3), "time_ratio": round(t_ratio, 3),
          "rss_ratio": round(s["peak_rss_gb"] / max(r["peak_rss_gb"], 1e-9), 3),
          "exponent": round(math.log(t_ratio) / math.log(ratio), 3) if ratio > 1 and t_ratio > 0 else None,
          "n_log_n_bound": round(bound, 3),
          "within_n_log_n": None if r["wall_s"] < FLOOR_S else bool(t_ratio <= bound * 1.1)}
    out.append(pair)
  return out


def notes(results: dict) -> list[str]:
  """Findings a reader needs beside the numbers: targets missed, stages past O(n log n), failures."""
  out = []
  for size, r in results["sizes"].items():
    for s in r["stages"]:
      if s.get("status") not in ("ok", None) and not str(s.get("status")).startswith("skipped"):
        out.append(f"{size} playlists: stage {s['stage']} {s['status']}")
    if r.get("peak_rss_gb") and r["peak_rss_gb"] > RSS_TARGET_GB:
      out.append(f"{size} playlists: peak RSS {r['peak_rss_gb']:.1f} GB in {r['peak_rss_stage']} is over the "
                 f"{RSS_TARGET_GB:.0f} GB target")
  for g in results["growth"]:
    for stage, v in g["stages"].items():
      if v["within_n_log_n"] is False:
        out.append(f"{g['from']} -> {g['to']} playlists: {stage} took {v['time_ratio']:.2f}x for "
                   f"{v['driver_ratio']:.2f}x {v['driver']} (exponent {v['exponent']}), above the n log n "
                   f"bound {v['n_log_n_bound']:.2f}x")
  return out


# ----------------------------------------------------------------------------------------------- #
# Entry.


def _scratch(args) -> tuple[str, bool]:
  """(scratch dir, whether this run made it).  An existing --scratch must be empty or this tool's."""
  if args.scratch is None:
    return tempfile.mkdtemp(prefix="bench_mpd_scale_"), True
  try:
    path = io_utils.check_output_dir(args.scratch, kind=SCRATCH_KIND)
  except UserInputError as e:
    raise UserInputError(f"--scratch: {e}") from None
  made = not os.path.exists(path)
  io_utils.write_marker(path, kind=SCRATCH_KIND)
  return path, made


def _check_space(scratch: str, size: int) -> None:
  free = shutil.disk_usage(scratch).free
  need = BYTES_PER_PLAYLIST * size
  if free < need:
    raise UserInputError(f"--scratch {scratch}: {free / 1e9:.1f} GB free, {size} playlists need about "
                         f"{need / 1e9:.1f} GB; choose a larger disk with --scratch or smaller --sizes")


def _sizes(args) -> list[int]:
  if args.tiny:
    return [TINY_PLAYLISTS]
  if args.playlists is not None:
    if args.playlists < 1000:
      raise UserInputError(f"--playlists must be at least 1000 (one slice), got {args.playlists}")
    decades = [10 ** e for e in range(4, 8) if 10 ** e < args.playlists]
    text = ",".join(str(s) for s in decades + [args.playlists])
  else:
    text = args.sizes
  try:
    sizes = [int(s) for s in text.split(",") if s.strip()]
  except ValueError:
    raise UserInputError(f"--sizes must be comma-separated integers, got {text!r}") from None
  if not sizes or any(s < 1000 for s in sizes):
    raise UserInputError(f"sizes must be at least 1000 playlists (one slice), got {text!r}")
  return sorted(set(sizes))


def run(args) -> int:
  sizes = _sizes(args)
  settings = dict(SETTINGS, **(TINY if args.tiny else {}))
  for key in SETTINGS:
    if getattr(args, key, None) is not None:
      settings[key] = getattr(args, key)
  bad = [k for k in ("train_steps", "batch_size", "prompts", "embedding_dim", "vocab_size", "beam_size")
         if settings[k] < 1]
  if bad:
    raise UserInputError(f"--{bad[0]} must be positive, got {settings[bad[0]]}")
  if settings["id_levels"] != "auto":
    try:
      levels = [int(x) for x in settings["id_levels"].split(",")]
    except ValueError:
      levels = []
    if not levels or min(levels) < 2:
      raise UserInputError(f"--id_levels must be 'auto' or comma-separated integers >= 2, got "
                           f"{settings['id_levels']!r}")
  if args.export_dir:
    io_utils.check_output_dir(args.export_dir, kind="export")
  watch = bench_common.LoadWatch("bench_mpd_scale")
  argv = sys.argv[1:] if args.argv is None else args.argv
  results = {"benchmark": "bench_mpd_scale", "command": "python tools/bench_mpd_scale.py " + " ".join(argv),
             "machine": bench_data.machine(), "settings": settings, "sizes_requested": sizes,
             "targets": {"peak_rss_gb": RSS_TARGET_GB, "growth": "O(rows log rows) per stage",
                         "hours_at_1m_playlists": HOURS_TARGET},
             "mpd_reported": bench_data.MPD_REPORTED, "known_limits": list(KNOWN_LIMITS), "sizes": {},
             "growth": [], "notes": []}
  scratch, made = _scratch(args)
  t0 = time.perf_counter()
  try:
    for size in sizes:
      _check_space(scratch, size)
      size_dir = os.path.join(scratch, f"size_{size}")
      shutil.rmtree(size_dir, ignore_errors=True)  # this tool's dir (the marker was checked)
      results["sizes"][str(size)] = run_size(size, size_dir, settings, args)
      results["growth"] = growth(results["sizes"])
      results["notes"] = notes(results)
      results["wall_s"] = round(time.perf_counter() - t0, 1)
      bench_common.write_json(args.json, results)  # a long run keeps what it measured so far
      if not args.keep:
        shutil.rmtree(size_dir, ignore_errors=True)
      if not results["sizes"][str(size)]["ok"]:
        break
  finally:
    if made and not args.keep:
      shutil.rmtree(scratch, ignore_errors=True)
  results["load"] = watch.report()
  results["wall_s"] = round(time.perf_counter() - t0, 1)
  results["within_targets"] = _within_targets(results)
  bench_common.write_json(args.json, results)
  _print_summary(results)
  return 0 if all(r["ok"] for r in results["sizes"].values()) else 1


def _within_targets(results: dict) -> dict:
  largest = max(results["sizes"], key=int)
  r = results["sizes"][largest]
  verdicts = [v["within_n_log_n"] for g in results["growth"] for v in g["stages"].values()]
  return {"size": int(largest), "peak_rss": bool(r["ok"] and r["peak_rss_gb"] <= RSS_TARGET_GB),
          "growth": None if not verdicts or all(v is None for v in verdicts) else all(v is not False for v in verdicts),
          "hours": round(results["wall_s"] / 3600, 3),
          "time": None if int(largest) < 1_000_000 else results["wall_s"] <= HOURS_TARGET * 3600}


def _print_summary(results: dict) -> None:
  for g in results["growth"]:
    print(f"growth {g['from']} -> {g['to']} playlists (rows x{g['rows_ratio']:.2f}): " + ", ".join(
        f"{k} x{v['time_ratio']:.2f}" for k, v in g["stages"].items()))
  for n in results["notes"]:
    print(f"note: {n}")
  print(f"total {results['wall_s']:.0f} s; within targets: {results['within_targets']}", flush=True)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated corpus sizes (playlists)")
  ap.add_argument("--playlists", type=int, default=None,
                  help="the largest size; each decade from 10,000 below it runs too (--playlists 1000000: 10k, "
                       "100k, 1M), so one command shows how every stage grows")
  ap.add_argument("--tiny", action="store_true",
                  help=f"{TINY_PLAYLISTS} playlists, {TINY['train_steps']} steps of the micro model, "
                       f"{TINY['prompts']} prompts, CPU export (tests)")
  ap.add_argument("--json", default=None, help="write the results here (atomically, after every size)")
  ap.add_argument("--scratch", default=None, help="where each size's files go (default: a temporary dir, removed)")
  ap.add_argument("--keep", action="store_true", help="keep the scratch files (slices, datasets, model dirs)")
  ap.add_argument("--export_dir", default=None, help="write the export dir here (the last size's is kept)")
  ap.add_argument("--rss_limit_gb", type=float, default=20.0, help="stop a stage past this RSS (0: no limit)")
  ap.add_argument("--stage_timeout_s", type=float, default=4 * 3600.0, help="stop a stage after this long")
  for key in ("train_steps", "batch_size", "prompts", "embedding_dim", "vocab_size", "beam_size"):
    ap.add_argument(f"--{key}", type=int, default=None, help=f"default {SETTINGS[key]} (--tiny: "
                    f"{TINY.get(key, SETTINGS[key])})")
  ap.add_argument("--model", default=None, choices=("micro", "tiny", "small"), help="default tiny (--tiny: micro)")
  ap.add_argument("--platforms", default=None, help="export lowering targets (default cpu,cuda; --tiny: cpu)")
  ap.add_argument("--id_levels", default=None, help="semantic ID codebook sizes, e.g. 256,256,256 (default: "
                  "quickstart's auto levels from the catalog size)")
  ap.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
  ap.add_argument("--size_dir", help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  args.argv = argv
  if args.stage:
    return run_child_stage(args.stage, args.size_dir)
  return console.run_main(lambda: run(args), prog="bench_mpd_scale.py")


if __name__ == "__main__":
  sys.exit(main())
