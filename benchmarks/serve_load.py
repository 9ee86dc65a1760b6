"""Load on loopback against the int8 MiniLM text artifact: (a) raylm Serve with batching, (b) raylm
Serve with batching off (serve.max_batch_size=1), (c) the same artifact and preprocessing behind
plain FastAPI + uvicorn in one process; then a run with 10 % malformed requests counting 5xx.
Prints ONE JSON line (progress goes to stderr).

    python benchmarks/serve_load.py --artifact ~/raylm_runs/<run>/compress/int8-dynamic
    python benchmarks/serve_load.py                     # builds the artifact first (MiniLM, untrained head)
    python benchmarks/serve_load.py --requests 300 --seconds 20 --malformed-requests 2000

Bounded: every level stops at --requests or --seconds, whichever comes first; 127.0.0.1 only.
Both Serve applications run one replica (autoscaling pinned to 1), so the comparison with the
single uvicorn process is replica for process (Serve adds its proxy process in front).
"""

# No `from __future__ import annotations`: FastAPI must see the real request type in plain_server.
import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONCURRENCY = (1, 8, 32)
WORDS = "match goal team rain storm sunny recipe bread soup laptop phone chip league forecast oven app".split()


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def _text(i: int) -> str:
    rng = np.random.default_rng(i)
    return " ".join(rng.choice(WORDS, size=int(rng.integers(4, 14))))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_artifact(workdir: Path) -> str:
    """MiniLM with its pretrained encoder and an untrained head, dynamic int8: latency does not need training."""
    import torch

    from raylm.compress import compress
    from raylm.config import load_config
    from raylm.models import build_model
    from raylm.train.checkpoint import save_checkpoint_atomic

    cfg = load_config(ROOT / "jobs/configs/text.yaml", [
        f"train.storage_path={workdir}", "train.name=serve-load", "task.labels=[food,sports,technology,weather]",
        "compress.quantize.mode=dynamic", "compress.latency_runs=3", "compress.max_eval_samples=32"])
    torch.manual_seed(0)
    model = build_model(cfg, 4).eval()
    parent = save_checkpoint_atomic(cfg.run_dir / "train" / "checkpoint_untrained", model, cfg, cfg.task.labels,
                                    epoch=0, data_fingerprint="serve-load")
    return compress(cfg, parent, verbose=False)["artifact"]


# ---------------------------------------------------------------- (c) plain FastAPI + uvicorn


def plain_server(artifact: str, port: int) -> None:
    """The baseline: one process, the same artifact and preprocessing, no Ray, no batching."""
    import uvicorn
    from fastapi import FastAPI, HTTPException

    from raylm.compress import load_artifact
    from raylm.serve.preprocess import InputError, Preprocessor
    from raylm.serve.schemas import TextRequest

    model = load_artifact(artifact, threads=1)
    prep = Preprocessor("text", model.meta["preprocessing"], artifact)
    prep.warm_up()  # before the thread pool sees traffic: transformers' lazy import is not thread-safe
    app = FastAPI()

    @app.post("/predict")
    def predict(body: TextRequest) -> dict:  # sync: FastAPI runs it in its thread pool
        items = [body.text] if isinstance(body.text, str) else body.text
        try:
            logits = model.predict(prep(items))
        except InputError as err:
            raise HTTPException(422, str(err)) from None
        z = np.exp(logits - logits.max(-1, keepdims=True))
        probs = z / z.sum(-1, keepdims=True)
        return {"predictions": [{"label": model.labels[int(p.argmax())],
                                 "probabilities": dict(zip(model.labels, map(float, p)))} for p in probs]}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# ---------------------------------------------------------------- the load generator


async def _load(url: str, concurrency: int, requests: int, seconds: float, bodies=None) -> dict:
    import aiohttp

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    batches: list[int] = []  # requests merged per model call, as the Serve responses report it
    sent = 0
    deadline = time.perf_counter() + seconds

    async def worker(session):
        nonlocal sent
        while sent < requests and time.perf_counter() < deadline:
            i = sent
            sent += 1
            data = bodies(i) if bodies else json.dumps({"text": _text(i)}).encode()
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=data, headers={"content-type": "application/json"}) as r:
                    payload = await r.read()
                    status = r.status
                if status == 200 and b'"batch_requests"' in payload:
                    batches.append(json.loads(payload)["batch_requests"])
            except aiohttp.ClientError:
                status = 599  # connection-level failure, counted with the 5xx
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {"n": len(latencies), "rps": round(len(latencies) / wall, 1), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1), "status": {str(k): v for k, v in sorted(statuses.items())},
            **({"mean_batch_requests": round(float(np.mean(batches)), 2), "max_batch_requests": max(batches)} if batches else {})}


