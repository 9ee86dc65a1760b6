"""benchmarks/mutation.sh's helper: prepares the scratch copy mutmut runs in, and sums the results.

Never run on the checkout itself (mutation.sh runs it in its scratch copy):

  python3 mutation_prepare.py skip MODULE FUNC ...   # FUNC not mutated (pragma on its def line)
  python3 mutation_prepare.py lift MODULE ...        # decorated functions made mutable (below)
  python3 mutation_prepare.py score RESULTS MODULE ...  # the JSON line from the results files

Why ``lift``: mutmut 3 never mutates a decorated function (other than @staticmethod/@classmethod:
it cannot put its trampoline under an arbitrary decorator), and pydantic's validators are decorated
(``@field_validator`` + ``@classmethod``, ``@model_validator``), as are properties and
``@contextmanager`` functions. ``lift`` moves each such body into a plain module-level function
``_lifted__<Class>__<name>`` and leaves the decorated one calling it with the same arguments:
behaviour unchanged, and mutmut mutates the body.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

PRAGMA = "  # pragma: no mutate block"


def _header_end(lines: list[str], node: ast.FunctionDef) -> int:
    """0-based index of the line holding the ``:`` that ends ``node``'s signature."""
    index = node.body[0].lineno - 2
    while index > node.lineno - 1 and (not lines[index].strip() or lines[index].strip().startswith("#")):
        index -= 1
    return index


