import json

import pytest
import torch

from raylm.models import build_model
from raylm.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint_atomic


@pytest.mark.parametrize("modality", ["image", "audio", "text"])
def test_checkpoint_round_trip_same_predictions(tiny_config, tmp_path, modality):
    from tests.test_registry_and_models import _inputs

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
