"""Ray's lines on each verb's console: every verb run once on the image demo as a user runs it (its own
embedded Ray, output to the terminal), and the lines of its stdout + stderr that are in one of Ray's
log formats counted. One JSON line on stdout: per verb the exit status, seconds, console lines, Ray's
lines (the first few quoted) and where the verb said Ray's logs went.

    python benchmarks/console_lines.py                       # data check, train, compress, serve, tune, pipeline
    python benchmarks/console_lines.py --verbs data-check,train,compress,serve
    python benchmarks/console_lines.py --verbs serve --artifact <run>/compress/int8-dynamic

`serve` is stopped with a real SIGTERM while 8 clients post (requests in flight, failed ones, exit
status, seconds from the signal to the exit, a Ray stack dump or not); `pipeline` runs the tiny sweep -> retrain -> compress -> serve and exits after its smoke
request (pipeline.keep_serving=false). Sequential, one Ray at a time; bounded by --timeout per verb.
"""

import argparse
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Ray's formats: its Python loggers ("2026-12-05 15:43:00,280\tINFO streaming_executor.py:371 --",
# "INFO 2026-12-05 15:39:33,892 serve 19792 --"), lines forwarded from workers ("(TrainController pid=12)"),
# the raylet's ("(raylet)"), Tune's status boxes, the token-auth notice and the C++ signal handler's dump.
RAY_FORMATS = re.compile(
    r"\b(DEBUG|INFO|WARNING|ERROR)\b.{0,40}\b\w+\.py:\d+ --|^(DEBUG|INFO|WARNING|ERROR) \d{4}-\d\d-\d\d .* -- |"
    r"\(\w+ pid=\d+|\(raylet\)|Trial status|Token authentication is enabled|Progress bars disabled|"
    r"SIGTERM received|logging\.cc|Started a local Ray instance|ServeController|ProxyActor|╭|│")
TINY = ["train.epochs=1"]
# Two 1-epoch trials of the YAML's own space, one after the other: the tune and pipeline verbs end to
# end, not a search. (An override of tune.space.train.lr would merge with the YAML's loguniform.)
SWEEP = ["tune.num_samples=2", "tune.scheduler=fifo", "tune.max_concurrent_trials=1", "tune.export=none",
         "compress.latency_runs=3"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _count(name: str, proc_out: str, rc: int, seconds: float, extra: dict | None = None) -> dict:
    lines = [line for line in proc_out.splitlines() if line.strip()]
    ray_lines = [line for line in lines if RAY_FORMATS.search(line)]
    named = next((line for line in lines if "Ray's logs" in line), None)
    out = {"rc": rc, "seconds": round(seconds, 1), "console_lines": len(lines), "ray_lines": len(ray_lines),
           "ray_lines_first": [line[:200] for line in ray_lines[:5]], "logs_named": named[:200] if named else None}
    return out | (extra or {})


def _last_json(out: str) -> dict:
    """The verb's answer: the last JSON object its console printed at the start of a line (it may nest)."""
    decoder = json.JSONDecoder()
    for start in reversed([i for i, line in enumerate(out.splitlines(keepends=True)) if line.startswith("{")]):
        text = "".join(out.splitlines(keepends=True)[start:])
        try:
            return decoder.raw_decode(text)[0]
        except ValueError:
            continue
    raise ValueError("no JSON answer on the console")


def _run(argv: list[str], env: dict, timeout: float) -> tuple[int, str, float]:
    t0 = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "raylm.cli", *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=timeout)
    return run.returncode, run.stdout, time.monotonic() - t0


