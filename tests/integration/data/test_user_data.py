"""A user's own data, messy as it comes (tests/helpers/messy.py): the data check lists every bad
file or row, training's pipeline leaves exactly those out, no blank value becomes a class, and the
errors name the file and the key to set."""

from __future__ import annotations

import json
import math

import pytest

from tests.helpers.paths import CONFIGS
from tests.helpers.messy import messy_audio, messy_image_parquet, messy_images, messy_text_csv, messy_text_jsonl
from raylm.config import load_config
from raylm.data.check import DataError, check_data, label_text
from raylm.data.files import IMAGE_EXTENSIONS, detect_format, label_of_file, scan_class_folder

# (modality, generator, file name, overrides naming the user's own columns)
MESSY = {
    "image-folder": ("image", messy_images, "images", []),
    "image-parquet": ("image", messy_image_parquet, "images.parquet", ["data.image_column=img", "data.label_column=cls"]),
    "text-csv": ("text", messy_text_csv, "reviews.csv", ["data.text.text_column=review", "data.label_column=sentiment"]),
    "text-jsonl": ("text", messy_text_jsonl, "reviews.jsonl", ["data.text.text_column=review", "data.label_column=sentiment"]),
    "audio-folder": ("audio", messy_audio, "wavs", []),
}
_MODELS = {"image": "seed_cnn", "audio": "seed_conv1d", "text": "bert_tiny"}


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy")
    return {name: gen(root / file) for name, (_, gen, file, _) in MESSY.items()}


def messy_config(messy, name: str, tmp_path, *overrides: str):
    modality, _, _, columns = MESSY[name]
    return load_config(None, [
        f"task.modality={modality}", f"model.name={_MODELS[modality]}", f"data.path={messy[name].path}",
        f"data.cache_dir={tmp_path / 'cache'}", f"train.storage_path={tmp_path / 'runs'}", "train.name=run",
        "data.validation_fraction=0.3", "data.text.max_length=16", "data.audio.sample_rate=8000",
        "data.audio.clip_seconds=0.5", "data.audio.hop_length=128",
        "train.batch_size=8", "train.num_workers=2", "train.cpus_per_worker=0.5", *columns, *overrides])


def _bad_key(item: dict) -> str:
    return f"{item['file']}:{item['row'] if item['row'] else '-'}" if "row" in item else item["file"]


def test_layout_rule_includes_nested_folders_and_lists_what_it_ignores(tmp_path):
    data = messy_images(tmp_path / "images")
    folder = scan_class_folder(str(data.path), IMAGE_EXTENSIONS)
    assert folder.labels == sorted(data.classes)
    # Every image below a class folder, however deep (a third of them are nested), plus the 2 bad ones.
    assert len(folder.files) == sum(data.classes.values()) + len(data.bad)
    assert any("batch2/scans" in f for f in folder.files)
    assert sorted(item["file"] for item in folder.ignored) == sorted(data.ignored)
    assert not any(".DS_Store" in f for f in folder.files + [i["file"] for i in folder.ignored])


def test_a_files_class_is_its_top_level_folder():
    assert label_of_file("/data/cats/2024/june/a.jpg", "/data") == "cats"
    assert label_of_file("/data/cats/a.jpg", "/data/") == "cats"
    assert label_of_file("/mnt/link/dogs/b.jpg", "/data") == "dogs"  # spelled differently: its own folder


def test_blank_and_missing_labels_are_never_a_class():
    assert [label_text(v) for v in (None, math.nan, "", "  ", " pos ", 3, 3.0, b"neg")] == \
        ["", "", "", "", "pos", "3", "3", "neg"]


