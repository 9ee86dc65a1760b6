"""raylm's layering as a test (like Ray's own circular-import test): a lower layer never imports a
higher one, anywhere in a module (function-level imports included), no two parts (packages or
top-level modules) import each other, no file-level import circle, models never import data, the
console never imports the report, serve never imports compress, and validating a config imports no framework. Training takes
typed hooks (``raylm.train.hooks``) instead of importing compression."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import raylm

# Lowest first. A module may import its own layer and those below it.
LAYERS = [
    # meta: the versioned base of checkpoint/artifact metadata; records: typed stage records (pydantic only)
    {"errors", "atomic", "registry", "storage", "meta", "records"},
    {"config"},
    {"capacity"},  # what the cluster can hold: nodes up + what its autoscaler can add
    {"runtime", "hf_sources", "run_files"},  # below data and models; below the console and the report
    {"tracking"},  # MLflow runs and registry: called by train (rank 0's epochs), tune, pipeline, cli
    {"data", "models"},
    {"train"},
    {"artifacts"},  # the artifact format, its checks and runtimes: what compress writes and serve loads
    {"compress"},
    {"serve", "report"},
    {"console"},  # the progress bars and lines tune's callback draws with
    {"tune"},
    {"pipeline"},
    {"cli", "demo"},
]
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}
ROOT = Path(raylm.__file__).parent


def _imports() -> list[tuple[str, str, str]]:
    """(importing top-level name, imported top-level name, importing module) for every raylm import."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts == ("__init__",):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.startswith("raylm.") and name.split(".")[1] != parts[0]:
                    found.append((parts[0], name.split(".")[1], ".".join(parts)))
    return found


def test_every_part_of_raylm_has_a_layer():
    parts = {p.name.removesuffix(".py") for p in ROOT.iterdir() if (p.suffix == ".py" or p.is_dir())
             and not p.name.startswith(("_", "."))}
    assert parts <= set(LEVEL), f"give {sorted(parts - set(LEVEL))} a layer in this test"


def test_lower_layers_never_import_higher_ones():
    upward = [f"{module} imports raylm.{target}" for source, target, module in _imports()
              if LEVEL[target] > LEVEL[source]]
    assert not upward, "\n".join(upward)


def test_train_never_imports_compress():
    assert not [m for s, t, m in _imports() if s == "train" and t in ("compress", "tune", "serve", "pipeline")]


def test_no_two_parts_import_each_other():
    """Packages and top-level modules alike (``console.py`` once imported ``tune`` and ``tune`` it)."""
    edges = defaultdict(set)
    for source, target, _ in _imports():
        edges[source].add(target)
    cycles = sorted(f"{a} <-> {b}" for a in edges for b in edges[a] if a < b and a in edges.get(b, ()))
    assert not cycles, cycles


def test_serve_never_imports_compress():
    """Serving loads artifacts through ``raylm.artifacts`` (format, checks, runtimes): a serving node
    needs none of the compressor's code, and a change to a compression method cannot break loading."""
    assert not [m for s, t, m in _imports() if s == "serve" and t == "compress"]


def test_models_never_import_data():
    """Models build from the config alone (a Keras input shape is the data section's ``sample_shape``;
    tokenizer sources are ``raylm.hf_sources``): a model module must load where data/ is not wanted."""
    assert not [m for s, t, m in _imports() if s == "models" and t == "data"]


def test_console_never_imports_report():
    """The console draws; what it reads from a run directory is ``raylm.run_files``, below both."""
    assert not [m for s, t, m in _imports() if s == "console" and t == "report"]


# ---- file-level import circles -------------------------------------------------------------------
# The graph: one node per file (``raylm/data/__init__.py`` is ``data``), an edge for every import of a
# raylm module that the file holds, at module level or inside a function alike (a deferred import
# hides a circle from the interpreter, not from a reader), ``if TYPE_CHECKING:`` blocks included
# (as the layer tests above count them). ``from raylm.x import y`` is an edge to ``x/y.py`` when that
# file exists, else to ``x``. The package ``__init__`` files Python runs on the way to a submodule
# are not edges: they are not what the importing file names.

