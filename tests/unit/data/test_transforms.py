import cv2
import numpy as np
import pytest

from raylm.config import load_config
from raylm.data.audio import decode_audio, fix_length, mfcc_frames
from raylm.data.files import in_validation, list_class_folder, split_files
from raylm.data.images import decode_image, decode_image_batch
from raylm.data.limits import DecodeError
from raylm.data.text import tokenize


def test_image_decode_resize_scale_and_rgb():
    bgr = np.zeros((64, 48, 3), np.uint8)
    bgr[..., 2] = 255  # pure red in OpenCV's BGR order
    ok, png = cv2.imencode(".png", bgr)
    image = decode_image(png.tobytes(), 32)
    assert image.shape == (32, 32, 3) and image.dtype == np.float32
    assert image.min() >= 0 and image.max() <= 1
    np.testing.assert_allclose(image[..., 0], 1.0)  # red is channel 0 after BGR->RGB
    np.testing.assert_allclose(image[..., 2], 0.0)


def test_image_batch_labels_from_folders():
    ok, png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    batch = {"bytes": np.array([png.tobytes()] * 2, dtype=object), "path": np.array(["/d/cat/1.png", "/d/dog/2.png"])}
    out = decode_image_batch(batch, size=16, label_index={"cat": 0, "dog": 1})
    assert out["image"].shape == (2, 16, 16, 3)
    assert out["label"].tolist() == [0, 1]
    with pytest.raises(ValueError, match="not one of task.labels"):
        decode_image_batch(batch, size=16, label_index={"cat": 0})


def test_undecodable_image_is_a_clear_error():
    with pytest.raises(DecodeError, match="not an image file of an accepted format"):
        decode_image(b"not an image", 32)


def test_mfcc_frames_shape_is_article_22_dims(tmp_path):
    import soundfile

    cfg = load_config(None, ["task.modality=audio", "model.name=seed_conv1d"]).data.audio
    wav = tmp_path / "a.wav"
    soundfile.write(wav, np.sin(np.linspace(0, 2000, 22050)).astype(np.float32), 22050)
    audio = decode_audio(wav.read_bytes(), cfg.sample_rate)  # resampled 22.05 kHz -> 16 kHz
    assert abs(len(audio) - 16000) <= 2
    frames = mfcc_frames(audio, cfg)
    assert frames.shape == (cfg.frames, 22) and frames.dtype == np.float32
    assert np.allclose(frames.mean(axis=0), 0, atol=1e-3)  # per-clip CMVN


def test_fix_length_centres():
    assert fix_length(np.ones(4), 8).tolist() == [0, 0, 1, 1, 1, 1, 0, 0]
    assert fix_length(np.arange(10), 4).tolist() == [3, 4, 5, 6]


def test_undecodable_audio_is_a_clear_error():
    with pytest.raises(DecodeError, match="not an audio file of an accepted format"):
        decode_audio(b"RIFF nonsense", 16000)


def test_tokenize_fixed_length():
    from raylm.models.text import bundled_text_model_dir

    enc = tokenize(["hello world", "a much longer sentence " * 20], bundled_text_model_dir(), 16)
    assert enc["input_ids"].shape == (2, 16) and enc["attention_mask"][0].sum() < 16


def test_split_is_deterministic_and_near_fraction(tmp_path):
    keys = [f"class/{i}.png" for i in range(2000)]
    share = sum(in_validation(k, 0.2) for k in keys) / len(keys)
    assert 0.15 < share < 0.25
    assert [in_validation(k, 0.2) for k in keys] == [in_validation(k, 0.2) for k in keys]
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(10):
            (tmp_path / label / f"{i}.png").write_bytes(b"x")
    labels, files = list_class_folder(str(tmp_path), (".png",))
    train, val = split_files(files, str(tmp_path), 0.3)
    assert labels == ["a", "b"] and sorted(train + val) == sorted(files) and not set(train) & set(val)


def test_class_folder_needs_two_classes(tmp_path):
    (tmp_path / "only").mkdir()
    with pytest.raises(ValueError, match="at least 2 class folders"):
        list_class_folder(str(tmp_path), (".png",))


def _reference_transform(bgr: np.ndarray, size: int) -> np.ndarray:
    """preprocess_image as it was written before training's decode scaled whole batches (issue 31)."""
    if bgr.shape[:2] != (size, size):
        interp = cv2.INTER_AREA if max(bgr.shape[:2]) > size else cv2.INTER_LINEAR
        bgr = cv2.resize(bgr, (size, size), interpolation=interp)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) * (1.0 / 255.0)


def test_training_decode_scales_whole_batches_bit_for_bit_as_serving_scales_one_image():
    from raylm.data.images import preprocess_image
    from raylm.data.modality import decode_accepted

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((64, 64, 3), (32, 32, 3), (17, 40, 3), (90, 12, 3))]
    pngs = [cv2.imencode(".png", image)[1].tobytes() for image in images]
    cfg = load_config(None, ["task.modality=image", "model.name=seed_cnn"])
    batch = {"bytes": np.array(pngs + [b"not an image"], dtype=object), "label": np.array(["a", "b", "a", "b", "a"])}
    out = decode_accepted(batch, modality="image", settings=cfg.data.image, label_index={"a": 0, "b": 1},
                          bytes_column="bytes", label_column="label")
    expected = np.stack([_reference_transform(image, cfg.data.image.size) for image in images])
    assert out["image"].dtype == np.float32 and np.array_equal(out["image"], expected)  # the broken one left out
    assert out["label"].tolist() == [0, 1, 0, 1]
    for image in images:  # serving's path: one image at a time, the same function
        assert np.array_equal(preprocess_image(image, 16), _reference_transform(image, 16))
        assert np.array_equal(decode_image(cv2.imencode(".png", image)[1].tobytes(), 16), _reference_transform(image, 16))


def test_a_png_whose_first_chunk_is_not_its_header_is_refused():
    png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    with pytest.raises(DecodeError, match="broken header"):
        decode_image(png[:12] + b"tEXt" + png[16:], 32)
