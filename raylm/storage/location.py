"""``StoragePath``: one place in a run's storage, a local path or an object-store URI, over pyarrow.fs.

Local paths keep the project's atomic writes (``raylm/atomic.py``); URIs (``s3://``, ``gs://``, any
scheme ``pyarrow.fs.FileSystem.from_uri`` resolves) go through pyarrow's filesystem, with endpoint
and credentials from the usual environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...) or
``train.storage_options`` (e.g. ``{endpoint_override: host:port, scheme: http, region: ...}``).
A ``StoragePath`` is plain data (URI + options), so it travels to Ray workers; each process builds
its filesystem once.
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

from raylm.errors import RaylmError

# Schemes pyarrow resolves with an options-taking filesystem class; others (hdfs, abfs, ...) from the URI alone.
_OPTION_CLASSES = {"s3": "S3FileSystem", "gs": "GcsFileSystem", "gcs": "GcsFileSystem"}
KNOWN_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss", "file")
GCS_RETRY_S = 20  # seconds a GCS call retries (RAYLM_GCS_RETRY_S, or train.storage_options.retry_time_limit)


class StorageURIError(RaylmError):
    """A storage URI or its options that no filesystem can serve; the message names the value."""


def is_uri(path: str | os.PathLike[str]) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def check_uri(uri: str, options: dict[str, Any] | None = None) -> None:
    """Refuse a malformed URI, an unknown scheme or options its filesystem does not take; no network."""
    parts = urlsplit(uri)
    written = uri.split("://", 1)[0]
    if written != written.lower() and written.lower() in KNOWN_SCHEMES:  # urlsplit lowercases it; pyarrow does not
        raise StorageURIError(f"{uri!r}: write the scheme in lowercase ({written.lower()}://...)")
    if parts.scheme not in KNOWN_SCHEMES:
        raise StorageURIError(f"unknown scheme {parts.scheme!r} in {uri!r} (one of {', '.join(KNOWN_SCHEMES)}, "
                              "or a local path)")
    if parts.scheme in ("s3", "gs", "gcs") and not parts.netloc:
        raise StorageURIError(f"{uri!r} names no bucket ({parts.scheme}://<bucket>/<prefix>)")
    if parts.query or parts.fragment:
        raise StorageURIError(f"{uri!r}: put filesystem settings in train.storage_options, not in the URI")
    if options:
        check_options(parts.scheme, options)


def check_local_path(path: str) -> None:
    """Refuse a local path that is a mistyped URI (``s3:/bucket/x``, one slash): it would become a
    folder named ``s3:`` in the working directory, and the run would never reach the bucket."""
    head = str(path).split("/", 1)[0]
    if head.endswith(":") and head[:-1].lower() in KNOWN_SCHEMES and head[:-1].lower() != "file":
        raise StorageURIError(f"{path!r} reads as a local folder named {head!r}; a URI is "
                              f"{head[:-1].lower()}://<bucket>/<prefix> (two slashes)")


def check_options(scheme: str, options: dict[str, Any]) -> None:
    """Build the filesystem for ``options`` once (no network): unknown keys are refused here."""
    _option_filesystem(scheme, _freeze(options))


def _freeze(options: dict[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((options or {}).items()))


@lru_cache(maxsize=32)
def _option_filesystem(scheme: str, options: tuple[tuple[str, Any], ...]):
    import pyarrow.fs

    cls_name = _OPTION_CLASSES.get(scheme)
    if cls_name is None:
        raise StorageURIError(f"storage options are supported for {', '.join(sorted(_OPTION_CLASSES))} URIs, "
                              f"not {scheme}://")
    kwargs = dict(options)
    if cls_name == "GcsFileSystem":
        # GCS's client retries for 15 minutes by default: with no credentials on a machine outside Google
        # Cloud, the first call (reading the run's commit) hung that long with nothing printed. pyarrow takes
        # a timedelta only; a config gives seconds.
        from datetime import timedelta

        limit = kwargs.get("retry_time_limit", float(os.environ.get("RAYLM_GCS_RETRY_S", GCS_RETRY_S)))
        kwargs["retry_time_limit"] = timedelta(seconds=limit) if isinstance(limit, (int, float)) else limit
    try:
        return getattr(pyarrow.fs, cls_name)(**kwargs)
    except TypeError as err:
        raise StorageURIError(f"{cls_name} does not take these options: {err}") from None


@lru_cache(maxsize=32)
def _uri_filesystem(root: str):
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(root)[0]
    except (ValueError, OSError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise StorageURIError(f"{root}: {err}") from None


@dataclass(frozen=True)
class StoragePath:
    """A file or directory in storage. ``uri``: ``s3://bucket/a/b`` or an absolute local path."""

    uri: str
    options: tuple[tuple[str, Any], ...] = field(default=())

    @classmethod
    def of(cls, path: str | os.PathLike[str], options: dict[str, Any] | None = None) -> StoragePath:
        text = str(path)
        if text.startswith("file://"):
            text = text[len("file://"):]
        if not is_uri(text):
            return cls(str(Path(os.path.expanduser(text)).resolve()), ())
        check_uri(text, options)
        return cls(text.rstrip("/") or text, _freeze(options))

    # -- where

    @property
    def is_local(self) -> bool:
        return not is_uri(self.uri)

    @property
    def local_path(self) -> Path:
        if not self.is_local:
            raise StorageURIError(f"{self.uri} is not on the local disk")
        return Path(self.uri)

    @property
    def scheme(self) -> str:
        return urlsplit(self.uri).scheme if not self.is_local else "file"

    @property
    def fs(self):
        """The pyarrow filesystem (built once per process for these options)."""
        import pyarrow.fs

        if self.is_local:
            return pyarrow.fs.LocalFileSystem()
        if self.options or self.scheme in ("gs", "gcs"):  # GCS: always built here, for its retry limit
            return _option_filesystem(self.scheme, self.options)
        parts = urlsplit(self.uri)
        return _uri_filesystem(f"{parts.scheme}://{parts.netloc}")

    @property
    def path(self) -> str:
        """The path within ``fs`` (``bucket/a/b`` for an object store), as pyarrow and Ray want it."""
        if self.is_local:
            return self.uri
        parts = urlsplit(self.uri)
        return (parts.netloc + parts.path).rstrip("/")

    @property
    def name(self) -> str:
        return posixpath.basename(self.uri.rstrip("/"))

    @property
    def parent(self) -> StoragePath:
        return StoragePath(posixpath.dirname(self.uri.rstrip("/")), self.options)

    def join(self, *parts: str) -> StoragePath:
        rel = posixpath.join(*parts)
        if rel.startswith("/") or ".." in rel.split("/"):
            raise StorageURIError(f"{rel!r} is not a relative path inside {self.uri}")
        return StoragePath(posixpath.join(self.uri, rel), self.options)

    __truediv__ = join

    def relative_to(self, root: StoragePath) -> str:
        prefix = root.uri.rstrip("/") + "/"
        if not self.uri.startswith(prefix):
            raise StorageURIError(f"{self.uri} is not inside {root.uri}")
        return self.uri[len(prefix):]

    def __str__(self) -> str:
        return self.uri

    # -- what is there

    def _info(self):
        return self.fs.get_file_info(self.path)

    def check_reachable(self) -> None:
        """Before any work on a URI: the store answers and the bucket exists. A wrong endpoint, missing
        credentials or a missing bucket otherwise showed late (a missing bucket when the run's first commit
        failed, after Ray's start and the training) or as a raw pyarrow traceback."""
        import pyarrow.fs

        if self.scheme not in ("s3", "gs", "gcs"):  # a local path, or a store whose netloc is no bucket (hdfs)
            return
        bucket = urlsplit(self.uri).netloc
        try:
            info = self.fs.get_file_info(bucket)
        except OSError as err:
            reason = " ".join(str(err).split())[:300]
            raise StorageURIError(f"{self.uri}: the store did not answer: {reason} (check the endpoint, the network "
                                  "and the credentials: AWS_* / GOOGLE_APPLICATION_CREDENTIALS, or "
                                  "train.storage_options)") from None
        if info.type == pyarrow.fs.FileType.NotFound:
            raise StorageURIError(f"{self.uri}: bucket {bucket!r} does not exist (create it, or fix its name)")

    def exists(self) -> bool:
        import pyarrow.fs

        return self._info().type != pyarrow.fs.FileType.NotFound

    def is_file(self) -> bool:
        import pyarrow.fs

        return self._info().type == pyarrow.fs.FileType.File

    def is_dir(self) -> bool:
        import pyarrow.fs

        return self._info().type == pyarrow.fs.FileType.Directory

    def iterdir(self) -> list[StoragePath]:
        """The direct children (files and directories), sorted; empty when there is nothing."""
        import pyarrow.fs

        infos = self.fs.get_file_info(pyarrow.fs.FileSelector(self.path, allow_not_found=True))
        return sorted((self.join(posixpath.basename(i.path)) for i in infos), key=lambda p: p.uri)

    def walk_files(self) -> Iterator[tuple[str, int]]:
        """(relative path, size) of every file below, in sorted order."""
        import pyarrow.fs

        infos = self.fs.get_file_info(pyarrow.fs.FileSelector(self.path, recursive=True, allow_not_found=True))
        root = self.path.rstrip("/") + "/"
        for info in sorted(infos, key=lambda i: i.path):
            if info.type == pyarrow.fs.FileType.File:
                yield info.path[len(root):], int(info.size)

    # -- reading and writing

    def read_bytes(self) -> bytes:
        try:
            with self.fs.open_input_stream(self.path) as f:
                return f.read()
        except FileNotFoundError:
            raise
        except OSError as err:
            if not self.exists():
                raise FileNotFoundError(self.uri) from None
            raise OSError(f"cannot read {self.uri}: {err}") from err

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def read_json(self) -> Any:
        return json.loads(self.read_bytes())

    def write_bytes(self, data: bytes) -> None:
        """Whole or not at all: a local file through a renamed temporary sibling; an object is
        published by the store only when its upload completes."""
        if self.is_local:
            from raylm.atomic import atomic_write_bytes

            self.local_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.local_path, data)
            return
        with self.fs.open_output_stream(self.path) as f:
            f.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def write_json(self, value: Any) -> None:
        self.write_text(json.dumps(value, indent=2, default=str))

    def upload_file(self, local: Path) -> None:
        import pyarrow.fs

        if self.is_local:
            self.write_bytes(Path(local).read_bytes())
            return
        pyarrow.fs.copy_files(str(local), self.path, source_filesystem=pyarrow.fs.LocalFileSystem(),
                              destination_filesystem=self.fs)

    def download_file(self, local: Path) -> None:
        import pyarrow.fs

        Path(local).parent.mkdir(parents=True, exist_ok=True)
        pyarrow.fs.copy_files(self.path, str(local), source_filesystem=self.fs,
                              destination_filesystem=pyarrow.fs.LocalFileSystem())

    def upload_tree(self, local_dir: Path, *, last: tuple[str, ...] = ()) -> int:
        """Copy every file of ``local_dir`` below this path; the files named in ``last`` (e.g. a
        checkpoint's ``raylm.json``) only after all others, so a reader that looks for them first
        never sees them beside missing files. Returns the bytes written."""
        files = sorted(p for p in Path(local_dir).rglob("*") if p.is_file())
        files.sort(key=lambda p: p.relative_to(local_dir).as_posix() in last)
        for path in files:
            self.join(path.relative_to(local_dir).as_posix()).upload_file(path)
        return sum(p.stat().st_size for p in files)

    def download_tree(self, local_dir: Path) -> int:
        total = 0
        for rel, size in self.walk_files():
            self.join(rel).download_file(Path(local_dir) / rel)
            total += size
        return total

    def delete_file(self) -> None:
        try:
            self.fs.delete_file(self.path)
        except FileNotFoundError:
            pass

    def delete_tree(self) -> None:
        if self.is_dir():
            self.fs.delete_dir(self.path)
        elif self.is_file():
            self.delete_file()
