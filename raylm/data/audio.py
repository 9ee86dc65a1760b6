"""Audio: decode -> mono -> resample -> fixed-length clip -> MFCC frames ``(frames, n_mfcc)``."""

from __future__ import annotations

import io

import numpy as np


def decode_audio(data: bytes, sample_rate: int) -> np.ndarray:
    import soundfile

    try:
        audio, sr = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises several types for bad input
        # Its message starts "Error opening <_io.BytesIO object at 0x...>: "; keep only the reason.
        raise ValueError(f"not a decodable audio file: {str(err).rpartition(': ')[2]}") from None
    if audio.size == 0 or not np.isfinite(audio).all():
        raise ValueError("no finite audio samples")  # a 0-sample file is refused in training as in serving
    audio = audio.mean(axis=1)
    if sr != sample_rate:
        import librosa

        audio = librosa.resample(audio, orig_sr=sr, target_sr=sample_rate)
    return audio


def fix_length(audio: np.ndarray, samples: int) -> np.ndarray:
    """Centre-crop or centre-pad so words are not cut at one end."""
    if len(audio) >= samples:
        start = (len(audio) - samples) // 2
        return audio[start : start + samples]
    pad = samples - len(audio)
    return np.pad(audio, (pad // 2, pad - pad // 2))


def mfcc_frames(audio: np.ndarray, cfg) -> np.ndarray:
    """``cfg`` is ``data.audio``. librosa's MFCC; transposed to time-major like the article's input."""
    import librosa

    clip = fix_length(audio, int(round(cfg.clip_seconds * cfg.sample_rate)))
    mfcc = librosa.feature.mfcc(y=clip, sr=cfg.sample_rate, n_mfcc=cfg.n_mfcc, hop_length=cfg.hop_length)
    if cfg.normalize:
        mfcc = (mfcc - mfcc.mean(axis=1, keepdims=True)) / (mfcc.std(axis=1, keepdims=True) + 1e-5)
    return mfcc.T.astype(np.float32)


def decode_audio_batch(batch: dict, *, audio_cfg, label_index: dict[str, int], bytes_column: str = "bytes",
                       label_column: str | None = None) -> dict[str, np.ndarray]:
    from raylm.data.images import encode_labels

    frames = np.stack([mfcc_frames(decode_audio(b, audio_cfg.sample_rate), audio_cfg) for b in batch[bytes_column]])
    if label_column is None:
        from raylm.data.files import label_of_path

        raw = [label_of_path(p) for p in batch["path"]]
    else:
        raw = batch[label_column]
    return {"frames": frames, "label": encode_labels(raw, label_index)}
