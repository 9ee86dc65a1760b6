"""An artifact's files: checksums, verification and confinement.

An artifact may come from elsewhere, so it is data, never code: every file of the tree must be
listed in ``artifact.json``'s ``files`` and match its sha256 (an empty list, an unlisted file, a
link or a name leading outside the directory is refused) before any of them is parsed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from raylm.errors import RaylmError
from raylm.storage.commit import sha256_file

META = "artifact.json"
sha256 = sha256_file  # one file hash for artifacts and storage commit markers
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ArtifactError(RaylmError):
    """An artifact that cannot be loaded; the message names the file and what is wrong."""


def checksums(directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): sha256(p) for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != META}


def confined(directory: Path, name: Any, what: str) -> Path:
    """``directory / name`` if ``name`` is a relative path that stays inside ``directory``, through no link."""
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        raise ArtifactError(f"{directory / META}: {what} {name!r} is not a relative file name")
    parts = Path(name).parts
    if Path(name).is_absolute() or any(part in ("..", ".") for part in parts):
        raise ArtifactError(f"{directory / META}: {what} {name!r} leads outside the artifact directory")
    path = directory
    for part in parts:
        path = path / part
        if path.is_symlink():
            raise ArtifactError(f"{path}: a link; an artifact holds plain files only")
    return path


def verify_files(directory: Path, meta: dict[str, Any]) -> None:
    """Every file under ``directory`` is listed in ``files`` with its sha256, and every listed one is there."""
    files = meta["files"]
    if not isinstance(files, dict) or not files:
        raise ArtifactError(f"{directory / META}: 'files' lists no checksums; an artifact lists every file it holds")
    if not isinstance(meta["model_file"], str) or meta["model_file"] not in files:
        raise ArtifactError(f"{directory / META}: model_file {meta['model_file']!r} is not listed in 'files'")
    for path in sorted(directory.rglob("*")):
        if path.is_symlink():
            raise ArtifactError(f"{path}: a link; an artifact holds plain files only")
        name = path.relative_to(directory).as_posix()
        if path.is_file() and name != META and name not in files:
            raise ArtifactError(f"{path}: not listed in {META} (unlisted files are refused)")
    for name, expected in files.items():
        path = confined(directory, name, "file")
        if not isinstance(expected, str) or not _SHA256.fullmatch(expected):
            raise ArtifactError(f"{directory / META}: files[{name!r}] is not a sha256")
        if not path.is_file():
            raise ArtifactError(f"{path}: missing (listed in {META})")
        if sha256(path) != expected:
            raise ArtifactError(f"{path}: corrupted (sha256 does not match {META})")
