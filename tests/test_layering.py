"""raylm's layering as a test (like Ray's own circular-import test): a lower layer never imports a
higher one, anywhere in a module (function-level imports included), and no two parts (packages or
top-level modules) import each other. Training takes typed hooks (``raylm.train.hooks``) instead of importing compression."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import raylm

# Lowest first. A module may import its own layer and those below it.
LAYERS = [
    {"errors", "atomic", "registry", "storage"},
    {"config"},
    {"runtime"},
    {"data", "models"},
    {"train"},
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
