"""Autoscaling from zero on Ray's fake_multinode autoscaler (tests/helpers/fake_cluster.py): a
1-CPU head and 0..2 worker nodes of 2 CPUs. ``raylm train`` (the real CLI, a driver of its own)
needs more than is up: it is accepted, the autoscaler adds a node, training finishes and the
cluster goes back to 0 worker nodes when idle. Node-local paths on that cluster are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.configs import tiny_overrides
from tests.helpers.fake_cluster import wait_for

pytestmark = pytest.mark.integration
from tests.helpers.paths import REPO
from tests.helpers.oracles import assert_beats_chance


def _raylm(cluster, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    env = cluster.client_env() | {"PYTHONPATH": str(REPO), "RAYLM_AUTOSCALING_CONFIG": str(cluster.config_file)}
    return subprocess.run([sys.executable, "-m", "raylm.cli", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def _outcome(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{\n"):])


def test_train_from_zero_worker_nodes_scales_up_trains_and_scales_down(fake_cluster, data_root, tmp_path):
    assert fake_cluster.worker_nodes() == 0
    run = _raylm(fake_cluster, "train", *tiny_overrides(tmp_path, data_root, "image"),
                 "train.num_workers=2", "train.cpus_per_worker=1", "train.storage_shared=true",
                 "train.wait_for_resources_s=240", "train.name=from-zero")
    print(run.stdout)  # the console's lines (pytest -s shows them)
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}\n{fake_cluster.monitor_log()[-3000:]}"
    # 2 workers x 1 CPU + 1 CPU for Ray Data do not fit the 1-CPU head: raylm asked and waited.
    assert "waiting for 3 x {CPU: 1}" in run.stdout, run.stdout
    assert "Adding 1 node(s) of type ray.worker.cpu" in fake_cluster.monitor_log()
    outcome = _outcome(run.stdout)
    assert outcome["metrics"]["epoch"] == 2
    assert_beats_chance(outcome["metrics"]["val_accuracy"], outcome["metrics"]["val_samples"])
    # The request is withdrawn after the run: the idle worker node goes (idle timeout 3 s, tests/conftest.py).
    wait_for(lambda: fake_cluster.worker_nodes() == 0, 180, "the cluster back at 0 worker nodes", every_s=0.5)


# The CLI end to end on the real autoscaler's state; every other refusal is in tests/unit/test_capacity.py.
@pytest.mark.parametrize("overrides, keys", [
    ([], ["train.storage_path", "data.path"]),  # local, not declared shared; the data on the driver's disk only
    (["train.num_workers=3", "train.cpus_per_worker=2", "train.storage_shared=true"], ["train.num_workers"]),  # 7 > 1 + 2 x 2
])
def test_cluster_refuses_what_it_can_never_hold_naming_the_key(fake_cluster, data_root, tmp_path, overrides, keys):
    run = _raylm(fake_cluster, "train", *tiny_overrides(tmp_path, data_root, "image"), "train.num_workers=2",
                 "train.cpus_per_worker=1", *overrides, timeout=300)
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    assert all(key in run.stderr for key in keys), run.stderr
    assert not list((tmp_path / "runs").glob("*/train")), "refused before Ray Train started"
