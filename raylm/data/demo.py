"""Offline demo datasets, generated once into ``data.cache_dir`` as ordinary files.

They are written in the same formats users bring (class folders of PNG/WAV, a CSV), so the demo
exercises the real readers rather than an in-memory shortcut.
"""

from __future__ import annotations

import csv
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from raylm.registry import DATASETS

log = logging.getLogger(__name__)


def _materialize(root: Path, write: Callable[[Path], None]) -> Path:
    """Write into a temporary sibling and rename when whole: a crash leaves no half dataset."""
    if root.exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        write(tmp)
        try:
            tmp.rename(root)
        except OSError:  # another process finished first; theirs is equally valid
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _root(cfg, name: str, per_class: int) -> Path:
    return Path(cfg.data.cache_dir).expanduser() / "demo" / f"{name}-{per_class}"


@DATASETS.register("image", "digits", "any", default=True)
def digits(cfg) -> Path:
    """scikit-learn's 1,797 handwritten 8x8 digits, upscaled to 32x32 RGB with random tints."""
    per_class = cfg.data.samples_per_class or 180

    def write(tmp: Path) -> None:
        import cv2
        from sklearn.datasets import load_digits  # only to write the set: importing scikit-learn costs ~1 s

        bunch = load_digits()
        rng = np.random.default_rng(0)
        counts: dict[int, int] = {}
        for image, label in zip(bunch.images, bunch.target):
            label = int(label)
            if counts.get(label, 0) >= per_class:
                continue
            counts[label] = counts.get(label, 0) + 1
            gray = cv2.resize((image / 16.0).astype(np.float32), (32, 32), interpolation=cv2.INTER_LINEAR)
            fg, bg = rng.uniform(0.6, 1.0, 3), rng.uniform(0.0, 0.3, 3)
            rgb = bg + gray[..., None] * (fg - bg)
            (tmp / str(label)).mkdir(exist_ok=True)
            cv2.imwrite(str(tmp / str(label) / f"{counts[label]:04d}.png"), (rgb[..., ::-1] * 255).astype(np.uint8))

    return _materialize(_root(cfg, "digits", per_class), write)


_SHAPES = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6, "star": -5, "arrow": 0}


def _shape_points(kind: str, center: np.ndarray, radius: float, angle: float) -> np.ndarray:
    n = _SHAPES[kind]
    if n > 0:
        t = angle + np.arange(n) * 2 * np.pi / n
        pts = np.stack([np.cos(t), np.sin(t)], 1) * radius
    elif n < 0:
        t = angle + np.arange(-2 * n) * np.pi / -n
        r = np.where(np.arange(-2 * n) % 2 == 0, radius, radius * 0.45)
        pts = np.stack([np.cos(t) * r, np.sin(t) * r], 1)
    else:  # an arrow, asymmetric so its orientation is visible
        base = np.array([[1, 0], [0.1, 0.6], [0.1, 0.25], [-1, 0.25], [-1, -0.25], [0.1, -0.25], [0.1, -0.6]])
        c, s = np.cos(angle), np.sin(angle)
        pts = base @ np.array([[c, s], [-s, c]]) * radius
    return (pts + center).astype(np.int32)


@DATASETS.register("image", "shapes", "any")
def shapes(cfg) -> Path:
    """Filled polygons, stars and arrows at random rotation, position, size and colours."""
    import cv2

    per_class = cfg.data.samples_per_class or 200

    def write(tmp: Path) -> None:
        rng = np.random.default_rng(1)
        for kind in _SHAPES:
            (tmp / kind).mkdir()
            for i in range(per_class):
                canvas = np.full((32, 32, 3), rng.integers(0, 90, 3), np.uint8)
                radius = rng.uniform(7, 13)
                center = rng.uniform(radius, 32 - radius, 2)
                color = tuple(int(c) for c in rng.integers(130, 256, 3))
                cv2.fillPoly(canvas, [_shape_points(kind, center, radius, rng.uniform(0, 2 * np.pi))], color, cv2.LINE_AA)
                cv2.imwrite(str(tmp / kind / f"{i:04d}.png"), canvas)

    return _materialize(_root(cfg, "shapes", per_class), write)


