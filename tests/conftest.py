"""Shared fixtures: a real local Ray, tiny generated datasets, tiny configs."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

from tests.helpers.configs import tiny_config_in  # noqa: E402


@pytest.fixture
def ray_local():
    """A real local Ray shared by the tests that need one (re-started if a test shut it down)."""
    import ray

    from raylm.runtime import ensure_ray

    if not ray.is_initialized():
        ensure_ray(num_cpus=2, configure_logging=False)
    yield ray


def _easy_images(root: Path, per_class: int = 100) -> Path:
    """Two classes a CNN separates in one epoch: horizontal vs vertical bars, random colours."""
    rng = np.random.default_rng(0)
    for label in ("horizontal", "vertical"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            img = np.zeros((40, 40, 3), np.uint8)
            color = tuple(int(c) for c in rng.integers(120, 256, 3))
            for k in range(0, 40, 8):
                offset = k + int(rng.integers(0, 3))
                if label == "horizontal":
                    cv2.rectangle(img, (0, offset), (39, offset + 3), color, -1)
                else:
                    cv2.rectangle(img, (offset, 0), (offset + 3, 39), color, -1)
            cv2.imwrite(str(root / label / f"{i:03d}.png"), img)
    return root


def _easy_audio(root: Path, per_class: int = 110, sr: int = 8000) -> Path:
    """Two classes: a low tone and a high tone, with noise and random length."""
    rng = np.random.default_rng(1)
    for label, freq in (("low", 300.0), ("high", 2000.0)):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            t = np.arange(int(sr * rng.uniform(0.3, 0.6))) / sr
            wave = 0.5 * np.sin(2 * np.pi * freq * rng.uniform(0.9, 1.1) * t) + rng.normal(0, 0.02, len(t))
            soundfile.write(str(root / label / f"{i:03d}.wav"), wave.astype(np.float32), sr)
    return root


def _easy_text(path: Path, per_class: int = 100) -> Path:
    rng = np.random.default_rng(2)
    vocab = {"pos": "great wonderful excellent lovely superb".split(), "neg": "awful terrible horrible dreadful poor".split()}
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(per_class):
            for label, words in vocab.items():
                writer.writerow([f"the film was {rng.choice(words)} and {rng.choice(words)} {i}", label])
    return path


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    return {
        "image": _easy_images(root / "images"),
        "audio": _easy_audio(root / "audio"),
        "text": _easy_text(root / "text.csv"),
    }
    # >= 60 validation samples each (tests/helpers/oracles.py): accuracy gates that chance cannot pass.


@pytest.fixture
def tiny_config(data_root, tmp_path):
    """``tiny_config("image", "train.epochs=2")``: a validated config over the tiny data."""

    def make(modality: str, *overrides: str):
        return tiny_config_in(tmp_path, data_root, modality, *overrides)

    return make


@pytest.fixture(scope="module")
def fake_cluster():
    """Ray's fake_multinode autoscaler (tests/helpers/fake_cluster.py): a 1-CPU head and 0..2 worker
    nodes of 2 CPUs that the autoscaler adds on demand and removes when idle. Its own ports, temp dir,
    token and process session: the shared ``ray_local`` Ray never sees it. ~5-15 s to start."""
    from tests.helpers.fake_cluster import FakeCluster

    # Idle worker nodes go after 3 s (the default 6): the scale-down case waits for it.
    with FakeCluster(idle_timeout_minutes=0.05) as cluster:
        yield cluster


def pytest_collection_modifyitems(config, items):
    """``slow`` tests are opt-in: they run only when ``-m`` names them (``-m slow``)."""
    if "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: opt in with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 API (moto's server mode) for the session, in its own process group; stopped at the end."""
    from tests.helpers.s3_server import S3Server

    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    """A fresh bucket on the S3 server, with AWS_* in this process's environment pointing at it
    (boto3, pyarrow, and the Ray processes a test starts after this fixture inherit them)."""
    import uuid

    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    name = f"raylm-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def mlflow_server():
    """A real ``mlflow server`` (tests/helpers/mlflow_server.py) for the session; without one the tests
    that need it fail saying how to get one (they never skip)."""
    from tests.helpers.mlflow_server import MlflowServer

    try:
        server = MlflowServer().start()
    except RuntimeError as err:
        pytest.fail(str(err))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tracked_pipeline(mlflow_server, tmp_path_factory):
    """The README's Quick start, once, with MLflow tracking on, its console captured and its served
    model's answers on the held-out digits (tests/helpers/tracked_pipeline.py): read by the Quick start,
    console, report and MLflow tests."""
    from tests.helpers.tracked_pipeline import run_tracked_pipeline

    return run_tracked_pipeline(tmp_path_factory.mktemp("tracked"), mlflow_server.uri)