# Circles that were there when this test was written, each edge on one listed: issue #26 removed
# them all (the artifact format in its own layer; data/'s went with its floors, below). Never add one:
# a new import that closes a circle, or any edge of a new circle, fails below.
KNOWN_CIRCLE_EDGES_ISSUE_26: set[tuple[str, str]] = set()  # all removed (#26); never add one


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def file_import_graph() -> dict[str, set[str]]:
    """``{module: modules it imports}`` over raylm's files, names without the ``raylm.`` prefix."""
    files = {_module_name(path): path for path in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}

    def node(dotted: str) -> str | None:
        name = dotted.removeprefix("raylm").removeprefix(".")
        while name and name not in files:  # raylm.x.y.attribute -> the file that holds it
            name = name.rpartition(".")[0]
        return name if name in files else None

    for name, path in files.items():
        for statement in ast.walk(ast.parse(path.read_text())):
            if isinstance(statement, ast.Import):
                targets = [alias.name for alias in statement.names]
            elif isinstance(statement, ast.ImportFrom) and statement.level == 0 and statement.module:
                targets = [f"{statement.module}.{alias.name}" for alias in statement.names]
            else:
                continue
            for dotted in targets:
                target = node(dotted) if dotted == "raylm" or dotted.startswith("raylm.") else None
                if target is not None and target != name:
                    graph[name].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one file (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = lowest[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = lowest[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    lowest[node] = min(lowest[node], index[child])
                continue
            work.pop()
            if work:
                lowest[work[-1][0]] = min(lowest[work[-1][0]], lowest[node])
            if lowest[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def edges_on_circles(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    component = {member: i for i, members in enumerate(circles(graph)) for member in members}
    return {(a, b) for a, targets in graph.items() for b in targets if a in component and component[a] == component.get(b)}


def test_circle_finder_finds_a_circle_and_only_circles():
    """The oracle of the next test, on a graph whose answer is known."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e2"}, "e2": set()}
    assert circles(graph) == [{"a", "b", "c"}]
    assert edges_on_circles(graph) == {("a", "b"), ("b", "c"), ("c", "a")}


def test_no_new_file_level_import_circles():
    graph = file_import_graph()
    new = sorted(edges_on_circles(graph) - KNOWN_CIRCLE_EDGES_ISSUE_26)
    assert not new, "imports that close a file-level circle:\n" + "\n".join(f"  raylm.{a} imports raylm.{b}" for a, b in new)


# data/ is a one-way pipeline: sources (data.path resolved once) -> rules (acceptance checks as
# functions of values) -> modalities (the Modality classes and the decoders, ops and drawings they
# call) -> build (Ray datasets, the check's pass, decoded splits, the augmentation stage). A file
# imports its own floor and those below (docs/contracts.md, "data/").
DATA_FLOORS = [
    {"data.files", "data.sources", "data.demo", "data.synth", "data.schedule"},  # schedule: a learned schedule.json read back
    {"data.rules", "data.limits"},
    {"data.modality", "data.images", "data.audio", "data.text", "data.augment_ops", "data.preview_tiles"},
    {"data", "data.check", "data.decoded", "data.materialize", "data.shards", "data.augment", "data.augment_preview",
     "data.arrays", "data.pacing"},
]
DATA_FLOOR = {name: floor for floor, names in enumerate(DATA_FLOORS) for name in names}


def test_data_files_import_their_floor_and_those_below():
    graph = file_import_graph()
    unplaced = sorted(name for name in graph if (name == "data" or name.startswith("data.")) and name not in DATA_FLOOR)
    assert not unplaced, f"give {unplaced} a floor in DATA_FLOORS"
    upward = sorted(f"raylm.{a} imports raylm.{b}" for a in DATA_FLOOR for b in graph[a]
                    if b in DATA_FLOOR and DATA_FLOOR[b] > DATA_FLOOR[a])
    assert not upward, "\n".join(upward)
    assert not [c for c in circles(graph) if any(m == "data" or m.startswith("data.") for m in c)]


# ---- config time -----------------------------------------------------------------------------------
FRAMEWORKS = ("torch", "tensorflow", "tf_keras", "keras", "ray", "transformers", "onnxruntime", "jax")


def test_validating_a_config_imports_no_framework():
    """``load_config`` (a sweep validates one per trial, the CLI one per command) reads the registries'
    declarations, which are plain data: no model or compression module, so no framework, gets imported.
    A fresh interpreter, so what this test process already imported does not count."""
    configs = sorted(str(p) for p in (ROOT.parent / "jobs" / "configs").glob("*.yaml"))
    probe = (
        "import sys\n"
        "from raylm.config import load_config\n"
        f"for path in {configs!r}:\n"
        "    load_config(path)\n"
        "load_config(None, ['task.modality=image', 'model.name=seed_cnn', 'model.backend=keras',\n"
        "                   'compress.prune.method=magnitude', 'compress.finetune_epochs=1',\n"
        "                   'compress.quantize.mode=static', 'compress.export=tflite'])\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r}}}"
        " | {m for m in sys.modules if m.startswith(('raylm.models', 'raylm.compress', 'raylm.data'))}))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          cwd=ROOT.parent)
    assert done.returncode == 0, done.stderr
    assert configs and done.stdout.strip() == "[]", done.stdout
