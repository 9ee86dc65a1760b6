"""The storage layer (raylm/storage/) on the local disk and on a real S3 API (moto's server):
round trips, trees, and the commit marker readers trust."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raylm.config import ConfigError, load_config
from raylm.storage import MARKER, NotCommitted, StoragePath, cached_tree, committed, fetch, publish


from tests.helpers.paths import CONFIGS

_IMAGE_YAML = CONFIGS / "image.yaml"


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.json").write_text(json.dumps({"x": 1}))
    (root / "sub" / "w.bin").write_bytes(bytes(range(256)) * 40)
    return root


@pytest.fixture(params=["local", "s3"])
def place(request, tmp_path):
    if request.param == "local":
        return StoragePath.of(tmp_path / "store" / "run")
    bucket = request.getfixturevalue("s3_bucket")
    return StoragePath.of(f"s3://{bucket}/runs/run")


def test_round_trip_json_bytes_listing_and_delete(place):
    place.join("meta.json").write_json({"epoch": 3})
    place.join("deep", "w.bin").write_bytes(b"\x00\x01" * 1000)
    assert place.join("meta.json").read_json() == {"epoch": 3}
    assert place.join("deep/w.bin").read_bytes() == b"\x00\x01" * 1000
    assert [p.name for p in place.iterdir()] == ["deep", "meta.json"]
    assert dict(place.walk_files()) == {"deep/w.bin": 2000, "meta.json": len(place.join("meta.json").read_bytes())}
    assert place.join("meta.json").is_file() and place.join("deep").is_dir() and not place.join("nope").exists()
    with pytest.raises(FileNotFoundError):
        place.join("nope.json").read_json()
    place.join("deep").delete_tree()
    assert not place.join("deep").exists() and place.join("meta.json").exists()


def test_tree_publish_commit_and_verified_download(place, tmp_path, monkeypatch):
    monkeypatch.setenv("RAYLM_CACHE_DIR", str(tmp_path / "cache"))
    src = _tree(tmp_path / "src")
    # Uploaded but never committed (a publisher that died before its marker): not trusted.
    place.join("half").upload_tree(src)
    assert committed(place.join("half")) is None
    if not place.is_local:  # a local directory is whole by its atomic rename; cached_tree returns it as is
        with pytest.raises(NotCommitted):
            cached_tree(place.join("half"))
    assert fetch(place.join("half"), tmp_path / "none") == 0

    first = publish(src, place)
    assert first["uploaded_bytes"] == 10240 + len((src / "a.json").read_bytes()) and first["files"] == 2
    assert set(committed(place)) == {"a.json", "sub/w.bin"}
    again = publish(src, place)  # unchanged files are not uploaded twice
    assert again["uploaded_bytes"] == 0
    got = fetch(place, tmp_path / "dst")
    assert got == first["uploaded_bytes"]
    assert (tmp_path / "dst" / "sub" / "w.bin").read_bytes() == (src / "sub" / "w.bin").read_bytes()

    # A sub-directory of a committed prefix is served from the cache, keyed by its content.
    local = cached_tree(place.join("sub"))
    assert (local / "w.bin").read_bytes() == (src / "sub" / "w.bin").read_bytes()
    if not place.is_local:
        assert str(local).startswith(str(tmp_path / "cache"))
        # A file rewritten behind the marker's back is refused, not served.
        place.join("sub/w.bin").write_bytes(b"tampered")
        with pytest.raises(NotCommitted):
            fetch(place, tmp_path / "dst2")
    # A republish that drops a file removes it and lists only what is there.
    (src / "sub" / "w.bin").unlink()
    publish(src, place)
    assert set(committed(place)) == {"a.json"} and not place.join("sub/w.bin").exists()
    assert place.join(MARKER).is_file()


def test_uri_config_is_checked_before_ray_and_never_becomes_a_local_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for bad, field in (("train.storage_path=ftp://host/runs", "train.storage_path: unknown scheme"),
                       ("train.storage_path=s3:///runs", "train.storage_path: 's3:///runs' names no bucket"),
                       ("train.storage_options={region: x}", "train.storage_options: only for a URI")):
        with pytest.raises(ConfigError, match=field):
            load_config(_IMAGE_YAML, [bad])
    with pytest.raises(ConfigError, match="train.storage_options: S3FileSystem does not take"):
        load_config(_IMAGE_YAML, ["train.storage_path=s3://bucket/runs", "train.storage_options={bogus: 1}"])
    cfg = load_config(_IMAGE_YAML, ["train.storage_path=s3://bucket/runs", "train.name=r1"])
    assert cfg.run_location.uri == "s3://bucket/runs/r1" and cfg.run_location.path == "bucket/runs/r1"
    with pytest.raises(Exception, match="train.storage_path: s3://bucket/runs/r1 is object storage"):
        cfg.run_dir
    assert not (tmp_path / "s3:").exists()


def test_run_workspace_commits_on_failure_reenters_and_leaves_nothing_local(s3_bucket, tmp_path, monkeypatch):
    from raylm.storage import public_paths, run_workspace, stored

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("RAYLM_SCRATCH_DIR", str(scratch))
    run = StoragePath.of(f"s3://{s3_bucket}/runs/ws")
    with pytest.raises(RuntimeError, match="stage failed"):
        with run_workspace(run) as local:
            (local / "logs").mkdir()
            (local / "logs" / "status.json").write_text('{"state": "failed"}')
            raise RuntimeError("stage failed")
    assert set(committed(run)) == {"logs/status.json"} and not list(scratch.iterdir())
    with run_workspace(run) as local:  # another command on the run: its committed files are there
        assert json.loads((local / "logs" / "status.json").read_text()) == {"state": "failed"}
        assert public_paths({"artifact": str(local / "compress" / "x")}) == {"artifact": f"{run.uri}/compress/x"}
        assert stored(local / "train") == run.join("train")
        (local / "logs" / "status.json").unlink()
        (local / "pipeline.json").write_text("{}")
    assert set(committed(run)) == {"pipeline.json"} and not run.join("logs/status.json").exists()
    assert not list(scratch.iterdir())
