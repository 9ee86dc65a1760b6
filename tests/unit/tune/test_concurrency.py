"""How many trials a sweep runs at once on a cluster described by a ``Capacity`` (no Ray needed)."""

import pytest

from raylm.capacity import Capacity, NodeType
from raylm.config import ConfigError, load_config
from raylm.tune.sweep import concurrency

HEAD_AT_ZERO = {"CPU": 0.0, "memory": 4e9}  # KubeRay's head: num-cpus "0"
ONE_CPU = {"CPU": 1.0}


def _cfg(*overrides):
    return load_config("jobs/configs/image_tune.yaml", ["train.use_gpu=false", *overrides])


def test_node_types_unknown_queue_the_trials_instead_of_refusing_the_sweep():
    """The shipped KubeRay manifests: a head at 0 CPUs, workers the autoscaler adds, node types raylm cannot read."""
    unknown = Capacity([HEAD_AT_ZERO], [], autoscaler=True, types_known=False)
    assert concurrency(_cfg(), unknown) == 1
    assert concurrency(_cfg("tune.max_concurrent_trials=3"), unknown) == 3
    # what is up already holds two (one CPU stays for Ray Data): they run at once
    assert concurrency(_cfg(), Capacity([{"CPU": 2.0}, ONE_CPU], [], autoscaler=True, types_known=False)) == 4


def test_known_node_types_still_bound_the_sweep_by_what_the_cluster_can_grow_to():
    fixed = Capacity([ONE_CPU], [], autoscaler=False)
    with pytest.raises(ConfigError, match="one trial needs 0.5 CPUs .* the cluster has 1$"):
        concurrency(_cfg(), fixed)
    grows = Capacity([ONE_CPU], [NodeType("cpu", {"CPU": 2.0}, max_workers=2)], autoscaler=True)
    assert concurrency(_cfg(), grows) == 8
    with pytest.raises(ConfigError, match="the cluster's 5 CPUs \\(including what its autoscaler can add\\) fit 8"):
        concurrency(_cfg("tune.max_concurrent_trials=9"), grows)
