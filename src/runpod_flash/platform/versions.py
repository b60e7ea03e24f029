"""Version history: the versions each deployed endpoint ran, the last K kept in the store, so
`flash rollback` can bring one back and artifact retention knows which builds to keep."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from runpod_flash.config import InvalidSetting
from runpod_flash.platform.endpoints import spec_version
from runpod_flash.platform.store import Store

ENV_KEEP_VERSIONS = "FLASH_KEEP_VERSIONS"
DEFAULT_KEEP_VERSIONS = 5
MIN_PREFIX = 4  # shorter references are 1-based indexes into the list (newest first)


def keep_versions() -> int:
    """How many versions each endpoint keeps (`FLASH_KEEP_VERSIONS`), the current one included."""
    raw = os.environ.get(ENV_KEEP_VERSIONS, "").strip()
    if not raw:
        return DEFAULT_KEEP_VERSIONS
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise InvalidSetting(
            f"{ENV_KEEP_VERSIONS}={raw!r} is not a number of versions to keep per endpoint; "
            f"set it to a whole number, 1 or more (default {DEFAULT_KEEP_VERSIONS})")
    return int(raw)


class RollbackRefused(LookupError):
    """A rollback that cannot start: no such endpoint or version, or its build is gone; the
    message says what exists, `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class KeptVersion:
    endpoint_id: str
    version: str
    spec: dict[str, Any]
    artifact: str | None
    deployed_at: float
    how: str  # "deploy" | "rollback"

    def summary(self, index: int, current: str | None) -> dict[str, Any]:
        """What the API and the dashboard show: never the spec (its env holds secrets)."""
        return {"index": index, "version": self.version, "artifact": self.artifact,
                "deployed_at": self.deployed_at, "how": self.how,
                "current": self.version == current}


def record(store: Store, endpoint_id: str, spec: dict[str, Any], how: str, keep: int,
           deployed_at: float | None = None) -> None:
    """The endpoint now runs `spec`; its versions past the newest `keep` are dropped."""
    store.record_version({
        "endpoint_id": endpoint_id, "version": spec_version(spec), "spec": spec,
        "artifact": spec.get("artifact"), "how": how,
        "deployed_at": time.time() if deployed_at is None else deployed_at,
    }, keep)


def settle(store: Store, keep: int) -> None:
    """When the platform starts: endpoints deployed before versions were kept begin their
    history with what runs, and each keeps at most `keep` (the setting may be lower now)."""
    known = {version.endpoint_id for version in kept(store)}
    for row in store.endpoints():
        if row["kind"] == "deployed" and row["id"] not in known:
            record(store, row["id"], row["spec"], "deploy", keep, row["updated_at"])
    store.trim_versions(keep)


def kept(store: Store, endpoint_id: str | None = None) -> list[KeptVersion]:
    """The kept versions of an endpoint (of all endpoints without one), newest first."""
    return [KeptVersion(**row) for row in store.versions(endpoint_id)]


def listing(versions: list[KeptVersion], current: str | None) -> list[dict[str, Any]]:
    return [version.summary(index, current) for index, version in enumerate(versions, 1)]


def resolve(versions: list[KeptVersion], ref: str | None, current: str) -> KeptVersion:
    """The kept version `ref` names: a 1-based index as listed, or a unique prefix (at least
    MIN_PREFIX characters) of a version; without `ref`, the one that ran before `current`."""
    kept_text = f"kept versions, newest first: {_shown(versions, current)}"
    if ref is None:
        position = next((i for i, v in enumerate(versions) if v.version == current), -1)
        if position + 1 >= len(versions):
            raise RollbackRefused(404, f"no version before the current one ({current}) is "
                                       f"kept; {kept_text}")
        return versions[position + 1]
    ref = ref.strip().lower()
    if ref.isascii() and ref.isdigit() and len(ref) < MIN_PREFIX:
        if not 1 <= int(ref) <= len(versions):
            raise RollbackRefused(404, f"there is no version number {ref}; {kept_text}")
        return versions[int(ref) - 1]
    if len(ref) < MIN_PREFIX:
        raise RollbackRefused(400, f"version '{ref}' is too short: give its number or at least "
                                   f"{MIN_PREFIX} characters of it; {kept_text}")
    matches = [v for v in versions if v.version.startswith(ref)]
    if len(matches) > 1:
        raise RollbackRefused(400, f"version '{ref}' matches "
                                   f"{', '.join(v.version for v in matches)}; give more of it")
    if not matches:
        raise RollbackRefused(404, f"no kept version '{ref}'; {kept_text}")
    return matches[0]


def _shown(versions: list[KeptVersion], current: str) -> str:
    """`1 ab12cd34ef56 (current), 2 ...`: the references `resolve` takes."""
    return ", ".join(f"{i} {v.version}{' (current)' if v.version == current else ''}"
                     for i, v in enumerate(versions, 1)) or "none"
