"""What a cluster can hold: the nodes that are up now plus the nodes its autoscaler can add.

Every resource decision (``check_cpu_budget``, ``use_gpu: auto``, a sweep's concurrency, the
refusal of node-local paths) reads one :class:`Capacity`, so a cluster whose worker groups start
at zero accepts the demand it can grow to and refuses, naming the key, only demand it never can.

Where the node types come from (Ray 2.60 has no single public API for them):
1. Ray's GCS autoscaler state: the ``ClusterConfig`` record (node groups with resources and
   min/max counts) that Ray Data's autoscaler reads for the same question, when an autoscaler
   publishes it;
2. else the autoscaling config file of a v1 autoscaler: ``$RAYLM_AUTOSCALING_CONFIG``, or the
   cluster launcher's ``~/ray_bootstrap_config.yaml`` on the head, where ``ray job submit`` runs the
   driver (Ray's own usage stats read the same file);
3. else, when an autoscaler is running (its status in the GCS) but its node types are unknown,
   growth is *unknown*: nothing is refused for size, and a run that does not fit what is up asks
   and waits until ``train.wait_for_resources_s``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from raylm.config import ConfigError

if TYPE_CHECKING:
    from raylm.config import RaylmConfig

log = logging.getLogger(__name__)
# raylm's console prints this logger's INFO records as plain lines (raylm.console.start).
progress = logging.getLogger("raylm.progress")

Bundle = dict[str, float]
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
_SCHEDULABLE_SKIP = ("memory", "object_store_memory")


class CapacityError(ConfigError):
    """Demand the cluster can never hold, or that did not arrive in time; the message names the key."""


@dataclass(frozen=True)
class NodeType:
    """A worker node type the autoscaler can launch: per-node resources, how many, how many are up."""

    name: str
    resources: Bundle
    max_workers: int  # -1: no limit
    up: int = 0

    @property
    def addable(self) -> int:
        return 1_000_000 if self.max_workers < 0 else max(self.max_workers - self.up, 0)


@dataclass(frozen=True)
class Capacity:
    nodes_up: list[Bundle]  # each live node's total resources
    node_types: list[NodeType] = field(default_factory=list)  # worker types the autoscaler can add
    autoscaler: bool = False  # an autoscaler runs on this cluster
    types_known: bool = True  # False: an autoscaler runs but its node types could not be read
    status: dict[str, Any] = field(default_factory=dict)  # the autoscaler's last report (v1), if any

    @property
    def can_grow(self) -> bool:
        return any(t.addable for t in self.node_types) or (self.autoscaler and not self.types_known)

    @property
    def multi_node(self) -> bool:
        """More than one node up, or nodes that can be added: the driver's disk is not every task's disk."""
        return len(self.nodes_up) > 1 or self.can_grow

    def total_up(self, resource: str) -> float:
        return sum(node.get(resource, 0.0) for node in self.nodes_up)

    def total_max(self, resource: str) -> float:
        """What the cluster can grow to (``inf`` when growth is unknown or unlimited)."""
        if self.autoscaler and not self.types_known:
            return math.inf
        grow = sum(t.resources.get(resource, 0.0) * t.addable for t in self.node_types)
        return self.total_up(resource) + grow

    def gpu_type(self) -> NodeType | None:
        return next((t for t in self.node_types if t.resources.get("GPU", 0) > 0 and t.addable), None)

    def fits_now(self, bundles: list[Bundle]) -> bool:
        return fits(bundles, self.nodes_up)

    def fits_ever(self, bundles: list[Bundle]) -> bool | None:
        """Whether ``bundles`` fit at once on what the cluster can grow to; None: cannot tell."""
        if self.autoscaler and not self.types_known:
            return True if self.fits_now(bundles) else None
        grown = list(self.nodes_up)
        for node_type in self.node_types:
            grown += [dict(node_type.resources)] * min(node_type.addable, len(bundles))
        return fits(bundles, grown)

    def describe(self) -> str:
        up = f"{len(self.nodes_up)} node(s) up ({_fmt_bundle({'CPU': self.total_up('CPU'), 'GPU': self.total_up('GPU')})})"
        if self.autoscaler and not self.types_known:
            return up + "; an autoscaler whose node types raylm cannot read"
        types = ", ".join(f"{t.name} {_fmt_bundle(t.resources)} x {t.up}..{t.max_workers if t.max_workers >= 0 else 'inf'}"
                          for t in self.node_types)
        return up + (f"; the autoscaler can add {types}" if types else "; no autoscaler")


def fits(bundles: list[Bundle], nodes: list[Bundle]) -> bool:
    """First-fit decreasing: can every bundle be placed at once, each on one node?"""
    free = [dict(n) for n in nodes]
    for bundle in sorted(bundles, key=lambda b: sorted(b.items(), reverse=True), reverse=True):
        for node in free:
            if all(node.get(k, 0.0) + 1e-9 >= v for k, v in bundle.items() if v > 0):
                for k, v in bundle.items():
                    node[k] = node.get(k, 0.0) - v
                break
        else:
            return False
    return True


def _fmt_bundle(bundle: Bundle) -> str:
    shown = {k: v for k, v in bundle.items() if v and k not in _SCHEDULABLE_SKIP and not k.startswith("node:")}
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in shown.items()) + "}"


def describe_bundles(bundles: list[Bundle]) -> str:
    """``[{CPU: 1}] * 3`` -> ``3 x {CPU: 1}``."""
    counts: dict[str, int] = {}
    for bundle in bundles:
        key = _fmt_bundle(bundle)
        counts[key] = counts.get(key, 0) + 1
    return " + ".join(f"{n} x {shape}" for shape, n in counts.items())


# ---- reading it from Ray ----------------------------------------------------------------------

def read_capacity() -> Capacity:
    """The connected cluster's capacity (``ray.init`` done)."""
    import ray

    nodes_up = [{k: float(v) for k, v in n["Resources"].items() if not k.startswith("node:")}
                for n in ray.nodes() if n.get("Alive")]
    status = autoscaler_status() or _v2_status()
    report = status.get("autoscaler_report") or {}
    # Every head runs a monitor; without an autoscaling config it mirrors the nodes through Ray's
    # read-only provider, whose node types are "node_<node id>": that one can add nothing.
    mapping = report.get("node_type_mapping") or {}
    readonly = all(node_type == f"node_{node_id}" for node_id, node_type in mapping.items())
    autoscaler = bool(report) and not readonly
    active = dict(report.get("active_nodes") or {})
    for name, count in (report.get("pending_launches") or {}).items():
        active[name] = active.get(name, 0) + int(count)  # being launched: not addable again
    types = _types_from_gcs(active)
    if types is None and autoscaler:
        types = _types_from_file(active)
    return Capacity(nodes_up, types or [], autoscaler=autoscaler, types_known=types is not None or not autoscaler,
                    status=status)


