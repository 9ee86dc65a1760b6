"""Serve on a multi-node cluster (``ray.cluster_utils.Cluster``: a head that takes no work and three
worker nodes on this machine): raylm's app with ``serve.min_replicas=2`` and
``serve.max_replicas_per_node=1`` puts its replicas on two different nodes; one of those nodes
removed under steady HTTP load fails at most 1 % of the requests, and the replica comes back on the
spare node. The figures (requests, failures, seconds to replace) are printed for docs/serving.md."""

from __future__ import annotations

import time

import pytest

from tests.helpers.faults import SteadyLoad, running_replicas, wait_for

# Four Ray nodes, an artifact, two replicas and a third started after the loss: 64-148 s here
# (load average 9-40), over the default suite's per-test budget.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = "spread"
REPLICA_CLASS = f"ServeReplica:{APP}:TierServer"


def _replica_nodes() -> list[str]:
    """Node ids of the app's live replicas (State API of this cluster)."""
    import ray
    from ray.util.state import list_actors

    actors = list_actors(address=ray.get_runtime_context().gcs_address, raise_on_missing_output=False,
                         filters=[("class_name", "=", REPLICA_CLASS), ("state", "=", "ALIVE")])
    return sorted(a.node_id for a in actors)


@pytest.fixture
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()  # the shared local Ray; the ray_local fixture restarts it for later tests
    # The head takes no work, as in cluster/: it runs the GCS, the Serve controller and its proxy.
    # A lost node is marked dead by the GCS's health check of its raylet; checking every second and
    # giving up after 3 misses (shorter than Ray's default) keeps the test short, the mechanism is the same.
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}})
    workers = [cluster.add_node(num_cpus=1) for _ in range(3)]  # two replicas and a spare node
    try:
        ray.init(address=cluster.address)
        cluster.wait_for_nodes()
        yield cluster, workers
    finally:
        from ray import serve

        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            cluster.shutdown()


def test_a_lost_node_under_steady_load_fails_at_most_1_percent_and_its_replica_is_replaced(cluster, data_root, tmp_path):
    from ray import serve

    from raylm.serve import build_app, load_serve_config
    from tests.helpers.ports import free_port as _free_port
    from tests.helpers.serving import _b64, _image_artifact, _png

    ray_cluster, workers = cluster
    artifact = _image_artifact(tmp_path, data_root, "spread")
    port = _free_port()
    # The load goes to the head's proxy. With proxies on every node of one machine, they share the
    # port (SO_REUSEPORT) and the kernel hands each connection to any of them: a client whose
    # connection sat on the lost node's proxy loses the request in flight there, which says nothing
    # about the replicas (on a real cluster the load balancer's health check drops that proxy).
    serve.start(
                http_options={"host": "127.0.0.1", "port": port, "request_timeout_s": 20})
    cfg = load_serve_config(None, ["serve.min_replicas=2", "serve.max_replicas=2", "serve.max_replicas_per_node=1",
                                   "serve.replica_cpus=0.25", "serve.graceful_shutdown_timeout_s=1",
                                   "serve.health_check_period_s=1"])
    serve.run(build_app([artifact], cfg), name=APP, route_prefix=f"/{APP}")
    wait_for(lambda: running_replicas(APP) == 2 and len(_replica_nodes()) == 2, 120, "two running replicas")
    before = _replica_nodes()
    assert len(set(before)) == 2, f"both replicas on one node: {before}"  # spread by max_replicas_per_node

    timeout_s = 20
    load = SteadyLoad(f"http://127.0.0.1:{port}/{APP}/predict", {"image": _b64(_png("horizontal"))},
                      concurrency=4, timeout_s=timeout_s)
    load.start()
    try:
        wait_for(lambda: len(load.answers) >= 100, 120, "100 answers before the node is lost")
        (victim,) = [node for node in workers if node.node_id == before[0]]
        ray_cluster.remove_node(victim, allow_graceful=False)  # the node dies: raylet, replica and all
        lost_at = time.time()
        wait_for(lambda: running_replicas(APP) == 2 and len(set(_replica_nodes())) == 2
                  and victim.node_id not in _replica_nodes(), 180, "the lost replica to be replaced on another node")
        replaced_at = time.time()
        wait_for(lambda: len([a for a in load.answers if a[0] > replaced_at]) >= 20, 120, "answers after the replacement")
    finally:
        load.stop.set()
        load.join(timeout=timeout_s + 10)
    answers, failed = load.answers, load.failed()
    during = [a for a in answers if lost_at <= a[0] <= replaced_at]
    print(f"\nnode-loss: {len(failed)} of {len(answers)} requests failed ({len(during)} sent while the replica "
          f"was being replaced); replaced {replaced_at - lost_at:.1f} s after the node was lost; "
          f"failures: {sorted({str(status) for _, status, _ in failed})}")
    assert len(answers) >= 150 and during
    assert len(failed) <= 0.01 * len(answers), f"{len(failed)} of {len(answers)} failed: {failed[:10]}"
    after = _replica_nodes()
    assert before[1] in after and before[0] not in after and len(set(after)) == 2
