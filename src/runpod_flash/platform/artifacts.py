"""Uploaded build artifacts: stored by content hash, checked, unpacked once per version."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from runpod_flash import config

MAX_ARTIFACT_BYTES = int(os.environ.get("FLASH_MAX_ARTIFACT_BYTES", str(500 * 1024 * 1024)))


class ArtifactRejected(ValueError):
    """The upload is not a usable artifact; nothing was stored and nothing changed."""


def app_dir(sha256: str) -> Path:
    return config.artifacts_dir() / sha256


def _valid_sha(sha256: str) -> bool:
    return len(sha256) == 64 and all(c in "0123456789abcdef" for c in sha256)


async def store(sha256: str, chunks: AsyncIterator[bytes]) -> Path:
    """Save an upload whose content must hash to `sha256`, then unpack it; returns the app dir."""
    from runpod_flash.build.artifact import ArtifactError, extract_artifact

    if not _valid_sha(sha256):
        raise ArtifactRejected("artifact id must be the sha256 of the archive (64 hex digits)")
    target = app_dir(sha256)
    if (target / "flash_manifest.json").exists():
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
