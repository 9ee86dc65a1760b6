"""The storage layer (raylm/storage/) on the local disk and on a real S3 API (moto's server):
round trips, trees, and the commit marker readers trust."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from raylm.config import ConfigError, load_config
from raylm.storage import MARKER, NotCommitted, StoragePath, cached_tree, committed, fetch, publish


from tests.helpers.paths import CONFIGS

REPO = Path(__file__).resolve().parents[3]

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
    # Mistyped URIs: one slash became a local folder "s3:", an upper-case scheme reached pyarrow.
    with pytest.raises(ConfigError, match="train.storage_path: 's3:/bucket/runs' reads as a local folder named 's3:'"):
        load_config(_IMAGE_YAML, ["train.storage_path=s3:/bucket/runs"])
    with pytest.raises(ConfigError, match=r"train.storage_path: 'S3://bucket/runs': write the scheme in lowercase"):
        load_config(_IMAGE_YAML, ["train.storage_path=S3://bucket/runs"])
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


def test_a_missing_bucket_or_a_store_that_does_not_answer_is_refused_before_any_work(s3_bucket, s3_server, tmp_path,
                                                                                     monkeypatch):
    """The run's workspace is the first thing a verb opens, before Ray: a missing bucket was found only
    when the run's first commit failed (after the training), an unreachable endpoint was a raw traceback."""
    from raylm.storage import StorageURIError, run_workspace

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("RAYLM_SCRATCH_DIR", str(scratch))
    with pytest.raises(StorageURIError, match=r"^train.storage_path: s3://no-such-bucket-x/runs/r: bucket "
                                              r"'no-such-bucket-x' does not exist"):
        with run_workspace(StoragePath.of("s3://no-such-bucket-x/runs/r")):
            pytest.fail("the workspace of a missing bucket was opened")
    with run_workspace(StoragePath.of(f"s3://{s3_bucket}/runs/r")):  # the bucket there: opened
        pass
    from tests.helpers.ports import free_port

    # Nothing listens there (another bucket name: a process builds a bucket's filesystem once, from the environment).
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StorageURIError, match=r"^train.storage_path: s3://.*: the store did not answer: .*endpoint"):
        with run_workspace(StoragePath.of(f"s3://{s3_bucket}-unreachable/runs/other")):
            pytest.fail("the workspace of an unreachable store was opened")
    assert not list(scratch.iterdir())


def test_gcs_without_credentials_is_refused_within_its_retry_limit_not_after_fifteen_minutes(tmp_path):
    """`train.storage_path=gs://...` with no credentials hung with nothing printed (GCS's client retries
    15 minutes by default). raylm bounds the retries (RAYLM_GCS_RETRY_S, 20 s; here 1 s) and says why."""
    code = ("from raylm.storage import StoragePath, StorageURIError\n"
            "try:\n"
            "    StoragePath.of('gs://raylm-no-credentials/runs/r').check_reachable()\n"
            "except StorageURIError as err:\n"
            "    print('refused:', err)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "GCE_"))}
    proc = subprocess.run([sys.executable, "-c", code], env=env | {"RAYLM_GCS_RETRY_S": "1", "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "refused: gs://raylm-no-credentials/runs/r: the store did not answer" in proc.stdout, proc.stderr[-2000:]
    # A retry limit in the config is seconds (pyarrow takes a timedelta only).
    load_config(_IMAGE_YAML, ["train.storage_path=gs://b/runs", "train.storage_options={retry_time_limit: 5}"])
