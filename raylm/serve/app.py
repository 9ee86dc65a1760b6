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
import hmac
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from pydantic import ValidationError
from ray import serve
from ray.serve import Application

from raylm.config import ConfigError, ServeConfig, parse_overrides, merge
from raylm.serve.preprocess import InputError, Preprocessor
from raylm.serve.schemas import REQUESTS, TIER_HEADER, ModelsResponse, PredictResponse, TierInfo

log = logging.getLogger("ray.serve")

# A replica keeps every tier it has loaded: the tiers are the operator's fixed list, and an LRU
# smaller than that list reloaded an artifact on every request of a client cycling through them.
MAX_TIERS_PER_REPLICA = -1


# ---------------------------------------------------------------- building the application


def resolve_tiers(artifacts: list[str]) -> dict[str, dict[str, Any]]:
    """``["int8=/a/b", "/a/c"]`` -> {tier: {"path", "meta"}}; all tiers must be one model's variants."""
    from raylm.compress.artifact import ArtifactError, read_meta

    if not artifacts:
        raise ConfigError("--artifact: at least one artifact directory is required")
    tiers: dict[str, dict[str, Any]] = {}
    for entry in artifacts:
        name, sep, path = entry.partition("=")
        if not sep:
            name, path = "", entry
        path = str(Path(path).expanduser().resolve())
        try:
            meta = read_meta(path)
        except ArtifactError as err:
            raise ConfigError(f"--artifact: {err}") from None
        name = name or meta.get("recipe", {}).get("variant") or Path(path).name
        if name in tiers:
            raise ConfigError(f"--artifact: tier name {name!r} given twice (name them: --artifact NAME=DIR)")
        tiers[name] = {"path": path, "meta": meta}
    first_name, first = next(iter(tiers.items()))
    for name, tier in tiers.items():
        for key in ("task", "labels", "inputs", "preprocessing"):
            if tier["meta"].get(key) != first["meta"].get(key):
                raise ConfigError(f"--artifact: tier {name!r} differs from {first_name!r} in '{key}': "
                                  "tiers must be variants of one model (serve other models as other applications)")
    return tiers


