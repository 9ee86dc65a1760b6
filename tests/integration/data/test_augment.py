"""Augmentation: each op's contract, determinism, OpenCV agreement, config errors, the Ray Data stage."""

import cv2
import numpy as np
import pytest

from raylm.config import (
    AudioAugmentConfig,
    ConfigError,
    ImageAugmentConfig,
    TextAugmentConfig,
    load_config,
)
from raylm.data.augment import (
    augment_batch,
    augment_frames,
    augment_images,
    augment_tokens,
    image_affines,
    is_identity,
    sample_keys,
    sample_seeds,
)
from tests.helpers.oracles import assert_beats_chance

IMAGE_OPS = {
    "rotate": dict(rotate_p=1.0, max_rotation=40),
    "crop": dict(crop_p=1.0, crop_scale_min=0.3, crop_scale_max=0.8),
    "hflip": dict(hflip_p=0.5),
    "jitter": dict(brightness=0.4, contrast=0.5),
    "cutout": dict(cutout_p=1.0, cutout_size=0.4),
    "all": dict(rotate_p=0.7, crop_p=0.7, hflip_p=0.5, brightness=0.2, contrast=0.2, cutout_p=0.5),
}
AUDIO_OPS = {
    "noise": dict(noise_p=1.0, snr_db_min=5, snr_db_max=10),
    "shift": dict(shift_p=1.0, max_shift=0.3),
    "time_masks": dict(time_masks=2, time_mask_width=0.2),
    "freq_masks": dict(freq_masks=2, freq_mask_width=4),
}
TEXT_OPS = {"dropout": dict(dropout_p=0.4), "swap": dict(swap_p=0.4), "delete": dict(delete_p=0.4)}
SPECIAL = dict(special_ids=[0, 100, 101, 102, 103], unknown_id=100, pad_id=0)


def _images(n=16, seed=0):
    return np.random.default_rng(seed).random((n, 32, 32, 3), dtype=np.float32)


def _frames(n=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 40, 22)).astype(np.float32)


