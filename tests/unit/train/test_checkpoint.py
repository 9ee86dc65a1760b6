import json

import pytest
import torch

from raylm.models import build_model
from raylm.storage import StoragePath
from raylm.train.checkpoint import (
    CheckpointError,
    best_kept,
    checkpoint_rank,
    load_checkpoint,
    read_meta,
    save_checkpoint_atomic,
    stored_checkpoints,
)


@pytest.mark.parametrize("modality", ["image", "audio", "text"])
def test_checkpoint_round_trip_same_predictions(tiny_config, tmp_path, modality):
    from tests.helpers.models import _inputs

    cfg = tiny_config(modality)
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=2).eval()
    optimizer = torch.optim.AdamW(model.parameters())
    path = save_checkpoint_atomic(tmp_path / "ckpt", model, cfg, ["a", "b"], epoch=3, optimizer=optimizer)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left behind
    loaded = load_checkpoint(path)
    inputs = _inputs(loaded.config)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(*inputs), model(*inputs))
    assert loaded.labels == ["a", "b"] and loaded.meta["epoch"] == 3


def test_corrupted_and_foreign_checkpoints_are_clear_errors(tiny_config, tmp_path):
    cfg = tiny_config("image")
    path = save_checkpoint_atomic(tmp_path / "ckpt", build_model(cfg, 2), cfg, ["a", "b"], epoch=1)
    (path / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(path)
    (path / "raylm.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not a raylm checkpoint"):
        load_checkpoint(tmp_path)


def test_checkpoint_of_other_architecture_is_rejected(tiny_config, tmp_path):
    cfg = tiny_config("image")
    path = save_checkpoint_atomic(tmp_path / "ckpt", build_model(cfg, 2), cfg, ["a", "b"], epoch=1)
    meta = json.loads((path / "raylm.json").read_text())
    meta["config"]["model"]["name"] = "resnet_small"
    (path / "raylm.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(path)


def test_only_the_latest_checkpoint_keeps_the_optimizer_state(tiny_config, tmp_path):
    """A run's older kept checkpoints (the best one) lose optimizer.pt once a newer one is reported: AdamW's
    state is twice the weights. They still load, and resume from them starts the optimizer afresh."""
    from ray.train import Checkpoint

    from raylm.train.checkpoint import drop_stale_optimizer_states, restore_training_state

    cfg = tiny_config("image")
    model = build_model(cfg, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 32, 32, 3)).sum().backward()
    optimizer.step()  # a non-empty state
    paths = [save_checkpoint_atomic(tmp_path / "train" / f"checkpoint_{epoch}", model, cfg, ["a", "b"], epoch=epoch,
                                    optimizer=optimizer) for epoch in (1, 2, 3)]
    assert drop_stale_optimizer_states(Checkpoint.from_directory(str(paths[-1])), 3) == 2
    assert [(p / "optimizer.pt").exists() for p in paths] == [False, False, True]
    assert [p / "model.safetensors" for p in paths if (p / "model.safetensors").exists()] == [p / "model.safetensors" for p in paths]
    fresh = torch.optim.AdamW(model.parameters())
    assert restore_training_state(paths[0], model, fresh) == 1 and not fresh.state_dict()["state"]
    assert restore_training_state(paths[-1], model, fresh) == 3 and fresh.state_dict()["state"]


def test_files_beside_the_checkpoints_are_not_checkpoints(tiny_config, tmp_path):
    """Ray Train's ``checkpoint_manager_snapshot.json`` sits in a run's ``train/`` beside the checkpoints."""
    cfg = tiny_config("image")
    model = build_model(cfg, 2)
    save_checkpoint_atomic(tmp_path / "checkpoint_000000", model, cfg, ["a", "b"], epoch=1)
    (tmp_path / "checkpoint_manager_snapshot.json").write_text("{}")
    assert [location.name for location, _ in stored_checkpoints(StoragePath.of(tmp_path))] == ["checkpoint_000000"]
    with pytest.raises(CheckpointError, match="a file"):
        read_meta(tmp_path / "checkpoint_000000" / "raylm.json")


def test_tied_accuracy_ranks_the_lower_loss_then_the_later_epoch():
    kept = [("e1", {"epoch": 1, "val_accuracy": 1.0, "val_loss": 1.004}),
            ("e2", {"epoch": 2, "val_accuracy": 1.0, "val_loss": 0.562}),
            ("e3", {"epoch": 3, "val_accuracy": 1.0, "val_loss": 0.215}),
            ("e0", {"epoch": 4, "val_accuracy": 0.9, "val_loss": 0.1})]
    assert best_kept(kept)[0] == "e3"
    assert best_kept([("a", {"epoch": 1, "val_accuracy": 0.5}), ("b", {"epoch": 2, "val_accuracy": 0.5})])[0] == "b"
    # a non-finite loss never wins a tie
    assert checkpoint_rank({"epoch": 1, "val_accuracy": 0.5, "val_loss": float("nan")}) < checkpoint_rank(
        {"epoch": 1, "val_accuracy": 0.5, "val_loss": 9.0})
