"""A larger schemathesis fuzz run against each served modality's ``/openapi.json`` (issue 14's goal:
no 5xx, and how many cases ran). The default suite fuzzes ``/predict`` with 25 examples per app
(tests/test_serve.py); this run fuzzes every operation of the document (``/predict``, ``/models``,
``/healthz``, the Open Inference Protocol routes) with ``--max-examples`` per operation, in
schemathesis' examples, coverage and fuzzing phases, positive and negative data.

    python benchmarks/serve_fuzz.py [--max-examples 200] [--workdir /tmp/raylm-serve-hostile]

The served artifacts are the untrained tiny models of benchmarks/serve_hostile.py (the same
``--workdir`` reuses them). Every request schemathesis sent is counted from its HAR record, by
status. Prints ONE JSON line (progress on stderr).
"""

import argparse
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_hostile import log, serve_each_modality  # noqa: E402

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def fuzz(url: str, app: str, max_examples: int, report_dir: Path, headers: list[str]) -> dict:
    har = report_dir / f"{app}.har"
    command = [shutil.which("schemathesis") or "schemathesis", "run", f"{url}/{app}/openapi.json", "--url", f"{url}/{app}",
               "--max-examples", str(max_examples), "--checks", CHECKS, "--seed", "14", "--workers", "1",
               "--continue-on-failure", "--request-timeout", "120", "--no-color",
               "--report", "har", "--report-har-path", str(har), "--report-dir", str(report_dir)]
    for header in headers:
        command += ["--header", header]
    run = subprocess.run(command, capture_output=True, text=True, timeout=3000, cwd=report_dir)
    statuses = Counter(entry["response"]["status"] for entry in json.loads(har.read_text())["log"]["entries"])
    log(app, "exit", run.returncode, run.stdout[-6000 if run.returncode else -1500:])  # schemathesis' own summary
    return {"exit_code": run.returncode, "requests": sum(statuses.values()),
            "status": {str(k): v for k, v in sorted(statuses.items())},
            "5xx": sum(v for k, v in statuses.items() if k >= 500)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-examples", type=int, default=200, help="test cases per API operation and phase")
    parser.add_argument("--workdir", default="/tmp/raylm-serve-hostile")
    args = parser.parse_args()

    from ray import serve

    url = serve_each_modality(Path(args.workdir), "fuzz-")
    report_dir = Path(args.workdir) / "fuzz"
    report_dir.mkdir(parents=True, exist_ok=True)
    apps = {m: fuzz(url, m, args.max_examples, report_dir, ["x-api-key: bench"] if m == "audio" else [])
            for m in ("image", "audio", "text")}
    serve.shutdown()
    print(json.dumps({
        "max_examples_per_operation": args.max_examples, "apps": apps,
        "requests": sum(a["requests"] for a in apps.values()), "5xx": sum(a["5xx"] for a in apps.values()),
        "goal_met": all(a["5xx"] == 0 and a["exit_code"] == 0 for a in apps.values()),
    }))


if __name__ == "__main__":
    main()