_TOPICS = {
    "sports": "match team goal coach league score season player stadium referee tournament win".split(),
    "technology": "software chip laptop code startup cloud robot network browser app device battery".split(),
    "food": "recipe dinner bread cheese kitchen chef soup garlic dessert oven spicy breakfast".split(),
    "weather": "rain storm forecast sunny wind cloudy snow temperature humid thunder frost heatwave".split(),
}
_FILLER = "the a this our new today really very some about with after before their every quite".split()


@DATASETS.register("text", "topics", "any", default=True)
def topics(cfg) -> Path:
    """Short news-like sentences on four topics. About a third of each sentence's words are topical,
    a tenth come from other topics and the rest are filler, so one token does not decide the label."""
    per_class = cfg.data.samples_per_class or 150

    def write(tmp: Path) -> None:
        rng = np.random.default_rng(2)
        all_words = [w for words in _TOPICS.values() for w in words]
        with open(tmp / "topics.csv", "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["text", "label"])
            for i in range(per_class):
                for label, words in _TOPICS.items():
                    n = int(rng.integers(6, 14))
                    tokens = [
                        str(rng.choice(words)) if r < 0.35 else str(rng.choice(all_words)) if r < 0.45 else str(rng.choice(_FILLER))
                        for r in rng.random(n)
                    ]
                    tokens[int(rng.integers(n))] = str(rng.choice(words))  # at least one topical word
                    out.writerow([" ".join(tokens), label])

    return _materialize(_root(cfg, "topics", per_class), write) / "topics.csv"


_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_VOICES = ["en", "en-us", "en-gb-scotland", "en-029", "en-gb-x-rp"]


def _synth_word(word: str, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """espeak-ng speech when installed, else a distinct per-word tone pattern (still learnable)."""
    espeak = shutil.which("espeak-ng")
    if espeak:
        with tempfile.NamedTemporaryFile(suffix=".wav") as wav:
            subprocess.run(
                [espeak, "-v", str(rng.choice(_VOICES)), "-s", str(int(rng.integers(120, 220))),
                 "-p", str(int(rng.integers(20, 80))), "-w", wav.name, word],
                check=True, capture_output=True,
            )
            import soundfile

            audio, sr = soundfile.read(wav.name, dtype="float32")
        import librosa

        audio = librosa.resample(audio, orig_sr=sr, target_sr=sample_rate)
    else:
        k = _WORDS.index(word)
        t = np.arange(int(sample_rate * rng.uniform(0.4, 0.7))) / sample_rate
        f0 = 200 + 60 * k * rng.uniform(0.95, 1.05)
        audio = np.sin(2 * np.pi * (f0 + (k % 3) * 300 * t) * t) * np.hanning(len(t))
    audio = audio * rng.uniform(0.3, 0.9) / (np.abs(audio).max() + 1e-6)
    return (audio + rng.normal(0, 0.005, len(audio))).astype(np.float32)


@DATASETS.register("audio", "spoken_digits", "any", default=True)
def spoken_digits(cfg) -> Path:
    """The words zero..nine spoken by espeak-ng in varied voices, speeds and pitches (16 kHz WAV)."""
    import soundfile

    per_class = cfg.data.samples_per_class or 40
    if not shutil.which("espeak-ng"):
        log.warning("espeak-ng is not installed: spoken_digits falls back to synthetic tone patterns")

    def write(tmp: Path) -> None:
        rng = np.random.default_rng(3)
        for word in _WORDS:
            (tmp / word).mkdir()
            for i in range(per_class):
                soundfile.write(str(tmp / word / f"{i:04d}.wav"), _synth_word(word, rng, 16000), 16000)

    suffix = "" if shutil.which("espeak-ng") else "-tones"
    return _materialize(_root(cfg, "spoken_digits" + suffix, per_class), write)
