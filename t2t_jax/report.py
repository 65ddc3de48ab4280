"""Results tables and report folders (report.md + report.json), written atomically."""

import json
import os
from typing import Any, Sequence

from t2t_jax import io_utils

TABLE_COLUMNS = ("method", "hits@10", "map@10", "ndcg@10", "recall@10", "mrr", "decode_steps_per_id")


def _fmt(v: Any) -> str:
  if isinstance(v, float):
    return f"{v:.4f}"
  return "-" if v is None else str(v)


def markdown_table(rows: Sequence[dict], columns: Sequence[str] = TABLE_COLUMNS) -> str:
  """A GitHub-markdown table of `rows` restricted to `columns` (missing values as '-')."""
  lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
  for row in rows:
    lines.append("| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |")
  return "\n".join(lines)


def examples_markdown(examples: Sequence[dict]) -> str:
  """examples: [{"prompt": str, "tracks": ["artist - title", ...], "relevant_hits": int}]."""
  out = []
  for ex in examples:
    out.append(f"**{ex['prompt']}**")
    for i, t in enumerate(ex["tracks"], 1):
      out.append(f"{i}. {t}")
    out.append("")
  return "\n".join(out)


def write_report(out_dir: str, *, title: str, rows: Sequence[dict], examples: Sequence[dict],
                 seconds: float, details: dict | None = None) -> None:
  """Writes report.md, report.json and examples.json into out_dir (each atomically).

  report.json is a list of rows (one per method) with the metric keys, and each row also carries
  the run's total wall time as `seconds`, so the file is a plain table that tools can load.
  """
  os.makedirs(out_dir, exist_ok=True)
  md = [f"# {title}", "", markdown_table(rows), "", f"Total time: {seconds:.1f} s", ""]
  if details:
    md += ["## Details", "", "```json", json.dumps(details, indent=2, ensure_ascii=False), "```", ""]
  md += ["## Example prompts (top-5)", "", examples_markdown(examples)]
  with io_utils.atomic_write(os.path.join(out_dir, "report.md")) as f:
    f.write("\n".join(md))
  io_utils.write_json(os.path.join(out_dir, "report.json"), [{**r, "seconds": round(seconds, 2)} for r in rows])
  io_utils.write_json(os.path.join(out_dir, "examples.json"), {"examples": list(examples), "details": details or {}})
