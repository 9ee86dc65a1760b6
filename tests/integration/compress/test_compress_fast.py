"""CNN compression that pays in size AND speed: static int8 (QDQ), channel pruning, distillation.

Measured on the real digits demo data (sklearn's digits, as ``data.name=digits`` writes them), with a
small seed CNN trained here in-process for a few epochs (seconds), so each case checks behaviour:
agreement with the fp32 model, accuracy above what a constant prediction can reach, channels and
parameters really gone. No timing is asserted (benchmarks/compression_frontier.py measures it).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from raylm.config import ConfigError, load_config
from tests.helpers.models import fit

CLASSES = 10


def _digits(cache: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The digits demo images as NHWC float [0, 1] (as raylm decodes them), split 70/30 with a fixed seed."""
    from raylm.data.demo import digits

    cfg = load_config(None, ["task.modality=image", "model.name=seed_cnn", f"data.cache_dir={cache}",
                             "data.samples_per_class=50"])
    images, labels = [], []
    for label in range(CLASSES):
        for path in sorted((digits(cfg) / str(label)).glob("*.png")):
            images.append(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB).astype(np.float32) / 255)
            labels.append(label)
    x, y = np.stack(images), np.asarray(labels, dtype=np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    cut = int(0.7 * len(y))
    return ({"images": x[order[:cut]], "label": y[order[:cut]]},
            {"images": x[order[cut:]], "label": y[order[cut:]]})


def _accuracy(model: torch.nn.Module, rows: dict[str, np.ndarray]) -> float:
    with torch.inference_mode():
        return float((model(torch.from_numpy(rows["images"])).argmax(-1).numpy() == rows["label"]).mean())


def _constant_bound(rows: dict[str, np.ndarray]) -> float:
    """The best accuracy a constant prediction reaches on ``rows``: the majority class's share."""
    return float(np.bincount(rows["label"]).max() / len(rows["label"]))


@pytest.fixture(scope="module")
def digits_cnn(tmp_path_factory):
    from raylm.models.image import SeedCNN

    train, val = _digits(tmp_path_factory.mktemp("cache"))
    torch.set_num_threads(1)
    teacher = fit(SeedCNN(CLASSES, size=32, channels=16), train, ("images",), epochs=4)
    return SimpleNamespace(train=train, val=val, teacher=teacher, accuracy=_accuracy(teacher, val))


def test_teacher_is_worth_compressing(digits_cnn):
    assert digits_cnn.accuracy > _constant_bound(digits_cnn.val) + 0.4


def test_static_int8_is_a_quarter_of_fp32_and_agrees_on_real_inputs(digits_cnn, tmp_path):
    from raylm.compress.quantize import export_onnx, onnx_predictor
    from raylm.compress.static_int8 import quantize_static_selective

    fp32 = export_onnx(digits_cnn.teacher, {"images": digits_cnn.val["images"][:2]}, tmp_path / "fp32.onnx")
    calibration = [{"images": digits_cnn.train["images"][i:i + 16]} for i in range(0, 128, 16)]
    int8 = quantize_static_selective(fp32, tmp_path / "int8.onnx", SimpleNamespace(per_channel=True), calibration)
    assert os.path.getsize(int8) <= 0.35 * os.path.getsize(fp32)
    feeds = {"images": digits_cnn.val["images"]}
    fp32_top1 = onnx_predictor(fp32)(feeds).argmax(-1)
    int8_top1 = onnx_predictor(int8)(feeds).argmax(-1)
    assert (int8_top1 == fp32_top1).mean() >= 0.95
    assert (int8_top1 == digits_cnn.val["label"]).mean() > _constant_bound(digits_cnn.val) + 0.4


def test_static_int8_without_calibration_is_refused(digits_cnn, tmp_path):
    from raylm.compress.quantize import export_onnx
    from raylm.compress.static_int8 import quantize_static_selective

    fp32 = export_onnx(digits_cnn.teacher, {"images": digits_cnn.val["images"][:2]}, tmp_path / "fp32.onnx")
    with pytest.raises(ValueError, match="compress.quantize.mode=static-selective needs calibration"):
        quantize_static_selective(fp32, tmp_path / "int8.onnx", SimpleNamespace(per_channel=True), [])


def test_channel_pruning_removes_channels_and_fine_tunes_back(digits_cnn):
    import copy

    from raylm.compress.prune import structured_prune

    model = copy.deepcopy(digits_cnn.teacher)
    example = (torch.from_numpy(digits_cnn.val["images"][:2]),)
    structured_prune(model, 0.5, example, CLASSES)
    conv, head = model.features[0], model.classifier[1]
    assert conv.out_channels == conv.weight.shape[0] == 8  # 16 -> 8 channels, really gone
    assert head.in_features == 8 * 15 * 15  # the Linear reading them shrank with them
    params = sum(p.numel() for p in model.parameters())
    assert params < 0.55 * sum(p.numel() for p in digits_cnn.teacher.parameters())
    with torch.inference_mode():
        assert model(torch.from_numpy(digits_cnn.val["images"][:5])).shape == (5, CLASSES)
    fit(model, digits_cnn.train, ("images",), epochs=2, lr=1e-3)
    assert _accuracy(model, digits_cnn.val) > _constant_bound(digits_cnn.val) + 0.4


def test_distilled_student_is_smaller_and_learns_from_the_teacher(digits_cnn):
    from raylm.compress.distill import distill
    from raylm.config.compress import DistillConfig

    dc = DistillConfig(method="distill", width=0.25, epochs=3, temperature=4.0, hard_weight=0.3)
    example = (torch.from_numpy(digits_cnn.val["images"][:2]),)
    student = distill(digits_cnn.teacher, dc, digits_cnn.train, ("images",), example, CLASSES, batch_size=32, lr=3e-3)
    assert student.features[0].out_channels == 4
    assert sum(p.numel() for p in student.parameters()) < 0.3 * sum(p.numel() for p in digits_cnn.teacher.parameters())
    assert _accuracy(student, digits_cnn.val) > _constant_bound(digits_cnn.val) + 0.4
    assert digits_cnn.teacher.features[0].out_channels == 16  # the teacher is left as it was


def test_text_student_keeps_fewer_layers_and_ffn_neurons():
    from transformers import BertConfig, BertForSequenceClassification

    from raylm.compress.distill import make_student
    from raylm.config.compress import DistillConfig
    from raylm.models.text import SequenceClassifier

    torch.manual_seed(0)
    teacher = SequenceClassifier(BertForSequenceClassification(BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
        num_labels=3))).eval()
    ids = torch.randint(0, 50, (2, 8))
    student = make_student(teacher, DistillConfig(method="distill", width=0.5, layers=0.5),
                           (ids, torch.ones_like(ids)), 3)
    layers = student.hf.bert.encoder.layer
    assert len(layers) == 2 and len(teacher.hf.bert.encoder.layer) == 4
    assert all(layer.intermediate.dense.out_features == 32 for layer in layers)
    # Initialised from the teacher's first and last layers (evenly spaced), not at random.
    assert torch.equal(layers[0].attention.self.query.weight, teacher.hf.bert.encoder.layer[0].attention.self.query.weight)
    assert torch.equal(layers[1].attention.self.query.weight, teacher.hf.bert.encoder.layer[3].attention.self.query.weight)
    with torch.inference_mode():
        assert student(ids, torch.ones_like(ids)).shape == (2, 3)


