"""The class-folder layout and the split (raylm/data/files.py), on real folders and on the S3 API."""

import zlib

import numpy as np
import pytest

from raylm.data.files import (
    detect_format,
    in_validation,
    label_of_file,
    label_of_path,
    list_class_folder,
    scan_class_folder,
    split_files,
    validation_mask,
)


def test_the_split_is_a_stable_hash_of_the_key():
    keys = [f"cat/{i:03d}.png" for i in range(2000)]
    mask = validation_mask(keys, 0.3)
    assert 0.27 < mask.mean() < 0.33  # the fraction asked for
    assert mask.tolist() == [zlib.crc32(k.encode()) % 10_000 < 3000 for k in keys]  # nothing but the key decides
    assert validation_mask(keys, 0.3).tolist() == mask.tolist()
    assert not validation_mask(keys, 0.0).any() and validation_mask(keys, 1.0).all()
    assert in_validation(keys[0].encode(), 0.3) == in_validation(keys[0], 0.3)
    assert in_validation(None, 1.0) and not in_validation(None, 0.0)  # a missing key: the empty bytes
    assert validation_mask([], 0.5).dtype == np.bool_


def _tree(root, layout):
    for rel in layout:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return root


def test_every_matching_file_below_a_class_folder_belongs_to_it(tmp_path):
    root = _tree(tmp_path / "data", ["a/1.png", "a/deep/er/2.PNG", "b/3.jpg", "b/notes.txt", "loose.png",
                                     ".hidden/4.png", "a/.5.png", "a/.cache/6.png", "c/readme.md"])
    folder = scan_class_folder(str(root), (".png", ".jpg"))
    assert folder.labels == ["a", "b"]
    assert folder.files == [str(root / p) for p in ("a/1.png", "a/deep/er/2.PNG", "b/3.jpg")]
    assert folder.ignored == [{"file": str(root / "b/notes.txt"), "reason": "not a .png/.jpg file"},
                              {"file": str(root / "c/readme.md"), "reason": "not a .png/.jpg file"},
                              # c holds no image: said, not silently dropped from the labels
                              {"file": str(root / "c") + "/", "reason": "a class folder with no .png/.jpg file: "
                                                                        "not a class of this run"},
                              {"file": str(root / "loose.png"), "reason": "not inside a class folder"}]
    assert list_class_folder(str(root), (".png", ".jpg")) == (folder.labels, folder.files)
    assert [label_of_file(f, str(root)) for f in folder.files] == ["a", "a", "b"]
    assert label_of_path(str(root / "a/deep/er/2.PNG")) == "er"


def test_one_class_is_refused_naming_data_path(tmp_path):
    root = _tree(tmp_path / "data", ["only/1.png", "only/2.png", "other/x.txt"])
    with pytest.raises(ValueError, match=r"^data.path: .*data must hold at least 2 class folders of .png files "
                                         r"\(found 1 with such files, 2 files\)$"):
        scan_class_folder(str(root), (".png",))


def test_a_symlinked_root_still_labels_by_folder(tmp_path):
    root = _tree(tmp_path / "data", ["a/1.png", "b/2.png"])
    (tmp_path / "link").symlink_to(root)
    assert label_of_file(str(root / "b/2.png"), str(tmp_path / "link")) in ("b",)


def test_the_split_of_a_folder_is_by_the_path_below_root_wherever_root_is(tmp_path):
    files = [f"{label}/{i:03d}.png" for label in ("a", "b") for i in range(50)]
    here = split_files([str(tmp_path / "x" / f) for f in files], str(tmp_path / "x"), 0.3)
    there = split_files([f"s3://bucket/data/{f}" for f in files], "s3://bucket/data", 0.3)
    ray_named = split_files([f"bucket/data/{f}" for f in files], "s3://bucket/data/", 0.3)
    def rel(paths):
        return [p.rsplit("/", 2)[-2] + "/" + p.rsplit("/", 1)[-1] for p in paths]

    assert rel(here[1]) == rel(there[1]) == rel(ray_named[1]) == [f for f in files if in_validation(f, 0.3)]
    assert rel(here[0]) == [f for f in files if not in_validation(f, 0.3)]
    assert label_of_file("s3://bucket/data/b/deep/1.png", "s3://bucket/data") == "b"
    assert label_of_file("bucket/data/a/1.png", "s3://bucket/data") == "a"
    assert label_of_file("s3://elsewhere/z/k/1.png", "s3://bucket/data") == "k"  # not below root: its folder


