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
