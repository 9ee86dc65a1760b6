"""Capacity math and the refusals that come from it, without Ray: what is up, what the
autoscaler can add, and the key each refusal names."""

from __future__ import annotations

import pytest

from raylm.capacity import (Capacity, CapacityError, NodeType, check_paths_shared, check_training_fits, describe_bundles,
                            fits, gpu_auto, node_types_from_config, resources_for, training_bundles)

HEAD = {"CPU": 1.0}
CPU_WORKERS = NodeType("ray.worker.cpu", {"CPU": 2.0}, max_workers=2)
GPU_WORKERS = NodeType("ray.worker.gpu", {"CPU": 8.0, "GPU": 1.0}, max_workers=4)


def test_first_fit_places_each_bundle_on_one_node():
    assert fits([{"CPU": 1}] * 3, [{"CPU": 1}, {"CPU": 2}])
    assert not fits([{"CPU": 1.5}] * 2, [{"CPU": 1}, {"CPU": 2}])  # 3.5 CPUs in total, but no node takes two
    assert not fits([{"GPU": 1}], [{"CPU": 8}])


def test_zero_worker_nodes_up_still_grow_to_the_node_types_maximum():
    cap = Capacity([HEAD], [CPU_WORKERS], autoscaler=True)
    bundles = training_bundles(2, 1.0, use_gpu=False)
    assert describe_bundles(bundles) == "3 x {CPU: 1}"
    assert not cap.fits_now(bundles) and cap.fits_ever(bundles)
    assert cap.total_up("CPU") == 1 and cap.total_max("CPU") == 5
    assert cap.multi_node
    check_training_fits(cap, 2, 1.0, False)  # accepted: the autoscaler can add it


def test_demand_beyond_what_the_cluster_can_grow_to_names_the_key():
    cap = Capacity([HEAD], [CPU_WORKERS], autoscaler=True)
    with pytest.raises(CapacityError, match=r"train\.num_workers=3 x train\.cpus_per_worker=2 leaves -1 of the 5 CPUs it can grow to"):
        check_training_fits(cap, 3, 2.0, False)
    with pytest.raises(CapacityError, match=r"^train\.cpus_per_worker=3"):
        check_training_fits(cap, 1, 3.0, False)
    with pytest.raises(CapacityError, match=r"^train\.use_gpu=true"):
        check_training_fits(cap, 1, 1.0, True)


def test_without_an_autoscaler_only_what_is_up_counts():
    cap = Capacity([{"CPU": 2.0}])
    assert not cap.multi_node
    with pytest.raises(CapacityError, match=r"leaves 0 of the 2 CPUs for Ray Data"):
        check_training_fits(cap, 2, 1.0, False)
    # An elastic run is named as written, and told it is its maximum that does not fit.
    with pytest.raises(CapacityError, match=r"^train\.num_workers=\[1, 2\] \(its maximum, 2 workers\) x "
                                            r"train\.cpus_per_worker=1 leaves 0 of the 2 CPUs for Ray Data.*lower "
                                            r"train\.num_workers \(its maximum\)"):
        check_training_fits(cap, 2, 1.0, False, min_workers=1)
    check_training_fits(cap, 1, 1.0, False, min_workers=1)  # [1, 1]: fits


def test_unknown_node_types_refuse_nothing_for_size_but_count_as_multi_node():
    cap = Capacity([HEAD], [], autoscaler=True, types_known=False)
    assert cap.fits_ever(training_bundles(64, 4.0, False)) is None
    check_training_fits(cap, 64, 4.0, False)
    assert cap.multi_node


def test_use_gpu_auto_picks_a_gpu_group_at_zero_and_says_so():
    use, line = gpu_auto(Capacity([HEAD], [GPU_WORKERS], autoscaler=True), 2)
    assert use and "ray.worker.gpu" in line and "0 up now" in line
    assert gpu_auto(Capacity([HEAD], [CPU_WORKERS], autoscaler=True), 1) == (False, None)
    assert gpu_auto(Capacity([HEAD], [GPU_WORKERS], autoscaler=True), 5) == (False, None)  # 4 GPUs at most
    assert gpu_auto(Capacity([{"CPU": 4.0, "GPU": 2.0}]), 2) == (True, None)


