"""``serve``: Ray Serve of artifacts: batching, autoscaling, request limits, API key."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from raylm.config.data import InputLimits
from raylm.config.section import Section


DEFAULT_METRICS_INTERVAL_S = 10.0  # Serve's own default (ray.serve.config)
# Where raylm starts Ray: replicas and handles push their load every second (Serve's default is 10 s),
# so a look-back window of a few seconds sees fresh numbers and scale-up follows a load step in seconds.
AUTOSCALING_ENV = {"RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1",
                   "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1"}

# How requests reach a replica: environment variables Serve reads when its processes start, so they
# take effect only where raylm starts Ray itself (an embedded Ray); a cluster sets them on its nodes
# (docs/fast.md). "auto" is the fastest mode that passes raylm's whole serve suite on one stable URL: HAProxy in
# front of direct-ingress replicas when its binary is there (raylm.runtime.resolve_ingress; `ray[serve]` installs
# one), else Serve's proxy, said once. HAProxy is ~1.5-4 ms outside the replica at c=1 (the proxy ~8-13 ms;
# benchmarks/serve_load.py). What kept it opt-in, traced and settled (docs/fast.md):
#   * a SIGTERM drain answered requests sent before the signal with 404: another embedded Ray's Python proxy on
#     the same fixed fallback port (SO_REUSEPORT), and after serve.delete the replica's DRAINING health check and
#     the reload without the route: raylm/runtime.py gives each Ray its own ports, and raylm/serve/lifecycle.py
#     closes HAProxy's door and waits for the requests in flight before anything goes;
#   * a SIGKILLed replica's in-flight requests ended as dropped connections: HAProxy's replays went back to the
#     dead replica (leastconn, marked down only after 3 refusals = its 3 retries); raylm/runtime.py marks it down
#     at the first refusal. What is left is HAProxy's keep-alive rule: a request it could not send on a reused
#     server connection is answered by closing the client's connection without a response (HTTP's "not processed,
#     retry" signal), and an answer the replica had begun is cut off: not a 5xx (test_faults.py's SIGKILL case).
# Ray's throughput-optimized replicas behind the proxy gained nothing where the time goes (the proxy's hop).
# A user who exported Serve's variables keeps them.
INGRESS_ENV: dict[str, dict[str, str]] = {
    "proxy": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "0", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0", "RAY_SERVE_ENABLE_HA_PROXY": "0"},
    "direct": {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", "RAY_SERVE_ENABLE_HA_PROXY": "0"},
    "haproxy": {"RAY_SERVE_ENABLE_HA_PROXY": "1"},
}
Ingress = Literal["auto", "proxy", "direct", "haproxy"]


def ingress_of(env: dict[str, str | None]) -> str:
    """The ingress mode a node's environment selects (what raylm prints for an existing cluster)."""
    on = {k: env.get(k) == "1" for k in ("RAY_SERVE_THROUGHPUT_OPTIMIZED", "RAY_SERVE_ENABLE_DIRECT_INGRESS",
                                          "RAY_SERVE_ENABLE_HA_PROXY")}
    direct = on["RAY_SERVE_ENABLE_DIRECT_INGRESS"] or (on["RAY_SERVE_THROUGHPUT_OPTIMIZED"]
                                                        and env.get("RAY_SERVE_ENABLE_DIRECT_INGRESS") != "0")
    if on["RAY_SERVE_ENABLE_HA_PROXY"]:
        return "haproxy"
    if direct:
        return "direct"
    return "proxy (throughput-optimized)" if on["RAY_SERVE_THROUGHPUT_OPTIMIZED"] else "proxy"


class CanaryConfig(Section):
    """``serve.canary``: a share of the default tier's traffic answered by another tier (docs/canary.md)."""

    tier: str = Field(..., min_length=1, description="the tier that answers the canary share")
    percent: float = Field(..., ge=0, le=100, description="share of requests that name no tier, in percent")


