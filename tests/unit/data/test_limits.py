"""Formats told by magic bytes, never by names (raylm/data/limits.py)."""

import pytest

from raylm.data.limits import DecodeError, sniff_format

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16
WAV = b"RIFF\0\0\0\0WAVEfmt "
WEBP = b"RIFF\0\0\0\0WEBPVP8 "


@pytest.mark.parametrize("data, name", [
    (PNG, "png"), (b"\xff\xd8\xff\xe0", "jpeg"), (b"BM\0\0", "bmp"), (WEBP, "webp"), (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"), (WAV, "wav"), (b"RIFX\0\0\0\0WAVE", "wav"), (b"fLaC\0", "flac"), (b"OggS\0", "ogg"),
])
def test_each_signature_is_recognised(data, name):
    assert sniff_format(data, [name], "file") == name


def test_a_known_format_that_is_not_allowed_is_named():
    with pytest.raises(DecodeError, match=r"^png images are not accepted \(allowed: jpeg, bmp\)$"):
        sniff_format(PNG, ("jpeg", "bmp"), "image")


@pytest.mark.parametrize("data", [b"", b"GIF89a", b"\x89PNG", b"XXXX\0\0\0\0WEBP", b"XXXX\0\0\0\0WAVE", b"RIFF\0\0\0\0AVI "])
def test_anything_else_is_refused_listing_the_accepted(data):
    with pytest.raises(DecodeError, match=r"^not an image file of an accepted format \(png, webp, wav\)$"):
        sniff_format(data, iter(["png", "webp", "wav"]), "image")
