"""The augmentation ops: pure numpy functions of a batch, its per-sample seeds and a policy.

No Ray, no config lookup, no import of the rest of data/: the modality classes (``modality.py``) call
these, and the Ray Data stage that feeds them the epoch (``augment.py``) sits above both. The
determinism argument (a sample's draws are a pure function of seed, epoch, sample key and op slot)
is in ``augment.py``'s docstring.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from raylm.config import AudioAugmentConfig, ImageAugmentConfig, TextAugmentConfig

# --------------------------------------------------------------------------------------------
# counter-based randomness

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic is what it wants)."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


_KEY_WEIGHTS: dict[int, np.ndarray] = {}


def sample_keys(rows: np.ndarray) -> np.ndarray:
    """A stable 64-bit key per row from its bytes: two multiply-sum hashes of its 32-bit words.

    Exact integer arithmetic (wrapping mod 2**32), so every node computes the same key; about
    1 us for a 32x32x3 image, where a per-row cryptographic hash costs ~10."""
    flat = np.ascontiguousarray(rows).reshape(len(rows), -1)
    words = flat.view(np.uint32) if flat.shape[1] * flat.itemsize % 4 == 0 else flat.view(np.uint8).astype(np.uint32)
    width = words.shape[1]
    weights = _KEY_WEIGHTS.get(width)
    if weights is None:
        mixed = _mix(np.arange(1, 2 * width + 1, dtype=np.uint64) * _GOLDEN)
        weights = ((mixed & np.uint64(0xFFFFFFFF)) | np.uint64(1)).astype(np.uint32).reshape(2, width)
        _KEY_WEIGHTS[width] = weights
    high = (words * weights[0]).sum(axis=1, dtype=np.uint32).astype(np.uint64)
    low = (words * weights[1]).sum(axis=1, dtype=np.uint32).astype(np.uint64)
    return _mix((high << np.uint64(32)) | low)


def sample_seeds(keys: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        base = _mix(np.uint64(seed % 2**64) * _GOLDEN + np.uint64(epoch % 2**64) + np.uint64(0x5EED))
        return _mix(keys ^ base)


def _uniform(seeds: np.ndarray, slot: int, count: int = 1) -> np.ndarray:
    """``(n, count)`` uniforms in [0, 1): draw ``j`` of op ``slot`` for each sample seed."""
    with np.errstate(over="ignore"):
        counter = np.uint64(slot) * np.uint64(0xD1B54A32D192ED03) + np.arange(count, dtype=np.uint64) * _GOLDEN
        z = _mix(seeds[:, None] + counter[None, :])
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def _normal(seeds: np.ndarray, slot: int, count: int) -> np.ndarray:
    u1, u2 = _uniform(seeds, slot, count), _uniform(seeds, slot + 1, count)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2 * np.pi * u2)  # Box-Muller


def _between(u: np.ndarray, low: float, high: float) -> np.ndarray:
    return low + (high - low) * u


# --------------------------------------------------------------------------------------------
# images: (n, h, w, c) float32 in [0, 1]


def image_affines(seeds: np.ndarray, height: int, width: int, policy: ImageAugmentConfig) -> np.ndarray:
    """``(n, 2, 3)`` destination->source matrices: rotate, then random resized crop, then flip.

    Composed into one matrix so each image is resampled once (one interpolation, one warp)."""
    n = len(seeds)
    u = _uniform(seeds, 1, 8)
    center = np.array([(width - 1) / 2, (height - 1) / 2])

    angle = np.where(u[:, 0] < policy.rotate_p, _between(u[:, 1], -policy.max_rotation, policy.max_rotation), 0.0)
    scale = np.where(u[:, 2] < policy.crop_p, _between(u[:, 3], policy.crop_scale_min, policy.crop_scale_max), 1.0)
    flip = u[:, 4] < policy.hflip_p

    # Square-aspect crop of `scale` of the area at a uniform position, resized back to full size.
    side = np.sqrt(scale)
    offset_x = u[:, 5] * (1 - side) * width
    offset_y = u[:, 6] * (1 - side) * height

    m = np.zeros((n, 3, 3))
    m[:, 2, 2] = 1
    # output pixel -> (un-flip) -> crop window in the rotated image (pixel centres line up)
    sx = np.where(flip, -side, side)
    m[:, 0, 0] = sx
    m[:, 0, 2] = np.where(flip, (width - 1 + 0.5) * side, 0.5 * side) - 0.5 + offset_x
    m[:, 1, 1] = side
    m[:, 1, 2] = 0.5 * side - 0.5 + offset_y
    # rotated image -> original: the inverse of cv2.getRotationMatrix2D(center, angle, 1)
    rot = np.zeros((n, 3, 3))
    rad = np.deg2rad(angle)
    cos, sin = np.cos(rad), np.sin(rad)
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = cos, -sin, sin, cos, 1
    rot[:, 0, 2] = center[0] - cos * center[0] + sin * center[1]
    rot[:, 1, 2] = center[1] - sin * center[0] - cos * center[1]
    return np.matmul(rot, m)[:, :2, :].astype(np.float64)


def augment_images(images: np.ndarray, seeds: np.ndarray, policy: ImageAugmentConfig) -> np.ndarray:
    import cv2

    n, height, width = images.shape[:3]
    if n == 0:
        return np.array(images, copy=True)
    affines = image_affines(seeds, height, width, policy)
    # Images whose draw is the identity (op not applied) are copied, not resampled.
    moved = np.abs(affines - np.array([[1.0, 0, 0], [0, 1.0, 0]])).max(axis=(1, 2)) > 1e-9
    out = np.empty_like(images) if moved.all() else np.array(images, copy=True)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    # A rotation's corners: black (constant) differs from every validation image's background; replicate
    # continues the edge, so a plain background stays plain.
    border = {"constant": cv2.BORDER_CONSTANT, "replicate": cv2.BORDER_REPLICATE,
              "reflect": cv2.BORDER_REFLECT_101}[policy.border]
    for i in np.flatnonzero(moved).tolist():
        cv2.warpAffine(images[i], affines[i], (width, height), dst=out[i], flags=flags,
                       borderMode=border, borderValue=0)

    if policy.brightness > 0 or policy.contrast > 0:
        u = _uniform(seeds, 10, 2).astype(np.float32)
        shift = _between(u[:, 0], -policy.brightness, policy.brightness)[:, None, None, None]
        factor = _between(u[:, 1], 1 - policy.contrast, 1 + policy.contrast)[:, None, None, None]
        # (x - m) * f + m + b in two in-place passes: x * f + (m * (1 - f) + b)
        offset = out.mean(axis=(1, 2, 3), keepdims=True) * (1 - factor) + shift
        np.multiply(out, factor, out=out)
        np.add(out, offset, out=out)
        np.clip(out, 0.0, 1.0, out=out)

    if policy.cutout_p > 0 and policy.cutout_size > 0:
        u = _uniform(seeds, 12, 3)
        apply = u[:, 0] < policy.cutout_p
        half_h, half_w = policy.cutout_size * height / 2, policy.cutout_size * width / 2
        # The centre may sit near an edge, so the hole is sometimes clipped (as in DeVries & Taylor).
        cy, cx = u[:, 1] * height, u[:, 2] * width
        top = np.clip(np.rint(cy - half_h), 0, height).astype(int)
        bottom = np.clip(np.rint(cy + half_h), 0, height).astype(int)
        left = np.clip(np.rint(cx - half_w), 0, width).astype(int)
        right = np.clip(np.rint(cx + half_w), 0, width).astype(int)
        for i in np.flatnonzero(apply):  # a slice per image: cheaper than a mask over the batch
            out[i, top[i]:bottom[i], left[i]:right[i]] = 0.0
    return out


# --------------------------------------------------------------------------------------------
# audio: MFCC frames (n, frames, coeffs) float32


def augment_frames(frames: np.ndarray, seeds: np.ndarray, policy: AudioAugmentConfig) -> np.ndarray:
    """Noise, time shift and SpecAugment masks on MFCC frames.

    The stage runs after decoding, on features: noise is Gaussian at an SNR relative to the
    clip's own feature power, and masks/shift fill with each coefficient's clip mean (0 under
    data.audio.normalize's CMVN), so a masked region carries no information either way."""
    out = np.array(frames, dtype=frames.dtype, copy=True)
    n, steps, coeffs = out.shape
    if n == 0:
        return out
    fill = frames.mean(axis=1, keepdims=True)  # (n, 1, coeffs)

    if policy.noise_p > 0:
        u = _uniform(seeds, 20, 2)
        apply = u[:, 0] < policy.noise_p
        if apply.any():
            snr_db = _between(u[:, 1], policy.snr_db_min, policy.snr_db_max)
            power = (frames.astype(np.float64) ** 2).mean(axis=(1, 2))
            sigma = np.where(apply, np.sqrt(power / 10 ** (snr_db / 10)), 0.0)
            noise = _normal(seeds, 21, steps * coeffs).reshape(n, steps, coeffs)
            out += (noise * sigma[:, None, None]).astype(out.dtype)

    if policy.shift_p > 0 and policy.max_shift > 0:
        u = _uniform(seeds, 23, 2)
        limit = policy.max_shift * steps
        shift = np.where(u[:, 0] < policy.shift_p, np.rint(_between(u[:, 1], -limit, limit)), 0).astype(np.int64)
        if shift.any():
            source = np.arange(steps)[None, :] - shift[:, None]  # out[t] = frames[t - shift]
            valid = (source >= 0) & (source < steps)
            shifted = np.take_along_axis(out, np.clip(source, 0, steps - 1)[:, :, None], axis=1)
            out = np.where(valid[:, :, None], shifted, fill)

    out = _masks(out, seeds, fill, axis=1, count=policy.time_masks, max_width=round(policy.time_mask_width * steps), slot=25)
    out = _masks(out, seeds, fill, axis=2, count=policy.freq_masks, max_width=policy.freq_mask_width, slot=27)
    return out.astype(frames.dtype, copy=False)


def _masks(out: np.ndarray, seeds: np.ndarray, fill: np.ndarray, *, axis: int, count: int, max_width: int, slot: int) -> np.ndarray:
    """SpecAugment: ``count`` bands of width ~ U{0..max_width} along ``axis`` set to ``fill``."""
    length = out.shape[axis]
    max_width = min(max_width, length)
    if count == 0 or max_width == 0:
        return out
    u = _uniform(seeds, slot, 2 * count)
    width = np.floor(u[:, :count] * (max_width + 1)).astype(np.int64)  # (n, count)
    start = np.floor(u[:, count:] * (length - width + 1)).astype(np.int64)
    positions = np.arange(length)[None, None, :]
    band = ((positions >= start[:, :, None]) & (positions < (start + width)[:, :, None])).any(axis=1)  # (n, length)
    mask = band[:, :, None] if axis == 1 else band[:, None, :]
    return np.where(mask, fill, out)


# --------------------------------------------------------------------------------------------
# text: token ids (n, length) with attention_mask


def augment_tokens(input_ids: np.ndarray, attention_mask: np.ndarray, seeds: np.ndarray, policy: TextAugmentConfig, *,
                   special_ids: list[int], unknown_id: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Token dropout (-> the unknown token), adjacent swaps and deletions of content tokens.

    Special tokens ([CLS], [SEP], padding) never move, so the model still sees a well-formed
    sequence; deletions pull the rest left and pad the end."""
    ids = np.array(input_ids, copy=True)
    mask = np.array(attention_mask, copy=True)
    n, length = ids.shape
    if n == 0:
        return ids, mask
    content = (mask == 1) & ~np.isin(ids, np.asarray(special_ids, dtype=ids.dtype))

    if policy.dropout_p > 0:
        ids = np.where(content & (_uniform(seeds, 30, length) < policy.dropout_p), unknown_id, ids)

    if policy.swap_p > 0 and length > 1:
        pair = content[:, :-1] & content[:, 1:]
        chosen = pair & (_uniform(seeds, 31, length - 1) < policy.swap_p)
        # A token swaps at most once: drop a choice whose left neighbour was chosen too.
        chosen[:, 1:] &= ~chosen[:, :-1]
        left = np.flatnonzero(chosen.ravel())
        rows, cols = np.divmod(left, length - 1)
        ids[rows, cols], ids[rows, cols + 1] = ids[rows, cols + 1], ids[rows, cols].copy()

    if policy.delete_p > 0:
        delete = content & (_uniform(seeds, 32, length) < policy.delete_p)
        # Never empty a sentence: a row that would lose every content token keeps them all.
        delete &= ((content & ~delete).any(axis=1) | ~content.any(axis=1))[:, None]
        if delete.any():
            order = np.argsort(delete, axis=1, kind="stable")  # kept tokens first, in order
            ids = np.take_along_axis(ids, order, axis=1)
            kept = np.take_along_axis(mask.astype(bool) & ~delete, order, axis=1)
            ids = np.where(kept, ids, pad_id)
            mask = kept.astype(mask.dtype)
    return ids, mask