def test_formats_by_name_then_by_content(tmp_path):
    assert detect_format("x.csv", "parquet") == "parquet"  # declared wins
    for name, fmt in (("t.PARQUET", "parquet"), ("t.csv", "csv"), ("t.jsonl", "jsonl"), ("t.json", "jsonl"),
                      ("s3://b/t.csv/", "csv")):
        assert detect_format(name, "auto") == fmt
    table = tmp_path / "table"
    table.mkdir()
    (table / "part-0.parquet").write_bytes(b"x")
    (table / "sub").mkdir()
    assert detect_format(str(table), "auto") == "parquet"
    (table / "x.png").write_bytes(b"x")
    assert detect_format(str(table), "auto") == "folder"
    assert detect_format(str(tmp_path / "table" / "sub"), "auto") == "folder"  # empty
    from raylm.config import ConfigError

    with pytest.raises(ConfigError, match=r"^data.format: cannot tell the format of .*nothing.bin; set data.format$"):
        detect_format(str(tmp_path / "nothing.bin"), "auto")
    clip = tmp_path / "noise_00.wav"  # one sample where a folder of class folders was meant
    clip.write_bytes(b"RIFF")
    with pytest.raises(ConfigError, match=r"^data.path: .*noise_00.wav is one file of no table format \(csv, jsonl, "
                                          r"parquet\); give a folder of class folders"):
        detect_format(str(clip), "auto")


def test_a_stored_class_folder_is_listed_through_the_s3_api(s3_bucket):
    import boto3

    s3 = boto3.client("s3")
    for key in ("data/a/1.png", "data/a/sub/2.png", "data/b/3.png", "data/b/x.txt", "data/loose.png",
                "data/.hidden/4.png", "data/_COMMITTED"):
        s3.put_object(Bucket=s3_bucket, Key=key, Body=b"x")
    folder = scan_class_folder(f"s3://{s3_bucket}/data", (".png",))
    assert folder.labels == ["a", "b"]
    assert folder.files == [f"s3://{s3_bucket}/data/{k}" for k in ("a/1.png", "a/sub/2.png", "b/3.png")]
    assert sorted(i["reason"] for i in folder.ignored) == ["not a .png file", "not inside a class folder"]
    s3.put_object(Bucket=s3_bucket, Key="tab/part-0.parquet", Body=b"x")
    assert detect_format(f"s3://{s3_bucket}/tab", "auto") == "parquet"
    assert detect_format(f"s3://{s3_bucket}/data", "auto") == "folder"


def test_the_split_boundary_and_a_missing_key():
    assert zlib.crc32(b"k687") % 10_000 == 3000
    assert not in_validation("k687", 0.3)  # exactly at the fraction: train (the bound is strict)
    assert in_validation("k687", 0.3001)
    assert in_validation(None, 0.0001)  # a missing key hashes as the empty bytes (crc 0): below any fraction > 0
    assert in_validation(b"", 0.0001) and not in_validation(b"", 0.0)


def test_labels_and_split_keys_of_paths_spelled_differently_from_root(tmp_path):
    root = _tree(tmp_path / "data", ["a/deep/1.png", "b/2.png"])
    crooked = str(tmp_path / "other" / ".." / "data")  # the same folder, not the same string
    assert label_of_file(str(root / "a/deep/1.png"), crooked) == "a"
    assert label_of_file(str(root / "a/deep/1.png"), str(root) + "/") == "a"
    # Ray Data names an object without its scheme; either side may carry it.
    assert label_of_file("bucket/data/a/deep/1.png", "s3://bucket/data") == "a"
    assert label_of_file("s3://bucket/data/a/deep/1.png", "bucket/data") == "a"
    assert label_of_file("s3://bucket/BOX/a/deep/1.png", "s3://bucket/BOX") == "a"
    files = [f"{label}/{i:03d}.png" for label in ("a", "b") for i in range(40)]
    want = [f for f in files if in_validation(f, 0.5)]
    local = split_files([str(root / f) for f in files], crooked, 0.5)[1]
    assert [p[len(str(root)) + 1:] for p in local] == want
    schemed = split_files([f"s3://bucket/data/{f}" for f in files], "bucket/data", 0.5)[1]
    assert [p[len("s3://bucket/data/"):] for p in schemed] == want
    # Not below root: the whole object name (without scheme) is the key.
    outside = [f"s3://other/{f}" for f in files]
    assert split_files(outside, "s3://bucket/data", 0.5)[1] == [p for p in outside if in_validation(p[5:], 0.5)]


