"""Break features on purpose, one at a time, in a scratch copy of this checkout, and record which
default tests fail (issue 27, goal 2). The checkout itself is never edited.

    python3 benchmarks/broken_features.py            # every break below
    python3 benchmarks/broken_features.py split gate # some of them

Prints one line per break (the tests that failed, or "NOT CAUGHT") and a JSON line at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name: (file, old text, new text, the default tests that should catch it)
BREAKS = {
    "split-not-stable": ("raylm/data/files.py", "return (zlib.crc32(data) % 10_000) < fraction * 10_000",
                         "import random; return random.random() < fraction",
                         ["tests/unit/data/test_files.py", "tests/unit/test_oracles.py"]),
    "gate-always-passes": ("raylm/compress/gate.py", "    smaller = size_ratio <= 1 / min_size_gain\n",
                           "    return {'passed': True, 'reason': 'always'}\n", ["tests/unit/compress/test_gate.py"]),
    "resume-from-epoch-0": ("raylm/train/loop.py", "    return max(found)[1] if found else None",
                            "    return None", ["tests/unit/train/test_loop.py"]),
    "lr-schedule-ignored": ("raylm/train/loop.py", "    if tc.lr_schedule == \"cosine\":", "    if False:",
                            ["tests/unit/train/test_loop.py", "tests/unit/config/test_config.py"]),
    "checkpoint-only-at-the-end": ("raylm/train/loop.py",
                                   "return epoch % tc.checkpoint_every == 0 or epoch == tc.epochs or accuracy > best_before",
                                   "return epoch == tc.epochs", ["tests/unit/train/test_loop.py"]),
    "front-is-one-point": ("raylm/tune/results.py",
                           "    return [r for r in done if not any(_dominates(o, r, objectives) for o in done if o is not r)]",
                           "    return done[:1]", ["tests/unit/tune/test_results.py", "tests/unit/compress/test_gate.py"]),
    "write-not-atomic": ("raylm/atomic.py", "        os.replace(tmp, path)\n",
                         "        path.write_bytes(data); Path(tmp).unlink()\n", ["tests/unit/test_atomic.py"]),
    "format-by-name": ("raylm/data/limits.py", "    raise DecodeError(f\"not an {kind} file of an accepted format",
                       "    return allowed[0]\n    raise DecodeError(f\"not an {kind} file of an accepted format",
                       ["tests/unit/data/test_limits.py", "tests/unit/serve/test_preprocess.py"]),
    "text-length-unchecked": ("raylm/serve/preprocess.py", "if isinstance(out[-1], str) and len(out[-1]) > self.max_text_chars:",
                              "if False:", ["tests/unit/serve/test_preprocess.py"]),
    "int8-export-skipped": ("raylm/compress/pipeline.py",
                            "        int8.apply(fp32, out, recipe.quantize, _calibration(cfg, train, rows.inputs) if int8.calibrated else [])",
                            "        shutil.copy(fp32, out)",
                            ["tests/integration/compress/test_compress_pipeline.py::test_int8_model_runs_and_agrees_with_float"]),
    "no-gradient-sync": ("raylm/train/loop.py", "    model = ray.train.torch.prepare_model(model)",
                         "    model = model  # never wrapped in DDP: no gradient sync",
                         ["tests/integration/train/test_train.py::test_each_modality_trains_with_two_workers_and_beats_chance[image-overrides0]"]),
}


def scratch_copy() -> Path:
    work = Path(tempfile.mkdtemp(prefix="raylm-breaks-"))
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / os.fsdecode(name)
        if src.is_file():
            (work / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, work / os.fsdecode(name))
    return work


def main(names: list[str]) -> None:
    work = scratch_copy()
    results = {}
    try:
        for name in names or list(BREAKS):
            path, old, new, tests = BREAKS[name]
            target = work / path
            original = target.read_text()
            assert original.count(old) == 1, f"{name}: the text to break is not in {path} once"
            target.write_text(original.replace(old, new))
            started = time.time()
            env = dict(os.environ, PYTHONPATH=str(work))
            run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "--timeout=900",
                                  *tests], cwd=work, env=env, capture_output=True, text=True)
            target.write_text(original)  # reverted before the next break
            failed = sorted(set(re.findall(r"^(?:FAILED|ERROR) (\S+)", run.stdout, re.M)))
            results[name] = {"caught": run.returncode != 0 and bool(failed), "failed": failed,
                             "seconds": round(time.time() - started)}
            print(f"{name}: {'caught by ' + ', '.join(failed) if failed else 'NOT CAUGHT'} "
                  f"({results[name]['seconds']} s)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"benchmark": "broken_features", "caught": sum(r["caught"] for r in results.values()),
                      "breaks": len(results), "results": results, "load_average": round(os.getloadavg()[0], 1)}))


if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__.strip() + "\n\nbreaks: " + ", ".join(BREAKS))
        sys.exit(0)
    unknown = [name for name in sys.argv[1:] if name not in BREAKS]
    if unknown:
        sys.exit(f"unknown break(s) {unknown}; one of: {', '.join(BREAKS)}")
    main(sys.argv[1:])
