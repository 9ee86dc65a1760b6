"""The Serve application: one autoscaled deployment holding the compression tiers of one model
(``@serve.multiplexed``), with a FastAPI ingress (validation + training preprocessing) and
``@serve.batch`` dynamic batching of the model calls.

    serve run raylm.serve.app:app_builder artifact=/runs/x/compress/fp32,/runs/x/compress/int8 serve.max_batch_size=8
    raylm serve --artifact int8=/runs/x/compress/dynamic-int8 --artifact /runs/x/compress/fp32
    serve deploy cluster/serve-config.yaml          # the same builder, args from YAML

Every bad request is answered with a 4xx naming the field before anything reaches the model.
"""

# No `from __future__ import annotations`: FastAPI must see real types on the ingress methods.
import asyncio
import hashlib
import random
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from raylm.serve.startup import StartupClock  # first: its clock starts before the imports below

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import ValidationError
from ray import serve
from ray.serve import Application

from raylm.config import ConfigError, ServeConfig
from raylm.serve import v2
from raylm.serve.batching import choose_batching
from raylm.serve.http import check_key, json_body, read_body
from raylm.serve.loading import load_serve_config, resolve_tiers
from raylm.serve.preprocess import InputError, Preprocessor
from raylm.serve.routing import Routing, RoutedReplica, constructor_config, pin_code_version, routing_for
from raylm.serve.shadow import ShadowRecorder, summary_dir_for
from raylm.serve.versioned import VersionedRoutes
from raylm.serve.versioned import router as versioned_router
from raylm.serve.versions import tier_versions
from raylm.serve.schemas import (ERRORS, TIER_HEADER, V2_ERRORS, ModelsResponse, PredictResponse, TierInfo,
                                 openapi_document, request_error, request_model)

log = logging.getLogger("ray.serve")


def _raylm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("raylm")
    except PackageNotFoundError:  # a source tree on PYTHONPATH, not installed
        return "0+unknown"


RAYLM_VERSION = _raylm_version()  # v2's server metadata: the server's version (the protocol's is in the path)

# A replica keeps every tier it has loaded: the tiers are the operator's fixed list, and an LRU
# smaller than that list reloaded an artifact on every request of a client cycling through them.
MAX_TIERS_PER_REPLICA = -1


# ---------------------------------------------------------------- building the application


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def build_app(artifacts: list[str], cfg: ServeConfig, *, say: Callable[[str], None] = _to_stderr) -> Application:
    """The application for ``artifacts`` (checked here, before Ray starts); ``say`` gets the lines worth
    printing (the batching chosen)."""
    tiers = resolve_tiers(artifacts)
    default = cfg.default_tier or next(iter(tiers))
    if default not in tiers:
        raise ConfigError(f"serve.default_tier: {default!r} is not one of the tiers {sorted(tiers)}")
    key_digest = None
    if cfg.api_key_env:
        key = os.environ.get(cfg.api_key_env)
        if not key:
            raise ConfigError(f"serve.api_key_env: environment variable {cfg.api_key_env} is not set (or empty)")
        # Only the digest travels in the deployment's arguments (visible in Serve's status).
        key_digest = hashlib.sha256(key.encode()).hexdigest()
    paths = {name: tier["path"] for name, tier in tiers.items()}
    max_batch_size, wait_s, why = choose_batching(tiers[default]["meta"], cfg)
    say(f"raylm serve: batching max_batch_size={max_batch_size} batch_wait_timeout_s={wait_s:g} ({why})")
    routing = routing_for(cfg, list(tiers), default, max_batch_size, wait_s)
    versions = tier_versions(tiers, cfg)
    summary_dir = summary_dir_for(cfg.shadow_summary_dir, paths[default]) if cfg.shadow or cfg.canary else None
    if routing.canary or routing.shadow:
        say(f"raylm serve: routing: default {routing.default}"
            + (f", canary {routing.canary} at {routing.canary_percent:g}%" if routing.canary else "")
            + (f", shadow {routing.shadow}" if routing.shadow else "")
            + f"; summaries in {summary_dir or '(none: metrics only; set serve.shadow_summary_dir)'}")
    say(f"raylm serve: autoscaling {cfg.min_replicas}..{cfg.max_replicas} replicas at {cfg.target_ongoing_requests:g} "
        f"ongoing requests each, load averaged over {cfg.look_back_period_s:g} s (metrics every "
        f"{cfg.metrics_interval_s():g} s), up after {cfg.upscale_delay_s:g} s, down after {cfg.downscale_delay_s:g} s")
    deployment = TierServer.options(
        autoscaling_config=cfg.autoscaling_config(),
        max_ongoing_requests=cfg.max_ongoing_requests,
        ray_actor_options={"num_cpus": cfg.replica_cpus},
        max_replicas_per_node=cfg.max_replicas_per_node,  # spread: one lost node takes at most this many
        graceful_shutdown_timeout_s=cfg.replica_shutdown_s(),
        health_check_period_s=cfg.health_check_period_s,
        logging_config={"enable_access_log": cfg.access_log},
        user_config=routing.model_dump(),  # a change reconfigures the running replicas (raylm/serve/routing.py)
    )
    args = (paths, next(iter(tiers)), constructor_config(cfg), key_digest, versions, str(summary_dir) if summary_dir else None)
    pin_code_version(deployment, args)
    return deployment.bind(*args)


