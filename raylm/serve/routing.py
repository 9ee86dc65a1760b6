"""Which tier answers a request that names none: the default, a canary share, and a shadow copy.

The routing travels as the deployment's ``user_config``, not in its constructor arguments: Serve applies
a ``user_config`` change to the running replicas through ``reconfigure()`` (a lightweight update when a
``serve deploy`` config changes only it), and a ``serve.run`` of the same application with a new routing
rolls the replicas over while the old ones finish their requests. Either way, promoting a canary or
rolling it back is a redeploy with a new ``serve`` section (``raylm serve --promote`` / ``--rollback``,
or ``promoted()`` / ``rolled_back()`` here), and no request is dropped (tests/test_canary.py).

The split is a Bernoulli draw per request from the replica's own generator (seeded from the OS): over N
requests the canary share has a standard deviation of sqrt(p (1 - p) / N), 0.67 points at p=10 %, N=2000.
A counter-based split would be exact, but would line up with clients that send in fixed cycles.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from raylm.config import ConfigError, ServeConfig
from raylm.config.serve import CanaryConfig

ROUTING_FIELDS = ("default_tier", "canary", "shadow", "max_batch_size", "batch_wait_timeout_s")


class Routing(BaseModel):
    """What a replica reads from its ``user_config``: where requests go, and how they are batched (batching
    follows the default tier's latency curve, so a promotion may change it without a restart)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: str
    canary: str | None = None
    canary_percent: float = Field(0.0, ge=0, le=100)
    shadow: str | None = None
    max_batch_size: int = Field(1, ge=1)
    batch_wait_timeout_s: float = Field(0.0, ge=0)

    def pick(self, rng: random.Random) -> str:
        """The tier that answers one request naming none."""
        if self.canary and rng.random() * 100 < self.canary_percent:
            return self.canary
        return self.default

    def tiers(self) -> list[str]:
        """The tiers this routing sends traffic to (loaded before the replica takes it)."""
        return list(dict.fromkeys(t for t in (self.default, self.canary, self.shadow) if t))


def routing_for(cfg: ServeConfig, tiers: list[str], default: str, max_batch_size: int, wait_s: float) -> Routing:
    """The routing of ``cfg`` over ``tiers``, checked before Ray starts: every named tier exists, and the shadow
    is not the default (it would be compared with itself)."""
    if cfg.canary is not None and cfg.canary.tier not in tiers:
        raise ConfigError(f"serve.canary.tier: {cfg.canary.tier!r} is not one of the tiers {sorted(tiers)}")
    if cfg.canary is not None and cfg.canary.tier == default:
        raise ConfigError(f"serve.canary.tier: {default!r} is already the default tier (serve.default_tier)")
    if cfg.shadow is not None and cfg.shadow not in tiers:
        raise ConfigError(f"serve.shadow: {cfg.shadow!r} is not one of the tiers {sorted(tiers)}")
    if cfg.shadow is not None and cfg.shadow == default:
        raise ConfigError(f"serve.shadow: {default!r} is the default tier; shadow another tier, or promote it")
    canary = cfg.canary
    return Routing(default=default, canary=canary.tier if canary else None,
                   canary_percent=canary.percent if canary else 0.0, shadow=cfg.shadow,
                   max_batch_size=max_batch_size, batch_wait_timeout_s=wait_s)


def constructor_config(cfg: ServeConfig) -> dict[str, Any]:
    """The ``serve`` section a replica is constructed with: without the routing, so that a redeploy changing
    only the routing leaves the constructor's arguments (Serve's code version for ``serve deploy``) alone."""
    return cfg.model_copy(update={name: None for name in ROUTING_FIELDS}).model_dump()


def pin_code_version(deployment: Any, args: tuple) -> None:
    """Give the deployment a code version derived from its constructor arguments and raylm's serving code.

    ``serve.run`` otherwise gives every deployment a random version, and Serve restarts the replicas of a
    redeployed application even when only its ``user_config`` changed: requests in flight on a replica that
    outlives ``graceful_shutdown_timeout_s`` fail (3 of 385 did in tests/test_canary.py at load ~70). With the
    same version Serve applies a routing change by calling ``reconfigure()`` on the running replicas. Serve
    reads the version from the private ``Deployment._version`` (what the removed ``version=`` option set);
    where a Ray release lacks it, a redeploy falls back to the rolling restart."""
    from pathlib import Path

    if not hasattr(deployment, "_version"):
        return
    digest = hashlib.sha256(json.dumps(args, sort_keys=True, default=str).encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):  # new serving code: new replicas
        digest.update(source.read_bytes())
    deployment._version = digest.hexdigest()[:16]


def promoted(cfg: ServeConfig) -> ServeConfig:
    """``cfg`` with its canary tier as the default tier and no canary (the shadow stays unless it was the canary)."""
    if cfg.canary is None:
        raise ConfigError("serve.canary: not set; there is no canary to promote")
    return cfg.model_copy(update={"default_tier": cfg.canary.tier, "canary": None})


def rolled_back(cfg: ServeConfig) -> ServeConfig:
    """``cfg`` without its canary: every request naming no tier goes to the default tier again."""
    if cfg.canary is None:
        raise ConfigError("serve.canary: not set; there is no canary to roll back")
    return cfg.model_copy(update={"canary": None})


def with_canary(cfg: ServeConfig, tier: str, percent: float) -> ServeConfig:
    return cfg.model_copy(update={"canary": CanaryConfig(tier=tier, percent=percent)})


class RoutedReplica:
    """TierServer's routing side (a mixin): ``reconfigure`` takes a new routing, ``_shadow_copy`` builds the task
    Starlette runs after the response is sent. Needs ``_loaded``, ``_preloaded``, ``_load_tier``,
    ``_predict_batch``, ``_classify`` and ``_shadow`` (a ShadowRecorder) from the class it is mixed into."""

    _routing: Routing | None

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """A new routing (build_app, or a redeploy that changed only it): its tiers are loaded first, then it
        applies; Serve calls this before a new replica takes requests, so a broken artifact fails the deployment."""
        routing = Routing.model_validate(user_config)
        for name in routing.tiers():
            if name not in self._loaded and name not in self._preloaded:  # type: ignore[attr-defined]
                self._preloaded[name] = await self._load_tier(name)  # type: ignore[attr-defined]
        self._predict_batch.set_max_batch_size(routing.max_batch_size)  # type: ignore[attr-defined]
        self._routing = routing

    @property
    def _default(self) -> str:
        assert self._routing is not None
        return self._routing.default

    @property
    def _max_batch_size(self) -> int:
        assert self._routing is not None
        return self._routing.max_batch_size

    @property
    def _wait_s(self) -> float:
        assert self._routing is not None
        return self._routing.batch_wait_timeout_s

    def _shadow_copy(self, routing: Routing, tier: str, items: list, probs: np.ndarray, answer_ms: float):
        """The shadow tier's run of the same items, as a BackgroundTask (run after the response is sent), or None."""
        from starlette.background import BackgroundTask

        if not routing.shadow or routing.shadow == tier:
            return None
        if not self._shadow.admit():  # type: ignore[attr-defined]
            self._shadow.skipped(tier, routing.shadow)  # type: ignore[attr-defined]
            return None
        return BackgroundTask(self._run_shadow, routing.shadow, tier, items, probs.argmax(-1), answer_ms)

    async def _run_shadow(self, shadow: str, tier: str, items: list, answer_top1: np.ndarray, answer_ms: float) -> None:
        start = time.perf_counter()
        try:
            probs, _ = await self._classify(shadow, items, {})  # type: ignore[attr-defined]
        except Exception as err:  # the client has its answer; the shadow's failure is only counted
            logging.getLogger("ray.serve").warning("shadow tier %r failed: %r", shadow, err)
            self._shadow.skipped(tier, shadow, failed=True)  # type: ignore[attr-defined]
            return
        finally:
            self._shadow.release()  # type: ignore[attr-defined]
        self._shadow.record(tier, shadow, answer_top1, probs.argmax(-1), answer_ms,  # type: ignore[attr-defined]
                            (time.perf_counter() - start) * 1000)