@pytest.mark.parametrize("overrides, field", [
    (["compress.distill.method=distill", "compress.distill.epochs=0"], "compress.distill.epochs"),
    (["compress.distill.method=teach"], "compress.distill.method"),
    (["compress.distill.width=0"], "compress.distill.width"),
    (["compress.distill.hard_weight=1.5"], "compress.distill.hard_weight"),
    (["compress.quantize.mode=static-selective", "compress.export=safetensors"], "compress.export"),
    (["model.backend=keras", "compress.distill.method=distill"], "compress.distill.method"),
])
def test_bad_distill_and_int8_settings_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(None, ["task.modality=image", "model.name=seed_cnn", *overrides])


@pytest.mark.integration
# Opt-in until it has run once: at load average 60-100 (shared machine) a nice'd Ray never started within
# Ray's 30 s raylet wait. The same path ran through compress() in benchmarks/compression_frontier.py.
@pytest.mark.slow
def test_compress_distills_then_quantizes_into_a_smaller_artifact(ray_local, tiny_config):
    """The recipe through ``compress()`` on real Ray: distill -> static-selective int8 -> reloaded artifact."""

    from raylm.compress import compress, load_artifact
    from raylm.compress.measure import collect
    from raylm.data import build_datasets
    from raylm.models import build_model
    from raylm.train.checkpoint import save_checkpoint_atomic

    cfg = tiny_config("image", "train.lr=0.003", "model.kwargs={channels: 16}")
    data = build_datasets(cfg)
    rows = collect(data.train, ("image", "label"))  # the image modality's input column (data/modality.py)
    teacher = fit(build_model(cfg, len(data.labels)), rows, ("image",), epochs=3)
    checkpoint = save_checkpoint_atomic(cfg.run_dir / "train" / "checkpoint_inproc", teacher, cfg, data.labels,
                                        epoch=3, data_fingerprint=data.fingerprint)
    report = compress(tiny_config("image", "train.lr=0.003", "model.kwargs={channels: 16}",
                                  "compress.distill.method=distill", "compress.distill.epochs=3",
                                  "compress.quantize.mode=static-selective", "compress.latency_runs=3",
                                  "compress.latency_warmup=1", "compress.serving_batch_size=4"),
                      checkpoint, verbose=False)
    assert report["variant"] == "distill50-int8-static-selective"
    dense, student = report["dense"], report["compressed"]
    assert dense["accuracy"] > 0.75  # the teacher learned the bars
    assert student["params"] < 0.6 * dense["params"]  # 8 of 16 channels: the student really is smaller
    assert student["accuracy"] >= dense["accuracy"] - 0.15
    assert report["ratios"]["size_ratio"] < 0.3 and "paired_latency_ratio_b1" in report["ratios"]
    artifact = load_artifact(report["artifact"])
    reloaded = artifact.predict({"image": rows["image"][:8]})
    assert reloaded.shape == (8, len(data.labels))
    assert artifact.meta["recipe"]["distill"]["method"] == "distill"