@pytest.mark.parametrize("name, key", [
    ("text-csv", "data.text.text_column"),  # the config's default column 'text' is absent
    ("image-parquet", "data.image_column"),
])
def test_a_missing_column_names_the_key_to_set_and_the_tables_columns(messy, tmp_path, name, key):
    modality, _, _, _ = MESSY[name]
    cfg = load_config(None, [f"task.modality={modality}", f"model.name={_MODELS[modality]}",
                             f"data.path={messy[name].path}", f"data.cache_dir={tmp_path}"])
    with pytest.raises(DataError) as err:  # raised on the driver before Ray Data runs anything
        check_data(cfg, str(messy[name].path), detect_format(str(messy[name].path), "auto"), report_dir=None)
    message = str(err.value)
    assert key in message and str(messy[name].path) in message
    assert ("'review', 'sentiment'" if modality == "text" else "'img', 'cls'") in message
    cfg = messy_config(messy, name, tmp_path, "data.label_column=stars")
    with pytest.raises(DataError, match="data.label_column: .* has no column 'stars'"):
        check_data(cfg, str(messy[name].path), detect_format(str(messy[name].path), "auto"), report_dir=None)


@pytest.mark.integration
@pytest.mark.parametrize("name", list(MESSY))
def test_check_lists_every_bad_sample_and_training_leaves_exactly_those_out(ray_local, messy, tmp_path, name):
    from raylm.data import build_datasets

    cfg = messy_config(messy, name, tmp_path)
    data = build_datasets(cfg)  # runs the check first
    report = json.loads((cfg.run_dir / "data_report.json").read_text(encoding="utf-8"))
    expected = messy[name]
    assert report["classes"] == dict(sorted(expected.classes.items()))
    assert data.labels == sorted(expected.classes)  # no '' class from blank rows, no missing class
    found = {_bad_key(item): item["reason"] for item in report["bad"]}
    assert sorted(found) == sorted(expected.bad)
    for key, word in expected.bad.items():
        assert word in found[key], (key, found[key])
        assert "0x" not in found[key] and "object at" not in found[key]
    assert sorted(i["file"] for i in report["ignored"]) == sorted(expected.ignored)
    assert report["bad_count"] == len(expected.bad) and report["on_bad_input"] == "skip"
    # Training's decode stage accepts exactly what the check accepted: every other sample arrives once.
    column = {"image": "image", "audio": "frames", "text": "input_ids"}[cfg.task.modality]
    rows = 0
    for split in (data.train, data.validation):
        for batch in split.iter_batches(batch_size=64, batch_format="numpy"):
            rows += len(batch["label"])
            assert len(batch[column]) == len(batch["label"]) and set(batch["label"]) <= {0, 1}
    assert rows == sum(expected.classes.values())


@pytest.mark.integration
@pytest.mark.parametrize("name", ["image-folder", "text-csv", "audio-folder"])
def test_fail_mode_stops_at_the_first_bad_sample_naming_it(ray_local, messy, tmp_path, name):
    from raylm.data import build_datasets

    cfg = messy_config(messy, name, tmp_path, "data.on_bad_input=fail")
    with pytest.raises(DataError) as err:
        build_datasets(cfg)
    message = str(err.value)
    assert any(key.split(":")[0] in message for key in messy[name].bad)
    assert "data.on_bad_input=skip" in message


@pytest.mark.integration
def test_more_bad_samples_than_allowed_refuse_the_data(ray_local, messy, tmp_path):
    from raylm.data import build_datasets

    cfg = messy_config(messy, "text-csv", tmp_path, "data.max_bad_fraction=0.01")
    with pytest.raises(DataError, match=r"4 of 124 samples are bad .*data.max_bad_fraction=0.01"):
        build_datasets(cfg)
    assert json.loads((cfg.run_dir / "data_report.json").read_text())["bad_count"] == 4  # the report is still written


