"""Network volumes: persistent directories owned by the platform, one per volume name.

A volume lives in `$FLASH_HOME/volumes/<name>` (`FLASH_VOLUMES_DIR` moves them all); the
workers of the endpoints that name it see it at `/runpod-volume` (the worker attaches it
itself: `runpod_flash.runtime.volume`). Volumes outlive workers, deploys, undeploys and
platform restarts; only `flash volume delete` removes one. Before an endpoint with a volume
is created, a probe proves this machine can mount one, so a deploy fails at once with the
reason instead of workers crashing one by one.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from runpod_flash import config
from runpod_flash.platform.environments import directory_size
from runpod_flash.runtime.volume import (
    ENV_VOLUME_MOUNT_POINT,
    ENV_VOLUME_NAME,
    ENV_VOLUME_SOURCE,
    mount_point,
)

ENV_VOLUMES_DIR = "FLASH_VOLUMES_DIR"
METADATA_FILE = ".flash-volumes.json"  # declared sizes; a dot name no volume can have
PROBE_TIMEOUT_S = 30.0

Probe = Callable[[Path, str], Awaitable[str | None]]


class VolumeRefused(Exception):
    """A volume request cannot be done; `status` is the HTTP answer the control API gives."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def volume_dir_name(name: str) -> str:
    """The directory of volume `name`: lower case letters, digits and dashes, so no name
    reaches outside the volumes folder ("Models" and "models" are one volume)."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", str(name).lower()).strip("-")
    if not cleaned:
        raise VolumeRefused(f"volume name {name!r} has no letters or digits; "
                          "use a name like 'models'")
    return cleaned


def volume_of(spec: dict[str, Any]) -> dict[str, Any] | None:
    """The `networkVolume` an endpoint spec names ({"name", "size"}), or None."""
    volume = spec.get("networkVolume")
    return volume if isinstance(volume, dict) and volume.get("name") else None


async def run_probe(source: Path, target: str) -> str | None:
    """Attach `source` at `target` in a throwaway process: None if that works, else why."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runpod_flash.runtime.volume", "--check", str(source),
        "--mount-point", target,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), PROBE_TIMEOUT_S)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        return f"the volume mount probe did not answer within {PROBE_TIMEOUT_S:.0f}s"
    if process.returncode == 0:
        return None
    lines = (err or out).decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else f"the volume mount probe exited with {process.returncode}"


class Volumes:
    """The volumes folder: create, list, delete; and what a worker needs to attach one."""

    def __init__(self, root: Path | None = None, probe: Probe = run_probe) -> None:
        self._root = root
        self._probe = probe
        self._mountable: set[str] = set()  # mount points the probe proved; failures re-probe

    @property
    def root(self) -> Path:
        root = self._root or Path(os.environ.get(ENV_VOLUMES_DIR) or config.flash_home()
                                  / "volumes").expanduser()
        root.mkdir(parents=True, exist_ok=True)
        return root

    def path(self, name: str) -> Path:
        return self.root / volume_dir_name(name)

    def _metadata(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads((self.root / METADATA_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save_metadata(self, data: dict[str, dict[str, Any]]) -> None:
        path = self.root / METADATA_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, indent=1, sort_keys=True))
        temporary.replace(path)

    def create(self, name: str, size_gb: int | None = None) -> tuple[Path, bool]:
        """The volume's directory, made if missing; returns (path, created now)."""
        if size_gb is not None and (not isinstance(size_gb, int) or size_gb <= 0):
            raise VolumeRefused(
                f"volume size must be a whole number of GB above 0 (got {size_gb!r})")
        path = self.path(name)
        created = not path.is_dir()
        path.mkdir(exist_ok=True)
        metadata = self._metadata()
        entry = metadata.get(path.name, {})
        wanted = {"created_at": entry.get("created_at") or time.time(),
                  "size_gb": size_gb or entry.get("size_gb")}
        if wanted != entry:
            metadata[path.name] = wanted
            self._save_metadata(metadata)
        return path, created

    def list(self, users: dict[str, list[str]]) -> list[dict[str, Any]]:
        """Every volume with its path, bytes used, declared size and the endpoints using it
        (`users`: volume directory name -> endpoint names)."""
        metadata = self._metadata()
        volumes = []
        for path in sorted(self.root.iterdir()):
            if not path.is_dir() or path.name.startswith("."):
                continue
            entry = metadata.get(path.name, {})
            volumes.append({
                "name": path.name, "path": str(path), "bytes": directory_size(path),
                "size_gb": entry.get("size_gb"), "created_at": entry.get("created_at"),
                "endpoints": sorted(users.get(path.name, [])),
            })
        return volumes

    def delete(self, name: str, users: Iterable[str], force: bool = False) -> Path:
        """Remove a volume and its data; refused while endpoints use it unless `force`."""
        path = self.path(name)
        if not path.is_dir():
            raise VolumeRefused(f"no volume named '{name}' (looked in {self.root})", status=404)
        users = sorted(users)
        if users and not force:
            raise VolumeRefused(
                f"volume '{path.name}' is used by endpoint(s) {', '.join(users)}; undeploy "
                "them first, or delete it anyway with --force (their workers keep the files "
                "they have open)", status=409,
            )
        shutil.rmtree(path)
        metadata = self._metadata()
        if metadata.pop(path.name, None) is not None:
            self._save_metadata(metadata)
        return path

    async def prepare(self, spec: dict[str, Any]) -> None:
        """Before an endpoint that names a volume is created: its directory exists and this
        machine can mount it; otherwise a VolumeRefused says why and what to do."""
        volume = volume_of(spec)
        if volume is None:
            return
        name = str(volume["name"])
        target = mount_point()
        if target not in self._mountable:
            reason = await self._probe(self.root, target)
            if reason is not None:
                raise VolumeRefused(
                    f"endpoint '{spec.get('name')}' names network volume "
                    f"'{volume_dir_name(name)}', but this machine cannot attach it to "
                    f"workers: {reason}", status=409,
                )
            self._mountable.add(target)
        size = volume.get("size")
        self.create(name, size if isinstance(size, int) else None)

    def worker_env(self, spec: dict[str, Any]) -> dict[str, str]:
        """What a worker needs to attach its endpoint's volume (empty values: no volume, so a
        value inherited from the platform's own environment never attaches one)."""
        volume = volume_of(spec)
        if volume is None:
            return {ENV_VOLUME_SOURCE: "", ENV_VOLUME_NAME: ""}
        path = self.path(str(volume["name"]))
        return {ENV_VOLUME_SOURCE: str(path), ENV_VOLUME_NAME: path.name,
                ENV_VOLUME_MOUNT_POINT: mount_point()}


def users_by_volume(specs: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, list[str]]:
    """Volume directory name -> names of the endpoints (name, spec) that use it."""
    users: dict[str, list[str]] = {}
    for endpoint_name, spec in specs:
        volume = volume_of(spec)
        if volume is not None:
            users.setdefault(volume_dir_name(str(volume["name"])), []).append(endpoint_name)
    return users


