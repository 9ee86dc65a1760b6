"""Two Ray nodes on one machine (ray.cluster_utils.Cluster): workers spread across nodes."""

import pytest

pytestmark = pytest.mark.integration


# slow: the default suite's node-loss case (storage/test_storage_runs.py) already trains two workers on
# two nodes; this placement check alone cost 37 s of the 15-minute budget.
@pytest.mark.slow
def test_two_workers_land_on_different_nodes(tiny_config):
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.state import list_actors

    from raylm.train import fit

    ray.shutdown()  # the shared local Ray; the ray_local fixture restarts it for later tests
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    cluster.add_node(num_cpus=2)
    try:
        ray.init(address=cluster.address)
        cluster.wait_for_nodes()
        outcome = fit(tiny_config("image", "train.epochs=1", "train.placement_strategy=STRICT_SPREAD",
                                 "train.storage_shared=true"))  # two nodes, one disk
        assert outcome.metrics["epoch"] == 1
        workers = [a for a in list_actors(detail=True, limit=1000) if a.class_name == "RayTrainWorker"]
        assert len({w.node_id for w in workers}) == 2
    finally:
        ray.shutdown()
        cluster.shutdown()
