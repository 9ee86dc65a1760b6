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


# One case per modality (two DDP workers each; image in the default suite, audio and text -m slow).
# Text: bert_tiny learns the two word lists in ~40 optimizer steps at lr 0.003; batch 4 per worker gives
# 17 steps an epoch, so 3 epochs do it (the old 6 epochs of batch 8 paid Ray Train's per-epoch cost, a
# report and a checkpoint, twice as often).
@pytest.fixture(scope="module")
def image_two_workers(data_root, tmp_path_factory):
    """The tiny image config's two-worker run (2 epochs), shared: the image case below checks it, the
    resume case continues from its checkpoint (a run of its own cost a whole fit: #27 budget)."""
    from raylm.runtime import ensure_ray
    from tests.helpers.configs import tiny_config_in

    ensure_ray(num_cpus=2, configure_logging=False)
    cfg = tiny_config_in(tmp_path_factory.mktemp("two-workers"), data_root, "image")
    return cfg, fit(cfg)


# The default suite keeps the image case (the fast case of its kind: two DDP workers, gradient sync, the
# reload check, the resume case's checkpoint). Audio and text run the same Ray Train path (prepare_model,
# the Ray Data shard per worker, replica_digests) on their own inputs: opt-in with -m slow (29 s and 38 s
# of the default suite on the 2-core machine, 2026-12-06 baseline). Their model inputs through Ray Data
# stay covered by default: integration/data/test_shards.py, test_user_data.py and compress/test_compress_pipeline.py.
@pytest.mark.parametrize("modality, overrides", [
    ("image", []),
    pytest.param("audio", [], marks=pytest.mark.slow),
    pytest.param("text", ["train.lr=0.003", "train.epochs=3", "train.batch_size=4"], marks=pytest.mark.slow),
])
def test_each_modality_trains_with_two_workers_and_beats_chance(ray_local, tiny_config, modality, overrides, request):
    if modality == "image":
        cfg, outcome = request.getfixturevalue("image_two_workers")
    else:
        cfg = tiny_config(modality, *overrides)
        outcome = fit(cfg)
    assert_beats_chance(outcome.metrics["val_accuracy"], outcome.metrics["val_samples"], modality)
    assert outcome.metrics["epoch"] == len(outcome.history) >= 2
    assert outcome.checkpoint.is_dir() and outcome.checkpoint.is_relative_to(outcome.run_dir / "train")
    # Gradient sync: both ranks end with the same parameters (each rank's sha256, gathered at the last
    # epoch). Replicas that never all-reduced their gradients train on different shards and drift apart,
    # while each alone may still beat chance (benchmarks/broken_features.py: no-gradient-sync).
    assert outcome.metrics["workers"] == 2
    if modality == "image":  # 61 validation rows, odd: each scored once (Ray's equal split dropped one every epoch:
        # raylm.data.shards.ExactValidationSplit)
        assert [row["val_samples"] for row in outcome.history] == [61] * len(outcome.history)
    digests = outcome.metrics["replica_digests"]
    assert len(digests) == 2 and len(set(digests)) == 1, f"the two DDP replicas ended with different weights: {digests}"
    if modality == "image":  # the checkpoint holds the trained model (was a test of its own: the same fit, #27)
        _assert_reloads_to_the_reported_accuracy(cfg, outcome)


def _assert_reloads_to_the_reported_accuracy(cfg, outcome) -> None:
    from raylm.data import build_datasets

    loaded = load_checkpoint(outcome.checkpoint)
    correct = total = 0
    for batch in build_datasets(cfg).validation.iter_batches(batch_size=64, batch_format="numpy"):
        with torch.no_grad():
            pred = loaded.model(torch.from_numpy(batch["image"])).argmax(-1).numpy()
        correct += int((pred == batch["label"]).sum())
        total += len(pred)
    # Both score every row; one sample of slack for a near-tie that another batching's float sums could flip.
    assert abs(correct / total - outcome.metrics["val_accuracy"]) <= 1.5 / total + 1e-9
    assert loaded.labels == ["horizontal", "vertical"]


def test_resume_continues_from_the_saved_epoch(ray_local, tiny_config, image_two_workers):
    """The README's ``train.resume_from``: a second run continues at the saved epoch (default suite: image,
    from the two-worker run's epoch-2 checkpoint, one more epoch on one worker; the audio model's case is
    the same code)."""
    import time

    _, first = image_two_workers
    assert load_checkpoint(first.checkpoint).meta["epoch"] == 2
    started = time.time()
    resumed = fit(tiny_config("image", "train.epochs=3", "train.num_workers=1", "train.name=second",
                              f"train.resume_from={first.checkpoint}"))
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]
    assert resumed.history[:2] == first.history  # epochs 1-2 came from the checkpoint, not retrained
    assert all(row["time"] > started for row in resumed.history[2:])
    assert load_checkpoint(resumed.checkpoint).meta["epoch"] == 3
    # Run again as it was (its own train/ already at train.epochs, in this process): nothing is trained, the
    # run's checkpoints are the answer (was "training finished without a checkpoint" and a failed run).
    kept = sorted(p.name for p in (resumed.run_dir / "train").iterdir())
    again = fit(tiny_config("image", "train.epochs=3", "train.num_workers=1", "train.name=second",
                            f"train.resume_from={first.checkpoint}"))
    assert again.history == resumed.history and again.checkpoint == resumed.checkpoint
    assert sorted(p.name for p in (resumed.run_dir / "train").iterdir()) == kept


def test_a_finished_two_worker_run_run_again_trains_nothing(ray_local, image_two_workers):
    """Ray Train leaves ``checkpoint_manager_snapshot.json`` in the run's ``train/``; read as a checkpoint it
    crashed the rerun (NotADirectoryError). Rerun as it was, the run trains no epoch and answers with its own
    checkpoints."""
    cfg, first = image_two_workers
    assert (first.run_dir / "train" / "checkpoint_manager_snapshot.json").is_file()
    kept = sorted(p.name for p in (first.run_dir / "train").iterdir())
    again = fit(cfg)
    assert again.history == first.history
    assert load_checkpoint(again.best_checkpoint).meta["epoch"] <= 2 and again.metrics["epoch"] == 2
    assert sorted(p.name for p in (first.run_dir / "train").iterdir()) == kept


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
