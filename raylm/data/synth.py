"""Large learnable synthetic datasets, written shard by shard, so anyone can test scale offline.

``raylm data synth --modality image --size 2GB --out DIR`` writes ``DIR/train/shard-00000.parquet``,
... and ``DIR/validation/...`` (parquet with the columns raylm reads: ``image``/``audio`` encoded
bytes or ``text``, plus ``label``) and ``DIR/raylm_synth.json`` (labels, rows, bytes). Every class
has its own signal under per-sample noise, so accuracy above chance means the model learned:

- image: an oriented colour grating (orientation and tint per class, random phase and frequency
  jitter) plus uniform pixel noise, PNG-encoded (noise keeps PNGs near their raw size) or BMP
  (uncompressed: the least CPU per byte, for sets larger than RAM);
- audio: a tone with harmonics at a class frequency (+-3 % jitter) in noise, 16-bit WAV;
- text: sentences of filler words with a few of the class's topic words mixed in.

Memory stays flat: one row group is generated, written and dropped at a time; a shard appears
under its final name only when whole (written to a hidden temporary name, then renamed), and
each shard is seeded by ``(seed, split, index)``, so a rerun writes the same bytes.
"""

from __future__ import annotations

import functools
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from raylm.atomic import atomic_write_text

Modality = Literal["image", "text", "audio"]
MANIFEST = "raylm_synth.json"
# Rows generated and written at a time (about 1 MB): what bounds the generator's memory.
_ROW_GROUP = {"image": 64, "audio": 32, "text": 4096}


@dataclass(frozen=True)
class SynthSpec:
    modality: Modality
    size_bytes: int  # train + validation, on disk
    num_classes: int = 10
    shard_bytes: int = 32 * 2**20
    validation_fraction: float = 0.02
    image_size: int = 64
    image_format: Literal["png", "bmp"] = "png"  # bmp: uncompressed, the least CPU per byte to write and decode
    sample_rate: int = 16000
    clip_seconds: float = 1.0
    noise: float = 0.15
    seed: int = 0

    @property
    def labels(self) -> list[str]:
        return [f"class_{k}" for k in range(self.num_classes)]


def _image_rows(spec: SynthSpec, rng: np.random.Generator, n: int) -> tuple[list, np.ndarray]:
    import cv2

    side, k = spec.image_size, spec.num_classes
    # The grating is smooth (about 3 cycles across): drawn at up to 128x128 and resized, it costs
    # the same for any image size; the noise is drawn at full size.
    drawn = min(side, 128)
    labels = rng.integers(0, k, n)
    axis = np.arange(drawn, dtype=np.float32) / drawn
    angle = (np.pi * labels / k).astype(np.float32)[:, None]
    freq = (3.0 * rng.uniform(0.9, 1.1, n)).astype(np.float32)[:, None]
    phase = rng.uniform(0, 2 * np.pi, n).astype(np.float32)[:, None]
    along_x = 2 * np.pi * freq * axis * np.cos(angle) + phase  # (n, drawn)
    along_y = 2 * np.pi * freq * axis * np.sin(angle)
    tint = 0.5 + 0.4 * np.cos(2 * np.pi * (labels[:, None] / k + np.array([0.0, 1 / 3, 2 / 3]))).astype(np.float32)
    # Uniform noise of standard deviation `noise` (half-width sqrt(3) x that), from random bytes: a
    # tenth of the cost of Gaussian floats. Each image takes a random window of one field drawn per
    # call (twice the side): every image's noise differs, and large sets are written at disk-ish speed.
    width = np.sqrt(3) * spec.noise * 255
    field = np.frombuffer(rng.bytes(4 * side * side * 3), np.uint8).reshape(2 * side, 2 * side, 3)
    offsets = rng.integers(0, side, (n, 2))
    encoded = []
    for i in range(n):
        # sin(x-part + y-part) as two outer products: drawn^2 multiply-adds instead of drawn^2 sines
        wave = np.outer(np.cos(along_y[i]), np.sin(along_x[i])) + np.outer(np.sin(along_y[i]), np.cos(along_x[i]))
        grating = cv2.merge([127.5 + 89.25 * t * wave for t in tint[i]]).astype(np.uint8)
        if drawn != side:
            grating = cv2.resize(grating, (side, side), interpolation=cv2.INTER_LINEAR)
        (y, x) = offsets[i]
        pixels = cv2.addWeighted(grating, 1.0, field[y:y + side, x:x + side], 2 * width / 255, -width)  # saturated
        encoded.append(cv2.imencode(f".{spec.image_format}", pixels)[1].tobytes())
    return encoded, labels


