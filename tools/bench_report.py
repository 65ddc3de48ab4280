"""The Performance tables of docs/performance.md, rendered from the benchmark JSON files (so no figure is
typed by hand). Prints the table; it writes no file.

  python tools/bench_report.py docs/results/bench --links_relative_to docs       # train/decode/kmeans/data/serve.json
  python tools/bench_report.py docs/results/bench/gpu --links_relative_to docs   # a tools/gpu_suite.py --out dir

Every row names its JSON file, linked by its path as given (DIR/NAME.json) or, with
--links_relative_to docs, relative to docs/ so the links resolve inside docs/performance.md. The
machine, date and load average before/after come from the file. A file whose run was overloaded
(load above the core count) is marked so in its row.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _load(d, name):
  path = os.path.join(d, name)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _mm(s, fmt="{:.2f}", scale=1.0):
  """'median (min-max)' of a bench_common.summary."""
  if not s or s.get("median") is None:
    return "-"
  f = lambda v: fmt.format(v * scale)
  return f"{f(s['median'])} ({f(s['min'])}-{f(s['max'])})" if s.get("n", 1) > 1 else f(s["median"])


def _where(r):
  m = r.get("machine", {})
  load = r.get("load", {})
  over = " **overloaded**" if load.get("overloaded") else ""
  dev = m.get("device_kind") if m.get("device_kind") not in (None, "cpu") else m.get("cpu", "?")
  return (f"{dev}, {m.get('cpu_count', '?')} cores, {m.get('date_utc', '?')}; load {load.get('before_1_5_15', ['?'])[0]}"
          f" -> {(load.get('after_1_5_15') or ['?'])[0]}{over}")


def rows_kmeans(r, name):
  cfg = f"N={r['n']:,}, d={r['d']}, K={r['k']}, {r['iterations']} iters, same init, {r['runs']} runs"
  ours = f"{_mm(r['jax_seconds_summary'])} s; {_mm(r['jax_seconds_per_iteration'], '{:.2f}', 1e3)} ms/iter"
  peer = "-"
  ratio = f"{r['iteration_over_measured_read']:.1f}x one memory read"
  if r.get("faiss_seconds"):
    peer = (f"faiss ({r['faiss_threads']} threads, measured best) {_mm(r['faiss_seconds_summary'])} s; "
            f"sklearn {_mm(r['sklearn_seconds_summary'])} s")
    ratio = f"**{r['time_ratio_jax_over_faiss']:.2f}x** faiss time (inertia x {r['inertia_ratio_jax_over_faiss']:.9f})"
  return [("bench_kmeans.py", name, cfg, ours, peer, ratio, _where(r))]


def rows_decode(r, name):
  out = []
  model = r.get("model", {})
  for n, c in r.get("catalogs", {}).items():
    if "ours_constrained" not in c:
      out.append(("bench_decode.py", name, f"{int(n):,} IDs", c.get("status", "-"), "-", "-", _where(r)))
      continue
    cfg = (f"T5-{model.get('preset')}, batch {r['config']['batch']}, beam {r['config']['beam']}, {int(n):,} IDs "
           f"of 4 tokens, same weights")
    hf = c.get("hf_constrained", {})
    peer = (f"transformers constrained generate ({r.get('torch_threads', {}).get('chosen')} threads) "
            f"{_mm(hf.get('prompts_per_s'))} prompts/s" + (f"; {hf['status']}" if hf.get("status") else ""))
    ratio = f"**{c['speedup_constrained_vs_hf']:.2f}x**" if c.get("speedup_constrained_vs_hf") else "-"
    out.append(("bench_decode.py", name, cfg, f"{_mm(c['ours_constrained']['prompts_per_s'])} prompts/s", peer, ratio,
                _where(r)))
  for n, m in r.get("mask_only", {}).get("catalogs", {}).items():
    out.append(("bench_decode.py", name, f"masking only, {int(n):,} IDs, batch {r['mask_only']['batch']} x beam "
                f"{r['mask_only']['beam']}", f"{_mm(m['constrained_ms_per_decode'], '{:.3f}')} ms per decode",
                "-", "-", _where(r)))
  b = r.get("index_build")
  if b:
    out.append(("bench_decode.py", name, f"index build, {b['n']:,} IDs", f"{_mm(b['seconds'])} s, "
                f"{b['bytes_per_id']:.2f} bytes/ID", "-", "-", _where(r)))
  return out


def rows_train(r, name):
  c = r["configuration"]
  cfg = (f"{c['model']}, batch {c['batch_size']}, {c['inputs_length']}->{c['targets_length']} tokens, {c['dtype']}, "
         f"Adafactor, {c['windows']} windows x {c['steps_per_window']} steps")
  s = r["sides"]
  ours = f"{_mm(s['ours']['examples_per_s'])} examples/s, MFU {s['ours']['mfu']:.3f}"
  peers, ratios = [], []
  for p, label in (("hf_eager", "eager"), ("hf_compiled", "torch.compile")):
    side = s.get(p)
    if side is None:
      continue
    if side.get("examples_per_s"):
      th = side.get("threads", {}).get("chosen")
      peers.append(f"{label} ({th} threads) {_mm(side['examples_per_s'])}")
      ratios.append(f"**{r[f'ours_over_{p}']:.2f}x** {label}")
    else:
      peers.append(f"{label}: {side.get('status')}")
  return [("bench_train.py", name, cfg, ours, "; ".join(peers) or "-", "; ".join(ratios) or "-", _where(r))]


def rows_data(r, name):
  sizes = r.get("sizes", {})
  ours = "; ".join(f"{int(k):,} playlists: {v['examples_per_s']:,.0f} examples/s, peak RSS {v['peak_rss_mb']:,.0f} MB"
                   for k, v in sizes.items())
  return [("bench_data.py", name, "MPD-format corpus -> packed batches", ours, "-", "-", _where(r))]


def rows_serve(r, name):
  ours = (f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, {r['requests_per_s']} req/s, {r['errors']} errors, "
          f"{r['wrong_answers']} wrong answers")
  return [("bench_serve.py", name, f"{r['clients']} clients, {r['load_requests']} requests", ours, "-", "-", _where(r))]


def rows_scaling(r, name):
  row = r.get("row", {})
  if "hits@10" not in row:
    return []
  ours = (f"Hits@10 {row['hits@10']:.3f}; IDs {row['id_build_seconds']} s; train {row['train_examples_per_s']:,.0f} "
          f"examples/s; decode {row['decode_ms_per_batch']} ms / {row['decode_batch_size']} prompts")
  return [("bench_scaling.py", name, f"{row['num_tracks']:,} tracks, {row['num_playlists']:,} playlists, "
           f"{row['model']}, {row['train_steps']} steps", ours, "-", "-", _where(r))]


def rows_mpd_scale(r, name):
  """One row per size: the route's wall time and its largest per-stage peak RSS, or where it stopped."""
  out = []
  for n, s in r.get("sizes", {}).items():
    stopped = [f"{x['stage']} {x['status']}" for x in s["stages"] if x.get("status") not in ("ok", None)
               and not x["status"].startswith("skipped")]
    ours = (f"route {s['route_wall_s'] / 60:,.1f} min, peak RSS {s['peak_rss_gb']:.2f} GB ({s['peak_rss_stage']})"
            + (f"; {'; '.join(stopped)}" if stopped else ""))
    cfg = (f"{int(n):,} MPD-like playlists, {s.get('rows') or 0:,} rows, {s.get('tracks') or 0:,} tracks: "
           f"import -> export, {r['settings']['train_steps']} steps")
    out.append(("bench_mpd_scale.py", name, cfg, ours, "-", "-", _where(r)))
  return out


