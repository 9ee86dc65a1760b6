"""Peak memory of serving replicas under the hostile request corpus (tests/helpers/hostile.py):
decompression bombs, 1 Hz / 9-channel / 2-minute audio, deep nesting, huge arrays, NaN, wrong
types, for the image, audio and text apps. Each replica's resident memory is sampled every 5 ms
while the corpus is sent (sequentially, then 8 at a time); the baseline is the same number of
valid requests to the same replica in the same run. Prints ONE JSON line (progress on stderr).

    python benchmarks/serve_hostile.py [--rounds 5] [--workdir /tmp/raylm-serve-hostile]

Goal (issue 14): a replica's peak grows by at most 200 MB over its idle size, and no 5xx.
"""

import argparse
import json
import os
import socket
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOAL_MB = 200
KEY_ENV = "RAYLM_BENCH_SERVE_KEY"
APP_PREFIX = "hostile-bench-"


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loads(artifact: Path) -> bool:
    """An artifact left by an earlier run loads with this code (one of an older raylm may not)."""
    from raylm.artifacts import ArtifactError, load_artifact

    try:
        load_artifact(artifact)
        return True
    except ArtifactError as err:
        log(f"rebuilding {artifact}: {err}")
        return False


def build_artifacts(workdir: Path) -> dict[str, str]:
    """Untrained tiny models of each modality, compressed to real artifacts (memory does not need training)."""
    import torch

    from raylm.compress import compress
    from raylm.models import build_model
    from raylm.train.checkpoint import save_checkpoint_atomic
    from tests.conftest import _easy_audio, _easy_images, _easy_text
    from tests.helpers.configs import tiny_config_in

    data = workdir / "data"
    if not data.exists():
        data.mkdir(parents=True)
        _easy_images(data / "images"), _easy_audio(data / "audio"), _easy_text(data / "text.csv")
    roots = {"image": data / "images", "audio": data / "audio", "text": data / "text.csv"}
    artifacts = {}
    for modality in ("image", "audio", "text"):
        cfg = tiny_config_in(workdir, roots, modality, f"train.name=hostile-{modality}", "compress.latency_runs=2",
                             "compress.latency_warmup=0", "compress.max_eval_samples=8")
        done = sorted((cfg.run_dir / "compress").glob("*/artifact.json"))
        if done and _loads(done[0].parent):  # an earlier run of this benchmark in the same --workdir
            artifacts[modality] = str(done[0].parent)
            continue
        torch.manual_seed(0)
        model = build_model(cfg, 2).eval()
        labels = {"image": ["horizontal", "vertical"], "audio": ["high", "low"], "text": ["neg", "pos"]}[modality]
        parent = save_checkpoint_atomic(cfg.run_dir / "train" / "checkpoint_untrained", model, cfg, labels, epoch=0)
        artifacts[modality] = compress(cfg, parent, verbose=False)["artifact"]
    return artifacts


def serve_each_modality(workdir: Path, app_prefix: str) -> str:
    """Start Ray and Serve, and serve one pinned replica per modality at ``/<modality>`` (audio behind
    the API key ``bench``); returns the base URL."""
    from ray import serve

    from raylm.runtime import ensure_ray
    from raylm.serve import build_app, load_serve_config

    ensure_ray(num_cpus=2, configure_logging=False)
    artifacts = build_artifacts(workdir)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    os.environ[KEY_ENV] = "bench"
    pinned = ["serve.min_replicas=1", "serve.max_replicas=1", "serve.replica_cpus=0.3"]
    for modality, artifact in artifacts.items():
        extra = [f"serve.api_key_env={KEY_ENV}"] if modality == "audio" else []
        serve.run(build_app([artifact], load_serve_config(None, pinned + extra)), name=f"{app_prefix}{modality}",
                  route_prefix=f"/{modality}")
    return f"http://127.0.0.1:{port}"