def autoscaler_status() -> dict[str, Any]:
    """The v1 autoscaler's status record in the GCS (what ``ray status`` prints); {} without one."""
    from ray._private import ray_constants
    from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_initialized

    if not _internal_kv_initialized():
        return {}
    try:
        raw = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
        return json.loads(raw) if raw else {}
    except Exception as err:  # noqa: BLE001 - a status we cannot read is no status
        log.debug("autoscaler status unreadable: %s", err)
        return {}


def _v2_status() -> dict[str, Any]:
    """Autoscaler v2 (KubeRay's ``enableInTreeAutoscaling`` with v2, ``RAY_enable_autoscaler_v2``)
    writes no v1 status record: its cluster status in the same shape, {} without a v2 autoscaler."""
    try:
        import ray
        from ray.autoscaler.v2.sdk import get_cluster_status
        from ray.autoscaler.v2.utils import is_autoscaler_v2

        if not is_autoscaler_v2(fetch_from_server=True):
            return {}
        status = get_cluster_status(ray.get_runtime_context().gcs_address)
    except Exception as err:  # noqa: BLE001 - no v2 autoscaler, or one we cannot read
        log.debug("autoscaler v2 status unreadable: %s", err)
        return {}
    active: dict[str, int] = {}
    mapping = {}
    for node in status.active_nodes + status.idle_nodes:
        active[node.ray_node_type_name] = active.get(node.ray_node_type_name, 0) + 1
        mapping[node.node_id] = node.ray_node_type_name
    launches: dict[str, int] = {}
    for launch in status.pending_launches:
        launches[launch.ray_node_type_name] = launches.get(launch.ray_node_type_name, 0) + launch.count
    return {"autoscaler_report": {"active_nodes": active, "pending_launches": launches, "node_type_mapping": mapping,
                                  "pending_nodes": [(n.ip_address, n.ray_node_type_name) for n in status.pending_nodes],
                                  "failed_nodes": [(n.ip_address, n.ray_node_type_name) for n in status.failed_nodes]}}