def rows_priors(r, name):
  """One row per (catalog, batch): the priors built inside the jitted search vs the host path before it."""
  out = []
  for c in r.get("cases", []):
    t = c["seconds_per_batch"]
    cfg = (f"BM25 + dense prior, {c['rows']:,} one-token IDs, batch {c['batch']}, beam {c['beam']}, "
           f"{r.get('model', '?')}")
    ours = f"{_mm(t['in_function'], '{:.1f}', 1e3)} ms/batch (rows agree on {c['rows_agreement']:.0%})"
    peer = f"host prior, encoder run twice: {_mm(t['host'], '{:.1f}', 1e3)} ms/batch"
    out.append(("bench_priors.py", name, cfg, ours, peer, f"**{c['speedup_host_over_in_function']:.2f}x**", _where(r)))
  return out


RENDERERS = {"train.json": rows_train, "decode.json": rows_decode, "kmeans.json": rows_kmeans,
             "data.json": rows_data, "serve.json": rows_serve, "scaling.json": rows_scaling,
             "mpd_scale.json": rows_mpd_scale, "priors.json": rows_priors}


def render(directory: str, links_relative_to: str | None = None) -> str:
  """The markdown table; each row links its JSON file, relative to `links_relative_to` when given."""
  rows = []
  for name, fn in RENDERERS.items():
    r = _load(directory, name)
    if r is not None:
      rows += fn(r, os.path.join(directory, name))
  lines = ["| benchmark | configuration | ours | peer (best configuration here) | ratio | where, when, load | JSON |",
           "|---|---|---|---|---|---|---|"]
  for tool, path, cfg, ours, peer, ratio, where in rows:
    link = path if links_relative_to is None else os.path.relpath(path, links_relative_to)
    lines.append(f"| `{tool}` | {cfg} | {ours} | {peer} | {ratio} | {where} | [{os.path.basename(path)}]({link}) |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("directory", help="a dir of benchmark JSON files (train.json, decode.json, ...)")
  p.add_argument("--links_relative_to", default=None, metavar="DIR",
                 help="write each row's JSON link relative to DIR (docs, for docs/performance.md); "
                      "default: the path as given")
  args = p.parse_args(argv)
  if not os.path.isdir(args.directory):
    print(f"error: {args.directory} is not a directory", file=sys.stderr)
    return 2
  print(render(args.directory, links_relative_to=args.links_relative_to))
  return 0


if __name__ == "__main__":
  sys.exit(main())
