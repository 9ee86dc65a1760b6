"""raylm.artifacts without Ray: the int8 bitmask layout (smaller file, same logits), its refusal when
tampered with, the Runtime protocol, and the versioned metadata of artifacts and checkpoints (files
the previous raylm wrote still load; a newer version is refused naming the file)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from raylm.artifacts import ArtifactError, Runtime, checksums, load_artifact, read_meta, write_meta
from raylm.artifacts.onnx_runtime import onnx_session
from raylm.artifacts.sparse import store_sparse_int8
from raylm.compress.prune import magnitude_prune
from raylm.compress.quantize import export_onnx, quantize_dynamic_onnx
from raylm.data.images import decode_image
from raylm.models import build_model
from raylm.train.checkpoint import CheckpointError, read_meta as read_checkpoint_meta, save_checkpoint_atomic


def _images(cfg, root: Path, n: int = 16) -> dict[str, np.ndarray]:
    """Real inputs: the test data's PNG files, decoded as training and serving decode them."""
    files = sorted(root.rglob("*.png"))[:n]
    return {"image": np.stack([decode_image(f.read_bytes(), cfg.data.image.size) for f in files])}


def _int8_artifact(cfg, directory: Path, sparsity: float, feeds: dict[str, np.ndarray]) -> tuple[Path, bytes]:
    """A dynamic-int8 seed_cnn artifact, magnitude-pruned to ``sparsity``; returns it and the dense-layout int8 file."""
    torch.manual_seed(0)
    model = build_model(cfg, 2, load_pretrained=False).eval()
    magnitude_prune(model, sparsity)
    directory.mkdir(parents=True)
    fp32 = export_onnx(model, {"image": feeds["image"][:2]}, directory.parent / f"fp32-{directory.name}.onnx")
    quantize_dynamic_onnx(fp32, directory / "model.onnx", cfg.compress.quantize)
    dense_layout = (directory / "model.onnx").read_bytes()
    store_sparse_int8(directory / "model.onnx", feeds)
    write_meta(directory, {"task": {"modality": "image"}, "labels": ["horizontal", "vertical"], "inputs": ["image"],
                           "preprocessing": {"size": cfg.data.image.size},
                           "architecture": {"name": cfg.model.name, "config": cfg.to_dict()}, "model_file": "model.onnx"})
    return directory, dense_layout


@pytest.fixture
def image_feeds(tiny_config, data_root):
    cfg = tiny_config("image")
    return cfg, _images(cfg, data_root["image"])


def test_sparse_int8_layout_shrinks_the_file_and_rebuilds_the_same_logits(image_feeds, tmp_path):
    cfg, feeds = image_feeds
    sizes = {}
    for sparsity in (0.0, 0.8, 0.9):
        directory, dense_layout = _int8_artifact(cfg, tmp_path / f"s{sparsity}", sparsity, feeds)
        artifact = load_artifact(directory)
        assert isinstance(artifact.runner, Runtime) and artifact.runner.name == "onnx"
        reference = onnx_session(dense_layout).run(["logits"], feeds)[0]
        np.testing.assert_array_equal(artifact.predict(feeds), reference)  # exact, not close
        sizes[sparsity] = sum(p.stat().st_size for p in artifact.weight_files)
        if sparsity == 0.0:  # nothing to gain: the file stays as the previous raylm wrote and reads it
            assert artifact.meta["sparse_weights"] is None and artifact.meta["format"] == "raylm.artifact/1"
            assert sizes[0.0] == len(dense_layout)
        else:
            layout = artifact.meta["sparse_weights"]
            assert layout["layout"] == "int8-bitmask" and artifact.meta["format_version"] == 2
            ((name, tensor),) = layout["tensors"].items()  # the classifier's int8 weight
            (original,) = [numpy_helper.to_array(t) for t in onnx.load_from_string(dense_layout).graph.initializer
                           if t.name == name]
            assert tensor["shape"] == list(original.shape) and tensor["nonzero"] == np.count_nonzero(original)
            assert tensor["nonzero"] / original.size <= 1 - sparsity + 0.02  # the pruned zeros, and int8's own
    # An 80 % sparse int8 model was as large as the dense int8 one (0.27x of fp32 at any sparsity); with the
    # bitmask its int8 weight costs 1/8 + 0.2 of its bytes. Here (2 classes: 14k int8 weights) the graph's
    # fp32 conv and own bytes stay, so the whole file is ~0.52x; benchmarks/sparse_int8.py measures seed_cnn at 32 px.
    assert sizes[0.8] < 0.6 * sizes[0.0] and sizes[0.9] < sizes[0.8]