class ServeConfig(Section):
    """Ray Serve of ARTIFACTs (raylm/serve): batching, autoscaling, request limits, API key."""

    host: str = Field("127.0.0.1", description="HTTP bind address (0.0.0.0 in a cluster)")
    port: int = Field(8000, ge=1, le=65535)
    max_batch_size: int | None = Field(None, ge=1, description="rows per model call; 1 = batching off; "
                                       "None = from the default tier's measured latency curve")
    batch_wait_timeout_s: float | None = Field(None, ge=0, le=10, description="how long a batch waits to fill while "
                                               "other requests are arriving (never when none is); None = batch-1 latency")
    min_replicas: int = Field(1, ge=0, description="replicas (autoscaling_config)")
    max_replicas: int = Field(2, ge=1)
    max_replicas_per_node: int | None = Field(
        None, ge=1, le=100, description="Serve's max_replicas_per_node: at most this many replicas on one node "
                                        "(1 on a cluster: a lost node takes one replica); None = no limit")
    target_ongoing_requests: float = Field(16, gt=0, description="autoscaling target per replica")
    # Scale-up within ~10 s of a load step (benchmarks/serve_load.py's ramp): the load is pushed every
    # look_back_period_s / 2 = 1 s, so the window sees a step within one push, Serve then waits
    # upscale_delay_s = 1 s (decision ~2 s after the step), and the new replica's start takes the rest.
    upscale_delay_s: float = Field(1, ge=0, description="autoscaling_config: load above target this long adds replicas")
    downscale_delay_s: float = Field(600, ge=0, description="autoscaling_config: load below target this long removes them")
    look_back_period_s: float = Field(2, gt=0, description="autoscaling_config: window the load is averaged over "
                                      "(metrics are pushed at half of it, at most every 10 s: see autoscaling_config())")
    max_ongoing_requests: int = Field(64, ge=1, description="per replica, before the router queues")
    replica_cpus: float = Field(1.0, gt=0, description="CPUs reserved per replica")
    model_threads: int = Field(1, ge=1, description="intra-op threads per model replica (torch / ONNX Runtime)")
    default_tier: str | None = Field(None, description="tier used when a request names none; default: the first artifact")
    max_payload_bytes: int = Field(1_048_576, ge=1024, description="larger request bodies answer 413")
    max_text_chars: int = Field(2000, ge=1, description="longer texts answer 422")
    max_items: int = Field(64, ge=1, description="texts / images / clips per request")
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                    description="env var holding the API key; leave out for no key (local use)")
    api_key_header: str = "x-api-key"
    graceful_shutdown_s: float = Field(20, ge=0, description="SIGTERM/SIGINT to `raylm serve` (or a pipeline that keeps "
                                       "serving): how long in-flight requests get to finish before the app is removed")
    graceful_shutdown_timeout_s: float | None = Field(None, ge=0, description="Serve's per-replica drain (scale-down, "
                                                      "redeploy, stop); default: serve.graceful_shutdown_s")
    health_check_period_s: float = Field(10, gt=0)
    access_log: bool = Field(True, description="Serve's access log line per request in each replica's log file")
    request_timeout_s: float = Field(30, gt=0, description="Serve's HTTP proxies end a request after this long")
    ingress: Ingress = Field("auto", description="how requests reach replicas where raylm starts Ray: auto (the "
                             "fastest mode that passes the serve suite: haproxy when its binary is there, else "
                             "Serve's proxy), proxy, direct, haproxy; a cluster's own mode is read and printed")
    limits: InputLimits = InputLimits()
    # Routing (docs/canary.md): Serve's user_config, so a redeploy that changes only these reconfigures the
    # running replicas in place (raylm/serve/routing.py).
    canary: CanaryConfig | None = Field(None, description="{tier, percent}: that share of the requests naming no "
                                        "tier is answered by the canary tier")
    shadow: str | None = Field(None, min_length=1, description="tier that gets a copy of each routed request after "
                               "the answer is sent; live top-1 agreement and both latencies are recorded")
    shadow_max_pending: int = Field(64, ge=1, description="shadow copies waiting or running per replica; more are "
                                    "skipped (counted): the shadow never queues up behind live traffic")
    shadow_summary_dir: str | None = Field(None, description="where replicas write shadow-<replica>.json summaries "
                                           "(read by `raylm runs`); default: <run>/serve of the default tier's "
                                           "artifact when it is a local <run>/compress/<variant> directory")
    versions: dict[str, str | int] = Field(default_factory=dict, description="tier -> model version for the Open Inference "
                                     "Protocol's /versions/{version} paths (the registry version where there is one); "
                                     "default: the first 12 hex digits of the artifact's content hash")

    def http_options(self) -> dict[str, Any]:
        """``serve.start(http_options=...)``: where the proxies listen, and how long a request may take."""
        return {"host": self.host, "port": self.port, "request_timeout_s": self.request_timeout_s}

    def autoscaling_config(self) -> dict[str, Any]:
        """Serve's autoscaling_config. Serve decides on metrics it receives every ``metrics_interval_s``
        (10 s unless told otherwise) and warns when the look-back window is not longer than that: the
        interval is derived as half the window (at most 10 s), so every window holds two reports."""
        config: dict[str, Any] = {
            "min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
            "initial_replicas": max(self.min_replicas, 1), "target_ongoing_requests": self.target_ongoing_requests,
            "upscale_delay_s": self.upscale_delay_s, "downscale_delay_s": self.downscale_delay_s,
            "look_back_period_s": self.look_back_period_s}
        if self.metrics_interval_s() < DEFAULT_METRICS_INTERVAL_S:
            config["metrics_interval_s"] = self.metrics_interval_s()
        return config

    def metrics_interval_s(self) -> float:
        return min(DEFAULT_METRICS_INTERVAL_S, self.look_back_period_s / 2)

    def replica_shutdown_s(self) -> float:
        """Serve's ``graceful_shutdown_timeout_s`` for each replica."""
        return self.graceful_shutdown_s if self.graceful_shutdown_timeout_s is None else self.graceful_shutdown_timeout_s

    @model_validator(mode="after")
    def _replica_range(self) -> ServeConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"serve.min_replicas={self.min_replicas} exceeds serve.max_replicas={self.max_replicas}")
        if self.replica_shutdown_s() > self.graceful_shutdown_s:
            # A replica still draining when the process gives up would lose its requests.
            raise ValueError(f"serve.graceful_shutdown_timeout_s={self.graceful_shutdown_timeout_s:g} exceeds "
                             f"serve.graceful_shutdown_s={self.graceful_shutdown_s:g}")
        if self.canary is not None and self.shadow == self.canary.tier:
            raise ValueError(f"serve.shadow={self.shadow!r} is also serve.canary.tier: a canary's answers would be "
                             "compared with themselves")
        return self