def _tokens(n=8, length=20, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.zeros((n, length), np.int64)
    mask = np.zeros((n, length), np.int64)
    for i in range(n):
        real = int(rng.integers(4, length - 1))
        ids[i, 0], ids[i, 1:real], ids[i, real] = 101, rng.integers(1000, 2000, real - 1), 102
        mask[i, : real + 1] = 1
    return ids, mask


def _seeds(rows, seed=0, epoch=0):
    return sample_seeds(sample_keys(rows), seed, epoch)


@pytest.mark.parametrize("op", IMAGE_OPS)
def test_image_op_keeps_shape_dtype_range_and_is_seeded(op):
    images = _images()
    policy = ImageAugmentConfig(**IMAGE_OPS[op])
    out = augment_images(images, _seeds(images), policy)
    assert out.shape == images.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    assert not np.array_equal(out, images)
    np.testing.assert_array_equal(out, augment_images(images, _seeds(images), policy))
    assert not np.array_equal(out, augment_images(images, _seeds(images, epoch=1), policy))
    assert not np.array_equal(out, augment_images(images, _seeds(images, seed=7), policy))


def test_hflip_mirrors_and_zero_strength_is_identity():
    images = _images()
    np.testing.assert_array_equal(augment_images(images, _seeds(images), ImageAugmentConfig(hflip_p=1.0)), images[:, :, ::-1])
    assert is_identity(ImageAugmentConfig())
    np.testing.assert_array_equal(augment_images(images, _seeds(images), ImageAugmentConfig()), images)
    # strengths at zero switch an op off even when its probability is not zero
    off = ImageAugmentConfig(rotate_p=1.0, max_rotation=0, crop_p=1.0, crop_scale_min=1.0, cutout_p=1.0, cutout_size=0)
    assert is_identity(off)
    np.testing.assert_array_equal(augment_images(images, _seeds(images), off), images)


def test_rotation_moves_a_pixel_where_opencv_says():
    image = np.zeros((1, 32, 32, 3), np.float32)
    image[0, 8, 20] = 1.0  # row 8, column 20
    policy = ImageAugmentConfig(rotate_p=1.0, max_rotation=90)
    seeds = _seeds(image)
    affine = image_affines(seeds, 32, 32, policy)[0]
    angle = np.degrees(np.arctan2(affine[1, 0], affine[0, 0]))
    assert 10 < abs(angle) <= 90  # the draw for this seed is a real rotation
    forward = cv2.getRotationMatrix2D((15.5, 15.5), angle, 1.0)
    out = augment_images(image, seeds, policy)[0]
    np.testing.assert_allclose(out, cv2.warpAffine(image[0], forward, (32, 32)), atol=1e-6)
    x, y = forward @ np.array([20, 8, 1.0])
    row, col = np.unravel_index(out[..., 0].argmax(), (32, 32))
    assert abs(row - y) < 1 and abs(col - x) < 1


def test_a_sample_gets_the_same_draw_in_any_batch():
    """Ray Data may cut batches differently each run: a sample's augmentation must not care."""
    images = _images(12)
    policy = ImageAugmentConfig(**IMAGE_OPS["all"])
    whole = augment_images(images, _seeds(images), policy)
    part = augment_images(images[[7, 2, 9]], _seeds(images[[7, 2, 9]]), policy)
    np.testing.assert_array_equal(whole[[7, 2, 9]], part)


@pytest.mark.parametrize("op", AUDIO_OPS)
def test_audio_op_keeps_shape_dtype_and_is_seeded(op):
    frames = _frames()
    policy = AudioAugmentConfig(**AUDIO_OPS[op])
    out = augment_frames(frames, _seeds(frames), policy)
    assert out.shape == frames.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert not np.array_equal(out, frames)
    np.testing.assert_array_equal(out, augment_frames(frames, _seeds(frames), policy))
    assert not np.array_equal(out, augment_frames(frames, _seeds(frames, epoch=3), policy))
    if op != "noise":  # shift and masks only move or blank values: the range cannot grow
        assert out.min() >= frames.min() and out.max() <= frames.max()


def test_audio_noise_has_the_requested_snr_and_masks_blank_bands():
    frames = _frames(64)
    out = augment_frames(frames, _seeds(frames), AudioAugmentConfig(noise_p=1.0, snr_db_min=10, snr_db_max=10))
    snr = 10 * np.log10((frames**2).mean() / ((out - frames) ** 2).mean())
    assert abs(snr - 10) < 0.5
    masked = augment_frames(frames, _seeds(frames), AudioAugmentConfig(freq_masks=1, freq_mask_width=22))
    fill = frames.mean(axis=1, keepdims=True)
    blanked = np.isclose(masked, np.broadcast_to(fill, masked.shape)).all(axis=1)  # (n, coeffs) fully blanked
    assert blanked.any() and is_identity(AudioAugmentConfig())
    np.testing.assert_array_equal(augment_frames(frames, _seeds(frames), AudioAugmentConfig()), frames)


@pytest.mark.parametrize("op", TEXT_OPS)
def test_text_op_keeps_special_tokens_and_shape(op):
    ids, mask = _tokens()
    policy = TextAugmentConfig(**TEXT_OPS[op])
    new_ids, new_mask = augment_tokens(ids, mask, _seeds(ids), policy, **SPECIAL)
    assert new_ids.shape == ids.shape and new_ids.dtype == ids.dtype and new_mask.dtype == mask.dtype
    assert not np.array_equal(new_ids, ids)
    assert (new_ids[:, 0] == 101).all()
    assert ((new_ids == 102).sum(axis=1) == 1).all()  # [SEP] kept, once
    assert (new_ids[new_mask == 0] == 0).all()  # padding only where the mask is off
    assert (new_mask.sum(axis=1) >= 3).all()  # never an empty sentence
    again = augment_tokens(ids, mask, _seeds(ids), policy, **SPECIAL)
    np.testing.assert_array_equal(new_ids, again[0])
    if op == "swap":  # a permutation of each row
        np.testing.assert_array_equal(np.sort(new_ids, axis=1), np.sort(ids, axis=1))
    if op == "delete":  # kept tokens stay in order
        row = new_ids[0][new_mask[0] == 1]
        positions = [list(ids[0]).index(t) for t in row]
        assert positions == sorted(positions)


def test_text_rates_match_the_config():
    ids = np.random.default_rng(0).integers(1000, 2000, (2000, 30))
    mask = np.ones_like(ids)
    seeds = _seeds(ids)
    dropped, _ = augment_tokens(ids, mask, seeds, TextAugmentConfig(dropout_p=0.15), **SPECIAL)
    _, kept = augment_tokens(ids, mask, seeds, TextAugmentConfig(delete_p=0.1), **SPECIAL)
    assert abs((dropped == SPECIAL["unknown_id"]).mean() - 0.15) < 0.01
    assert abs((1 - kept.mean()) - 0.1) < 0.01


def test_text_zero_policy_is_identity():
    ids, mask = _tokens()
    assert is_identity(TextAugmentConfig())
    out = augment_batch({"input_ids": ids, "attention_mask": mask}, modality="text", policy=TextAugmentConfig(),
                        seed=0, epoch=0, extra=SPECIAL)
    np.testing.assert_array_equal(out["input_ids"], ids)
    np.testing.assert_array_equal(out["attention_mask"], mask)


@pytest.mark.parametrize("override, field", [
    ("augment.image.rotate_p=-0.1", "augment.image.rotate_p"),
    ("augment.image.hflip_p=1.5", "augment.image.hflip_p"),
    ("augment.image.crop_scale_max=1.2", "augment.image.crop_scale_max"),
    ("augment.image.crop_scale_min=0", "augment.image.crop_scale_min"),
    ("augment.audio.noise_p=-1", "augment.audio.noise_p"),
    ("augment.audio.time_masks=-1", "augment.audio.time_masks"),
    ("augment.text.delete_p=2", "augment.text.delete_p"),
    ("augment.image.rotat_p=0.5", "augment.image.rotat_p"),
])
def test_bad_parameters_are_rejected_naming_the_field(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(None, ["task.modality=image", "model.name=seed_cnn", override])


def test_inverted_ranges_are_rejected_naming_both_fields():
    with pytest.raises(ConfigError, match="crop_scale_min .* crop_scale_max"):
        load_config(None, ["task.modality=image", "model.name=seed_cnn", "augment.image.crop_scale_min=0.9",
                           "augment.image.crop_scale_max=0.5"])
    with pytest.raises(ConfigError, match="snr_db_min .* snr_db_max"):
        load_config(None, ["task.modality=audio", "model.name=seed_conv1d", "augment.audio.snr_db_min=40"])


# ------------------------------------------------------------------------- real Ray Data / Train


@pytest.mark.integration
def test_stage_augments_train_only_and_follows_the_epoch_clock(ray_local, tiny_config):
    from raylm.data import build_datasets
    from raylm.data.augment import set_epoch

    clean = build_datasets(tiny_config("image"))
    assert clean.augment_run_id is None  # the identity policy adds no stage
    # materialize caches the clean decoded samples; augmentation must still draw anew each epoch
    data = build_datasets(tiny_config("image", "augment.image.rotate_p=1", "augment.image.cutout_p=1", "data.materialize=true"))
    clean_train = clean.train.take_all()
    clean_val = np.stack(sorted((r["image"] for r in clean.validation.take_all()), key=lambda a: a.sum()))
    val = np.stack(sorted((r["image"] for r in data.validation.take_all()), key=lambda a: a.sum()))
    np.testing.assert_array_equal(val, clean_val)  # validation stays clean

    def epoch_view(epoch):
        set_epoch(data.augment_run_id, epoch)
        rows = data.train.take_all()
        return sorted(rows, key=lambda r: float(r["image"].sum()))

    first, again, second = epoch_view(0), epoch_view(0), epoch_view(1)
    assert len(first) == len(clean_train)
    assert all(np.array_equal(a["image"], b["image"]) for a, b in zip(first, again))  # re-executed: same draws
    assert sum(np.array_equal(a["image"], b["image"]) for a, b in zip(first, second)) == 0  # next epoch: new draws
    clean_sums = sorted(float(r["image"].sum()) for r in clean_train)
    assert sorted(float(r["image"].sum()) for r in first) != clean_sums


@pytest.mark.slow  # ~2 min; the epoch clock case stays in the default suite
@pytest.mark.integration
def test_training_with_augmentation_sets_the_epoch_and_learns(ray_local, tiny_config):
    from raylm.data.augment import current_epoch
    from raylm.train import build_trainer

    cfg = tiny_config("image", "augment.image.rotate_p=0.5", "augment.image.max_rotation=15",
                      "augment.image.hflip_p=0.5", "augment.image.brightness=0.1", "train.epochs=3")
    trainer, data = build_trainer(cfg)
    result = trainer.fit()
    assert result.error is None
    assert_beats_chance(result.metrics["val_accuracy"], result.metrics["val_samples"])  # bars stay bars under small rotations
    assert current_epoch(data.augment_run_id) == 2  # the loop set the clock for epochs 0, 1, 2


@pytest.mark.integration
@pytest.mark.parametrize("modality, overrides", [
    ("image", ["augment.image.rotate_p=1", "augment.image.cutout_p=0.5"]),
    ("audio", ["augment.audio.noise_p=1", "augment.audio.time_masks=2", "augment.audio.freq_masks=1"]),
    ("text", ["augment.text.dropout_p=0.3", "augment.text.swap_p=0.2"]),
])
def test_preview_command(ray_local, tiny_config, tmp_path, capfd, modality, overrides):
    # capfd: the console writes raylm's lines to its own copy of the real stdout (Ray's go to a log).
    import yaml

    from raylm.cli import main

    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(tiny_config(modality, *overrides).to_dict()))
    out = tmp_path / "grid.png"
    assert main(["augment", "preview", "--config", str(config), "--out", str(out), "--samples", "4", "--epochs", "2"]) == 0
    if modality == "text":
        lines = capfd.readouterr().out.splitlines()
        assert sum(line.startswith("clean:") for line in lines) == 4 and not out.exists()
        return
    grid = cv2.imread(str(out))
    assert grid is not None and grid.shape[0] > 3 * 32 and grid.shape[1] > 4 * 32


SHAPES_POLICY = ["augment.image.rotate_p=1", "augment.image.max_rotation=180", "augment.image.hflip_p=0.5",
                 "augment.image.brightness=0.1", "augment.image.contrast=0.2"]


@pytest.mark.slow
def test_rotation_augmentation_on_shapes_is_at_least_as_accurate(ray_local, tmp_path):
    """The `shapes` demo draws every shape at a random angle; with 150 samples per class a CNN
    sees few angles of each, and rotation (and mirror) augmentation shows it the rest.

    The article's seed_cnn (one conv, then a dense layer over positions) cannot use that; its
    accuracy is noise-level either way, so this compares resnet_small (global pooling).
    Validation accuracy of one epoch jumps by several points (174 samples, BatchNorm), so the
    mean of the last three epochs is compared."""
    from raylm.train import fit

    base = ["task.modality=image", "model.name=resnet_small", "data.name=shapes", "data.samples_per_class=150",
            f"data.cache_dir={tmp_path / 'cache'}", f"train.storage_path={tmp_path / 'runs'}", "train.epochs=16",
            "train.batch_size=32", "train.lr=0.002", "train.num_workers=2", "train.cpus_per_worker=0.5"]
    runs = {name: fit(load_config(None, base + [f"train.name={name}"] + extra))
            for name, extra in (("plain", []), ("augmented", SHAPES_POLICY))}
    curves = {name: [round(row["val_accuracy"], 3) for row in outcome.history] for name, outcome in runs.items()}
    tail = {name: float(np.mean(curve[-3:])) for name, curve in curves.items()}
    print(f"\nshapes val_accuracy per epoch: {curves}\nmean of last 3 epochs: {tail}")
    assert tail["augmented"] >= tail["plain"] - 0.02
