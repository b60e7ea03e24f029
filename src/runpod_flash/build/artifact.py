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
# What an archive may unpack to: a bomb (millions of members, gigabytes of zeros, paths
# thousands deep) is refused while it is read, before it fills the disk or the memory.
MAX_MEMBERS = 20_000
MAX_PATH_DEPTH = 64
MAX_PATH_CHARS = 1024
MAX_RATIO = 200  # unpacked bytes per archive byte, over the whole archive...
RATIO_FREE_BYTES = 16 * 1024**2  # ...once past this much
MAX_READ_BYTES = 1024**2  # one read of the tar stream: no real header is this large


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


class _BoundedStream:
    """The unpacked tar stream, read by tarfile: refuses to go past `limit` bytes, or past
    MAX_RATIO times the archive's size, or to read more than MAX_READ_BYTES at once (a
    header claiming gigabytes would be read whole into memory)."""

    def __init__(self, raw: gzip.GzipFile, archive_bytes: int, limit: int) -> None:
        self._raw = raw
        self._archive_bytes = archive_bytes
        self._limit = limit

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > MAX_READ_BYTES:
            raise ArtifactError(f"artifact has a tar header or record of {size} bytes; "
                                "rebuild it with `flash build`")
        self._check(self._raw.tell() + size)
        return self._raw.read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self._check(offset)
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def _check(self, position: int) -> None:
        if position > self._limit:
            raise ArtifactError(f"artifact unpacks to over {self._limit} bytes "
                                f"({_UNPACKED_SETTING})")
        if position > RATIO_FREE_BYTES and position > MAX_RATIO * self._archive_bytes:
            raise ArtifactError(
                f"artifact unpacks to over {MAX_RATIO} times its {self._archive_bytes} bytes "
                "(a compression bomb?); ship large data some other way than the artifact")


_UNPACKED_SETTING = "FLASH_MAX_UNPACKED_MB on the platform"


def _safe_parts(member: tarfile.TarInfo) -> list[str]:
    """The member's path components, or ArtifactError if it could escape or is not plain."""
    name = member.name
    if PurePosixPath(name).is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise ArtifactError(f"artifact member '{name}' has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArtifactError(f"artifact member '{name}' points outside the archive ('..')")
    if len(parts) > MAX_PATH_DEPTH or len(name) > MAX_PATH_CHARS:
        raise ArtifactError(f"artifact member '{name[:80]}...' is over {MAX_PATH_DEPTH} "
                            f"folders deep or {MAX_PATH_CHARS} characters long")
    if member.issym() or member.islnk():
        raise ArtifactError(f"artifact member '{name}' is a link; links are not allowed")
    if not (member.isreg() or member.isdir()):
        raise ArtifactError(f"artifact member '{name}' is not a regular file or directory")
    return parts


def _checked_members(tar: tarfile.TarFile, max_bytes: int
                     ) -> list[tuple[tarfile.TarInfo, list[str]]]:
    """Every member with its path, all read and checked before anything is written: a bomb
    is refused having cost one read of the stream and no disk."""
    members, total = [], 0
    for count, member in enumerate(tar, 1):
        if count > MAX_MEMBERS:
            raise ArtifactError(f"artifact has over {MAX_MEMBERS} files and folders; "
                                "exclude generated ones with .flashignore")
        members.append((member, _safe_parts(member)))
        total += member.size if member.isreg() else 0
        if total > max_bytes:
            raise ArtifactError(
                f"artifact is larger than the {max_bytes} byte limit when extracting "
                f"'{member.name}' ({_UNPACKED_SETTING})"
            )
    return members


def _extract_into(archive: Path, root: Path, max_bytes: int) -> None:
    # The stream holds headers too: one or two blocks a member, more for long names.
    stream_limit = max_bytes + MAX_MEMBERS * 4 * tarfile.BLOCKSIZE
    with gzip.GzipFile(archive, "rb") as raw, tarfile.open(
        fileobj=_BoundedStream(raw, archive.stat().st_size, stream_limit),  # type: ignore[arg-type]
        mode="r:",
    ) as tar:
        for member, parts in _checked_members(tar, max_bytes):
            target = root.joinpath(*parts)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            source = tar.extractfile(member)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with source, target.open("wb") as out:  # type: ignore[union-attr]
                    shutil.copyfileobj(source, out)
            except (IsADirectoryError, NotADirectoryError, FileExistsError) as exc:
                raise ArtifactError(f"artifact member '{member.name}' clashes: {exc}") from None
            target.chmod(0o755 if member.mode & 0o100 else 0o644)


def extract_artifact(archive: Path, dest: Path, max_bytes: int = 2 * 1024**3) -> None:
    """Unpack into `dest` (new or empty) all at once: on any error nothing is left behind;
    `max_bytes` bounds the files' total size (see also MAX_MEMBERS, MAX_RATIO)."""
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