def app_builder(args: dict[str, Any]) -> Application:
    """``serve run raylm.serve.app:app_builder artifact=DIR[,DIR] [config=YAML] [serve.key=value ...]``."""
    args = dict(args)
    artifacts = args.pop("artifact", None) or args.pop("artifacts", None)
    if isinstance(artifacts, str):
        artifacts = [a for a in artifacts.split(",") if a]
    config = args.pop("config", None)
    bad = [k for k in args if not str(k).startswith("serve.")]
    if bad:
        raise ConfigError(f"app_builder: unknown argument(s) {bad}; expected artifact=, config= or serve.<field>=")
    overrides = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in args.items()]
    return build_app(list(artifacts or []), load_serve_config(config, overrides))


# ---------------------------------------------------------------- the deployment


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _rows(items: list[tuple[str, Any, int]]) -> int:
    """@serve.batch's batch size: rows (texts, images, clips), not requests, since a request may carry a list."""
    return sum(rows for _, _, rows in items)


def server_timing(timing: dict[str, float]) -> str:
    """The Server-Timing header (ms per stage inside the replica), read by benchmarks/serve_load.py's profile."""
    total = (time.perf_counter() - timing.pop("start")) * 1000
    return ", ".join(f"{k};dur={v:.3f}" for k, v in (*timing.items(), ("replica", total)))


# Everything the routes use must be defined above the class: @serve.ingress pickles the app (and with it the
# route functions and the globals they name) when the class is decorated.
# The documents are built per replica (routes below), where the modality is known: see schemas.openapi_document.
api = FastAPI(title="raylm", description="Classifiers compressed by raylm, served by Ray Serve.",
              docs_url=None, openapi_url=None)
api.include_router(versioned_router)  # /v2/models/{name}/versions/{version}[/ready|/infer]


@api.exception_handler(HTTPException)
async def _error_body(request: Request, err: HTTPException) -> JSONResponse:
    """The Open Inference Protocol's error body is ``{"error": reason}`` (a 422 there is a 400); raylm's own routes
    keep FastAPI's ``{"detail": reason}``."""
    if "/v2/" in request.url.path:
        return JSONResponse({"error": str(err.detail)}, status_code=400 if err.status_code == 422 else err.status_code)
    return JSONResponse({"detail": err.detail}, status_code=err.status_code, headers=err.headers)