def sweep(name: str, url: str, args) -> dict:
    out = {}
    asyncio.run(_load(url, 4, 40, 30))  # warm-up: tokenizer, ORT arenas, connections
    for c in CONCURRENCY:
        out[f"c{c}"] = asyncio.run(_load(url, c, args.requests, args.seconds))
        log(name, f"c={c}", out[f"c{c}"])
        if set(out[f"c{c}"]["status"]) != {"200"}:
            log(f"WARNING {name} c={c}: not every request answered 200: {out[f'c{c}']['status']}")
    return out


def _malformed(i: int) -> bytes:
    if i % 10:
        return json.dumps({"text": _text(i)}).encode()
    kind = (i // 10) % 6
    return [b'{"text": "unterminated', json.dumps({"txt": "typo"}).encode(), json.dumps({"text": 7}).encode(),
            json.dumps({"text": ""}).encode(), json.dumps({"text": "x" * 5000}).encode(),
            json.dumps({"text": ["word"] * 150000}).encode()][kind]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", help="an int8 text artifact; default: build one (MiniLM, dynamic int8)")
    parser.add_argument("--requests", type=int, default=400, help="per concurrency level")
    parser.add_argument("--seconds", type=float, default=20, help="per concurrency level")
    parser.add_argument("--malformed-requests", type=int, default=10_000)
    parser.add_argument("--malformed-seconds", type=float, default=120)
    parser.add_argument("--workdir", default="/tmp/raylm_serve_load")
    parser.add_argument("--plain-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_server:
        return plain_server(args.artifact, args.plain_server)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from raylm.runtime import ensure_ray

    ensure_ray(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    artifact = args.artifact or build_artifact(Path(args.workdir))
    artifact = str(Path(artifact).expanduser().resolve())
    results: dict = {"artifact": artifact, "cores": os.cpu_count(), "load_avg_start": round(os.getloadavg()[0], 1)}

    # (c) first, alone on the machine.
    port = _free_port()
    plain = subprocess.Popen([sys.executable, __file__, "--artifact", artifact, "--plain-server", str(port)])
    try:
        import urllib.request

        for _ in range(240):
            try:
                urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/openapi.json"), timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        results["uvicorn"] = sweep("uvicorn", f"http://127.0.0.1:{port}/predict", args)
    finally:
        plain.terminate()
        plain.wait(30)

    from ray import serve

    from raylm.serve import build_app, load_serve_config

    serve_port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": serve_port})
    pinned = ["serve.min_replicas=1", "serve.max_replicas=1", "serve.model_threads=1"]
    for name, extra in (("serve_batched", ["serve.max_batch_size=16", "serve.batch_wait_timeout_s=0.005"]),
                        ("serve_unbatched", ["serve.max_batch_size=1", "serve.batch_wait_timeout_s=0"])):
        serve.run(build_app([f"int8={artifact}"], load_serve_config(None, pinned + extra)), name=name, route_prefix=f"/{name}")
        results[name] = sweep(name, f"http://127.0.0.1:{serve_port}/{name}/predict", args)
        serve.delete(name)  # one application at a time on the 2 cores

    serve.run(build_app([f"int8={artifact}"], load_serve_config(None, pinned + ["serve.max_text_chars=2000"])),
              name="malformed", route_prefix="/malformed")
    mixed = asyncio.run(_load(f"http://127.0.0.1:{serve_port}/malformed/predict", 32, args.malformed_requests,
                              args.malformed_seconds, bodies=_malformed))
    mixed["malformed_sent"] = sum(1 for i in range(mixed["n"]) if i % 10 == 0)
    mixed["5xx"] = sum(v for k, v in mixed["status"].items() if k.startswith("5"))
    results["malformed_10pct"] = mixed
    log("malformed", mixed)
    serve.delete("malformed")

    c32 = {k: results[k]["c32"] for k in ("serve_batched", "serve_unbatched", "uvicorn")}
    results["ratios"] = {
        "batched_vs_unbatched_rps_c32": round(c32["serve_batched"]["rps"] / c32["serve_unbatched"]["rps"], 2),
        "batched_vs_uvicorn_rps_c32": round(c32["serve_batched"]["rps"] / c32["uvicorn"]["rps"], 2),
        "batched_vs_uvicorn_p99_c32": round(c32["serve_batched"]["p99_ms"] / c32["uvicorn"]["p99_ms"], 2),
    }
    results["load_avg_end"] = round(os.getloadavg()[0], 1)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
