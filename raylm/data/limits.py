"""What the image and audio decoders refuse, and the one exception they refuse it with.

A file's format is told by its magic bytes (never by its name), and its size, sample rate,
channels and duration by its header, before any pixel or sample is decoded: a 600-byte JPEG
that declares 16000x16000 pixels, or a WAV that declares 1 Hz, is refused without allocating.
"""

from __future__ import annotations

from collections.abc import Iterable

from raylm.errors import RaylmError

# (format, offset, magic): the signatures of the formats the decoders may be allowed to read.
_SIGNATURES = (
    ("png", 0, b"\x89PNG\r\n\x1a\n"),
    ("jpeg", 0, b"\xff\xd8\xff"),
    ("bmp", 0, b"BM"),
    ("webp", 8, b"WEBP"),
    ("tiff", 0, b"II*\x00"),
    ("tiff", 0, b"MM\x00*"),
    ("wav", 8, b"WAVE"),
    ("flac", 0, b"fLaC"),
    ("ogg", 0, b"OggS"),
)


class DecodeError(RaylmError):
    """A file a decoder refuses or cannot read; the message is a plain sentence saying why."""


def sniff_format(data: bytes, allowed: Iterable[str], kind: str) -> str:
    """The format ``data`` starts like, if it is one of ``allowed``; else a ``DecodeError``."""
    allowed = list(allowed)
    for name, offset, magic in _SIGNATURES:
        if data[offset:offset + len(magic)] == magic and (name != "webp" or data[:4] == b"RIFF") \
                and (name != "wav" or data[:4] in (b"RIFF", b"RIFX")):
            if name in allowed:
                return name
            raise DecodeError(f"{name} {kind}s are not accepted (allowed: {', '.join(allowed)})")
    raise DecodeError(f"not an {kind} file of an accepted format ({', '.join(allowed)})")
