"""The platform's artifact intake: hash checked, size bounded, nothing kept on refusal."""

from __future__ import annotations

import asyncio
import hashlib
import io
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runpod_flash.platform import artifacts


def _archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in (("flash_manifest.json", b'{"resources": {}}'), ("app.py", b"x = 1")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 100):
        yield data[start:start + 100]


@pytest.fixture(autouse=True)
def _private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASH_HOME", str(tmp_path))


def test_good_artifact_is_unpacked_once() -> None:
    data = _archive()
    sha = hashlib.sha256(data).hexdigest()
    app = asyncio.run(artifacts.store(sha, _chunks(data)))
    assert (app / "app.py").read_text() == "x = 1"
    assert artifacts.manifest(sha) == {"resources": {}}
    assert asyncio.run(artifacts.store(sha, _chunks(data))) == app


def test_wrong_hash_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    data = _archive()
    with pytest.raises(artifacts.ArtifactRejected, match="does not match its sha256"):
        asyncio.run(artifacts.store("0" * 64, _chunks(data)))
    assert not list((tmp_path / "artifacts").iterdir())


def test_oversized_artifact_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(artifacts, "MAX_ARTIFACT_BYTES", 200)
    data = _archive() + b"\0" * 500
    with pytest.raises(artifacts.ArtifactRejected, match="over 0 MB; exclude large files"):
        asyncio.run(artifacts.store(hashlib.sha256(data).hexdigest(), _chunks(data)))
    assert not list((tmp_path / "artifacts").iterdir())


def test_artifact_id_must_be_a_sha256() -> None:
    with pytest.raises(artifacts.ArtifactRejected, match="sha256"):
        asyncio.run(artifacts.store("../../etc", _chunks(b"")))