def replica_pids() -> dict[str, int]:
    """The replica processes of this benchmark's apps, by process title (``ray::ServeReplica:<app>:...``):
    other Ray instances on the machine make Ray's state API ambiguous."""
    import psutil

    pids = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        title = " ".join(proc.info["cmdline"] or [])
        for modality in ("image", "audio", "text"):
            if title.startswith(f"ray::ServeReplica:{APP_PREFIX}{modality}:"):
                pids[modality] = proc.info["pid"]
    return pids


class PeakSampler:
    """Resident memory of processes, sampled every 5 ms in a thread: the peak in MB of each."""

    def __init__(self, pids: dict[str, int]):
        import psutil

        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak_mb = dict.fromkeys(pids, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, proc in self._procs.items():
                self.peak_mb[name] = max(self.peak_mb[name], proc.memory_info().rss / 2**20)
            time.sleep(0.005)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)


def send(url: str, cases: list, concurrency: int) -> Counter:
    import requests

    def one(case):
        _, app, raw, headers, _, _ = case
        return requests.post(f"{url}/{app}/predict", data=raw, timeout=120,
                             headers={"content-type": "application/json", **headers}).status_code

    with ThreadPoolExecutor(concurrency) as pool:
        return Counter(pool.map(one, cases))


def valid_corpus(key: dict[str, str], n: int) -> list:
    import cv2
    import numpy as np

    from tests.helpers.hostile import b64, wav

    png = cv2.imencode(".png", np.full((40, 40, 3), 90, np.uint8))[1].tobytes()
    tone = wav((0.5 * np.sin(np.arange(4000) * 0.3)).astype(np.float32), 8000)
    bodies = [("image", json.dumps({"image": b64(png)}).encode(), {}),
              ("audio", json.dumps({"audio": b64(tone)}).encode(), key),
              ("text", json.dumps({"text": "the film was great"}).encode(), {})]
    return [("valid", *bodies[i % 3][:2], bodies[i % 3][2], 200, "") for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="times the corpus is sent sequentially")
    parser.add_argument("--workdir", default="/tmp/raylm-serve-hostile")
    args = parser.parse_args()

    from ray import serve

    from tests.helpers.hostile import request_corpus

    url = serve_each_modality(Path(args.workdir), APP_PREFIX)
    key = {"x-api-key": "bench"}
    corpus = request_corpus(key)
    pids = replica_pids()
    log("replicas", pids)

    send(url, valid_corpus(key, 30), 4)  # warm: first requests load lazily imported code
    with PeakSampler(pids) as idle:
        time.sleep(2)
    with PeakSampler(pids) as valid:
        valid_status = send(url, valid_corpus(key, len(corpus) * args.rounds), 1)
        valid_status += send(url, valid_corpus(key, len(corpus) * 2), 8)
    with PeakSampler(pids) as hostile:
        status = Counter()
        for _ in range(args.rounds):
            status += send(url, corpus, 1)
        status += send(url, corpus * 2, 8)
    log("status", dict(status), "valid", dict(valid_status))
    serve.shutdown()

    growth = {m: round(hostile.peak_mb[m] - idle.peak_mb[m], 1) for m in pids}
    valid_growth = {m: round(valid.peak_mb[m] - idle.peak_mb[m], 1) for m in pids}
    print(json.dumps({
        "requests": sum(status.values()), "status": {str(k): v for k, v in sorted(status.items())},
        "5xx": sum(v for k, v in status.items() if k >= 500),
        "valid_requests": sum(valid_status.values()), "valid_status": {str(k): v for k, v in sorted(valid_status.items())},
        "idle_mb": {m: round(v, 1) for m, v in idle.peak_mb.items()},
        "hostile_peak_mb": {m: round(v, 1) for m, v in hostile.peak_mb.items()},
        "hostile_growth_mb": growth, "valid_growth_mb": valid_growth,
        "hostile_vs_valid_peak_ratio": {m: round(hostile.peak_mb[m] / valid.peak_mb[m], 3) for m in pids},
        "goal_growth_mb": GOAL_MB, "goal_met": max(growth.values()) <= GOAL_MB and not any(k >= 500 for k in status),
    }))


if __name__ == "__main__":
    main()
