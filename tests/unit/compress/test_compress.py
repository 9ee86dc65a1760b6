"""Compression building blocks without Ray: pruning, architecture rebuild, config validation."""

import pytest
import torch
from safetensors.torch import save_model

from raylm.artifacts.architecture import ArchitectureError, load_resized
from raylm.compress.prune import gradual_sparsity, magnitude_prune, prunable_weights, sparsity_stats, structured_prune
from raylm.config import ConfigError
from raylm.models import build_model, count_parameters
from tests.helpers.models import _inputs
from tests.helpers.paths import REPO


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("sparsity", [0.3, 0.8])
def test_magnitude_pruning_reaches_the_requested_sparsity(tiny_config, scope, sparsity):
    model = build_model(tiny_config("image", "model.name=resnet_small"), 2)
    magnitude_prune(model, sparsity, scope)
    assert sparsity_stats(model)["sparsity"] == pytest.approx(sparsity, abs=1e-3)
    if scope == "layer":  # every layer, not just on average
        for _, layer in prunable_weights(model):
            zeros = 1 - torch.count_nonzero(layer.weight).item() / layer.weight.numel()
            assert zeros == pytest.approx(sparsity, abs=1.0 / layer.weight.numel() + 1e-6)


@pytest.mark.parametrize("modality, name", [("image", "seed_cnn"), ("image", "resnet_small"),
                                            ("audio", "seed_conv1d"), ("audio", "conv1d_net"), ("text", "bert_tiny")])
def test_structured_pruning_shrinks_and_rebuilds_from_shapes_alone(tiny_config, tmp_path, modality, name):
    cfg = tiny_config(modality, f"model.name={name}")
    torch.manual_seed(0)
    model = build_model(cfg, 3).eval()
    inputs = _inputs(cfg)
    before = count_parameters(model)
    structured_prune(model, 0.5, tuple(x[:2] for x in inputs), num_classes=3)
    if modality == "text":  # FFN neurons only; the embeddings (most of bert_tiny) stay whole
        ffn = [m for n, m in model.named_modules() if n.endswith("intermediate.dense")]
        assert ffn and all(m.out_features == 32 for m in ffn)  # of 64
        assert count_parameters(model) < before
    else:
        assert count_parameters(model) < before * 0.6
    with torch.no_grad():
        expected = model(*inputs)
    assert expected.shape == (3, 3)
    # The artifact's way back: the registry builder, resized to the file's shapes (no pickle).
    save_model(model, str(tmp_path / "pruned.safetensors"))
    rebuilt = load_resized(build_model(cfg, 3, load_pretrained=False), tmp_path / "pruned.safetensors").eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(*inputs), expected)


def test_weights_of_another_architecture_are_rejected(tiny_config, tmp_path):
    cfg = tiny_config("image")
    save_model(build_model(tiny_config("image", "model.name=resnet_small"), 2), str(tmp_path / "w.safetensors"))
    with pytest.raises(ArchitectureError, match="do not fit"):
        load_resized(build_model(cfg, 2), tmp_path / "w.safetensors")
    (tmp_path / "w.safetensors").write_bytes(b"\x00" * 32)
    with pytest.raises(ArchitectureError, match="corrupted"):
        load_resized(build_model(cfg, 2), tmp_path / "w.safetensors")


@pytest.mark.parametrize("override, field", [
    ("compress.prune.sparsity=1.0", "compress.prune.sparsity"),
    ("compress.prune.sparsity=-0.1", "compress.prune.sparsity"),
    ("compress.prune.structured_ratio=1.5", "compress.prune.structured_ratio"),
    ("compress.quantize.mode=int4", "compress.quantize.mode"),
    ("compress.variant=../escape", "compress.variant"),
])
def test_bad_compress_settings_name_the_field(tiny_config, override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        tiny_config("image", override)


def test_magnitude_pruning_rejects_sparsity_outside_range(tiny_config):
    with pytest.raises(ValueError, match=r"compress\.prune\.sparsity"):
        magnitude_prune(build_model(tiny_config("image"), 2), 1.0)


def test_gradual_schedule_ramps_to_the_target():
    values = [gradual_sparsity(0.8, epoch, 4) for epoch in range(5)]
    assert values[0] == 0 and values[-1] == pytest.approx(0.8)
    assert all(a < b for a, b in zip(values[:4], values[1:4]))  # rising until the ramp ends one epoch early


def test_cli_bad_sparsity_exits_2_naming_the_field_before_ray_starts(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "jobs/compress.py", "--checkpoint", str(tmp_path), "--config",
                           "jobs/configs/image.yaml", "compress.prune.sparsity=1.5"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2 and "compress.prune.sparsity" in proc.stderr
    proc = subprocess.run([sys.executable, "jobs/compress.py", "--checkpoint", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2 and "not a raylm checkpoint" in proc.stderr