@pytest.mark.integration
def test_augment_preview_of_a_folder_with_a_corrupt_file_skips_it(ray_local, messy, tmp_path, capfd):
    """Issue 20 item 2: ``raylm augment preview`` on the user's folder (a corrupt JPEG, a 0-byte PNG)
    draws its grid from the accepted images instead of dying in a Ray Data task."""
    import cv2

    from raylm.cli import main

    out = tmp_path / "preview.png"
    assert main(["augment", "preview", "--config", str(CONFIGS / "image.yaml"), "--out", str(out), "--samples", "4",
                 "--epochs", "1", f"data.path={messy['image-folder'].path}", f"data.cache_dir={tmp_path}",
                 f"train.storage_path={tmp_path / 'runs'}", "augment.image.rotate_p=1"]) == 0
    grid = cv2.imread(str(out))
    assert grid is not None and grid.shape[1] > 4 * 32
    assert "2 bad skipped" in capfd.readouterr().err
    assert not (tmp_path / "runs").exists()  # a preview is not a run: its data report sits beside its logs


@pytest.mark.integration
def test_data_check_cli_prints_the_report_without_training(ray_local, messy, tmp_path, capfd):
    # capfd: the console writes raylm's lines to its own copy of the real stderr, below sys.stderr.
    capsys = capfd
    from raylm.cli import main

    name = "image-folder"
    args = ["data", "check", "--config", str(CONFIGS / "image.yaml"), f"data.path={messy[name].path}",
            f"data.cache_dir={tmp_path}", f"train.storage_path={tmp_path / 'runs'}"]
    assert main(args) == 0
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert sorted(b["file"] for b in report["bad"]) == sorted(messy[name].bad)
    assert "replaces the demo dataset data.name=digits" in out.err and "2 bad skipped" in out.err
    assert not (tmp_path / "runs").exists()  # nothing trained, no run directory
    assert main(args + ["data.on_bad_input=fail"]) == 1
    assert "training would refuse this data" in capsys.readouterr().err
    # Training stops in the check, before any trainer starts: one line naming the file, no traceback.
    train = ["train", *args[2:], "data.on_bad_input=fail", "train.cpus_per_worker=0.5"]
    assert main(train) == 2
    err = capsys.readouterr().err
    assert "raylm: " in err and any(f in err for f in messy[name].bad) and "Traceback" not in err
    assert "[raylm data] checked" in err  # the count on train's console, not only in <run>/logs/ray.log


@pytest.mark.slow  # ~1 min of training; the messy-data checks stay
@pytest.mark.integration
def test_a_messy_review_table_trains_without_a_phantom_class(ray_local, messy, tmp_path):
    from raylm.train import fit
    from raylm.train.checkpoint import load_checkpoint

    cfg = messy_config(messy, "text-csv", tmp_path, "train.epochs=6", "train.lr=0.003")
    outcome = fit(cfg)
    assert outcome.labels == ["neg", "pos"] and load_checkpoint(outcome.checkpoint).labels == ["neg", "pos"]
    assert outcome.metrics["val_accuracy"] > 0.75  # two balanced classes: chance is 0.5
    assert json.loads((outcome.run_dir / "data_report.json").read_text())["bad_count"] == 4
    # The optimizer state stays only where resuming needs it: the latest checkpoint.
    with_optimizer = [p.parent for p in (outcome.run_dir / "train").glob("checkpoint_*/optimizer.pt")]
    assert with_optimizer == [outcome.checkpoint]
    assert len(list((outcome.run_dir / "train").glob("checkpoint_*/model.safetensors"))) == 2


@pytest.mark.integration
def test_the_data_count_is_said_once_per_command(ray_local, messy, tmp_path):
    """A pipeline checks the same files in its sweep, each compress attempt, evaluate and serve: the
    count goes to the console once per command (a user saw it 8 times), and again in the next command."""
    import io

    from raylm import console

    cfg = messy_config(messy, "image-folder", tmp_path)
    path = str(messy["image-folder"].path)
    for command in range(2):
        err = io.StringIO()
        console.start(io.StringIO(), err, live=False)
        try:
            for _ in range(3):
                check_data(cfg, path, "folder", report_dir=None)
        finally:
            console.stop()
        counts = [line for line in err.getvalue().splitlines() if "[raylm data] checked" in line]
        assert len(counts) == 1, (command, err.getvalue())