def _audio_rows(spec: SynthSpec, rng: np.random.Generator, n: int) -> tuple[list, np.ndarray]:
    import soundfile

    labels = rng.integers(0, spec.num_classes, n)
    t = np.arange(int(spec.sample_rate * spec.clip_seconds)) / spec.sample_rate
    encoded = []
    for label in labels:
        # Class frequencies a third of an octave apart from 200 Hz; two harmonics make it voice-like.
        f0 = 200.0 * 2 ** (label / 3) * rng.uniform(0.97, 1.03)
        wave = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi)) / h for h in (1, 2, 3))
        wave = 0.3 * rng.uniform(0.5, 1.0) * wave / 1.84 + rng.normal(0, spec.noise * 0.3, len(t))
        out = io.BytesIO()
        soundfile.write(out, np.clip(wave, -1, 1).astype(np.float32), spec.sample_rate, format="WAV", subtype="PCM_16")
        encoded.append(out.getvalue())
    return encoded, labels


@functools.lru_cache(maxsize=4)
def _vocabulary(seed: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(filler words, topic words per class): depends on the seed only, so every shard shares it."""
    rng = np.random.default_rng(seed)
    words = _syllable_words(rng, 300 + 12 * num_classes)
    rng.shuffle(words)
    return words[:300], words[300:].reshape(num_classes, 12)


def _syllable_words(rng: np.random.Generator, count: int) -> np.ndarray:
    consonants, vowels = list("bdfgklmnprstvz"), list("aeiou")
    words = {"".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(int(rng.integers(2, 4))))
             for _ in range(count * 2)}
    return np.array(sorted(words)[:count])


def _text_rows(spec: SynthSpec, rng: np.random.Generator, n: int) -> tuple[list, np.ndarray]:
    filler, topics = _vocabulary(spec.seed, spec.num_classes)
    words = list(filler) + list(topics.ravel())  # one index space: filler first, then each class's topics
    labels = rng.integers(0, spec.num_classes, n)
    lengths = rng.integers(12, 40, n)
    codes = rng.integers(0, len(filler), (n, 40))
    topical = rng.random((n, 40)) < 0.25  # a quarter of the words name the class's topic
    topic_codes = len(filler) + labels[:, None] * topics.shape[1] + rng.integers(0, topics.shape[1], (n, 40))
    codes = np.where(topical, topic_codes, codes).tolist()
    texts = [" ".join(words[c] for c in row[:length]) for row, length in zip(codes, lengths.tolist())]
    return texts, labels


def _row_group(spec: SynthSpec) -> int:
    """Rows per row group: about 1 MB, also for images larger than 64x64 (fewer rows, at least 4: a
    shard overshoots its target by less than one row group)."""
    if spec.modality == "image":
        return max(4, min(_ROW_GROUP["image"], _ROW_GROUP["image"] * 64 * 64 // spec.image_size**2))
    return _ROW_GROUP[spec.modality]


_ROWS: dict[str, tuple[str, Callable]] = {"image": ("image", _image_rows), "audio": ("audio", _audio_rows),
                                          "text": ("text", _text_rows)}


def _write_shard(path: Path, spec: SynthSpec, seed: tuple[int, ...], max_bytes: int) -> tuple[int, int]:
    """One shard of about ``max_bytes``; (rows, bytes). Written hidden, renamed when whole."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    column, make_rows = _ROWS[spec.modality]
    rng = np.random.default_rng(seed)
    tmp = path.with_name(f".{path.name}.tmp")
    rows = 0
    schema = pa.schema([(column, pa.string() if column == "text" else pa.binary()), ("label", pa.string())])
    # Encoded images and audio are noise-like: compressing them again, a dictionary of them or their
    # min/max statistics cost CPU (5x the rest of the writing for large images) and save nothing.
    encoded = column != "text"
    with pq.ParquetWriter(tmp, schema, compression="none" if encoded else "snappy",
                          use_dictionary=["label"] if encoded else True,
                          write_statistics=["label"] if encoded else True) as writer:
        while tmp.stat().st_size < max_bytes:
            values, labels = make_rows(spec, rng, _row_group(spec))
            writer.write_table(pa.table({column: values, "label": [spec.labels[k] for k in labels]}))
            rows += len(values)
    os.replace(tmp, path)
    return rows, path.stat().st_size


def _shard_plan(spec: SynthSpec) -> list[tuple[int, str, list[int]]]:
    """(split index, split, target bytes of each shard): ``shard_bytes`` each, the last one the rest."""
    budgets = {"validation": int(spec.size_bytes * spec.validation_fraction)}
    budgets["train"] = spec.size_bytes - budgets["validation"]
    return [(index, split, [min(spec.shard_bytes, budget - start) for start in range(0, budget, spec.shard_bytes)])
            for index, (split, budget) in enumerate(budgets.items())]


def _shard(path: Path, spec: SynthSpec, seed: tuple[int, ...], target: int) -> tuple[int, int]:
    """(rows, bytes) of one shard: read from a whole one an earlier run left (shards appear only
    when whole), else written."""
    if path.is_file():
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows, path.stat().st_size
    return _write_shard(path, spec, seed, target)


def synthesize(spec: SynthSpec, out: str | Path, *, progress: Callable[[str], None] | None = None,
               workers: int = 1) -> dict:
    """Write the dataset under ``out`` (train/, validation/, raylm_synth.json); returns the manifest.

    Shards already written whole by an earlier run with the same spec are kept (a rerun resumes).
    ``workers`` > 1 writes that many shards at once in separate processes: each shard is seeded by
    its own index, so the bytes are the same whatever the count."""
    out = Path(out).expanduser().resolve()
    manifest_path = out / MANIFEST
    spec_record = {k: getattr(spec, k) for k in spec.__dataclass_fields__}
    if manifest_path.is_file():
        previous = json.loads(manifest_path.read_text(encoding="utf-8"))
        defaults = {k: f.default for k, f in spec.__dataclass_fields__.items()}  # fields added since
        if {**defaults, **previous.get("spec", {})} != spec_record:
            raise ValueError(f"--out: {out} holds a synthetic set made with other settings ({previous.get('spec')}); "
                             "choose another directory or remove it")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(manifest_path, json.dumps({"spec": spec_record, "complete": False}, indent=2))
    pool = None
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: a fresh interpreter per worker, nothing inherited from a caller that runs threads
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    splits = {}
    try:
        for split_index, split, targets in _shard_plan(spec):
            directory = out / split
            directory.mkdir(exist_ok=True)
            calls = [(directory / f"shard-{index:05d}.parquet", spec, (spec.seed, split_index, index), target)
                     for index, target in enumerate(targets)]
            results = pool.map(_shard, *zip(*calls)) if pool is not None else (_shard(*call) for call in calls)
            rows = written = 0
            for index, (n, size) in enumerate(results, 1):
                rows, written = rows + n, written + size
                if progress is not None:
                    progress(f"[raylm synth] {split}: {index} shards, {rows} rows, {written / 2**20:.0f} MiB")
            splits[split] = {"path": str(directory), "shards": len(targets), "rows": rows, "bytes": written}
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    manifest = {"spec": spec_record, "complete": True, "modality": spec.modality, "labels": spec.labels,
                "splits": splits, "bytes": sum(s["bytes"] for s in splits.values())}
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2))
    return manifest


def train_overrides(manifest: dict) -> list[str]:
    """The ``key=value`` overrides that train on a synthetic set (streamed, labels known up front)."""
    labels = "[" + ",".join(manifest["labels"]) + "]"
    spec = manifest["spec"]
    overrides = [f"task.modality={manifest['modality']}", f"task.labels={labels}",
                 f"data.path={manifest['splits']['train']['path']}",
                 f"data.validation_path={manifest['splits']['validation']['path']}", "data.check=false"]
    if manifest["modality"] == "audio":
        overrides += [f"data.audio.sample_rate={spec['sample_rate']}", f"data.audio.clip_seconds={spec['clip_seconds']}"]
    return overrides
