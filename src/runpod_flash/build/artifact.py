"""The build artifact: a reproducible `.tar.gz` of the project, and a safe way to unpack it.

Reproducible (sorted members, zeroed times and owners, no gzip timestamp) so an unchanged
project gives the same sha256; unpacking trusts nothing in the archive.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath

from .errors import BuildError

MANIFEST_NAME = "flash_manifest.json"
SIZE_LIMIT_BYTES = 500 * 1024**2


class ArtifactError(Exception):
    """An archive that is corrupt or unsafe to unpack; nothing was extracted."""


def _member(name: str, size: int, executable: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o755 if executable else 0o644
    info.mtime = 0
    return info


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _add_file(tar: tarfile.TarFile, project_dir: Path, rel: str) -> None:
    try:
        with (project_dir / rel).open("rb") as f:
            stat = os.fstat(f.fileno())
            tar.addfile(_member(rel, stat.st_size, bool(stat.st_mode & 0o100)), f)
    except OSError as exc:  # removed or truncated while the build ran
        raise BuildError(f"{rel}: cannot add to the artifact: {exc}") from None


def write_artifact(
    project_dir: Path, files: list[str], manifest: bytes, dest: Path
) -> tuple[str, int]:
    """Write `files` (relative paths) and the manifest at the archive root; (sha256, size)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.partial")
    try:
        with partial.open("wb") as raw, gzip.GzipFile(
            filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6
        ) as gz, tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for rel in files:
                _add_file(tar, project_dir, rel)
            tar.addfile(_member(MANIFEST_NAME, len(manifest)), io.BytesIO(manifest))
        size = partial.stat().st_size
        if size > SIZE_LIMIT_BYTES:
            raise BuildError(
                f"Artifact is {size / 1024**2:.1f} MB, over the "
                f"{SIZE_LIMIT_BYTES // 1024**2} MB limit; add large files or folders (data, "
                "model weights, virtual environments) to .flashignore"
            )
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    return _sha256(dest), size


def _safe_parts(member: tarfile.TarInfo) -> list[str]:
    """The member's path components, or ArtifactError if it could escape or is not plain."""
    name = member.name
    if PurePosixPath(name).is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise ArtifactError(f"artifact member '{name}' has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArtifactError(f"artifact member '{name}' points outside the archive ('..')")
    if member.issym() or member.islnk():
        raise ArtifactError(f"artifact member '{name}' is a link; links are not allowed")
    if not (member.isreg() or member.isdir()):
        raise ArtifactError(f"artifact member '{name}' is not a regular file or directory")
    return parts


def _extract_into(archive: Path, root: Path, max_bytes: int) -> None:
    total = 0
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = _safe_parts(member)
            target = root.joinpath(*parts)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            total += member.size
            if total > max_bytes:
                raise ArtifactError(
                    f"artifact is larger than the {max_bytes} byte limit when extracting "
                    f"'{member.name}'"
                )
            source = tar.extractfile(member)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with source, target.open("wb") as out:
                    shutil.copyfileobj(source, out)
            except (IsADirectoryError, NotADirectoryError, FileExistsError) as exc:
                raise ArtifactError(f"artifact member '{member.name}' clashes: {exc}") from None
            target.chmod(0o755 if member.mode & 0o100 else 0o644)


def extract_artifact(archive: Path, dest: Path, max_bytes: int = 2 * 1024**3) -> None:
    """Unpack into `dest` (new or empty) all at once: on any error nothing is left behind."""
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise ArtifactError(f"artifact {archive} does not exist")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ArtifactError(f"cannot extract into {dest}: it exists and is not an empty folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        try:
            _extract_into(archive, staging, max_bytes)
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise ArtifactError(f"artifact is not a valid .tar.gz: {exc}") from None
        if not (staging / MANIFEST_NAME).is_file():
            raise ArtifactError(f"artifact has no {MANIFEST_NAME} at its root; rebuild it")
        if dest.exists():
            dest.rmdir()
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