def test_an_objects_key_below_root():
    from raylm.data.files import _key_under

    assert _key_under("s3://bucket/data/a/1.png", "s3://bucket/data/") == "a/1.png"
    assert _key_under("bucket/data/a/1.png", "gs://bucket/data") == "a/1.png"
    assert _key_under("s3://bucket/datasets/a/1.png", "s3://bucket/data") is None  # a prefix is not a folder
    assert _key_under("s3://other/x/a/1.png", "s3://bucket/data") is None


def test_a_loose_file_sorted_first_does_not_hide_the_class_folders(tmp_path):
    root = _tree(tmp_path / "data", ["0.png", "a/1.png", "b/2.png"])
    folder = scan_class_folder(str(root), (".png", ".jpg"))
    assert folder.labels == ["a", "b"] and len(folder.files) == 2
    assert folder.ignored == [{"file": str(root / "0.png"), "reason": "not inside a class folder"}]
    only = _tree(tmp_path / "one", ["a/1.png"])
    with pytest.raises(ValueError) as err:
        scan_class_folder(str(only), (".png", ".jpg"))
    assert str(err.value) == (f"data.path: {only} must hold at least 2 class folders of .png/.jpg files "
                              "(found 1 with such files, 1 files)")


def test_a_stored_folders_ignored_files_and_refusal_name_everything(s3_bucket):
    import boto3

    s3 = boto3.client("s3")
    for key in ("d/a/1.png", "d/b/2.jpg", "d/b/x.txt", "d/loose.png", "one/a/1.png", "tab/part-0.parquet",
                "tab/_COMMITTED"):
        s3.put_object(Bucket=s3_bucket, Key=key, Body=b"x")
    folder = scan_class_folder(f"s3://{s3_bucket}/d", (".png", ".jpg"))
    assert folder.files == [f"s3://{s3_bucket}/d/a/1.png", f"s3://{s3_bucket}/d/b/2.jpg"]
    assert sorted(folder.ignored, key=lambda i: i["file"]) == [
        {"file": f"s3://{s3_bucket}/d/b/x.txt", "reason": "not a .png/.jpg file"},
        {"file": f"s3://{s3_bucket}/d/loose.png", "reason": "not inside a class folder"}]
    with pytest.raises(ValueError) as err:
        scan_class_folder(f"s3://{s3_bucket}/one", (".png", ".jpg"))
    assert str(err.value) == (f"data.path: s3://{s3_bucket}/one must hold at least 2 class folders of .png/.jpg "
                              "files (found 1 with such files, 1 files)")
    assert detect_format(f"s3://{s3_bucket}/tab", "auto") == "parquet"  # the _COMMITTED marker is not a file of it


def test_a_class_whose_every_sample_was_bad_is_said_to_leave_the_runs_classes():
    """A user's folder held a class of 5 broken clips: the count listed the others and the class was
    silently gone from the model's labels."""
    from raylm.data.rules import format_summary

    report = {"checked": 110, "accepted": 103, "classes": {"high_tone": 41, "low_tone": 41, "noise": 21},
              "bad_count": 7, "on_bad_input": "skip", "ignored": [],
              "bad": [{"file": f"only_bad/{i}.wav", "label": "only_bad", "reason": "empty (0 bytes)"} for i in range(5)]
                     + [{"file": f"noise/{i}.wav", "label": "noise", "reason": "empty (0 bytes)"} for i in range(2)]}
    assert format_summary(report, None) == (
        "[raylm data] checked 110 samples: 103 accepted (high_tone 41, low_tone 41, noise 21), 7 bad skipped; "
        "no sample of only_bad accepted: not a class of this run")
    report["bad"] = report["bad"][5:]
    assert "not a class of this run" not in format_summary(report, None)


def test_a_class_of_a_handful_of_samples_is_named_in_the_check():
    """One row labelled 'politics' among 300 became a fourth output of the model (0.10-0.15 on every
    request) with no word from the check; a class under FEW_SAMPLES is now named (said, not refused)."""
    from raylm.data.rules import FEW_SAMPLES, format_summary

    report = {"checked": 307, "accepted": 307, "classes": {"food": 89, "politics": 1, "sports": 116, "typo": 3},
              "bad_count": 0, "on_bad_input": "skip", "ignored": [], "bad": []}
    assert format_summary(report, None).endswith(
        f"; WARNING: politics has 1 sample, typo has 3 samples: fewer than {FEW_SAMPLES}, the model can hardly learn "
        "them (a stray or mistyped label? fix it, or leave the rows out)")
    report["classes"] = {"food": 89, "politics": FEW_SAMPLES, "sports": 116}
    assert "WARNING" not in format_summary(report, None)
