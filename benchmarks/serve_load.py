"""Load on loopback against the int8 MiniLM text artifact, one JSON line (progress on stderr):

  * in_process: the artifact's own ``Artifact.predict`` p50 at batch 1 (tokenized input), and
    tokenize + predict, in this process -- the floor every server is measured against;
  * uvicorn: the same artifact and preprocessing behind plain FastAPI + uvicorn in one process, swept
    before the modes and again after them (with the in-process floor): the ratios are against the mean of
    both, so the machine's drift during the run does not tilt them (``c32_rps_vs_uvicorn_before_after``);
  * per ingress mode, each in its own Ray (the modes are env vars read when Serve starts):
    ``proxy`` (Serve's default proxy), ``direct`` (RAY_SERVE_ENABLE_DIRECT_INGRESS=1, requests posted
    to the replica's own port), ``haproxy`` (RAY_SERVE_ENABLE_HA_PROXY=1), ``throughput``
    (RAY_SERVE_THROUGHPUT_OPTIMIZED=1, which includes direct ingress: requests posted to the replica's
    port), ``throughput_proxy`` (the same replica settings with direct ingress off: Serve's proxy on the
    one stable URL), ``haproxy_throughput`` (both:
    HAProxy's one URL with the throughput settings on the replicas), ``default`` (what raylm runs
    untuned: serve.ingress=auto -- HAProxy where its binary is, see raylm/config/serve.py), ``haproxy_no_metrics``
    and ``haproxy_1thread`` (HAProxy without Serve's per-request metrics / with one thread): concurrency 1/8/32 with
    batching chosen from the artifact's latency curve, and the c=1 profile from the replica's
    Server-Timing header (read / preprocess / queue / model / replica; client minus replica = the
    HTTP hops and Serve's routing);
  * in the ``proxy`` mode also: batching forced on (16 rows) and off (serve.max_batch_size=1);
  * in the ``default`` mode also: an autoscaling ramp with raylm's autoscaling defaults (load up until
    Serve runs 2 replicas, down until 1; seconds from the step to Serve's decision and to the replica
    running, p99 during the ramp); a cold start from min_replicas 0 (time to the first answer); 10k
    requests with 10 % malformed ones (5xx count).

    python benchmarks/serve_load.py --artifact ~/raylm_runs/<run>/compress/int8-dynamic
    python benchmarks/serve_load.py                     # builds the artifact first (MiniLM, untrained head)
    python benchmarks/serve_load.py --modes proxy,direct --requests 300 --seconds 20 --malformed-requests 2000

Bounded: every level stops at --requests or --seconds, whichever comes first; 127.0.0.1 only.
Serve runs one replica (autoscaling pinned to 1) except in the ramp, so the comparison with the
single uvicorn process is replica for process (Serve adds its ingress in front).
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

    from raylm.artifacts import load_artifact
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


def _stages(header: str) -> dict[str, float]:
    parts = (p.strip().split(";dur=") for p in header.split(","))
    return {name: float(value) for name, value in parts}


async def _load(url: str, concurrency: int, requests: int, seconds: float, bodies=None) -> dict:
    import aiohttp

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    batches: list[int] = []  # requests merged per model call, as the Serve responses report it
    stages: list[dict[str, float]] = []  # the replica's Server-Timing, per answered request
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
                    timing = r.headers.get("server-timing")
                elapsed = time.perf_counter() - t0
                if status == 200 and b'"batch_requests"' in payload:
                    batches.append(json.loads(payload)["batch_requests"])
                if status == 200 and timing:
                    stages.append({**_stages(timing), "client": elapsed * 1000})
            except aiohttp.ClientError:
                status = 599  # connection-level failure, counted with the 5xx
                elapsed = time.perf_counter() - t0
            latencies.append(elapsed)
            statuses[status] = statuses.get(status, 0) + 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        wall = time.perf_counter() - start
        client_cpu = time.process_time() - cpu  # this process: the load generator (and an idle Ray driver)
    ms = np.array(latencies) * 1000
    out = {"n": len(latencies), "rps": round(len(latencies) / wall, 1), "p50_ms": round(float(np.percentile(ms, 50)), 2),
           "p99_ms": round(float(np.percentile(ms, 99)), 2), "status": {str(k): v for k, v in sorted(statuses.items())},
           "client_cpu_cores": round(client_cpu / wall, 2)}  # of the 2 cores the server shares with it
    if batches:
        out.update(mean_batch_requests=round(float(np.mean(batches)), 2), max_batch_requests=max(batches))
    if stages:
        keys = sorted(set.intersection(*(set(s) for s in stages)))
        out["stages_p50_ms"] = {k: round(float(np.median([s[k] for s in stages])), 3) for k in keys}
        out["stages_p50_ms"]["outside_replica"] = round(float(np.median([s["client"] - s["replica"] for s in stages])), 3)
    return out


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


# ---------------------------------------------------------------- in process: the floor


def in_process(artifact: str, runs: int = 100) -> dict:
    from raylm.artifacts import load_artifact
    from raylm.serve.preprocess import Preprocessor

    model = load_artifact(artifact, threads=1)
    prep = Preprocessor("text", model.meta["preprocessing"], artifact)
    prep.warm_up()
    feeds = [prep([_text(i)]) for i in range(runs)]
    for f in feeds[:20]:
        model.predict(f)
    predict_ms, both_ms = [], []
    for i, f in enumerate(feeds):
        t0 = time.perf_counter()
        model.predict(f)
        t1 = time.perf_counter()
        model.predict(prep([_text(i)]))
        t2 = time.perf_counter()
        predict_ms.append((t1 - t0) * 1000)
        both_ms.append((t2 - t1) * 1000)
    texts = [_text(i) for i in range(16)]
    batch16 = prep.encode_text(texts)
    labels = list(model.labels)
    probs = np.full((1, len(labels)), 1 / len(labels))
    return {"predict_p50_ms": round(float(np.median(predict_ms)), 3),
            "tokenize_predict_p50_ms": round(float(np.median(both_ms)), 3),
            # What the replica's request path chose between: 16 texts tokenized one call each vs one call for the
            # batch; a response re-validated by FastAPI's response_model vs json.dumps (both per request).
            "predict_batch16_p50_ms": _p50_ms(lambda: model.predict(batch16), runs=max(runs // 10, 5)),
            "tokenize_16_one_by_one_ms": _p50_ms(lambda: [prep.encode_text([t]) for t in texts]),
            "tokenize_16_as_batch_ms": _p50_ms(lambda: prep.encode_text(texts)),
            "response_pydantic_ms": _p50_ms(lambda: _pydantic_response(labels, probs)),
            "response_json_dumps_ms": _p50_ms(lambda: _json_response(labels, probs)),
            "report_latency": model.meta.get("report", {}).get("compressed", {}).get("latency")}


def _p50_ms(call, runs: int = 200) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return round(float(np.median(times)) * 1000, 4)


def _predictions(labels: list[str], probs: np.ndarray) -> list[dict]:
    return [{"label": labels[int(p.argmax())], "probabilities": dict(zip(labels, p.tolist()))} for p in probs]


def _pydantic_response(labels: list[str], probs: np.ndarray) -> bytes:
    from fastapi.encoders import jsonable_encoder

    from raylm.serve.schemas import PredictResponse

    body = PredictResponse(model="hf", tier="int8", predictions=_predictions(labels, probs), batch_requests=1)
    return json.dumps(jsonable_encoder(PredictResponse.model_validate(body.model_dump()))).encode()


def _json_response(labels: list[str], probs: np.ndarray) -> bytes:
    return json.dumps({"model": "hf", "tier": "int8", "predictions": _predictions(labels, probs), "batch_requests": 1}).encode()


# ---------------------------------------------------------------- one ingress mode, in its own Ray

MODES = {"proxy": {}, "direct": {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"}, "haproxy": {"RAY_SERVE_ENABLE_HA_PROXY": "1"},
         "throughput": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"},
         "throughput_proxy": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"},
         "haproxy_throughput": {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
         # Where HAProxy mode's CPU goes besides the replica on 2 cores: Serve's per-request metrics line, parsed
         # in Python by HAProxy's manager actor; HAProxy's threads (raylm starts min(4, cores)).
         "haproxy_no_metrics": {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0"},
         "haproxy_1thread": {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_HAPROXY_NBTHREAD": "1"},
         # HAProxy with the replica-side half of the throughput-optimized settings only: user code on the replica's
         # own event loop (no hop to a second loop per request), Serve's log lines to files only, buffered.
         "haproxy_main_loop": {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"},
         "haproxy_lean": {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
                          "RAY_SERVE_LOG_TO_STDERR": "0", "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000"},
         "default": {}}
# serve.ingress for ensure_ray: "default" is what raylm does untuned (serve.ingress=auto); the others pin their mode
# (throughput's variables, exported above, are left alone by auto).
MODE_INGRESS = {"proxy": "proxy", "direct": "direct", "haproxy": "haproxy", "throughput": "auto", "throughput_proxy": "auto",
                "haproxy_throughput": "haproxy", "haproxy_no_metrics": "haproxy", "haproxy_1thread": "haproxy",
                "haproxy_lean": "haproxy", "haproxy_main_loop": "haproxy", "default": "auto"}
PINNED = ["serve.min_replicas=1", "serve.max_replicas=1", "serve.model_threads=1"]


def _replicas(app: str, states: tuple[str, ...] = ("RUNNING",)) -> int:
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None:
        return 0
    return sum(d.replica_states.get(state, 0) for d in status.deployments.values() for state in states)


# Replicas Serve has decided to run (starting or running, not stopping): when this changes, the controller
# decided; when RUNNING follows, the new replica took its first request.
DECIDED = ("STARTING", "PENDING_MIGRATION", "UPDATING", "RECOVERING", "RUNNING")


def _front_url(app: str, serve_port: int, mode: str) -> str:
    """Where a client posts: Serve's HTTP port, or with direct ingress the replica's own port."""
    if mode not in ("direct", "throughput"):
        return f"http://127.0.0.1:{serve_port}/{app}"
    import ray
    from ray.serve.context import _get_global_client

    groups = ray.get(_get_global_client()._controller.get_target_groups.remote(app))
    target = next(t for g in groups if g.protocol == "HTTP" for t in g.targets)
    return f"http://127.0.0.1:{target.port}/{app}"


_LOG_TIME = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"


def _log_time(stamp: str) -> float:
    from datetime import datetime

    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()  # Ray logs local time


def _first(path: Path, pattern: str):
    """The first match of ``pattern`` (a regex whose group 1 is a log timestamp) in a log file, or None."""
    import re

    if not path.is_file():
        return None
    with open(path, errors="replace") as lines:
        return next((m for line in lines if (m := re.search(pattern, line))), None)


def scale_up_timeline(app: str, step_wall: float) -> dict:
    """Where the second replica's start went, in seconds after the load step, read from this Ray session's logs:
    Serve's controller (decision, replica started, RUNNING), the raylet (worker process started), the worker's
    core-worker log (Ray's core up in that process) and the replica's own log (constructor entered, raylm's
    ``replica start:`` stages, the tier's load, the first request it answered)."""
    import re

    import ray

    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    controller = next(iter(sorted((logs / "serve").glob("controller_*.log"))), None)
    out: dict = {}

    def at(name: str, match) -> None:
        if match is not None:
            out[name] = round(_log_time(match.group(1)) - step_wall, 2)

    if controller is None:
        return out
    at("decision", _first(controller, _LOG_TIME + rf".*Upscaling Deployment\(name='TierServer', app='{app}'\) from 1 to 2"))
    started = None
    with open(controller, errors="replace") as lines:  # the replica whose start came after the decision
        for line in lines:
            m = re.search(_LOG_TIME + rf".*Replica\(id='(\w+)', deployment='TierServer', app='{app}'\) started "
                          r"successfully .* \(PID: (\d+)\)", line)
            if m and _log_time(m.group(1)) > step_wall:
                started = m
                break
    if started is None:
        return out
    replica, pid = started.group(2), started.group(3)
    at("actor_requested", _first(controller, _LOG_TIME + rf".*Starting Replica\(id='{replica}'"))
    at("worker_process_started", _first(logs / "raylet.out", _LOG_TIME + rf".*Started worker process with pid {pid}\b"))
    core = next(iter(logs.glob(f"python-core-worker-*_{pid}.log")), None)
    if core is not None:
        at("ray_core_worker_up", _first(core, r"\[" + _LOG_TIME + r" .*Constructing CoreWorkerProcess"))
    replica_log = next(iter((logs / "serve").glob(f"replica_{app}_TierServer_{replica}.log")), None)
    if replica_log is not None:
        at("constructor_entered", _first(replica_log, _LOG_TIME + r".*Started initializing replica"))
        stages = _first(replica_log, _LOG_TIME + r".*(replica start: .*)")
        at("constructor_done", stages)
        if stages is not None:
            out["constructor_stages"] = stages.group(2)
        at("tier_loaded", _first(replica_log, _LOG_TIME + r".*tier '.*' loaded in"))
        at("first_request_answered", _first(replica_log, _LOG_TIME + r".* -- (POST|GET) /"))
    at("running_in_serve", started)
    return out


def autoscale_ramp(artifact: str, serve_port: int, args) -> dict:
    """Load up until Serve runs 2 replicas, then down until 1, sampling the replica count every 0.25 s.

    raylm's own autoscaling defaults (look_back_period_s, upscale_delay_s, the metrics interval derived
    from them) except the replica range and target, and downscale_delay_s (its default, 600 s, keeps a
    replica for ten minutes: 5 s here times the mechanism)."""
    import threading

    from ray import serve

    from raylm.serve import build_app, load_serve_config

    cfg = load_serve_config(None, ["serve.min_replicas=1", "serve.max_replicas=2", "serve.target_ongoing_requests=2",
                                   "serve.replica_cpus=0.5", "serve.downscale_delay_s=5", "serve.model_threads=1"])
    serve.run(build_app([f"int8={artifact}"], cfg), name="ramp", route_prefix="/ramp")
    url = f"http://127.0.0.1:{serve_port}/ramp/predict"
    counts: list[tuple[float, int, int]] = []  # (time, running, decided)
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            counts.append((time.perf_counter(), _replicas("ramp"), _replicas("ramp", DECIDED)))
            time.sleep(0.25)

    def first(after: float | None, replicas: int, column: int = 1) -> float | None:
        if after is None:
            return None
        return next((round(row[0] - after, 1) for row in counts if row[0] >= after and row[column] == replicas), None)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        asyncio.run(_load(url, 1, 10**6, 5))
        up_start, step_wall = time.perf_counter(), time.time()
        high = asyncio.run(_load(url, 16, 10**6, args.ramp_seconds))  # long enough to see the second replica
        down_start = time.perf_counter()
        low = asyncio.run(_load(url, 1, 10**6, args.ramp_seconds))
        deadline = time.perf_counter() + 60
        while _replicas("ramp") != 1 and time.perf_counter() < deadline:
            time.sleep(0.5)
    finally:
        stop.set()
        sampler.join(5)
        serve.delete("ramp")
    timeline = scale_up_timeline("ramp", step_wall)
    to_2 = first(up_start, 2)
    # Back to 1 counts from when the load dropped, or from the scale-up if that came later (the second
    # replica may arrive after the high phase).
    down_from = max(down_start, up_start + to_2) if to_2 is not None else None
    back = first(down_from + 0.01, 1) if down_from is not None else None
    decided_back = first(down_from + 0.01, 1, column=2) if down_from is not None else None
    return {"settings": {k: v for k, v in cfg.autoscaling_config().items() if k != "initial_replicas"}
            | {"metrics_interval_s": cfg.metrics_interval_s()},
            "max_replicas_seen": max(row[1] for row in counts),
            "seconds_to_2_replicas": to_2,  # the step to the second replica RUNNING
            "seconds_to_scale_up_decision": first(up_start, 2, column=2),  # the step to Serve starting it
            "scale_up_timeline_s": timeline,  # the same, read from the session's logs, stage by stage
            "seconds_back_to_1": round(down_from - down_start + back, 1) if back is not None else None,
            "seconds_to_scale_down_decision": (round(down_from - down_start + decided_back, 1)
                                               if decided_back is not None else None),
            "high_c16": high, "low_c1": low}


def cold_start(artifact: str, serve_port: int) -> dict:
    """min_replicas 0: wait until Serve has scaled to zero, then time one request to its answer."""
    import urllib.request

    from ray import serve

    from raylm.serve import build_app, load_serve_config

    cfg = ["serve.min_replicas=0", "serve.max_replicas=1", "serve.downscale_delay_s=1", "serve.look_back_period_s=1",
           "serve.replica_cpus=0.5"]
    serve.run(build_app([f"int8={artifact}"], load_serve_config(None, cfg)), name="cold", route_prefix="/cold")
    deadline = time.perf_counter() + 180
    while _replicas("cold") and time.perf_counter() < deadline:
        time.sleep(0.5)
    out: dict = {"scaled_to_zero": _replicas("cold") == 0}
    request = urllib.request.Request(f"http://127.0.0.1:{serve_port}/cold/predict", data=json.dumps({"text": "cold"}).encode(),
                                     headers={"content-type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(request, timeout=180) as r:
        out["status"] = r.status
    out["seconds_to_first_answer"] = round(time.perf_counter() - t0, 2)
    serve.delete("cold")
    return out


def run_mode(artifact: str, mode: str, args) -> dict:
    from ray import serve

    from raylm.runtime import ensure_ray
    from raylm.serve import build_app, load_serve_config

    ensure_ray(ingress=MODE_INGRESS[mode], num_cpus=2, include_dashboard=False, configure_logging=False,
               log_to_driver=False)
    serve_port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": serve_port})
    results: dict = {"load_avg_start": round(os.getloadavg()[0], 1)}
    # "batched": the choice build_app makes from the artifact's latency curve; in the proxy mode also batching
    # forced on (16 rows, 5 ms) and off, whatever the curve says.
    variants = [("batched", [])]
    if mode == "proxy" or args.batched16:
        variants += [("batched16", ["serve.max_batch_size=16", "serve.batch_wait_timeout_s=0.005"])]
    if mode == "proxy":
        variants += [("unbatched", ["serve.max_batch_size=1"])]
    if args.access_log_ab:  # the same app with Serve's per-request access log turned the other way
        variants += [("access_log_flipped", ["serve.access_log=" + ("false" if load_serve_config(None, PINNED).access_log
                                                                   else "true")])]
    for name, extra in variants:
        serve.run(build_app([f"int8={artifact}"], load_serve_config(None, PINNED + extra)), name=name, route_prefix=f"/{name}")
        results[name] = sweep(f"{mode}/{name}", f"{_front_url(name, serve_port, mode)}/predict", args)
        serve.delete(name)  # one application at a time on the 2 cores
    if mode == "default":  # what a user gets: the ramp, the cold start and the malformed mix
        if args.ramp_seconds:
            results["autoscale"] = autoscale_ramp(artifact, serve_port, args)
            log("autoscale", results["autoscale"])
            results["cold_start"] = cold_start(artifact, serve_port)
            log("cold start", results["cold_start"])
        serve.run(build_app([f"int8={artifact}"], load_serve_config(None, PINNED + ["serve.max_text_chars=2000"])),
                  name="malformed", route_prefix="/malformed")
        mixed = asyncio.run(_load(f"http://127.0.0.1:{serve_port}/malformed/predict", 32, args.malformed_requests,
                                  args.malformed_seconds, bodies=_malformed))
        mixed["malformed_sent"] = sum(1 for i in range(mixed["n"]) if i % 10 == 0)
        mixed["5xx"] = sum(v for k, v in mixed["status"].items() if k.startswith("5"))
        results["malformed_10pct"] = mixed
        log("malformed", mixed)
    # No serve.shutdown(): this process's Ray ends with it (Serve's own shutdown waits 30 s under HAProxy).
    return results


def _subprocess_json(argv: list[str], env: dict[str, str], timeout: float, tries: int = 3) -> dict:
    # Tries: on an overloaded machine Ray 2.60's raylet gives up on a slow metrics agent after a fixed
    # timeout (ray-project/ray#65983) and the node never starts; a fresh start usually does.
    for attempt in range(tries):
        # Each mode from a clean slate: no RAY_SERVE_* left behind by this process's own Ray (build_artifact).
        clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_")}
        run = subprocess.run([sys.executable, __file__, *argv], env={**clean, **env}, stdout=subprocess.PIPE,
                             text=True, timeout=timeout)
        if run.returncode == 0:  # the result is the last JSON line: Ray may print after it while it shuts down
            return json.loads(next(line for line in reversed(run.stdout.splitlines()) if line.startswith("{")))
        log(f"attempt {attempt + 1} exited {run.returncode}")
    return {"error": f"exit {run.returncode} after {tries} tries"}


def _start_plain_server(artifact: str) -> tuple[str, subprocess.Popen]:
    """The uvicorn baseline on a free port; another port when something else took this one meanwhile."""
    import http.client
    import urllib.request

    for _ in range(3):
        port = _free_port()
        plain = subprocess.Popen([sys.executable, __file__, "--artifact", artifact, "--plain-server", str(port)])
        for _ in range(240):
            if plain.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json", timeout=1) as r:
                    if b'"/predict"' in r.read():
                        return f"http://127.0.0.1:{port}", plain
            except (OSError, http.client.HTTPException):
                time.sleep(0.5)
        plain.terminate()
        plain.wait(30)
    raise RuntimeError("the plain uvicorn server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", help="an int8 text artifact; default: build one (MiniLM, dynamic int8)")
    parser.add_argument("--requests", type=int, default=400, help="per concurrency level")
    parser.add_argument("--seconds", type=float, default=20, help="per concurrency level")
    parser.add_argument("--modes", default="default,proxy,throughput_proxy,direct,haproxy,throughput,haproxy_throughput", help=f"ingress modes among {list(MODES)}")
    parser.add_argument("--ramp-seconds", type=float, default=30, help="each phase of the autoscaling ramp; 0 = skip it")
    parser.add_argument("--malformed-requests", type=int, default=10_000)
    parser.add_argument("--malformed-seconds", type=float, default=120)
    parser.add_argument("--batched16", action="store_true", help="every mode also with batching forced on (16 rows, 5 ms)")
    parser.add_argument("--access-log-ab", action="store_true",
                        help="every mode also with serve.access_log the other way (Serve's per-request log line)")
    parser.add_argument("--workdir", default="/tmp/raylm_serve_load")
    parser.add_argument("--plain-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.plain_server:
        return plain_server(args.artifact, args.plain_server)
    if args.mode:
        return print(json.dumps(run_mode(args.artifact, args.mode, args)))

    if not args.artifact:
        import ray

        from raylm.runtime import ensure_ray

        ensure_ray(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
        args.artifact = build_artifact(Path(args.workdir))
        ray.shutdown()
    artifact = str(Path(args.artifact).expanduser().resolve())
    results: dict = {"artifact": artifact, "cores": os.cpu_count(), "load_avg_start": round(os.getloadavg()[0], 1)}
    results["in_process"] = in_process(artifact)
    log("in process", results["in_process"])

    def plain_sweep(name: str) -> dict:
        url, plain = _start_plain_server(artifact)
        try:
            return sweep(name, f"{url}/predict", args)
        finally:
            plain.terminate()
            plain.wait(30)

    results["uvicorn_before"] = plain_sweep("uvicorn")

    forwarded = ["--artifact", artifact, "--requests", str(args.requests), "--seconds", str(args.seconds),
                 "--ramp-seconds", str(args.ramp_seconds), "--malformed-requests", str(args.malformed_requests),
                 "--malformed-seconds", str(args.malformed_seconds), *(["--batched16"] if args.batched16 else []),
                 *(["--access-log-ab"] if args.access_log_ab else [])]
    for mode in args.modes.split(","):
        results[mode] = _subprocess_json(forwarded + ["--mode", mode], MODES[mode], timeout=1800)
        log(mode, "done")

    # The baseline again after the modes: the shared machine's speed drifts by a fifth within minutes (the ingest
    # benchmark's in-memory epochs moved 3,170 -> 4,144 samples/s in one quiet quarter-hour), so a baseline taken only
    # before the modes tilts every ratio by where the drift went. The ratios are against the mean of both sweeps;
    # each side's own c=32 ratio is printed beside them.
    results["uvicorn_after"] = plain_sweep("uvicorn (after)")
    results["in_process_after"] = in_process(artifact)
    before_after = [results[side]["predict_p50_ms"] for side in ("in_process", "in_process_after")]
    results["in_process"]["predict_p50_ms_before_after"] = before_after
    results["in_process"]["predict_p50_ms"] = round(float(np.mean(before_after)), 3)
    sides = (results["uvicorn_before"], results["uvicorn_after"])
    uvicorn = {f"c{c}": {key: float(np.mean([side[f"c{c}"][key] for side in sides])) for key in ("rps", "p50_ms", "p99_ms")}
               for c in CONCURRENCY}
    results["uvicorn"] = uvicorn
    ratios: dict = {}
    for mode in args.modes.split(","):
        batched = results[mode].get("batched")
        if not batched:
            continue
        ratios[mode] = {"load_avg_start": results[mode].get("load_avg_start"),
                        "c1_p50_minus_in_process_predict_ms": round(batched["c1"]["p50_ms"] - results["in_process"]["predict_p50_ms"], 2),
                        "c1_p50_vs_uvicorn": round(batched["c1"]["p50_ms"] / uvicorn["c1"]["p50_ms"], 2),
                        "c32_rps_vs_uvicorn": round(batched["c32"]["rps"] / uvicorn["c32"]["rps"], 2),
                        "c32_p99_vs_uvicorn": round(batched["c32"]["p99_ms"] / uvicorn["c32"]["p99_ms"], 2),
                        "c32_rps_vs_uvicorn_before_after": [round(batched["c32"]["rps"] / side["c32"]["rps"], 2) for side in sides]}
        flipped = results[mode].get("access_log_flipped")
        if flipped:  # run right after "batched" in the same Ray: the access log's own cost
            ratios[mode]["access_log_flipped_vs_batched_rps_c32"] = round(flipped["c32"]["rps"] / batched["c32"]["rps"], 3)
            ratios[mode]["access_log_flipped_c32_rps_vs_uvicorn"] = round(flipped["c32"]["rps"] / uvicorn["c32"]["rps"], 2)
    if "unbatched" in results.get("proxy", {}):
        for name in ("batched", "batched16"):
            ratios["proxy"][f"{name}_vs_unbatched_rps_c32"] = round(
                results["proxy"][name]["c32"]["rps"] / results["proxy"]["unbatched"]["c32"]["rps"], 2)
    floor = results["in_process"]
    ratios["uvicorn_c1_p50_minus_in_process_predict_ms"] = round(uvicorn["c1"]["p50_ms"] - floor["predict_p50_ms"], 2)
    ratios["in_process_rows_per_s_batch16_vs_batch1"] = round(16 * floor["predict_p50_ms"] / floor["predict_batch16_p50_ms"], 2)
    results["ratios"] = ratios
    results["load_avg_end"] = round(os.getloadavg()[0], 1)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
