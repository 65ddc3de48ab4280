"""The import structure of t2t_jax/ and tasks/: layers in one order, no cycles, a TensorFlow-free core.

Every module is parsed (not imported) and every import of a t2t_jax.* or tasks.* module counts, at
module level or inside a function: a function-level import that hides a cycle or an upward import is
still one.  `LAYERS` below is the one place the order is written; a module may import its own layer
and the layers before it, never a later one.  A new module must be given a layer here.  Imports by
name (`importlib.import_module`: the family registry of models/__init__.py) are not seen; the
families it names are in its own layer.  Internal imports belong at module level: the few that stay
inside functions (TensorFlow, the `t2t` command dispatch, ...) are listed in `LAZY_IMPORTS`.
"""

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("t2t_jax", "tasks")

# Lowest first.  Each entry names modules or packages (a package covers its submodules); a module
# belongs to the layer of its longest matching name.
LAYERS = (
    # Utilities that know nothing of the domain: errors, files, logs, gin, metrics, reports, plots.
    # t2t_jax.export_runtime: copied verbatim into every export dir, so it imports only the standard
    # library, numpy, jax, sentencepiece and t2t_jax.errors; it is the one home of prompt
    # normalisation, file hashing and the trie check, which data/ and decoding/ import from it.
    # t2t_jax.training.summaries (TensorBoard events, metrics.jsonl): below the rest of training/
    # because plots reads metrics.jsonl through it.
    ("base", ("t2t_jax", "t2t_jax.errors", "t2t_jax.storage", "t2t_jax.local_gcs", "t2t_jax.io_utils", "t2t_jax.console", "t2t_jax.gin_utils",
              "t2t_jax.stats", "t2t_jax.metrics", "t2t_jax.report", "t2t_jax.training.summaries",
              "t2t_jax.plots", "t2t_jax.export_runtime")),
    # Dataset dirs: formats and readers, importers, prompts, tokenizers (SentencePiece, WordPiece).
    ("data", ("t2t_jax.data",)),
    # Model families behind `models.base.EncoderDecoderModel`, their pretrained formats.
    ("models", ("t2t_jax.models",)),
    ("decoding", ("t2t_jax.decoding",)),
    # ID tables and the strategies that build them (text embeddings use a model's sentence encoder).
    ("ids", ("t2t_jax.ids",)),
    # Training examples: a dataset joined with an ID table (the part of t2t_jax.data above ids).
    ("examples", ("t2t_jax.data.examples", "t2t_jax.data.batches")),
    # t2t_jax.training: the loop, train step, partitioning, optimizers, losses, hooks, checkpoints and
    # the MODEL_DIR lock (all of training/ but summaries).
    ("training", ("t2t_jax.training", "t2t_jax.evaluation")),
    # The trained retriever and what serves it: assets, recommend, export, serve; and the
    # Retriever / TrackRecommender Protocols (serving/protocols.py, which baselines implement).
    ("serving", ("t2t_jax.serving",)),
    ("baselines", ("t2t_jax.baselines",)),
    # SeqIO tasks, vocabularies and TFDS builders: TensorFlow lives here (TASKS_USERS import it lazily).
    ("tasks", ("tasks",)),
    # The gin train entry (`python -m t2t_jax.train`): trains on SeqIO tasks.
    ("train_entry", ("t2t_jax.train",)),
    ("studies", ("t2t_jax.studies",)),
    ("commands", ("t2t_jax.quickstart", "t2t_jax.cli")),
)

# t2t_jax modules above the tasks layer that may import tasks: only inside functions, so importing
# them never loads TensorFlow (test_core_imports_without_tensorflow checks it).
TASKS_USERS = ("t2t_jax.train", "t2t_jax.studies")

# Heavy libraries the t2t_jax modules must not load at import.
TENSORFLOW = ("tensorflow", "tensorflow_datasets", "seqio", "tasks")

