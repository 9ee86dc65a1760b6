"""The tiny config every integration test starts from (tiny models, tiny generated data)."""

from __future__ import annotations

from pathlib import Path

from raylm.config import load_config


_TINY_MODELS = {"image": "seed_cnn", "audio": "seed_conv1d", "text": "bert_tiny"}


def tiny_config_in(root: Path, data_root: dict[str, Path], modality: str, *overrides: str):
    """The tiny config rooted at ``root`` (for fixtures wider than one test, e.g. module scope)."""
    return load_config(None, tiny_overrides(root, data_root, modality) + list(overrides))


def shared_cache_dir(data_root: dict[str, Path], modality: str) -> Path:
    """One data.cache_dir per generated data set, beside it: raylm keys what it keeps there by content
    (a data check by the files' names, sizes and mtimes and the acceptance settings; a demo set by its
    name and size), so the session's tests check the tiny data once per modality instead of once per
    test (a Ray Data pass each time). Nothing a test asserts lives there: run state is under root."""
    return Path(data_root[modality]).parent / "cache"


def tiny_overrides(root: Path, data_root: dict[str, Path], modality: str) -> list[str]:
    """The tiny config as ``key=value`` overrides (for ``raylm <verb>`` in a subprocess)."""
    return [
        f"task.modality={modality}",
        f"model.name={_TINY_MODELS[modality]}",
        f"data.path={data_root[modality]}",
        "data.validation_fraction=0.3",
        f"data.cache_dir={shared_cache_dir(data_root, modality)}",
        "data.text.max_length=16",
        "data.audio.sample_rate=8000",
        "data.audio.clip_seconds=0.5",
        "data.audio.hop_length=128",
        f"train.storage_path={root / 'runs'}",
        "train.epochs=2",
        "train.batch_size=8",
        "train.num_workers=2",
        "train.cpus_per_worker=0.5",
        "train.lr=0.005",
    ]
