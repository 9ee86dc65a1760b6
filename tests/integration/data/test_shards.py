"""Sharded synthetic sets (raylm data synth) streamed through Ray Data: learnable, shuffled, bounded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from raylm.config import load_config
from raylm.data.synth import MANIFEST, SynthSpec, synthesize, train_overrides

# One 64-row group per shard (shard_bytes below a row group's bytes): 8 training shards of 64 rows.
_IMAGE = SynthSpec("image", 1_600_000, num_classes=4, shard_bytes=100_000, validation_fraction=0.2, image_size=32)


@pytest.fixture(scope="module")
def image_shards(tmp_path_factory):
    return synthesize(_IMAGE, tmp_path_factory.mktemp("synth") / "image")


def _config(manifest, tmp_path, *overrides):
    return load_config(None, ["model.name=seed_cnn", f"data.cache_dir={tmp_path / 'cache'}",
                              f"train.storage_path={tmp_path / 'runs'}", "train.batch_size=16",
                              *train_overrides(manifest), *overrides])


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@pytest.mark.parametrize("modality", ["image", "audio", "text"])
def test_synth_writes_whole_mixed_shards_and_a_rerun_resumes_them(tmp_path, modality):
    spec = SynthSpec(modality, 600_000, num_classes=3, shard_bytes=100_000, validation_fraction=0.2, image_size=32,
                     clip_seconds=0.25)
    manifest = synthesize(spec, tmp_path / "set")
    train = tmp_path / "set" / "train"
    shards = sorted(train.iterdir())
    assert manifest["complete"] and manifest["splits"]["train"]["shards"] == len(shards) >= 2
    assert all(s.name.startswith("shard-") and s.suffix == ".parquet" for s in shards)  # no temporary left
    table = pq.read_table(shards[0])
    assert table.column_names == [{"text": "text"}.get(modality, modality), "label"]
    labels = table.column("label").to_pylist()
    assert set(labels) == set(spec.labels)  # every shard mixes the classes (shard-order shuffle relies on it)
    assert manifest["bytes"] == sum(p.stat().st_size for p in (tmp_path / "set").rglob("*.parquet"))

    before = shards[-1].read_bytes()
    shards[-1].unlink()  # as if the run had died before its last shard
    again = synthesize(spec, tmp_path / "set")
    assert shards[-1].read_bytes() == before and again["splits"] == manifest["splits"]  # seeded: the same bytes
    with pytest.raises(ValueError, match="other settings"):
        synthesize(SynthSpec(modality, 600_000, num_classes=4), tmp_path / "set")
    assert json.loads((tmp_path / "set" / MANIFEST).read_text())["spec"]["num_classes"] == 3


@pytest.mark.integration
def test_the_training_split_is_reshuffled_every_epoch_without_loss(ray_local, image_shards, tmp_path):
    from raylm.data import build_datasets
    from raylm.data.images import decode_image
    from raylm.data.shards import local_shuffle

    from ray.data import DataContext

    # Streamed (data.materialize=auto would keep this small set decoded, in one fixed block order).
    cfg = _config(image_shards, tmp_path, "data.block_mib=2", "data.materialize=false")
    default_block = DataContext.get_current().target_max_block_size
    # On-disk order: shard by shard, row by row, decoded as training decodes.
    on_disk = {}
    for index, shard in enumerate(sorted(Path(image_shards["splits"]["train"]["path"]).glob("*.parquet"))):
        for row, data in enumerate(pq.read_table(shard).column("image").to_pylist()):
            on_disk[_digest(decode_image(data, cfg.data.image.size))] = (index, row)
    train = build_datasets(cfg).train
    # The datasets keep data.block_mib; datasets created later get Ray's default again.
    assert train.context.target_max_block_size == 2 * 2**20 != default_block == DataContext.get_current().target_max_block_size

    def epoch_order(**shuffle) -> list[str]:
        return [_digest(image) for batch in train.iter_batches(batch_size=16, batch_format="numpy", **shuffle)
                for image in batch["image"]]

    first, second = epoch_order(), epoch_order()
    assert sorted(first) == sorted(second) == sorted(on_disk)  # every row once per epoch, none lost
    shard_runs = [list(dict.fromkeys(on_disk[d][0] for d in order)) for order in (first, second)]
    assert shard_runs[0] != sorted(shard_runs[0]) and shard_runs[0] != shard_runs[1]  # shard order shuffled per epoch
    buffered = epoch_order(**local_shuffle(cfg, epoch=0, rank=0, world=1))
    assert sorted(buffered) == sorted(on_disk)
    # Within the buffer, rows of one shard no longer arrive in their file order.
    rows = [on_disk[d] for d in buffered]
    in_file_order = sum(a[0] == b[0] and b[1] == a[1] + 1 for a, b in zip(rows, rows[1:]))
    assert in_file_order < len(rows) // 4


@pytest.mark.slow  # ~1 min of training; the shard streaming and shuffle cases stay
@pytest.mark.integration
def test_a_sharded_set_streams_through_two_workers_to_accuracy_a_constant_cannot_reach(ray_local, image_shards, tmp_path):
    from raylm.train import fit

    cfg = _config(image_shards, tmp_path, "train.epochs=3", "train.lr=0.003", "train.num_workers=2",
                  "train.cpus_per_worker=0.5", "data.shuffle_buffer=64", "data.materialize=false")
    assert not cfg.data.materialize and not cfg.data.check
    outcome = fit(cfg)
    validation = pq.read_table(image_shards["splits"]["validation"]["path"]).column("label").to_pylist()
    majority = max(validation.count(label) for label in set(validation)) / len(validation)
    assert outcome.labels == _IMAGE.labels
    assert outcome.metrics["val_accuracy"] >= max(0.7, majority + 0.3)  # four classes: a constant gets ~0.25
    assert outcome.metrics["val_samples"] >= 0.9 * image_shards["splits"]["validation"]["rows"]


def test_data_synth_cli_prints_the_manifest_and_refuses_a_bad_size(tmp_path, capsys):
    from raylm.cli import main

    assert main(["data", "synth", "--modality", "text", "--size", "300KB", "--shard-size", "100KB", "--classes", "3",
                 "--out", str(tmp_path / "set")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["modality"] == "text" and printed["splits"]["train"]["rows"] > 0
    assert printed["bytes"] == json.loads((tmp_path / "set" / MANIFEST).read_text())["bytes"]
    assert main(["data", "synth", "--modality", "text", "--size", "lots", "--out", str(tmp_path / "other")]) == 2
    assert "--size" in capsys.readouterr().err


@pytest.mark.integration
@pytest.mark.parametrize("modality, model", [("audio", "seed_conv1d"), ("text", "bert_tiny")])
def test_audio_and_text_shards_stream_as_model_inputs(ray_local, tmp_path, modality, model):
    from raylm.data import MODEL_INPUTS, build_datasets

    spec = SynthSpec(modality, 400_000, num_classes=3, shard_bytes=100_000, validation_fraction=0.25, clip_seconds=0.25)
    manifest = synthesize(spec, tmp_path / "set")
    cfg = load_config(None, [f"model.name={model}", f"data.cache_dir={tmp_path / 'cache'}", "data.text.max_length=16",
                             f"train.storage_path={tmp_path / 'runs'}", *train_overrides(manifest)])
    rows = labels = 0
    for batch in build_datasets(cfg).train.iter_batches(batch_size=64, batch_format="numpy"):
        assert set(MODEL_INPUTS[modality]) <= set(batch) and batch["label"].max() < 3
        rows += len(batch["label"])
        labels |= int(np.bitwise_or.reduce(1 << batch["label"]))
    assert rows == manifest["splits"]["train"]["rows"] and labels == 0b111  # every row, every class