# The only imports of t2t_jax / tasks modules allowed inside functions; every other one is at module
# level (test_function_level_imports_are_listed).  (importing module, imported module), each a module or
# a package covering its submodules; the reason is the comment above each.  Third-party imports are not
# checked (torch, sentence_transformers, faiss, ... stay inside the functions that need them).
LAZY_IMPORTS = (
    # tasks is SeqIO and TensorFlow: t2t_jax imports without them (TASKS_USERS says which may, and
    # test_core_imports_without_tensorflow checks it).
    ("t2t_jax", "tasks"),
    # `t2t` imports a command's modules when it runs that command: `t2t --help` and `t2t import` load
    # neither JAX nor the other commands (test_the_import_route_does_not_load_jax).
    ("t2t_jax.cli", "t2t_jax"),
    # cli builds the quickstart flags from quickstart.QuickstartConfig for every command, so quickstart
    # imports the JAX side (studies, ID specs, the retriever) only when it runs.
    ("t2t_jax.quickstart", "t2t_jax.studies"),
    ("t2t_jax.quickstart", "t2t_jax.ids"),
    ("t2t_jax.quickstart", "t2t_jax.serving"),
    # models.build_model: `import t2t_jax.models` (the family registry, models.pretrained) loads no JAX or
    # flax until a model is made; the families themselves are imported by name (importlib).
    ("t2t_jax.models", "t2t_jax.models.base"),
)


def _modules() -> dict[str, str]:
  """Module name -> file, for every .py of PACKAGES."""
  out = {}
  for package in PACKAGES:
    for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, package)):
      dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")))
      for name in sorted(filenames):
        if name.endswith(".py"):
          parts = os.path.relpath(os.path.join(dirpath, name), ROOT)[:-3].split(os.sep)
          if parts[-1] == "__init__":
            parts = parts[:-1]
          out[".".join(parts)] = os.path.join(dirpath, name)
  return out


MODULES = _modules()


def _target(name: str) -> str | None:
  """The module of PACKAGES an imported dotted name lives in (a package for its __init__), or None."""
  while name and name not in MODULES:
    name = name.rpartition(".")[0]
  return name or None


