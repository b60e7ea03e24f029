"""Where openflash keeps its state and how its processes find each other.

Every setting is an environment variable so the SDK, the platform and the workers agree on
them without sharing code paths; the defaults give a zero-setup single-user install.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_PLATFORM_PORT = 7770
PLATFORM_HOST = "127.0.0.1"

# Environment variables, in one place so every process spells them the same way.
ENV_HOME = "FLASH_HOME"
ENV_PLATFORM_URL = "FLASH_PLATFORM_URL"
ENV_PLATFORM_TOKEN = "FLASH_PLATFORM_TOKEN"
ENV_PLATFORM_PORT = "FLASH_PLATFORM_PORT"
ENV_WORKER_ID = "FLASH_WORKER_ID"
ENV_ENDPOINT_ID = "FLASH_ENDPOINT_ID"
# JSON {resource name: gateway path} of the endpoints deployed with a worker (stubs.peers)
ENV_PEER_ENDPOINTS = "FLASH_PEER_ENDPOINTS"


def flash_home() -> Path:
    """The state folder (`FLASH_HOME`, default `~/.flash`), created with owner-only access."""
    home = Path(os.environ.get(ENV_HOME) or Path.home() / ".flash").expanduser()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    return home


def platform_info_path() -> Path:
    """The file in which a running platform publishes its URL, pid and token."""
    return flash_home() / "platform.json"


def platform_lock_path() -> Path:
    """Held while a platform starts, so two first calls start one platform."""
    return flash_home() / "platform.lock"


def logs_dir() -> Path:
    path = flash_home() / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def artifacts_dir() -> Path:
    """Uploaded build artifacts (`<sha256>.tar.gz`) and their unpacked apps (`<sha256>/`)."""
    path = flash_home() / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def envs_dir() -> Path:
    path = flash_home() / "envs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def requested_platform_port() -> int:
    """The port a new platform binds (`FLASH_PLATFORM_PORT`; 0 picks a free one)."""
    raw = os.environ.get(ENV_PLATFORM_PORT, "")
    if not raw:
        return DEFAULT_PLATFORM_PORT
    try:
        return int(raw)
    except ValueError:
        raise ValueError(
            f"{ENV_PLATFORM_PORT}={raw!r} is not a port number; set it to an integer (0 = any)"
        ) from None
