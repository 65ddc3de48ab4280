"""The README and docs/*.md: relative links resolve, the Performance tables are bench_report's rendering
of the committed JSON, the Quickstart keeps the two lines .ci/run and the tests rely on, and the package
docstrings list the modules that exist. Pure file reads: fast."""

import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import bench_report  # noqa: E402  pylint: disable=wrong-import-position

PAGES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _prose(path):
  """The page's text outside fenced code blocks and inline code (links there are not links)."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
  return re.sub(r"`[^`\n]*`", "", text)


def _anchors(path):
  """GitHub's heading anchors of a markdown file."""
  seen, out = {}, set()
  for line in _prose(path).splitlines():
    m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
    if not m:
      continue
    slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
    n = seen.get(slug, 0)
    seen[slug] = n + 1
    out.add(slug if n == 0 else f"{slug}-{n}")
  return out


def test_relative_links_resolve():
  assert len(PAGES) >= 10, PAGES
  broken, checked = [], 0
  for page in PAGES:
    for target in LINK.findall(_prose(page)):
      if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
        continue
      path, _, anchor = target.partition("#")
      dest = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
      checked += 1
      if not os.path.exists(dest):
        broken.append(f"{os.path.relpath(page, ROOT)}: {target} (no {os.path.relpath(dest, ROOT)})")
      elif anchor and dest.endswith(".md") and anchor not in _anchors(dest):
        broken.append(f"{os.path.relpath(page, ROOT)}: {target} (no heading #{anchor})")
  assert checked > 30 and not broken, "\n".join(broken)


def test_performance_tables_are_rendered_from_the_committed_json():
  with open(os.path.join(ROOT, "docs", "performance.md"), encoding="utf-8") as f:
    page = f.read().splitlines()
  for d in ("bench", "bench/gpu"):
    table = bench_report.render(os.path.join(ROOT, "docs", "results", d),
                                links_relative_to=os.path.join(ROOT, "docs")).splitlines()
    assert len(table) > 3, d
    missing = [row for row in table if row not in page]
    assert not missing, "docs/performance.md differs from bench_report.py's rendering:\n" + "\n".join(missing)


def test_readme_quickstart_lines_and_length():
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    readme = f.read()
  assert ("```bash\npython3 -m pip install -e . && t2t quickstart --out report\n"
          "python3 -m pip install -q -e \".[test]\" && python3 -m pytest -m \"not slow\" --durations=20 -q\n```"
          in readme)
  with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
    assert readme.split("```bash\n", 2)[1].splitlines()[1] in f.read().splitlines()
  assert readme.count("\n") <= 250


def _docstring_names(init_path):
  import ast  # pylint: disable=import-outside-toplevel
  with open(init_path, encoding="utf-8") as f:
    doc = ast.get_docstring(ast.parse(f.read())) or ""
  return {m.group(1) for m in re.finditer(r"^\s*([a-z_][a-z0-9_]*)(?:\.py)?\s{2,}", doc, re.M)}


def test_package_docstrings_list_the_modules_present():
  pkg = os.path.join(ROOT, "t2t_jax")
  for d in [pkg] + sorted(p for p in glob.glob(os.path.join(pkg, "*")) if os.path.isfile(os.path.join(p, "__init__.py"))):
    present = {f[:-3] for f in os.listdir(d) if f.endswith(".py") and f != "__init__.py"}
    present |= {f for f in os.listdir(d) if os.path.isfile(os.path.join(d, f, "__init__.py"))}
    listed = _docstring_names(os.path.join(d, "__init__.py"))
    assert listed == present, (os.path.relpath(d, ROOT), "missing:", sorted(present - listed),
                               "not present:", sorted(listed - present))
