import pytest
import torch

from raylm.config import ConfigError, load_config
from raylm.data import MODEL_INPUTS
from raylm.models import build_model, count_parameters
from tests.helpers.models import _inputs
from raylm.registry import COMPRESSION_METHODS, DATASETS, MODELS


def test_registry_lists_article_models():
    assert {"seed_cnn", "resnet_small"} <= set(MODELS.names("image"))
    assert {"seed_conv1d", "conv1d_net"} <= set(MODELS.names("audio"))
    assert {"hf", "bert_tiny"} <= set(MODELS.names("text"))
    assert DATASETS.default("image") == "digits"
    with pytest.raises(ValueError, match="known: "):
        MODELS.get("image", "nope")


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


@pytest.mark.parametrize("registry", [MODELS, DATASETS, COMPRESSION_METHODS], ids=lambda r: r.kind)
def test_every_declared_entry_is_implemented_and_nothing_else(registry):
    """The declarations config validation reads (plain data in raylm.registry) and the implementations
    registered where they are defined name the same entries: each declared one resolves, and no module
    registered one the declarations lack (``register`` refuses those on import, too)."""
    assert registry.implemented() == set(registry.declared)
    for task, name, backend in registry.declared:
        assert registry.get(task, name, backend) is not None


def test_a_builder_must_match_its_declaration():
    from raylm.registry import DatasetSpec, ModelRegistry, ModelSpec, Registry

    toy = ModelRegistry("model", [], {("image", "toy", "torch"): ModelSpec(kwargs=("width",))})

    def build(*, cfg, num_classes, load_pretrained=True, width=8, depth=2):
        return None

    with pytest.raises(TypeError, match=r"accepts \['depth', 'width'\].*says \['width'\]"):
        toy.register("image", "toy")(build)
    with pytest.raises(KeyError, match="not declared"):
        toy.register("image", "other")(build)
    toy_datasets = Registry("dataset", [], {("image", "toy", "any"): DatasetSpec()})
    with pytest.raises(KeyError, match="default=True disagrees"):
        toy_datasets.register("image", "toy", "any", default=True)(lambda cfg: None)
    with pytest.raises(LookupError, match="declared in raylm.registry but none"):
        toy.get("image", "toy")
    assert toy.names("image") == ["toy"]  # declared is enough for validation


def test_declared_compression_metadata_drives_validation():
    """What the config checks comes from the declarations: keras' magnitude pruning needs fine-tune
    epochs when it removes weights, and an int8 model's export is the quantizer's."""
    assert COMPRESSION_METHODS.spec("prune", "magnitude", "keras").needs_finetune
    with pytest.raises(ConfigError, match="compress.finetune_epochs"):
        load_config(None, ["task.modality=image", "model.name=seed_cnn", "model.backend=keras",
                           "compress.prune.method=magnitude", "compress.finetune_epochs=0"])
    # sparsity 0 removes nothing, so no fine-tune is needed
    load_config(None, ["task.modality=image", "model.name=seed_cnn", "model.backend=keras",
                       "compress.prune.method=magnitude", "compress.prune.sparsity=0", "compress.finetune_epochs=0"])
    with pytest.raises(ConfigError, match="compress.export: int8 models are exported as onnx"):
        load_config(None, ["task.modality=image", "model.name=seed_cnn", "compress.quantize.mode=dynamic",
                           "compress.export=safetensors"])
    with pytest.raises(ConfigError, match="compress.prune.method: unknown compression method 'structured'.*"
                                          "known: magnitude, none"):
        load_config(None, ["task.modality=image", "model.name=seed_cnn", "model.backend=keras",
                           "compress.prune.method=structured"])
