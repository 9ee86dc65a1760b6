"""Runs on a real S3 API (moto's server): training that resumes from the checkpoint in the bucket,
started from another working directory and scratch (another node, on one machine)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def ray_with_s3(s3_bucket):
    """Ray (re)started after the bucket's AWS_* variables are set, so its workers inherit them."""
    import ray

    from raylm.runtime import ensure_ray

    if ray.is_initialized():
        ray.shutdown()
    ensure_ray(num_cpus=2, configure_logging=False)
    yield s3_bucket
    ray.shutdown()  # the next test's Ray must not point at this test's S3 server


def _local_dirs_named(name: str, *roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob(name) if p.is_dir()]


@pytest.mark.parametrize("workers", [1, 2], ids=["in-process", "worker-group"])
def test_training_resumes_from_the_bucket_on_another_node(ray_with_s3, s3_server, tiny_config, tmp_path,
                                                          monkeypatch, workers):
    from raylm.train import fit

    bucket, name = ray_with_s3, f"resume-{workers}"
    storage = [f"train.storage_path=s3://{bucket}/runs", f"train.name={name}", f"train.num_workers={workers}"]
    node_a, node_b = tmp_path / "node-a", tmp_path / "node-b"
    for node in (node_a, node_b):
        (node / "scratch").mkdir(parents=True)
    monkeypatch.chdir(node_a)
    monkeypatch.setenv("RAYLM_SCRATCH_DIR", str(node_a / "scratch"))
    monkeypatch.setenv("RAYLM_CACHE_DIR", str(node_a / "cache"))
    first = fit(tiny_config("image", *storage, "train.epochs=1"))
    assert first.checkpoint.startswith(f"s3://{bucket}/runs/{name}/train/checkpoint_")
    assert [h["epoch"] for h in first.history] == [1]

    # "Another node": another working directory, scratch and cache; only the bucket is shared.
    monkeypatch.chdir(node_b)
    monkeypatch.setenv("RAYLM_SCRATCH_DIR", str(node_b / "scratch"))
    monkeypatch.setenv("RAYLM_CACHE_DIR", str(node_b / "cache"))
    second = fit(tiny_config("image", *storage, "train.epochs=3"))
    epochs = [h["epoch"] for h in second.history]
    assert epochs == [1, 2, 3], epochs
    # Epoch 1 is the first run's (same wall-clock record), not redone: 0 epochs redone.
    assert second.history[0]["time"] == first.history[0]["time"]
    keys = s3_server.objects(bucket, f"runs/{name}/train/")
    assert any(k.endswith("/raylm.json") for k in keys) and any(k.endswith("/model.safetensors") for k in keys)
    assert not _local_dirs_named(name, node_a, node_b, Path.home() / "raylm_runs")
    assert not list((node_a / "scratch").iterdir()) and not list((node_b / "scratch").iterdir())
    assert not (node_a / "s3:").exists() and not (node_b / "s3:").exists()