def _imports(module: str, path: str) -> list[tuple[str, int, bool]]:
  """(imported module, line, at module level) for every import of a PACKAGES module."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  is_package = path.endswith("__init__.py")
  out = []

  def visit(node, top):
    for child in ast.iter_child_nodes(node):
      names = []
      if isinstance(child, ast.Import):
        names = [a.name for a in child.names]
      elif isinstance(child, ast.ImportFrom):
        base = child.module or ""
        if child.level:
          parts = module.split(".")[:len(module.split(".")) - child.level + is_package]
          base = ".".join(parts + ([child.module] if child.module else []))
        names = [f"{base}.{a.name}" for a in child.names]  # `from pkg import mod` names a module
      for name in names:
        target = _target(name)
        if name.split(".")[0] in PACKAGES and target and target != module:
          out.append((target, child.lineno, top))
      visit(child, top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

  visit(tree, True)
  return out


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _layer(module: str) -> int:
  best, index = "", None
  for i, (_, names) in enumerate(LAYERS):
    for name in names:
      if (module == name or module.startswith(name + ".")) and len(name) > len(best):
        best, index = name, i
  return index


def _where(module: str, line: int) -> str:
  return f"{os.path.relpath(MODULES[module], ROOT)}:{line}"


def test_every_module_has_a_layer():
  assert len(MODULES) > 80 and "t2t_jax.models.t5" in MODULES and "tasks.pipeline" in MODULES
  names = [n for _, ns in LAYERS for n in ns]
  assert len(names) == len(set(names)), "a name is listed twice in LAYERS"
  assert not [n for n in names if n not in MODULES], "LAYERS names a module that does not exist"
  assert [m for m in MODULES if _layer(m) is None] == []


def test_no_upward_imports():
  bad = []
  for module, imports in GRAPH.items():
    for target, line, _ in imports:
      if _layer(target) > _layer(module):
        bad.append(f"{_where(module, line)}: {module} ({LAYERS[_layer(module)][0]}) imports {target} "
                   f"({LAYERS[_layer(target)][0]})")
  assert bad == [], "imports of a later layer:\n" + "\n".join(bad)


def _cycles() -> list[list[str]]:
  """One cycle through each strongly connected component of the import graph (module-level and
  function-level imports), as a path from its first module back to it."""
  index, low, on_stack, stack, components = {}, {}, set(), [], []

  def connect(m):  # Tarjan
    index[m] = low[m] = len(index)
    stack.append(m)
    on_stack.add(m)
    for target, _, _ in GRAPH[m]:
      if target not in index:
        connect(target)
        low[m] = min(low[m], low[target])
      elif target in on_stack:
        low[m] = min(low[m], index[target])
    if low[m] == index[m]:
      component = set()
      while m not in component:
        top = stack.pop()
        on_stack.discard(top)
        component.add(top)
      if len(component) > 1:
        components.append(component)

  for m in sorted(GRAPH):
    if m not in index:
      connect(m)
  cycles = []
  for component in components:
    start = min(component)
    paths = {start: [start]}  # breadth first inside the component: a shortest cycle through start
    queue = [start]
    while queue:
      m = queue.pop(0)
      targets = sorted({t for t, _, _ in GRAPH[m] if t in component})
      if start in targets:
        cycles.append(paths[m] + [start])
        break
      for t in targets:
        if t not in paths:
          paths[t] = paths[m] + [t]
          queue.append(t)
  return sorted(cycles)


def test_no_import_cycles():
  cycles = _cycles()
  assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_cycle_detection_finds_a_planted_cycle():
  GRAPH["t2t_jax.errors"].append(("t2t_jax.io_utils", 0, False))
  try:
    assert ["t2t_jax.errors", "t2t_jax.io_utils", "t2t_jax.errors"] in _cycles()
  finally:
    GRAPH["t2t_jax.errors"].pop()


def test_tasks_only_from_entry_points_and_inside_functions():
  """The TensorFlow-free core never imports tasks; the train entry and the studies do, lazily."""
  bad = []
  for module, imports in GRAPH.items():
    if not module.startswith("t2t_jax"):
      continue
    for target, line, top in imports:
      if target.split(".")[0] == "tasks":
        allowed = any(module == u or module.startswith(u + ".") for u in TASKS_USERS)
        if top or not allowed:
          bad.append(f"{_where(module, line)}: {module} imports {target}"
                     + (" at module level" if top and allowed else ""))
  assert bad == [], "\n".join(bad)


def test_core_imports_without_tensorflow():
  """Importing every t2t_jax module (the entry points too) loads neither TensorFlow nor tasks."""
  core = sorted(m for m in MODULES if m.startswith("t2t_jax"))
  code = ("import sys\n"
          f"for m in {core!r}:\n"
          "  __import__(m)\n"
          f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {TENSORFLOW!r})\n"
          "assert not bad, bad\n")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                        check=False, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_import_route_does_not_load_jax():
  """`t2t import` (the command line, which imports quickstart for its flags; data readers, prompt
  normalisation from export_runtime) starts without JAX."""
  code = ("import sys, t2t_jax.cli, t2t_jax.quickstart, t2t_jax.data.formats, t2t_jax.data.convert, "
          "t2t_jax.data.cpcd, t2t_jax.data.mpd, t2t_jax.data.prompts, t2t_jax.export_runtime; "
          "print(sorted(m for m in ('jax', 'flax', 'orbax') if m in sys.modules))")
  res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=ROOT))
  assert res.returncode == 0 and res.stdout.strip() == "[]", (res.stdout, res.stderr[-2000:])


def _within(name: str, prefix: str) -> bool:
  return name == prefix or name.startswith(prefix + ".")


def _lazy_imports() -> list[tuple[str, str, int]]:
  """(importing module, imported module, line) of every import of PACKAGES inside a function."""
  return [(module, target, line) for module, imports in sorted(GRAPH.items())
          for target, line, top in imports if not top]


def test_function_level_imports_are_listed():
  """Internal imports are at module level unless LAZY_IMPORTS gives the reason; no entry is stale."""
  lazy = _lazy_imports()
  bad = [f"{_where(module, line)}: {module} imports {target} inside a function (move it to the top, or add "
         f"the reason to LAZY_IMPORTS)" for module, target, line in lazy
         if not any(_within(module, m) and _within(target, t) for m, t in LAZY_IMPORTS)]
  assert bad == [], "\n".join(bad)
  stale = [e for e in LAZY_IMPORTS if not any(_within(m, e[0]) and _within(t, e[1]) for m, t, _ in lazy)]
  assert stale == [], f"LAZY_IMPORTS entries that match no import: {stale}"


def test_function_level_import_check_finds_a_planted_import():
  GRAPH["t2t_jax.studies.pipeline"].append(("t2t_jax.io_utils", 7, False))
  try:
    assert ("t2t_jax.studies.pipeline", "t2t_jax.io_utils", 7) in _lazy_imports()
    with pytest.raises(AssertionError, match=r"t2t_jax/studies/pipeline.py:7: t2t_jax.studies.pipeline imports "
                                             r"t2t_jax.io_utils inside a function"):
      test_function_level_imports_are_listed()
  finally:
    GRAPH["t2t_jax.studies.pipeline"].pop()