def _types_from_gcs(active: dict[str, int]) -> list[NodeType] | None:
    import ray._private.state

    try:
        config = ray._private.state.state.get_cluster_config()
    except Exception:  # noqa: BLE001 - older GCS, or no such record
        return None
    if not config or not config.node_group_configs:
        return None
    return [NodeType(g.name, {k: float(v) for k, v in g.resources.items()}, int(g.max_count), active.get(g.name, 0))
            for g in config.node_group_configs]


def _types_from_file(active: dict[str, int]) -> list[NodeType] | None:
    path = Path(os.environ.get("RAYLM_AUTOSCALING_CONFIG") or BOOTSTRAP_CONFIG).expanduser()
    if not path.is_file():
        return None
    try:
        import yaml

        return node_types_from_config(yaml.safe_load(path.read_text()), active)
    except Exception as err:  # noqa: BLE001 - an unreadable file: growth unknown, never a crash
        log.debug("autoscaling config %s unreadable: %s", path, err)
        return None


def node_types_from_config(config: dict[str, Any], active: dict[str, int]) -> list[NodeType]:
    """Worker node types of an autoscaling config (cluster launcher / fake_multinode YAML)."""
    head = config.get("head_node_type")
    overall = config.get("max_workers")
    types = []
    for name, spec in (config.get("available_node_types") or {}).items():
        if name == head:
            continue
        most = int(spec.get("max_workers", overall if overall is not None else 0))
        if overall is not None:
            most = min(most, int(overall))
        resources = {k: float(v) for k, v in (spec.get("resources") or {}).items()}
        types.append(NodeType(name, resources, most, active.get(name, 0)))
    return types


# ---- what a run needs -------------------------------------------------------------------------

def training_bundles(num_workers: int, cpus_per_worker: float, use_gpu: bool) -> list[Bundle]:
    """Ray Train's workers, and one CPU for Ray Data to stream on (with none left it waits forever)."""
    worker = {"CPU": cpus_per_worker} | ({"GPU": 1.0} if use_gpu else {})
    return [dict(worker) for _ in range(num_workers)] + [{"CPU": 1.0}]


