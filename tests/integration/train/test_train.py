"""Real Ray Train runs on a real local Ray, with tiny models and data."""

import subprocess
import sys

import pytest
import torch

from raylm.train import fit
from raylm.train.checkpoint import load_checkpoint
from tests.helpers.paths import REPO
from tests.helpers.oracles import assert_beats_chance

pytestmark = pytest.mark.integration


# One fast case per modality (two DDP workers each). Text: bert_tiny learns the two word lists in ~40
# optimizer steps at lr 0.003; batch 4 per worker gives 17 steps an epoch, so 3 epochs do it (the old
# 6 epochs of batch 8 paid Ray Train's per-epoch cost, a report and a checkpoint, twice as often).
@pytest.mark.parametrize("modality, overrides", [
    ("image", []),
    ("audio", []),
    ("text", ["train.lr=0.003", "train.epochs=3", "train.batch_size=4"]),
])
def test_each_modality_trains_with_two_workers_and_beats_chance(ray_local, tiny_config, modality, overrides):
    outcome = fit(tiny_config(modality, *overrides))
    assert_beats_chance(outcome.metrics["val_accuracy"], outcome.metrics["val_samples"], modality)
    assert outcome.metrics["epoch"] == len(outcome.history) >= 2
    assert outcome.checkpoint.is_dir() and outcome.checkpoint.is_relative_to(outcome.run_dir / "train")
    # Gradient sync: both ranks end with the same parameters (each rank's sha256, gathered at the last
    # epoch). Replicas that never all-reduced their gradients train on different shards and drift apart,
    # while each alone may still beat chance (benchmarks/broken_features.py: no-gradient-sync).
    assert outcome.metrics["workers"] == 2
    digests = outcome.metrics["replica_digests"]
    assert len(digests) == 2 and len(set(digests)) == 1, f"the two DDP replicas ended with different weights: {digests}"


def test_checkpoint_reloads_to_the_reported_accuracy(ray_local, tiny_config):
    from raylm.data import build_datasets

    cfg = tiny_config("image")
    outcome = fit(cfg)
    loaded = load_checkpoint(outcome.checkpoint)
    correct = total = 0
    for batch in build_datasets(cfg).validation.iter_batches(batch_size=64, batch_format="numpy"):
        with torch.no_grad():
            pred = loaded.model(torch.from_numpy(batch["image"])).argmax(-1).numpy()
        correct += int((pred == batch["label"]).sum())
        total += len(pred)
    # Training evaluates an equal split per worker (a row may be dropped): compare within one sample.
    assert abs(correct / total - outcome.metrics["val_accuracy"]) <= 1.5 / total + 1e-9
    assert loaded.labels == ["horizontal", "vertical"]


def test_resume_continues_from_the_saved_epoch(ray_local, tiny_config):
    """The README's ``train.resume_from``: a second run continues at the saved epoch (default suite: one
    epoch each, one worker, image; the audio model's case is the same code)."""
    import time

    first = fit(tiny_config("image", "train.epochs=1", "train.num_workers=1", "train.name=first"))
    started = time.time()
    resumed = fit(tiny_config("image", "train.epochs=2", "train.num_workers=1", "train.name=second",
                              f"train.resume_from={first.checkpoint}"))
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    assert resumed.history[0] == first.history[0]  # epoch 1 came from the checkpoint, not retrained
    assert all(row["time"] > started for row in resumed.history[1:])
    assert load_checkpoint(resumed.checkpoint).meta["epoch"] == 2


def test_bad_config_exits_non_zero_naming_the_field(tmp_path):
    proc = subprocess.run(
        [sys.executable, "jobs/train.py", "--config", "jobs/configs/image.yaml", "train.num_workers=0"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert proc.returncode == 2
    assert "train.num_workers" in proc.stderr


def test_too_few_cpus_for_ray_data_is_a_config_error(ray_local, tiny_config):
    from raylm.config import ConfigError

    with pytest.raises(ConfigError, match="train.cpus_per_worker"):
        fit(tiny_config("image", "train.cpus_per_worker=1"))
