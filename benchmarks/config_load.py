"""Validating a config in a fresh interpreter: wall and CPU seconds, modules loaded, frameworks loaded.

``load_config`` reads the registries' declarations (plain data), so it should cost little more than
its floor: a fresh interpreter importing pydantic and yaml, measured in the same run (``ratio_vs_floor``).
``--compare DIR`` times another checkout the same way, interleaved (e.g. ``git archive`` of an older
commit), so a before/after ratio comes from one run under one load.

Prints ONE JSON line.

    python benchmarks/config_load.py [--runs 9] [--config jobs/configs/image.yaml] [--compare DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

FRAMEWORKS = ("torch", "tensorflow", "tf_keras", "keras", "ray", "transformers", "onnxruntime", "numpy")


def _probe(config: str) -> str:
    return (f"import sys; from raylm.config import load_config; load_config({config!r}); "
            f"print(len(sys.modules), sorted({{m.split('.')[0] for m in sys.modules}} & set({FRAMEWORKS!r})))")


def _run(code: str, tree: Path) -> tuple[float, float]:
    """(wall, user+sys CPU) seconds of one fresh interpreter; CPU is the steadier figure on a busy machine."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tree, env=dict(os.environ, PYTHONPATH=str(tree)))
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--config", default="jobs/configs/image.yaml")
    parser.add_argument("--compare", type=Path, help="another checkout to time the same way")
    args = parser.parse_args()
    trees = {"floor": Path.cwd(), "this": Path.cwd()} | ({"compare": args.compare.resolve()} if args.compare else {})
    codes = {name: "import pydantic, yaml" if name == "floor" else f"from raylm.config import load_config; "
             f"load_config({args.config!r})" for name in trees}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    for _ in range(args.runs):  # interleaved, so a change in load hits every variant alike
        for name, tree in trees.items():
            times[name].append(_run(codes[name], tree))
    out: dict = {"benchmark": "config_load", "config": args.config, "runs": args.runs,
                 "load_avg_1m": round(os.getloadavg()[0], 2)}
    for name, tree in trees.items():
        out[name] = {"wall_median_s": round(statistics.median(w for w, _ in times[name]), 3),
                     "cpu_median_s": round(statistics.median(c for _, c in times[name]), 3)}
        if name != "floor":
            probe = subprocess.run([sys.executable, "-c", _probe(args.config)], check=True, cwd=tree,
                                   env=dict(os.environ, PYTHONPATH=str(tree)), capture_output=True, text=True)
            modules, frameworks = probe.stdout.split(" ", 1)
            out[name] |= {"modules": int(modules), "frameworks": json.loads(frameworks.replace("'", '"'))}
    for name in [n for n in trees if n != "floor"]:
        out[f"{name}_cpu_ratio_vs_floor"] = round(out[name]["cpu_median_s"] / out["floor"]["cpu_median_s"], 3)
    if args.compare:
        out["this_cpu_ratio_vs_compare"] = round(out["this"]["cpu_median_s"] / out["compare"]["cpu_median_s"], 3)
        out["this_wall_ratio_vs_compare"] = round(out["this"]["wall_median_s"] / out["compare"]["wall_median_s"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