def check_training_fits(capacity: Capacity, num_workers: int, cpus_per_worker: float, use_gpu: bool,
                        min_workers: int | None = None) -> None:
    """Refuse, naming the key, a training run that never fits what the cluster can grow to. ``min_workers``
    (an elastic run, ``train.num_workers: [min, max]``; ``num_workers`` is its max): named as the user
    wrote it. The maximum must fit too: Ray Train's elastic group grows to what is free, and a group that
    took every CPU would leave Ray Data none to stream on (a wait forever)."""
    given = f"[{min_workers}, {num_workers}]" if min_workers is not None and min_workers != num_workers else str(num_workers)
    elastic = "" if given == str(num_workers) else f" (its maximum, {num_workers} workers)"
    worker = {"CPU": cpus_per_worker} | ({"GPU": 1.0} if use_gpu else {})
    if capacity.fits_ever([worker]) is False:
        if use_gpu and capacity.total_max("GPU") < 1:
            raise CapacityError(f"train.use_gpu=true: this cluster has no GPU and no GPU node type to add "
                                f"({capacity.describe()}); set train.use_gpu=auto or false")
        raise CapacityError(f"train.cpus_per_worker={cpus_per_worker:g}: no node this cluster has or can add holds "
                            f"one worker {_fmt_bundle(worker)} ({capacity.describe()})")
    bundles = training_bundles(num_workers, cpus_per_worker, use_gpu)
    if capacity.fits_ever(bundles) is False:
        total = capacity.total_max("CPU")
        left = total - num_workers * cpus_per_worker
        grown = "" if not capacity.can_grow else " it can grow to"
        if left >= 1:  # enough CPUs in total, but no way to place each worker whole on one node
            raise CapacityError(
                f"train.num_workers={given}{elastic} x train.cpus_per_worker={cpus_per_worker:g}: the workers (each on one "
                f"node) and 1 CPU for Ray Data do not fit on the nodes of this cluster ({capacity.describe()}): "
                "lower train.cpus_per_worker or train.num_workers")
        raise CapacityError(
            f"train.num_workers={given}{elastic} x train.cpus_per_worker={cpus_per_worker:g} leaves {left:g} of the "
            f"{total:g} CPUs{grown} for Ray Data, which needs at least 1 ({capacity.describe()}): lower "
            f"train.num_workers{' (its maximum)' if elastic else ''} or train.cpus_per_worker (fractions are fine), "
            "or add nodes")


def gpu_auto(capacity: Capacity, num_workers: int) -> tuple[bool, str | None]:
    """``train.use_gpu: auto``: GPUs up for every worker, or a GPU node type the autoscaler can add
    (a GPU group at zero). Returns (use_gpu, the line to say when it is the autoscaler's GPUs)."""
    if capacity.total_up("GPU") >= num_workers:
        return True, None
    gpu_type = capacity.gpu_type()
    if gpu_type is not None and capacity.total_max("GPU") >= num_workers:
        return True, (f"train.use_gpu=auto: GPU training: node type {gpu_type.name} "
                      f"{_fmt_bundle(gpu_type.resources)} can be added ({gpu_type.up} up now)")
    return False, None


# ---- waiting for the autoscaler ---------------------------------------------------------------

def _launching(capacity: Capacity) -> str:
    report = capacity.status.get("autoscaler_report") or {}
    launches = dict(report.get("pending_launches") or {})
    for _ip, node_type, *_ in report.get("pending_nodes") or []:
        launches[node_type] = launches.get(node_type, 0) + 1
    failed = report.get("failed_nodes") or []
    parts = [f"launching {n} node{'s' if n != 1 else ''} of {t}" for t, n in launches.items() if n]
    if failed:
        parts.append(f"{len(failed)} failed launch(es)")
    return "autoscaler " + (", ".join(parts) if parts else "asked")


