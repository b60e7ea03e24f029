"""Uploaded build artifacts: stored by content hash, checked, unpacked once per version, and
deleted once nothing needs them (`platform.artifact_retention` says what is needed)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from runpod_flash import config

MAX_ARTIFACT_BYTES = int(os.environ.get("FLASH_MAX_ARTIFACT_BYTES", str(500 * 1024 * 1024)))
# An artifact nothing references yet stays this long after its upload (its deployment is
# about to start); half-written uploads and unpack folders a crash left go after it too.
UNUSED_GRACE_S = 3600.0
_SHA256 = re.compile(r"[0-9a-f]{64}")
_LEFTOVER = re.compile(r".*\.upload|\..*\.(partial|deleting)")
# Held while an upload finds its artifact already there and while pruning picks what to
# delete: an artifact just uploaded again is never deleted under its deployment.
_on_disk = threading.Lock()


class ArtifactRejected(ValueError):
    """The upload is not a usable artifact; nothing was stored and nothing changed."""


def app_dir(sha256: str) -> Path:
    return config.artifacts_dir() / sha256


def _valid_sha(sha256: str) -> bool:
    return _SHA256.fullmatch(sha256) is not None


async def store(sha256: str, chunks: AsyncIterator[bytes]) -> Path:
    """Save an upload whose content must hash to `sha256`, then unpack it; returns the app dir."""
    from runpod_flash.build.artifact import ArtifactError, extract_artifact

    if not _valid_sha(sha256):
        raise ArtifactRejected("artifact id must be the sha256 of the archive (64 hex digits)")
    target = app_dir(sha256)
    if _present(target):
        async for _ in chunks:  # already have it: drain the upload
            pass
        return target
    digest, size = hashlib.sha256(), 0
    fd, tmp_name = tempfile.mkstemp(dir=config.artifacts_dir(), suffix=".upload")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            async for chunk in chunks:
                size += len(chunk)
                if size > MAX_ARTIFACT_BYTES:
                    raise ArtifactRejected(
                        f"artifact is over {MAX_ARTIFACT_BYTES // (1024 * 1024)} MB; "
                        "exclude large files with .flashignore"
                    )
                digest.update(chunk)
                handle.write(chunk)
        if digest.hexdigest() != sha256:
            raise ArtifactRejected("artifact content does not match its sha256 (corrupt upload)")
        try:
            await asyncio.to_thread(extract_artifact, tmp, target, config.max_unpacked_bytes())
        except ArtifactError as exc:
            raise ArtifactRejected(f"artifact rejected: {exc}") from None
        return target
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def manifest(sha256: str) -> dict[str, Any]:
    if not _valid_sha(sha256):
        raise ArtifactRejected("artifact id must be a sha256")
    try:
        return json.loads((app_dir(sha256) / "flash_manifest.json").read_text())
    except FileNotFoundError:
        raise ArtifactRejected(f"unknown artifact {sha256[:12]}; upload it first") from None


def _present(target: Path) -> bool:
    """Whether the artifact is unpacked; if so it counts as uploaded now."""
    with _on_disk:
        if not (target / "flash_manifest.json").exists():
            return False
        os.utime(target)
        return True


def prune(keep: set[str], now: float | None = None) -> None:
    """Delete the unpacked artifacts not in `keep` uploaded over UNUSED_GRACE_S ago, and the
    leftovers of interrupted uploads (blocking: run it off the event loop)."""
    _delete(_retire(keep, time.time() if now is None else now))


def _retire(keep: set[str], now: float) -> list[Path]:
    """Take what `prune` deletes out of use at once (renamed: a reader sees a whole folder
    or none); the slow part, deleting, comes after."""
    doomed: list[Path] = []
    with _on_disk:
        for path in config.artifacts_dir().iterdir():
            try:
                old = now - path.lstat().st_mtime > UNUSED_GRACE_S
            except FileNotFoundError:
                continue
            if _SHA256.fullmatch(path.name) and old and path.name not in keep:
                doomed.append(path.rename(
                    path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.deleting")))
            elif _LEFTOVER.fullmatch(path.name) and (old or path.name.endswith(".deleting")):
                doomed.append(path)
    return doomed


def _delete(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
