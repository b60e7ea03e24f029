"""Where openflash keeps its state and how its processes find each other.

Every setting is an environment variable so the SDK, the platform and the workers agree on
them without sharing code paths; the defaults give a zero-setup single-user install. The one
file a user writes (through `flash login`) is FLASH_HOME/config.toml: a remote platform to use
instead of the embedded one; the environment variables still win over it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PLATFORM_PORT = 7770
PLATFORM_HOST = "127.0.0.1"
LOGIN_FILE = "config.toml"  # in FLASH_HOME: the remote platform `flash login` saved

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


@dataclass(frozen=True)
class Login:
    """A remote openflash platform saved by `flash login`: its URL and API key (its token)."""

    url: str
    api_key: str


def login_path() -> Path:
    """`flash login`'s file, read by the CLI and the SDK to reach a remote platform."""
    return flash_home() / LOGIN_FILE


def read_login() -> Login | None:
    """The platform `flash login` saved, or None; a damaged file is a ValueError naming it,
    never a silent fall-back to another platform."""
    path = login_path()
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return None
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib
    try:
        table = tomllib.loads(text).get("platform")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid TOML ({exc}); run `flash login` again or "
                         "`flash logout`") from None
    if not isinstance(table, dict) or not all(
        isinstance(table.get(key), str) and table[key] for key in ("url", "api_key")
    ):
        raise ValueError(f"{path} needs [platform] url and api_key strings; run `flash login` "
                         "again or `flash logout`")
    return Login(table["url"].rstrip("/"), table["api_key"])


def save_login(login: Login) -> Path:
    """Write the login file whole, readable by its owner only (it holds a secret)."""
    path = login_path()
    text = (
        "# Written by `flash login`; `flash logout` removes it.\n[platform]\n"
        f"url = {_toml_string(login.url)}\napi_key = {_toml_string(login.api_key)}\n"
    )
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # also when a stale partial file had other permissions
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(partial, path)
    return path


def _toml_string(value: str) -> str:
    """A TOML basic string; every character TOML forbids unescaped is written as \\uXXXX."""
    return '"' + "".join(
        f"\\u{ord(c):04x}" if c in '"\\\x7f' or (c < " " and c != "\t") else c
        for c in value
    ) + '"'


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
