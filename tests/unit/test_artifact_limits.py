"""Artifact bombs are refused while they unpack (members, size, ratio, depth, header size),
and no path an artifact names leads outside it. The limits are lowered here to keep the
archives small; the same checks run at the real limits."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runpod_flash import config
from runpod_flash.build import artifact
from runpod_flash.build.artifact import ArtifactError, extract_artifact
from runpod_flash.platform import artifacts
from runpod_flash.platform.deployments import endpoint_specs

MANIFEST = b'{"resources": {}}'


def archive(path: Path, members: list[tuple[str, bytes]], fast: bool = False) -> Path:
    """A .tar.gz holding `members` (name, data) after a manifest."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [("flash_manifest.json", MANIFEST), *members]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(buffer.getvalue(), compresslevel=1 if fast else 9))
    return path


@pytest.fixture(autouse=True)
def _private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASH_HOME", str(tmp_path / "home"))


def refused(path: Path, dest: Path, match: str, **limits: int) -> None:
    with pytest.raises(ArtifactError, match=match):
        extract_artifact(path, dest, **limits)
    assert not dest.exists(), "a refused artifact left files behind"


def test_too_many_members_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(artifact, "MAX_MEMBERS", 50)
    path = archive(tmp_path / "a.tar.gz", [(f"f{n}", b"") for n in range(60)])
    refused(path, tmp_path / "out", "over 50 files and folders")
    extract_artifact(archive(tmp_path / "b.tar.gz", [(f"f{n}", b"") for n in range(40)]),
                     tmp_path / "fits")


def test_a_compression_bomb_is_refused_past_the_ratio(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(artifact, "RATIO_FREE_BYTES", 1024**2)
    path = archive(tmp_path / "a.tar.gz", [("zeros", bytes(8 * 1024**2))], fast=True)
    assert path.stat().st_size < 100_000  # well over 200:1
    refused(path, tmp_path / "out", "over 200 times its")


def test_the_unpacked_stream_is_bounded_headers_included(tmp_path: Path) -> None:
    """Empty members take no file bytes but do take stream bytes: those are bounded too."""
    path = archive(tmp_path / "a.tar.gz", [(f"f{n}", b"") for n in range(30)])
    with gzip.GzipFile(path) as raw:
        stream = artifact._BoundedStream(raw, archive_bytes=1024**3, limit=4096)
        with pytest.raises(ArtifactError, match="unpacks to over 4096 bytes"):
            while stream.read(512):
                pass


def test_a_deep_path_is_a_clear_refusal(tmp_path: Path) -> None:
    path = archive(tmp_path / "a.tar.gz", [("d/" * 500 + "x.py", b"x = 1")])
    refused(path, tmp_path / "out", "over 64 folders deep")


def test_a_giant_tar_header_is_never_read_into_memory(tmp_path: Path) -> None:
    path = archive(tmp_path / "a.tar.gz", [("n" * (2 * 1024**2), b"")])
    refused(path, tmp_path / "out", "tar header or record of")


def test_the_platform_answers_a_bomb_with_artifact_rejected(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASH_MAX_UNPACKED_MB", "1")
    data = archive(tmp_path / "a.tar.gz", [("big", bytes(2 * 1024**2))]).read_bytes()

    async def chunks() -> AsyncIterator[bytes]:
        yield data

    with pytest.raises(artifacts.ArtifactRejected, match="FLASH_MAX_UNPACKED_MB"):
        asyncio.run(artifacts.store(hashlib.sha256(data).hexdigest(), chunks()))


# -- paths an artifact names ------------------------------------------------------------------


@pytest.mark.parametrize("relative", ["../../../../tmp/x.py", "/tmp/x.py", "a/../../x.py"])
def test_a_path_outside_the_app_is_refused(tmp_path: Path, relative: str) -> None:
    with pytest.raises(ValueError, match="outside the app"):
        config.path_inside(tmp_path, relative)


def test_a_link_out_of_the_app_is_refused_and_a_file_inside_is_found(tmp_path: Path) -> None:
    (tmp_path / "app" / "sub").mkdir(parents=True)
    (tmp_path / "app" / "out").symlink_to(tmp_path)
    assert config.path_inside(tmp_path / "app", "sub/x.py") == \
        (tmp_path / "app" / "sub" / "x.py").resolve()
    with pytest.raises(ValueError, match="outside the app"):
        config.path_inside(tmp_path / "app", "out/x.py")


def test_a_manifest_handler_file_outside_the_artifact_is_refused() -> None:
    manifest = {"resources": {"w": {"spec": {"type": "QB"},
                                    "handler_file": "../../../../tmp/x.py"}}}
    with pytest.raises(artifacts.ArtifactRejected, match=r"handler_file '\.\./"):
        endpoint_specs(manifest, "a" * 64, "python3", None)
    manifest["resources"]["w"]["handler_file"] = "workers/handler.py"
    specs, _ = endpoint_specs(manifest, "a" * 64, "python3", None)
    assert specs[0]["handler_file"] == "workers/handler.py"
