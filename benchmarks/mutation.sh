#!/usr/bin/env bash
# Mutation score of raylm's decision code (issue 27 item 3): mutmut mutates the modules below in a
# scratch copy of this checkout and runs, for each mutant, the unit tests that reach the mutated
# function (tests/unit: no Ray, seconds). A mutant no test fails on "survived": either a test is
# missing or the mutant is equivalent (docs/testing.md lists the survivors and which is which).
#
#   benchmarks/mutation.sh                 # all listed modules, score on stdout and in the JSON line
#   benchmarks/mutation.sh raylm/atomic.py # one module
#
# Prints the survivors and one JSON line (as every benchmark here): killed / survived / timeout /
# no_tests per module and the score killed / (killed + survived + timeout), with the load average.
# Nothing in the checkout changes (mutmut works in a scratch copy, removed at the end).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODULES=("$@")
if [ ${#MODULES[@]} -eq 0 ]; then
  MODULES=(raylm/compress/gate.py raylm/data/files.py raylm/data/check.py raylm/train/loop.py
           raylm/tune/results.py raylm/serve/preprocess.py raylm/data/limits.py raylm/atomic.py
           raylm/config/*.py)
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/raylm-mutation.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# The checkout as it is now (tracked and untracked, not ignored), without .git or build outputs.
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$WORK" 2>/dev/null || true)
cd "$WORK"
# mutmut reads [tool.mutmut] from pyproject.toml before setup.cfg: it goes into the scratch copy only.
{
  echo ""
  echo "[tool.mutmut]"
  echo "source_paths = [\"raylm/\"]"
  printf 'only_mutate = ['; printf '"%s", ' "${MODULES[@]}"; echo ']'
  # The unit tests of these modules (tests/unit/cluster and storage test other things and need more files).
  # MUTATION_TESTS (space-separated paths) narrows it, e.g. to the fast files of the modules asked for.
  TESTS=${MUTATION_TESTS:-tests/unit/test_atomic.py tests/unit/test_errors.py tests/unit/test_oracles.py tests/unit/data tests/unit/train tests/unit/compress/test_gate.py tests/unit/compress/test_gate_ratios.py tests/unit/config tests/unit/tune tests/unit/serve}
  printf 'pytest_add_cli_args_test_selection = ['; printf '"%s", ' $TESTS; echo ']'
  echo 'also_copy = ["jobs/"]'
  echo 'pytest_add_cli_args = ["-p", "no:cacheprovider", "-p", "no:randomly", "-q", "-x", "-o", "addopts=", "-m", "not slow and not gpu and not faults"]'
  echo 'timeout_multiplier = 5.0'
} >> pyproject.toml
start=$(date +%s)
env -u PYTHONPATH nice -n 19 mutmut run --max-children "${MUTMUT_CHILDREN:-2}" >mutmut.log 2>&1 || { tail -c 3000 mutmut.log; exit 1; }
mutmut results --all true > results.txt 2>&1 || mutmut results > results.txt 2>&1 || true
python3 - "$ROOT" "$start" "${MODULES[@]}" <<'PY'
import json, os, re, sys, time
from collections import Counter, defaultdict
root, start, modules = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
per = defaultdict(Counter)
survivors = []
for line in open("results.txt"):
    m = re.match(r"\s*([\w.]+__mutmut_\d+): (.+)$", line.strip())
    if not m:
        continue
    name, status = m.group(1), m.group(2).strip()
    module = name.split(".x_")[0].split(".xǁ")[0]
    per[module][status] += 1
    if status == "survived":
        survivors.append(name)
tot = Counter()
for c in per.values():
    tot.update(c)
killed, survived, timeout = tot["killed"], tot["survived"], tot["timeout"]
score = killed / max(killed + survived + timeout, 1)
load = os.getloadavg()[0]
row = {"benchmark": "mutation", "modules": modules, "score": round(score, 4), "killed": killed,
       "survived": survived, "timeout": timeout, "no_tests": tot["no tests"], "other": {k: v for k, v in tot.items()
       if k not in ("killed", "survived", "timeout", "no tests")}, "per_module": {k: dict(v) for k, v in per.items()},
       "survivors": survivors, "seconds": int(time.time()) - start, "load_average": round(load, 1),
       "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
print(f"mutation score {score:.1%}: killed {killed}, survived {survived}, timeout {timeout}, no tests {tot['no tests']}"
      f" ({row['seconds']} s, load {load:.1f})")
for name in survivors:
    print("survived:", name)
print(json.dumps(row))
PY