def load_serve_config(config: str | None = None, overrides: list[str] | None = None) -> ServeConfig:
    """The ``serve`` section of a raylm YAML (optional) plus ``serve.key=value`` overrides."""
    import yaml

    tree: dict[str, Any] = {}
    if config:
        path = Path(config).expanduser()
        if not path.is_file():
            raise ConfigError(f"--config: no such file: {path}")
        tree = yaml.safe_load(path.read_text()) or {}
    tree = merge(tree, parse_overrides(list(overrides or [])))
    unknown = sorted(set(tree) - {"serve"} - set(_OTHER_SECTIONS))
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}: serving reads only 'serve.*'")
    section = dict(tree.get("serve") or {})
    if "api_key_env" in section and section["api_key_env"] is None:
        # YAML reads `~` and `null` as None: a typo must not switch the key off unnoticed.
        raise ConfigError("invalid raylm config:\n  serve.api_key_env: null (YAML `~`) would serve without an API key; "
                          "leave serve.api_key_env out to serve without one, or name an environment variable")
    if "limits" not in section and isinstance(tree.get("data"), dict) and "limits" in tree["data"]:
        section["limits"] = tree["data"]["limits"]  # a run YAML: serve with the limits its data was read with
    try:
        return ServeConfig.model_validate(section)
    except ValidationError as err:
        lines = [f"  serve.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()]
        raise ConfigError("invalid raylm config:\n" + "\n".join(lines)) from None


_OTHER_SECTIONS = ("task", "data", "model", "train", "compress")  # a full run YAML is accepted as is


def build_app(artifacts: list[str], cfg: ServeConfig) -> Application:
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
    return TierServer.options(
        autoscaling_config={"min_replicas": cfg.min_replicas, "max_replicas": cfg.max_replicas,
                            "initial_replicas": max(cfg.min_replicas, 1),
                            "target_ongoing_requests": cfg.target_ongoing_requests},
        max_ongoing_requests=cfg.max_ongoing_requests,
        ray_actor_options={"num_cpus": cfg.replica_cpus},
        graceful_shutdown_timeout_s=cfg.graceful_shutdown_timeout_s,
        health_check_period_s=cfg.health_check_period_s,
    ).bind(paths, default, cfg.model_dump(), key_digest)


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


api = FastAPI(title="raylm", description="Classifiers compressed by raylm, served by Ray Serve.",
              docs_url="/docs", openapi_url="/openapi.json")

_REQUEST_SCHEMAS = {"oneOf": [{"$ref": f"#/components/schemas/{m.__name__}"} for m in REQUESTS.values()]}


@serve.deployment
@serve.ingress(api)
class TierServer:
    """One model's compression tiers behind HTTP: validate -> training preprocessing -> batched model call.

    The ingress lives in the model replica on purpose: a separate ingress deployment cost an extra
    hop (and a serialized copy of every input) per request, which measured slower on CPU
    (notes/issue-7.md). Tiers are ``@serve.multiplexed`` models; a request naming its tier in
    Serve's ``serve_multiplexed_model_id`` header is routed to a replica that has it loaded.
    """

    def __init__(self, paths: dict[str, str], default: str, cfg: dict[str, Any], key_digest: str | None):
        from raylm.compress import load_artifact
        from raylm.compress.artifact import read_meta

        self._cfg = ServeConfig.model_validate(cfg)
        self._paths = paths
        self._default = default
        self._key_digest = key_digest
        self._metas = {name: read_meta(path) for name, path in paths.items()}
        meta = self._metas[default]
        self._modality = meta["task"]["modality"]
        self._labels = list(meta["labels"])
        self._model_name = meta.get("architecture", {}).get("name", "model")
        self._request_model = REQUESTS[self._modality]
        self._preprocess = Preprocessor(self._modality, meta["preprocessing"], paths[default], self._cfg.max_text_chars,
                                        self._cfg.limits)
        self._preprocess.warm_up()
        self._threads = self._cfg.model_threads
        try:
            import torch

            torch.set_num_threads(self._threads)
        except ImportError:
            pass
        # Load the default tier now: a broken artifact fails the deployment, not the first request.
        self._preloaded = {default: load_artifact(paths[default], threads=self._threads)}
        self._predict_batch.set_max_batch_size(self._cfg.max_batch_size)
        self._predict_batch.set_batch_wait_timeout_s(self._cfg.batch_wait_timeout_s)

    # -- model side

    @serve.multiplexed(max_num_models_per_replica=MAX_TIERS_PER_REPLICA)
    async def tier(self, name: str):
        if name in self._preloaded:
            return self._preloaded.pop(name)
        from raylm.compress import load_artifact

        return await asyncio.to_thread(load_artifact, self._paths[name], threads=self._threads)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)  # replaced from serve.* in __init__
    async def _predict_batch(self, items: list[tuple[str, dict[str, np.ndarray]]]) -> list[tuple[np.ndarray, int]]:
        # A tier named in the body is not Serve's multiplexed id, so one batch may mix tiers: group them.
        out: list[Any] = [None] * len(items)
        groups: dict[str, list[int]] = {}
        for i, (tier, _) in enumerate(items):
            groups.setdefault(tier, []).append(i)
        for tier, members in groups.items():
            try:
                artifact = await self.tier(tier)
            except Exception as err:  # a broken tier fails its own requests, not the whole batch
                log.error("tier %r could not be loaded: %s", tier, err)
                for i in members:
                    out[i] = (err, len(members))  # answered 503 by predict(), without the server's details
                continue
            feeds = [items[i][1] for i in members]
            merged = {name: np.concatenate([f[name] for f in feeds]) for name in artifact.inputs}
            logits = await asyncio.to_thread(artifact.predict, merged)
            start = 0
            for i, f in zip(members, feeds):
                rows = len(f[artifact.inputs[0]])
                out[i] = (logits[start:start + rows], len(members))
                start += rows
        return out

    def check_health(self) -> None:
        missing = [p for p in self._paths.values() if not (Path(p) / "artifact.json").is_file()]
        if missing:
            raise RuntimeError(f"artifact(s) gone: {missing}")

    # -- HTTP side

    def _check_key(self, request: Request) -> None:
        if self._key_digest is None:
            return
        given = request.headers.get(self._cfg.api_key_header, "")
        if not hmac.compare_digest(hashlib.sha256(given.encode()).hexdigest(), self._key_digest):
            raise HTTPException(401, f"missing or wrong API key (header {self._cfg.api_key_header})")

    async def _read_json(self, request: Request) -> Any:
        limit = self._cfg.max_payload_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPException(413, f"payload of {declared} bytes exceeds serve.max_payload_bytes={limit}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise HTTPException(413, f"payload exceeds serve.max_payload_bytes={limit}")
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as err:  # also ints past Python's digit limit
            raise HTTPException(400, f"malformed JSON: {str(err)[:200]}") from None
        except RecursionError:  # json's C parser recurses once per nesting level
            raise HTTPException(400, "malformed JSON: nested too deeply") from None

    @api.post("/predict", response_model=PredictResponse,
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": _REQUEST_SCHEMAS}}}})
    async def predict(self, request: Request) -> PredictResponse:
        self._check_key(request)
        body = await self._read_json(request)
        if not isinstance(body, dict):
            raise HTTPException(422, f"body: expected a JSON object with field '{self._modality}', got {type(body).__name__}")
        try:
            parsed = self._request_model.model_validate(body)
        except ValidationError as err:
            reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in err.errors()[:5])
            raise HTTPException(422, reasons) from None
        tier = parsed.tier or request.headers.get(TIER_HEADER) or serve.get_multiplexed_model_id() or self._default
        if tier not in self._metas:
            raise HTTPException(422, f"tier: unknown {tier[:64]!r}; one of {sorted(self._metas)}")
        items = getattr(parsed, self._modality)
        items = [items] if isinstance(items, str) else items
        if not items:
            raise HTTPException(422, f"{self._modality}: empty list")
        if len(items) > self._cfg.max_items:
            raise HTTPException(422, f"{self._modality}: {len(items)} items, more than serve.max_items={self._cfg.max_items}")
        try:
            # Tokenizing a short text is cheaper than a thread hop; decoding images and audio is not.
            feeds = self._preprocess(items) if self._modality == "text" else await asyncio.to_thread(self._preprocess, items)
        except InputError as err:
            raise HTTPException(422, str(err)) from None
        except Exception as err:  # a decoder choking on hostile bytes is still the input's fault
            log.warning("preprocessing failed: %r", err)
            raise HTTPException(422, f"{self._modality}: could not be preprocessed ({type(err).__name__})") from None
        logits, batch_requests = await self._predict_batch((tier, feeds))
        if isinstance(logits, Exception):
            raise HTTPException(503, f"tier: {tier!r} could not be loaded on this replica; try another tier")
        probs = _softmax(logits)
        bad = np.flatnonzero(~np.isfinite(probs).all(axis=-1))
        if bad.size:  # JSON has no NaN: the answer would be null probabilities
            raise HTTPException(422, f"{self._modality}[{int(bad[0])}]: the model's output is not finite for this input")
        predictions = [{"label": self._labels[int(p.argmax())],
                        "probabilities": {label: float(v) for label, v in zip(self._labels, p)}} for p in probs]
        return PredictResponse(model=self._model_name, tier=tier, predictions=predictions, batch_requests=batch_requests)

    @api.get("/models", response_model=ModelsResponse)
    async def models(self, request: Request) -> ModelsResponse:
        self._check_key(request)
        # No server paths: the report's "artifact" is where the artifact was written.
        tiers = [TierInfo(tier=name, model_file=meta["model_file"], default=name == self._default,
                          report={k: v for k, v in meta.get("report", {}).items() if k != "artifact"})
                 for name, meta in self._metas.items()]
        return ModelsResponse(modality=self._modality, labels=self._labels, tiers=tiers)

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        return {"status": "ok", "modality": self._modality, "tiers": sorted(self._metas), "default": self._default}