def test_node_types_from_an_autoscaling_config():
    config = {"max_workers": 3, "head_node_type": "head",
              "available_node_types": {"head": {"resources": {"CPU": 0}, "max_workers": 0},
                                       "gpu": {"resources": {"CPU": 8, "GPU": 1}, "min_workers": 0, "max_workers": 4}}}
    (gpu,) = node_types_from_config(config, {"gpu": 1})
    assert (gpu.name, gpu.max_workers, gpu.up, gpu.addable) == ("gpu", 3, 1, 2)  # capped by the cluster's max


@pytest.mark.parametrize("kwargs, key", [
    (dict(storage_path="/home/me/runs"), "train.storage_path"),
    (dict(storage_path="s3://b/runs", data_path="/home/me/images"), "data.path"),
    (dict(storage_path="s3://b/runs", validation_path="/home/me/val"), "data.validation_path"),
    (dict(storage_path="/home/me/runs", demo_cache_dir="~/.cache/raylm"), "data.cache_dir"),
])
def test_node_local_paths_are_refused_on_a_cluster_that_can_add_nodes(kwargs, key):
    paths = dict(storage_path="s3://b/runs", storage_shared=False, data_path=None, validation_path=None,
                 demo_cache_dir=None) | kwargs
    with pytest.raises(CapacityError, match=key.replace(".", r"\.")):
        check_paths_shared(Capacity([HEAD], [CPU_WORKERS], autoscaler=True), **paths)
    check_paths_shared(Capacity([{"CPU": 2.0}]), **paths)  # one node, no autoscaler: its disk is every task's
    check_paths_shared(Capacity([HEAD], [CPU_WORKERS], autoscaler=True), **paths | {"storage_shared": True})


def test_uris_pass_on_any_cluster():
    check_paths_shared(Capacity([HEAD, HEAD]), storage_path="s3://b/runs", storage_shared=False,
                       data_path="gs://b/data", validation_path=None, demo_cache_dir="~/.cache/raylm")


def test_waiting_gives_up_at_the_deadline_naming_what_never_came(monkeypatch):
    import ray.autoscaler.sdk as sdk

    asked = []
    monkeypatch.setattr(sdk, "request_resources", lambda bundles: asked.append(bundles))
    never = Capacity([HEAD], [CPU_WORKERS], autoscaler=True,
                     status={"autoscaler_report": {"pending_launches": {"ray.worker.cpu": 1}}})
    with pytest.raises(CapacityError, match=r"train\.wait_for_resources_s=0.2: .* lacks 2 x \{CPU: 1\}.*to start; .*launching 1 node of ray\.worker\.cpu"):
        with resources_for(training_bundles(2, 1.0, False), timeout_s=0.2, read=lambda: never, poll_s=0.05):
            pass
    assert asked == [[{"CPU": 1.0}] * 3, []]  # asked, then withdrawn so the cluster can scale down


def test_progress_lines_reach_the_console_once_on_stdout():
    import io

    from raylm import console
    from raylm.capacity import progress

    out, err = io.StringIO(), io.StringIO()
    console.start(out, err, live=False)
    try:
        progress.info("waiting for 3 x {CPU: 1}: autoscaler launching 1 node of ray.worker.cpu")
    finally:
        console.stop()
    progress.info("after the console stopped: nowhere")
    assert out.getvalue() == "waiting for 3 x {CPU: 1}: autoscaler launching 1 node of ray.worker.cpu\n"
    assert err.getvalue() == ""


def test_an_elastic_run_starts_once_its_minimum_is_up_while_asking_for_its_maximum(monkeypatch):
    import ray.autoscaler.sdk as sdk

    asked = []
    monkeypatch.setattr(sdk, "request_resources", lambda bundles: asked.append(bundles))
    one_node_up = Capacity([HEAD, {"CPU": 2.0}], [NodeType("ray.worker.cpu", {"CPU": 2.0}, 2, up=1)], autoscaler=True)
    with resources_for(training_bundles(4, 1.0, False), timeout_s=5, enough=training_bundles(2, 1.0, False),
                       read=lambda: one_node_up, poll_s=0.05) as capacity:
        assert capacity is one_node_up and asked == [[{"CPU": 1.0}] * 5]  # started on 2 workers, asking for 4
    assert asked[-1] == []
