"""``augment.image.border``: what a rotation fills outside the source image.

Black corners are a look no validation image has (benchmarks/pba.py found augmentation hurting with
them on the shapes demo); ``replicate`` continues a plain background, so a rotated plain image stays
that colour everywhere, while ``constant`` (the default, unchanged) still fills black."""

from __future__ import annotations

import numpy as np
import pytest

from raylm.config import ImageAugmentConfig
from raylm.data.augment import augment_batch


def _rotated(border: str) -> np.ndarray:
    background = np.full((16, 32, 32, 3), 0.4, np.float32)
    policy = ImageAugmentConfig(rotate_p=1.0, max_rotation=45.0, border=border)
    # distinct rows so each sample draws its own angle (the draws are a function of the sample's bytes)
    background[:, 0, 0, 0] = np.linspace(0.3, 0.5, 16)
    return augment_batch({"image": background}, modality="image", policy=policy, seed=0, epoch=0)["image"]


def test_replicate_keeps_a_plain_background_plain():
    out = _rotated("replicate")
    assert out[:, 4:-4, 4:-4].min() == pytest.approx(0.4, abs=1e-6)
    assert out.min() > 0.25  # no black corner anywhere


def test_constant_fills_black_corners():
    out = _rotated("constant")
    corners = out[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners.max(axis=-1) < 0.1).mean() > 0.5  # most rotated images have black corners


def test_border_is_a_named_choice():
    with pytest.raises(ValueError, match="border"):
        ImageAugmentConfig(border="wrap")