def _serve(artifact: str, env: dict, timeout: float, clients: int = 8) -> dict:
    """``raylm serve`` on its own embedded Ray; once it answers, ``clients`` threads post without pause and,
    after 40 answers, a real SIGTERM: every request sent before it must be answered 200, the process exit 0."""
    import threading

    port = _free_port()
    modality = json.loads((Path(artifact) / "artifact.json").read_text())["task"]["modality"]
    body = json.dumps({"text": ["the match was a storm of goals"]} if modality == "text" else {"image": [_png_b64()]}).encode()
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "raylm.cli", "serve", "--artifact", artifact, f"serve.port={port}",
                             "serve.max_replicas=1", "serve.graceful_shutdown_s=10"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def post() -> int:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=body,
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status

    results: list[tuple[float, float, object]] = []  # (sent, answered, status or error)
    stop = threading.Event()

    def client() -> None:
        # Keep-alive (one http.client connection reused, a new one after a close), posting until the process is
        # gone: integrated clients reuse their connections, and a drain must end those too.
        connection = None
        while not stop.is_set():
            sent = time.monotonic()
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                connection.request("POST", "/predict", body=body, headers={"content-type": "application/json"})
                answer = connection.getresponse()
                answer.read()
                outcome: object = answer.status
                if answer.getheader("connection", "").lower() == "close":
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as err:
                outcome, connection = type(err).__name__, None
                time.sleep(0.05)
            results.append((sent, time.monotonic(), outcome))

    exited_s = at = None
    try:
        deadline = time.monotonic() + timeout
        up = False
        while not up and time.monotonic() < deadline and proc.poll() is None:
            try:
                up = post() == 200
            except OSError:
                time.sleep(1)
        threads = [threading.Thread(target=client) for _ in range(clients)]
        if up:
            for thread in threads:
                thread.start()
            while len(results) < 40 and time.monotonic() < deadline:
                time.sleep(0.05)
        at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
        exited_s = time.monotonic() - at
        stop.set()
        for thread in threads:
            if thread.is_alive():
                thread.join(90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            output = proc.communicate()[0]
    before = [outcome for sent, _, outcome in results if at is not None and sent < at]
    in_flight = [outcome for sent, answered, outcome in results if at is not None and sent < at < answered]
    return _count("serve", output, proc.returncode, time.monotonic() - t0, {
        "sent_before_sigterm": len(before), "in_flight_at_sigterm": len(in_flight),
        "failed_before_sigterm": sum(outcome != 200 for outcome in before),
        # sent after the signal on kept connections: answered while the door was open, else refused or closed;
        # an HTTP error there (the removed route's 404) would be a defect
        "after_sigterm": dict(Counter(str(outcome) for sent, _, outcome in results if at is not None and sent >= at)),
        "seconds_from_sigterm_to_exit": round(exited_s, 1) if exited_s is not None else None,
        "graceful_shutdown_s": 10, "stack_dump": "SIGTERM received" in output or "logging.cc" in output,
        "last_line": output.strip().splitlines()[-1][:240] if output.strip() else None})


def _png_b64() -> str:
    import base64
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verbs", default="data-check,train,compress,serve,tune,pipeline")
    parser.add_argument("--timeout", type=float, default=900, help="per verb, seconds")
    parser.add_argument("--artifact", help="serve this artifact (text or image) instead of the one compress writes")
    args = parser.parse_args()
    storage = tempfile.mkdtemp(prefix="raylm-consoles-")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT)
    env.pop("TERM", None)
    config = ["--config", "jobs/configs/image.yaml"]
    common = [f"train.storage_path={storage}", *TINY, "train.num_workers=1"]
    results: dict = {"load_avg_start": round(os.getloadavg()[0], 1)}
    checkpoint, artifact = None, args.artifact
    for verb in args.verbs.split(","):
        print(verb, "...", file=sys.stderr, flush=True)
        if verb == "data-check":
            # The check is for a user's own folder (the demo name alone is refused): the demo's, as a user's.
            from raylm.config import load_config
            from raylm.data.demo import digits

            folder = digits(load_config(ROOT / config[1], []))
            rc, out, s = _run(["data", "check", *config, f"data.path={folder}"], env, args.timeout)
        elif verb == "train":
            rc, out, s = _run(["train", *config, *common, "train.name=consoles"], env, args.timeout)
            if rc == 0:
                checkpoint = _last_json(out)["best_checkpoint"]
        elif verb == "compress":
            if checkpoint is None:
                results[verb] = {"skipped": "no checkpoint (train did not run or failed)"}
                continue
            rc, out, s = _run(["compress", "--checkpoint", checkpoint, "compress.quantize.mode=dynamic",
                               "compress.latency_runs=3"], env, args.timeout)
            if rc == 0:
                artifact = _last_json(out)["artifact"]
        elif verb == "serve":
            if artifact is None:
                results[verb] = {"skipped": "no artifact (compress did not run or failed)"}
                continue
            results[verb] = _serve(artifact, env, args.timeout)
            print(verb, results[verb], file=sys.stderr, flush=True)
            continue
        elif verb == "tune":
            rc, out, s = _run(["tune", "--config", "jobs/configs/image_tune.yaml", f"train.storage_path={storage}",
                               *TINY, *SWEEP, "train.num_workers=1", "train.name=consoles-tune"],
                              env, args.timeout)
        elif verb == "pipeline":
            rc, out, s = _run(["pipeline", "--config", "jobs/configs/image_tune.yaml", f"train.storage_path={storage}",
                               *TINY, *SWEEP, "train.num_workers=1", "pipeline.retrain_epochs=1", f"serve.port={_free_port()}",
                               "pipeline.keep_serving=false", "train.name=consoles-pipeline"], env, args.timeout)
        else:
            raise SystemExit(f"unknown verb {verb!r}")
        results[verb] = _count(verb, out, rc, s)
        if rc != 0:
            results[verb]["tail"] = out[-1500:]
        print(verb, {k: v for k, v in results[verb].items() if k != "tail"}, file=sys.stderr, flush=True)
    results["load_avg_end"] = round(os.getloadavg()[0], 1)
    results["storage"] = storage
    print(json.dumps(results))


if __name__ == "__main__":
    main()