@contextmanager
def resources_for(bundles: list[Bundle], *, timeout_s: float, key: str = "train.wait_for_resources_s",
                  enough: list[Bundle] | None = None, read: Callable[[], Capacity] = read_capacity,
                  poll_s: float = 1.0) -> Iterator[Capacity]:
    """Hold an autoscaler request for ``bundles`` while the block runs; when they do not fit what is
    up, ask (``ray.autoscaler.sdk.request_resources``) and wait, with one progress line, up to
    ``timeout_s``, then raise naming what never came. ``enough``: a smaller demand to start on
    (an elastic run's minimum; the rest keeps being asked for). The request is withdrawn on exit,
    so the cluster scales back down when idle (Ray keeps one request per cluster: the last one wins)."""
    enough = enough or bundles
    capacity = read()
    if capacity.fits_now(bundles) or not capacity.can_grow:
        yield capacity  # nothing to ask for (or no one to ask: the resource checks already ran)
        return
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=bundles)
    try:
        began = time.monotonic()
        said = False
        while not capacity.fits_now(enough):
            waited = time.monotonic() - began
            if not said and (waited >= 5 or _launching(capacity) != "autoscaler asked"):
                progress.info(f"waiting for {describe_bundles(bundles)}: {_launching(capacity)} "
                              f"(up to {key}={timeout_s:g} s)")
                said = True
            if waited > timeout_s:
                missing = _missing(enough, capacity.nodes_up)
                raise CapacityError(
                    f"{key}={timeout_s:g}: after {waited:.0f} s the cluster still lacks {describe_bundles(missing)} "
                    f"of the {describe_bundles(enough)} this run needs to start; {_launching(capacity)}; {capacity.describe()}")
            time.sleep(poll_s)
            capacity = read()
        if said:
            progress.info(f"resources up after {time.monotonic() - began:.0f} s: {capacity.describe()}")
        yield capacity
    finally:
        request_resources(bundles=[])


def _missing(bundles: list[Bundle], nodes: list[Bundle]) -> list[Bundle]:
    """The bundles that do not fit (greedily) on ``nodes``."""
    placed: list[Bundle] = []
    missing = []
    for bundle in bundles:
        if fits(placed + [bundle], nodes):
            placed.append(bundle)
        else:
            missing.append(bundle)
    return missing


# ---- paths every node must read ---------------------------------------------------------------

def is_uri(path: str | None) -> bool:
    return path is not None and "://" in path


def check_paths_shared(capacity: Capacity, *, storage_path: str, storage_shared: bool, data_path: str | None,
                       validation_path: str | None, demo_cache_dir: str | None) -> None:
    """On a cluster of several nodes (or one that can add nodes), refuse paths only the driver's
    disk has: the run directory, the user's data, the demo cache. A URI, or a path declared an
    NFS-style shared mount (``train.storage_shared: true``), is fine."""
    if not capacity.multi_node or storage_shared:
        return
    where = (f"this cluster has {len(capacity.nodes_up)} nodes up" if len(capacity.nodes_up) > 1
             else "this cluster's autoscaler can add nodes")
    fix = ("use a URI (s3://..., gs://...) or a path every node mounts at the same place and declare it with "
           "train.storage_shared=true")
    problems = []
    if not is_uri(storage_path):
        problems.append(f"train.storage_path: {storage_path} is on the driver's disk: checkpoints written on "
                        "another node would never reach it")
    for key, path in (("data.path", data_path), ("data.validation_path", validation_path)):
        if path is not None and not is_uri(path):
            problems.append(f"{key}: {path} exists on the driver's disk only: tasks on other nodes cannot read it")
    if demo_cache_dir is not None and not is_uri(storage_path):  # with a URI storage the demo is uploaded there
        problems.append(f"data.cache_dir: the demo dataset is generated in {demo_cache_dir} on the driver's disk "
                        "and read by tasks on every node")
    if problems:
        raise CapacityError(f"{where} ({capacity.describe()}):\n  " + "\n  ".join(problems) + f"\n  {fix}")


def check_run_paths(cfg: RaylmConfig, capacity: Capacity | None = None) -> Capacity:
    """The node-local-path refusals for ``cfg`` on the connected cluster (before any Ray work
    beyond connecting); returns the capacity it read."""
    capacity = capacity or read_capacity()
    check_paths_shared(capacity, storage_path=cfg.train.storage_path, storage_shared=cfg.train.storage_shared,
                       data_path=cfg.data.path, validation_path=cfg.data.validation_path,
                       demo_cache_dir=cfg.data.cache_dir if cfg.data.path is None else None)
    return capacity