def _functions(tree: ast.Module):
    """(class name or None, function node) for module-level functions and methods of module-level classes."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield None, node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield node.name, item


def skip(path: Path, names: list[str]) -> None:
    source = path.read_text()
    lines = source.splitlines()
    found = set()
    for owner, node in _functions(ast.parse(source)):
        qualified = f"{owner}.{node.name}" if owner else node.name
        if node.name in names or qualified in names:
            end = _header_end(lines, node)
            lines[end] = lines[end].rstrip() + PRAGMA
            found |= {node.name, qualified}
    missing = set(names) - found
    if missing:
        sys.exit(f"mutation_prepare skip: no function {sorted(missing)} in {path}")
    path.write_text("\n".join(lines) + "\n")


def _mutmut_handles(node: ast.FunctionDef) -> bool:
    decorators = node.decorator_list
    return not decorators or (len(decorators) == 1 and isinstance(decorators[0], ast.Name)
                              and decorators[0].id in ("staticmethod", "classmethod"))


def _call_and_params(args: ast.arguments) -> tuple[str, str]:
    positional = [a.arg for a in args.posonlyargs + args.args]
    call = list(positional)
    params = list(positional)
    if args.vararg:
        call.append(f"*{args.vararg.arg}")
        params.append(f"*{args.vararg.arg}")
    elif args.kwonlyargs:
        params.append("*")
    for a in args.kwonlyargs:
        call.append(f"{a.arg}={a.arg}")
        params.append(a.arg)
    if args.kwarg:
        call.append(f"**{args.kwarg.arg}")
        params.append(f"**{args.kwarg.arg}")
    return ", ".join(call), ", ".join(params)


def lift(path: Path) -> None:
    source = path.read_text()
    lines = source.splitlines()
    # Edits applied bottom-up: (line, kind, ...). The lifted functions go right above the class (or
    # function) they come from: a class body may build a default instance at import time.
    edits = []
    for owner, node in _functions(tree := ast.parse(source)):
        if _mutmut_handles(node) or "pragma: no mutate" in lines[_header_end(lines, node)]:
            continue
        first, last = node.body[0].lineno - 1, node.end_lineno - 1
        if first <= _header_end(lines, node):  # a one-line body on the def line: leave it
            continue
        indent = len(lines[first]) - len(lines[first].lstrip())
        name = f"_lifted__{owner}__{node.name}" if owner else f"_lifted__{node.name}"
        call, params = _call_and_params(node.args)
        top = next(n for n in tree.body if n.lineno <= node.lineno <= n.end_lineno)
        above = min([top.lineno] + [d.lineno for d in getattr(top, "decorator_list", [])]) - 1
        body = [line[indent - 4:] if line[:indent - 4].strip() == "" else line for line in lines[first:last + 1]]
        edits.append((first, last, [" " * indent + f"return {name}({call})"]))
        edits.append((above, above - 1, [f"def {name}({params}):", *body, "", ""]))
    for first, last, replacement in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        lines[first:last + 1] = replacement
    path.write_text("\n".join(lines) + "\n")


def score(results_dir: Path, modules: list[str], start: int) -> None:
    """Sums ``<results_dir>/*.txt`` (``mutmut results --all true`` of each module, ``# module`` first line)
    and ``*.rerun`` (each timeout rerun alone: ``name verdict``) into the printed JSON line."""
    per: dict[str, Counter] = defaultdict(Counter)
    survivors, timeouts = [], {}
    for rerun in results_dir.glob("*.rerun"):
        for line in rerun.read_text().splitlines():
            name, verdict = line.split()
            timeouts[name] = verdict
    for file in sorted(results_dir.glob("*.txt")):
        lines = file.read_text().splitlines()
        for line in lines[1:]:
            m = re.match(r"\s*([\w.ǁ]+__mutmut_\d+): (.+)$", line.strip())
            if not m:
                continue
            name, status = m.group(1), m.group(2).strip()
            module = re.match(r"(.*?)\.xǁ|(.*?)\.x_", name)
            module = (module.group(1) or module.group(2)).replace(".", "/") + ".py"
            per[module][status] += 1
            if status == "survived":
                survivors.append(name)
            if status == "timeout":
                per[module]["timeout_" + timeouts.get(name, "not_rerun")] += 1
    total = Counter()
    for counts in per.values():
        total.update(counts)
    main = ("killed", "survived", "timeout", "no tests")
    everything = sum(v for k, v in total.items() if not k.startswith("timeout_"))
    killed, timeout = total["killed"], total["timeout"]
    hangs = total["timeout_hangs"]  # rerun alone with a long deadline: still no verdict (an endless loop)
    row = {
        "benchmark": "mutation",
        "modules": modules,
        # Honest score: a mutant counts only when a test failed on it.
        "score_killed": round(killed / max(everything, 1), 4),
        # mutmut's convention: a mutant that stops the tests finishing is detected too.
        "score_killed_or_timeout": round((killed + timeout) / max(everything, 1), 4),
        # Timeouts rerun alone: killed when a test failed given time, hangs when it never finished.
        "score_after_rerun": round((killed + total["timeout_killed"] + hangs) / max(everything, 1), 4),
        "mutants": everything, "killed": killed, "survived": total["survived"], "timeout": timeout,
        "timeout_rerun": {k[len("timeout_"):]: v for k, v in total.items() if k.startswith("timeout_")},
        "no_tests": total["no tests"],
        "other": {k: v for k, v in total.items() if k not in main and not k.startswith("timeout_")},
        "per_module": {k: dict(v) for k, v in per.items()},
        "survivors": survivors,
        "seconds": int(time.time()) - start, "load_average": round(os.getloadavg()[0], 1),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(f"mutation score {row['score_killed']:.1%} killed / all ({row['score_killed_or_timeout']:.1%} with timeouts,"
          f" {row['score_after_rerun']:.1%} after rerunning timeouts): {everything} mutants, killed {killed},"
          f" survived {total['survived']}, timeout {timeout} {row['timeout_rerun']}, no tests {total['no tests']}"
          f" ({row['seconds']} s, load {row['load_average']})")
    for module, counts in per.items():
        print(f"  {module}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for name in survivors:
        print("survived:", name)
    print(json.dumps(row))


if __name__ == "__main__":
    if not sys.argv[1:] or {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__.strip())
        sys.exit(0 if sys.argv[1:] else 2)
    verb, *rest = sys.argv[1:]
    if verb == "skip":
        skip(Path(rest[0]), rest[1:])
    elif verb == "lift":
        for name in rest:
            lift(Path(name))
    elif verb == "score":
        score(Path(rest[0]), rest[2:], int(rest[1]))
    else:
        sys.exit(__doc__)
