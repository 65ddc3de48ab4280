"""Results tables, report folders and results files, written atomically.

  markdown_table   the one GitHub-markdown table of result rows (quickstart, studies, benchmarks)
  write_report     quickstart report folder: report.md + report.json + examples.json
  write_results    study results: results.json + results.csv + results.md (table, machine, config)
  figures_markdown PNGs embedded in a report (drawn by t2t_jax.plots)
  save_figure      a matplotlib figure as PNG
  machine_info     where a figure was measured (CPU, cores, load, JAX backend and devices, date)
"""

import csv
import io
import json
import os
import time
from typing import Any, Sequence

from t2t_jax import io_utils, storage

TABLE_COLUMNS = ("method", "hits@10", "map@10", "ndcg@10", "recall@10", "mrr", "decode_steps_per_id")


def _cell(v: Any) -> str:
  if v is None:
    return "-"
  if isinstance(v, float):
    return f"{v:.4f}" if abs(v) < 10 else f"{v:,.1f}"
  if isinstance(v, (list, tuple)):
    return "x".join(str(x) for x in v)
  return str(v)


def markdown_table(rows: Sequence[dict], columns: Sequence[str] = TABLE_COLUMNS) -> str:
  """A GitHub-markdown table of `rows` restricted to `columns` (missing values as '-')."""
  lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
  lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
  return "\n".join(lines)


RELEVANT_MARK = " ✓"  # appended to an example track that is relevant (explained above the examples)


def examples_markdown(examples: Sequence[dict]) -> str:
  """examples: [{"prompt": str, "tracks": ["artist - title", ...], "relevant_hits": int}]."""
  out = []
  if any(str(t).endswith(RELEVANT_MARK) for ex in examples for t in ex["tracks"]):
    out += [f"({RELEVANT_MARK.strip()} = a track of the held-out playlist the prompt came from, i.e. a hit)", ""]
  for ex in examples:
    out.append(f"**{ex['prompt']}**")
    for i, t in enumerate(ex["tracks"], 1):
      out.append(f"{i}. {t}")
    out.append("")
  return "\n".join(out)


def figures_markdown(figures: Sequence[tuple[str, str]]) -> list[str]:
  """Markdown lines embedding `figures`: (caption, PNG path relative to the markdown file)."""
  out = []
  for caption, path in figures:
    out += [f"![{caption}]({path})", ""]
  return out


def write_report(out_dir: str, *, title: str, rows: Sequence[dict], examples: Sequence[dict],
                 seconds: float, details: dict | None = None,
                 figures: Sequence[tuple[str, str]] = (), notes: Sequence[str] = ()) -> None:
  """Writes report.md, report.json and examples.json into out_dir (each atomically).

  `figures`: (caption, file name) of PNGs already in out_dir, embedded under the table.
  `notes`: lines report.md shows under its title (quickstart: the model it picked and why).

  report.json is a list of rows (one per method) with the metric keys, and each row also carries
  the run's total wall time as `seconds`, so the file is a plain table that tools can load.
  """
  storage.makedirs(out_dir)
  md = [f"# {title}", ""]
  for note in notes:
    md += [note, ""]
  md += [markdown_table(rows), "", f"Total time: {seconds:.1f} s", ""]
  md += figures_markdown(figures)
  if details:
    md += ["## Details", "", "```json", json.dumps(details, indent=2, ensure_ascii=False,
                                                   default=str), "```", ""]
  md += ["## Example prompts (top-5)", "", examples_markdown(examples)]
  with io_utils.atomic_write(storage.join(out_dir, "report.md")) as f:
    f.write("\n".join(md))
  io_utils.write_json(storage.join(out_dir, "report.json"),
                      [{**r, "seconds": round(seconds, 2)} for r in rows])
  io_utils.write_json(storage.join(out_dir, "examples.json"),
                      {"examples": list(examples), "details": details or {}})


def write_results(out_dir: str, rows: Sequence[dict], *, columns: Sequence[str], title: str,
                  machine: dict, config: dict, notes: Sequence[str] = (),
                  table_rows: Sequence[dict] | None = None,
                  figures: Sequence[tuple[str, str]] = ()) -> None:
  """results.json (list of rows), results.csv (all keys), results.md (table + machine + config).

  `table_rows`: what results.md's table shows instead of `rows` (e.g. formatted aggregates).
  `figures`: (caption, file name) of PNGs already in out_dir, embedded under the table."""
  storage.makedirs(out_dir)
  io_utils.write_json(storage.join(out_dir, "results.json"), list(rows))
  keys = list(dict.fromkeys(k for r in rows for k in r))
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
  writer.writeheader()
  for r in rows:
    writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})
  with io_utils.atomic_write(storage.join(out_dir, "results.csv")) as f:
    f.write(buf.getvalue())
  md = [f"# {title}", "", markdown_table(rows if table_rows is None else table_rows, columns), ""]
  md += figures_markdown(figures)
  md += [f"- {n}" for n in notes]
  md += ["", f"Machine: {machine.get('cpu')} ({machine.get('cpu_count')} cores, "
         f"load {machine.get('load_avg_1_5_15')} at the start), "
         f"JAX {machine.get('jax')} on {machine.get('backend')}, {machine.get('date_utc')}.", "",
         "## Config", "", "```json", json.dumps(config, indent=2, default=str), "```", ""]
  with io_utils.atomic_write(storage.join(out_dir, "results.md")) as f:
    f.write("\n".join(md))


def save_figure(fig, path: str, dpi: int = 80) -> None:
  """Saves a matplotlib figure as PNG atomically and closes it."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  fig.tight_layout()
  fig.savefig(buf, format="png", dpi=dpi)
  plt.close(fig)
  with io_utils.atomic_write(path, "wb", encoding=None) as f:
    f.write(buf.getvalue())


def machine_info() -> dict:
  """Where a figure was measured: host CPU, cores, load, JAX backend and devices, time."""
  import platform  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    cpu = names[0] if names else cpu
  except OSError:
    pass
  try:
    load = [round(x, 2) for x in os.getloadavg()]
  except OSError:
    load = None
  return {"cpu": cpu, "cpu_count": os.cpu_count(), "load_avg_1_5_15": load,
          "platform": platform.platform(), "python": platform.python_version(),
          "jax": jax.__version__, "backend": jax.default_backend(),
          "devices": [str(d) for d in jax.devices()],
          "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