@serve.deployment
@serve.ingress(api)
class TierServer(RoutedReplica, VersionedRoutes):
    """One model's compression tiers behind HTTP: validate -> training preprocessing -> batched model call.

    The ingress lives in the model replica on purpose: a separate ingress deployment cost an extra
    hop (and a serialized copy of every input) per request, which measured slower on CPU
    (notes/issue-7.md). Tiers are ``@serve.multiplexed`` models; a request naming its tier in
    Serve's ``serve_multiplexed_model_id`` header is routed to a replica that has it loaded.
    Texts are tokenized once per batch, inside it; images and clips are decoded per request.
    """

    def __init__(self, paths: dict[str, str], first: str, cfg: dict[str, Any], key_digest: str | None,
                 versions: dict[str, str] | None = None, summary_dir: str | None = None):
        clock = StartupClock()
        from raylm.artifacts import read_meta
        from raylm.storage import localize

        self._cfg = ServeConfig.model_validate(cfg)
        # A tier given as a URI is read from this node's content-keyed cache, downloaded and checked
        # against its commit marker once (raylm/storage/commit.py).
        self._paths = paths = {name: str(localize(path)) for name, path in paths.items()}
        self._key_digest = key_digest
        self._metas = {name: read_meta(path) for name, path in paths.items()}
        meta = self._metas[first]  # every tier has the same task, labels and preprocessing (resolve_tiers)
        self._modality = meta["task"]["modality"]
        self._labels = list(meta["labels"])
        self._model_name = meta.get("architecture", {}).get("name", "model")
        self._request_model = request_model(self._modality)
        clock.mark("artifact metadata")
        self._preprocess = Preprocessor(self._modality, meta["preprocessing"], paths[first], self._cfg.max_text_chars,
                                        self._cfg.limits)
        self._preprocess.warm_up()
        clock.mark("preprocessing warm-up")
        self._threads = self._cfg.model_threads
        if any(tier["runtime"] == "torch" for tier in self._metas.values()):
            # Only a torch artifact needs torch: importing it for an ONNX or TFLite one cost ~2 s of every start.
            import torch

            torch.set_num_threads(self._threads)
            clock.mark("torch")
        self._versions = versions or {name: "1" for name in paths}
        # The tiers the routing sends traffic to are loaded by reconfigure() (Serve calls it before the replica
        # takes requests): a broken artifact fails the deployment, not the first request.
        self._preloaded: dict[str, Any] = {}
        self._loaded: set[str] = set()
        self._artifacts: dict[str, Any] = {}  # tiers loaded through Serve's multiplexing, kept (see _artifact)
        self._routing: Routing | None = None
        self._rng = random.Random()  # seeded from the OS: replicas draw independently
        self._shadow = ShadowRecorder(summary_dir, self._cfg.shadow_max_pending)
        # Requests inside the handlers, and those of them queued for / inside a model call: the difference is
        # what a batch could still gain by waiting.
        self._in_handler = 0
        self._in_batch = 0
        log.info(clock.line())

    # -- model side

    async def _load_tier(self, name: str):
        from raylm.artifacts import load_artifact

        start = time.perf_counter()
        artifact = await asyncio.to_thread(load_artifact, self._paths[name], threads=self._threads)
        log.info("tier %r loaded in %.2f s (%s)", name, time.perf_counter() - start, artifact.runtime)
        return artifact

    @serve.multiplexed(max_num_models_per_replica=MAX_TIERS_PER_REPLICA)
    async def tier(self, name: str):
        self._loaded.add(name)
        if name in self._preloaded:
            return self._preloaded.pop(name)
        return await self._load_tier(name)

    async def _artifact(self, name: str):
        """The tier's loaded artifact: loaded once through Serve's multiplexing (which tells the routers this
        replica has it), then kept here. Each request went through the multiplexing wrapper, whose per-call
        cache-hit metric was 3 % of a replica's CPU under load; with no cap on tiers per replica
        (MAX_TIERS_PER_REPLICA) the wrapper never evicts one, so keeping it changes nothing else."""
        artifact = self._artifacts.get(name)
        if artifact is None:
            artifact = self._artifacts[name] = await self.tier(name)
        return artifact

    def _run_model(self, artifact, payloads: list[Any]) -> tuple[np.ndarray, float]:
        """One model call over the payloads of several requests: texts are tokenized here, all at once."""
        feeds = self._preprocess.feeds(payloads)
        start = time.perf_counter()
        logits = artifact.predict(feeds)
        return logits, (time.perf_counter() - start) * 1000

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0, batch_size_fn=_rows)  # size from serve.* in __init__
    async def _predict_batch(self, items: list[tuple[str, Any, int]]) -> list[tuple[np.ndarray, int, float]]:
        # A tier named in the body is not Serve's multiplexed id, so one batch may mix tiers: group them.
        out: list[Any] = [None] * len(items)
        groups: dict[str, list[int]] = {}
        for i, (tier, _, _) in enumerate(items):
            groups.setdefault(tier, []).append(i)
        for tier, members in groups.items():
            try:
                artifact = await self._artifact(tier)
            except Exception as err:  # a broken tier fails its own requests, not the whole batch
                log.error("tier %r could not be loaded: %s", tier, err)
                for i in members:
                    out[i] = (err, len(members), 0.0)  # answered 503 by _classify(), without the server's details
                continue
            logits, model_ms = await asyncio.to_thread(self._run_model, artifact, [items[i][1] for i in members])
            start = 0
            for i in members:
                rows = items[i][2]
                out[i] = (logits[start:start + rows], len(members), model_ms)
                start += rows
        return out

    async def _classify(self, tier: str, items: list, timing: dict[str, float]) -> tuple[np.ndarray, int]:
        """Items of one request -> class probabilities: preprocessing, then the batch (or alone when the request
        fills a batch by itself). Bad items raise a 422 naming the field; ``timing`` gets each stage in ms."""
        start = time.perf_counter()
        try:
            if self._preprocess.decodes_items:
                payload = await asyncio.to_thread(self._preprocess.prepare, items)
            else:  # only checked here: the batch encodes every request's items at once
                payload = self._preprocess.prepare(items)
        except InputError as err:
            raise HTTPException(422, str(err)) from None
        except Exception as err:  # a decoder choking on hostile bytes is still the input's fault
            log.warning("preprocessing failed: %r", err)
            raise HTTPException(422, f"{self._modality}: could not be preprocessed ({type(err).__name__})") from None
        queued = time.perf_counter()
        timing["preprocess"] = (queued - start) * 1000
        if len(items) >= self._max_batch_size:
            try:
                artifact = await self._artifact(tier)
            except Exception as err:
                log.error("tier %r could not be loaded: %s", tier, err)
                raise HTTPException(503, f"tier: {tier!r} could not be loaded on this replica; try another tier") from None
            logits, model_ms = await asyncio.to_thread(self._run_model, artifact, [payload])
            batch_requests = 1
        else:
            # Flush at once when no other request is on its way to the batch: waiting could only add latency.
            arriving = self._in_handler - self._in_batch - 1
            timing["wait_limit"] = 1000 * (self._wait_s if arriving > 0 else 0.0)
            self._predict_batch.set_batch_wait_timeout_s(timing["wait_limit"] / 1000)
            self._in_batch += 1
            try:
                logits, batch_requests, model_ms = await self._predict_batch((tier, payload, len(items)))
            finally:
                self._in_batch -= 1
        if isinstance(logits, Exception):
            raise HTTPException(503, f"tier: {tier!r} could not be loaded on this replica; try another tier")
        timing["model"] = model_ms
        timing["queue"] = (time.perf_counter() - queued) * 1000 - model_ms
        probs = _softmax(logits)
        bad = np.flatnonzero(~np.isfinite(probs).all(axis=-1))
        if bad.size:  # JSON has no NaN: the answer would be null probabilities
            raise HTTPException(422, f"{self._modality}[{int(bad[0])}]: the model's output is not finite for this input")
        return probs, batch_requests

    def _gone_tiers(self) -> list[str]:
        return sorted(name for name, path in self._paths.items() if not (Path(path) / "artifact.json").is_file())

    # No check_health: Serve restarts a replica whose check fails, and one whose artifact was deleted
    # could not start again; the replica keeps answering with the model it loaded, /healthz says why it is red.

    # -- HTTP side

    def _check_key(self, request: Request) -> None:
        check_key(request, self._cfg.api_key_header, self._key_digest)

    async def _read_body(self, request: Request) -> bytes:
        return await read_body(request, self._cfg.max_payload_bytes)

    @api.post("/predict", response_model=PredictResponse, responses=ERRORS,
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {}}}}})
    async def predict(self, request: Request) -> Response:
        self._in_handler += 1
        try:
            return await self._predict(request)
        finally:
            self._in_handler -= 1

    async def _predict(self, request: Request) -> Response:
        timing = {"start": time.perf_counter()}
        self._check_key(request)
        body = json_body(await self._read_body(request), request.headers.get("content-type"), self._modality)
        if not isinstance(body, dict):
            raise HTTPException(422, f"body: expected a JSON object with field '{self._modality}', got {type(body).__name__}")
        try:
            parsed = self._request_model.model_validate(body)
        except ValidationError as err:
            raise HTTPException(422, request_error(err, body)) from None
        named = parsed.tier or request.headers.get(TIER_HEADER) or serve.get_multiplexed_model_id()
        routing = self._routing  # one routing per request, even if a redeploy swaps it meanwhile
        tier = named or routing.pick(self._rng)
        if tier not in self._metas:
            raise HTTPException(422, f"tier: unknown {tier[:64]!r}; one of {sorted(self._metas)}")
        items = getattr(parsed, self._modality)
        items = [items] if isinstance(items, str) else items
        if not items:
            raise HTTPException(422, f"{self._modality}: empty list")
        if len(items) > self._cfg.max_items:
            raise HTTPException(422, f"{self._modality}: {len(items)} items, more than serve.max_items={self._cfg.max_items}")
        timing["read"] = (time.perf_counter() - timing["start"]) * 1000
        answer_start = time.perf_counter()
        probs, batch_requests = await self._classify(tier, items, timing)
        answer_ms = (time.perf_counter() - answer_start) * 1000
        # Serialized here rather than through response_model, whose re-validation of every prediction costs ~6x
        # json.dumps (docs/serving.md); the OpenAPI document still declares PredictResponse.
        predictions = [{"label": self._labels[int(p.argmax())], "probabilities": dict(zip(self._labels, p.tolist()))}
                       for p in probs]
        content = json.dumps({"model": self._model_name, "tier": tier, "predictions": predictions,
                              "batch_requests": batch_requests})
        shadow = None
        if not named and (routing.canary or routing.shadow):  # the canary's share and the shadow's copies
            self._shadow.routed(tier, answer_ms)
            shadow = self._shadow_copy(routing, tier, items, probs, answer_ms)
        return Response(content, media_type="application/json", background=shadow,
                        headers={"server-timing": server_timing(timing), TIER_HEADER: tier})

    @api.get("/models", response_model=ModelsResponse, responses={401: ERRORS[401]})
    async def models(self, request: Request) -> ModelsResponse:
        self._check_key(request)
        # No server paths: the report's "artifact" is where the artifact was written.
        tiers = [TierInfo(tier=name, model_file=meta["model_file"], default=name == self._default,
                          report={k: v for k, v in meta.get("report", {}).items() if k != "artifact"})
                 for name, meta in self._metas.items()]
        return ModelsResponse(modality=self._modality, labels=self._labels, tiers=tiers,
                              batching={"max_batch_size": self._max_batch_size, "batch_wait_timeout_s": self._wait_s})

    @api.get("/healthz", responses={503: {"description": "an artifact was deleted or moved: the reason"}})
    async def healthz(self) -> Response:
        body = {"status": "ok", "modality": self._modality, "tiers": sorted(self._metas), "default": self._default}
        gone = self._gone_tiers()
        if gone:  # tier names only: no server paths in answers
            body |= {"status": "unhealthy", "reason": f"artifact of tier(s) {gone} deleted or moved: a restarted replica "
                                                      "could not load it; the loaded model still answers"}
        return JSONResponse(body, status_code=503 if gone else 200)

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi(self, request: Request) -> JSONResponse:
        return JSONResponse(openapi_document(request.app, request.scope.get("root_path", ""), self._modality,
                                             sorted(self._metas)))

    @api.get("/docs", include_in_schema=False)
    async def docs(self, request: Request) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=f"{request.scope.get('root_path', '')}/openapi.json", title="raylm")

    # -- the Open Inference Protocol (KServe v2 REST); tiers are its models

    @api.get("/v2", response_model=v2.ServerMetadata)
    async def v2_server(self) -> dict[str, Any]:
        return {"name": "raylm", "version": RAYLM_VERSION, "extensions": ["binary_tensor_data"]}  # the server's own

    @api.get("/v2/health/live", response_model=v2.Live)
    async def v2_live(self) -> dict[str, bool]:
        return {"live": True}

    @api.get("/v2/health/ready", response_model=v2.Ready)
    async def v2_ready(self) -> dict[str, bool]:
        return {"ready": True}

    def _v2_tier(self, request: Request, name: str) -> None:
        self._check_key(request)
        if name not in self._metas:
            raise HTTPException(404, f"model {name!r}: unknown; the models are the tiers {sorted(self._metas)}")

    @api.get("/v2/models/{name}", response_model=v2.ModelMetadata, responses=V2_ERRORS)
    async def v2_model(self, name: str, request: Request) -> dict[str, Any]:
        self._v2_tier(request, name)
        return v2.model_metadata(name, self._metas[name], self._versions[name])

    @api.get("/v2/models/{name}/ready", response_model=v2.Ready, responses=V2_ERRORS)
    async def v2_model_ready(self, name: str, request: Request) -> dict[str, bool]:
        self._v2_tier(request, name)
        return {"ready": True}

    @api.post("/v2/models/{name}/infer", response_model=v2.InferResponse, responses=V2_ERRORS,
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {}}}}})
    async def v2_infer(self, name: str, request: Request) -> Response:
        self._in_handler += 1
        try:
            return await self._v2_infer(name, request)
        finally:
            self._in_handler -= 1

    async def _v2_infer(self, name: str, request: Request) -> Response:
        timing = {"start": time.perf_counter()}
        self._v2_tier(request, name)
        body = await self._read_body(request)
        try:
            parsed, items = v2.parse_infer(body, request.headers.get(v2.BINARY_HEADER), self._modality)
        except v2.V2Error as err:
            raise HTTPException(400, str(err)) from None
        if len(items) > self._cfg.max_items:
            raise HTTPException(400, f"inputs ({self._modality}): {len(items)} elements, "
                                     f"more than serve.max_items={self._cfg.max_items}")
        timing["read"] = (time.perf_counter() - timing["start"]) * 1000
        probs, _ = await self._classify(name, items, timing)
        return Response(v2.infer_response(name, parsed, probs, self._labels, self._versions[name]),
                        media_type="application/json",
                        headers={"server-timing": server_timing(timing)})
