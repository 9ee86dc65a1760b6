"""Audio: decode -> mono -> resample -> fixed-length clip -> MFCC frames ``(frames, n_mfcc)``.

The header is read first (libsndfile's ``info``): a format, sample rate, channel count or duration
outside ``InputLimits`` is refused before any sample is decoded, and only the clip that training
keeps (the centre ``clip_seconds``) is decoded and resampled, so a long or slow-rate file costs no
more memory than a short one.
"""

from __future__ import annotations

import io
import math

import numpy as np

from raylm.config import InputLimits
from raylm.data.limits import DecodeError, sniff_format

_DEFAULT_LIMITS = InputLimits()


def audio_header(data: bytes, limits: InputLimits = _DEFAULT_LIMITS):
    """libsndfile's header info of ``data``; ``DecodeError`` when the limits refuse it."""
    import soundfile

    fmt = sniff_format(data, limits.audio_formats, "audio")
    try:
        info = soundfile.info(io.BytesIO(data))
    except Exception:  # soundfile raises several types for broken headers
        raise DecodeError(f"not a readable {fmt} audio file (broken header)") from None
    if not limits.min_sample_rate <= info.samplerate <= limits.max_sample_rate:
        raise DecodeError(f"the {fmt} file declares a sample rate of {info.samplerate} Hz, outside "
                          f"[{limits.min_sample_rate}, {limits.max_sample_rate}]")
    if not 1 <= info.channels <= limits.max_channels:
        raise DecodeError(f"the {fmt} file declares {info.channels} channels, more than max_channels={limits.max_channels}")
    if info.frames / info.samplerate > limits.max_audio_seconds:
        raise DecodeError(f"the {fmt} file lasts {info.frames / info.samplerate:.1f} s, longer than "
                          f"max_audio_seconds={limits.max_audio_seconds}")
    return info


def decode_audio(data: bytes, sample_rate: int, *, clip_seconds: float | None = None,
                 limits: InputLimits = _DEFAULT_LIMITS) -> np.ndarray:
    """Encoded bytes -> mono float32 at ``sample_rate``; with ``clip_seconds``, only the centre clip
    (what ``fix_length`` keeps) is decoded and resampled. ``DecodeError`` for refused or broken files."""
    import soundfile

    info = audio_header(data, limits)
    start, frames = 0, info.frames
    if clip_seconds is not None:
        frames = min(info.frames, math.ceil(clip_seconds * info.samplerate))
        start = (info.frames - frames) // 2
    try:
        audio, sr = soundfile.read(io.BytesIO(data), frames=frames, start=start, dtype="float32", always_2d=True)
    except Exception:
        raise DecodeError("not a decodable audio file (the sample data is broken)") from None
    if audio.size == 0:
        raise DecodeError("the audio file holds no samples")
    if not np.isfinite(audio).all():
        raise DecodeError("the audio file holds non-finite samples")
    audio = audio.mean(axis=1)
    if sr != sample_rate:
        import librosa

        with np.errstate(over="ignore", invalid="ignore"):
            audio = librosa.resample(audio, orig_sr=sr, target_sr=sample_rate)
        if not np.isfinite(audio).all():
            raise DecodeError("the audio file's samples are out of range (not finite once resampled)")
    return audio


def fix_length(audio: np.ndarray, samples: int) -> np.ndarray:
    """Centre-crop or centre-pad so words are not cut at one end."""
    if len(audio) >= samples:
        start = (len(audio) - samples) // 2
        return audio[start : start + samples]
    pad = samples - len(audio)
    return np.pad(audio, (pad // 2, pad - pad // 2))


def mfcc_frames(audio: np.ndarray, cfg) -> np.ndarray:
    """``cfg`` is ``data.audio``. librosa's MFCC; transposed to time-major like the article's input.
    ``DecodeError`` when the features are not finite (e.g. samples near float32's limit)."""
    import librosa

    clip = fix_length(audio, int(round(cfg.clip_seconds * cfg.sample_rate)))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        mfcc = librosa.feature.mfcc(y=clip, sr=cfg.sample_rate, n_mfcc=cfg.n_mfcc, hop_length=cfg.hop_length)
        if cfg.normalize:
            mfcc = (mfcc - mfcc.mean(axis=1, keepdims=True)) / (mfcc.std(axis=1, keepdims=True) + 1e-5)
    if not np.isfinite(mfcc).all():
        raise DecodeError("the audio's features are not finite (samples out of range)")
    return mfcc.T.astype(np.float32)
