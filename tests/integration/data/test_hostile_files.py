"""Hostile files, without Ray: decompression bombs and odd formats for the decoders, artifacts and
checkpoints that try to run code or reach outside their directory, torn writes.

Each case is what an attacker (or a crash) would hand raylm; each must end in the module's one
clear error type, with nothing executed and nothing read or written outside the directory.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from raylm.artifacts import ArtifactError, checksums, load_artifact
from raylm.config import ConfigError, InputLimits
from raylm.data.audio import decode_audio, mfcc_frames
from raylm.data.images import decode_image
from raylm.data.limits import DecodeError
from tests.helpers.hostile import huge_samples, jpeg_declaring, png_declaring, wav

# ---------------------------------------------------------------- hostile bytes for the decoders

HOSTILE_IMAGES = {
    "jpeg bomb (631 bytes, 16000x16000)": (jpeg_declaring(16000, 16000), "pixels"),
    "png bomb (20000x20000)": (png_declaring(20000, 20000), "pixels"),
    "just over the pixel limit": (png_declaring(4097, 4096), "more than max_image_pixels"),
    "tiff (not allowed by default)": (cv2.imencode(".tiff", np.zeros((8, 8, 3), np.uint8))[1].tobytes(), "tiff"),
    "ppm": (cv2.imencode(".ppm", np.zeros((8, 8, 3), np.uint8))[1].tobytes(), "accepted format"),
    "radiance hdr": (cv2.imencode(".hdr", np.zeros((8, 8, 3), np.float32))[1].tobytes(), "accepted format"),
    "pfm": (cv2.imencode(".pfm", np.zeros((8, 8, 3), np.float32))[1].tobytes(), "accepted format"),
    "png signature, truncated header": (b"\x89PNG\r\n\x1a\n\x00\x00", "broken header"),
    "empty": (b"", "accepted format"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_IMAGES))
def test_hostile_images_are_refused_from_the_header(name):
    data, reason = HOSTILE_IMAGES[name]
    with pytest.raises(DecodeError, match=reason):
        decode_image(data, 32)


def test_allowed_images_still_decode_and_limits_are_configurable():
    png = cv2.imencode(".png", np.full((40, 30, 3), (10, 20, 30), np.uint8))[1].tobytes()
    image = decode_image(png, 16)
    assert image.shape == (16, 16, 3) and np.allclose(image[0, 0], np.array([30, 20, 10]) / 255)
    tiff = cv2.imencode(".tiff", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    assert decode_image(tiff, 8, InputLimits(image_formats=["tiff"])).shape == (8, 8, 3)
    with pytest.raises(DecodeError, match="more than max_image_pixels=100"):
        decode_image(png, 16, InputLimits(max_image_pixels=100))


SR = 16000
HOSTILE_AUDIO = {
    "8-bit wav declaring 1 Hz": (wav(np.zeros(10_000, np.float32), 1, "PCM_U8"), "sample rate of 1 Hz"),
    "9 channels": (wav(np.zeros((800, 9), np.float32), 8000), "9 channels"),
    "two minutes of silence": (wav(np.zeros(120 * 4000, np.float32), 4000, "PCM_U8"), "longer than max_audio_seconds"),
    "flac of an hour, declared": (wav(np.zeros(61 * 4000, np.float32), 4000, "PCM_16", "FLAC"), "longer than"),
    "NaN samples": (wav(np.full(800, np.nan, np.float32), 8000, "FLOAT"), "non-finite"),
    "samples near float32 max": (wav(huge_samples(8000), SR, "FLOAT"), "not finite"),
    "aiff (not accepted)": (wav(np.zeros(800, np.float32), 8000, "PCM_16", "AIFF"), "accepted format"),
    "mp3 tag": (b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(100), "accepted format"),
    "riff but avi": (b"RIFF\x00\x00\x00\x00AVI LIST" + bytes(64), "accepted format"),
    "wave signature, broken header": (b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00" + bytes(8), "broken header"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_AUDIO))
def test_hostile_audio_is_refused_with_a_plain_reason(name):
    from raylm.config import AudioDataConfig

    data, reason = HOSTILE_AUDIO[name]
    cfg = AudioDataConfig(sample_rate=SR)
    with pytest.raises(DecodeError, match=reason) as err:
        mfcc_frames(decode_audio(data, SR, clip_seconds=cfg.clip_seconds), cfg)
    assert not re.search(r"0x[0-9a-f]{6,}", str(err.value))  # no heap addresses of the decoder's objects


def test_audio_is_cropped_to_the_clip_before_resampling():
    """A 50 s ramp at 8 kHz: only the centre second comes back, resampled, and it is the centre."""
    ramp = np.linspace(-1, 1, 50 * 8000, dtype=np.float32)
    clip = decode_audio(wav(ramp, 8000, "FLOAT"), SR, clip_seconds=1.0)
    assert abs(len(clip) - SR) <= 2
    assert abs(float(clip[len(clip) // 4: -len(clip) // 4].mean())) < 0.01  # the centre of a ramp is 0
    assert float(clip[-10]) - float(clip[10]) == pytest.approx(2 / 50, rel=0.1)  # one second of the ramp


# ---------------------------------------------------------------- artifacts and checkpoints


def _text_artifact(directory: Path, cfg) -> Path:
    """A real artifact as compress writes it (bert_tiny, safetensors, hf_config/ and tokenizer/)."""
    from safetensors.torch import save_model

    from raylm.artifacts import write_meta
    from raylm.models import build_model
    from raylm.models.text import load_tokenizer, tokenizer_source

    model = build_model(cfg, 2, load_pretrained=False)
    directory.mkdir(parents=True)
    save_model(model, str(directory / "model.safetensors"))
    model.hf.config.save_pretrained(directory / "hf_config")
    load_tokenizer(tokenizer_source(cfg)).save_pretrained(directory / "tokenizer")
    write_meta(directory, {"task": {"modality": "text"}, "labels": ["neg", "pos"], "inputs": ["input_ids", "attention_mask"],
                           "preprocessing": {"tokenizer": "tokenizer", "max_length": 16},
                           "architecture": {"name": cfg.model.name, "config": cfg.to_dict()},
                           "model_file": "model.safetensors"})
    return directory


def _tamper(directory: Path, meta_file: str, change, *, rehash: bool = True) -> None:
    """Change the recorded json as an attacker would, re-declaring the checksums so they match."""
    meta = json.loads((directory / meta_file).read_text())
    change(meta)
    if rehash and "files" in meta and meta_file == "artifact.json":
        meta["files"] = checksums(directory)
    (directory / meta_file).write_text(json.dumps(meta))


def _plant_remote_code(hf_config: Path, marker: Path) -> None:
    """``auto_map`` pointing at a Python file of the artifact that writes ``marker`` when imported."""
    (hf_config / "evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import BertConfig\nclass EvilConfig(BertConfig):\n    pass\n")
    config = json.loads((hf_config / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig"}
    (hf_config / "config.json").write_text(json.dumps(config))


def _remote_code_model(meta_config: dict) -> None:
    meta_config["model"].update(name="hf", kwargs={"trust_remote_code": True})


@pytest.fixture
def text_artifact(tiny_config, tmp_path):
    return _text_artifact(tmp_path / "run" / "compress" / "fp32", tiny_config("text"))


def test_a_real_artifact_loads(text_artifact):
    artifact = load_artifact(text_artifact)
    logits = artifact.predict({"input_ids": np.ones((2, 16), np.int64), "attention_mask": np.ones((2, 16), np.int64)})
    assert logits.shape == (2, 2) and np.isfinite(logits).all()


def test_artifact_cannot_run_code_it_carries(text_artifact, tmp_path):
    marker = tmp_path / "pwned"
    _plant_remote_code(text_artifact / "hf_config", marker)
    _tamper(text_artifact, "artifact.json", lambda m: _remote_code_model(m["architecture"]["config"]))
    with pytest.raises(ArtifactError, match="model.kwargs"):
        load_artifact(text_artifact)
    # Without the builder argument, the auto_map alone must not run it either.
    _tamper(text_artifact, "artifact.json", lambda m: m["architecture"]["config"]["model"].update(kwargs={}))
    try:
        load_artifact(text_artifact)
    except ArtifactError:
        pass
    assert not marker.exists()


@pytest.mark.parametrize("case, change, reason", [
    ("no checksums", lambda m: m.update(files={}), "lists no checksums"),
    ("no files key", lambda m: m.pop("files"), "no 'files'"),
    ("model file outside", lambda m: m.update(model_file="../elsewhere/model.safetensors"), "not listed|outside"),
    ("listed file outside", lambda m: m["files"].update({"../../outside.txt": "0" * 64}), "leads outside"),
    ("absolute listed file", lambda m: m["files"].update({"/etc/hostname": "0" * 64}), "leads outside"),
    ("model file absolute", lambda m: (m["files"].update({"/etc/hostname": "0" * 64}), m.update(model_file="/etc/hostname")),
     "leads outside"),
    ("tokenizer outside", lambda m: m["preprocessing"].update(tokenizer="../../outside"), "leads outside"),
    ("not json-shaped", lambda m: m.update(labels="neg,pos"), "labels"),
    ("unknown inputs", lambda m: m.update(inputs=["pixel_values"]), "inputs"),
])
def test_artifact_refuses_what_it_does_not_list_or_what_leads_outside(text_artifact, tmp_path, case, change, reason):
    outside = tmp_path / "run" / "outside.txt"
    outside.write_text("not the artifact's")
    _tamper(text_artifact, "artifact.json", change, rehash=False)
    with pytest.raises(ArtifactError, match=reason):
        if case == "tokenizer outside":
            from raylm.serve.preprocess import Preprocessor

            meta = json.loads((text_artifact / "artifact.json").read_text())
            Preprocessor("text", meta["preprocessing"], str(text_artifact)).warm_up()
        else:
            load_artifact(text_artifact)


def test_artifact_refuses_tampered_unlisted_and_linked_files(text_artifact, tmp_path):
    weights = text_artifact / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[:-4] + b"\x00\x00\x80\x7f")  # one weight turned into inf
    with pytest.raises(ArtifactError, match="corrupted"):
        load_artifact(text_artifact)
    weights.write_bytes(good)
    (text_artifact / "hf_config" / "extra.py").write_text("print('hi')")
    with pytest.raises(ArtifactError, match="not listed"):
        load_artifact(text_artifact)
    (text_artifact / "hf_config" / "extra.py").unlink()
    (text_artifact / "tokenizer" / "link").symlink_to(tmp_path)
    with pytest.raises(ArtifactError, match="a link"):
        load_artifact(text_artifact)


def test_onnx_artifact_naming_external_tensor_data_is_refused(tiny_config, tmp_path):
    """An ONNX initializer whose data lives in ``../outside.bin``: ONNX Runtime would read it from there."""
    import onnx
    from onnx import TensorProto, helper

    from raylm.artifacts import write_meta

    outside = tmp_path / "outside.bin"
    outside.write_bytes(np.arange(4, dtype=np.float32).tobytes())
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4])
    weight.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../outside.bin"), ("offset", "0"), ("length", "16")):
        weight.external_data.add(key=k, value=v)
    graph = helper.make_graph([helper.make_node("Add", ["image", "w"], ["logits"])], "g",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])], [weight])
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    onnx.save(helper.make_model(graph), str(artifact / "model.onnx"))
    write_meta(artifact, {"task": {"modality": "image"}, "labels": ["a", "b"], "inputs": ["image"], "preprocessing": {"size": 32},
                          "architecture": {"config": tiny_config("image").to_dict()}, "model_file": "model.onnx"})
    with pytest.raises(ArtifactError, match="external tensor data"):
        load_artifact(artifact)


def test_keras_artifact_files_are_listed_hashed_and_confined(tmp_path, tiny_config):
    artifact = tmp_path / "keras-int8"
    artifact.mkdir()
    (artifact / "model.tflite").write_bytes(b"TFL3" + bytes(60))
    meta = {"format": "raylm.artifact/1", "task": {"modality": "image"}, "labels": ["a", "b"], "inputs": ["image"],
            "architecture": {"config": tiny_config("image", "model.backend=keras").to_dict()},
            "model_file": "model.tflite", "runtime": "tflite", "files": {}}
    (artifact / "artifact.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="lists no checksums"):
        load_artifact(artifact)
    (artifact / "artifact.json").write_text(json.dumps(dict(meta, files={"model.tflite": "0" * 64})))
    with pytest.raises(ArtifactError, match="corrupted"):
        load_artifact(artifact)
    outside = dict(meta, model_file="../x.tflite", files={"../x.tflite": "0" * 64})
    (artifact / "artifact.json").write_text(json.dumps(outside))
    with pytest.raises(ArtifactError, match="not listed|leads outside"):
        load_artifact(artifact)
    (artifact / "artifact.json").write_text(json.dumps(dict(meta, runtime="onnx", files={"model.tflite": "0" * 64})))
    with pytest.raises(ArtifactError, match="runtime 'onnx' does not run model_file"):
        load_artifact(artifact)


def test_preprocessing_record_is_held_to_the_config_bounds():
    from pydantic import ValidationError

    from raylm.serve.preprocess import Preprocessor

    with pytest.raises(ValidationError, match="size"):
        Preprocessor("image", {"size": 1_000_000}, "/nonexistent")
    with pytest.raises(ValidationError, match="clip_seconds"):
        Preprocessor("audio", {"sample_rate": 16000, "clip_seconds": 36000}, "/nonexistent")


def test_checkpoint_cannot_run_code_it_carries(tiny_config, tmp_path):
    import torch

    from raylm.compress.pipeline import compress_config
    from raylm.models import build_model
    from raylm.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint_atomic

    cfg = tiny_config("text")
    torch.manual_seed(0)
    path = save_checkpoint_atomic(tmp_path / "ckpt", build_model(cfg, 2), cfg, ["neg", "pos"], epoch=1)
    marker = tmp_path / "pwned"
    _plant_remote_code(path / "hf_config", marker)
    _tamper(path, "raylm.json", lambda m: _remote_code_model(m["config"]))
    with pytest.raises(CheckpointError, match="model.kwargs"):
        load_checkpoint(path)
    with pytest.raises(ConfigError, match="model.kwargs"):  # raylm compress --checkpoint, without --config
        compress_config(path, None, [])
    _tamper(path, "raylm.json", lambda m: m["config"]["model"].update(kwargs={}))
    try:
        load_checkpoint(path)
    except CheckpointError:
        pass
    assert not marker.exists()


def test_checkpoint_of_another_run_is_refused(tiny_config, tmp_path):
    from raylm.models import build_model
    from raylm.train.checkpoint import CheckpointError, check_belongs, save_checkpoint_atomic

    cfg = tiny_config("image")
    path = save_checkpoint_atomic(tmp_path / "ckpt", build_model(cfg, 2), cfg, ["b", "a"], epoch=1, data_fingerprint="f1")
    with pytest.raises(CheckpointError, match="same labels in the same order"):
        check_belongs(path, cfg, ["a", "b"], "f1")
    with pytest.raises(CheckpointError, match="other data"):
        check_belongs(path, cfg, ["b", "a"], "f2")
    with pytest.raises(CheckpointError, match="model.name"):
        check_belongs(path, tiny_config("image", "model.name=resnet_small"), ["b", "a"], "f1")
    check_belongs(path, cfg, ["b", "a"], "f1")  # its own run: fine


@pytest.mark.integration
def test_training_refuses_to_continue_another_runs_checkpoint(ray_local, tiny_config, tmp_path):
    """Ray Train resumes from what ``storage_path/name`` holds, and from ``train.resume_from``: a
    checkpoint with the labels in another order (or another model, or other data) is refused."""
    from raylm.models import build_model
    from raylm.train import build_trainer
    from raylm.train.checkpoint import CheckpointError, save_checkpoint_atomic

    cfg = tiny_config("image", "train.name=reused")  # the data's labels: horizontal, vertical
    swapped = ["vertical", "horizontal"]
    save_checkpoint_atomic(cfg.run_dir / "train" / "checkpoint_2026-01-01_00-00-00.000000", build_model(cfg, 2), cfg,
                           swapped, epoch=1)
    with pytest.raises(CheckpointError, match="same labels in the same order"):
        build_trainer(cfg)
    other = save_checkpoint_atomic(tmp_path / "elsewhere", build_model(cfg, 2), cfg, swapped, epoch=1)
    with pytest.raises(CheckpointError, match="same labels in the same order"):
        build_trainer(tiny_config("image", "train.name=fresh", f"train.resume_from={other}"))
    trainer, data = build_trainer(tiny_config("image", "train.name=new-run"))  # nothing to continue: fine
    assert data.labels == ["horizontal", "vertical"]


# ---------------------------------------------------------------- config names and paths


@pytest.mark.parametrize("override, field", [
    ("train.name=/home", "train.name"),
    ("train.name=../../etc", "train.name"),
    ("train.name=..", "train.name"),
    ("train.name=.hidden", "train.name"),
    ("train.name=a/b", "train.name"),
    ("compress.variant=../escape", "compress.variant"),
    ("model.kwargs={trust_remote_code: true}", "model.kwargs"),
    ("model.kwargs={channels: {nested: 1}}", "model.kwargs"),
])
def test_config_refuses_paths_and_builder_arguments(tiny_config, override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        tiny_config("image", override)


def test_text_model_kwargs_are_allow_listed(tiny_config):
    with pytest.raises(ConfigError, match="trust_remote_code"):
        tiny_config("text", "model.name=hf", "model.kwargs={trust_remote_code: true}")
    assert tiny_config("text", "model.name=hf", "model.kwargs={classifier_dropout: 0.2}").model.kwargs


def test_serve_config_refuses_a_null_api_key_env():
    from raylm.serve import load_serve_config

    with pytest.raises(ConfigError, match="api_key_env"):
        load_serve_config(None, ["serve.api_key_env=~"])
    with pytest.raises(ConfigError, match="api_key_env"):
        load_serve_config(None, ["serve.api_key_env=not a var"])
    assert load_serve_config(None, []).api_key_env is None


def test_serving_proxies_end_slow_requests_by_default():
    """Item 8: ``raylm serve`` starts Serve's proxies with an end-to-end request timeout (a stalled
    or slowloris client cannot hold a proxy forever); the shipped cluster config sets one too."""
    from raylm.serve import load_serve_config

    assert load_serve_config(None, []).http_options()["request_timeout_s"] == 30
    assert load_serve_config(None, ["serve.request_timeout_s=5"]).http_options()["request_timeout_s"] == 5
    with pytest.raises(ConfigError, match="request_timeout_s"):
        load_serve_config(None, ["serve.request_timeout_s=0"])


# ---------------------------------------------------------------- writes that replace something


def test_atomic_directory_rolls_back_when_the_second_rename_fails(tmp_path, monkeypatch):
    import raylm.atomic as atomic

    final = tmp_path / "artifact"
    final.mkdir()
    (final / "v").write_text("good")
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # a file system without RENAME_EXCHANGE
    real_rename = Path.rename

    def failing_rename(self, target):
        if Path(target) == final and self.name.startswith(".artifact-") and "-old-" not in self.name:
            raise OSError("disk gone")  # the crash window: the old one is aside, the new one not in place
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", failing_rename)
    with pytest.raises(OSError, match="disk gone"):
        with atomic.atomic_directory(final) as tmp:
            (tmp / "v").write_text("new")
    assert (final / "v").read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]


def test_atomic_directory_fsyncs_the_new_tree_before_publishing_it(tmp_path, monkeypatch):
    """Every file and directory of the new copy reaches the disk before the rename that publishes it,
    and the parent directory (the rename itself) after: a crash never publishes holes."""
    import os

    import raylm.atomic as atomic

    events: list[tuple[str, str]] = []
    real_fsync, real_rename = os.fsync, Path.rename
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                         real_fsync(fd))[1])
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # the fallback's renames are Path.rename
    monkeypatch.setattr(Path, "rename", lambda self, target: (events.append(("rename", str(target))),
                                                              real_rename(self, target))[1])
    final = tmp_path / "artifact"
    for version in ("one", "two"):  # a first write, then one that replaces it
        events.clear()
        with atomic.atomic_directory(final) as tmp:
            (tmp / "sub").mkdir()
            (tmp / "sub" / "weights").write_text(version)
        published = next(i for i, (kind, target) in enumerate(events) if kind == "rename" and target == str(final))
        synced = {Path(target).relative_to(tmp) for kind, target in events[:published]
                  if kind == "fsync" and target.startswith(str(tmp))}
        assert synced == {Path("."), Path("sub"), Path("sub/weights")}, events
        assert ("fsync", str(tmp_path)) in events[published:], events
        assert (final / "sub" / "weights").read_text() == version


def test_atomic_directory_recovers_after_a_crash_between_renames(tmp_path):
    from raylm.atomic import atomic_directory

    aside = tmp_path / ".artifact-old-x1y2"  # what a crash in the fallback's window leaves
    aside.mkdir()
    (aside / "v").write_text("good")
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "artifact"):
            raise RuntimeError("this write fails")
    assert (tmp_path / "artifact" / "v").read_text() == "good"


def test_atomic_directory_replaces_whole(tmp_path):
    from raylm.atomic import atomic_directory

    final = tmp_path / "a"
    for version in ("one", "two"):
        with atomic_directory(final) as tmp:
            (tmp / "v").write_text(version)
    assert (final / "v").read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["a"]


def test_concurrent_pipeline_records_never_tear(tmp_path):
    from raylm.pipeline import RECORD, _write_record
    from raylm.records import PipelineRecord

    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(150):
                _write_record(tmp_path, PipelineRecord(config={"writer": n, "i": i, "pad": "x" * 4096}))
        except BaseException as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:1]
    assert json.loads((tmp_path / RECORD).read_text())["config"]["i"] == 149
    assert [p.name for p in tmp_path.iterdir()] == [RECORD]
