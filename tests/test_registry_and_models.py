import pytest
import torch

from raylm.config import load_config
from raylm.data import MODEL_INPUTS
from raylm.models import build_model, count_parameters
from raylm.registry import DATASETS, MODELS


def test_registry_lists_article_models():
    assert {"seed_cnn", "resnet_small"} <= set(MODELS.names("image"))
    assert {"seed_conv1d", "conv1d_net"} <= set(MODELS.names("audio"))
    assert {"hf", "bert_tiny"} <= set(MODELS.names("text"))
    assert DATASETS.default("image") == "digits"
    with pytest.raises(ValueError, match="known: "):
        MODELS.get("image", "nope")


def _inputs(cfg, batch=3):
    if cfg.task.modality == "image":
        s = cfg.data.image.size
        return (torch.rand(batch, s, s, 3),)
    if cfg.task.modality == "audio":
        a = cfg.data.audio
        return (torch.randn(batch, a.frames, a.n_mfcc),)
    return (torch.randint(0, 100, (batch, 16)), torch.ones(batch, 16, dtype=torch.long))


@pytest.mark.parametrize(
    "modality, name, overrides",
    [
        ("image", "seed_cnn", []),
        ("image", "seed_cnn", ["data.image.size=48"]),
        ("image", "resnet_small", []),
        ("audio", "seed_conv1d", []),
        ("audio", "conv1d_net", ["data.audio.clip_seconds=2.0"]),
        ("text", "bert_tiny", []),
        ("text", "hf", []),  # the bundled pretrained MiniLM, offline
    ],
)
def test_model_output_shapes(modality, name, overrides):
    cfg = load_config(None, [f"task.modality={modality}", f"model.name={name}", *overrides])
    model = build_model(cfg, num_classes=7).eval()
    with torch.no_grad():
        logits = model(*_inputs(cfg))
    assert logits.shape == (3, 7)
    assert len(MODEL_INPUTS[modality]) == len(_inputs(cfg))
    assert count_parameters(model) > 0


def test_seed_cnn_matches_article_layout():
    cfg = load_config(None, ["task.modality=image", "model.name=seed_cnn"])
    model = build_model(cfg, num_classes=10)
    conv, linear = model.features[0], model.classifier[1]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (3, 32, (3, 3))
    assert linear.in_features == 32 * 15 * 15 and linear.out_features == 10