def test_a_tampered_sparse_layout_is_refused(image_feeds, tmp_path):
    cfg, feeds = image_feeds
    directory, _ = _int8_artifact(cfg, tmp_path / "a", 0.8, feeds)
    meta = json.loads((directory / "artifact.json").read_text())
    name = next(iter(meta["sparse_weights"]["tensors"]))

    def rewritten(change) -> Path:
        copy = tmp_path / f"copy{len(list(tmp_path.iterdir()))}"
        shutil.copytree(directory, copy)
        changed = json.loads(json.dumps(meta))
        change(changed)
        changed["files"] = checksums(copy)
        (copy / "artifact.json").write_text(json.dumps(changed))
        return copy

    bigger = rewritten(lambda m: m["sparse_weights"]["tensors"][name].update(shape=[10**9, 10]))
    with pytest.raises(ArtifactError, match="does not match its shape"):
        load_artifact(bigger)
    fewer = rewritten(lambda m: m["sparse_weights"]["tensors"][name].update(nonzero=5))
    with pytest.raises(ArtifactError, match="does not match its shape"):
        load_artifact(fewer)
    outside = rewritten(lambda m: m["sparse_weights"].update(file="../x.safetensors"))
    with pytest.raises(ArtifactError, match="leads outside"):
        load_artifact(outside)
    version1 = rewritten(lambda m: m.update(format="raylm.artifact/1", format_version=1))
    with pytest.raises(ArtifactError, match="needs format_version 2"):
        load_artifact(version1)
    dropped = rewritten(lambda m: m.update(sparse_weights=None))
    with pytest.raises(ArtifactError, match="corrupted"):  # the graph lacks the weight ORT needs
        load_artifact(dropped)


def test_an_artifact_the_previous_raylm_wrote_loads_and_a_newer_one_is_refused(image_feeds, tmp_path):
    cfg, feeds = image_feeds
    directory, _ = _int8_artifact(cfg, tmp_path / "a", 0.0, feeds)
    old = json.loads((directory / "artifact.json").read_text())
    assert "sparse_weights" not in old
    del old["format_version"]  # artifact.json exactly as raylm wrote it before #26
    (directory / "artifact.json").write_text(json.dumps(old))
    assert read_meta(directory)["format_version"] == 1
    reference = onnx_session(directory / "model.onnx").run(["logits"], feeds)[0]
    np.testing.assert_array_equal(load_artifact(directory).predict(feeds), reference)
    (directory / "artifact.json").write_text(json.dumps(old | {"format": "raylm.artifact/3"}))
    with pytest.raises(ArtifactError, match=r"a/artifact\.json: written by a newer raylm .*up to format_version 2"):
        load_artifact(directory)
    (directory / "artifact.json").write_text(json.dumps(old | {"format_version": 2}))
    with pytest.raises(ArtifactError, match="format_version 2 does not match format 'raylm.artifact/1'"):
        load_artifact(directory)


def test_a_checkpoint_the_previous_raylm_wrote_loads_and_a_newer_one_is_refused(tiny_config, tmp_path):
    cfg = tiny_config("image")
    path = save_checkpoint_atomic(tmp_path / "ckpt", build_model(cfg, 2), cfg, ["a", "b"], epoch=3)
    written = json.loads((path / "raylm.json").read_text())
    assert written["format"] == "raylm.checkpoint/1" and written["format_version"] == 1
    del written["format_version"]  # raylm.json exactly as raylm wrote it before #26
    (path / "raylm.json").write_text(json.dumps(written))
    meta = read_checkpoint_meta(path)
    assert meta["epoch"] == 3 and meta["labels"] == ["a", "b"] and meta["format_version"] == 1
    (path / "raylm.json").write_text(json.dumps(written | {"format": "raylm.checkpoint/2"}))
    with pytest.raises(CheckpointError, match=r"ckpt/raylm\.json: written by a newer raylm"):
        read_checkpoint_meta(path)
    (path / "raylm.json").write_text(json.dumps(written | {"labels": "a"}))
    with pytest.raises(CheckpointError, match=r"raylm\.json: corrupted \(labels"):
        read_checkpoint_meta(path)
