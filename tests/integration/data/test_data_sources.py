"""``data.path`` resolved once into a ``DataSource``: the record says what the old per-reader lookups
said (format, files, labels, split, fingerprint), and the readers inside one run take it instead of
resolving again (training's decode, compression's datasets, the pipeline's smoke request)."""

from __future__ import annotations

import base64
import os
import zlib
from pathlib import Path

import numpy as np

from raylm.data import data_source, decode_splits, reusing
from raylm.data.sources import RESOLUTIONS, DataSource


def _all_files(root: Path, suffixes: tuple[str, ...]) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(suffixes))


def test_a_class_folder_resolves_to_its_files_labels_split_and_fingerprint(tiny_config, data_root):
    cfg = tiny_config("image")
    source = data_source(cfg)
    root = data_root["image"]
    files = _all_files(root, (".png", ".jpg", ".jpeg"))
    assert isinstance(source, DataSource) and source.format == "folder" and source.location == str(root)
    assert source.checked and not source.is_demo and not source.uri
    assert sorted(source.roots["train"].files) == files
    assert list(source.labels) == sorted(os.listdir(root))
    # The split is the hash rule on each file's path below the root (stable across runs and nodes).
    held_out = sorted(f for f in files
                      if zlib.crc32(os.path.relpath(f, root).encode()) % 10_000 < cfg.data.validation_fraction * 10_000)
    assert sorted(source.validation_files) == held_out and held_out
    assert sorted(source.train_files + source.validation_files) == files
    # A changed file changes the fingerprint (what lineage records of the data).
    os.utime(files[0], (1, 1))
    assert data_source(cfg).fingerprint != source.fingerprint


def test_a_table_resolves_to_its_file_and_no_labels_before_the_check(tiny_config, data_root):
    cfg = tiny_config("text")
    source = data_source(cfg)
    assert source.format == "csv" and source.labels is None
    assert source.roots["train"].files == (str(data_root["text"]),) and source.files == {"train": [str(data_root["text"])]}


def test_one_resolution_serves_every_reader_of_the_run(ray_local, tiny_config):
    """Inside ``reusing`` (what ``run_pipeline`` enters) the decode of the run's config, the decode of a
    retrain config (other training values, same data) and the smoke request resolve nothing; a config
    over other data does, and the record gives what a fresh resolution gives."""
    from raylm.pipeline import _smoke_sample

    cfg = tiny_config("image", "data.materialize=false")
    fresh_body, fresh_label = _smoke_sample(cfg)  # resolves on its own, as every reader once did
    fresh = decode_splits(cfg)
    source = data_source(cfg)
    before = RESOLUTIONS["count"]
    with reusing(source):
        decoded = decode_splits(cfg)
        retrain = decode_splits(cfg.override({"train.lr": 0.05, "train.epochs": 3}))
        body, label = _smoke_sample(cfg)
        assert RESOLUTIONS["count"] == before, "a reader inside the run resolved data.path again"
        other = data_source(cfg.override({"data.validation_fraction": 0.5}))  # other data: not this record
        assert RESOLUTIONS["count"] == before + 1 and other.validation_files != source.validation_files
    for splits in (decoded, retrain):
        assert (splits.fingerprint, splits.labels, splits.source) == (fresh.fingerprint, fresh.labels, fresh.source)
        assert splits.validation.count() == fresh.validation.count() > 0
    assert np.array_equal(np.sort(decoded.validation.take_batch(1000)["label"]), np.sort(fresh.validation.take_batch(1000)["label"]))
    # The smoke request is a held-out file of the record, the same one a fresh resolution sends.
    assert (body, label) == (fresh_body, fresh_label)
    sent = base64.b64decode(body["image"])
    assert any(Path(f).read_bytes() == sent for f in source.validation_files)


def test_the_smoke_request_of_a_table_with_a_bad_first_row_is_the_first_good_row_as_text(tiny_config, tmp_path):
    """One non-UTF-8 byte makes pyarrow read a CSV's whole text column as binary: the pipeline's smoke
    request then held bytes and the serve stage died (`Object of type bytes is not JSON serializable`)
    after minutes of sweep and training. Rows the data check skips (bad bytes, empty text, no label) are
    skipped here too."""
    import json

    from raylm.pipeline import _smoke_sample

    table = tmp_path / "topics.csv"
    table.write_bytes(b"sentence,topic\n"
                      b"caf\xe9 au lait,food\n"  # latin-1, not UTF-8
                      b"   ,sports\n"
                      b"a quiet night,\n"
                      b"the striker scored twice,sports\n"
                      b"rain all week,weather\n")
    cfg = tiny_config("text", f"data.path={table}", "data.text.text_column=sentence", "data.label_column=topic")
    body, label = _smoke_sample(cfg)
    assert (body, label) == ({"text": "the striker scored twice"}, "sports")
    json.dumps(body)  # what requests.post(json=...) does with it
